"""Tests of rrvae_nb.preprocess on small synthetic 4D-STEM data made here.

The synthetic data: a soft-edged bright-field disk at a known off-centre position, optionally
moving by a known amount across the scan (a COM signal) and scaled by a known gain per scan
position, with Poisson noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from rrvae_nb.preprocess import (
    Prepared,
    bf_disk_centre,
    bin_patterns,
    crop_centred,
    normalise,
    pca_denoise,
    prepare,
    resize_patterns,
    scale_intensity,
)
from rrvae_nb.signals import Calibration, calibration_of, make_signal

SCAN = (12, 16)  # (scan y, scan x): rectangular, so a y/x mix-up changes the shape
K = 32  # pattern side, pixels
DISK_CENTRE = (14.3, 17.6)  # (ky, kx), pixels, off the pattern centre (15.5, 15.5)
DISK_RADIUS = 6.0  # pixels
CAL = Calibration(
    scan_step_nm=0.025,
    k_step_mrad=2.5,
    scan_offset_nm=(0.1, -0.2),
    k_offset_mrad=(-40.0, -38.0),
    energy_kev=60.0,
    convergence_mrad=15.0,
)


def soft_disk(shape, centre, radius, edge=0.6):
    """Disk of height 1 with a smooth (logistic) edge of width ``edge`` pixels."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - centre[0], xx - centre[1])
    return 1.0 / (1.0 + np.exp((r - radius) / edge))


def disk_data(rng, *, dose=400.0, drift_px=0.0, gain=None, noise=True, background=0.5):
    """(scan y, scan x, K, K) float32 counts; the disk moves by drift_px in kx across scan x."""
    ny, nx = SCAN
    data = np.empty((ny, nx, K, K))
    for ix in range(nx):
        shift = drift_px * (ix / (nx - 1) - 0.5)
        pattern = dose * soft_disk((K, K), (DISK_CENTRE[0], DISK_CENTRE[1] + shift), DISK_RADIUS)
        data[:, ix] = pattern + background
    if gain is not None:
        data *= gain[:, :, None, None]
    if noise:
        data = rng.poisson(data)
    return data.astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------
# Bright-field disk and centring


def test_bf_disk_centre_finds_offcentre_disk_despite_hot_pixel_and_bragg_spot():
    pattern = 100 * soft_disk((K, K), DISK_CENTRE, DISK_RADIUS)
    assert np.allclose(bf_disk_centre(pattern), DISK_CENTRE, atol=0.05)
    spoiled = pattern.copy()
    spoiled[2, 3] = 1e4  # a hot pixel far brighter than the disk
    spoiled += 100 * soft_disk((K, K), (27.0, 4.0), 1.5)  # a small bright Bragg spot
    assert np.allclose(bf_disk_centre(spoiled), DISK_CENTRE, atol=0.05)


@pytest.mark.parametrize("subpixel", [True, False])
@pytest.mark.parametrize("crop", [None, 24])
def test_centring_moves_disk_to_pattern_centre(rng, subpixel, crop):
    data = disk_data(rng)
    out = prepare(data, crop=crop, subpixel=subpixel, subtract_mean=False, normalise=False,
                  progress=False)
    side = crop or K
    assert out.patterns.shape == (np.prod(SCAN), side, side)
    assert np.allclose(out.centre_px, DISK_CENTRE, atol=0.1)
    found = np.array(bf_disk_centre(out.patterns.mean(axis=0)))
    target = (side - 1) / 2
    # before centring the disk sat 1.2 px and 2.1 px off the centre
    assert np.all(np.abs(found - target) <= (0.15 if subpixel else 0.5 + 0.1))
    # Without centring it stays where it was (the test can tell the difference).
    plain = prepare(data, centre=False, crop=crop, subtract_mean=False, normalise=False,
                    progress=False)
    off = np.array(bf_disk_centre(plain.patterns.mean(axis=0))) - target
    assert np.all(np.abs(off) > 0.9)


