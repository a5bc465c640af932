"""Calibrated 4D-STEM signals: one place that builds and checks hyperspy ``Signal2D`` objects.

Every dataset in the package (simulated, loaded from disk, emulated experiment) is a hyperspy
``Signal2D`` with the array axis order **(scan y, scan x | ky, kx)**: two navigation axes in
nanometres and two signal axes in milliradians, with the beam energy (keV) and the probe
convergence semi-angle (mrad) under ``metadata.Acquisition_instrument.TEM``.

hyperspy is an optional dependency (the ``data`` extra); it is imported lazily so that the model
works without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Calibration", "make_signal", "calibration_of", "require_hyperspy"]

#: Relative tolerance within which two pixel sizes count as equal (square pixels).
SQUARE_TOLERANCE = 1e-3


def require_hyperspy():
    """Import and return ``hyperspy.api``, or raise an ImportError that says how to install it."""
    try:
        import hyperspy.api as hs
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "This function needs hyperspy. Install the data extra: pip install 'rrvae-nb[data]'"
        ) from err
    return hs


@dataclass(frozen=True)
class Calibration:
    """Calibration of a 4D-STEM dataset.

    Attributes
    ----------
    scan_step_nm : float
        Probe step between neighbouring scan positions, in nm (square scan pixels).
    k_step_mrad : float
        Size of one diffraction pixel, in mrad (square pixels).
    scan_offset_nm : tuple of float
        Position of the first scan pixel, (y, x), in nm.
    k_offset_mrad : tuple of float
        Scattering angle of the first diffraction pixel, (ky, kx), in mrad.
    energy_kev : float or None
        Beam energy in keV.
    convergence_mrad : float or None
        Probe convergence semi-angle in mrad.
    """

    scan_step_nm: float
    k_step_mrad: float
    scan_offset_nm: tuple[float, float] = (0.0, 0.0)
    k_offset_mrad: tuple[float, float] = (0.0, 0.0)
    energy_kev: float | None = None
    convergence_mrad: float | None = None

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
            ``scan_offset_nm + index * scan_step_nm``.

        Raises
        ------
        ValueError
            If ``shape`` is not two positive integers.
        """
        ny, nx = _shape2(shape)
        iy, ix = np.indices((ny, nx))
        return np.stack([self.scan_offset_nm[0] + iy * self.scan_step_nm,
                         self.scan_offset_nm[1] + ix * self.scan_step_nm], axis=-1)

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
        index = np.rint((p - np.asarray(self.scan_offset_nm)) / self.scan_step_nm).astype(int)
        limit = np.array([ny, nx])
        inside = np.all((index >= 0) & (index < limit), axis=1)
        return np.clip(index, 0, limit - 1), inside


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
        Scan step (nm), diffraction pixel size (mrad), offsets, beam energy and convergence angle.
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
        If ``data`` is not 4-dimensional or a step is not a positive finite number.
    """
    hs = require_hyperspy()
    if getattr(data, "ndim", None) != 4:
        raise ValueError(
            f"A 4D-STEM array must have 4 axes (scan y, scan x, ky, kx); got shape "
            f"{getattr(data, 'shape', None)}. Reshape your data to (scan y, scan x, ky, kx)."
        )
    for name in ("scan_step_nm", "k_step_mrad"):
        value = getattr(calibration, name)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"Calibration.{name} must be a positive number; got {value!r}.")
    ny, nx, nky, nkx = data.shape
    sy, sx = calibration.scan_offset_nm
    ky0, kx0 = calibration.k_offset_mrad
    axes = [
        dict(name="y", size=ny, scale=calibration.scan_step_nm, offset=sy, units="nm",
             navigate=True),
        dict(name="x", size=nx, scale=calibration.scan_step_nm, offset=sx, units="nm",
             navigate=True),
        dict(name="ky", size=nky, scale=calibration.k_step_mrad, offset=ky0, units="mrad",
             navigate=False),
        dict(name="kx", size=nkx, scale=calibration.k_step_mrad, offset=kx0, units="mrad",
             navigate=False),
    ]
    is_dask = type(data).__module__.startswith("dask")
    if lazy is None:
        lazy = is_dask
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


def calibration_of(signal) -> Calibration:
    """Read and check the calibration of a 4D-STEM ``Signal2D``.

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
        nm-like / mrad, or the pixels are not square (scan or diffraction).
    """
    if signal.axes_manager.navigation_dimension != 2 or signal.axes_manager.signal_dimension != 2:
        raise ValueError(
            "Expected a 4D-STEM signal with 2 navigation (scan) and 2 signal (diffraction) axes; "
            f"got {signal.axes_manager.navigation_dimension} navigation and "
            f"{signal.axes_manager.signal_dimension} signal axes."
        )
    # hyperspy orders navigation axes x first; signal axes kx first.
    nav_x, nav_y = signal.axes_manager.navigation_axes
    sig_x, sig_y = signal.axes_manager.signal_axes
    for ax in (nav_x, nav_y, sig_x, sig_y):
        units = ax.units
        if units is None or str(units).strip() in ("", "<undefined>"):
            raise ValueError(
                f"Axis {ax.name!r} has no units, so the data are uncalibrated. Set the scale and "
                "units, e.g. signal.axes_manager[...].scale = ...; .units = 'nm' (scan) or "
                "'mrad' (diffraction)."
            )
    scan_to_nm = {"nm": 1.0, "Å": 0.1, "A": 0.1, "angstrom": 0.1, "pm": 1e-3, "µm": 1e3,
                  "um": 1e3}
    k_to_mrad = {"mrad": 1.0, "rad": 1e3, "µrad": 1e-3, "urad": 1e-3}
    try:
        fy, fx = scan_to_nm[nav_y.units], scan_to_nm[nav_x.units]
    except KeyError as err:
        raise ValueError(
            f"Scan axes must be in a length unit (nm, Å, pm, µm); got {nav_y.units!r}, "
            f"{nav_x.units!r}."
        ) from err
    try:
        gy, gx = k_to_mrad[sig_y.units], k_to_mrad[sig_x.units]
    except KeyError as err:
        raise ValueError(
            f"Diffraction axes must be in mrad or rad; got {sig_y.units!r}, {sig_x.units!r}. "
            "Convert reciprocal-space units (1/nm) to angles with the electron wavelength first."
        ) from err
    sy, sx = nav_y.scale * fy, nav_x.scale * fx
    ky, kx = sig_y.scale * gy, sig_x.scale * gx
    if not np.isclose(sy, sx, rtol=SQUARE_TOLERANCE):
        raise ValueError(
            f"Scan pixels are not square ({sy:.4g} nm x {sx:.4g} nm). Resample the scan to square "
            "pixels first."
        )
    if not np.isclose(ky, kx, rtol=SQUARE_TOLERANCE):
        raise ValueError(
            f"Diffraction pixels are not square ({ky:.4g} mrad x {kx:.4g} mrad): a rotation-"
            "invariant model needs square pixels. Resample the patterns (e.g. abTEM's "
            "resample='uniform') first."
        )
    tem = signal.metadata.get_item("Acquisition_instrument.TEM", default=None)
    energy = conv = None
    if tem is not None:
        energy = tem.get_item("beam_energy", default=None)
        conv = tem.get_item("convergence_angle", default=None)
    return Calibration(
        scan_step_nm=float(sy),
        k_step_mrad=float(ky),
        scan_offset_nm=(float(nav_y.offset * fy), float(nav_x.offset * fx)),
        k_offset_mrad=(float(sig_y.offset * gy), float(sig_x.offset * gx)),
        energy_kev=None if energy is None else float(energy),
        convergence_mrad=None if conv is None else float(conv),
    )
