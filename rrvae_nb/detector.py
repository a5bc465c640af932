"""Virtual detectors: images formed by summing chosen pixels of every diffraction pattern.

A real STEM detector collects the electrons scattered into a range of angles: the bright-field
(BF) detector those inside the probe's aperture image (the BF disk), an annular dark-field (ADF)
detector those in a ring outside it, a high-angle ADF (HAADF) detector those scattered far out,
roughly in proportion to the square of the atomic number ("Z contrast"). A pixelated camera
records the whole pattern at every probe position, so any such detector can be formed afterwards
by summing the pixels in the ring: a *virtual* detector.

* :func:`scattering_angle_mrad` - the scattering angle |k| of every camera pixel, in mrad, about
  the calibrated k = 0 or about a given pixel (e.g. a measured BF-disk centre);
* :func:`annular_image` - the sum of every pattern over inner_mrad <= |k| < outer_mrad, on numpy
  arrays and on eager or lazy (dask-backed) hyperspy signals, chunk by chunk.

Conventions: 4D data are (scan y, scan x, ky, kx); pixel coordinates are (row, column) =
(ky, kx) with pixel centres at integers, as in :mod:`rrvae_nb.preprocess`.

Why our own code: hyperspy's ``CircleROI`` crops a masked copy of the annulus' bounding square
(an outer radius is required, and its sums need masked-array handling), and the dedicated
virtual-imaging tools live in pyxem, which is not a dependency and cannot be installed next to
abTEM 1.0.11 (zarr pins). A mask and one sum per pattern are a few lines of numpy and dask.
"""

from __future__ import annotations

import numpy as np

from .signals import Calibration, _shape2, calibration_of

__all__ = ["scattering_angle_mrad", "annular_image"]

#: Raw patterns are summed in blocks of scan rows of about this many bytes (bounded temporaries).
_BLOCK_BYTES = 64 * 2**20


def _centre_pair(centre_px, shape) -> tuple[float, float]:
    """Check a pixel centre (cy, cx) inside a (ky, kx) pattern; return it as two floats."""
    try:
        c = np.asarray(centre_px, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"centre_px must be a pixel position (cy, cx) = (ky, kx); got {centre_px!r}."
        ) from err
    if c.shape != (2,) or not np.isfinite(c).all():
        raise ValueError(
            f"centre_px must be two finite numbers (cy, cx) in pixels (row, column); got "
            f"{centre_px!r}. E.g. preprocess.bf_disk_centre(data.mean(axis=(0, 1)))."
        )
    ny, nx = shape
    if not (0 <= c[0] <= ny - 1 and 0 <= c[1] <= nx - 1):
        raise ValueError(
            f"centre_px {tuple(float(v) for v in c)} lies outside the {ny} x {nx} pattern: a "
            f"centre must satisfy 0 <= cy <= {ny - 1} and 0 <= cx <= {nx - 1} (pixels, row and "
            "column). Pass the disk centre in pixels, e.g. "
            "preprocess.bf_disk_centre(data.mean(axis=(0, 1))), not in mrad."
        )
    return float(c[0]), float(c[1])


def scattering_angle_mrad(calibration: Calibration, shape, centre_px=None) -> np.ndarray:
    """Scattering angle |k| of every camera pixel, in mrad.

    Parameters
    ----------
    calibration : Calibration
        Diffraction calibration: ``k_steps_mrad`` (one pixel size per axis, (ky, kx); square or
        rectangular pixels) and ``k_offset_mrad``, the angle (ky, kx) of pixel (0, 0), e.g. from
        :func:`rrvae_nb.signals.calibration_of`.
    shape : (int, int)
        Pattern shape (ky, kx) in pixels.
    centre_px : (float, float), optional
        Pixel position (cy, cx) = (row, column), fractional, taken as k = 0, e.g. a measured
        bright-field disk centre (:func:`rrvae_nb.preprocess.bf_disk_centre`). By default the
        calibration's own k = 0: pixel (i, j) lies at
        (k_offset_mrad[0] + i k_steps_mrad[0], k_offset_mrad[1] + j k_steps_mrad[1]).

    Returns
    -------
    numpy.ndarray
        (ky, kx) float64: the distance of every pixel centre from k = 0, in mrad.

    Raises
    ------
    ValueError
        If ``shape`` is not two positive integers, the pixel size is not a positive number, or
        ``centre_px`` is not two finite numbers inside the pattern.
    """
    ny, nx = _shape2(shape, "ky, kx", "signal.data.shape[-2:]")
    if not isinstance(calibration, Calibration):
        raise TypeError(
            f"calibration must be a rrvae_nb.signals.Calibration; got "
            f"{type(calibration).__name__}. Build it with Calibration(scan_step_nm=..., "
            "k_step_mrad=...) or read it with calibration_of(signal)."
        )
    sy, sx = calibration.k_steps_mrad  # checked > 0 by Calibration
    if centre_px is None:
        ky = calibration.k_offset_mrad[0] + sy * np.arange(ny)
        kx = calibration.k_offset_mrad[1] + sx * np.arange(nx)
        return np.hypot(ky[:, None], kx[None, :])
    cy, cx = _centre_pair(centre_px, (ny, nx))
    iy, ix = np.indices((ny, nx))
    return np.hypot((iy - cy) * sy, (ix - cx) * sx)


