"""Training an :class:`~rrvae_nb.model.RrVAE` by stochastic variational inference."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.elbo import ELBOModule
from tqdm.auto import tqdm

from .._version import __version__
from ..stem._atomic import replace_atomically, stale_temporaries
from ..stem._checks import as_patterns, positive_number, whole_number
from .rrvae import RrVAE

__all__ = ["fit", "evaluate", "History", "linear_warmup", "latent_usage", "UnusedLatentWarning",
           "ACTIVE_VARIANCE"]

#: A content latent is *active* when its posterior mean varies over the patterns with at least
#: this variance (in prior units; Burda et al. 2016's criterion). An inactive latent says the
#: same about every pattern, whatever its KL.
ACTIVE_VARIANCE = 0.01


class UnusedLatentWarning(UserWarning):
    """A content latent says the same about every pattern after :func:`fit`."""


@dataclass
class History:
    """What happened during :func:`fit`.

    Attributes
    ----------
    train_loss : list of float
        Per epoch: the training objective per pattern (negative ELBO with the KL weight of that
        epoch), averaged over the epoch's minibatches.
    val_loss : list of float
        Per epoch: held-out negative ELBO per pattern (KL weight 1), without gradients;
        empty when ``val_fraction == 0``.
    kl_weight : list of float
        KL weight of each epoch.
    seconds : list of float
        Wall-clock seconds of each epoch (training and held-out evaluation).
    train_index, val_index : numpy.ndarray
        Indices of the patterns used for training and held out.
    latent_variance, latent_kl : list of float
        After training, per content latent: the variance of its posterior mean over the
        held-out patterns (or the training patterns without a held-out set) and its mean KL
        divergence from the prior per pattern, in nats (see :func:`latent_usage`).
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    kl_weight: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    train_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    val_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    latent_variance: list[float] = field(default_factory=list)
    latent_kl: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Number of epochs run."""
        return len(self.train_loss)


def linear_warmup(epochs: int, start: float = 0.0, end: float = 1.0) -> Callable[[int], float]:
    """KL-weight schedule rising linearly from ``start`` to ``end`` over ``epochs`` epochs."""
    if epochs < 1:
        raise ValueError(f"warm-up epochs must be >= 1; got {epochs}")

    def schedule(epoch: int) -> float:
        return float(start + (end - start) * min(1.0, epoch / epochs))

    return schedule


def latent_usage(model: RrVAE, patterns, max_patterns: int = 4096):
    """How much each content latent is used: variance of its posterior mean, and its KL.

    Parameters
    ----------
    model : RrVAE
        A (trained) model.
    patterns : array_like
        (N, H, W) patterns; at most ``max_patterns`` of them, evenly spaced, are encoded.

    Returns
    -------
    variance : numpy.ndarray
        (latent_dim,) variance over the patterns of each latent's posterior mean (prior units).
        Below :data:`ACTIVE_VARIANCE` the latent is unused.
    kl : numpy.ndarray
        (latent_dim,) mean KL divergence of each latent's posterior from N(0, 1), nats per
        pattern. Near zero: the posterior is the prior (unused). A latent can also be unused
        with a large KL, when every pattern gets the same narrow posterior.
    """
    x = np.asarray(patterns)
    if len(x) > max_patterns:
        x = x[np.linspace(0, len(x) - 1, max_patterns).astype(int)]
    enc = model.encode(x, progress=False)
    mu, sd = enc.z.astype(np.float64), enc.z_std.astype(np.float64)
    kl = 0.5 * (sd**2 + mu**2 - 1.0 - 2.0 * np.log(sd))
    return mu.var(axis=0), kl.mean(axis=0)


def _warn_unused(variance, kl) -> None:
    unused = [j for j, v in enumerate(variance) if v < ACTIVE_VARIANCE]
    if not unused:
        return
    names = ", ".join(f"z{j + 1} (variance of its mean {variance[j]:.2g}, KL {kl[j]:.2g} nats)"
                      for j in unused)
    warnings.warn(
        f"Content latent(s) {names} are unused: they take the same value for every pattern, "
        "so their maps show nothing. Train longer or with more steps per epoch (more epochs, "
        "a smaller batch_size), or lower the likelihood scale (RrVAE(..., scale=...) below the "
        "patterns' spread) so that differences between patterns count; a latent that stays "
        "unused is not needed (a smaller latent_dim).",
        UnusedLatentWarning, stacklevel=3,
    )


def _resolve_device(model: RrVAE, device) -> torch.device:
    if device is None:
        return model.device
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA GPU is available: use 'cpu'.")
    return dev


def _elbo(model: RrVAE, num_particles: int = 1) -> ELBOModule:
    """The negative ELBO of ``model``'s model/guide pair as a torch module: ``elbo(x,
    kl_weight=...)`` is the loss of a batch x (B, H, W), summed over its patterns."""
    return Trace_ELBO(num_particles=num_particles)(model.model, model.guide)


def evaluate(model: RrVAE, patterns, batch_size: int = 512, device=None) -> float:
    """Negative ELBO per pattern on ``patterns`` (KL weight 1) without touching the weights
    (no gradients, no optimiser)."""
    x = as_patterns(patterns, model.pattern_shape,
                    unit_interval=model.config.likelihood != "gaussian")
    dev = _resolve_device(model, device)
    model.to(dev)
    return _evaluate(_elbo(model), x, batch_size, dev)


def _evaluate(elbo: ELBOModule, x: torch.Tensor, batch_size: int, dev, index=None) -> float:
    """Negative ELBO per pattern of ``x`` (or of ``x[index]``, gathered batch by batch)."""
    n = x.shape[0] if index is None else len(index)
    total = 0.0
    with torch.no_grad():
        for s in range(0, n, batch_size):
            batch = x[s : s + batch_size] if index is None else x[index[s : s + batch_size]]
            total += float(elbo(batch.to(dev), kl_weight=1.0))
    return total / n


def fit(
    model: RrVAE,
    patterns,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    val_fraction: float = 0.15,
    kl_weight: float | Callable[[int], float] = 1.0,
    device=None,
    progress: bool = True,
    num_particles: int = 1,
    checkpoint=None,
    checkpoint_every: int = 1,
    callback: Callable[[int, History], None] | None = None,
    calibrate: bool = True,
) -> History:
    """Train ``model`` on ``patterns`` by stochastic variational inference.

    The loop is PyTorch's own: the ELBO as a torch module
    (``Trace_ELBO(num_particles)(model.model, model.guide)``), ``torch.optim.Adam`` over
    ``model.parameters()``, ``loss.backward()``, ``optimiser.step()``. The model and guide read
    their weights from the module itself, so Pyro's global parameter store is never used (what
    ``pyro.settings.set(module_local_params=True)`` gives a ``PyroModule``): two models never
    share weights, and a checkpoint is two state dicts.

    Parameters
    ----------
    model : RrVAE
        The model; trained in place.
    patterns : numpy.ndarray or torch.Tensor
        (N, H, W) = (N, ky, kx), e.g. from :func:`rrvae_nb.preprocess.prepare`.
    epochs : int
        Passes over the training patterns.
    batch_size : int
        Patterns per SVI step (the authors used 20). Larger batches are faster per epoch but take
        fewer steps: with a few thousand patterns, 128 left the content latents unused after
        100 epochs on a new material where 32 did not (``python -m bench.encoders``).
    lr : float
        Adam learning rate.
    seed : int
        Seeds the train/validation split, the minibatch order and the ELBO's samples: the same
        seed, data, model initialisation and device give identical weights.
    val_fraction : float
        Fraction of patterns held out for the validation loss (the authors: 0.15); 0 disables it.
    kl_weight : float or callable
        Weight of the latent sites (``poutine.scale``), constant or a function of the epoch
        (e.g. :func:`linear_warmup`).
    device : str or torch.device, optional
        Where to train (default: where the model is). ``"cuda"`` needs a GPU.
    progress : bool
        Show a tqdm progress bar with the current losses.
    num_particles : int
        ELBO samples per pattern.
    checkpoint : path, optional
        File for checkpoints (weights, optimiser state, history), written atomically every
        ``checkpoint_every`` epochs and at the end. If the file exists when ``fit`` starts,
        training resumes from it: the result equals that of an uninterrupted run with the same
        arguments (each epoch's randomness is seeded from ``(seed, epoch)``). A checkpoint made
        with other data or arguments is refused.
    checkpoint_every : int
        Epochs between checkpoints.
    callback : callable, optional
        Called as ``callback(epoch, history)`` after each epoch (``epoch`` counts from 1), e.g.
        to measure the model on the way; it must not change the model.
    calibrate : bool
        Before the first epoch of a model that was never calibrated, set its encoder's input
        scaling from ``patterns`` (:meth:`rrvae_nb.model.RrVAE.calibrate_inputs`). False: the
        encoder sees the patterns as they are (the behaviour before input scaling existed,
        which left the content latents unused on data whose patterns differ by a few
        hundredths; the chapters' tuned settings still use it).

    Returns
    -------
    History

    Warns
    -----
    UnusedLatentWarning
        When a content latent ends up unused (its posterior mean varies by less than
        :data:`ACTIVE_VARIANCE` over the held-out patterns); the message names the latent and
        what to change.

    """
    epochs = whole_number("epochs", epochs, 0)
    batch_size = whole_number("batch_size", batch_size, 1)
    seed = whole_number("seed", seed, 0)
    num_particles = whole_number("num_particles (ELBO samples per pattern)", num_particles, 1)
    schedule = _check_schedule(lr, kl_weight, checkpoint_every)
    x = as_patterns(patterns, model.pattern_shape,
                    unit_interval=model.config.likelihood != "gaussian")
    val_idx, train_idx = _split(x.shape[0], val_fraction, seed)
    if calibrate and not bool(model.input_calibrated):
        model.calibrate_inputs(x)  # the encoder's input scaling, from all the patterns
    dev = _resolve_device(model, device)
    model.to(dev)
    model.train()
    # Batches are gathered from the whole set through the index: copying the training split
    # would hold the data twice (on a GPU, only the training patterns are moved there).
    if dev.type == "cpu":
        source, train_pos = x, torch.from_numpy(train_idx)
    else:
        source, train_pos = x[train_idx].to(dev), torch.arange(len(train_idx), device=dev)
    elbo = _elbo(model, num_particles)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    hist = History(train_index=train_idx, val_index=val_idx)
    run_key = _run_key(x, epochs, batch_size, lr, seed, val_fraction, num_particles, model)
    run_key["calibrate"] = bool(calibrate)  # changes what the encoder sees
    checkpoint, start = _open_checkpoint(checkpoint, model, optimiser, hist, run_key, schedule)
    bar = tqdm(range(start, epochs), desc="training", unit="epoch", disable=not progress,
               initial=start, total=epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        beta = float(schedule(epoch))
        # each epoch's randomness depends on (seed, epoch) only, so a resumed run is identical
        pyro.set_rng_seed(_epoch_seed(seed, epoch))
        gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        perm = train_pos[torch.randperm(len(train_idx), generator=gen).to(dev)]
        hist.train_loss.append(_one_epoch(elbo, optimiser, source, perm, batch_size, beta, epoch))
        hist.kl_weight.append(beta)
        if len(val_idx):
            hist.val_loss.append(_evaluate(elbo, x, 4 * batch_size, dev,
                                           index=torch.from_numpy(val_idx)))
        hist.seconds.append(time.perf_counter() - t0)
        bar.set_postfix({"train": f"{hist.train_loss[-1]:.4g}",
                         **({"val": f"{hist.val_loss[-1]:.4g}"} if len(val_idx) else {})})
        done = epoch + 1
        if checkpoint is not None and (done % checkpoint_every == 0 or done == epochs):
            _save_checkpoint(checkpoint, model, optimiser, hist, run_key, done)
        if callback is not None:
            callback(done, hist)
            model.train()
    model.eval()
    if model.latent_dim and epochs > 0:
        variance, kl = latent_usage(model, x[val_idx] if len(val_idx) else x[train_idx])
        hist.latent_variance, hist.latent_kl = variance.tolist(), kl.tolist()
        _warn_unused(variance, kl)
    return hist


def _check_schedule(lr, kl_weight, checkpoint_every) -> Callable[[int], float]:
    """Check fit's numeric arguments; the KL weight as a function of the epoch."""
    positive_number("lr", lr)
    if not callable(kl_weight) and not (isinstance(kl_weight, (int, float)) and
                                        np.isfinite(kl_weight) and kl_weight >= 0):
        raise ValueError(
            f"kl_weight must be a finite number >= 0 or a function of the epoch; got "
            f"{kl_weight!r}."
        )
    if int(checkpoint_every) != checkpoint_every or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer; got {checkpoint_every!r}")
    return kl_weight if callable(kl_weight) else (lambda epoch: float(kl_weight))


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation, training) pattern indices, each sorted, drawn with ``seed``."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and (n_val < 1 or n - n_val < 1):
        raise ValueError(
            f"{n} patterns are too few to hold out {val_fraction:.0%} for validation: pass more "
            "patterns or val_fraction=0."
        )
    return np.sort(order[:n_val]), np.sort(order[n_val:])


def _open_checkpoint(checkpoint, model, optimiser, hist, run_key, schedule):
    """The checkpoint path (or None) and the epoch to start from (resuming if it exists)."""
    if checkpoint is None:
        return None, 0
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        raise ValueError(
            f"checkpoint={str(checkpoint)!r} is a folder, but a checkpoint is a file path: "
            f"pass e.g. checkpoint={str(checkpoint / 'run.pt')!r}."
        )
    # a process killed while writing leaves its temporary file: never the checkpoint itself
    for stale in stale_temporaries(checkpoint):
        stale.unlink(missing_ok=True)
    if checkpoint.exists():
        return checkpoint, _resume(checkpoint, model, optimiser, hist, run_key, schedule)
    return checkpoint, 0


def _one_epoch(elbo, optimiser, source, perm, batch_size, beta, epoch) -> float:
    """One pass of Adam steps over the patterns ``source[perm]``; the mean loss per pattern."""
    total = 0.0
    for s in range(0, len(perm), batch_size):
        loss = elbo(source[perm[s : s + batch_size]], kl_weight=beta)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        loss = float(loss.detach())
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"The loss became {loss} in epoch {epoch}: lower lr, scale the data to "
                "[0, 1] (rrvae_nb.preprocess.normalise) or use a larger likelihood scale."
            )
        total += loss
    return total / len(perm)


