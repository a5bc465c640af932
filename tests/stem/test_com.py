"""Tests of rrvae_nb.com: analytic COM cases, corrections, iCOM, bad input, and abTEM graphene."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from rrvae_nb.com import (
    COMMaps,
    apply_rotation,
    bright_field_mask,
    center_of_mass,
    electron_wavelength_angstrom,
    find_rotation,
    integrate_com,
    remove_descan,
)

K = 48  # pattern size (ky = kx)
K_STEP = 2.5  # mrad per diffraction pixel


def disk(centre, radius=8.0, size=K):
    """Uniform disk of the given (ky, kx) centre in px (exactly symmetric for integer centres)."""
    yy, xx = np.indices((size, size))
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).astype(np.float64)


def shifted_disks(shifts):
    """4D cube (scan y, scan x, ky, kx) of disks shifted by integer (dy, dx) from the centre."""
    ny, nx = shifts.shape[:2]
    c = K // 2
    data = np.empty((ny, nx, K, K))
    for iy in range(ny):
        for ix in range(nx):
            dy, dx = shifts[iy, ix]
            data[iy, ix] = disk((c + dy, c + dx))
    return data


def gaussian_potential(shape=(48, 48), centres=((12, 14), (30, 33), (36, 10), (15, 37)),
                       sigma=3.0, amplitudes=(1.0, 0.7, 1.3, 0.9)):
    """Sum of Gaussians V (scan y, scan x) and its exact gradient (dV/dy, dV/dx) per scan px."""
    yy, xx = np.indices(shape, dtype=np.float64)
    v = np.zeros(shape)
    gy = np.zeros(shape)
    gx = np.zeros(shape)
    for (cy, cx), a in zip(centres, amplitudes, strict=True):
        g = a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        v += g
        gy -= g * (yy - cy) / sigma**2
        gx -= g * (xx - cx) / sigma**2
    return v, gy, gx, np.array(centres)


def physical_field(**kw):
    """COM of a thin 'specimen' of Gaussian atoms: grad V, pointing towards the atoms."""
    v, gy, gx, centres = gaussian_potential(**kw)
    return v, COMMaps(com_y=gy, com_x=gx, units="mrad"), centres


# ------------------------------------------------------------------------------------------
# Analytic COM
# ------------------------------------------------------------------------------------------


def test_shifted_disk_gives_its_shift_in_px_and_mrad():
    rng = np.random.default_rng(1)
    shifts = rng.integers(-5, 6, size=(3, 4, 2))
    data = shifted_disks(shifts)
    centre = (K // 2, K // 2)
    px = center_of_mass(data, units="px", origin=centre)
    np.testing.assert_allclose(px.com_y, shifts[..., 0], atol=1e-9)
    np.testing.assert_allclose(px.com_x, shifts[..., 1], atol=1e-9)
    np.testing.assert_allclose(px.vector, shifts, atol=1e-9)
    mrad = center_of_mass(data, k_step_mrad=K_STEP, origin=centre)
    assert mrad.units == "mrad"
    np.testing.assert_allclose(mrad.vector, shifts * K_STEP, atol=1e-9)
    np.testing.assert_allclose(mrad.magnitude, np.hypot(*np.moveaxis(shifts, -1, 0)) * K_STEP)


def test_float32_cube_matches_float64():
    rng = np.random.default_rng(2)
    data = shifted_disks(rng.integers(-4, 5, size=(4, 4, 2))) * rng.uniform(1, 100, (4, 4, 1, 1))
    ref = center_of_mass(data, k_step_mrad=K_STEP)
    f32 = center_of_mass(data.astype(np.float32), k_step_mrad=K_STEP)
    np.testing.assert_allclose(f32.vector, ref.vector, atol=1e-4)


def test_inverse_angstrom_uses_relativistic_wavelength():
    # Literature values of the relativistic electron wavelength (pm): 60, 200, 300 kV.
    for kev, pm in ((60, 4.866), (200, 2.508), (300, 1.969)):
        assert electron_wavelength_angstrom(kev) * 100 == pytest.approx(pm, abs=1e-3)
    nonrel = 12.2643 / math.sqrt(200e3)  # h / sqrt(2 m e U) in Å: 1 % longer at 200 kV
    assert electron_wavelength_angstrom(200) < 0.99 * nonrel
    data = shifted_disks(np.array([[[3, -2]]]))
    inv = center_of_mass(data, units="1/A", k_step_mrad=K_STEP, energy_kev=60, origin=(24, 24))
    assert inv.units == "1/Å"
    wavelength = electron_wavelength_angstrom(60)
    np.testing.assert_allclose(inv.vector[0, 0], np.array([3, -2]) * K_STEP * 1e-3 / wavelength)


def test_scaling_a_pattern_does_not_change_its_com():
    rng = np.random.default_rng(3)
    data = rng.random((3, 3, K, K)) + shifted_disks(rng.integers(-3, 4, size=(3, 3, 2)))
    scale = rng.uniform(0.01, 1000, size=(3, 3, 1, 1))
    a = center_of_mass(data, k_step_mrad=K_STEP, origin=(20.3, 25.1))
    b = center_of_mass(data * scale, k_step_mrad=K_STEP, origin=(20.3, 25.1))
    np.testing.assert_allclose(b.vector, a.vector, atol=1e-9)
    assert np.abs(a.vector).max() > 1  # a real signal was compared


def test_origin_is_the_com_of_the_mean_pattern():
    rng = np.random.default_rng(4)
    data = rng.random((4, 5, K, K)) ** 4 * 50 + shifted_disks(rng.integers(-4, 5, (4, 5, 2)))
    com = center_of_mass(data, units="px")
    ref_origin = ndimage.center_of_mass(data.mean(axis=(0, 1)))
    np.testing.assert_allclose(com.origin_px, ref_origin, atol=1e-9)
    for iy, ix in [(0, 0), (2, 3), (3, 4)]:
        ref = np.subtract(ndimage.center_of_mass(data[iy, ix]), ref_origin)
        np.testing.assert_allclose(com.vector[iy, ix], ref, atol=1e-9)
    # intensity-weighted mean of the COM about the mean pattern's COM is zero
    weights = data.sum(axis=(2, 3))
    np.testing.assert_allclose((com.vector * weights[..., None]).sum((0, 1)), 0, atol=1e-6)


def test_angle_is_counter_clockwise_on_screen_and_follows_rot90():
    c = 24  # odd pattern size 49: np.rot90 turns about the centre pixel (24, 24)
    right, up, down_left = (disk(p, size=49) for p in ((c, c + 4), (c - 4, c), (c + 3, c - 3)))
    data = np.stack([right, up, down_left, np.rot90(right), np.rot90(down_left)])[None]
    com = center_of_mass(data, units="px", origin=(c, c))
    # right = 0, up on screen = +pi/2; np.rot90 turns the displayed image counter-clockwise
    # and adds pi/2 to the angle
    expected = [0.0, math.pi / 2, -3 * math.pi / 4, math.pi / 2, -math.pi / 4]
    np.testing.assert_allclose(com.angle[0], expected, atol=1e-12)


def test_bright_field_mask_and_threshold_ignore_a_stray_spot():
    c = K // 2
    pattern = disk((c + 2, c - 1), radius=8) * 10.0
    pattern[2:7, 39:44] += 4.0  # a bright stray spot outside the BF disk (5 % of the counts)
    data = pattern[None, None]
    plain = center_of_mass(data, units="px", origin=(c, c))
    assert np.hypot(*(plain.vector[0, 0] - (2, -1))) > 1  # the spot pulls the plain COM away
    # the mask must hold the disk at every shift: margin 3 px for a 2.2 px shift
    mask = bright_field_mask(disk((c, c), radius=8) * 10.0, margin_px=3.0)
    masked = center_of_mass(data, units="px", origin=(c, c), mask=mask)
    thresh = center_of_mass(data, units="px", origin=(c, c), threshold=0.5)
    for com in (masked, thresh):
        np.testing.assert_allclose(com.vector[0, 0], (2, -1), atol=1e-9)
    assert mask.sum() == pytest.approx(math.pi * 11**2, rel=0.1)


def test_dask_and_hyperspy_inputs_match_numpy():
    da = pytest.importorskip("dask.array")
    pytest.importorskip("hyperspy")
    from rrvae_nb.signals import Calibration, make_signal

    rng = np.random.default_rng(5)
    data = (rng.random((6, 5, K, K)) + shifted_disks(rng.integers(-4, 5, (6, 5, 2)))).astype(
        np.float32
    )
    ref = center_of_mass(data, k_step_mrad=K_STEP, energy_kev=80, units="1/Å")
    lazy = center_of_mass(da.from_array(data, chunks=(2, 3, 16, K)), k_step_mrad=K_STEP,
                          energy_kev=80, units="1/Å", progress=False)
    # float32 sums in another order (chunks): about 1e-8 of values up to 0.05 (seen 1.5e-8)
    np.testing.assert_allclose(lazy.vector, ref.vector, rtol=1e-6, atol=1e-7)
    cal = Calibration(scan_step_nm=0.02, k_step_mrad=K_STEP, energy_kev=80,
                      k_offset_mrad=(-(K // 2) * K_STEP, -(K // 2) * K_STEP))
    for signal in (make_signal(data, cal), make_signal(da.from_array(data, chunks=3), cal)):
        com = center_of_mass(signal, units="1/Å", progress=False)
        np.testing.assert_allclose(com.vector, ref.vector, rtol=1e-6, atol=1e-8)
        assert com.scan_step_nm == pytest.approx(0.02)
        axes = center_of_mass(signal, origin="axes", progress=False)
        np.testing.assert_allclose(axes.origin_px, (K // 2, K // 2))
        np.testing.assert_allclose(
            axes.vector, center_of_mass(data, k_step_mrad=K_STEP, origin=(24, 24)).vector,
            atol=1e-5,
        )


# ------------------------------------------------------------------------------------------
# Corrections and integration
# ------------------------------------------------------------------------------------------


def test_descan_plane_fit_removes_a_linear_ramp_exactly():
    _, field, _ = physical_field()
    yy, xx = np.indices(field.com_y.shape)
    ramp_y, ramp_x = 0.3 - 0.02 * yy + 0.05 * xx, -1.1 + 0.04 * yy - 0.01 * xx
    ramped = COMMaps(com_y=field.com_y + ramp_y, com_x=field.com_x + ramp_x, units="mrad")
    a, b = remove_descan(ramped), remove_descan(field)
    assert a.descan_removed
    np.testing.assert_allclose(a.vector, b.vector, atol=1e-12)
    only_ramp = remove_descan(COMMaps(com_y=ramp_y, com_x=ramp_x, units="mrad"))
    np.testing.assert_allclose(only_ramp.vector, 0, atol=1e-12)
    # a fit over part of the scan (e.g. vacuum) still removes the ramp everywhere
    vacuum = np.zeros(ramp_y.shape, bool)
    vacuum[:5] = True
    part = remove_descan(COMMaps(com_y=ramp_y, com_x=ramp_x, units="mrad"), mask=vacuum)
    np.testing.assert_allclose(part.vector, 0, atol=1e-12)


def test_descan_of_disks_moving_with_the_scan():
    iy, ix = np.indices((9, 9))
    shifts = np.stack([iy - 4, 4 - ix], axis=-1)  # the beam walks linearly with the scan
    com = center_of_mass(shifted_disks(shifts), k_step_mrad=K_STEP)
    assert np.abs(com.vector).max() > 9
    np.testing.assert_allclose(remove_descan(com).vector, 0, atol=1e-9)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("rotation_deg", [-150.0, -37.0, 0.0, 23.5, 101.0, 180.0])
def test_find_rotation_recovers_rotation_and_transpose(rotation_deg, transpose):
    _, truth, centres = physical_field()
    # raw = what a rotated/transposed detector records: apply_rotation(raw, r, t) == truth
    raw = apply_rotation(apply_rotation(truth, -rotation_deg), 0.0, transpose)
    raw = COMMaps(com_y=raw.com_y, com_x=raw.com_x, units="mrad")
    found = find_rotation(raw)
    assert found.transpose == transpose
    error = (found.rotation_deg - rotation_deg + 180) % 360 - 180
    assert abs(error) < 1.0
    assert found.curl_fraction < 0.05 < found.curl_fraction_other
    fixed = apply_rotation(raw, found.rotation_deg, found.transpose)
    assert np.abs(fixed.vector - truth.vector).max() < 0.03 * np.abs(truth.vector).max()
    assert (fixed.rotation_deg, fixed.transposed) == (found.rotation_deg, transpose)
    # the divergence is negative at the atoms after the correction
    assert np.all(fixed.divergence()[centres[:, 0], centres[:, 1]] < 0)
    # atom positions give the same answer as the skewness rule
    assert find_rotation(raw, atoms_px=centres).rotation_deg == pytest.approx(found.rotation_deg)


def test_apply_rotation_composes_and_undoes():
    _, field, _ = physical_field()
    turned = apply_rotation(apply_rotation(field, 30.0, True), -50.0, True)
    direct = apply_rotation(field, -80.0)  # swap R(30) swap = R(-30)
    np.testing.assert_allclose(turned.vector, direct.vector, atol=1e-12)
    assert turned.rotation_deg == pytest.approx(-80.0) and not turned.transposed
    np.testing.assert_allclose(
        apply_rotation(field, 90.0).angle,
        np.angle(np.exp(1j * (field.angle + np.pi / 2))),
        atol=1e-9,
    )


@pytest.mark.parametrize("pad", ["mirror", "zero", "none"])
def test_icom_recovers_the_potential(pad):
    step_nm = 0.05
    v, gy, gx, centres = gaussian_potential()
    com = COMMaps(com_y=gy / step_nm, com_x=gx / step_nm, units="mrad", scan_step_nm=step_nm)
    icom = integrate_com(com, pad=pad)
    # peaks at the Gaussians' centres
    for cy, cx in centres:
        window = icom[cy - 4 : cy + 5, cx - 4 : cx + 5]
        assert np.unravel_index(window.argmax(), window.shape) == (4, 4)
    assert np.corrcoef(icom.ravel(), v.ravel())[0, 1] > 0.99
    if pad == "mirror":  # quantitative: V up to a constant, mrad x nm
        np.testing.assert_allclose(icom, v - v.mean(), atol=0.03 * v.max())
        np.testing.assert_allclose(com.icom, icom)
    # the iCOM of a pure ramp-free, rotated-by-180 field is the negative potential
    flipped = integrate_com(apply_rotation(com, 180.0), pad=pad)
    np.testing.assert_allclose(flipped, -icom, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def good_cube():
    return shifted_disks(np.zeros((2, 3, 2), int))


@pytest.mark.parametrize(
    "data, kwargs, message",
    [
        (np.ones((4, K, K)), {"units": "px"}, "4 axes"),
        (np.ones((1, 2, 3, K, K)), {"units": "px"}, "4 axes"),
        (good_cube(), {"k_step_mrad": (2.0, -2.5)}, "k_step_mrad must be a finite number"),
        (good_cube(), {}, "k_step_mrad"),
        (good_cube(), {"units": "1/Å", "k_step_mrad": 2.0}, "beam energy"),
        (good_cube(), {"units": "furlong"}, "units must be"),
        (good_cube(), {"units": "px", "origin": "axes"}, "origin='axes'"),
        (good_cube(), {"units": "px", "origin": "middle"}, "origin must be"),
        (good_cube(), {"units": "px", "mask": np.ones((3, 3))}, "mask must have"),
        (good_cube(), {"units": "px", "mask": np.zeros((K, K))}, "non-zero"),
        (good_cube(), {"units": "px", "mask": disk((3, 3), radius=2)}, "No positive intensity"),
        (good_cube(), {"units": "px", "threshold": 1.5}, "threshold"),
        (good_cube(), {"units": "px", "negative": "ignore"}, "negative must be"),
        (good_cube(), {"units": "px", "scan_step_nm": -1.0}, "scan_step_nm"),
    ],
)
def test_bad_arguments_raise_clear_errors(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        center_of_mass(data, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_are_refused(bad):
    data = good_cube()
    data[1, 2, 5, 5] = bad
    with pytest.raises(ValueError, match=r"NaN or inf in 1 of 6 patterns \(first at scan y=1, x=2"):
        center_of_mass(data, units="px")


def test_negative_counts_raise_by_default_and_can_be_clipped_or_kept():
    data = good_cube()
    data[0, 1, 0, 0] = -0.5
    with pytest.raises(ValueError, match="negative values.*negative='clip'"):
        center_of_mass(data, units="px")
    clipped = center_of_mass(data, units="px", negative="clip", origin=(24, 24))
    np.testing.assert_allclose(clipped.vector, 0, atol=1e-12)
    kept = center_of_mass(data, units="px", negative="keep", origin=(24, 24))
    total = data[0, 1].sum()
    np.testing.assert_allclose(kept.vector[0, 1], (-0.5 * -24 / total, -0.5 * -24 / total))


def test_empty_pattern_is_refused():
    data = good_cube()
    data[1, 0] = 0
    with pytest.raises(ValueError, match="No positive intensity in 1 of 6 .*y=1, x=0"):
        center_of_mass(data, units="px")


def test_uncalibrated_signals_are_refused_rectangular_ones_read():
    pytest.importorskip("hyperspy")
    from rrvae_nb.signals import Calibration, make_signal

    signal = make_signal(good_cube(), Calibration(scan_step_nm=0.02, k_step_mrad=K_STEP))
    with pytest.raises(ValueError, match="beam energy"):
        center_of_mass(signal, units="1/Å")
    with pytest.raises(ValueError, match="disagrees"):
        center_of_mass(signal, k_step_mrad=1.0)
    square = center_of_mass(signal, origin=(24, 24))
    signal.axes_manager.signal_axes[0].scale = 2 * K_STEP  # kx: rectangular pixels
    rect = center_of_mass(signal, origin=(24, 24))
    np.testing.assert_allclose(rect.com_y, square.com_y)
    np.testing.assert_allclose(rect.com_x, 2 * square.com_x)
    signal.axes_manager.signal_axes[0].scale = 0.0
    with pytest.raises(ValueError, match=r"diffraction axis 'kx' has scale 0.0"):
        center_of_mass(signal)  # used to divide by zero
    signal.axes_manager.signal_axes[0].scale = K_STEP
    signal.axes_manager.signal_axes[0].units = ""
    with pytest.raises(ValueError, match="uncalibrated"):
        center_of_mass(signal)


def test_find_rotation_refuses_tiny_or_broken_maps():
    with pytest.raises(ValueError, match="at least 5 x 5"):
        find_rotation(COMMaps(com_y=np.zeros((3, 3)), com_x=np.zeros((3, 3)), units="px"))
    _, field, _ = physical_field()
    broken = field.com_y.copy()
    broken[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        find_rotation(COMMaps(com_y=broken, com_x=field.com_x, units="mrad"))


# ------------------------------------------------------------------------------------------
# Physics on simulated graphene (abTEM multislice through rrvae_nb.simulate)
# ------------------------------------------------------------------------------------------

SCAN_GPTS = 24
SCAN_EXTENT_NM = 0.4  # 0.0167 nm steps around a Si dopant


@pytest.fixture(scope="module")
def graphene_si():
    """Noise-free 60 keV graphene with one Si dopant, 24 x 24 scan over 0.4 nm (a few s)."""
    pytest.importorskip("abtem")
    from rrvae_nb import simulate

    sim = simulate.graphene(("si",), scan_extent_nm=SCAN_EXTENT_NM, scan_gpts=SCAN_GPTS,
                            max_angle_mrad=40, progress=False)
    com = center_of_mass(sim.signal, origin="axes")  # the true zero angle of the simulation
    return sim, com


def nearest_atom(sim):
    """Vector (y, x) in nm from every probe position to its nearest atom, and that atom's Z."""
    step = sim.signal.axes_manager[0].scale
    iy, ix = np.indices((SCAN_GPTS, SCAN_GPTS))
    probe = np.stack([iy, ix], axis=-1) * step
    to_atoms = sim.atoms.positions_nm[None, None] - probe[:, :, None]  # (y, x, atoms, 2)
    nearest = np.linalg.norm(to_atoms, axis=-1).argmin(axis=-1)
    vector = np.take_along_axis(to_atoms, nearest[..., None, None], axis=2)[:, :, 0]
    return vector, sim.atoms.numbers[nearest]


