"""Tests of rrvae_nb.simulate: calibration, physics, ground truth, noise, errors, shipped data.

All simulations here are small (a few to a hundred probe positions on coarse grids).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("abtem")
hs = pytest.importorskip("hyperspy.api")

from rrvae_nb import simulate as S  # noqa: E402
from rrvae_nb.signals import Calibration, calibration_of, make_signal  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data"
SMALL = dict(scan_gpts=8, scan_extent_nm=0.5, progress=False)  # 0.0625 nm steps


# ---------------------------------------------------------------------------- helpers


def k_grids(signal):
    ky = signal.axes_manager["ky"].axis
    kx = signal.axes_manager["kx"].axis
    return np.meshgrid(ky, kx, indexing="ij")


def com_mrad(signal):
    """Centre of mass (y, x) in mrad of every pattern, from the calibrated axes."""
    ky, kx = k_grids(signal)
    d = np.asarray(signal.data, dtype=float)
    total = d.sum(axis=(-1, -2))
    return (d * ky).sum(axis=(-1, -2)) / total, (d * kx).sum(axis=(-1, -2)) / total


def dark_field(signal, inner_mrad):
    ky, kx = k_grids(signal)
    return (np.asarray(signal.data) * (np.hypot(ky, kx) > inner_mrad)).sum(axis=(-1, -2))


def probe_grid(signal):
    y = signal.axes_manager["y"].axis
    x = signal.axes_manager["x"].axis
    return np.stack(np.meshgrid(y, x, indexing="ij"), axis=-1)  # (scan y, scan x, 2)


def nearest_probe(signal, position_nm):
    grid = probe_grid(signal)
    dist = np.hypot(*(grid - position_nm).transpose(2, 0, 1))
    index = np.unravel_index(np.argmin(dist), dist.shape)
    return index, dist[index]


def disk_radius_and_centre(pattern, signal):
    """Radius (mrad, from the area above half maximum) and centroid (mrad) of the BF disk."""
    ky, kx = k_grids(signal)
    step = signal.axes_manager["kx"].scale
    inside = pattern > pattern.max() / 2
    radius = np.sqrt(inside.sum() * step**2 / np.pi)
    return radius, (ky[inside].mean(), kx[inside].mean())


def same_calibration(a, b):
    fields = ("scan_step_nm", "k_step_mrad", "scan_offset_nm", "k_offset_mrad", "energy_kev",
              "convergence_mrad")
    return all(np.allclose(getattr(a, f), getattr(b, f), rtol=1e-9, atol=1e-12) for f in fields)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def si_sim():
    return S.graphene(("si",), **SMALL)


@pytest.fixture(scope="module")
def vacancy_sim():
    return S.graphene(("vacancy",), **SMALL)


@pytest.fixture(scope="module")
def manifest():
    return json.loads((DATA / "manifest.json").read_text())["datasets"]


# ---------------------------------------------------------------------------- calibration


def test_axes_units_and_metadata(si_sim):
    sig = si_sim.signal
    assert sig.data.ndim == 4 and sig.data.dtype == np.float32
    names = [ax.name for ax in sig.axes_manager.navigation_axes[::-1]]
    names += [ax.name for ax in sig.axes_manager.signal_axes[::-1]]
    assert names == ["y", "x", "ky", "kx"]  # array order (scan y, scan x, ky, kx)
    cal = calibration_of(sig)  # also checks square pixels
    assert cal.scan_step_nm == pytest.approx(0.5 / 8)
    assert cal.scan_offset_nm == (0.0, 0.0)
    assert cal.energy_kev == 60 and cal.convergence_mrad == 30
    # odd-sized patterns with 0 mrad exactly on the centre pixel
    n = sig.data.shape[-1]
    assert n % 2 == 1 and sig.data.shape[-2] == n
    assert sig.axes_manager["kx"].axis[n // 2] == pytest.approx(0.0, abs=1e-9)
    assert sig.axes_manager["ky"].axis[n // 2] == pytest.approx(0.0, abs=1e-9)
    # pixel size = wavelength / smallest supercell side (the 4 x 7 default, 1.70 nm in y)
    cell_nm = min(4 * np.sqrt(3), 7) * S.GRAPHENE_LATTICE_NM
    assert cal.k_step_mrad == pytest.approx(S._wavelength_nm(60) / cell_nm * 1e3, rel=1e-3)
    # nothing is lost outside the recorded angles for a thin sample: sums close to 1
    assert np.all(sig.data.sum(axis=(-1, -2)) > 0.99)
    assert json.loads(sig.metadata.Simulation.parameters_json)["defects"] == ["si"]
    assert sig.metadata.Sample.elements == ["C", "Si"]


def test_bright_field_disk_radius_and_centre(si_sim):
    sig = si_sim.signal
    step = sig.axes_manager["kx"].scale
    radius, (cy, cx) = disk_radius_and_centre(sig.data.mean(axis=(0, 1)), sig)
    assert abs(radius - 30.0) < step  # the convergence semi-angle, within a pixel
    assert abs(cy) < 0.1 * step and abs(cx) < 0.1 * step  # centred at 0 mrad


def test_com_points_towards_the_nearest_atom(si_sim):
    # COM of a CBED points towards the nuclei: checks the sign and the (y, x) order of both the
    # scan and the diffraction axes against the ground truth.
    sig, truth = si_sim.signal, si_sim.atoms
    com_y, com_x = com_mrad(sig)
    grid = probe_grid(sig)
    checked = agree = 0
    for i, j in np.ndindex(com_y.shape):
        to_atoms = truth.positions_nm - grid[i, j]
        dist = np.hypot(*to_atoms.T)
        k = np.argmin(dist)
        if 0.02 < dist[k] < 0.06:  # clearly off the atom, still in its own field
            checked += 1
            agree += com_y[i, j] * to_atoms[k, 0] + com_x[i, j] * to_atoms[k, 1] > 0
    assert checked >= 8
    assert agree == checked


# ---------------------------------------------------------------------------- ground truth


def test_si_substitution_sits_where_the_ground_truth_says(si_sim):
    sig, truth = si_sim.signal, si_sim.atoms
    assert truth.numbers[truth.is_defect].tolist() == [14]
    assert set(truth.numbers[~truth.is_defect]) == {6}
    si = truth.positions_nm[truth.is_defect][0]
    assert si == pytest.approx([0.25, 0.25], abs=1e-6)  # the default window is centred on it
    df = dark_field(sig, 40.0)
    si_index, si_dist = nearest_probe(sig, si)
    assert si_dist < 1e-6
    carbon_df = []
    for pos in truth.positions_nm[~truth.is_defect]:
        index, dist = nearest_probe(sig, pos)
        if dist < 0.02:
            carbon_df.append(df[index])
    assert len(carbon_df) >= 4
    assert df[si_index] > 2 * max(carbon_df)  # Z = 14 scatters far more than Z = 6
    assert df[si_index] == df.max()


def test_vacancy_removes_one_atom(vacancy_sim):
    truth = vacancy_sim.atoms
    pristine = S.ground_truth_from_recipe("graphene", dict(defects=[], scan_gpts=8,
                                                           scan_extent_nm=0.5))
    assert len(truth.numbers) == len(pristine.numbers) - 1
    assert truth.vacancies_nm.shape == (1, 2)
    vac = truth.vacancies_nm[0]
    assert vac == pytest.approx([0.25, 0.25], abs=1e-6)
    # the vacancy was a lattice site of pristine graphene, and no atom is left there
    assert np.min(np.hypot(*(pristine.positions_nm - vac).T)) < 1e-6
    assert np.min(np.hypot(*(truth.positions_nm - vac).T)) > 0.13
    assert not truth.is_defect.any()
    # physics: little scattering where the atom is missing
    sig = vacancy_sim.signal
    df = dark_field(sig, 40.0)
    vac_index, _ = nearest_probe(sig, vac)
    nearest = [nearest_probe(sig, p) for p in truth.positions_nm]
    carbon = [df[index] for index, dist in nearest if dist < 0.02]
    assert len(carbon) >= 4
    assert df[vac_index] < 0.5 * np.median(carbon)


def test_combined_defects_and_rebuilt_ground_truth():
    params = dict(defects=["vacancy", "si"], scan_gpts=2, scan_extent_nm=0.8, max_angle_mrad=40)
    sim = S.graphene(**params, progress=False)
    truth = sim.atoms
    assert truth.vacancies_nm.shape == (1, 2) and truth.is_defect.sum() == 1
    si = truth.positions_nm[truth.is_defect][0]
    # Si one rectangular cell (0.426 nm) from the vacancy along +y, both inside the window
    assert si - truth.vacancies_nm[0] == pytest.approx([np.sqrt(3) * 0.246, 0.0], abs=1e-6)
    assert np.all((si >= 0) & (si <= 0.8))
    rebuilt = S.ground_truth_from_recipe("rrvae_nb.simulate.graphene",
                                         sim.signal.metadata.Simulation.parameters_json)
    for key, value in truth.to_dict().items():
        np.testing.assert_array_equal(getattr(rebuilt, key), value)


def test_ground_truth_survives_hspy(si_sim, tmp_path):
    path = tmp_path / "si.hspy"
    si_sim.signal.deepcopy().save(path)
    loaded = hs.load(path)
    truth = S.ground_truth_of(loaded)
    for key, value in si_sim.atoms.to_dict().items():
        np.testing.assert_array_equal(getattr(truth, key), value)
    assert truth.is_defect.dtype == bool and truth.vacancies_nm.shape == (0, 2)
    assert same_calibration(calibration_of(loaded), calibration_of(si_sim.signal))
    np.testing.assert_array_equal(loaded.data, si_sim.signal.data)


def test_ground_truth_of_experimental_data_raises():
    sig = make_signal(np.ones((2, 2, 5, 5), np.float32), Calibration(0.1, 1.0))
    with pytest.raises(ValueError, match="no ground truth"):
        S.ground_truth_of(sig)


# ---------------------------------------------------------------------------- zincblende


@pytest.fixture(scope="module")
def zincblende_pair():
    # a 4 x 4 scan with steps of a / 8 puts probes exactly on both columns of the centre dumbbell
    a = S.ZINCBLENDE_LATTICE_NM["ZnS"]
    kwargs = dict(supercell=(2, 1), scan_gpts=4, scan_extent_nm=a / 2, sampling_nm=0.01,
                  max_angle_mrad=50, progress=False)
    return S.zincblende_110("ZnS", 0.4, **kwargs), S.zincblende_110("ZnS", 1.2, **kwargs)


def test_zincblende_thickness_changes_slices_and_result(zincblende_pair):
    thin, thick = zincblende_pair
    repeat = S.ZINCBLENDE_LATTICE_NM["ZnS"] / np.sqrt(2)
    assert thin.signal.metadata.Sample.thickness_nm == pytest.approx(repeat)
    assert thick.signal.metadata.Sample.thickness_nm == pytest.approx(3 * repeat)
    n_thin = thin.signal.metadata.Simulation.num_slices
    n_thick = thick.signal.metadata.Simulation.num_slices
    assert n_thick > n_thin >= 1
    assert thin.signal.data.shape == thick.signal.data.shape
    assert np.abs(thick.signal.data - thin.signal.data).max() > 1e-3
    # a thicker crystal scatters more electrons out of the bright-field disk
    assert dark_field(thick.signal, 30).mean() > dark_field(thin.signal, 30).mean()


def test_zincblende_dumbbell_polarity(zincblende_pair):
    thin = zincblende_pair[0]
    truth = thin.atoms
    assert set(truth.numbers) == {16, 30}
    centre = np.full(2, S.ZINCBLENDE_LATTICE_NM["ZnS"] / 4)  # middle of the a / 2 window
    near = np.argsort(np.hypot(*(truth.positions_nm - centre).T))[:2]
    pair = truth.positions_nm[near]
    # a cation and an anion column a / 4 apart along y ([001])
    assert sorted(truth.numbers[near]) == [16, 30]
    assert np.abs(pair[0] - pair[1]) == pytest.approx([0.541 / 4, 0.0], abs=1e-6)
    df = dark_field(thin.signal, 30.0)  # outside the 25 mrad disk
    zn = pair[truth.numbers[near] == 30][0]
    s = pair[truth.numbers[near] == 16][0]
    (zn_index, zn_dist), (s_index, s_dist) = nearest_probe(thin.signal, zn), nearest_probe(
        thin.signal, s)
    assert zn_dist < 1e-6 and s_dist < 1e-6
    assert df[zn_index] > df[s_index]  # Z = 30 scatters more than Z = 16


def test_zincblende_frozen_phonons(zincblende_pair):
    """frozen_phonons averages seeded abTEM FrozenPhonons configurations, recorded."""
    static = zincblende_pair[1]
    a = S.ZINCBLENDE_LATTICE_NM["ZnS"]
    kwargs = dict(supercell=(2, 1), scan_gpts=4, scan_extent_nm=a / 2, sampling_nm=0.01,
                  max_angle_mrad=50, progress=False)
    hot = S.zincblende_110("ZnS", 1.2, frozen_phonons=2, phonon_sigma_nm=0.02, **kwargs)
    params = json.loads(hot.signal.metadata.Simulation.parameters_json)
    assert params["frozen_phonons"] == 2 and params["phonon_sigma_nm"] == 0.02
    assert "2 frozen-phonon configurations" in hot.signal.metadata.General.title
    assert hot.signal.data.shape == static.signal.data.shape
    # same seed, same configurations: reproducible
    again = S.zincblende_110("ZnS", 1.2, frozen_phonons=2, phonon_sigma_nm=0.02, **kwargs)
    np.testing.assert_array_equal(hot.signal.data, again.signal.data)
    # the vibrating atoms change the patterns (not the static crystal under another name)
    assert np.abs(hot.signal.data - static.signal.data).max() > 1e-3


def test_gaas_option_ground_truth():
    truth = S.ground_truth_from_recipe("zincblende_110", dict(material="GaAs", thickness_nm=1.0))
    assert set(truth.numbers) == {31, 33}
    a = S.ZINCBLENDE_LATTICE_NM["GaAs"]
    ga = truth.positions_nm[truth.numbers == 31]
    ga = ga[np.all((ga >= 0) & (ga <= 0.8), axis=1)]  # inside the default 0.8 nm window
    as_ = truth.positions_nm[truth.numbers == 33]
    assert len(ga) >= 4
    nearest = np.min(np.hypot(*(ga[:, None] - as_[None]).transpose(2, 0, 1)), axis=1)
    assert nearest == pytest.approx(np.full(len(ga), a / 4), abs=1e-6)


# ---------------------------------------------------------------------------- dose, source, jitter


@pytest.fixture(scope="module")
def dose_pair():
    kwargs = dict(supercell=(3, 5), scan_gpts=4, scan_extent_nm=0.2, max_angle_mrad=40,
                  progress=False)
    clean = S.graphene(("si",), **kwargs)
    noisy = S.graphene(("si",), electrons_per_pattern=2000, seed=1, **kwargs)
    return clean, noisy, kwargs


def test_dose_gives_poisson_counts_with_the_requested_mean(dose_pair):
    clean, noisy, _ = dose_pair
    dose = 2000
    counts = noisy.signal.data
    assert counts.dtype == np.float32
    assert np.all(counts >= 0) and np.array_equal(counts, np.round(counts))
    assert noisy.signal.metadata.Signal.quantity == "Counts (electrons)"
    expected = clean.signal.data.astype(float) * dose
    # total counts: mean dose x captured fraction, within 5 sigma of Poisson noise
    total, mean_total = counts.sum(), expected.sum()
    assert abs(total - mean_total) < 5 * np.sqrt(mean_total)
    per_pattern = counts.sum(axis=(-1, -2)).mean()
    assert per_pattern == pytest.approx(dose, rel=0.05)
    # Poisson: variance equals the mean (normalised squared residuals average to 1)
    mask = expected > 0.5
    dispersion = ((counts[mask] - expected[mask]) ** 2 / expected[mask]).mean()
    assert dispersion == pytest.approx(1.0, abs=0.1)


def test_dose_is_seeded(dose_pair):
    _, noisy, kwargs = dose_pair
    again = S.graphene(("si",), electrons_per_pattern=2000, seed=1, **kwargs)
    other = S.graphene(("si",), electrons_per_pattern=2000, seed=2, **kwargs)
    np.testing.assert_array_equal(again.signal.data, noisy.signal.data)
    assert not np.array_equal(other.signal.data, noisy.signal.data)


def test_source_size_blurs_across_the_scan(si_sim):
    blurred = S.graphene(("si",), source_size_nm=0.03, **SMALL)
    sharp_df, blur_df = dark_field(si_sim.signal, 40), dark_field(blurred.signal, 40)
    assert blur_df.std() < 0.8 * sharp_df.std()  # partial coherence lowers the contrast
    assert blur_df.max() < sharp_df.max()
    # intensity is redistributed between positions, not lost
    np.testing.assert_allclose(blurred.signal.data.sum(axis=(-1, -2)),
                               si_sim.signal.data.sum(axis=(-1, -2)), atol=2e-3)
    for key, value in si_sim.atoms.to_dict().items():
        np.testing.assert_array_equal(getattr(blurred.atoms, key), value)


def test_emulated_experiment_camera_dose_and_jitter():
    kwargs = dict(supercell=(4, 7), scan_gpts=4, fov_nm=0.2, camera_px=64, camera_binning=2,
                  electrons_per_pattern=1e4, jitter_nm=0.01, seed=3, progress=False)
    sim = S.emulate_graphene_experiment(("vacancy",), **kwargs)
    sig = sim.signal
    assert sig.data.shape == (4, 4, 32, 32)
    cal = calibration_of(sig)
    assert cal.k_step_mrad == pytest.approx(2 * 36.0 / 64 * 2)
    # zero angle at the camera's geometric centre, between the two middle pixels
    assert cal.k_offset_mrad[0] == pytest.approx(-15.5 * cal.k_step_mrad)
    counts = sig.data
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 0
    assert counts.sum(axis=(-1, -2)).mean() == pytest.approx(1e4, rel=0.03)
    radius, (cy, cx) = disk_radius_and_centre(counts.mean(axis=(0, 1)), sig)
    assert abs(radius - 30) < cal.k_step_mrad
    assert abs(cy) < 0.25 * cal.k_step_mrad and abs(cx) < 0.25 * cal.k_step_mrad
    assert 2 * radius / (32 * cal.k_step_mrad) > 0.75  # the disk fills most of the camera
    # jitter: true probe positions scatter about the nominal grid by about jitter_nm
    offsets = sim.atoms.probe_positions_nm - probe_grid(sig)
    assert 0.5 * 0.01 < offsets.std() < 2 * 0.01
    assert sim.atoms.vacancies_nm[0] == pytest.approx([0.1, 0.1], abs=1e-6)
    rebuilt = S.ground_truth_from_recipe("emulate_graphene_experiment",
                                         sig.metadata.Simulation.parameters_json)
    np.testing.assert_array_equal(rebuilt.probe_positions_nm, sim.atoms.probe_positions_nm)


#: a tiny emulated scan: 10 x 10 positions over 0.4 nm, a 64-pixel camera binned 2 x 2
TINY_EXPERIMENT = dict(supercell=(4, 7), scan_gpts=10, fov_nm=0.4, camera_px=64,
                       camera_binning=2, seed=5, progress=False)


def test_emulated_scan_rotation_is_what_find_rotation_finds():
    from rrvae_nb import com

    kwargs = dict(TINY_EXPERIMENT, electrons_per_pattern=1e7)  # nearly noise-free
    straight = S.emulate_graphene_experiment(("si",), **kwargs)
    turned = S.emulate_graphene_experiment(("si",), scan_rotation_deg=30.0, **kwargs)
    c0 = com.center_of_mass(straight.signal, progress=False)
    c30 = com.center_of_mass(turned.signal, progress=False)
    # the camera turns every pattern, so the COM turns clockwise on screen by 30 degrees:
    # apply_rotation(+30) turns it back onto the straight camera's COM
    back = com.apply_rotation(c30, 30.0)
    scale = np.abs(c0.vector).max()
    np.testing.assert_allclose(back.vector, c0.vector, atol=0.05 * scale)
    assert np.abs(c30.vector - c0.vector).max() > 0.3 * scale  # the turn is not negligible
    found = com.find_rotation(c30)
    assert not found.transpose and found.rotation_deg == pytest.approx(30.0, abs=3.0)
    assert com.find_rotation(c0).rotation_deg == pytest.approx(0.0, abs=3.0)
    # electrons are kept by the turn: the camera's corners see up to sqrt 2 x 36 mrad
    np.testing.assert_allclose(turned.signal.data.sum(axis=(-1, -2)),
                               straight.signal.data.sum(axis=(-1, -2)), rtol=0.01)


def test_emulated_gain_and_read_noise_set_the_statistics():
    # 1 electron per pattern: nearly every pixel is empty, so what remains is read-out noise
    dark = S.emulate_graphene_experiment(("si",), electrons_per_pattern=1.0, camera_gain=2.0,
                                         read_noise=0.5, **TINY_EXPERIMENT)
    d = dark.signal.data
    assert np.array_equal(d, np.round(d))  # digitised to whole detector units
    assert d.min() < 0  # dark-subtracted: the noise dips below zero
    # 0.5 units per camera pixel, summed over 2 x 2 pixels: sigma 1.0 per stored pixel (+1/12
    # from the digitiser's rounding)
    assert d.std() == pytest.approx(np.sqrt(1.0 + 1 / 12), rel=0.05)
    assert dark.signal.metadata.Signal.quantity.startswith("Detector units")
    # the gain: with no read noise every stored value is 2 x an electron count
    bright = S.emulate_graphene_experiment(("si",), electrons_per_pattern=1e4, camera_gain=2.0,
                                           **TINY_EXPERIMENT)
    b = bright.signal.data
    assert np.array_equal(b % 2, np.zeros_like(b))
    assert b.sum(axis=(-1, -2)).mean() == pytest.approx(2e4, rel=0.03)


def test_emulated_camera_psf_is_normalised_with_its_tail():
    kernel = S._camera_psf(dict(camera_psf_px=1.0, camera_psf_tail=0.2, camera_psf_tail_px=4.0))
    assert kernel.sum() == pytest.approx(1.0)
    c = kernel.shape[0] // 2
    r = np.hypot(*np.meshgrid(np.arange(kernel.shape[0]) - c, np.arange(kernel.shape[0]) - c))
    # beyond 4 sigma of the core only the tail is left: most of its 20 %
    assert 0.1 < kernel[r > 4].sum() < 0.2
    assert S._camera_psf({}) is None


def test_emulated_drift_moves_the_probe_positions_as_stated():
    lin, quad = (0.02, -0.03), (0.01, 0.005)
    params = dict(TINY_EXPERIMENT, electrons_per_pattern=1e4, jitter_nm=0.0, drift_nm=lin,
                  drift_quadratic_nm=quad)
    params.pop("progress")
    truth = S.ground_truth_from_recipe("emulate_graphene_experiment", params)
    n = 10
    step = 0.4 / n
    nominal = np.stack(np.meshgrid(np.arange(n) * step, np.arange(n) * step, indexing="ij"), -1)
    t = (np.arange(n * n) / (n * n)).reshape(n, n, 1)  # row by row over the frame
    np.testing.assert_allclose(truth.probe_positions_nm - nominal,
                               np.asarray(lin) * t + np.asarray(quad) * t**2, atol=1e-12)


def test_emulated_si_height_changes_patterns_near_the_si_only_slightly():
    # nearly noise-free, on a perfect grid, so that only the Si's height differs
    kwargs = dict(TINY_EXPERIMENT, scan_gpts=12, fov_nm=0.6, electrons_per_pattern=1e10,
                  jitter_nm=0.0, source_size_nm=0.0)
    flat = S.emulate_graphene_experiment(("si",), **kwargs)
    raised = S.emulate_graphene_experiment(("si",), si_height_nm=0.1, **kwargs)
    assert flat.signal.metadata.Simulation.num_slices == 1
    assert raised.signal.metadata.Simulation.num_slices == 2  # carbon, then 0.1 nm on, the Si
    a = flat.signal.data.astype(float)
    change = np.abs(raised.signal.data - a).sum(axis=(-1, -2)) / a.sum(axis=(-1, -2))
    si = raised.atoms.positions_nm[raised.atoms.numbers == 14][0]
    r = np.hypot(*np.moveaxis(probe_grid(raised.signal) - si, -1, 0))
    # the wave travels 0.1 nm between the carbon plane and the Si: far less than the probe's
    # depth of field (about 10 nm), so the patterns change by well under 1 % ...
    assert change.max() < 0.01
    # ... and where the probe meets the Si: fails if the height changed nothing, or everything
    assert change[r < 0.1].mean() > 3 * change[r > 0.3].mean() > 0
    # the ground truth (x, y) is the same, and rebuilt from the parameters
    np.testing.assert_allclose(raised.atoms.positions_nm, flat.atoms.positions_nm)


def test_emulated_haadf_is_z_contrast_and_leaves_the_patterns_alone():
    kwargs = dict(TINY_EXPERIMENT, electrons_per_pattern=1e6)
    plain = S.emulate_graphene_experiment(("si",), **kwargs)
    both = S.emulate_graphene_experiment(("si",), haadf_inner_mrad=80.0, haadf_outer_mrad=160.0,
                                         **kwargs)
    assert plain.haadf is None
    # the HAADF's counts come from a random stream of their own: the 4D data are unchanged
    np.testing.assert_array_equal(both.signal.data, plain.signal.data)
    image = both.haadf
    assert image.data.shape == both.signal.data.shape[:2]
    assert [a.units for a in image.axes_manager.signal_axes] == ["nm", "nm"]
    assert image.axes_manager[0].scale == pytest.approx(calibration_of(both.signal).scan_step_nm)
    h = image.data.astype(float)
    assert np.array_equal(h, np.round(h)) and h.min() >= 0  # electron counts
    # Z contrast: at the Si (Z = 14) the annulus counts several times what it counts at the
    # carbon atoms (Z = 6); (14 / 6)^1.6 = 3.9
    truth = both.atoms
    at = {z: np.mean([h[nearest_probe(both.signal, p)[0]] for p in truth.positions_nm
                      [truth.numbers == z] if nearest_probe(both.signal, p)[1] < 0.02])
          for z in (6, 14)}
    assert 3.0 < at[14] / at[6] < 6.0, at
    # a small share of the beam reaches 80-160 mrad from a monolayer
    assert 0 < h.mean() / 1e6 < 0.01


def test_emulated_aberrations_reach_abtem_in_its_units():
    ab = S._aberrations(dict(defocus_nm=2.0, astigmatism_nm=1.0, astigmatism_angle_deg=90.0,
                             coma_nm=30.0, coma_angle_deg=0.0))
    assert ab == pytest.approx(dict(C10=-20.0, C12=10.0, phi12=np.pi / 2, C21=300.0, phi21=0.0))


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: S.graphene(energy_kev=0), "energy_kev must be a positive"),
        (lambda: S.graphene(energy_kev=-60), "beam energy in keV"),
        (lambda: S.graphene(convergence_mrad=float("nan")), "convergence_mrad"),
        (lambda: S.graphene(scan_gpts=0), "scan_gpts must be a whole number"),
        (lambda: S.graphene(scan_extent_nm=-1), "scan_extent_nm must be a positive"),
        (lambda: S.graphene(supercell=(0, 3)), "supercell"),
        (lambda: S.graphene(defects=("carbon",)), "Unknown graphene defect"),
        (lambda: S.graphene(scan_extent_nm=3.0), "outside the simulated supercell"),
        (lambda: S.graphene(scan_center_nm=(0.1, 0.1)), "larger supercell"),
        (lambda: S.graphene(scan_center_nm=(float("nan"), 0.8)), "finite numbers"),
        (lambda: S.graphene(scan_extent_nm=(1.0, 0.5), scan_gpts=10), "square"),
        (lambda: S.graphene(max_angle_mrad=200), "Use sampling_nm <="),
        (lambda: S.graphene(max_angle_mrad=25), "must exceed convergence_mrad"),
        (lambda: S.graphene(detector_binning=3), "multiple of it"),
        (lambda: S.graphene(detector_px=1), "detector_px"),
        (lambda: S.graphene(electrons_per_pattern=-5), "electrons_per_pattern"),
        (lambda: S.graphene(source_size_nm=-0.1), "source_size_nm"),
        (lambda: S.graphene(jitter_nm=float("inf")), "jitter_nm"),
        (lambda: S.graphene(seed=1.5), "seed must be an integer"),
        (lambda: S.graphene(defects=("si",) * 3, supercell=(4, 7)), "larger supercell"),
        (lambda: S.zincblende_110("ZnTe"), "Unknown zincblende material"),
        (lambda: S.zincblende_110(thickness_nm=0), "thickness_nm must be a positive"),
        (lambda: S.zincblende_110(thickness_nm=-2), "crystal thickness in nm"),
        (lambda: S.zincblende_110(thickness_nm=0.1), "below one"),
        (lambda: S.zincblende_110(slice_thickness_nm=0), "slice_thickness_nm"),
        (lambda: S.zincblende_110(frozen_phonons=-1), "frozen_phonons"),
        (lambda: S.zincblende_110(frozen_phonons=4, phonon_sigma_nm=0), "phonon_sigma_nm"),
        (lambda: S.emulate_graphene_experiment(electrons_per_pattern=None), "finite dose"),
        (lambda: S.emulate_graphene_experiment(camera_px=100, camera_binning=8), "multiple"),
        (lambda: S.emulate_graphene_experiment(fov_nm=0), "fov_nm"),
        (lambda: S.emulate_graphene_experiment(camera_gain=0), "camera_gain must be positive"),
        (lambda: S.emulate_graphene_experiment(camera_psf_tail=1.0), "camera_psf_tail"),
        (lambda: S.emulate_graphene_experiment(camera_psf_tail=0.1), "camera_psf_tail_px"),
        (lambda: S.emulate_graphene_experiment(read_noise=-1), "read_noise"),
        (lambda: S.emulate_graphene_experiment(drift_nm=(float("nan"), 0)), "drift_nm"),
        (lambda: S.emulate_graphene_experiment(scan_rotation_deg="a"), "scan_rotation_deg"),
        (lambda: S.emulate_graphene_experiment(camera_px=None, scan_rotation_deg=10),
         "need camera_px"),
        (lambda: S.emulate_graphene_experiment(si_height_nm=0.5), "si_height_nm"),
        (lambda: S.emulate_graphene_experiment(si_height_nm=-0.1), "si_height_nm"),
        (lambda: S.emulate_graphene_experiment(haadf_inner_mrad=40, haadf_outer_mrad=160),
         "outside the camera"),
        (lambda: S.emulate_graphene_experiment(haadf_inner_mrad=80), "outside the camera"),
        (lambda: S.emulate_graphene_experiment(haadf_inner_mrad=80, haadf_outer_mrad=250),
         "finer sampling_nm"),
        (lambda: S.ground_truth_from_recipe("graphite", {}), "Unknown recipe"),
    ],
)
def test_bad_parameters_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_missing_abtem_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "abtem", None)
    with pytest.raises(ImportError, match=r"rrvae-nb\[sim\]"):
        S.graphene(scan_gpts=2)


# ---------------------------------------------------------------------------- shipped data


def test_manifest_entries_match_files_and_recipes(manifest):
    assert manifest, "data/manifest.json lists no datasets; run data/make_data.py"
    for name, entry in manifest.items():
        path = DATA / entry["file"]
        assert path.is_file(), name
        assert path.stat().st_size == entry["size"], name
        assert sha256(path) == entry["sha256"], name
        assert entry["size"] < 8.5e6, name  # shipped files stay small
        assert entry["format"] in ("hspy", "ndata1") and path.suffix == "." + entry["format"]
        recipe = entry["recipe"].removeprefix("rrvae_nb.simulate.")
        assert recipe in S.RECIPES, name
        inspect.signature(getattr(S, recipe)).bind(**entry["params"])  # exact keyword arguments
        assert entry["seed"] == entry["params"].get("seed"), name
        assert entry["description"], name


def test_tiny_reference_regenerates(manifest):
    entry = manifest["graphene_tiny_reference"]
    reference = hs.load(DATA / entry["file"])
    recipe = getattr(S, entry["recipe"].removeprefix("rrvae_nb.simulate."))
    sim = recipe(**entry["params"], progress=False)
    assert same_calibration(calibration_of(sim.signal), calibration_of(reference))
    # float round-off may differ between machines; the physics may not
    np.testing.assert_allclose(sim.signal.data, reference.data, rtol=1e-4,
                               atol=1e-6 * float(reference.data.max()))
    truth = S.ground_truth_of(reference)
    for key, value in truth.to_dict().items():
        np.testing.assert_allclose(getattr(sim.atoms, key), value, atol=1e-9)


def test_shipped_experiment_has_a_rebuildable_ground_truth(manifest):
    from rrvae_nb import datasets

    sig = datasets.load("graphene_vacancy_experiment")
    truth = S.ground_truth_of(sig)  # rebuilt from the recipe: .ndata1 cannot store it
    ny, nx = sig.data.shape[:2]
    assert truth.probe_positions_nm.shape == (ny, nx, 2)
    fov = manifest["graphene_vacancy_experiment"]["params"]["fov_nm"]
    np.testing.assert_allclose(truth.vacancies_nm, [[fov / 2, fov / 2]], atol=1e-6)
    assert calibration_of(sig).scan_step_nm == pytest.approx(fov / ny)
    # the vacancy shows: least dark-field-like scattering (outside 20 mrad) close to it
    df = dark_field(sig, 20.0).astype(float)
    vac_index, _ = nearest_probe(sig, truth.vacancies_nm[0])
    carbon = [df[nearest_probe(sig, p)[0]] for p in truth.positions_nm
              if nearest_probe(sig, p)[1] < 0.01]
    assert df[vac_index] < np.median(carbon)


def test_shipped_haadf_images_show_the_defects_by_z_contrast(manifest):
    from rrvae_nb import datasets

    for kind in ("pristine", "vacancy", "si"):
        entry = manifest[f"graphene_{kind}_experiment_haadf"]
        # recorded in the same run as the patterns: the same recipe and parameters
        assert entry["params"] == manifest[f"graphene_{kind}_experiment"]["params"]
        assert entry["params"]["haadf_inner_mrad"] == 80 and entry["channel"] == "haadf"
    for kind, z_sign in (("vacancy", -1), ("si", 1)):
        sig = datasets.load(f"graphene_{kind}_experiment")
        image = datasets.load(f"graphene_{kind}_experiment_haadf")
        assert image.data.shape == sig.data.shape[:2]
        assert image.axes_manager[0].units == "nm"
        assert image.axes_manager[0].scale == pytest.approx(calibration_of(sig).scan_step_nm)
        truth = S.ground_truth_of(sig)
        h = image.data.astype(float)
        carbon = [h[nearest_probe(sig, p)[0]] for p in truth.positions_nm[truth.numbers == 6]
                  if nearest_probe(sig, p)[1] < 0.01]
        site = truth.positions_nm[truth.is_defect][0] if z_sign > 0 else truth.vacancies_nm[0]
        at_defect = h[nearest_probe(sig, site)[0]]
        # the Si (Z = 14) is brighter than every carbon atom, the vacancy darker than the
        # median one (single positions, a few electrons each: Poisson noise)
        if z_sign > 0:
            assert at_defect > max(carbon)
        else:
            assert at_defect < np.median(carbon)


# ---------------------------------------------------------------------------- hBN


def test_hexagonal_bn_defects_ground_truth_and_physics():
    sim = S.hexagonal_bn(("vacancy", "carbon"), scan_gpts=10, scan_extent_nm=0.6,
                         progress=False)
    sig, truth = sim.signal, sim.atoms
    cal = calibration_of(sig)
    assert cal.energy_kev == 80 and cal.convergence_mrad == 25
    assert sig.metadata.Sample.elements == ["B", "C", "N"]
    assert set(truth.numbers[~truth.is_defect]) == {5, 7}
    assert truth.numbers[truth.is_defect].tolist() == [6]
    assert truth.vacancies_nm.shape == (1, 2)
    # the vacancy was a boron site, the carbon sits on a boron site 0.434 nm further along +y
    boron = truth.positions_nm[truth.numbers == 5]
    d_bb = np.sort(np.hypot(*(boron - boron[0]).T))[1]
    assert d_bb == pytest.approx(S.HBN_LATTICE_NM, abs=1e-6)  # B-B: one lattice constant
    carbon = truth.positions_nm[truth.is_defect][0]
    assert carbon - truth.vacancies_nm[0] == pytest.approx([np.sqrt(3) * S.HBN_LATTICE_NM, 0.0],
                                                           abs=1e-6)
    # the recipe's ground truth is rebuilt from its parameters
    again = S.ground_truth_of(sig)
    np.testing.assert_allclose(again.positions_nm, truth.positions_nm)
    # physics: N (Z = 7) scatters to high angles more than B (Z = 5); the vacancy least
    df = dark_field(sig, 35.0)
    site_df = {}
    for z in (5, 7):
        vals = [df[idx] for p in truth.positions_nm[truth.numbers == z]
                for idx, d in [nearest_probe(sig, p)] if d < 0.02]
        site_df[z] = np.mean(vals)
    assert site_df[7] > site_df[5]
    vac_index, vac_d = nearest_probe(sig, truth.vacancies_nm[0])
    if vac_d < 0.04:
        assert df[vac_index] < site_df[5]
    with pytest.raises(ValueError, match="Unknown hBN defect"):
        S.hexagonal_bn(("si",), **SMALL)


def test_settings_objects_and_flat_keywords_give_the_same_data():
    flat = S.graphene(("si",), scan_gpts=4, scan_extent_nm=0.2, max_angle_mrad=40,
                      electrons_per_pattern=500, jitter_nm=0.01, seed=2, progress=False)
    grouped = S.graphene(("si",), camera=S.Camera(max_angle_mrad=40, electrons_per_pattern=500),
                         scan=S.Scan(gpts=4, extent_nm=0.2, jitter_nm=0.01), seed=2,
                         progress=False)
    np.testing.assert_array_equal(flat.signal.data, grouped.signal.data)
    assert flat.signal.metadata.Simulation.parameters_json == \
        grouped.signal.metadata.Simulation.parameters_json
    # flat keywords override the objects' fields
    mixed = S.graphene(("si",), scan=S.Scan(gpts=4, extent_nm=0.2, jitter_nm=0.01),
                       max_angle_mrad=40, electrons_per_pattern=500, seed=2, progress=False)
    np.testing.assert_array_equal(flat.signal.data, mixed.signal.data)
    assert S.RECIPE_DEFAULTS["hexagonal_bn"].optics.energy_kev == 80.0
    with pytest.raises(TypeError, match="unexpected keyword argument 'energy'"):
        S.graphene(energy=60)
    with pytest.raises(TypeError, match="optics must be a rrvae_nb.simulate.Optics"):
        S.graphene(optics={"energy_kev": 60})