def test_centring_is_one_shift_so_com_shifts_survive(rng):
    """A per-pattern recentring would erase the disk shifts that carry the electric field."""
    data = disk_data(rng, drift_px=2.0, noise=False)
    out = prepare(data, crop=24, subtract_mean=False, normalise=False, progress=False)
    maps = out.to_map(out.patterns)
    left = bf_disk_centre(maps[:, 0].mean(axis=0))
    right = bf_disk_centre(maps[:, -1].mean(axis=0))
    assert right[1] - left[1] == pytest.approx(2.0, abs=0.1)
    assert right[0] - left[0] == pytest.approx(0.0, abs=0.05)


def test_crop_centred_plain_crop_takes_whole_pixels():
    x = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    assert np.array_equal(crop_centred(x, 4), x[:, 2:6, 2:6])
    assert np.array_equal(crop_centred(x, 5), x[:, 1:6, 1:6])  # (8 - 5) // 2 = 1
    # a whole-pixel centre needs no interpolation: the window is a slice
    assert np.array_equal(crop_centred(x, 3, centre_px=(2.0, 5.0)), x[:, 1:4, 4:7])


def test_subpixel_window_conserves_counts_inside_the_pattern(rng):
    x = rng.poisson(50, size=(5, 20, 20)).astype(np.float32)
    x[:, :3], x[:, -3:], x[:, :, :3], x[:, :, -3:] = 0, 0, 0, 0  # empty border
    moved = crop_centred(x, None, centre_px=(9.2, 10.35))
    assert np.allclose(moved.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=1e-5)
    assert moved.min() >= 0


# ---------------------------------------------------------------------------------------------
# Binning, resizing and the calibration of the reduced patterns


