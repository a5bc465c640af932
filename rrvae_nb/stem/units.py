"""Physical units of 4D-STEM data, and the electron wavelength: each defined once.

* Unit tables: factors that turn a value given in a unit into the package's units, lengths in
  nm (:data:`LENGTH_TO_NM`), angles in mrad (:data:`ANGLE_TO_MRAD`) and reciprocal lengths in
  1/nm (:data:`RECIPROCAL_TO_INV_NM`, turned into angles with the wavelength).
* :func:`electron_wavelength_nm`: the relativistic de Broglie wavelength of a beam electron, with
  CODATA constants (``scipy.constants``).

Every other module (reading files, signals, COM, simulations) takes its units from here, so a
unit spelling or a constant cannot differ between them.
"""

from __future__ import annotations

import math

__all__ = [
    "LENGTH_TO_NM",
    "ANGLE_TO_MRAD",
    "RECIPROCAL_TO_INV_NM",
    "electron_wavelength_nm",
    "electron_wavelength_angstrom",
]

#: Length units -> nm (scan axes).
LENGTH_TO_NM = {
    "nm": 1.0,
    "Å": 0.1,
    "A": 0.1,
    "angstrom": 0.1,
    "pm": 1e-3,
    "µm": 1e3,
    "um": 1e3,
    "m": 1e9,
}
#: Angle units -> mrad (diffraction axes).
ANGLE_TO_MRAD = {
    "mrad": 1.0,
    "rad": 1e3,
    "µrad": 1e-3,
    "urad": 1e-3,
    "deg": math.pi / 180 * 1e3,
    "°": math.pi / 180 * 1e3,
}
#: Reciprocal-length units -> 1/nm (turned into angles with the electron wavelength).
RECIPROCAL_TO_INV_NM = {"1/nm": 1.0, "nm^-1": 1.0, "1/Å": 10.0, "1/A": 10.0, "Å^-1": 10.0}


def _wavelength_m(energy_kev) -> float:
    """The wavelength in metres; ValueError for a missing, non-finite or non-positive energy."""
    from scipy import constants as c

    try:
        energy = float(energy_kev)
    except (TypeError, ValueError):
        energy = math.nan
    if isinstance(energy_kev, bool) or not (math.isfinite(energy) and energy > 0):
        raise ValueError(
            f"The beam energy must be a positive number of keV; got {energy_kev!r}. Pass "
            "energy_kev=... or store it in metadata.Acquisition_instrument.TEM.beam_energy."
        )
    energy_j = energy * 1e3 * c.e
    momentum = math.sqrt(2 * c.m_e * energy_j * (1 + energy_j / (2 * c.m_e * c.c**2)))
    return c.h / momentum


def electron_wavelength_nm(energy_kev: float) -> float:
    """Relativistic de Broglie wavelength of a beam electron, in nm.

    ``lambda = h / sqrt(2 m0 e U (1 + e U / (2 m0 c^2)))`` with CODATA constants from
    ``scipy.constants``: 4.8661 pm at 60 keV, 4.1757 pm at 80 keV, 2.5079 pm at 200 keV and
    1.9687 pm at 300 keV.

    Parameters
    ----------
    energy_kev : float
        Beam (kinetic) energy in keV, e.g. 60 for a 60 kV microscope.

    Returns
    -------
    float
        Wavelength in nm.

    Raises
    ------
    ValueError
        If the energy is missing, not finite or not positive.
    """
    return _wavelength_m(energy_kev) * 1e9


def electron_wavelength_angstrom(energy_kev: float) -> float:
    """The electron wavelength of :func:`electron_wavelength_nm`, in Å."""
    return _wavelength_m(energy_kev) * 1e10
