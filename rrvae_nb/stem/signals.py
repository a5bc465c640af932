"""Calibrated 4D-STEM signals: one place that builds and checks hyperspy ``Signal2D`` objects.

Every dataset in the package (simulated, loaded from disk, emulated experiment) is a hyperspy
``Signal2D`` with the array axis order **(scan y, scan x | ky, kx)**: two navigation axes in
nanometres and two signal axes in milliradians, with the beam energy (keV) and the probe
convergence semi-angle (mrad) under ``metadata.Acquisition_instrument.TEM``.

A :class:`Calibration` holds one step per axis, so scans and cameras with rectangular pixels are
represented exactly. The analyses that need a single step (square pixels) read
``Calibration.scan_step_nm`` / ``Calibration.k_step_mrad``, which refuse rectangular pixels with
a message that says what to do.

hyperspy is an optional dependency (the ``data`` extra); it is imported lazily so that the model
works without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .units import ANGLE_TO_MRAD, LENGTH_TO_NM

__all__ = ["Calibration", "make_signal", "calibration_of", "require_hyperspy"]

#: Relative difference below which the two steps of a pair count as one square pixel: the
#: rounding of a scale stored as float32 (about 6e-8), with a margin. Steps that differ by more
#: are kept apart; nothing is merged.
SQUARE_TOLERANCE = 1e-6

HOW_TO_GET_A_SIGNAL = (
    "Read a file with rrvae_nb.io.load(path), or wrap an array (scan y, scan x, ky, kx) with "
    "rrvae_nb.signals.make_signal(array, Calibration(scan_step_nm=..., k_step_mrad=...))."
)


def require_hyperspy():
    """Import and return ``hyperspy.api``, or raise an ImportError that says how to install it."""
    try:
        import hyperspy.api as hs
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "This function needs hyperspy. Install the data extra: pip install 'rrvae-nb[data]'"
        ) from err
    return hs


def _number(value) -> float | None:
    """``value`` as a float, or None if it is not a real number (bools and strings are not)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _step_pair(name: str, value, axes: tuple[str, str], unit: str, fix: str
               ) -> tuple[float, float]:
    """A step given as one number (both axes) or a pair (one per axis), each finite and > 0."""
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(
                f"{name} must be one step in {unit} or a pair ({axes[0]}, {axes[1]}); got "
                f"{value!r}."
            )
        pair = tuple(value)
    else:
        pair = (value, value)
    out = []
    for axis, v in zip(axes, pair, strict=True):
        x = _number(v)
        if x is None or not math.isfinite(x) or x <= 0:
            raise ValueError(
                f"{name}: the {axis} step must be a finite number > 0 {unit}; got {v!r}. {fix}"
            )
        out.append(x)
    return out[0], out[1]