def test_binning_preserves_counts_and_scales_mrad_step(rng):
    data = disk_data(rng)
    binned = bin_patterns(data, 4)
    assert binned.shape == SCAN + (K // 4, K // 4)
    assert np.allclose(binned.sum(axis=(2, 3)), data.sum(axis=(2, 3)), rtol=1e-6)
    assert np.allclose(bin_patterns(data, 4, reduce="mean") * 16, binned, rtol=1e-6)

    out = prepare(make_signal(data, CAL), centre=False, bin_factor=2, subtract_mean=False,
                  normalise=False, progress=False)
    assert np.allclose(out.patterns.sum(axis=(1, 2)), data.reshape(-1, K * K).sum(axis=1),
                       rtol=1e-6)
    assert out.calibration.k_step_mrad == pytest.approx(2 * CAL.k_step_mrad)
    assert out.calibration.scan_step_nm == pytest.approx(CAL.scan_step_nm)
    assert out.k_step_px == 2


@pytest.mark.parametrize("reduction", [dict(bin_factor=2, bin_reduce="mean"), dict(size=16),
                                       dict(size=20), dict()])
def test_reduced_calibration_gives_the_angle_of_every_pixel(reduction):
    """A smooth pattern f(angle): each reduced pixel must hold f at its calibrated angle."""
    H = 48
    blob_px = (20.3, 26.6)  # (ky, kx)
    cy, cx = (o + c * CAL.k_step_mrad for o, c in zip(CAL.k_offset_mrad, blob_px, strict=True))
    sigma = 10 * CAL.k_step_mrad  # mrad

    def f(ky, kx):  # a Gaussian with a tilt along kx, so that flips and swaps show
        r2 = (ky - cy) ** 2 + (kx - cx) ** 2
        return 1000 * np.exp(-r2 / (2 * sigma**2)) * (1 + 0.3 * (kx - cx) / (4 * sigma))

    jj, ii = np.mgrid[:H, :H]
    raw = f(CAL.k_offset_mrad[0] + jj * CAL.k_step_mrad,
            CAL.k_offset_mrad[1] + ii * CAL.k_step_mrad)
    data = np.broadcast_to(raw, (3, 4, H, H)).astype(np.float32)
    out = prepare(data, calibration=CAL, crop=32, subtract_mean=False, normalise=False,
                  progress=False, **reduction)
    assert np.allclose(out.centre_px, blob_px, atol=1.0)
    cal = out.calibration
    h = out.patterns.shape[1]
    jj, ii = np.mgrid[:h, :h]
    expected = f(cal.k_offset_mrad[0] + jj * cal.k_step_mrad,
                 cal.k_offset_mrad[1] + ii * cal.k_step_mrad)
    inner = slice(2, h - 2)  # the spline's edge treatment is not exact on a non-periodic image
    err = np.abs(out.patterns[0][inner, inner] - expected[inner, inner]).max()
    assert err < 0.01 * expected.max()
    # the same relation in pixels: reduced (j, i) sits on raw k_origin_px + (j, i) * k_step_px
    assert np.allclose(cal.k_offset_mrad[1] + ii * cal.k_step_mrad,
                       CAL.k_offset_mrad[1]
                       + (out.k_origin_px[1] + ii * out.k_step_px) * CAL.k_step_mrad)


def test_resize_matches_scipy_zoom_and_stays_in_range(rng):
    x = disk_data(rng)[0, :3]
    out = resize_patterns(x, 8, clip=False)
    for pattern, small in zip(x, out, strict=True):
        ref = ndimage.zoom(pattern.astype(np.float64), 8 / K, order=3, mode="reflect",
                           grid_mode=True)
        assert np.allclose(small, ref, rtol=1e-4, atol=1e-3 * pattern.max())
    clipped = resize_patterns(x, 8)
    assert clipped.min() >= x.min() and clipped.max() <= x.max()


# ---------------------------------------------------------------------------------------------
# Intensity scaling, mean, PCA, normalisation


def test_scale_intensity_values_and_negative_counts():
    x = np.array([[[0.0, 3.0], [8.0, 15.0]]], dtype=np.float32)
    assert np.allclose(scale_intensity(x, "log"), np.log(1 + x))
    assert np.allclose(scale_intensity(x, "sqrt") ** 2, x)
    assert np.allclose(scale_intensity(x, 0.25) ** 4, x, rtol=1e-5)
    with pytest.raises(ValueError, match="non-negative"):
        scale_intensity(x - 1, "log")
    with pytest.raises(ValueError, match="scale"):
        scale_intensity(x, "cube")


def test_prepare_scales_the_binned_counts(rng):
    data = disk_data(rng)
    out = prepare(data, centre=False, bin_factor=2, scale="log", subtract_mean=False,
                  normalise=False, progress=False)
    expected = np.log1p(bin_patterns(data, 2)).reshape(out.patterns.shape)
    assert np.allclose(out.patterns, expected, rtol=1e-6)


def test_mean_pattern_is_subtracted(rng):
    data = disk_data(rng)
    kept = prepare(data, bin_factor=2, subtract_mean=False, normalise=False, progress=False)
    out = prepare(data, bin_factor=2, normalise=False, progress=False)
    assert np.abs(out.patterns.mean(axis=0)).max() < 1e-4 * np.abs(kept.patterns).max()
    assert np.allclose(out.patterns + out.mean_pattern, kept.patterns, atol=1e-3)
    assert np.allclose(out.mean_pattern, kept.patterns.mean(axis=0), rtol=1e-5)


def test_pca_denoising_recovers_a_low_rank_stack(rng):
    n, side, rank = 400, 16, 3
    basis = rng.normal(size=(rank, side * side))
    scores = rng.normal(size=(n, rank)) * np.array([6.0, 4.0, 3.0])
    clean = (scores @ basis + 5.0).reshape(n, side, side).astype(np.float32)
    noisy = clean + rng.normal(scale=2.0, size=clean.shape).astype(np.float32)
    den, ratio = pca_denoise(noisy, 8, keep=rank, seed=0)
    noise_err = np.linalg.norm(noisy - clean)
    assert np.linalg.norm(den - clean) < 0.25 * noise_err
    # the rank-3 signal carries most of the variance, in decreasing order
    assert ratio[:rank].sum() > 0.5 and np.all(np.diff(ratio) <= 1e-9)
    # keeping fewer components than the rank loses signal
    under, _ = pca_denoise(noisy, 8, keep=1, seed=0)
    assert np.linalg.norm(under - clean) > 2 * np.linalg.norm(den - clean)
    again, _ = pca_denoise(noisy, 8, keep=rank, seed=0)
    assert np.array_equal(den, again)


def test_normalise_maps_stack_to_unit_interval(rng):
    x = rng.normal(size=(10, 8, 8)).astype(np.float32) * 7 - 3
    y = normalise(x)
    assert y.min() == 0.0 and y.max() == 1.0
    assert np.corrcoef(x.ravel(), y.ravel())[0, 1] == pytest.approx(1.0)
    assert np.allclose(normalise(x, (x.min(), x.max())), y)
    with pytest.raises(ValueError, match="all values equal"):
        normalise(np.ones((3, 4, 4)))
    out = prepare(disk_data(rng), pca_components=6, pca_keep=4, bin_factor=2, progress=False)
    assert out.patterns.dtype == np.float32
    assert out.patterns.min() == 0.0 and out.patterns.max() == 1.0
    lo, hi = out.steps["value_range"]
    assert lo < 0 < hi  # the mean-subtracted stack straddled zero


# ---------------------------------------------------------------------------------------------
# Lazy signals


def test_lazy_and_eager_signals_give_identical_results(rng):
    da = pytest.importorskip("dask.array")
    data = disk_data(rng, drift_px=1.0)
    eager = make_signal(data, CAL)
    # small chunks along the scan and split pattern axes (prepare merges those)
    lazy = make_signal(da.from_array(data, chunks=(5, 7, 16, 32)), CAL)
    assert lazy._lazy
    kwargs = dict(crop=24, bin_factor=2, scale="sqrt", pca_components=10, pca_keep=6,
                  progress=False)
    a = prepare(eager, **kwargs)
    b = prepare(lazy, **kwargs)
    assert b.steps["input_lazy"] and not a.steps["input_lazy"]
    assert np.allclose(a.patterns, b.patterns, atol=1e-5)
    assert np.allclose(a.mean_pattern, b.mean_pattern, rtol=1e-6)
    assert a.calibration == b.calibration and a.centre_px == pytest.approx(b.centre_px)
    # the single-pass path (no centring) on a bare dask array agrees with numpy too
    c = prepare(data, centre=False, size=12, calibration=CAL, progress=False)
    d = prepare(da.from_array(data, chunks=(4, 4, K, K)), centre=False, size=12,
                calibration=CAL, progress=False)
    assert np.allclose(c.patterns, d.patterns, atol=1e-6)


@pytest.mark.parametrize("lazy", [False, True])
def test_callers_data_are_never_modified(rng, lazy):
    data = disk_data(rng)
    before = data.copy()
    source = data
    if lazy:
        source = pytest.importorskip("dask.array").from_array(data, chunks=data.shape)
    prepare(source, centre=False, progress=False)  # no reduction: the window is the pattern
    crop_centred(data, K)[:] = -1
    assert np.array_equal(data, before)


@pytest.mark.parametrize("centre, passes", [(True, 2), (False, 1)])
def test_lazy_input_is_read_chunk_by_chunk(rng, centre, passes):
    """Each raw chunk is read once per pass: once for the mean pattern, once for the reduction."""
    da = pytest.importorskip("dask.array")
    data = disk_data(rng)
    reads: dict = {}

    def counted(block, block_id=None):
        reads[block_id] = reads.get(block_id, 0) + 1
        return block

    source = da.from_array(data, chunks=(4, 8, K, K)).map_blocks(
        counted, dtype=data.dtype, meta=np.empty((0, 0, 0, 0), dtype=data.dtype)
    )
    prepare(source, centre=centre, bin_factor=4, progress=False)
    assert len(reads) == 3 * 2
    assert set(reads.values()) == {passes}


# ---------------------------------------------------------------------------------------------
# Back onto the scan grid


def test_to_map_round_trips_scan_order_and_to_signal_is_calibrated():
    ny, nx = SCAN
    known = 100.0 * np.arange(ny)[:, None] + np.arange(nx)[None, :] + 1  # map[y, x]
    template = soft_disk((K, K), DISK_CENTRE, DISK_RADIUS) + 0.1
    data = (known[:, :, None, None] * template).astype(np.float32)
    out = prepare(make_signal(data, CAL), crop=24, subtract_mean=False, normalise=False,
                  progress=False)
    per_pattern = out.patterns.sum(axis=(1, 2))  # proportional to the known map
    recovered = out.to_map(per_pattern / per_pattern[0])
    assert recovered.shape == SCAN
    assert np.allclose(recovered, known / known[0, 0], rtol=1e-5)
    two = np.stack([per_pattern, -per_pattern], axis=1)
    assert np.allclose(out.to_map(two)[..., 1], -out.to_map(per_pattern))

    sig = out.to_signal(per_pattern, title="total")
    assert sig.axes_manager.navigation_dimension == 0
    assert sig.axes_manager.signal_dimension == 2
    assert sig.metadata.General.title == "total"
    assert np.allclose(sig.data, out.to_map(per_pattern))
    x_axis, y_axis = sig.axes_manager.signal_axes
    assert (y_axis.name, y_axis.size, x_axis.name, x_axis.size) == ("y", ny, "x", nx)
    assert y_axis.units == "nm" and y_axis.scale == pytest.approx(CAL.scan_step_nm)
    assert (y_axis.offset, x_axis.offset) == pytest.approx(CAL.scan_offset_nm)

    vec = out.to_signal(two)
    assert vec.axes_manager.navigation_shape == (nx, ny)
    assert vec.axes_manager.signal_shape == (2,)

    recon = out.to_signal(out.patterns)
    assert calibration_of(recon) == out.calibration
    assert np.array_equal(recon.data.reshape(-1, 24, 24), out.patterns)


def test_bare_stack_needs_scan_shape_for_maps(rng):
    data = disk_data(rng).reshape(-1, K, K)
    out = prepare(data, bin_factor=2, scan_shape=SCAN, progress=False)
    assert out.to_map(np.arange(len(data))).shape == SCAN
    assert out.to_map(np.arange(len(data)))[1, 0] == SCAN[1]  # scan x runs fastest
    bare = prepare(data, bin_factor=2, progress=False)
    assert bare.calibration is None and bare.scan_shape is None
    with pytest.raises(ValueError, match="scan_shape"):
        bare.to_map(np.arange(len(data)))
    with pytest.raises(ValueError, match="one value"):
        out.to_map(np.arange(5))
    assert isinstance(out, Prepared)


def test_non_square_patterns_are_cropped_square(rng):
    data = disk_data(rng)[..., :, 2:]  # 32 x 30
    out = prepare(data, crop=24, progress=False)
    assert out.patterns.shape[1:] == (24, 24)


# ---------------------------------------------------------------------------------------------
# Bad input


def _with_nan(data):
    data = data.copy()
    data[3, 4, 10, 10] = np.nan
    return data


def _with_inf(data):
    data = data.copy()
    data[0, 0, 0, 0] = np.inf
    return data


def _with_zero_pattern(data):
    data = data.copy()
    data[2, 5] = 0
    return data


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda d: d[0, 0], {}, "shape"),
        (lambda d: d[None], {}, "shape"),
        (lambda d: d[:0], {}, "empty"),
        (lambda d: d.astype(np.complex64), {}, "complex"),
        (_with_nan, {}, "NaN"),
        (_with_inf, {}, "infinite"),
        (_with_zero_pattern, {}, "all zero"),
        (lambda d: d - 5.0, dict(scale="log"), "non-negative"),
        (lambda d: d[..., 2:], {}, "not square"),
        (lambda d: d, dict(crop=40), "larger than"),
        (lambda d: d, dict(bin_factor=5), "does not divide"),
        (lambda d: d, dict(crop=30, bin_factor=4), "crop=28"),
        (lambda d: d, dict(bin_factor=2, size=16), "either"),
        (lambda d: d, dict(scale="cube"), "scale"),
        (lambda d: d, dict(bin_factor=8, pca_components=20), "exceeds"),
        (lambda d: d, dict(pca_components=4, pca_keep=6), "must not exceed"),
        (lambda d: d, dict(pca_keep=6), "pca_components"),
    ],
)
@pytest.mark.parametrize("centre", [True, False])
def test_bad_input_raises_a_clear_error(rng, make, kwargs, message, centre):
    data = disk_data(rng)
    with pytest.raises(ValueError, match=message):
        prepare(make(data), centre=centre, progress=False, **kwargs)