# ------------------------------------------------------------------------------ checkpoints
_CKPT_KIND = "rrvae-nb checkpoint"
#: 2: the optimiser is a torch.optim.Adam state_dict (1: Pyro's per-parameter optimisers, before
#: training left Pyro's global parameter store).
_CKPT_FORMAT = 2


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def _run_key(x, epochs, batch_size, lr, seed, val_fraction, num_particles, model) -> dict:
    """What must match for a checkpoint to continue this very run."""
    # every value of every pattern, in order: a changed or reordered pattern is another run
    digest = hashlib.sha256()
    flat = x.reshape(x.shape[0], -1)
    for s in range(0, flat.shape[0], 4096):
        digest.update(np.ascontiguousarray(flat[s : s + 4096].numpy()).tobytes())
    return {
        "n_patterns": int(x.shape[0]),
        "data_sha256": digest.hexdigest(),
        "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
        "seed": int(seed), "val_fraction": float(val_fraction),
        "num_particles": int(num_particles),
        "model_config": {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in asdict(model.config).items()},
    }


def _save_checkpoint(path: Path, model: RrVAE, optimiser: torch.optim.Optimizer, hist: History,
                     key: dict, epoch: int):
    payload = {
        "kind": _CKPT_KIND, "format": _CKPT_FORMAT, "package_version": __version__,
        "epoch": epoch, "run": key,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimiser.state_dict(),
        "history": {k: (v.tolist() if isinstance(v, np.ndarray) else list(v))
                    for k, v in asdict(hist).items()},
    }
    replace_atomically(path, lambda tmp: torch.save(payload, tmp), mkdir=True)


