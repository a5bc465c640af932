"""Tests of rrvae_nb.udf: the LiberTEM UDF gives the maps of stream.encode_maps.

Skipped when LiberTEM (the ``live`` extra) is not installed. Data: an 8 x 8 scan of 32 x 32
Poisson frames; the model is untrained but calibrated (the agreement of two code paths does not
need a trained model, and every weight is used).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("libertem")
pytest.importorskip("hyperspy")

import libertem.api as lt  # noqa: E402

import rrvae_nb as rr  # noqa: E402
from rrvae_nb.preprocess import prepare  # noqa: E402
from rrvae_nb.recipe import Recipe  # noqa: E402
from rrvae_nb.stream import encode_maps  # noqa: E402
from rrvae_nb.udf import RrVAEEncoderUDF, latent_maps  # noqa: E402

SCAN, K = 8, 32
ATOL = 2e-5  # float32: the two paths batch the same numbers differently


def make_scan(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:K, :K]
    data = np.empty((SCAN, SCAN, K, K))
    for iy in range(SCAN):
        for ix in range(SCAN):
            cy, cx = 15.5 + 1.2 * np.sin(0.9 * iy + 0.4 * ix), 15.2 + 1.1 * np.cos(0.5 * ix - iy)
            r = np.hypot(yy - cy, xx - cx)
            data[iy, ix] = (250 * (1 - 0.04 * ix) / (1 + np.exp((r - 7) / 0.7))
                            + 30 * np.exp(-r / 6) * (1 + 0.3 * np.cos(2 * np.arctan2(yy - cy,
                                                                                   xx - cx))))
    return rng.poisson(data).astype(np.uint16)


@pytest.fixture(scope="module")
def setup():
    raw = make_scan()
    prep = prepare(raw, crop=24, bin_factor=2, progress=False)
    model = rr.RrVAE(prep.patterns.shape[1:], 3, seed=0).calibrate_inputs(prep.patterns)
    recipe = Recipe.from_prepared(prep)
    reference = encode_maps(model, prep, progress=False)
    names = list(reference.metadata.Signal.channels)
    ref = {name: reference.data[i] for i, name in enumerate(names)}
    return raw, prep, model, recipe, ref


@pytest.fixture(scope="module")
def inline():
    return lt.Context.make_with("inline")


def assert_same_maps(maps, ref, where=None):
    assert set(ref) <= set(maps)
    for name, want in ref.items():
        got = maps[name]
        assert got.shape == want.shape, name
        if where is not None:
            got, want = got[where], want[where]
        diff = np.abs(got - want)
        if name == "angle":
            diff = np.abs(rr.wrap_angle(got - want))
        assert diff.max() < ATOL, (name, float(diff.max()))


def test_memory_dataset_inline_equals_encode_maps(setup, inline):
    raw, prep, model, recipe, ref = setup
    ds = inline.load("memory", data=raw, sig_dims=2)
    maps = latent_maps(inline.run_udf(ds, RrVAEEncoderUDF(model, recipe=recipe, batch_size=7)))
    assert_same_maps(maps, ref)
    # the maps are not trivial: the angle varies over the scan as the disk moves
    assert np.ptp(maps["angle"]) > 0.5 and np.std(maps["z0"]) > 0


@pytest.mark.filterwarnings("ignore:Loading compressed HDF5")
def test_npy_and_hspy_files_from_a_model_file(setup, inline, tmp_path):
    h5py = pytest.importorskip("h5py")
    from rrvae_nb import io
    from rrvae_nb.signals import Calibration, make_signal

    raw, prep, model, recipe, ref = setup
    model.save(tmp_path / "model.pt")
    recipe.save_beside(tmp_path / "model.pt")
    udf = RrVAEEncoderUDF(str(tmp_path / "model.pt"))  # recipe read from model.recipe.npz
    np.save(tmp_path / "scan.npy", raw)
    maps = latent_maps(inline.run_udf(inline.load("npy", path=tmp_path / "scan.npy"), udf))
    assert_same_maps(maps, ref)

    sig = make_signal(raw, Calibration(scan_step_nm=0.02, k_step_mrad=2.0))
    io.save(tmp_path / "scan.hspy", sig, chunks=(3, 3, K, K))  # chunks that split the scan
    with h5py.File(tmp_path / "scan.hspy", "r") as f:
        found = []
        f.visititems(lambda name, obj: found.append(name)
                     if getattr(obj, "ndim", 0) == 4 else None)
    ds = inline.load("hdf5", path=tmp_path / "scan.hspy", ds_path=found[0])
    assert_same_maps(latent_maps(inline.run_udf(ds, udf)), ref)


def test_roi_gives_the_full_run_values_at_those_positions(setup, inline, tmp_path):
    h5py = pytest.importorskip("h5py")
    raw, prep, model, recipe, ref = setup
    roi = np.random.default_rng(5).random((SCAN, SCAN)) < 0.3
    # HDF5 chunks of 3 x 3 positions: tiles arrive out of scan order and the ROI cuts them
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_dataset("data", data=raw, chunks=(3, 3, K, K))
    for ds in (inline.load("memory", data=raw, sig_dims=2, num_partitions=3),
               inline.load("hdf5", path=tmp_path / "scan.h5", ds_path="data")):
        maps = latent_maps(inline.run_udf(ds, RrVAEEncoderUDF(model, recipe=recipe), roi=roi))
        assert_same_maps(maps, ref, where=roi)
        assert np.isnan(maps["angle"][~roi]).all()


@pytest.mark.slow  # starting two worker processes takes most of its 10-25 s
@pytest.mark.filterwarnings("ignore:dataset.adjust_tileshape")
def test_frames_split_into_tiles_are_assembled(setup, inline):
    # large cameras (1024 x 1024) reach a UDF in parts of frames; force that on small ones
    raw, prep, model, recipe, ref = setup
    ds = inline.load("memory", data=raw, sig_dims=2, tileshape=(5, 8, 32), num_partitions=2)
    udf = RrVAEEncoderUDF(model, recipe=recipe)
    assert_same_maps(latent_maps(inline.run_udf(ds, udf)), ref)
    roi = np.random.default_rng(6).random((SCAN, SCAN)) < 0.5
    assert_same_maps(latent_maps(inline.run_udf(ds, udf, roi=roi)), ref, where=roi)


def test_dask_executor_on_a_local_cluster(setup, tmp_path):
    raw, prep, model, recipe, ref = setup
    np.save(tmp_path / "scan.npy", raw)
    with lt.Context.make_with("dask", cpus=2) as ctx:
        ds = ctx.load("npy", path=tmp_path / "scan.npy", num_partitions=4)
        maps = latent_maps(ctx.run_udf(ds, RrVAEEncoderUDF(model, recipe=recipe, batch_size=5)))
    assert_same_maps(maps, ref)


def test_reconstruction_error_is_the_mean_squared_difference(setup, inline):
    raw, prep, model, recipe, ref = setup
    ds = inline.load("memory", data=raw, sig_dims=2)
    res = inline.run_udf(ds, RrVAEEncoderUDF(model, recipe=recipe, reconstruction_error=True))
    x = prep.patterns
    want = ((model.reconstruct(x) - x) ** 2).mean(axis=(1, 2)).reshape(SCAN, SCAN)
    np.testing.assert_allclose(latent_maps(res)["error"], want, rtol=1e-4, atol=1e-7)
    assert want.min() > 0


def test_bad_inputs_are_refused_clearly(setup, inline):
    raw, prep, model, recipe, ref = setup
    with pytest.raises(ValueError, match="recipe"):
        RrVAEEncoderUDF(model)
    other = rr.RrVAE((10, 10), 2)
    with pytest.raises(ValueError, match="another model"):
        RrVAEEncoderUDF(other, recipe=recipe)
    with pytest.raises(ValueError, match="batch_size"):
        RrVAEEncoderUDF(model, recipe=recipe, batch_size=0)
    ds = inline.load("memory", data=raw[:, :, :30, :30], sig_dims=2)
    with pytest.raises(ValueError, match="30 x 30 pixels"):
        inline.run_udf(ds, RrVAEEncoderUDF(model, recipe=recipe))


def test_missing_libertem_names_the_extra(monkeypatch, setup):
    import rrvae_nb.udf as udf_module

    monkeypatch.setattr(udf_module, "HAVE_LIBERTEM", False)
    with pytest.raises(ImportError, match=r"rrvae-nb\[live\]"):
        udf_module.RrVAEEncoderUDF(setup[2], recipe=setup[3])