@pytest.mark.parametrize("make, message", [(_with_nan, "NaN"), (_with_zero_pattern, "all zero")])
@pytest.mark.parametrize("centre", [True, False])
def test_bad_lazy_input_raises_a_clear_error(rng, make, message, centre):
    da = pytest.importorskip("dask.array")
    lazy = make_signal(da.from_array(make(disk_data(rng)), chunks=(4, 8, K, K)), CAL)
    with pytest.raises(ValueError, match=message):
        prepare(lazy, centre=centre, progress=False)


def test_bad_signals_raise_a_clear_error(rng):
    data = disk_data(rng)
    uncalibrated = make_signal(data, CAL)
    uncalibrated.axes_manager.signal_axes[0].units = ""
    with pytest.raises(ValueError, match="no units"):
        prepare(uncalibrated, progress=False)
    stretched = make_signal(data, CAL)
    stretched.axes_manager.signal_axes[0].scale *= 1.3
    with pytest.raises(ValueError, match="not square"):
        prepare(stretched, progress=False)
    with pytest.raises(ValueError, match="calibration="):
        prepare(make_signal(data, CAL), calibration=CAL, progress=False)
    with pytest.raises(ValueError, match="larger than"):
        crop_centred(data, K + 1)
    with pytest.raises(ValueError, match="does not divide"):
        bin_patterns(data, 3)
    with pytest.raises(ValueError, match="bright-field disk"):
        bf_disk_centre(np.zeros((8, 8)))


