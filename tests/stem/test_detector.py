"""Tests of rrvae_nb.detector: scattering angles and virtual annular detectors."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from rrvae_nb import datasets, simulate
from rrvae_nb.detector import annular_image, scattering_angle_mrad
from rrvae_nb.metrics import nearest_site
from rrvae_nb.signals import Calibration, calibration_of, make_signal

K = 33                     # pattern size (ky = kx), calibrated k = 0 on pixel (16, 16)
STEP = 0.7                 # mrad per diffraction pixel
CAL = Calibration(scan_step_nm=0.02, k_step_mrad=STEP, k_offset_mrad=(-16 * STEP, -16 * STEP))
SCAN = (5, 6)              # (scan y, scan x)
# ring limits in pixels chosen so that no pixel centre lies on a boundary (r^2 = 20.25, 56.25)
R_DISK, R_RING = 4.5, 7.5


def zones(centre=(16, 16), shape=(K, K)):
    """Integer zone of every pixel by brute force: 0 disk, 1 ring, 2 beyond (squared distances)."""
    out = np.empty(shape, dtype=int)
    for i in range(shape[0]):
        for j in range(shape[1]):
            d2 = (i - centre[0]) ** 2 + (j - centre[1]) ** 2
            out[i, j] = 0 if d2 < R_DISK**2 else (1 if d2 < R_RING**2 else 2)
    return out


def ring_data(rng, centre=(16, 16)):
    """(scan y, scan x, ky, kx) float64 patterns with a random value per zone and position.

    Returns the data and the (3, scan y, scan x) values of the disk, ring and outer zone.
    """
    z = zones(centre)
    values = np.stack([rng.uniform(50, 100, SCAN), rng.uniform(1, 3, SCAN),
                       rng.uniform(0.1, 0.5, SCAN)])
    data = np.take(values, z, axis=0)                 # (ky, kx, scan y, scan x)
    return np.moveaxis(data, (0, 1), (2, 3)).copy(), values


def n_pixels(zone, centre=(16, 16)):
    return int(np.count_nonzero(zones(centre) == zone))


# ---------------------------------------------------------------- scattering_angle_mrad


def test_scattering_angle_is_zero_at_calibrated_centre_and_grows_by_one_step_per_pixel():
    cal = Calibration(scan_step_nm=0.1, k_step_mrad=STEP, k_offset_mrad=(-16 * STEP, -9 * STEP))
    a = scattering_angle_mrad(cal, (K, 21))           # k = 0 on pixel (16, 9): axes not mixed
    assert a.shape == (K, 21)
    assert a[16, 9] == pytest.approx(0, abs=1e-12)
    assert np.unravel_index(np.argmin(a), a.shape) == (16, 9)
    np.testing.assert_allclose(np.diff(a[16, 9:]), STEP)        # along the row, outwards
    np.testing.assert_allclose(np.diff(a[16:, 9]), STEP)        # down the column
    assert a[16 + 3, 9 + 4] == pytest.approx(5 * STEP)          # a 3-4-5 triangle
    assert a[0, 0] == pytest.approx(np.hypot(16, 9) * STEP)


def test_scattering_angle_about_a_given_centre():
    a = scattering_angle_mrad(CAL, (K, K), centre_px=(3.5, 20.0))
    assert a[3, 20] == pytest.approx(0.5 * STEP)
    assert a[4, 20] == pytest.approx(0.5 * STEP)
    assert a[3, 24] == pytest.approx(np.hypot(0.5, 4) * STEP)
    # the calibration's offset plays no part once a centre is given
    shifted = Calibration(scan_step_nm=0.02, k_step_mrad=STEP, k_offset_mrad=(5.0, -3.0))
    np.testing.assert_array_equal(scattering_angle_mrad(shifted, (K, K), (3.5, 20.0)), a)


@pytest.mark.parametrize(("shape", "centre", "match"), [
    ((K,), None, "two integers"),
    ((0, K), None, "two positive integers"),
    ((K, K), (1.0, np.nan), "two finite numbers"),
    ((K, K), (1.0, 2.0, 3.0), "two finite numbers"),
])
def test_scattering_angle_rejects_bad_input(shape, centre, match):
    with pytest.raises(ValueError, match=match):
        scattering_angle_mrad(CAL, shape, centre)


def test_scattering_angle_rejects_bad_pixel_size():
    with pytest.raises(ValueError, match="k_step_mrad: the ky step must be a finite number > 0"):
        Calibration(scan_step_nm=0.02, k_step_mrad=-1.0)  # refused where it is made
    with pytest.raises(TypeError, match="must be a rrvae_nb.signals.Calibration"):
        scattering_angle_mrad({"k_step_mrad": 1.0}, (K, K))


def test_rectangular_pixels_and_centres_outside_the_camera():
    rect = Calibration(scan_step_nm=0.02, k_step_mrad=(1.0, 2.0), k_offset_mrad=(-4.0, -8.0))
    angle = scattering_angle_mrad(rect, (9, 9))
    assert angle[4, 4] == 0 and angle[4, 6] == pytest.approx(4.0) and angle[6, 4] == 2.0
    np.testing.assert_allclose(scattering_angle_mrad(rect, (9, 9), centre_px=(4, 4)), angle)
    with pytest.raises(ValueError, match=r"outside the 9 x 9 pattern.*0 <= cy <= 8"):
        scattering_angle_mrad(rect, (9, 9), centre_px=(4.0, 30.0))


# ---------------------------------------------------------------- annular_image: exact sums


def test_annular_image_is_the_exact_sum_over_the_ring(rng):
    data, v = ring_data(rng)
    sig = make_signal(data, CAL)
    ring = annular_image(sig, R_DISK * STEP, R_RING * STEP)
    assert ring.shape == SCAN and ring.dtype == np.float64
    np.testing.assert_allclose(ring, v[1] * n_pixels(1), rtol=1e-12)
    # inner 0, outer = the disk radius: a bright-field image
    np.testing.assert_allclose(annular_image(sig, 0, R_DISK * STEP), v[0] * n_pixels(0),
                               rtol=1e-12)
    # outer None reaches the corners of the camera
    np.testing.assert_allclose(annular_image(sig, R_RING * STEP), v[2] * n_pixels(2), rtol=1e-12)
    np.testing.assert_allclose(annular_image(sig, R_DISK * STEP),
                               v[1] * n_pixels(1) + v[2] * n_pixels(2), rtol=1e-12)
    # the three zones add up to the whole pattern
    total = sum(annular_image(sig, lo * STEP, hi) for lo, hi in
                ((0, R_DISK * STEP), (R_DISK, R_RING * STEP), (R_RING, None)))
    np.testing.assert_allclose(total, data.sum(axis=(2, 3)), rtol=1e-12)


def test_lazy_numpy_and_progress_give_the_eager_result(rng):
    data, _ = ring_data(rng)
    eager = annular_image(make_signal(data, CAL), 2.0, 6.0)
    # chunks that split the patterns as well as the scan
    lazy_sig = make_signal(da.from_array(data.astype(np.float32), chunks=(2, 4, 11, 20)), CAL)
    assert lazy_sig._lazy
    np.testing.assert_allclose(annular_image(lazy_sig, 2.0, 6.0, progress=True), eager,
                               rtol=1e-6)
    np.testing.assert_allclose(annular_image(data, 2.0, 6.0, calibration=CAL), eager, rtol=1e-12)
    np.testing.assert_allclose(annular_image(make_signal(data, CAL), 2.0, 6.0, progress=True),
                               eager, rtol=1e-12)


def test_nan_outside_the_annulus_does_not_matter(rng):
    data, v = ring_data(rng)
    data[..., 0, 0] = np.nan                       # a corner pixel, outside the ring
    for d in (data, da.from_array(data, chunks=(3, 3, K, K))):
        ring = annular_image(make_signal(d, CAL), R_DISK * STEP, R_RING * STEP)
        np.testing.assert_allclose(ring, v[1] * n_pixels(1), rtol=1e-12)


def test_bf_disk_centring_follows_a_shifted_disk(rng):
    data, v = ring_data(rng)
    shifted = np.roll(data, (3, -2), axis=(2, 3))   # the beam lands 3 px down, 2 px left
    inner, outer = R_DISK * STEP, R_RING * STEP
    expected = v[1] * n_pixels(1)
    centred = annular_image(make_signal(data, CAL), inner, outer, centre="bf_disk")
    followed = annular_image(make_signal(shifted, CAL), inner, outer, centre="bf_disk")
    np.testing.assert_allclose(centred, expected, rtol=1e-12)
    np.testing.assert_allclose(followed, expected, rtol=1e-12)
    # lazy: the mean pattern is read in a separate pass, with the same result
    lazy = make_signal(da.from_array(shifted, chunks=(2, 3, K, K)), CAL)
    np.testing.assert_allclose(annular_image(lazy, inner, outer, centre="bf_disk"), expected,
                               rtol=1e-12)
    # an explicit centre on the shifted disk is the same detector
    np.testing.assert_allclose(
        annular_image(make_signal(shifted, CAL), inner, outer, centre=(19, 14)), expected,
        rtol=1e-12)
    # the calibrated centre does not follow: part of the bright disk enters the ring
    fixed = annular_image(make_signal(shifted, CAL), inner, outer, centre="calibration")
    assert np.all(fixed > 5 * expected)


# ---------------------------------------------------------------- annular_image: errors


@pytest.fixture
def signal(rng):
    return make_signal(ring_data(rng)[0], CAL)


@pytest.mark.parametrize(("inner", "outer", "match"), [
    (5.0, 5.0, r"inner_mrad \(5.0\) must be smaller than outer_mrad"),
    (6.0, 2.0, "must be smaller than outer_mrad"),
    (-1.0, None, "inner_mrad must be a non-negative angle"),
    (np.nan, None, "inner_mrad must be a non-negative angle"),
    (1.0, -2.0, "outer_mrad must be a non-negative angle"),
    (1.0, np.nan, "outer_mrad must be a non-negative angle"),
    (100.0, None, r"the camera reaches 15\.8 mrad at most .*: lower inner_mrad"),
    (4.6 * STEP, 4.68 * STEP, "No camera pixel lies between .*: widen the annulus"),
])
def test_annular_image_rejects_bad_angles(signal, inner, outer, match):
    with pytest.raises(ValueError, match=match):
        annular_image(signal, inner, outer)


def test_annular_image_rejects_bad_data_and_calibration(rng):
    data, _ = ring_data(rng)
    with pytest.raises(ValueError, match=r"must have 4 axes \(scan y, scan x, ky, kx\)"):
        annular_image(data[0], 1.0, calibration=CAL)
    with pytest.raises(ValueError, match="Expected a 4D-STEM signal with 2 navigation"):
        annular_image(make_signal(data, CAL).inav[0], 1.0)       # 3D signal
    with pytest.raises(ValueError, match="A plain array has no calibration"):
        annular_image(data, 1.0)
    with pytest.raises(ValueError, match="calibration must be a rrvae_nb.signals.Calibration"):
        annular_image(data, 1.0, calibration={"k_step_mrad": 1.0})
    with pytest.raises(ValueError, match="leave calibration out"):
        annular_image(make_signal(data, CAL), 1.0, calibration=CAL)
    uncalibrated = make_signal(data, CAL)
    uncalibrated.axes_manager.signal_axes[0].units = ""
    with pytest.raises(ValueError, match="has no units"):
        annular_image(uncalibrated, 1.0)
    with pytest.raises(ValueError, match="empty"):
        annular_image(data[:0], 1.0, calibration=CAL)
    with pytest.raises(ValueError, match="real intensities"):
        annular_image(data.astype(complex), 1.0, calibration=CAL)


def test_annular_image_rejects_bad_centre_and_nan(rng, signal):
    with pytest.raises(ValueError, match="centre must be 'calibration', 'bf_disk'"):
        annular_image(signal, 1.0, centre="middle")
    with pytest.raises(ValueError, match="two finite numbers"):
        annular_image(signal, 1.0, centre=(np.inf, 3))
    data, _ = ring_data(rng)
    data[1, 2, 16, 16 + 6] = np.nan                # inside the ring
    with pytest.raises(ValueError, match="1 NaN or infinite value.*np.nan_to_num"):
        annular_image(make_signal(data, CAL), R_DISK * STEP, R_RING * STEP)
    with pytest.raises(ValueError, match="mean pattern contains NaN"):
        annular_image(make_signal(data, CAL), 1.0, centre="bf_disk")


# ---------------------------------------------------------------- physics


def test_adf_is_brighter_on_zinc_than_on_sulfur_columns():
    """Heavier atoms scatter more to high angles: Z contrast in the shipped ZnS simulation."""
    sig = datasets.load("zns_thin_sim")
    cal = calibration_of(sig)
    truth = simulate.ground_truth_of(sig)
    columns = nearest_site(cal, sig.data.shape[:2], truth.positions_nm)
    z = truth.numbers[columns.index]
    near = columns.distance_nm < 0.03
    zn, s = near & (z == 30), near & (z == 16)
    assert zn.sum() >= 4 and s.sum() >= 4
    inner = 1.2 * cal.convergence_mrad                 # outside the bright-field disk
    for centre in ("calibration", "bf_disk"):
        adf = annular_image(sig, inner, centre=centre)
        assert adf[zn].min() > adf[s].max(), centre   # every Zn site beats every S site
        assert adf[zn].mean() > 1.2 * adf[s].mean(), centre
    # the bright-field image is the complement: less of the beam stays in the disk on Zn
    bf = annular_image(sig, 0, 0.9 * cal.convergence_mrad)
    assert bf[zn].mean() < bf[s].mean()
