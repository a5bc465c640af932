"""Tests of rrvae_nb.recipe: a frozen preprocessing recipe reproduces prepare() frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from rrvae_nb.preprocess import Prepared, prepare
from rrvae_nb.recipe import Recipe, recipe_path
from rrvae_nb.signals import Calibration, make_signal

SCAN = (6, 7)  # (scan y, scan x)
K = 32  # camera pixels per side


def scan(seed=0, k=(K, K)):
    """(scan y, scan x, ky, kx) Poisson counts: a disk that moves and dims across the scan."""
    rng = np.random.default_rng(seed)
    ny, nx = SCAN
    yy, xx = np.mgrid[: k[0], : k[1]]
    data = np.empty((ny, nx) + tuple(k))
    for iy in range(ny):
        for ix in range(nx):
            cy = 14.3 + 1.5 * np.sin(iy + 0.3 * ix)
            cx = 17.1 + 1.2 * np.cos(0.7 * iy - ix) * k[1] / k[0]
            r = np.hypot(yy - cy, (xx - cx) * k[0] / k[1])
            disk = 1.0 / (1.0 + np.exp((r - 6.0) / 0.6))
            data[iy, ix] = 300 * (1 - 0.05 * iy) * disk + 20 * np.exp(-r / 8) + 0.5
    return rng.poisson(data).astype(np.uint16)


OPTIONS = {
    "defaults": dict(),
    "crop and bin (sum)": dict(crop=24, bin_factor=2),
    "bin (mean), log scale, no centring": dict(centre=False, crop=24, bin_factor=4,
                                               bin_reduce="mean", scale="log"),
    "resize, sqrt, whole-pixel centring": dict(crop=28, size=12, scale="sqrt", subpixel=False),
    "power scale, no mean, no normalisation": dict(crop=20, scale=0.7, subtract_mean=False,
                                                   normalise=False),
    "PCA (paper style)": dict(centre=False, size=16, pca_components=10, pca_keep=4),
    "PCA without mean subtraction": dict(crop=24, bin_factor=2, subtract_mean=False,
                                         pca_components=6),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_recipe_reproduces_prepare_for_every_option(name):
    raw = scan()
    prep = prepare(raw, progress=False, **OPTIONS[name])
    recipe = Recipe.from_prepared(prep)
    frames = raw.reshape(-1, K, K)
    out = recipe.apply(frames)
    assert out.dtype == np.float32 and out.shape == prep.patterns.shape
    np.testing.assert_allclose(out, prep.patterns, rtol=0, atol=2e-6 * np.abs(prep.patterns).max())
    # a few frames alone get the very same numbers: nothing is re-estimated from the batch
    # (prepare on these frames alone would centre, subtract and normalise differently)
    some = [40, 3, 17, 25, 8, 33, 12, 1, 29, 36, 20, 5]
    np.testing.assert_allclose(recipe.apply(frames[some]), prep.patterns[some], rtol=0,
                               atol=2e-6 * np.abs(prep.patterns).max())
    alone = prepare(frames[some], progress=False, **OPTIONS[name]).patterns
    assert np.abs(alone - prep.patterns[some]).max() > 1e-3


def test_recipe_of_lazy_calibrated_signal_and_square_pixel_resampling():
    da = pytest.importorskip("dask.array")
    raw = scan(1, k=(K, 38))  # kx pixels 32/38 the size of ky pixels
    cal = Calibration(scan_step_nm=0.02, k_step_mrad=(2.0, 2.0 * K / 38))
    sig = make_signal(da.from_array(raw, chunks=(3, 4, K, 38)), cal)
    prep = prepare(sig, crop=30, bin_factor=3, square_pixels="resample", progress=False)
    assert prep.steps["square_pixels"]["resampled"]
    recipe = Recipe.from_prepared(prep)
    assert recipe.square is not None
    np.testing.assert_allclose(recipe.apply(raw.reshape(-1, K, 38)), prep.patterns, atol=2e-6)
    # the still-lazy route (compute=False) records the same recipe
    lazy = prepare(sig, crop=30, bin_factor=3, square_pixels="resample", progress=False,
                   compute=False)
    np.testing.assert_allclose(Recipe.from_prepared(lazy).apply(raw[2]), lazy.patterns[14:21],
                               atol=2e-6)


def test_affine_step_matches_a_stretch_written_by_hand():
    raw = scan(2)
    prep = prepare(raw, crop=24, bin_factor=2, progress=False)
    centre, spread = float(prep.patterns.mean()), float(prep.patterns.std())
    recipe = Recipe.from_prepared(prep).then_affine(centre, 4 * spread, 0.5)
    by_hand = (prep.patterns - centre) / (4 * spread) + 0.5
    np.testing.assert_allclose(recipe.apply(raw.reshape(-1, K, K)), by_hand, atol=3e-6)
    with pytest.raises(ValueError, match="divide != 0"):
        recipe.then_affine(0.0, 0.0)


def test_save_and_load_beside_a_model_file(tmp_path):
    raw = scan(3)
    prep = prepare(raw, centre=False, size=16, pca_components=8, pca_keep=5, progress=False)
    recipe = Recipe.from_prepared(prep).then_affine(0.1, 2.0, 0.0)
    model_path = tmp_path / "model.pt"
    written = recipe.save_beside(model_path)
    assert written == recipe_path(model_path) == tmp_path / "model.recipe.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.recipe.npz"]  # no temp left
    again = Recipe.for_model(model_path)
    frames = raw.reshape(-1, K, K)
    assert np.array_equal(again.apply(frames), recipe.apply(frames))
    assert again.affine == recipe.affine and again.out_shape == (16, 16)


def test_missing_corrupt_and_foreign_recipe_files_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_beside"):
        Recipe.for_model(tmp_path / "model.pt")
    bad = tmp_path / "bad.recipe.npz"
    recipe = Recipe.from_prepared(prepare(scan(), crop=24, bin_factor=2, progress=False))
    recipe.save(bad)
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match="damaged or truncated"):
        Recipe.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array('{"kind": "something else"}'))
    with pytest.raises(ValueError, match="not an rrvae-nb preprocessing recipe"):
        Recipe.load(other)
    with pytest.raises(ValueError, match=".npz"):
        recipe.save(tmp_path / "recipe.json")


def test_bad_frames_and_hand_made_prepared_are_refused():
    raw = scan()
    prep = prepare(raw, crop=24, bin_factor=2, scale="sqrt", progress=False)
    recipe = Recipe.from_prepared(prep)
    with pytest.raises(ValueError, match=r"camera shape"):
        recipe.apply(np.zeros((2, K, K + 1)))
    with pytest.raises(ValueError, match="NaN"):
        recipe.apply(np.full((1, K, K), np.nan))
    bare = Prepared(patterns=prep.patterns, scan_shape=SCAN, calibration=None,
                    mean_pattern=prep.mean_pattern, centre_px=None, k_origin_px=(0.0, 0.0),
                    k_step_px=1.0)
    with pytest.raises(ValueError, match="prepare"):
        Recipe.from_prepared(bare)