def test_noise_floor_keep_counts_components_above_the_floor():
    from rrvae_nb.preprocess import noise_floor_keep, pca_denoise

    rng = np.random.default_rng(0)
    # three strong directions in 64-pixel patterns, plus white noise of equal power in all
    basis = rng.standard_normal((3, 64))
    x = rng.standard_normal((2000, 3)) * [6.0, 4.0, 3.0] @ basis + rng.standard_normal((2000, 64))
    _, ratio = pca_denoise(x.reshape(2000, 8, 8), 20, seed=0)
    keep, floor = noise_floor_keep(ratio)
    assert keep == 3
    assert floor == pytest.approx(np.median(ratio[-10:]))
    assert noise_floor_keep([0.5, 0.5]) == (1, 0.5)  # never fewer than one component
    with pytest.raises(ValueError, match="at least two"):
        noise_floor_keep([0.9])


# ---------------------------------------------------------------------------------------------
# Rectangular diffraction pixels, centres, the float32 range (reliability issue)


RECT = Calibration(scan_step_nm=0.025, k_step_mrad=(2.0, 1.0), k_offset_mrad=(-16.0, -8.0))


def _linear_in_angle(cal, shape, lead=(3, 4)):
    """Patterns whose value is a linear function of the angle (exact under linear resampling)."""
    ky = cal.k_offset_mrad[0] + cal.k_steps_mrad[0] * np.arange(shape[0])
    kx = cal.k_offset_mrad[1] + cal.k_steps_mrad[1] * np.arange(shape[1])
    pattern = 100.0 + 2.0 * ky[:, None] - 3.0 * kx[None, :]
    return np.broadcast_to(pattern, lead + shape).astype(np.float64)