def _offset_pair(name: str, value, unit: str) -> tuple[float, float]:
    try:
        a, b = value
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair of finite numbers in {unit}; got {value!r}.") \
            from err
    out = (_number(a), _number(b))
    if any(v is None or not math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be a pair of finite numbers in {unit}; got {value!r}.")
    return out  # type: ignore[return-value]


def _optional_positive(name: str, value, unit: str, where: str) -> float | None:
    if value is None:
        return None
    x = _number(value)
    if x is None or not math.isfinite(x) or x <= 0:
        raise ValueError(
            f"{name} must be None or a finite number > 0 {unit}; got {value!r}. {where}"
        )
    return x


def _is_square(pair: tuple[float, float]) -> bool:
    a, b = pair
    return abs(a - b) <= SQUARE_TOLERANCE * max(abs(a), abs(b))


@dataclass(frozen=True, init=False)
class Calibration:
    """Calibration of a 4D-STEM dataset: one step and one offset per axis.

    Build it with one step per kind for square pixels, ``Calibration(scan_step_nm=0.02,
    k_step_mrad=1.5)``, or with a (y, x) pair for rectangular ones,
    ``Calibration(scan_step_nm=(0.02, 0.025), k_step_mrad=(1.5, 1.6))`` (the keywords
    ``scan_steps_nm=`` / ``k_steps_mrad=`` take pairs too). Every value is checked: a zero,
    negative or non-finite step is refused with a ValueError that names the axis.

    Attributes
    ----------
    scan_steps_nm : (float, float)
        Probe step along (scan y, scan x), in nm.
    k_steps_mrad : (float, float)
        Size of one diffraction pixel along (ky, kx), in mrad.
    scan_offset_nm : (float, float)
        Position (y, x) of the first scan pixel, in nm.
    k_offset_mrad : (float, float)
        Scattering angle (ky, kx) of the first diffraction pixel, in mrad.
    energy_kev : float or None
        Beam energy in keV.
    convergence_mrad : float or None
        Probe convergence semi-angle in mrad.

    Notes
    -----
    ``scan_step_nm`` and ``k_step_mrad`` (read-only) give the single step of square pixels and
    raise a ValueError for rectangular ones, so that an analysis that needs one step never
    silently uses the step of one axis for both. Two steps count as square when they differ by
    less than :data:`SQUARE_TOLERANCE` (1e-6, the rounding of a float32 scale); both steps are
    stored as given either way.
    """

    scan_steps_nm: tuple[float, float]
    k_steps_mrad: tuple[float, float]
    scan_offset_nm: tuple[float, float]
    k_offset_mrad: tuple[float, float]
    energy_kev: float | None
    convergence_mrad: float | None

    def __init__(self, scan_step_nm=None, k_step_mrad=None, scan_offset_nm=(0.0, 0.0),
                 k_offset_mrad=(0.0, 0.0), energy_kev=None, convergence_mrad=None, *,
                 scan_steps_nm=None, k_steps_mrad=None):
        scan = _either("scan_step_nm", scan_step_nm, "scan_steps_nm", scan_steps_nm)
        k = _either("k_step_mrad", k_step_mrad, "k_steps_mrad", k_steps_mrad)
        set_ = object.__setattr__
        set_(self, "scan_steps_nm", _step_pair(
            "Calibration scan_step_nm", scan, ("scan y", "scan x"), "nm",
            "Pass the probe step in nm (field of view / number of scan positions).",
        ))
        set_(self, "k_steps_mrad", _step_pair(
            "Calibration k_step_mrad", k, ("ky", "kx"), "mrad",
            "Pass the camera's angular pixel size in mrad (e.g. convergence semi-angle / "
            "bright-field disk radius in pixels).",
        ))
        set_(self, "scan_offset_nm", _offset_pair("Calibration scan_offset_nm",
                                                  scan_offset_nm, "nm"))
        set_(self, "k_offset_mrad", _offset_pair("Calibration k_offset_mrad",
                                                 k_offset_mrad, "mrad"))
        set_(self, "energy_kev", _optional_positive(
            "Calibration energy_kev", energy_kev, "keV",
            "For a signal, set signal.metadata.Acquisition_instrument.TEM.beam_energy."))
        set_(self, "convergence_mrad", _optional_positive(
            "Calibration convergence_mrad", convergence_mrad, "mrad",
            "For a signal, set signal.metadata.Acquisition_instrument.TEM.convergence_angle."))

    # ------------------------------------------------------------------ square pixels
    @property
    def square_scan(self) -> bool:
        """Whether the scan pixels are square (steps equal within :data:`SQUARE_TOLERANCE`)."""
        return _is_square(self.scan_steps_nm)

    @property
    def square_k(self) -> bool:
        """Whether the diffraction pixels are square (within :data:`SQUARE_TOLERANCE`)."""
        return _is_square(self.k_steps_mrad)

    @property
    def scan_step_nm(self) -> float:
        """The probe step in nm of a scan with square pixels (the scan y step).

        Raises
        ------
        ValueError
            If the scan pixels are not square: use :attr:`scan_steps_nm` (one step per axis).
        """
        if not self.square_scan:
            sy, sx = self.scan_steps_nm
            raise ValueError(
                f"The scan pixels are not square ({sy:.6g} nm along scan y, {sx:.6g} nm along "
                "scan x), but this step needs a single scan step. Use Calibration.scan_steps_nm "
                "(one step per axis) where the analysis allows it, or resample the scan to "
                "square pixels first (e.g. hyperspy's signal.interpolate_on_axis)."
            )
        return self.scan_steps_nm[0]

    @property
    def k_step_mrad(self) -> float:
        """The diffraction pixel size in mrad of a camera with square pixels (the ky step).

        Raises
        ------
        ValueError
            If the diffraction pixels are not square: use :attr:`k_steps_mrad`, or resample the
            patterns with ``rrvae_nb.preprocess.prepare(..., square_pixels="resample")``.
        """
        if not self.square_k:
            ky, kx = self.k_steps_mrad
            raise ValueError(
                f"The diffraction pixels are not square ({ky:.6g} mrad along ky, {kx:.6g} mrad "
                "along kx), but this step needs a single pixel size (a rotation-invariant "
                "analysis needs square pixels). Resample the patterns to square pixels with "
                "rrvae_nb.preprocess.prepare(..., square_pixels='resample'), or use "
                "Calibration.k_steps_mrad (one step per axis) where the analysis allows it."
            )
        return self.k_steps_mrad[0]

    # ------------------------------------------------------------------ scan positions
    def scan_positions_nm(self, shape) -> np.ndarray:
        """Position of every probe of a scan, in nm.

        Parameters
        ----------
        shape : (int, int)
            Scan shape (scan y, scan x).

        Returns
        -------
        numpy.ndarray
            (scan y, scan x, 2) float64: the (y, x) position in nm of each probe position,
            ``scan_offset_nm + index * scan_steps_nm`` (per axis).

        Raises
        ------
        ValueError
            If ``shape`` is not two positive integers.
        """
        ny, nx = _shape2(shape)
        iy, ix = np.indices((ny, nx))
        sy, sx = self.scan_steps_nm
        return np.stack([self.scan_offset_nm[0] + iy * sy,
                         self.scan_offset_nm[1] + ix * sx], axis=-1)

    def scan_index(self, positions_nm, shape) -> tuple[np.ndarray, np.ndarray]:
        """Nearest probe position of each point given in nm.

        Parameters
        ----------
        positions_nm : array_like
            (M, 2) or (2,) points (y, x) in nm.
        shape : (int, int)
            Scan shape (scan y, scan x).

        Returns
        -------
        index : numpy.ndarray
            (M, 2) int: scan index (iy, ix) of the nearest probe position, clipped into the scan
            (a point outside the scan gets the nearest edge position).
        inside : numpy.ndarray
            (M,) bool: whether the rounded index lay inside the scan before clipping.

        Raises
        ------
        ValueError
            If ``positions_nm`` is not (M, 2) or (2,), holds NaN/inf, or ``shape`` is not two
            positive integers.
        """
        ny, nx = _shape2(shape)
        p = _points_nm(positions_nm, "positions_nm")
        # np.rint rounds halves to even, like Python's round()
        index = np.rint((p - np.asarray(self.scan_offset_nm))
                        / np.asarray(self.scan_steps_nm)).astype(int)
        limit = np.array([ny, nx])
        inside = np.all((index >= 0) & (index < limit), axis=1)
        return np.clip(index, 0, limit - 1), inside


def _either(single: str, one, pair_name: str, pair):
    """The step given under one of its two keywords (refuses both, and neither)."""
    if one is not None and pair is not None:
        raise ValueError(
            f"Give {single}= or {pair_name}=, not both. To change the steps of an existing "
            f"Calibration use dataclasses.replace(cal, {pair_name}=(y, x))."
        )
    if one is None and pair is None:
        raise ValueError(
            f"Calibration needs {single}= (one step, square pixels, or a (y, x) pair); it has "
            "no default."
        )
    return one if one is not None else pair


def _points_nm(points, name: str) -> np.ndarray:
    """Check (M, 2) or (2,) points (y, x) in nm and return them as an (M, 2) float array."""
    p = np.asarray(points, dtype=float)
    if p.size == 0:
        raise ValueError(
            f"{name} is empty: pass at least one point (y, x) in nm (e.g. check that the ground "
            "truth lists the atoms or defects you selected)."
        )
    if p.shape == (2,):
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(
            f"{name} must be (M, 2) or (2,) points (y, x) in nm; got shape {np.shape(points)}. "
            "Stack the points as rows, e.g. np.array([[y, x], ...])."
        )
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contain NaN or inf: pass finite (y, x) points in nm.")
    return p


def _shape2(shape, axes: str = "scan y, scan x", example: str = "signal.data.shape[:2]"):
    """Check a 2-D shape (a scan's or a pattern's, named by ``axes``) and return two ints."""
    what = "scan" if axes.startswith("scan") else "pattern"
    try:
        ny, nx = (int(n) for n in shape)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"shape must be the {what} shape ({axes}), two integers; got {shape!r}. "
            f"Pass e.g. {example}."
        ) from err
    if ny < 1 or nx < 1 or (ny, nx) != tuple(shape):
        raise ValueError(f"shape must be two positive integers ({axes}); got {shape!r}.")
    return ny, nx


