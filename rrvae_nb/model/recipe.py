"""The preprocessing recipe of a trained model: raw frames in, model input out.

A model trained on ``prepare(data, ...).patterns`` must see new frames (the next scan, a live
stream, a file on a cluster) preprocessed *exactly* the same way: the same window about the same
disk centre, the same binning or resizing and intensity scaling, the same mean pattern
subtracted, the same PCA basis and the same value range mapped to [0, 1]. None of these may be
re-estimated from the new data, or the latents would drift with it. :class:`Recipe` freezes
them from a :class:`~rrvae_nb.preprocess.Prepared` and applies them to any batch of raw frames::

    prep = prepare(sig, crop=48, bin_factor=2)
    recipe = Recipe.from_prepared(prep)
    recipe.apply(raw_frames)            # equals prep.patterns for the same frames
    recipe.save_beside("model.pt")      # -> model.recipe.npz, read by Recipe.for_model

The per-pattern steps run through the very code :func:`~rrvae_nb.preprocess.prepare` runs
(``preprocess._PatternSteps``), so a recipe cannot drift from it. Arrays: frames (n, ky, kx),
model input (n, h, w) float32.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..stem._atomic import replace_atomically
from ..stem.preprocess import (
    _PatternSteps,
    _SquareGrid,
    _to_unit_range,
    _window_shape,
    pca_project,
)

__all__ = ["Recipe", "recipe_path"]

#: Version of the ``.recipe.npz`` layout written by :meth:`Recipe.save`.
RECIPE_FORMAT = 1
_KIND = "rrvae-nb preprocessing recipe"


def recipe_path(model_path) -> Path:
    """Where the recipe of a model file lives: ``model.pt`` -> ``model.recipe.npz``."""
    return Path(model_path).with_suffix(".recipe.npz")


@dataclass(frozen=True, eq=False)
class Recipe:
    """Everything :func:`~rrvae_nb.preprocess.prepare` did to the patterns, frozen.

    Build one with :meth:`from_prepared`; the fields mirror ``prepare``'s steps.

    Attributes
    ----------
    raw_shape : (int, int)
        Raw frame shape (ky, kx) in camera pixels.
    square : (int, float, int) or None
        Resampling onto square pixels (axis, coarse / fine step, output pixels), or None.
    origin : (float, float)
        Raw-pixel position (ky, kx) of window pixel (0, 0) (set by the disk centre found once).
    window : (int, int)
        Window shape in (square) raw pixels.
    bin_factor, bin_reduce, size, scale
        Binning or resizing and intensity scaling, as given to ``prepare``.
    mean_pattern : numpy.ndarray (h, w) float32 or None
        Subtracted from every reduced pattern (None: ``subtract_mean=False``).
    pca_mean, pca_components : numpy.ndarray or None
        PCA projection: mean (h * w,) and kept components (keep, h * w).
    value_range : (float, float) or None
        (lo, hi) sent to (0, 1) (None: ``normalise=False``).
    affine : (float, float, float) or None
        A final ``(x - subtract) / divide + add`` (see :meth:`then_affine`), or None.
    """

    raw_shape: tuple[int, int]
    square: tuple[int, float, int] | None
    origin: tuple[float, float]
    window: tuple[int, int]
    bin_factor: int | None
    bin_reduce: str
    size: int | None
    scale: object
    mean_pattern: np.ndarray | None
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    value_range: tuple[float, float] | None = None
    affine: tuple[float, float, float] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_prepared(cls, prepared) -> Recipe:
        """The recipe of a :class:`~rrvae_nb.preprocess.Prepared` (from ``prepare``).

        Raises
        ------
        ValueError
            If ``prepared`` was not made by :func:`~rrvae_nb.preprocess.prepare` (its
            ``steps`` record lacks the parameters), or used PCA but carries no PCA basis.
        """
        rec = getattr(prepared, "steps", None) or {}
        needed = ("input_shape", "window_origin_px", "crop", "bin_factor", "size", "scale",
                  "subtract_mean", "pca_components", "normalise")
        missing = [k for k in needed if k not in rec]
        if missing:
            raise ValueError(
                f"This Prepared does not record how its patterns were made (missing "
                f"{', '.join(missing)} in .steps): build the recipe from the result of "
                "rrvae_nb.preprocess.prepare(...), not from a Prepared assembled by hand."
            )
        H, W = (int(n) for n in rec["input_shape"][-2:])
        square, square_shape = None, (H, W)
        if rec.get("square_pixels"):
            grid = _SquareGrid.of(tuple(rec["square_pixels"]["from_k_steps_mrad"]), (H, W))
            square, square_shape = (grid.axis, grid.ratio, grid.n_out), grid.out_shape((H, W))
        pca_mean = pca_components = None
        if rec["pca_components"] is not None:
            if getattr(prepared, "pca_basis", None) is None:
                raise ValueError(
                    "The patterns were PCA-denoised but this Prepared carries no PCA basis "
                    "(made by an older rrvae-nb?): run prepare(...) again to get one."
                )
            pca_mean, pca_components = (np.asarray(a, dtype=np.float32)
                                        for a in prepared.pca_basis)
        value_range = None
        if rec["normalise"]:
            value_range = tuple(float(v) for v in rec["value_range"])
        recipe = cls(
            raw_shape=(H, W), square=square,
            origin=tuple(float(v) for v in rec["window_origin_px"]),
            window=_window_shape(rec["crop"], square_shape),
            bin_factor=rec["bin_factor"], bin_reduce=rec.get("bin_reduce") or "sum",
            size=rec["size"], scale=rec["scale"],
            mean_pattern=(np.asarray(prepared.mean_pattern, dtype=np.float32)
                          if rec["subtract_mean"] else None),
            pca_mean=pca_mean, pca_components=pca_components, value_range=value_range,
        )
        out = tuple(int(n) for n in prepared.patterns.shape[1:])
        if recipe.out_shape != out:  # pragma: no cover - guards prepare's record
            raise RuntimeError(f"recipe gives {recipe.out_shape} patterns, prepare gave {out}")
        return recipe

    def then_affine(self, subtract: float = 0.0, divide: float = 1.0, add: float = 0.0) -> Recipe:
        """This recipe followed by ``(x - subtract) / divide + add`` (in float32).

        For a stretch applied after ``prepare``, e.g. chapter 6's
        ``(x - centre) / (4 * spread) + 0.5``: ``recipe.then_affine(centre, 4 * spread, 0.5)``
        gives the same float32 numbers. Replaces an earlier affine step.
        """
        values = tuple(float(v) for v in (subtract, divide, add))
        if not all(np.isfinite(values)) or values[1] == 0:
            raise ValueError(f"then_affine needs finite numbers and divide != 0; got {values}.")
        return replace(self, affine=values)

    # ------------------------------------------------------------------ use
    @property
    def steps(self) -> _PatternSteps:
        """The per-pattern steps as ``prepare`` runs them (centre/crop, bin/resize, scale)."""
        square = None if self.square is None else _SquareGrid(*self.square)
        return _PatternSteps(shape=self.raw_shape, origin=self.origin, window=self.window,
                             bin_factor=self.bin_factor, bin_reduce=self.bin_reduce,
                             size=self.size, scale=self.scale, square=square)

    @property
    def out_shape(self) -> tuple[int, int]:
        """Shape (h, w) of the model input."""
        return self.steps.out_shape

    def apply(self, frames) -> np.ndarray:
        """Preprocess raw frames as the model's training patterns were.

        Parameters
        ----------
        frames : array_like, shape (n, ky, kx) or (ky, kx)
            Raw frames (counts) of the camera shape ``raw_shape``, any real dtype.

        Returns
        -------
        numpy.ndarray, float32, shape (n, h, w)
            The model input; for the frames ``prepare`` saw, equal to its ``patterns`` (to
            float32 rounding).

        Raises
        ------
        ValueError
            On frames of another camera shape, or NaN/inf in the result (bad counts).
        """
        x = np.asarray(frames)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or tuple(x.shape[1:]) != tuple(self.raw_shape):
            raise ValueError(
                f"frames must have shape (n, {self.raw_shape[0]}, {self.raw_shape[1]}) (the "
                f"camera shape the model was prepared on); got {x.shape}. Bin or crop the "
                "camera the same way as for training, or train on this camera shape."
            )
        if np.issubdtype(x.dtype, np.complexfloating) or not (
                np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"frames have dtype {x.dtype}; pass real numbers (counts).")
        out = self.steps.apply(x)
        if self.mean_pattern is not None:
            out = out - self.mean_pattern
        if self.pca_components is not None:
            out = pca_project(out, self.pca_mean, self.pca_components)
        if self.value_range is not None:
            out = _to_unit_range(out, *self.value_range)
        if self.affine is not None:
            sub, div, add = self.affine
            out = (out - sub) / div + add
        out = np.ascontiguousarray(out, dtype=np.float32)
        bad = np.count_nonzero(~np.isfinite(out))
        if bad:
            raise ValueError(
                f"Preprocessing gave {bad} NaN or infinite values: the frames contain NaN/inf "
                "counts (or negative counts under a log/sqrt scale). Replace them first, e.g. "
                "np.nan_to_num(frames, nan=0.0)."
            )
        return out

    # ------------------------------------------------------------------ files
    def save(self, path) -> Path:
        """Write the recipe to a ``.npz`` file (atomically: a temporary file renamed)."""
        path = Path(path)
        if not path.name.endswith(".npz"):
            raise ValueError(f"A recipe is written as .npz; got {path.name!r}.")
        meta = dict(kind=_KIND, format=RECIPE_FORMAT, raw_shape=list(self.raw_shape),
                    square=None if self.square is None else list(self.square),
                    origin=list(self.origin), window=list(self.window),
                    bin_factor=self.bin_factor, bin_reduce=self.bin_reduce, size=self.size,
                    scale=self.scale,
                    value_range=None if self.value_range is None else list(self.value_range),
                    affine=None if self.affine is None else list(self.affine))
        arrays = {"meta": np.array(json.dumps(meta))}
        for name in ("mean_pattern", "pca_mean", "pca_components"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = np.asarray(value, dtype=np.float32)
        return replace_atomically(path, lambda tmp: np.savez(tmp, **arrays), mkdir=True)

    @classmethod
    def load(cls, path) -> Recipe:
        """Read a recipe written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path``.
        ValueError
            If the file is not a recipe, is damaged, or was written in another format version.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"No preprocessing recipe at {path}. Save it when you save the model: "
                "Recipe.from_prepared(prepared).save_beside(model_path)."
            )
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                arrays = {k: np.asarray(f[k]) for k in f.files if k != "meta"}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(
                f"{path} is not a readable preprocessing recipe (damaged or truncated: "
                f"{type(err).__name__}). Save it again with Recipe.save."
            ) from err
        if not isinstance(meta, dict) or meta.get("kind") != _KIND:
            raise ValueError(f"{path} is not an rrvae-nb preprocessing recipe.")
        if meta.get("format") != RECIPE_FORMAT:
            raise ValueError(
                f"{path} is in recipe format {meta.get('format')}; this rrvae-nb reads format "
                f"{RECIPE_FORMAT}. Make the recipe again from prepare(...) with this version."
            )

        def pair(v, kind=float):
            return None if v is None else tuple(kind(x) for x in v)

        square = meta["square"]
        return cls(
            raw_shape=pair(meta["raw_shape"], int),
            square=None if square is None else (int(square[0]), float(square[1]),
                                                int(square[2])),
            origin=pair(meta["origin"]), window=pair(meta["window"], int),
            bin_factor=meta["bin_factor"], bin_reduce=meta["bin_reduce"], size=meta["size"],
            scale=meta["scale"], mean_pattern=arrays.get("mean_pattern"),
            pca_mean=arrays.get("pca_mean"), pca_components=arrays.get("pca_components"),
            value_range=pair(meta["value_range"]), affine=pair(meta["affine"]),
        )

    def save_beside(self, model_path) -> Path:
        """Save as the recipe of a model file (``model.pt`` -> ``model.recipe.npz``)."""
        return self.save(recipe_path(model_path))

    @classmethod
    def for_model(cls, model_path) -> Recipe:
        """Load the recipe saved beside a model file (see :meth:`save_beside`)."""
        return cls.load(recipe_path(model_path))
