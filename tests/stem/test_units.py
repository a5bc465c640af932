"""Tests of rrvae_nb.units: the electron wavelength (one formula for the package) and the tables."""

from __future__ import annotations

import math

import pytest

from rrvae_nb import com, io, simulate, units


@pytest.mark.parametrize(("kev", "pm"), [
    # relativistic wavelength h / sqrt(2 m0 e U (1 + e U / 2 m0 c^2)), CODATA 2018/2022
    (60, 4.8660605), (80, 4.1757161), (200, 2.5079340), (300, 1.9687489),
])
def test_wavelength_matches_known_values(kev, pm):
    assert units.electron_wavelength_nm(kev) * 1e3 == pytest.approx(pm, rel=1e-6)
    assert units.electron_wavelength_angstrom(kev) * 100 == pytest.approx(pm, rel=1e-6)


def test_textbook_values_and_one_formula_everywhere():
    assert units.electron_wavelength_nm(200) * 1e3 == pytest.approx(2.5079, abs=5e-5)
    for kev in (30, 60, 200):
        nm = units.electron_wavelength_nm(kev)
        assert io.electron_wavelength_nm(kev) == nm
        assert simulate._wavelength_nm(kev) == nm
        assert com.electron_wavelength_angstrom(kev) == pytest.approx(10 * nm, rel=1e-15)


@pytest.mark.parametrize("bad", [0, -60, math.nan, math.inf, None, "60 kV", True])
def test_wavelength_refuses_bad_energies(bad):
    with pytest.raises(ValueError, match="beam energy must be a positive number of keV"):
        units.electron_wavelength_nm(bad)


def test_unit_tables():
    assert units.LENGTH_TO_NM["Å"] == 0.1 and units.LENGTH_TO_NM["µm"] == 1e3
    assert units.ANGLE_TO_MRAD["rad"] == 1e3
    assert units.ANGLE_TO_MRAD["deg"] == pytest.approx(17.453292519943297)
    assert units.RECIPROCAL_TO_INV_NM["1/Å"] == 10.0
