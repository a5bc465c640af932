"""The 4D-STEM core: one way into the data, one chunked pass over it.

Every analysis of the package (:mod:`~rrvae_nb.com`, :mod:`~rrvae_nb.detector`,
:mod:`~rrvae_nb.preprocess`, :mod:`~rrvae_nb.stream`, :mod:`~rrvae_nb.io`) reads 4D-STEM data
through these few functions, so that input types, memory and progress bars behave the same
everywhere:

* :func:`as_data` - a hyperspy signal, numpy array or dask array -> ``(array, Calibration)``;
* :func:`is_dask` - whether an array is lazy;
* :func:`map_patterns` - apply per-pattern functions (:class:`PerPattern`) to every pattern in
  one pass: numpy arrays in blocks of about :data:`BLOCK_BYTES` along the first axis, dask arrays
  chunk by chunk (whole patterns per chunk, the scan chunks kept), with one progress bar;
* :func:`mean_pattern` - the float64 mean pattern, in the same blocks;
* :func:`compute` - compute dask collections with a progress bar (or on the active
  ``dask.distributed`` client); numpy values pass through;
* :func:`check_on_camera` - refuse a pixel position (ky, kx) that lies off the camera.

Memory and progress policy: a numpy pass touches about :data:`BLOCK_BYTES` of raw data at a time
(its temporaries scale with that, not with the cube), and dask chunks made here (for example when
memory-mapping a file) hold about as much. With ``progress=None`` a bar is shown for dask data and
for numpy data above :data:`PROGRESS_BYTES`; ``True``/``False`` force it on or off. Bars are
``tqdm.auto`` (notebook widgets in Jupyter, text elsewhere), ``tqdm.dask`` for dask computations.

Conventions: 4D arrays are (scan y, scan x, ky, kx), stacks (N, ky, kx); pixel positions are
(row, column) = (ky, kx) with pixel centres at integers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .signals import Calibration, calibration_of

__all__ = [
    "BLOCK_BYTES",
    "PROGRESS_BYTES",
    "is_dask",
    "as_data",
    "check_cube",
    "block_rows",
    "iter_blocks",
    "PerPattern",
    "map_patterns",
    "mean_pattern",
    "compute",
    "show_progress",
    "check_on_camera",
    "pixel_pair",
]

#: Raw bytes per numpy block, and per dask chunk made by the package (bounds the temporaries).
BLOCK_BYTES = 64 * 2**20
#: With ``progress=None``, numpy data larger than this get a progress bar (dask data always).
PROGRESS_BYTES = 2**30


# ----------------------------------------------------------------------------------------------
# Input


def is_dask(array) -> bool:
    """Whether ``array`` is a dask collection (lazy), judged by its type's module."""
    return type(array).__module__.startswith("dask")


def as_data(data, calibration: Calibration | None = None, *, require_calibration: bool = False):
    """The raw array and its calibration, from a hyperspy signal or an array (+ calibration).

    Parameters
    ----------
    data : hyperspy Signal2D (eager or lazy), numpy.ndarray, dask.array.Array or array_like
        A calibrated 4D-STEM signal (scan y, scan x | ky, kx), or an array whose last two axes
        are (ky, kx). Dask arrays (and lazy signals' data) stay lazy, numpy arrays (memory maps
        included) are used as they are, anything else goes through ``numpy.asarray``.
    calibration : Calibration, optional
        For arrays only: their calibration. A signal carries its own.
    require_calibration : bool
        Refuse an array given without a calibration.

    Returns
    -------
    array : numpy.ndarray or dask.array.Array
        The data, axes as given.
    calibration : Calibration or None
        Read from the signal (:func:`rrvae_nb.signals.calibration_of`), or the one given.

    Raises
    ------
    ValueError
        A signal together with ``calibration``, an uncalibrated or non-4D signal, a
        ``calibration`` that is not a :class:`~rrvae_nb.signals.Calibration`, or (with
        ``require_calibration``) an array without one; each message says what to pass instead.
    """
    if hasattr(data, "axes_manager"):  # hyperspy signal
        if calibration is not None:
            raise ValueError(
                "A hyperspy signal carries its own calibration: leave calibration out "
                "(calibration= is for numpy and dask arrays); fix the signal's axes (scale, "
                "units) instead."
            )
        return data.data, calibration_of(data)  # raises on non-4D / uncalibrated signals
    if calibration is None and require_calibration:
        raise ValueError(
            "A plain array has no calibration: pass calibration=rrvae_nb.signals.Calibration("
            "...) or use a calibrated signal (rrvae_nb.signals.make_signal)."
        )
    if calibration is not None and not isinstance(calibration, Calibration):
        raise ValueError(
            f"calibration must be a rrvae_nb.signals.Calibration; got "
            f"{type(calibration).__name__}. Build one with Calibration(scan_step_nm=..., "
            "k_step_mrad=...)."
        )
    if not (is_dask(data) or isinstance(data, np.ndarray)):
        data = np.asarray(data)
    return data, calibration


