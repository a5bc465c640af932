"""The rrVAE encoder as a LiberTEM user-defined function (UDF): maps at the microscope and on a
cluster.

`LiberTEM <https://libertem.github.io>`_ is the 4D-STEM field's engine for high-throughput and
live processing: a UDF runs unchanged on its inline, dask-distributed and pipelined executors,
over its native detector formats (MIB, K2IS, FRMS6, EMPAD, BLO, SEQ, MRC, TVIPS, DM, HDF5, raw,
npy, ...) and, through LiberTEM-live, on the detector's stream during acquisition.
:class:`RrVAEEncoderUDF` preprocesses each raw frame with the model's
:class:`~rrvae_nb.recipe.Recipe` (exactly what ``prepare`` did at training time) and encodes it,
returning per-scan-position maps: angle and its std (rad), content latents and their std, the
translation when the model has one, and optionally the reconstruction error.

Install the optional extra: ``pip install rrvae-nb[live]`` (LiberTEM 0.16).

How it maps onto LiberTEM's hooks:

- ``process_tile`` only *preprocesses* (tiles that hold parts of large frames are assembled into
  whole frames first); the model inputs of a partition are kept on the UDF and encoded in
  ``postprocess`` in batches of ``batch_size``, so the encoder's batch does not depend on how a
  file format tiles its data (HDF5 tiles follow the file's chunks, often a few frames).
  LiberTEM's ``process_partition`` would give the same batching but failed on HDF5 datasets in
  LiberTEM 0.16.
- ``get_task_data`` runs on the worker: it unpickles the model once per worker process (a
  module-level cache) and puts it on the worker's device.
- ``get_backends``: ``numpy`` (CPU) and ``cuda`` (a CUDA worker: frames arrive as numpy arrays,
  the model runs on that worker's GPU through torch). The CUDA path has not run on a GPU yet.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

from .model.recipe import Recipe

try:  # LiberTEM is an optional extra; the rest of the package works without it
    from libertem.udf.base import UDF as _UDF

    HAVE_LIBERTEM = True
except ImportError:  # pragma: no cover - exercised only without the extra
    _UDF = object
    HAVE_LIBERTEM = False

__all__ = ["RrVAEEncoderUDF", "latent_maps", "HAVE_LIBERTEM"]

_MISSING = (
    "RrVAEEncoderUDF needs LiberTEM, an optional extra of rrvae-nb: "
    "pip install 'rrvae-nb[live]' (or pip install 'libertem==0.16.*')."
)

#: Models unpickled on this worker process, by (sha256 of the pickled model, device).
_MODELS: dict = {}


class _ModelSource:
    """A model checked on the main process, carried to the workers as pickled bytes (small:
    the weights), so that a cluster's workers need no access to the model file."""

    def __init__(self, payload: bytes, pattern_shape, n_latent: int, translation: bool):
        self.payload = payload
        self.key = hashlib.sha256(payload).hexdigest()
        self.pattern_shape = tuple(pattern_shape)
        self.n_latent = int(n_latent)
        self.translation = bool(translation)

    def model(self, device: str):
        """The model on ``device``, unpickled once per worker process."""
        key = (self.key, device)
        model = _MODELS.get(key)
        if model is None:
            model = pickle.loads(self.payload).to(device).eval()
            _MODELS[key] = model
        return model


