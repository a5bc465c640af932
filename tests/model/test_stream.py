"""Out-of-core path: lazy preprocessing, sampling and encoding equal the in-memory path,
in-process and on a dask.distributed cluster."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import rrvae_nb as rr
from rrvae_nb.preprocess import prepare
from rrvae_nb.signals import Calibration, make_signal
from rrvae_nb.stream import encode_maps, latent_names, sample_index, sample_patterns

CAL = Calibration(scan_step_nm=0.025, k_step_mrad=2.0, scan_offset_nm=(0.1, -0.2),
                  energy_kev=60.0, convergence_mrad=30.0)


@pytest.fixture(scope="module")
def cube():
    """(scan y, scan x, ky, kx) = (10, 12, 24, 24): a disk whose centre moves over the scan."""
    rng = np.random.default_rng(0)
    ny, nx, k = 10, 12, 24
    yy, xx = np.mgrid[:k, :k] - 11.5
    data = np.empty((ny, nx, k, k), np.float32)
    for i in range(ny):
        for j in range(nx):
            dy, dx = np.sin(i / 2.0), np.cos(j / 3.0)
            disk = ((yy - dy) ** 2 + (xx - dx) ** 2 < 36).astype(np.float32)
            data[i, j] = rng.poisson(200 * disk + 1)
    return data


@pytest.fixture(scope="module")
def model():
    m = rr.RrVAE((24, 24), 2, seed=0)
    return m


def test_lazy_prepare_equals_eager(cube):
    eager = prepare(make_signal(cube, CAL), progress=False)
    lazy = prepare(make_signal(da.from_array(cube, chunks=(3, 5, -1, -1)), CAL),
                   compute=False, progress=False)
    assert type(lazy.patterns).__module__.startswith("dask")
    np.testing.assert_allclose(lazy.patterns.compute(), eager.patterns, atol=1e-6)
    np.testing.assert_allclose(lazy.mean_pattern, eager.mean_pattern, rtol=1e-5)
    assert lazy.calibration == eager.calibration and lazy.scan_shape == eager.scan_shape
    with pytest.raises(ValueError, match="PCA needs the patterns in memory"):
        prepare(make_signal(da.from_array(cube), CAL), compute=False, pca_components=3,
                progress=False)


def test_sample_patterns(cube, tmp_path):
    prep = prepare(make_signal(da.from_array(cube, chunks=(3, 5, -1, -1)), CAL),
                   compute=False, progress=False)
    full = prep.patterns.compute()
    sub = sample_patterns(prep.patterns, 30, seed=4, cache=tmp_path / "s.npy", progress=False)
    np.testing.assert_array_equal(sub, full[sample_index(120, 30, 4)])
    again = sample_patterns(prep.patterns, 30, seed=4, cache=tmp_path / "s.npy")
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, sub)
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(ValueError, match="delete it"):
        sample_patterns(prep.patterns, 20, cache=tmp_path / "s.npy")
    # another seed draws other patterns: the old cache must not be returned (it used to be)
    with pytest.raises(ValueError, match="other arguments"):
        sample_patterns(prep.patterns, 30, seed=5, cache=tmp_path / "s.npy")
    other = sample_patterns(prep.patterns, 30, seed=5, cache=tmp_path / "t.npy")
    np.testing.assert_array_equal(other, full[sample_index(120, 30, 5)])
    np.testing.assert_array_equal(sample_patterns(full, 30, seed=4), sub)


def test_encode_maps_lazy_equals_eager_and_writes_hspy(cube, model, tmp_path):
    eager = prepare(make_signal(cube, CAL), progress=False)
    lazy = prepare(make_signal(da.from_array(cube, chunks=(3, 5, -1, -1)), CAL),
                   compute=False, progress=False)
    rr.fit(model, eager.patterns, epochs=2, batch_size=32, progress=False)
    ref = model.encode(eager.patterns)
    maps = encode_maps(model, lazy, chunk=17, path=tmp_path / "lat.hspy", progress=False)
    names = latent_names(model)
    assert maps.metadata.Signal.channels == names and maps.data.shape == (len(names), 10, 12)
    np.testing.assert_allclose(maps.data[names.index("angle")], eager.to_map(ref.angle),
                               atol=1e-5)
    np.testing.assert_allclose(maps.data[names.index("z1")], eager.to_map(ref.z[:, 1]),
                               atol=1e-5)
    ax_x, ax_y = maps.axes_manager.signal_axes
    assert (ax_y.scale, ax_y.offset, ax_y.units) == (0.025, 0.1, "nm")
    assert (ax_x.scale, ax_x.offset, ax_x.units) == (0.025, -0.2, "nm")
    from rrvae_nb.io import load

    back = load(tmp_path / "lat.hspy")
    np.testing.assert_array_equal(back.data, maps.data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.hspy"]


@pytest.mark.slow
def test_distributed_equals_in_process(cube, model, tmp_path):
    from distributed import Client, LocalCluster

    from rrvae_nb.io import load, save

    # a lazy .hspy source: its HDF5 handle sits in the task graph the cluster must ship
    save(tmp_path / "cube.hspy", make_signal(da.from_array(cube, chunks=(3, 5, -1, -1)), CAL),
         compression=None)
    lazy = prepare(load(tmp_path / "cube.hspy", lazy=True), compute=False, progress=False)
    local_maps = encode_maps(model, lazy, chunk=17, progress=False)
    local_sample = sample_patterns(lazy.patterns, 25, seed=1, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        lazy_d = prepare(load(tmp_path / "cube.hspy", lazy=True), compute=False,
                         progress=False)
        dist_maps = encode_maps(model, lazy_d, chunk=17, progress=False)
        dist_sample = sample_patterns(lazy_d.patterns, 25, seed=1, progress=False)
    np.testing.assert_allclose(dist_maps.data, local_maps.data, atol=1e-6)
    np.testing.assert_array_equal(dist_sample, local_sample)