def check_cube(array) -> None:
    """Refuse an array that is not 4D-STEM intensities: 4 axes, not empty, integer or real.

    Raises
    ------
    ValueError
        Naming the shape or dtype and how to fix it.
    """
    if getattr(array, "ndim", None) != 4:
        raise ValueError(
            f"4D-STEM data must have 4 axes (scan y, scan x, ky, kx); got shape "
            f"{getattr(array, 'shape', None)}. Reshape it, e.g. data.reshape(ny, nx, ky, kx); "
            "for a stack of patterns add a scan axis: data[None]."
        )
    if 0 in array.shape:
        raise ValueError(f"The data are empty (shape {array.shape}); pass at least one pattern.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(
            f"The data must be real intensities (integer or floating point); got {array.dtype}. "
            "For wave functions pass abs(wave) ** 2."
        )


# ----------------------------------------------------------------------------------------------
# Blocks, progress, computing


def block_rows(shape, itemsize: int, budget: int | None = None) -> int:
    """How many indices along the first axis of an array of ``shape`` fit in ``budget`` bytes.

    ``budget`` defaults to :data:`BLOCK_BYTES`. At least 1 and at most ``shape[0]`` (1 for an
    empty first axis).
    """
    budget = BLOCK_BYTES if budget is None else budget
    row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * int(itemsize))
    return int(max(1, min(max(1, int(shape[0])), budget // row)))


def iter_blocks(array, budget: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, array[start:start + rows])`` along axis 0, ``budget`` bytes or so each."""
    rows = block_rows(array.shape, array.dtype.itemsize, budget)
    for start in range(0, array.shape[0], rows):
        yield start, array[start:start + rows]


def show_progress(data, progress: bool | None) -> bool:
    """The progress policy: ``progress`` when given, else dask data or numpy data above 1 GiB."""
    if progress is not None:
        return bool(progress)
    if is_dask(data):
        return True
    return int(np.prod(data.shape, dtype=np.int64)) * data.dtype.itemsize > PROGRESS_BYTES


def _distributed_client_active() -> bool:
    if "distributed" not in sys.modules:  # no client can exist without the module loaded
        return False
    from distributed import get_client

    try:
        get_client()
    except ValueError:
        return False
    return True


def compute(*collections, desc: str = "computing", progress: bool = True):
    """Compute dask collections together (one pass over shared inputs); return a tuple.

    With an active ``dask.distributed`` client the client schedules (tqdm's dask callback sees
    only local schedulers, so there is no bar); otherwise the threaded scheduler runs with a
    ``tqdm.dask`` bar named ``desc``. Values that are not dask collections pass through.
    """
    import dask

    if not any(is_dask(c) for c in collections):
        return collections
    if _distributed_client_active():
        return dask.compute(*collections)
    from tqdm.dask import TqdmCallback

    with TqdmCallback(desc=desc, disable=not progress):
        return dask.compute(*collections, scheduler="threads")


# ----------------------------------------------------------------------------------------------
# The chunked pass


@dataclass(frozen=True)
class PerPattern:
    """A function applied to every pattern by :func:`map_patterns`, and the shape of its result.

    Attributes
    ----------
    func : callable
        ``func(block, **kwargs)`` maps a (..., ky, kx) block of whole patterns to a
        (..., *tail) array, the block's leading axes kept. It must treat each pattern on its
        own, so that blocks and chunks cannot change the result. For dask data it runs on the
        workers: make it (and ``kwargs``) picklable.
    tail : tuple of int
        Shape of the result per pattern: ``()`` for one number, ``(4,)``, ``(h, w)``, ...
    dtype : numpy dtype
        Dtype of the result.
    kwargs : dict
        Keyword arguments of ``func``.
    """

    func: Callable
    tail: tuple = ()
    dtype: object = np.float64
    kwargs: dict = field(default_factory=dict)

    def lazy(self, data):
        """``map_blocks`` of a dask array whose chunks hold whole patterns."""
        tail = tuple(int(n) for n in self.tail)
        ndim, n_out = data.ndim, data.ndim - 2 + len(tail)
        extra = {}
        if n_out < ndim:
            extra["drop_axis"] = list(range(n_out, ndim))
        elif n_out > ndim:
            extra["new_axis"] = list(range(ndim, n_out))
        return data.map_blocks(
            self.func, dtype=self.dtype, chunks=data.chunks[:-2] + tuple((n,) for n in tail),
            meta=np.empty((0,) * n_out, dtype=self.dtype), **extra, **self.kwargs,
        )


def map_patterns(data, *maps: PerPattern, desc: str, progress: bool | None = None,
                 compute_result: bool = True) -> list:
    """Apply per-pattern functions to every pattern of a numpy or dask array, in one pass.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        (..., ky, kx): any leading axes, (scan y, scan x) or (N,).
    *maps : PerPattern
        The functions; each block (chunk) is read once and handed to each of them.
    desc : str
        Name of the progress bar.
    progress : bool, optional
        Show a bar; default :func:`show_progress`'s policy.
    compute_result : bool
        For dask data: compute (default) or return the lazy results.

    Returns
    -------
    list of numpy.ndarray or dask.array.Array
        One (..., *tail) array per function: numpy for numpy data, and for dask data with
        ``compute_result`` (then never a view of ``data``).

    Notes
    -----
    numpy data are read in blocks of about :data:`BLOCK_BYTES` along the first axis and written
    into preallocated results. Dask data are rechunked so that each chunk holds whole patterns
    (the chunks of the leading axes are kept) and mapped with ``map_blocks``; several results
    are computed together, so the raw chunks are read once.
    """
    lead = tuple(int(n) for n in data.shape[:-2])
    show = show_progress(data, progress)
    if not is_dask(data):
        from tqdm.auto import tqdm

        outs = [np.empty(lead + tuple(m.tail), dtype=m.dtype) for m in maps]
        per_row = int(np.prod(lead[1:], dtype=np.int64))
        with tqdm(total=lead[0] * per_row, desc=desc, unit="pattern", disable=not show) as bar:
            for start, block in iter_blocks(data):
                for m, out in zip(maps, outs, strict=True):
                    out[start:start + len(block)] = m.func(block, **m.kwargs)
                bar.update(len(block) * per_row)
        return outs
    data = data.rechunk({data.ndim - 2: -1, data.ndim - 1: -1})
    lazy = [m.lazy(data) for m in maps]
    if not compute_result:
        return lazy
    outs = [np.asarray(o) for o in compute(*lazy, desc=desc, progress=show)]
    return [o if o.flags.owndata else o.copy() for o in outs]


def _block_sum(block: np.ndarray) -> np.ndarray:
    """(n, ..., ky, kx) block -> (ky, kx) float64 sum over all its patterns."""
    flat = block.reshape((-1,) + block.shape[-2:])
    return flat.sum(axis=0, dtype=np.float64)


def mean_pattern(data, *, desc: str = "mean pattern", progress: bool | None = None) -> np.ndarray:
    """The (ky, kx) float64 mean of all patterns of a (..., ky, kx) numpy or dask array.

    numpy data are summed in float64 block by block (about :data:`BLOCK_BYTES` each); dask data
    with dask's own float64 mean.
    """
    lead_axes = tuple(range(data.ndim - 2))
    show = show_progress(data, progress)
    if is_dask(data):
        (mean,) = compute(data.mean(axis=lead_axes, dtype=np.float64), desc=desc, progress=show)
        return np.asarray(mean, dtype=np.float64)
    from tqdm.auto import tqdm

    n = int(np.prod(data.shape[:-2], dtype=np.int64))
    per_row = n // max(1, data.shape[0])
    total = np.zeros(data.shape[-2:], dtype=np.float64)
    with tqdm(total=n, desc=desc, unit="pattern", disable=not show) as bar:
        for _, block in iter_blocks(data):
            total += _block_sum(block)
            bar.update(len(block) * per_row)
    return total / n


# ----------------------------------------------------------------------------------------------
# Pixel positions


def check_on_camera(point, shape, *, label: str, subject: str, fix: str,
                    noun: str = "pattern", at: str = "", axes=("ky", "kx")) -> tuple[float, float]:
    """Check that a pixel position (row, column) lies on a camera of ``shape`` (ky, kx) pixels.

    Valid positions satisfy ``0 <= row <= ky - 1`` and ``0 <= column <= kx - 1`` (pixel centres
    at integers); NaN is refused.

    Parameters
    ----------
    point : (float, float)
        The position (row, column) in pixels.
    shape : (int, int)
        Pattern shape (ky, kx).
    label, subject, fix, noun, at, axes : str
        Pieces of the message: "<label> lies <at>outside the <ky> x <kx> <noun>: <subject> must
        satisfy 0 <= <axes[0]> <= ... and 0 <= <axes[1]> <= ... (pixels, row and column). <fix>"

    Returns
    -------
    (float, float)
        The position as two floats.

    Raises
    ------
    ValueError
        If the position lies off the camera.
    """
    y, x = (float(v) for v in point)
    ny, nx = (int(n) for n in shape)
    if not (0 <= y <= ny - 1 and 0 <= x <= nx - 1):  # also refuses NaN
        raise ValueError(
            f"{label} lies {at}outside the {ny} x {nx} {noun}: {subject} must satisfy "
            f"0 <= {axes[0]} <= {ny - 1} and 0 <= {axes[1]} <= {nx - 1} (pixels, row and "
            f"column). {fix}"
        )
    return y, x


def pixel_pair(value, name: str, fix: str = "", axes: str = "ky, kx") -> tuple[float, float]:
    """Two finite numbers (a pixel position), or a ValueError naming ``name``."""
    try:
        pair = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        pair = np.full(3, np.nan)
    if pair.shape != (2,) or not np.isfinite(pair).all():
        raise ValueError(
            f"{name} must be two finite numbers ({axes}) in pixels (row, column); got "
            f"{value!r}. {fix}".rstrip()
        )
    return float(pair[0]), float(pair[1])

