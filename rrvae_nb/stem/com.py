"""Centre-of-mass (COM) analysis of 4D-STEM data: the classical differential phase contrast.

Conventions (used by every function here, the tests and the chapters)
----------------------------------------------------------------------
* Data are (scan y, scan x, ky, kx): numpy or dask arrays, or calibrated hyperspy ``Signal2D``
  (read with :func:`rrvae_nb.signals.calibration_of`).
* **Components.** ``com_y`` is the shift of the pattern's centre of mass along **+ky** (towards
  increasing row index of the pattern, i.e. *down* on screen), ``com_x`` along **+kx** (increasing
  column index, right on screen). :attr:`COMMaps.vector` stacks them as (scan y, scan x, 2) with
  component order ``(y, x)`` = ``(ky, kx)``.
* **Angle.** :attr:`COMMaps.angle` is the direction of the COM in radians, in (-pi, pi], measured
  **counter-clockwise from +kx with y pointing UP on screen** when patterns are shown with
  ``imshow``'s default ``origin='upper'``: ``angle = arctan2(-com_y, com_x)``. This is the
  convention of :mod:`rrvae_nb.rotate`: turning a pattern by +a there (or with ``numpy.rot90``
  for a = pi/2) adds a to its COM angle, so the rrVAE angle latent can be compared directly.
  To draw arrows on a scan map shown with ``origin='upper'`` use
  ``plt.quiver(com_x, -com_y)`` (matplotlib's default ``angles='uv'`` points V up on screen).
* **Sign.** The COM points **towards the nuclei**: the electron beam is deflected towards
  positive charge. For a thin specimen **minus** the COM is proportional to the projected
  electric field convolved with the probe intensity P, not to the field itself (E = -grad V,
  COM proportional to +grad (V * P), V the projected potential, * a convolution), the COM
  divergence is **negative** at atoms and the integrated COM (iCOM) is proportional to V * P,
  peaking on atoms. At atomic resolution the bright-field disk does not move as a whole:
  intensity redistributes inside it, and the COM is the first moment of that redistribution.
* **Units.** ``"px"`` (diffraction pixels), ``"mrad"`` (scattering angle) or ``"1/Å"`` (spatial
  frequency k = angle / wavelength, small-angle; the electron wavelength is computed
  *relativistically* from the beam energy by :func:`electron_wavelength_angstrom`).
* **Origin.** The COM of each pattern is measured from the COM of the *mean* pattern (default), a
  given pixel position, or the calibrated zero angle of a signal's axes.

The reduction is one pass over the data: every pattern is multiplied with a (3, ky*kx) matrix of
coordinate vectors (weights 1, ky, kx, times the optional mask) in one BLAS matrix product, so a
64 x 64 x 64 x 64 float32 cube takes tens of milliseconds, and dask data are reduced chunk by
chunk (``map_blocks``) in bounded memory. The corrections below are plain numpy on the small maps.

Why our own code: ``scipy.ndimage.center_of_mass`` loops over patterns one at a time, abTEM's
``DiffractionPatterns.center_of_mass`` needs abTEM objects, and the packages with COM/DPC tools
(pyxem, py4DSTEM) cannot be installed next to abTEM 1.0.11 (zarr/numpy pins). The tests check
our COM against abTEM's to 1e-3 mrad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from . import core
from .units import electron_wavelength_angstrom

__all__ = [
    "COMMaps",
    "ScanRotation",
    "electron_wavelength_angstrom",
    "bright_field_mask",
    "center_of_mass",
    "remove_descan",
    "apply_rotation",
    "find_rotation",
    "integrate_com",
]

#: Units accepted for COM values (``"1/A"`` is accepted as an ASCII spelling of ``"1/Å"``).
UNITS = ("px", "mrad", "1/Å")


@dataclass(frozen=True, eq=False)  # arrays inside: compare by identity
class COMMaps:
    """Centre-of-mass maps of a 4D-STEM scan (see the module docstring for all conventions).

    Attributes
    ----------
    com_y, com_x : numpy.ndarray
        (scan y, scan x) float64 COM components along +ky (down on screen) and +kx (right), in
        ``units``. They point towards the nuclei; minus the COM is proportional to the projected
        field convolved with the probe intensity (thin specimen).
    units : str
        ``"px"``, ``"mrad"`` or ``"1/Å"``.
    scan_step_nm : float, (float, float) or None
        Scan step in nm, one number (square scan pixels) or a (y, x) pair; None means scan
        lengths are in scan pixels. :attr:`scan_steps_nm` gives the pair either way.
    origin_px : (float, float)
        Pattern position (ky, kx), in diffraction pixels (fractional index), from which the COM
        was measured.
    rotation_deg : float
        Scan-detector rotation applied to the vectors (counter-clockwise on screen), in degrees.
    transposed : bool
        Whether the components were swapped (scan-detector transpose) before the rotation.
    descan_removed : bool
        Whether a plane (descan) was subtracted from each component.
    """

    com_y: np.ndarray
    com_x: np.ndarray
    units: str
    scan_step_nm: float | tuple[float, float] | None = None
    origin_px: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    transposed: bool = False
    descan_removed: bool = False

    @property
    def vector(self) -> np.ndarray:
        """COM as one array (scan y, scan x, 2) with components (y, x) = (ky, kx)."""
        return np.stack([self.com_y, self.com_x], axis=-1)

    @property
    def magnitude(self) -> np.ndarray:
        """Length of the COM vector, (scan y, scan x), in ``units``."""
        return np.hypot(self.com_y, self.com_x)

    @property
    def angle(self) -> np.ndarray:
        """COM direction (scan y, scan x) in rad, (-pi, pi], counter-clockwise from +kx, y up."""
        return np.arctan2(-self.com_y, self.com_x)

    @property
    def length_units(self) -> str:
        """Unit of scan lengths: ``"nm"`` or ``"scan px"``."""
        return "scan px" if self.scan_step_nm is None else "nm"

    @property
    def scan_steps_nm(self) -> tuple[float, float]:
        """Scan step along (scan y, scan x) in ``length_units`` ((1, 1) in scan pixels)."""
        return _scan_steps(self.scan_step_nm)

    def divergence(self) -> np.ndarray:
        """d(com_x)/dx + d(com_y)/dy, (scan y, scan x), in ``units`` per ``length_units``.

        Central differences (``numpy.gradient``), with the step of each scan axis; negative at
        atoms.
        """
        return _divergence(self.com_y, self.com_x, self.scan_steps_nm)

    def curl(self) -> np.ndarray:
        """d(com_y)/dx - d(com_x)/dy with y the scan row (down) axis, in ``units`` per length.

        Zero for a field that is a gradient (a correctly calibrated thin-specimen COM).
        """
        return _curl(self.com_y, self.com_x, self.scan_steps_nm)

    @cached_property
    def icom(self) -> np.ndarray:
        """Integrated COM with mirror padding, (scan y, scan x): see :func:`integrate_com`."""
        return integrate_com(self)


@dataclass(frozen=True)
class ScanRotation:
    """Result of :func:`find_rotation`.

    Attributes
    ----------
    rotation_deg : float
        Counter-clockwise (on screen) rotation, in degrees in (-180, 180], to apply to the COM
        vectors (after the transpose, if any) with :func:`apply_rotation`.
    transpose : bool
        Whether the COM components must be swapped (scan axes transposed relative to detector).
    curl_fraction : float
        rms curl / rms divergence of the corrected field (0 for a perfect gradient field).
    curl_fraction_other : float
        The same for the best rotation with the other transpose choice (should be much larger).
    """

    rotation_deg: float
    transpose: bool
    curl_fraction: float
    curl_fraction_other: float


# --------------------------------------------------------------------------------------------
# Reduction
# --------------------------------------------------------------------------------------------


def bright_field_mask(pattern, *, fraction: float = 0.5, margin_px: float = 1.0) -> np.ndarray:
    """Boolean disk covering the bright-field (BF) disk of a pattern, e.g. the mean pattern.

    The disk centre is the COM of the pixels brighter than ``fraction`` x the maximum and its radius
    is sqrt(area / pi) of that region plus ``margin_px``.

    Parameters
    ----------
    pattern : array_like
        (ky, kx) pattern, typically ``data.mean(axis=(0, 1))``.
    fraction : float
        Threshold as a fraction of the pattern maximum, in (0, 1).
    margin_px : float
        Extra radius in pixels (keeps the disk edge, which carries the COM signal).

    Returns
    -------
    numpy.ndarray
        (ky, kx) bool mask, usable as ``center_of_mass(..., mask=...)``.
    """
    p = np.asarray(pattern, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"bright_field_mask needs one (ky, kx) pattern; got shape {p.shape}.")
    if not np.all(np.isfinite(p)) or p.max() <= 0:
        raise ValueError(
            "The pattern for bright_field_mask must be finite with a positive maximum; pass the "
            "mean pattern, e.g. data.mean(axis=(0, 1))."
        )
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1; got {fraction}.")
    bright = p >= fraction * p.max()
    yy, xx = np.indices(p.shape)
    cy, cx = yy[bright].mean(), xx[bright].mean()
    radius = math.sqrt(bright.sum() / math.pi) + margin_px
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _block_moments(block, weights, threshold, negative):
    """Per-pattern moments of a (..., ky, kx) block: (..., 4) = (I, M_y, M_x, min) as float64.

    ``weights`` is (3, ky*kx): mask, mask*y, mask*x with centred coordinates. ``min`` is the
    smallest raw value of each pattern (NaN if it holds NaN), used for the input checks.
    """
    lead = block.shape[:-2]
    flat = np.asarray(block).reshape(-1, block.shape[-2] * block.shape[-1])
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float64)
    low = flat.min(axis=1) if flat.shape[0] else np.zeros(0)
    if negative == "clip":
        flat = np.maximum(flat, 0)
    if threshold is not None:
        peak = flat.max(axis=1, keepdims=True)
        flat = np.where(flat >= threshold * peak, flat, 0)
    moments = flat @ weights.astype(flat.dtype).T  # (n, 3): one BLAS pass over the data
    out = np.empty((flat.shape[0], 4))
    out[:, :3] = moments
    out[:, 3] = low
    return out.reshape(*lead, 4)


def _check_units(units: str) -> str:
    if units in ("1/A", "1/Angstrom", "1/angstrom"):
        units = "1/Å"
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}; got {units!r}.")
    return units


def center_of_mass(
    data,
    *,
    units: str = "mrad",
    k_step_mrad: float | tuple[float, float] | None = None,
    energy_kev: float | None = None,
    scan_step_nm: float | None = None,
    origin="mean",
    mask=None,
    threshold: float | None = None,
    negative: str = "raise",
    progress: bool | None = None,
) -> COMMaps:
    """Centre of mass of every diffraction pattern, normalised by its captured intensity.

    ``com = sum(I * k) / sum(I) - origin`` for each pattern, with k the (ky, kx) pixel coordinates
    (times the mask, if any), converted to ``units``.

    Parameters
    ----------
    data : numpy.ndarray, dask.array.Array or hyperspy Signal2D
        4D-STEM data (scan y, scan x, ky, kx). A hyperspy signal must be calibrated (scan axes in a
        length unit, diffraction axes in mrad; one step per axis); its calibration is used. Lazy
        signals and dask arrays are reduced chunk by chunk in bounded memory.
    units : {"mrad", "px", "1/Å"}
        Units of the result. ``"1/Å"`` needs the beam energy (relativistic wavelength).
    k_step_mrad : float or (float, float), optional
        Diffraction pixel size in mrad, for numpy/dask input (required unless ``units="px"``);
        a (ky, kx) pair for rectangular pixels (each component is scaled by its own step).
    energy_kev : float, optional
        Beam energy in keV (numpy input, or a signal without it in its metadata).
    scan_step_nm : float or (float, float), optional
        Scan step in nm for numpy/dask input (used by the divergence and iCOM), one number or a
        (y, x) pair; None = scan px.
    origin : "mean", "axes" or (float, float)
        ``"mean"``: the COM of the mean of the patterns as they enter the sum (after mask and
        threshold), so the intensity-weighted mean COM is zero. ``"axes"``: the pixel where a
        signal's calibrated angle is (0, 0) (hyperspy input only). A pair: (ky, kx) position in
        diffraction pixels (fractional index, e.g. ``(n // 2, n // 2)`` for abTEM patterns).
        Both must lie on the camera, 0 <= ky <= (pattern rows - 1) and 0 <= kx <= (pattern
        columns - 1); an origin outside is refused.
    mask : array_like, optional
        (ky, kx) bool or non-negative weights applied to every pattern before the sums, e.g.
        :func:`bright_field_mask`.
    threshold : float, optional
        Keep only pixels >= ``threshold`` x the pattern's own maximum (0 < threshold < 1); the
        others count as zero. The maximum is taken over the whole pattern, before the mask.
    negative : {"raise", "clip", "keep"}
        What to do with negative values (e.g. dark-subtracted counts). Default ``"raise"``: a
        ValueError naming the count. ``"clip"`` sets them to zero; ``"keep"`` uses them as they are
        (fine for zero-mean noise on a positive signal).
    progress : bool, optional
        Show a tqdm bar; by default only for dask data and numpy data above about 1 GB.

    Returns
    -------
    COMMaps
        com_y, com_x (scan y, scan x) plus magnitude, angle, divergence, curl and iCOM.

    Raises
    ------
    ValueError
        Wrong dimensionality, missing or invalid calibration, NaN/inf, negative values (with
        ``negative="raise"``), a pattern with no positive intensity (after mask/threshold), or a
        bad mask/threshold/origin; each message says how to fix it.
    """
    units = _check_units(units)
    if negative not in ("raise", "clip", "keep"):
        raise ValueError(f"negative must be 'raise', 'clip' or 'keep'; got {negative!r}.")
    array, cal = core.as_data(data)
    core.check_cube(array)
    k_steps, scan_step_nm, energy_kev = _settings(cal, k_step_mrad, scan_step_nm, energy_kev)
    if units != "px" and k_steps is None:
        raise ValueError(
            f"COM in {units!r} needs the diffraction calibration: pass k_step_mrad=... (mrad per "
            "pixel), use a calibrated hyperspy signal (rrvae_nb.signals.make_signal), or ask for "
            "units='px'."
        )
    if units == "1/Å":
        wavelength = electron_wavelength_angstrom(energy_kev)  # raises if missing
    shape = array.shape[-2:]
    weights = _weights(mask, shape)
    if threshold is not None and not 0 < threshold < 1:
        raise ValueError(f"threshold is a fraction of each pattern's maximum in (0, 1); got "
                         f"{threshold}.")
    (mom,) = core.map_patterns(
        array, core.PerPattern(_block_moments, (4,), np.float64,
                               dict(weights=weights, threshold=threshold, negative=negative)),
        desc="COM", progress=progress,
    )
    total, my, mx, low = np.moveaxis(mom, -1, 0)
    _check_moments(total, my, mx, low, negative)

    yc, xc = (shape[0] - 1) / 2, (shape[1] - 1) / 2  # the weights' coordinate centre
    oy, ox = _origin(origin, my.sum() / total.sum() + yc, mx.sum() / total.sum() + xc, cal,
                     shape)
    com_y = my / total + yc - oy
    com_x = mx / total + xc - ox
    if units != "px":
        factor = 1.0 if units == "mrad" else 1e-3 / wavelength
        com_y, com_x = com_y * (k_steps[0] * factor), com_x * (k_steps[1] * factor)
    return COMMaps(
        com_y=com_y,
        com_x=com_x,
        units=units,
        scan_step_nm=scan_step_nm,
        origin_px=(float(oy), float(ox)),
    )


def _settings(cal, k_step_mrad, scan_step_nm, energy_kev):
    """(k steps or None, scan step(s) or None, energy) from the keywords and a signal's calibration.

    For a signal (``cal`` given) a keyword must agree with its calibration; the calibration
    fills what the keywords leave out.
    """
    if cal is not None:
        if k_step_mrad is not None and not np.allclose(
            np.broadcast_to(np.asarray(k_step_mrad, dtype=float), (2,)), cal.k_steps_mrad,
            rtol=1e-6,
        ):
            raise ValueError(
                f"k_step_mrad={k_step_mrad} disagrees with the signal's calibration "
                f"({cal.k_steps_mrad} mrad along ky, kx): fix the signal's axes or leave "
                "k_step_mrad out."
            )
        if energy_kev is not None and cal.energy_kev is not None and not np.isclose(
            energy_kev, cal.energy_kev
        ):
            raise ValueError(
                f"energy_kev={energy_kev} disagrees with the signal's beam energy "
                f"({cal.energy_kev} keV): fix the metadata or leave energy_kev out."
            )
        if scan_step_nm is not None and not np.allclose(
            np.broadcast_to(np.asarray(scan_step_nm, dtype=float), (2,)), cal.scan_steps_nm
        ):
            raise ValueError(
                f"scan_step_nm={scan_step_nm} disagrees with the signal's scan steps "
                f"({cal.scan_steps_nm} nm along y, x): fix the signal's axes or leave "
                "scan_step_nm out."
            )
        k_step_mrad = cal.k_steps_mrad
        energy_kev = cal.energy_kev if energy_kev is None else energy_kev
        scan_step_nm = cal.scan_step_nm if cal.square_scan else cal.scan_steps_nm
    k_steps = None
    if k_step_mrad is not None:
        k_steps = _positive_pair("k_step_mrad", k_step_mrad, "mrad", ("ky", "kx"))
    if scan_step_nm is not None:
        sy, sx = _positive_pair("scan_step_nm", scan_step_nm, "nm", ("scan y", "scan x"))
        scan_step_nm = sy if sy == sx else (sy, sx)
    return k_steps, scan_step_nm, energy_kev


def _weights(mask, shape) -> np.ndarray:
    """(3, ky*kx) weights mask, mask * ky, mask * kx, coordinates centred on the pattern."""
    nky, nkx = shape
    if mask is None:
        m = np.ones((nky, nkx))
    else:
        m = np.asarray(mask, dtype=np.float64)
        if m.shape != (nky, nkx):
            raise ValueError(f"mask must have the pattern shape {(nky, nkx)}; got {m.shape}.")
        if not np.all(np.isfinite(m)) or np.any(m < 0) or not np.any(m > 0):
            raise ValueError(
                "mask must be bool or finite non-negative weights with at least one non-zero "
                "pixel (e.g. rrvae_nb.com.bright_field_mask(data.mean(axis=(0, 1))))."
            )
    yc, xc = (nky - 1) / 2, (nkx - 1) / 2  # centred coordinates keep float32 sums accurate
    yy, xx = np.indices((nky, nkx), dtype=np.float64)
    return np.stack([m, m * (yy - yc), m * (xx - xc)]).reshape(3, -1)


def _origin(origin, mean_y, mean_x, cal, shape) -> tuple[float, float]:
    """The pixel (ky, kx) the COM is measured from: the mean's COM, the axes' k = 0, or a pair."""
    nky, nkx = shape
    if isinstance(origin, str) and origin == "mean":
        return mean_y, mean_x
    if isinstance(origin, str) and origin == "axes":
        if cal is None:
            raise ValueError(
                "origin='axes' needs a calibrated hyperspy signal; for arrays pass the pixel "
                "position, e.g. origin=(ky0, kx0)."
            )
        oy = -cal.k_offset_mrad[0] / cal.k_steps_mrad[0]
        ox = -cal.k_offset_mrad[1] / cal.k_steps_mrad[1]
        return core.check_on_camera(
            (oy, ox), shape, label="origin='axes': the signal's calibrated k = 0",
            at=f"at pixel ({oy:.4g}, {ox:.4g}), ", noun="camera", subject="a pixel origin",
            fix="Fix the signal's diffraction offsets (k = 0 at the beam centre), or use "
                "origin='mean' or a (ky, kx) pixel position.",
        )
    try:
        oy, ox = (float(v) for v in origin)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"origin must be 'mean', 'axes' or a (ky, kx) pixel position; got {origin!r}."
        ) from err
    return core.check_on_camera(
        (oy, ox), shape, label=f"origin ({oy:.4g}, {ox:.4g})", subject="a pixel origin",
        fix=f"Pass it in pixels (not mrad), e.g. origin=({(nky - 1) / 2:g}, {(nkx - 1) / 2:g}) "
            "for the pattern centre, or origin='mean'.",
    )


def _positive_pair(name: str, value, unit: str, axes) -> tuple[float, float]:
    """One positive finite step, or a pair (one per axis), as two floats."""
    steps = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if steps.size not in (1, 2) or not np.all(np.isfinite(steps)) or np.any(steps <= 0):
        raise ValueError(
            f"{name} must be a finite number > 0 {unit}, or a ({axes[0]}, {axes[1]}) pair of "
            f"them; got {value!r}."
        )
    return float(steps[0]), float(steps[-1])


def _check_moments(total, my, mx, low, negative):
    """Raise a clear ValueError for NaN/inf, negative or empty patterns."""

    def where(bad):
        iy, ix = np.argwhere(bad)[0]
        return f"{int(bad.sum())} of {bad.size} patterns (first at scan y={iy}, x={ix})"

    bad = np.isnan(low) | ~np.isfinite(total) | ~np.isfinite(my) | ~np.isfinite(mx)
    bad |= np.isinf(low)
    if bad.any():
        raise ValueError(
            f"The data contain NaN or inf in {where(bad)}: repair or drop those scan positions "
            "(e.g. np.nan_to_num, or replace them with a neighbour's pattern)."
        )
    if negative == "raise" and (low < 0).any():
        raise ValueError(
            f"The data contain negative values in {where(low < 0)} (minimum {low.min():.3g}), "
            "e.g. after a dark subtraction. Pass negative='clip' to set them to zero or "
            "negative='keep' to use them as they are."
        )
    if (total <= 0).any():
        raise ValueError(
            f"No positive intensity in {where(total <= 0)} (after mask and threshold): the COM "
            "is undefined there. Check the mask covers the beam, or drop empty scan positions."
        )


# --------------------------------------------------------------------------------------------
# Corrections
# --------------------------------------------------------------------------------------------


def remove_descan(com: COMMaps, *, mask=None) -> COMMaps:
    """Remove descan by subtracting a least-squares plane a + b y + c x from each component.

    A scan-dependent shift of the whole pattern (imperfect descan) adds a ramp that is linear in
    the scan position; the plane fit removes it (and with it the mean COM and any linear trend of
    the specimen's own COM, so fit over vacuum or over many unit cells).

    Parameters
    ----------
    com : COMMaps
    mask : array_like of bool, optional
        (scan y, scan x) positions used for the fit (e.g. vacuum); default all. The plane is
        subtracted everywhere.

    Returns
    -------
    COMMaps
        A copy with ``descan_removed=True``.
    """
    ny, nx = com.com_y.shape
    yy, xx = np.indices((ny, nx), dtype=np.float64)
    design = np.stack([np.ones(ny * nx), yy.ravel(), xx.ravel()], axis=1)
    use = np.ones(ny * nx, bool) if mask is None else np.asarray(mask, bool).ravel()
    if use.size != ny * nx:
        raise ValueError(f"mask must have the scan shape {(ny, nx)}; got {np.shape(mask)}.")
    if np.linalg.matrix_rank(design[use]) < 3:
        raise ValueError(
            "The descan fit needs at least 3 scan positions not on one line: enlarge the mask."
        )
    values = np.stack([com.com_y.ravel(), com.com_x.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design[use], values[use], rcond=None)
    residual = values - design @ coef
    return replace(
        com,
        com_y=residual[:, 0].reshape(ny, nx),
        com_x=residual[:, 1].reshape(ny, nx),
        descan_removed=True,
    )


def _rotate_components(cy, cx, rotation_deg, transpose):
    """Swap (if transpose) then turn (cy, cx) counter-clockwise on screen by rotation_deg."""
    if transpose:
        cy, cx = cx, cy
    t = math.radians(rotation_deg)
    c, s = math.cos(t), math.sin(t)
    # screen-up components (u, v) = (cx, -cy) rotate by the textbook matrix R(t).
    return cy * c - cx * s, cx * c + cy * s


def apply_rotation(com: COMMaps, rotation_deg: float, transpose: bool = False) -> COMMaps:
    """Correct the scan-detector rotation (and transpose) of COM vectors.

    First swap the components if ``transpose`` (scan axes transposed relative to the detector),
    then turn every vector counter-clockwise on screen by ``rotation_deg`` (its angle grows by that
    much). The scan positions are untouched.

    Returns
    -------
    COMMaps
        A copy whose ``rotation_deg``/``transposed`` record the correction applied (composed with
        any earlier one).
    """
    cy, cx = _rotate_components(com.com_y, com.com_x, rotation_deg, transpose)
    prev = -com.rotation_deg if transpose else com.rotation_deg  # a swap mirrors earlier turns
    total = (prev + rotation_deg + 180.0) % 360.0 - 180.0
    return replace(
        com, com_y=cy, com_x=cx, rotation_deg=total, transposed=com.transposed != transpose
    )


def _scan_steps(step) -> tuple[float, float]:
    """(y, x) scan steps from None (scan pixels), one number or a pair."""
    if step is None:
        return 1.0, 1.0
    sy, sx = np.broadcast_to(np.asarray(step, dtype=np.float64), (2,))
    return float(sy), float(sx)


def _check_derivable(cy) -> None:
    if np.ndim(cy) != 2 or min(np.shape(cy)) < 2:
        raise ValueError(
            f"The COM maps have shape {np.shape(cy)}: a divergence or curl needs at least 2 scan "
            "positions along scan y and scan x (differences between neighbours). Scan a larger "
            "area, or use the COM vectors themselves."
        )


def _divergence(cy, cx, steps):
    _check_derivable(cy)
    sy, sx = steps
    return np.gradient(cx, sx, axis=1) + np.gradient(cy, sy, axis=0)


def _curl(cy, cx, steps):
    _check_derivable(cy)
    sy, sx = steps
    return np.gradient(cy, sx, axis=1) - np.gradient(cx, sy, axis=0)


def find_rotation(com: COMMaps, *, atoms_px=None) -> ScanRotation:
    """Find the scan-detector rotation and transpose that make the COM field curl-free.

    For a thin specimen the COM is a gradient field (curl zero). A rotation by t turns a field
    ``a`` into ``cos t a + sin t b`` with ``b = a`` turned by 90 degrees, so the mean squared curl
    is a quadratic form in (cos t, sin t) whose smallest eigenvector gives the best angle exactly
    (no grid search). Both transpose choices are tried and the one with less curl kept.

    Curl cannot tell t from t + 180 degrees; the sign is fixed physically: the divergence must be
    **negative at atoms**. With ``atoms_px`` the mean divergence at those scan positions decides;
    otherwise the skewness of the divergence map must be negative (sharp sinks at atoms, broad
    weak sources between them), which holds for specimens of point-like atoms such as graphene
    or thin crystals viewed down a zone axis. Check the iCOM map peaks on atoms afterwards.

    Parameters
    ----------
    com : COMMaps
        COM maps, preferably after :func:`remove_descan`.
    atoms_px : array_like, optional
        (N, 2) atom positions (scan y, scan x) in scan pixels, to fix the 180-degree ambiguity.

    Returns
    -------
    ScanRotation
        Apply it with ``apply_rotation(com, r.rotation_deg, r.transpose)``.
    """
    cy0, cx0 = np.asarray(com.com_y, float), np.asarray(com.com_x, float)
    if cy0.ndim != 2 or min(cy0.shape) < 5:
        raise ValueError(
            f"find_rotation needs COM maps of at least 5 x 5 scan positions; got {cy0.shape}."
        )
    if not (np.all(np.isfinite(cy0)) and np.all(np.isfinite(cx0))):
        raise ValueError("The COM maps contain NaN or inf: repair them before find_rotation.")
    inner = (slice(1, -1), slice(1, -1))  # one-sided differences at the border are less exact
    # in scan pixels when the pixels are square (the angle does not depend on the unit); with the
    # true (y, x) steps otherwise, so that rectangular scan pixels do not fake a curl
    sy, sx = com.scan_steps_nm
    steps = (1.0, 1.0) if sy == sx else (sy / sx, 1.0)
    results = []
    for transpose in (False, True):
        ay, ax = _rotate_components(cy0, cx0, 0.0, transpose)
        by, bx = _rotate_components(ay, ax, 90.0, False)
        c1 = _curl(ay, ax, steps)[inner].ravel()
        c2 = _curl(by, bx, steps)[inner].ravel()
        gram = np.array([[c1 @ c1, c1 @ c2], [c1 @ c2, c2 @ c2]]) / c1.size
        evals, evecs = np.linalg.eigh(gram)
        if evals[1] <= 0:
            raise ValueError("The COM maps are constant (no curl or divergence): nothing to fit.")
        cos_t, sin_t = evecs[:, 0]
        angle = math.degrees(math.atan2(sin_t, cos_t))
        # the orthogonal rotation turns all divergence into curl: evals[1] = mean div^2
        results.append((math.sqrt(max(evals[0], 0.0) / evals[1]), angle, transpose))
    results.sort()
    (fraction, angle, transpose), (other, *_) = results
    cy, cx = _rotate_components(cy0, cx0, angle, transpose)
    div = _divergence(cy, cx, steps)
    if atoms_px is not None:
        pos = np.rint(np.asarray(atoms_px, float)).astype(int).reshape(-1, 2)
        ok = (pos >= 0).all(1) & (pos[:, 0] < div.shape[0]) & (pos[:, 1] < div.shape[1])
        if not ok.any():
            raise ValueError("None of atoms_px lies inside the scan: pass (scan y, scan x) px.")
        wrong_sign = div[pos[ok, 0], pos[ok, 1]].mean() > 0
    else:
        d = div[inner].ravel() - div[inner].mean()
        wrong_sign = np.mean(d**3) > 0
    if wrong_sign:
        angle += 180.0
    angle = (angle + 180.0) % 360.0 - 180.0
    if angle == -180.0:
        angle = 180.0
    return ScanRotation(
        rotation_deg=angle, transpose=transpose, curl_fraction=fraction, curl_fraction_other=other
    )


def integrate_com(com: COMMaps, *, pad: str = "mirror") -> np.ndarray:
    """Integrated COM (iCOM): the potential whose gradient best matches the COM, by FFT.

    Solves ``grad(V) = com`` in the least-squares sense, ``V^ = -i (ky C^y + kx C^x) / |k|^2``;
    the mean (k = 0) is set to zero. V is proportional to the projected electrostatic potential
    for thin specimens and peaks on atoms.

    Parameters
    ----------
    com : COMMaps
    pad : {"mirror", "zero", "none"}
        ``"mirror"`` (default) extends the potential by even reflection (the normal component of
        the COM changes sign), which avoids wrap-around artefacts for non-periodic scans;
        ``"zero"`` pads the COM with zeros to twice the size; ``"none"`` assumes a periodic scan
        (e.g. exactly one period of a simulated crystal).

    Returns
    -------
    numpy.ndarray
        (scan y, scan x) iCOM in ``com.units`` x ``com.length_units`` (e.g. mrad nm).
    """
    cy, cx = np.asarray(com.com_y, float), np.asarray(com.com_x, float)
    ny, nx = cy.shape
    if pad == "mirror":
        cy = np.block([[cy, cy[:, ::-1]], [-cy[::-1], -cy[::-1, ::-1]]])
        cx = np.block([[cx, -cx[:, ::-1]], [cx[::-1], -cx[::-1, ::-1]]])
    elif pad == "zero":
        cy = np.pad(cy, ((0, ny), (0, nx)))
        cx = np.pad(cx, ((0, ny), (0, nx)))
    elif pad != "none":
        raise ValueError(f"pad must be 'mirror', 'zero' or 'none'; got {pad!r}.")
    sy, sx = com.scan_steps_nm
    ky = 2 * np.pi * np.fft.fftfreq(cy.shape[0], d=sy)[:, None]
    kx = 2 * np.pi * np.fft.fftfreq(cy.shape[1], d=sx)[None, :]
    k2 = ky**2 + kx**2
    k2[0, 0] = 1.0
    spectrum = -1j * (ky * np.fft.fft2(cy) + kx * np.fft.fft2(cx)) / k2
    spectrum[0, 0] = 0.0
    potential = np.fft.ifft2(spectrum).real[:ny, :nx]
    return potential - potential.mean()
