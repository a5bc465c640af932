"""Out-of-core training and encoding: 4D-STEM data larger than memory.

A 256 x 256 scan of 256 x 256 patterns is 17 GB in float32. The pieces here never hold the raw
cube, nor even the whole preprocessed stack, in memory:

1. ``rrvae_nb.preprocess.prepare(lazy_signal, ..., compute=False)`` reduces the data chunk by
   chunk and keeps the result a dask array (two streaming passes for the mean and the range).
2. :func:`sample_patterns` draws a uniform random training subset, chunk by chunk, optionally into
   a ``.npy`` cache on disk; :func:`rrvae_nb.fit` trains on it (memory: the subset only).
3. :func:`encode_maps` encodes every pattern chunk by chunk and returns (or writes to ``.hspy``)
   the latent maps as a calibrated hyperspy signal.

Each step is a dask computation, so the same calls run on a ``dask.distributed`` cluster when a
``Client`` is active (the model travels to the workers once, inside the task graph), and give the
same results as in-process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..stem import core
from ..stem._atomic import replace_atomically
from .rrvae import RrVAE

__all__ = ["sample_patterns", "sample_index", "encode_maps", "latent_names"]


def sample_patterns(patterns, n: int, *, seed: int = 0, cache=None, progress: bool = True):
    """A uniform random subset of ``n`` patterns, read chunk by chunk.

    Parameters
    ----------
    patterns : dask.array.Array or numpy.ndarray
        (N, H, W) preprocessed patterns (e.g. ``prepare(..., compute=False).patterns``).
    n : int
        Subset size (all patterns if ``n >= N``). Memory: ``n * H * W * 4`` bytes.
    seed : int
        Which patterns are drawn.
    cache : path, optional
        ``.npy`` file for the subset, written atomically with a key beside it
        (``<cache>.key.json``: the stack's shape, ``n`` and ``seed``), and read back
        (memory-mapped) when it exists and its key matches; a cache made with other arguments is
        refused. Delete it after changing the data (the key cannot see the values).
    progress : bool
        Progress bar while reading.

    Returns
    -------
    numpy.ndarray
        (n, H, W) float32 in the order of the original stack: the patterns
        ``sample_index(N, n, seed)``.
    """
    if getattr(patterns, "ndim", None) != 3:
        raise ValueError(
            f"patterns must be a stack (N, H, W); got shape {getattr(patterns, 'shape', None)}."
        )
    total = int(patterns.shape[0])
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    n = min(int(n), total)
    shape = (n, *(int(s) for s in patterns.shape[1:]))
    key = {"stack_shape": [total, *shape[1:]], "n": n, "seed": int(seed)}
    if cache is not None:
        cache = Path(cache)
        key_path = cache.with_name(cache.name + ".key.json")
        if cache.exists():
            try:
                cached = np.load(cache, mmap_mode="r")
                stored = json.loads(key_path.read_text()) if key_path.exists() else None
            except (ValueError, OSError) as err:
                raise ValueError(
                    f"The sample cache {cache} cannot be read ({err}): delete it."
                ) from err
            if stored != key or cached.shape != shape:
                raise ValueError(
                    f"The sample cache {cache} was made with other arguments ({stored}; this "
                    f"call: {key}): pass another cache path, or delete it to sample afresh."
                )
            return cached
    index = sample_index(total, n, seed)
    (subset,) = core.compute(patterns[index], desc="sampling patterns", progress=progress)
    subset = np.ascontiguousarray(subset, dtype=np.float32)
    if cache is not None:
        # the key first: a run stopped in between leaves no cache that lacks its key
        replace_atomically(key_path, lambda tmp: tmp.write_text(json.dumps(key)), mkdir=True)
        replace_atomically(cache, lambda tmp: np.save(tmp, subset))
    return subset


def sample_index(total: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of the patterns :func:`sample_patterns` draws."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=min(n, total), replace=False))


def latent_names(model: RrVAE) -> list[str]:
    """Names of the channels :func:`encode_maps` writes, in order."""
    names = ["angle", "angle_std"]
    names += [f"z{i}" for i in range(model.latent_dim)]
    names += [f"z{i}_std" for i in range(model.latent_dim)]
    if model.config.translation:
        names += ["shift_y", "shift_x", "shift_y_std", "shift_x_std"]
    return names


_MODELS: dict[bytes, RrVAE] = {}


def _encode_block(block: np.ndarray, payload: bytes) -> np.ndarray:
    # The model travels as pickled bytes: a task graph that also holds an HDF5 file handle
    # (lazy .hspy data) is serialised by distributed's fallback, which would not use
    # RrVAE.__reduce__. Each worker unpickles a model once.
    import hashlib
    import pickle

    import torch

    key = hashlib.sha256(payload).digest()
    model = _MODELS.get(key)
    if model is None:
        model = _MODELS.setdefault(key, pickle.loads(payload))
    torch.set_num_threads(1)  # one thread per dask task: the workers are the parallelism
    enc = model.encode(np.asarray(block), batch_size=len(block), progress=False)
    cols = [enc.angle[:, None], enc.angle_std[:, None], enc.z, enc.z_std]
    if enc.translation is not None:
        cols += [enc.translation, enc.translation_std]
    return np.concatenate(cols, axis=1).astype(np.float32)


def encode_maps(
    model: RrVAE,
    prepared,
    *,
    path=None,
    chunk: int = 1024,
    progress: bool = True,
    title: str = "rrVAE latent maps",
):
    """Encode every pattern, chunk by chunk, into calibrated latent maps.

    Parameters
    ----------
    model : RrVAE
        A trained model (moved to the CPU for encoding).
    prepared : rrvae_nb.preprocess.Prepared
        Its ``patterns`` may be lazy (dask) or in memory; ``scan_shape`` gives the map shape and
        ``calibration`` the scan axes (nm).
    path : path, optional
        Write the maps to this ``.hspy`` file (atomically: a temporary file renamed).
    chunk : int
        Patterns per task.
    progress : bool
        Progress bar.

    Returns
    -------
    hyperspy.signals.Signal2D
        Shape (channel | scan y, scan x): one image per channel, named in
        ``metadata.Signal.channels`` (see :func:`latent_names`): angle and its std in rad, the
        content latents and their std, and the translation in pixels when the model has one.
        Signal axes ``y``, ``x`` in nm when ``prepared.calibration`` is known, else in pixels.
    """
    import dask.array as da

    from ..stem.signals import require_hyperspy

    hs = require_hyperspy()
    if prepared.scan_shape is None:
        raise ValueError("The patterns came without a scan grid: pass scan_shape= to prepare().")
    x = prepared.patterns
    x = x if core.is_dask(x) else da.from_array(np.asarray(x), chunks=(chunk, -1, -1))
    x = x.rechunk((chunk, -1, -1))
    model = model.to("cpu").eval()
    names = latent_names(model)
    import pickle

    lat = x.map_blocks(
        _encode_block, payload=pickle.dumps(model), dtype=np.float32, drop_axis=2,
        chunks=(x.chunks[0], (len(names),)),
        meta=np.empty((0, 0), dtype=np.float32),
    )
    (values,) = core.compute(lat, desc="encoding", progress=progress)
    values = np.asarray(values)
    ny, nx = prepared.scan_shape
    maps = np.moveaxis(values.reshape(ny, nx, len(names)), -1, 0)
    sig = hs.signals.Signal2D(np.ascontiguousarray(maps))
    sig.metadata.General.title = title
    sig.metadata.set_item("Signal.channels", names)
    ax_c = sig.axes_manager.navigation_axes[0]
    ax_c.name, ax_c.units = "channel", ""
    ax_x, ax_y = sig.axes_manager.signal_axes
    cal = prepared.calibration
    for ax, name, i in ((ax_y, "y", 0), (ax_x, "x", 1)):
        ax.name = name
        if cal is not None:
            ax.scale, ax.offset, ax.units = cal.scan_steps_nm[i], cal.scan_offset_nm[i], "nm"
        else:
            ax.units = "px"
    if path is not None:
        path = Path(path)
        if path.suffix != ".hspy":
            raise ValueError(f"Latent maps are written as .hspy; got {path.name!r}.")
        replace_atomically(path, lambda tmp: sig.save(tmp, overwrite=True), mkdir=True)
    return sig