def test_rectangular_diffraction_pixels_are_refused_or_resampled():
    """calibration_of used to refuse them; prepare now refuses by default, naming the option."""
    data = _linear_in_angle(RECT, (17, 17))
    with pytest.raises(ValueError, match=r"not square .*square_pixels='resample'"):
        prepare(data, calibration=RECT, crop=17, progress=False)
    with pytest.raises(ValueError, match="square_pixels must be one of"):
        prepare(data, calibration=RECT, square_pixels="stretch", progress=False)
    out = prepare(data, calibration=RECT, square_pixels="resample", centre=False, crop=17,
                  subtract_mean=False, normalise=False, progress=False)
    cal = out.calibration
    assert cal.k_steps_mrad == (1.0, 1.0)  # the finer step; ky now has 33 rows, cropped to 17
    assert cal.k_offset_mrad == (-16.0 + 8 * 1.0, -8.0)
    assert out.steps["square_pixels"]["shape"] == (33, 17)
    expected = _linear_in_angle(cal, (17, 17), lead=(12,)) * (1.0 / 2.0)  # totals kept
    np.testing.assert_allclose(out.patterns, expected, rtol=1e-5)
    absurd = Calibration(scan_step_nm=0.025, k_step_mrad=(5.0, 1.0))
    with pytest.raises(ValueError, match="differ by a factor of 5 .*Check the calibration"):
        prepare(data, calibration=absurd, square_pixels="resample", crop=17, progress=False)
    # without a crop the resampled patterns (33 x 17) are not square: the message says so
    with pytest.raises(ValueError, match=r"not square \(33 x 17 pixels\).*crop=<side>"):
        prepare(data, calibration=RECT, square_pixels="resample", progress=False)