class RrVAEEncoderUDF(_UDF):
    """Encode every frame of a LiberTEM dataset with a trained rrVAE.

    Parameters
    ----------
    model : path or rrvae_nb.RrVAE
        A model file written by ``RrVAE.save`` (its recipe is then read from beside it,
        ``model.recipe.npz``, unless ``recipe`` is given), or a model object.
    recipe : rrvae_nb.recipe.Recipe or path, optional
        How raw frames become model input (``Recipe.from_prepared(prepared)``). Required with a
        model object.
    batch_size : int
        Frames per forward pass of the encoder.
    reconstruction_error : bool
        Also return ``error``: the mean squared difference (model-input units) between each
        preprocessed frame and the model's reconstruction of it (decoded at its own pose).

    Results
    -------
    Per scan position (LiberTEM ``kind="nav"`` buffers, float32): ``angle`` and ``angle_std``
    (rad; positive = counter-clockwise on screen, wrapped to [-pi/n, pi/n) for symmetry n),
    ``z`` and ``z_std`` (extra axis: the content latents), ``translation`` and
    ``translation_std`` (extra axis (dy, dx), pixels; models with translation latents only),
    ``error`` (with ``reconstruction_error=True``). :func:`latent_maps` turns them into the
    channels of :func:`rrvae_nb.stream.encode_maps`.

    Examples
    --------
    >>> import libertem.api as lt
    >>> from rrvae_nb.udf import RrVAEEncoderUDF, latent_maps
    >>> ctx = lt.Context.make_with("inline")
    >>> ds = ctx.load("auto", path="scan.hspy")
    >>> maps = latent_maps(ctx.run_udf(ds, RrVAEEncoderUDF("model.pt")))
    >>> maps["angle"].shape       # (scan y, scan x)
    """

    def __init__(self, model=None, recipe=None, batch_size: int = 256,
                 reconstruction_error: bool = False, **kwargs):
        if not HAVE_LIBERTEM:
            raise ImportError(_MISSING)
        if not isinstance(model, _ModelSource):  # the user's call, not a worker's copy
            model, recipe = _resolve(model, recipe)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
        super().__init__(model=model, recipe=recipe, batch_size=int(batch_size),
                         reconstruction_error=bool(reconstruction_error), **kwargs)

    # ------------------------------------------------------------------ LiberTEM hooks
    def get_backends(self):
        return (self.BACKEND_NUMPY, self.BACKEND_CUDA)

    def get_preferred_input_dtype(self):
        return np.float32  # prepare's per-pattern steps also start by converting to float32

    def get_tiling_preferences(self):
        return {"depth": self.params.batch_size, "total_size": self.TILE_SIZE_MAX}

    def get_result_buffers(self):
        src, recipe = self.params.model, self.params.recipe
        sig = tuple(int(n) for n in self.meta.dataset_shape.sig)
        if sig != tuple(recipe.raw_shape):
            raise ValueError(
                f"The dataset's frames are {sig[0]} x {sig[1]} pixels but the model was "
                f"prepared on {recipe.raw_shape[0]} x {recipe.raw_shape[1]}: load the dataset "
                "with the same camera binning/cropping as the training data (e.g. LiberTEM's "
                "sig_shape= for raw files), or train a model on this camera shape."
            )
        L = (src.n_latent,)
        bufs = {
            "angle": self.buffer(kind="nav", dtype=np.float32),
            "angle_std": self.buffer(kind="nav", dtype=np.float32),
            "z": self.buffer(kind="nav", extra_shape=L, dtype=np.float32),
            "z_std": self.buffer(kind="nav", extra_shape=L, dtype=np.float32),
        }
        if src.translation:
            bufs["translation"] = self.buffer(kind="nav", extra_shape=(2,), dtype=np.float32)
            bufs["translation_std"] = self.buffer(kind="nav", extra_shape=(2,),
                                                  dtype=np.float32)
        if self.params.reconstruction_error:
            bufs["error"] = self.buffer(kind="nav", dtype=np.float32)
        return bufs

    def get_task_data(self):
        import torch

        device = "cpu"
        if self.meta.device_class == "cuda":
            from libertem.common.backend import get_use_cuda

            # LiberTEM names the GPU a worker owns here (it does not set CUDA_VISIBLE_DEVICES)
            device = f"cuda:{get_use_cuda() or 0}"
        threads = self.meta.threads_per_worker
        if threads is not None and device == "cpu":
            torch.set_num_threads(max(1, int(threads)))
        return {"model": self.params.model.model(device)}

    def process_tile(self, tile):
        H, W = self.params.recipe.raw_shape
        sl = self.meta.slice  # origin (first frame of the tile, ky, kx), flattened scan
        start, n = int(sl.origin[0]), int(tile.shape[0])
        if tuple(tile.shape[1:]) == (H, W):
            self._preprocess(start, tile)
            return
        # Large frames (e.g. 1024 x 1024) come in parts: assemble each stack of frames, then
        # preprocess it whole (the recipe needs whole frames)
        partial = self.__dict__.setdefault("_partial", {})
        frames, filled = partial.get((start, n), (None, 0))
        if frames is None:
            frames = np.zeros((n, H, W), dtype=np.float32)
        (oy, ox), (h, w) = sl.origin[1:], tuple(sl.shape)[1:]
        frames[:, oy : oy + h, ox : ox + w] = np.asarray(tile).reshape(n, h, w)
        filled += h * w
        if filled == H * W:
            partial.pop((start, n), None)
            self._preprocess(start, frames)
        else:
            partial[(start, n)] = (frames, filled)

    def _preprocess(self, start: int, frames) -> None:
        # tiles can arrive out of scan order (HDF5 reads chunk by chunk): keep their start
        pending = self.__dict__.setdefault("_pending", [])
        pending.append((start, self.params.recipe.apply(np.asarray(frames))))

    def postprocess(self):
        pending = self.__dict__.pop("_pending", [])
        if self.__dict__.pop("_partial", None):  # pragma: no cover - guards LiberTEM's tiling
            raise RuntimeError("some frames of this partition arrived incomplete")
        n = len(self.results.angle)
        if not pending:
            if n:  # pragma: no cover - guards LiberTEM's calling order
                raise RuntimeError("postprocess before any frame of a non-empty partition")
            return
        pending.sort(key=lambda item: item[0])
        starts = [start for start, _ in pending]
        ends = [start + len(x) for start, x in pending]
        x = np.concatenate([x for _, x in pending])
        if len(x) != n or starts[1:] != ends[:-1]:  # pragma: no cover - guards LiberTEM
            raise RuntimeError(f"tiles of {len(x)} frames, starts {starts}, do not tile the "
                               f"partition's {n} scan positions")
        model = self.task_data.model
        bs = self.params.batch_size
        for s in range(0, n, bs):
            sl = slice(s, s + bs)
            enc = model.encode(x[sl], batch_size=bs, progress=False)
            self.results.angle[sl] = enc.angle
            self.results.angle_std[sl] = enc.angle_std
            self.results.z[sl] = enc.z
            self.results.z_std[sl] = enc.z_std
            if enc.translation is not None:
                self.results.translation[sl] = enc.translation
                self.results.translation_std[sl] = enc.translation_std
            if self.params.reconstruction_error:
                rec = model.decode(enc.z, enc.angle, enc.translation)
                diff = rec.reshape(len(rec), -1) - x[sl].reshape(len(rec), -1)
                self.results.error[sl] = np.mean(diff.astype(np.float64) ** 2, axis=1)