@pytest.mark.slow
def test_graphene_com_points_towards_the_nearest_nucleus(graphene_si):
    sim, com = graphene_si
    vector, z = nearest_atom(sim)
    distance = np.linalg.norm(vector, axis=-1)
    near = (distance > 0.015) & (distance < 0.04)  # 0.15 - 0.4 Å from an atom
    assert near.sum() > 50 and (near & (z == 14)).sum() > 10
    cosine = (vector * com.vector).sum(-1) / (distance * com.magnitude)
    assert cosine[near].mean() >= 0.95
    # the heavier Si deflects the beam more than C at the same distances
    assert com.magnitude[near & (z == 14)].mean() > 1.4 * com.magnitude[near & (z == 6)].mean()
    # and the deflection is of the expected size: a fraction of a mrad to about 1 mrad
    assert 0.3 < com.magnitude[near & (z == 6)].mean() < 1.0 < com.magnitude.max() < 2.0


@pytest.mark.slow
def test_graphene_icom_and_divergence_mark_the_atoms(graphene_si):
    sim, com = graphene_si
    step = sim.signal.axes_manager[0].scale
    atoms_px = sim.atoms.positions_nm / step
    inside = np.all((atoms_px >= 2) & (atoms_px <= SCAN_GPTS - 3), axis=1)
    assert inside.sum() >= 4
    icom = com.icom
    assert np.unravel_index(icom.argmax(), icom.shape) == tuple(
        np.rint(atoms_px[sim.atoms.numbers == 14][0]).astype(int)
    )
    peaks = ndimage.maximum_filter(icom, size=5) == icom
    div = com.divergence()
    for y, x in np.rint(atoms_px[inside]).astype(int):
        assert peaks[y - 1 : y + 2, x - 1 : x + 2].any()  # an iCOM maximum within 1 px
        assert div[y, x] < 0  # a sink of the COM field
    # iCOM is in mrad x nm and positive on atoms relative to the mean
    assert all(icom[y, x] > 0 for y, x in np.rint(atoms_px[inside]).astype(int))