def make_signal(data, calibration: Calibration, *, title: str = "", lazy: bool | None = None):
    """Wrap a 4D array as a calibrated hyperspy ``Signal2D``.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        Array of shape (scan y, scan x, ky, kx). A dask array gives a lazy signal.
    calibration : Calibration
        Scan steps (nm), diffraction pixel sizes (mrad), offsets, beam energy and convergence
        angle; each axis gets its own step.
    title : str
        Title stored in ``metadata.General.title``.
    lazy : bool, optional
        Force a lazy (True) or eager (False) signal; by default lazy exactly when ``data`` is a
        dask array.

    Returns
    -------
    hyperspy.signals.Signal2D or hyperspy LazySignal2D
        Navigation axes ``y``, ``x`` in nm; signal axes ``ky``, ``kx`` in mrad.

    Raises
    ------
    ValueError
        If ``data`` is not 4-dimensional.
    TypeError
        If ``calibration`` is not a :class:`Calibration` (whose constructor checks every step).
    """
    hs = require_hyperspy()
    if getattr(data, "ndim", None) != 4:
        raise ValueError(
            f"A 4D-STEM array must have 4 axes (scan y, scan x, ky, kx); got shape "
            f"{getattr(data, 'shape', None)}. Reshape your data to (scan y, scan x, ky, kx)."
        )
    if not isinstance(calibration, Calibration):
        raise TypeError(
            f"calibration must be a rrvae_nb.signals.Calibration; got "
            f"{type(calibration).__name__}. Build one with Calibration(scan_step_nm=..., "
            "k_step_mrad=...)."
        )
    ny, nx, nky, nkx = data.shape
    sy, sx = calibration.scan_offset_nm
    ky0, kx0 = calibration.k_offset_mrad
    (dy, dx), (dky, dkx) = calibration.scan_steps_nm, calibration.k_steps_mrad
    axes = [
        dict(name="y", size=ny, scale=dy, offset=sy, units="nm", navigate=True),
        dict(name="x", size=nx, scale=dx, offset=sx, units="nm", navigate=True),
        dict(name="ky", size=nky, scale=dky, offset=ky0, units="mrad", navigate=False),
        dict(name="kx", size=nkx, scale=dkx, offset=kx0, units="mrad", navigate=False),
    ]
    if lazy is None:
        from .core import is_dask  # here, not at the top: core imports this module

        lazy = is_dask(data)
    if lazy:
        import dask.array as da

        sig = hs.signals.Signal2D(da.asarray(data), axes=axes).as_lazy()
    else:
        sig = hs.signals.Signal2D(np.asarray(data), axes=axes)
    sig.metadata.General.title = title
    if calibration.energy_kev is not None:
        sig.metadata.set_item(
            "Acquisition_instrument.TEM.beam_energy", float(calibration.energy_kev)
        )
    if calibration.convergence_mrad is not None:
        sig.metadata.set_item(
            "Acquisition_instrument.TEM.convergence_angle", float(calibration.convergence_mrad)
        )
    return sig