def test_resampling_lazy_signals_and_centring_agree_with_eager(rng):
    da = pytest.importorskip("dask.array")
    data = np.ascontiguousarray(disk_data(rng)[..., ::2, :])  # every other row: 16 x 32
    cal = Calibration(scan_step_nm=0.025, k_step_mrad=(2.0, 1.0), k_offset_mrad=(-16.0, -16.0))
    eager = prepare(make_signal(data, cal), square_pixels="resample", crop=24, progress=False)
    lazy = prepare(make_signal(da.from_array(data, chunks=(4, 8, 16, 32)), cal),
                   square_pixels="resample", crop=24, progress=False)
    np.testing.assert_allclose(lazy.patterns, eager.patterns, atol=1e-6)
    assert eager.calibration == lazy.calibration
    assert eager.calibration.k_steps_mrad == (1.0, 1.0)
    # the disk (round in mrad, 6 px = 6 mrad in kx) is centred and round after resampling
    mean = eager.mean_pattern
    assert bf_disk_centre(mean) == pytest.approx((11.5, 11.5), abs=0.3)
    bright = mean > 0.5 * mean.max()
    rows, cols = np.nonzero(bright)
    assert np.ptp(rows) == pytest.approx(np.ptp(cols), abs=1)


def test_crop_centred_refuses_a_centre_outside_the_patterns(rng):
    """A centre outside used to give all-zero patterns without a word."""
    x = disk_data(rng)[0]
    with pytest.raises(ValueError, match=r"0 <= ky <= 31 and 0 <= kx <= 31"):
        crop_centred(x, 8, centre_px=(40.0, 10.0))
    with pytest.raises(ValueError, match="outside the 32 x 32 patterns"):
        crop_centred(x, 8, centre_px=(10.0, -0.5))
    assert crop_centred(x, 8, centre_px=(31.0, 0.0)).any()  # on the edge: half a window


@pytest.mark.parametrize("lazy", [False, True])
def test_values_beyond_float32_are_named_as_such(rng, lazy):
    """They used to be reported as NaN/inf (they become inf in float32)."""
    data = disk_data(rng).astype(np.float64)
    data[1, 2, 3, 4] = 1e39
    if lazy:
        da = pytest.importorskip("dask.array")
        data = make_signal(da.from_array(data, chunks=(4, 8, K, K)), CAL)
    for centre in (True, False):
        with pytest.raises(ValueError, match=r"beyond the float32 range \(\|x\| > 3.4e38"):
            prepare(data, centre=centre, progress=False)