def _resolve(model, recipe):
    """(_ModelSource, Recipe) from a model file or object and an optional recipe."""
    from .model.rrvae import RrVAE

    if isinstance(model, (str, Path)):
        path = Path(model)
        loaded = RrVAE.load(path)
        if recipe is None:
            recipe = Recipe.for_model(path)
        model = loaded
    elif not isinstance(model, RrVAE):
        raise TypeError(
            f"model must be a model file path or an rrvae_nb.RrVAE; got {type(model).__name__}."
        )
    elif recipe is None:
        raise ValueError(
            "With a model object, pass its preprocessing recipe too: "
            "RrVAEEncoderUDF(model, recipe=Recipe.from_prepared(prepared))."
        )
    if isinstance(recipe, (str, Path)):
        recipe = Recipe.load(recipe)
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be an rrvae_nb.recipe.Recipe or a path; got "
                        f"{type(recipe).__name__}.")
    if tuple(recipe.out_shape) != tuple(model.pattern_shape):
        raise ValueError(
            f"The recipe makes {recipe.out_shape} patterns but the model takes "
            f"{tuple(model.pattern_shape)}: this recipe belongs to another model."
        )
    model = model.to("cpu").eval()
    source = _ModelSource(pickle.dumps(model), model.pattern_shape, model.latent_dim,
                          model.config.translation)
    return source, recipe


def latent_maps(results) -> dict[str, np.ndarray]:
    """The UDF's results as maps named like :func:`rrvae_nb.stream.latent_names`.

    Parameters
    ----------
    results : dict
        What ``Context.run_udf(ds, RrVAEEncoderUDF(...))`` returned.

    Returns
    -------
    dict of str to numpy.ndarray
        ``angle``, ``angle_std``, ``z0``, ..., ``z0_std``, ..., (``shift_y``, ``shift_x``,
        ``shift_y_std``, ``shift_x_std``), (``error``): each (scan y, scan x) float32. With an
        ROI, positions outside it are NaN.
    """
    out = {"angle": results["angle"].data, "angle_std": results["angle_std"].data}
    z, z_std = results["z"].data, results["z_std"].data
    for i in range(z.shape[-1]):
        out[f"z{i}"] = z[..., i]
    for i in range(z.shape[-1]):
        out[f"z{i}_std"] = z_std[..., i]
    if "translation" in results:
        t, t_std = results["translation"].data, results["translation_std"].data
        out.update(shift_y=t[..., 0], shift_x=t[..., 1], shift_y_std=t_std[..., 0],
                   shift_x_std=t_std[..., 1])
    if "error" in results:
        out["error"] = results["error"].data
    return {k: np.asarray(v) for k, v in out.items()}