def _is_dask(array) -> bool:
    return type(array).__module__.startswith("dask")


def _unpack(data, calibration):
    """The raw 4D array and its calibration, from a hyperspy signal or an array + calibration."""
    if hasattr(data, "axes_manager"):  # hyperspy signal
        if calibration is not None:
            raise ValueError(
                "A hyperspy signal carries its own calibration: leave calibration out (or fix "
                "the signal's axes)."
            )
        return data.data, calibration_of(data)  # raises on non-4D / uncalibrated signals
    if calibration is None:
        raise ValueError(
            "A plain array has no calibration: pass calibration=rrvae_nb.signals.Calibration("
            "...) or use a calibrated signal (rrvae_nb.signals.make_signal)."
        )
    if not isinstance(calibration, Calibration):
        raise ValueError(
            f"calibration must be a rrvae_nb.signals.Calibration; got {type(calibration).__name__}."
        )
    if not _is_dask(data):
        data = np.asarray(data)
    return data, calibration


def _block_sums(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(..., ky, kx) patterns -> (...) float64 sums over the masked pixels."""
    return block[..., mask].sum(axis=-1, dtype=np.float64)


def _mean_pattern(data, progress: bool) -> np.ndarray:
    """(ky, kx) float64 mean of all patterns: one pass over the data."""
    if _is_dask(data):
        mean = data.mean(axis=(0, 1), dtype=np.float64)
        if progress:
            from tqdm.dask import TqdmCallback

            with TqdmCallback(desc="mean pattern (chunks)"):
                return np.asarray(mean.compute(), dtype=np.float64)
        return np.asarray(mean.compute(), dtype=np.float64)
    return np.asarray(data.mean(axis=(0, 1), dtype=np.float64))


def annular_image(
    signal,
    inner_mrad: float,
    outer_mrad: float | None = None,
    *,
    centre="calibration",
    calibration: Calibration | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Virtual annular detector: the sum of every pattern over a ring of scattering angles.

    Each pattern is summed over the pixels with ``inner_mrad <= |k| < outer_mrad``, |k| from
    :func:`scattering_angle_mrad`. With ``inner_mrad`` just outside the bright-field disk this is
    an annular dark-field (ADF) image; with ``inner_mrad=0`` and ``outer_mrad`` set to the disk
    radius (the convergence semi-angle) it is a bright-field image.

    Parameters
    ----------
    signal : hyperspy Signal2D, numpy.ndarray or dask.array.Array
        4D-STEM data (scan y, scan x, ky, kx). A hyperspy signal must be calibrated (diffraction
        axes in mrad; square or rectangular pixels); an eager or lazy (dask-backed) one. A plain
        array needs ``calibration``.
    inner_mrad : float
        Inner angle of the annulus in mrad (>= 0), included.
    outer_mrad : float, optional
        Outer angle in mrad, excluded; None (default) reaches the corners of the camera, so the
        annulus is cut off by the square camera beyond the edge's angle.
    centre : "calibration", "bf_disk" or (float, float)
        Where k = 0 is. ``"calibration"``: the calibrated k = 0 (the axes' offsets).
        ``"bf_disk"``: the centre of the bright-field disk of the mean pattern,
        :func:`rrvae_nb.preprocess.bf_disk_centre` (follows a beam that is not on the calibrated
        centre; costs one more pass over the data). A pair: (cy, cx) in pixels (row, column).
    calibration : Calibration, optional
        Only for a plain numpy/dask array: its diffraction calibration.
    progress : bool
        Show tqdm bars (data chunks, and the mean pattern for ``"bf_disk"``).

    Returns
    -------
    numpy.ndarray
        (scan y, scan x) float64: the summed intensity per probe position, in the data's units
        (counts, or fractions of the beam).

    Raises
    ------
    ValueError
        If the data are not 4D, are empty or not real numbers, the calibration is missing or
        invalid, an angle is negative or NaN, ``inner_mrad >= outer_mrad``, the annulus holds no
        pixel, ``centre`` is not one of the choices, or the result holds NaN/inf.

    Notes
    -----
    Lazy data are summed chunk by chunk (any chunking), never loading the whole cube; numpy
    data in blocks of scan rows. Sums are accumulated in float64.
    """
    data, cal = _unpack(signal, calibration)
    if getattr(data, "ndim", None) != 4:
        raise ValueError(
            f"4D-STEM data must have 4 axes (scan y, scan x, ky, kx); got shape "
            f"{getattr(data, 'shape', None)}. Reshape it, e.g. data.reshape(ny, nx, ky, kx)."
        )
    if 0 in data.shape:
        raise ValueError(f"The data are empty (shape {data.shape}); pass at least one pattern.")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ValueError(
            f"The data must be real intensities (integer or floating point); got {data.dtype}. "
            "For wave functions pass abs(wave) ** 2."
        )
    if inner_mrad is None or not np.isfinite(inner_mrad) or inner_mrad < 0:
        raise ValueError(
            f"inner_mrad must be a non-negative angle in mrad; got {inner_mrad!r}. Use 0 for a "
            "disk (bright-field) detector."
        )
    if outer_mrad is not None:
        if np.isnan(outer_mrad) or outer_mrad < 0:
            raise ValueError(
                f"outer_mrad must be a non-negative angle in mrad, or None for the camera's "
                f"corners; got {outer_mrad!r}."
            )
        if inner_mrad >= outer_mrad:
            raise ValueError(
                f"inner_mrad ({inner_mrad}) must be smaller than outer_mrad ({outer_mrad}): the "
                "annulus runs from inner (included) to outer (excluded). Swap them, or leave "
                "outer_mrad out to reach the camera's corners."
            )

    shape = data.shape[-2:]
    if isinstance(centre, str):
        if centre == "calibration":
            centre_px = None
        elif centre == "bf_disk":
            from rrvae_nb.preprocess import bf_disk_centre

            mean = _mean_pattern(data, progress)
            if not np.isfinite(mean).all():
                raise ValueError(
                    "The mean pattern contains NaN or inf, so the bright-field disk cannot be "
                    "found: replace them first (e.g. np.nan_to_num) or pass centre=(cy, cx)."
                )
            centre_px = bf_disk_centre(mean)
        else:
            raise ValueError(
                f"centre must be 'calibration', 'bf_disk' or a pixel position (cy, cx); got "
                f"{centre!r}."
            )
    else:
        centre_px = _centre_pair(centre, shape)

    angle = scattering_angle_mrad(cal, shape, centre_px)
    mask = angle >= inner_mrad
    if outer_mrad is not None:
        mask &= angle < outer_mrad
    if not mask.any():
        reach = float(angle.max())
        if inner_mrad > reach:
            raise ValueError(
                f"The annulus from {inner_mrad:g} mrad holds no camera pixel: the camera reaches "
                f"{reach:.1f} mrad at most (about this centre): lower inner_mrad."
            )
        raise ValueError(
            f"No camera pixel lies between {inner_mrad:g} and {outer_mrad:g} mrad (pixels are "
            f"{min(cal.k_steps_mrad):.3g} mrad apart or more): widen the annulus (lower "
            "inner_mrad or raise outer_mrad)."
        )

    if _is_dask(data):
        import dask.array as da

        # works on any chunking (patterns may be split over chunks); where() keeps NaN outside
        # the annulus out of the sums, as the numpy path's mask indexing does
        lazy = da.where(mask, data, 0).sum(axis=(2, 3), dtype=np.float64)
        if progress:
            from tqdm.dask import TqdmCallback

            with TqdmCallback(desc="annular image (chunks)"):
                image = np.asarray(lazy.compute(), dtype=np.float64)
        else:
            image = np.asarray(lazy.compute(), dtype=np.float64)
    else:
        from tqdm.auto import tqdm

        ny, nx = data.shape[:2]
        rows = max(1, _BLOCK_BYTES // max(1, nx * data[0, 0].nbytes))
        image = np.empty((ny, nx))
        for start in tqdm(range(0, ny, rows), desc="annular image (rows)", disable=not progress):
            image[start:start + rows] = _block_sums(data[start:start + rows], mask)

    bad = np.count_nonzero(~np.isfinite(image))
    if bad:
        raise ValueError(
            f"The annular image has {bad} NaN or infinite value(s): the data hold NaN/inf inside "
            "the annulus. Replace them first, e.g. np.nan_to_num(data, nan=0.0, posinf=0.0), or "
            "drop the affected patterns."
        )
    return image