# Units a signal's axes may carry (rrvae_nb.units holds the factors; files may use more).
_SCAN_TO_NM = {u: LENGTH_TO_NM[u] for u in ("nm", "Å", "A", "angstrom", "pm", "µm", "um")}
_K_TO_MRAD = {u: ANGLE_TO_MRAD[u] for u in ("mrad", "rad", "µrad", "urad")}


def _axis_label(ax) -> str:
    """How to address a hyperspy axis in a message: its name, else its index."""
    name = getattr(ax, "name", None)
    if isinstance(name, str) and name and name != "<undefined>":
        return repr(name)
    return str(getattr(ax, "index_in_axes_manager", "..."))


def calibration_of(signal) -> Calibration:
    """Read and check the calibration of a 4D-STEM ``Signal2D``.

    Each axis keeps its own step and offset, so rectangular scan or diffraction pixels are read
    as they are (``Calibration.scan_steps_nm`` / ``k_steps_mrad``); the analyses that need
    square pixels refuse them later with a message that says how to proceed.

    Parameters
    ----------
    signal : hyperspy Signal2D
        With two navigation axes (scan y, scan x) and two signal axes (ky, kx).

    Returns
    -------
    Calibration

    Raises
    ------
    ValueError
        If the signal is not 4D, an axis is uncalibrated (units missing), the units are not
        length units (scan) or mrad/rad (diffraction), a step is zero, negative or not finite,
        an offset is not finite, or the beam energy / convergence angle in the metadata is not
        a positive number. Each message names the axis and how to fix it.
    """
    nav_y, nav_x, sig_y, sig_x = _four_axes(signal)
    fy, fx, gy, gx = _unit_factors(nav_y, nav_x, sig_y, sig_x)
    steps, offsets = {}, {}
    for key, ax, factor, load_kw in (
        ("y", nav_y, fy, "scan_step_nm"), ("x", nav_x, fx, "scan_step_nm"),
        ("ky", sig_y, gy, "k_step_mrad"), ("kx", sig_x, gx, "k_step_mrad"),
    ):
        steps[key], offsets[key] = _step_and_offset(ax, factor, load_kw)
    tem = signal.metadata.get_item("Acquisition_instrument.TEM", default=None)
    energy = conv = None
    if tem is not None:
        energy = tem.get_item("beam_energy", default=None)
        conv = tem.get_item("convergence_angle", default=None)
    return Calibration(
        scan_steps_nm=(steps["y"], steps["x"]),
        k_steps_mrad=(steps["ky"], steps["kx"]),
        scan_offset_nm=(offsets["y"], offsets["x"]),
        k_offset_mrad=(offsets["ky"], offsets["kx"]),
        energy_kev=energy,
        convergence_mrad=conv,
    )


