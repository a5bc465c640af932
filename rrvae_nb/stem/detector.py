"""Virtual detectors: images formed by summing chosen pixels of every diffraction pattern.

A real STEM detector collects the electrons scattered into a range of angles: the bright-field
(BF) detector those inside the probe's aperture image (the BF disk), an annular dark-field (ADF)
detector those in a ring outside it, a high-angle ADF (HAADF) detector those scattered far out,
roughly in proportion to Z^1.6-1.9, Z the atomic number ("Z contrast"). A pixelated camera
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

from . import core
from .signals import Calibration, _shape2

__all__ = ["scattering_angle_mrad", "annular_image"]


def _centre_pair(centre_px, shape) -> tuple[float, float]:
    """Check a pixel centre (cy, cx) inside a (ky, kx) pattern; return it as two floats."""
    fix = "E.g. preprocess.bf_disk_centre(data.mean(axis=(0, 1)))."
    c = core.pixel_pair(centre_px, "centre_px", fix, axes="cy, cx")
    return core.check_on_camera(
        c, shape, label=f"centre_px {c}", subject="a centre", axes=("cy", "cx"),
        fix="Pass the disk centre in pixels, e.g. "
            "preprocess.bf_disk_centre(data.mean(axis=(0, 1))), not in mrad.",
    )


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


def _block_sums(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(..., ky, kx) patterns -> (...) float64 sums over the masked pixels."""
    return block[..., mask].sum(axis=-1, dtype=np.float64)


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
    One pass over the data (:func:`rrvae_nb.core.map_patterns`): lazy data chunk by chunk (the
    chunks are merged to whole patterns), never loading the whole cube; numpy data in blocks of
    scan rows. Sums are accumulated in float64.
    """
    data, cal = core.as_data(signal, calibration, require_calibration=True)
    core.check_cube(data)
    _check_angles(inner_mrad, outer_mrad)
    shape = data.shape[-2:]
    angle = scattering_angle_mrad(cal, shape, _find_centre(centre, data, progress))
    mask = angle >= inner_mrad
    if outer_mrad is not None:
        mask &= angle < outer_mrad
    if not mask.any():
        _raise_empty_annulus(inner_mrad, outer_mrad, angle, cal)
    (image,) = core.map_patterns(
        data, core.PerPattern(_block_sums, (), np.float64, dict(mask=mask)),
        desc="annular image", progress=progress,
    )
    bad = np.count_nonzero(~np.isfinite(image))
    if bad:
        raise ValueError(
            f"The annular image has {bad} NaN or infinite value(s): the data hold NaN/inf inside "
            "the annulus. Replace them first, e.g. np.nan_to_num(data, nan=0.0, posinf=0.0), or "
            "drop the affected patterns."
        )
    return image


def _check_angles(inner_mrad, outer_mrad) -> None:
    if inner_mrad is None or not np.isfinite(inner_mrad) or inner_mrad < 0:
        raise ValueError(
            f"inner_mrad must be a non-negative angle in mrad; got {inner_mrad!r}. Use 0 for a "
            "disk (bright-field) detector."
        )
    if outer_mrad is None:
        return
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


def _find_centre(centre, data, progress) -> tuple[float, float] | None:
    """The pixel taken as k = 0: None (the calibration's), the BF-disk centre, or a pair."""
    if not isinstance(centre, str):
        return _centre_pair(centre, data.shape[-2:])
    if centre == "calibration":
        return None
    if centre != "bf_disk":
        raise ValueError(
            f"centre must be 'calibration', 'bf_disk' or a pixel position (cy, cx); got "
            f"{centre!r}."
        )
    from .preprocess import bf_disk_centre

    mean = core.mean_pattern(data, progress=progress)
    if not np.isfinite(mean).all():
        raise ValueError(
            "The mean pattern contains NaN or inf, so the bright-field disk cannot be "
            "found: replace them first (e.g. np.nan_to_num) or pass centre=(cy, cx)."
        )
    return bf_disk_centre(mean)


def _raise_empty_annulus(inner_mrad, outer_mrad, angle, cal):
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