def _resume(path: Path, model: RrVAE, optimiser: torch.optim.Optimizer, hist: History,
            key: dict, schedule) -> int:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        # torch's text may advise weights_only=False (runs code from the file): never pass it on
        unsafe = "weights_only" in str(err)
        refusal = ValueError(
            f"Checkpoint {path} cannot be read: it is corrupt or truncated, or not an rrvae-nb "
            f"checkpoint ({type(err).__name__}). Use a new checkpoint path, or delete this file "
            "to start afresh."
        )
        if unsafe:
            raise refusal from None
        raise refusal from err
    if not isinstance(payload, dict) or payload.get("kind") != _CKPT_KIND:
        raise ValueError(f"{path} is not an rrvae-nb checkpoint: pass another checkpoint path.")
    if payload.get("format", 1) != _CKPT_FORMAT:
        raise ValueError(
            f"Checkpoint {path} was written by rrvae-nb {payload.get('package_version', '?')}, "
            "whose optimiser state this version cannot continue exactly. Use a new checkpoint "
            "path, or delete this file to start afresh (its weights alone: RrVAE.load_state_dict"
            "(torch.load(path, weights_only=True)['state_dict']))."
        )
    if payload["run"] != key:
        diff = sorted(k for k in key if payload["run"].get(k) != key[k])
        raise ValueError(
            f"Checkpoint {path} belongs to another run (differs in: {', '.join(diff)}). Use a "
            "new checkpoint path, or delete this file to start afresh."
        )
    # the objective of the epochs done: their KL weights must be this run's schedule's
    done = payload["history"]["kl_weight"]
    if [float(schedule(e)) for e in range(len(done))] != [float(w) for w in done]:
        raise ValueError(
            f"Checkpoint {path} belongs to another run (differs in: kl_weight, which was "
            f"{done} in its first {len(done)} epochs). Use a new checkpoint path, or delete "
            "this file to start afresh."
        )
    model.load_state_dict(payload["state_dict"])
    optimiser.load_state_dict(payload["optimizer"])
    for k, v in payload["history"].items():
        if k.startswith("latent_"):
            continue  # measured at the end of every run
        setattr(hist, k, np.asarray(v, dtype=int) if k.endswith("_index") else list(v))
    return int(payload["epoch"])