def _four_axes(signal):
    """(scan y, scan x, ky, kx) axes of a 4D-STEM signal, each with units; else a clear error."""
    am = getattr(signal, "axes_manager", None)
    if am is None or am.navigation_dimension != 2 or am.signal_dimension != 2:
        got = (f"{am.navigation_dimension} navigation and {am.signal_dimension} signal axes"
               if am is not None else f"a {type(signal).__name__}")
        raise ValueError(
            "Expected a 4D-STEM signal with 2 navigation (scan) and 2 signal (diffraction) axes; "
            f"got {got}. {HOW_TO_GET_A_SIGNAL}"
        )
    # hyperspy orders navigation axes x first; signal axes kx first.
    nav_x, nav_y = am.navigation_axes
    sig_x, sig_y = am.signal_axes
    for ax in (nav_x, nav_y, sig_x, sig_y):
        units = ax.units
        if units is None or str(units).strip() in ("", "<undefined>"):
            raise ValueError(
                f"Axis {ax.name!r} has no units, so the data are uncalibrated. Set the scale and "
                "units, e.g. signal.axes_manager[...].scale = ...; .units = 'nm' (scan) or "
                "'mrad' (diffraction)."
            )
    return nav_y, nav_x, sig_y, sig_x


def _unit_factors(nav_y, nav_x, sig_y, sig_x) -> tuple[float, float, float, float]:
    """Factors to nm (scan y, x) and to mrad (ky, kx) of the axes' units."""
    try:
        fy, fx = _SCAN_TO_NM[nav_y.units], _SCAN_TO_NM[nav_x.units]
    except KeyError as err:
        raise ValueError(
            f"Scan axes must be in a length unit (nm, Å, pm, µm); got {nav_y.units!r}, "
            f"{nav_x.units!r}."
        ) from err
    try:
        gy, gx = _K_TO_MRAD[sig_y.units], _K_TO_MRAD[sig_x.units]
    except KeyError as err:
        raise ValueError(
            f"Diffraction axes must be in mrad or rad; got {sig_y.units!r}, {sig_x.units!r}. "
            "Convert reciprocal-space units (1/nm) to angles with the electron wavelength first."
        ) from err
    return fy, fx, gy, gx


def _step_and_offset(ax, factor: float, load_kw: str) -> tuple[float, float]:
    """An axis's checked step and offset, converted by ``factor`` (to nm or mrad)."""
    scale, offset = _number(ax.scale), _number(ax.offset)
    kind = "scan" if load_kw == "scan_step_nm" else "diffraction"
    if scale is None or not math.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"The {kind} axis {_axis_label(ax)} has scale {ax.scale!r} {ax.units}: a step "
            f"must be a finite number > 0. Set it, e.g. signal.axes_manager"
            f"[{_axis_label(ax)}].scale = <step in {ax.units}>, or pass {load_kw}= to "
            "rrvae_nb.io.load when reading the file."
        )
    if offset is None or not math.isfinite(offset):
        raise ValueError(
            f"The {kind} axis {_axis_label(ax)} has offset {ax.offset!r} {ax.units}: it "
            f"must be finite. Set it, e.g. signal.axes_manager[{_axis_label(ax)}].offset "
            f"= <position of the first pixel in {ax.units}>."
        )
    return scale * factor, offset * factor
