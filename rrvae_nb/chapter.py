"""The plumbing the book's chapters share: settings, train-or-load, and exercise checks.

Every chapter used to carry its own copy of the same configuration lines and its own way of
training a model, loading the cached one or saving it. They live here once:

- :func:`settings` reads the environment (``RRVAE_NB_QUICK=1`` for the short quick mode of CI,
  ``RRVAE_NB_USE_CACHED=1`` to load cached weights instead of training, ``RRVAE_NB_SAVE_WEIGHTS=1``
  to write the book's cached weights from a full-mode run) into a small :class:`Settings`;
- :func:`fit_or_load` trains a model, or loads the cached weights of that name when they were
  trained for a model of the same configuration, and saves freshly trained full-mode weights when
  asked;
- :func:`check` gives instant feedback on an exercise (see :mod:`rrvae_nb.exercises`).

Exercise checks are our own few lines rather than nbgrader, otter-grader or nbautoeval: those
grade submissions against hidden tests (nbgrader and otter need an instructor-side grading step
and their own notebook metadata; nbautoeval wants exercises written as its Python classes), while
a chapter needs a hint printed under the student's cell, computed from the chapter's own data at
run time, and a notebook that keeps running when the answer is wrong. The course kit
(``tools/make_course.py``) only needs cell tags, which Jupyter Book reads too.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Settings", "settings", "fit_or_load", "check", "CheckResult", "NOT_ANSWERED"]

QUICK_ENV = "RRVAE_NB_QUICK"
CACHED_ENV = "RRVAE_NB_USE_CACHED"
SAVE_ENV = "RRVAE_NB_SAVE_WEIGHTS"
SEED_ENV = "RRVAE_NB_SEED"


def _flag(name: str) -> bool:
    value = os.environ.get(name, "0").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{name}={value!r}: set it to 1 (on) or 0 (off), or unset it.")
    return value == "1"


@dataclass(frozen=True)
class Settings:
    """What every chapter reads from the environment.

    Attributes
    ----------
    quick : bool
        Quick mode (``RRVAE_NB_QUICK=1``): smaller data and shorter trainings, for CI.
    seed : int
        Seed of every random choice in a chapter (``RRVAE_NB_SEED``, default 0).
    use_cached_weights : bool
        Load the book's cached weights instead of training (``RRVAE_NB_USE_CACHED=1``).
    save_weights : bool
        Write freshly trained full-mode models to ``data/weights`` (``RRVAE_NB_SAVE_WEIGHTS=1``).
    """

    quick: bool = False
    seed: int = 0
    use_cached_weights: bool = False
    save_weights: bool = False

    def pick(self, full, quick):
        """``quick`` in quick mode, ``full`` otherwise: ``EPOCHS = S.pick(100, 60)``."""
        return quick if self.quick else full

    def replace(self, **changes) -> Settings:
        """A copy with some fields changed: ``S = settings().replace(use_cached_weights=True)``."""
        return dataclasses.replace(self, **changes)


def settings() -> Settings:
    """Read the chapter settings from the environment (see :class:`Settings`).

    Raises
    ------
    ValueError
        If a flag is set to anything but 0 or 1, or the seed is not an integer.
    """
    seed_text = os.environ.get(SEED_ENV, "0").strip() or "0"
    try:
        seed = int(seed_text)
    except ValueError:
        raise ValueError(f"{SEED_ENV}={seed_text!r} is not an integer seed: set e.g. 0.") from None
    return Settings(quick=_flag(QUICK_ENV), seed=seed, use_cached_weights=_flag(CACHED_ENV),
                    save_weights=_flag(SAVE_ENV))


def _config_difference(cached, model) -> dict:
    a, b = cached._config_kwargs(), model._config_kwargs()
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k != "seed" and a.get(k) != b.get(k)}


def fit_or_load(name: str, model, patterns, *, settings: Settings, chapter: str,
                use_cached: bool | None = None, data_dir=None, provenance: dict | None = None,
                **fit_kwargs):
    """Train ``model`` on ``patterns``, or load the cached weights ``name`` instead.

    Parameters
    ----------
    name : str
        Name of the cached weights in ``data/weights`` (e.g. ``"ch2_graphene"``).
    model : RrVAE
        The untrained model, configured as the chapter wants it.
    patterns : (N, ky, kx) array
        The training patterns (ignored when cached weights are loaded).
    settings : Settings
        The chapter's :func:`settings`; ``use_cached_weights`` loads, ``save_weights`` (full mode
        only) writes the trained model to the cache, atomically.
    chapter : str
        The chapter's file stem, recorded with saved weights.
    use_cached : bool, optional
        Overrides ``settings.use_cached_weights`` (a chapter's ``USE_CACHED_WEIGHTS`` switch).
    data_dir : path, optional
        The data folder holding ``weights/`` (default: the repository's ``data/``).
    provenance : dict, optional
        More to record with saved weights (data set, preprocessing, ...).
    **fit_kwargs
        Passed to :func:`rrvae_nb.fit` (``epochs``, ``batch_size``, ``lr``, ...); ``seed``
        defaults to ``settings.seed``.

    Returns
    -------
    model : RrVAE
        The trained or loaded model.
    history : History or None
        The training history; None when cached weights were loaded.

    Cached weights are used only when they were trained for a model of the same configuration
    (pattern shape, latents, prior, likelihood, networks); otherwise a warning names the
    difference and the model is trained.
    """
    from .model.train import fit
    from .model.weights import list_weights, load_weights, save_weights

    if use_cached is None:
        use_cached = settings.use_cached_weights
    if use_cached:
        if name in list_weights(data_dir):
            cached = load_weights(name, data_dir=data_dir)
            diff = _config_difference(cached, model)
            if not diff:
                return cached, None
            warnings.warn(
                f"cached weights {name!r} were trained for another configuration "
                f"({', '.join(f'{k}: cached {a!r}, here {b!r}' for k, (a, b) in diff.items())}); "
                "training instead.", stacklevel=2)
        else:
            warnings.warn(f"no cached weights named {name!r}; training instead.", stacklevel=2)
    fit_kwargs.setdefault("seed", settings.seed)
    history = fit(model, patterns, **fit_kwargs)
    if settings.save_weights and not settings.quick:  # the cache holds full-mode models only
        record = {k: v for k, v in fit_kwargs.items()
                  if isinstance(v, (int, float, str, bool)) and k != "progress"}
        save_weights(model, name, data_dir=data_dir, chapter=chapter,
                     n_patterns=len(patterns), **record, **(provenance or {}))
    return model, history


# --------------------------------------------------------------------------------------------
# exercise checks
# --------------------------------------------------------------------------------------------
NOT_ANSWERED = None
"""The placeholder of an exercise cell: ``answer = None`` until the student fills it in."""


@dataclass(frozen=True)
class CheckResult:
    """The verdict of :func:`check`: truthy when the answer is right, with its message."""

    name: str
    correct: bool
    answered: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        head = "correct" if self.correct else ("not answered yet" if not self.answered
                                               else "not yet")
        return f"[{self.name}] {head}: {self.message}"


def check(name: str, answer, *, strict: bool = False, **data) -> CheckResult:
    """Check the answer to exercise ``name`` and print a verdict with a hint.

    Parameters
    ----------
    name : str
        The exercise label without ``ex-``, e.g. ``"ch1-sixfold"`` (see
        :data:`rrvae_nb.exercises.CHECKS`).
    answer
        The student's answer; ``None`` means not answered yet.
    strict : bool
        Raise an AssertionError with the hint when the answer is wrong or missing (the chapters'
        solution cells use it, so a solution that stops passing fails the build). In a student's
        cell leave it False: a wrong answer prints a hint and the notebook runs on.
    **data
        What the check needs from the chapter to compute the right answer at run time.

    Returns
    -------
    CheckResult
        Truthy when correct.
    """
    from .exercises import CHECKS

    if name not in CHECKS:
        raise KeyError(f"no exercise check named {name!r}; known: {', '.join(sorted(CHECKS))}")
    spec = CHECKS[name]
    missing = [key for key, value in data.items() if value is None]
    if answer is NOT_ANSWERED:
        result = CheckResult(name, False, False, f"fill in `answer` ({spec.asks}) and run again.")
    elif missing:
        result = CheckResult(name, False, False, f"also replace None by what you computed for "
                             f"{', '.join(f'{k}=' for k in missing)} in the check call.")
    else:
        try:
            correct, message = spec.function(answer, **data)
        except Exception as err:  # noqa: BLE001 - a student's answer may be of any type
            correct, message = False, (f"could not check this answer ({type(err).__name__}: "
                                       f"{err}); the answer should be {spec.asks}.")
        result = CheckResult(name, bool(correct), True, message)
    print(result)
    if strict and not result.correct:
        raise AssertionError(str(result))
    return result


@dataclass(frozen=True)
class ExerciseCheck:
    """One registered check: ``function(answer, **data) -> (correct, message)``."""

    name: str
    asks: str
    function: Callable


def register(registry: dict, name: str, asks: str):
    """Decorator adding ``function`` to ``registry`` as the check of exercise ``name``."""

    def decorate(function):
        if name in registry:
            raise ValueError(f"exercise check {name!r} registered twice")
        registry[name] = ExerciseCheck(name, asks, function)
        return function

    return decorate