@pytest.mark.slow
def test_graphene_com_needs_no_rotation_and_a_rotated_one_is_recovered(graphene_si):
    _, com = graphene_si
    found = find_rotation(com)
    assert not found.transpose and abs(found.rotation_deg) < 1.0
    for rotation_deg, transpose in ((130.0, True), (-75.0, False)):
        raw = apply_rotation(apply_rotation(com, -rotation_deg), 0.0, transpose)
        raw = COMMaps(com_y=raw.com_y, com_x=raw.com_x, units="mrad")
        found = find_rotation(raw)
        assert found.transpose == transpose
        assert abs((found.rotation_deg - rotation_deg + 180) % 360 - 180) < 1.0


@pytest.mark.slow
def test_graphene_com_equals_abtem_com(graphene_si):
    abtem = pytest.importorskip("abtem")
    from abtem.core.axes import ScanAxis

    sim, com = graphene_si
    signal = sim.signal
    step_angstrom = signal.axes_manager[0].scale * 10
    k_step = signal.axes_manager.signal_axes[0].scale
    energy_kev = signal.metadata.Acquisition_instrument.TEM.beam_energy
    # abTEM: arrays (scan x, scan y, kx, ky) with zero angle at index n // 2 (fftshift=True),
    # sampling in 1/Å; COM as complex numbers x + i y in mrad, about the zero angle.
    patterns = abtem.DiffractionPatterns(
        signal.data.transpose(1, 0, 3, 2),
        sampling=k_step * 1e-3 / electron_wavelength_angstrom(energy_kev),
        fftshift=True,
        ensemble_axes_metadata=[ScanAxis(label=a, sampling=step_angstrom, units="Å")
                                for a in "xy"],
        metadata={"energy": energy_kev * 1e3},
    )
    reference = np.asarray(patterns.center_of_mass(units="mrad").array).T  # (scan y, scan x)
    np.testing.assert_allclose(com.com_x, reference.real, atol=1e-3)
    np.testing.assert_allclose(com.com_y, reference.imag, atol=1e-3)
    assert np.abs(reference).max() > 0.5  # compared real deflections, not zeros
    inverse = center_of_mass(signal, origin="axes", units="1/Å")
    reference = np.asarray(patterns.center_of_mass(units="1/Å").array).T
    np.testing.assert_allclose(inverse.com_x, reference.real, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(inverse.com_y, reference.imag, rtol=1e-4, atol=1e-6)


def test_rectangular_diffraction_pixels_scale_each_component():
    """A (ky, kx) pair of different steps used to be refused; each component has its step."""
    data = shifted_disks(np.random.default_rng(5).integers(-4, 5, size=(3, 4, 2)))
    px = center_of_mass(data, units="px", origin=(24, 24))
    mrad = center_of_mass(data, k_step_mrad=(2.0, 2.5), origin=(24, 24))
    np.testing.assert_allclose(mrad.com_y, 2.0 * px.com_y)
    np.testing.assert_allclose(mrad.com_x, 2.5 * px.com_x)


def test_rectangular_scan_steps_in_divergence_curl_icom_and_rotation():
    """Per-axis scan steps: derivatives in nm along each axis, rotation from a true curl."""
    sy, sx = 0.02, 0.035
    yy, xx = np.indices((40, 30), dtype=float)
    y, x = yy * sy, xx * sx
    centres = [(0.2, 0.3), (0.55, 0.7), (0.3, 0.85)]
    v = sum(np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 0.06**2)) for cy, cx in centres)
    gy, gx = np.gradient(v, sy, axis=0), np.gradient(v, sx, axis=1)
    truth = COMMaps(com_y=gy, com_x=gx, units="mrad", scan_step_nm=(sy, sx))
    assert truth.scan_steps_nm == (sy, sx)
    lap = np.gradient(gy, sy, axis=0) + np.gradient(gx, sx, axis=1)
    np.testing.assert_allclose(truth.divergence(), lap)
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(truth.curl()[inner]).max() < 0.02 * np.abs(truth.divergence()[inner]).max()
    icom = integrate_com(truth, pad="mirror")
    assert np.corrcoef(icom.ravel(), v.ravel())[0, 1] > 0.99
    raw = apply_rotation(truth, -30.0)
    found = find_rotation(raw)
    error = (found.rotation_deg - 30.0 + 180) % 360 - 180
    # in scan pixels the rectangular grid fakes a curl (fraction 0.21, angle 0.2 degrees off)
    assert abs(error) < 0.01 and not found.transpose and found.curl_fraction < 0.01
