"""Tests of rrvae_nb.core: one (array, calibration) conversion for signals, numpy and dask; the
chunked pass equals the eager numpy result for any chunking and byte budget; pixel checks."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from rrvae_nb import core
from rrvae_nb.signals import Calibration, make_signal

pytest.importorskip("hyperspy")

CAL = Calibration(scan_step_nm=(0.02, 0.03), k_step_mrad=1.5, scan_offset_nm=(0.1, -0.2),
                  k_offset_mrad=(-9.0, -7.5), energy_kev=80.0, convergence_mrad=25.0)


@pytest.fixture(scope="module")
def cube():
    return np.random.default_rng(0).random((7, 5, 12, 10)).astype(np.float32)


# ------------------------------------------------------------------ conversion

def test_signal_numpy_and_dask_give_the_same_array_and_calibration(cube):
    inputs = {
        "signal": make_signal(cube, CAL),
        "lazy signal": make_signal(da.from_array(cube, chunks=(3, 2, -1, -1)), CAL),
        "numpy": cube,
        "dask": da.from_array(cube, chunks=(2, 5, 6, 10)),
    }
    for name, data in inputs.items():
        given = None if hasattr(data, "axes_manager") else CAL
        array, cal = core.as_data(data, given)
        assert cal == CAL, name
        assert core.is_dask(array) == ("lazy" in name or name == "dask"), name
        np.testing.assert_array_equal(np.asarray(array), cube, err_msg=name)


def test_as_data_keeps_numpy_and_converts_lists(cube):
    array, cal = core.as_data(cube)
    assert array is cube and cal is None
    array, _ = core.as_data(cube.tolist())
    assert isinstance(array, np.ndarray) and array.shape == cube.shape


def test_as_data_refuses_what_it_cannot_use(cube):
    with pytest.raises(ValueError, match="leave calibration out"):
        core.as_data(make_signal(cube, CAL), CAL)
    with pytest.raises(ValueError, match="A plain array has no calibration"):
        core.as_data(cube, require_calibration=True)
    with pytest.raises(ValueError, match="calibration must be a rrvae_nb.signals.Calibration"):
        core.as_data(cube, {"k_step_mrad": 1.0})
    with pytest.raises(ValueError, match="must have 4 axes"):
        core.check_cube(cube[0])
    with pytest.raises(ValueError, match="empty"):
        core.check_cube(cube[:0])
    with pytest.raises(ValueError, match="real intensities"):
        core.check_cube(cube.astype(complex))


# ------------------------------------------------------------------ the chunked pass

def _moments(block):
    """Per pattern: total, sum of squares, maximum (float64)."""
    b = block.astype(np.float64)
    return np.stack([b.sum(axis=(-2, -1)), (b**2).sum(axis=(-2, -1)), b.max(axis=(-2, -1))],
                    axis=-1)


def _half(block):
    """Per pattern: the top-left quarter, halved (float32)."""
    return block[..., :6, :5] / np.float32(2)


def _total(block):
    return block.sum(axis=(-2, -1), dtype=np.float64)


@pytest.mark.parametrize("budget", [1, 500, 3 * 12 * 10 * 4 * 5, 2**30])
def test_numpy_blocks_equal_the_eager_result_for_any_budget(cube, budget, monkeypatch):
    monkeypatch.setattr(core, "BLOCK_BYTES", budget)
    starts = [start for start, _ in core.iter_blocks(cube)]
    assert starts[0] == 0 and len(starts) == len(range(0, 7, core.block_rows(cube.shape, 4,
                                                                             budget)))
    moments, half, total = core.map_patterns(
        cube, core.PerPattern(_moments, (3,)), core.PerPattern(_half, (6, 5), np.float32),
        core.PerPattern(_total), desc="test", progress=False,
    )
    np.testing.assert_array_equal(moments, _moments(cube))
    np.testing.assert_array_equal(half, _half(cube))
    np.testing.assert_array_equal(total, _total(cube))
    np.testing.assert_array_equal(core.mean_pattern(cube, progress=False),
                                  cube.reshape(-1, 12, 10).sum(0, dtype=np.float64) / 35)


@pytest.mark.parametrize("chunks", [(1, 1, -1, -1), (3, 2, -1, -1), (7, 5, 5, 3), (2, 5, 12, 4)])
def test_dask_chunks_equal_the_eager_result(cube, chunks):
    lazy = da.from_array(cube, chunks=chunks)
    moments, half, total = core.map_patterns(
        lazy, core.PerPattern(_moments, (3,)), core.PerPattern(_half, (6, 5), np.float32),
        core.PerPattern(_total), desc="test", progress=False,
    )
    assert all(isinstance(a, np.ndarray) for a in (moments, half, total))
    np.testing.assert_array_equal(moments, _moments(cube))
    np.testing.assert_array_equal(half, _half(cube))
    np.testing.assert_array_equal(total, _total(cube))
    np.testing.assert_allclose(core.mean_pattern(lazy, progress=False),
                               cube.mean(axis=(0, 1), dtype=np.float64), rtol=1e-12)
    (kept,) = core.map_patterns(lazy, core.PerPattern(_half, (6, 5), np.float32), desc="test",
                                compute_result=False)
    assert core.is_dask(kept) and kept.shape == (7, 5, 6, 5)
    np.testing.assert_array_equal(kept.compute(), _half(cube))


def test_stacks_and_kwargs_and_no_view_of_the_input(cube):
    stack = cube.reshape(-1, 12, 10)

    def scaled(block, factor):
        return block * factor

    (out,) = core.map_patterns(stack, core.PerPattern(scaled, (12, 10), np.float32,
                                                      dict(factor=np.float32(3))), desc="t")
    np.testing.assert_array_equal(out, stack * np.float32(3))
    # a single chunk whose function returns its input: the result still owns its memory
    (same,) = core.map_patterns(da.from_array(stack, chunks=-1),
                                core.PerPattern(lambda b: b, (12, 10), np.float32), desc="t")
    assert not np.shares_memory(same, stack)


def test_progress_policy_and_compute_pass_through(cube):
    assert core.show_progress(cube, None) is False            # small numpy data: no bar
    assert core.show_progress(da.from_array(cube), None) is True
    assert core.show_progress(cube, True) is True
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (2**16, 2**15), (0, 0))
    assert core.show_progress(big, None) is True               # 8 GiB of numpy data
    a = np.arange(3)
    assert core.compute(a, 2.0) == (a, 2.0)
    x, y = core.compute(da.from_array(a).sum(), 5, progress=False)
    assert x == 3 and y == 5


def test_block_rows_bounds():
    assert core.block_rows((10, 4, 8, 8), 4, budget=4 * 8 * 8 * 4 * 3) == 3
    assert core.block_rows((10, 4, 8, 8), 4, budget=1) == 1
    assert core.block_rows((10, 4, 8, 8), 4, budget=2**40) == 10
    assert core.block_rows((0, 4), 4) == 1


# ------------------------------------------------------------------ pixel positions

def test_check_on_camera_and_pixel_pair():
    assert core.check_on_camera((0, 7.0), (8, 8), label="p", subject="it", fix="") == (0.0, 7.0)
    with pytest.raises(ValueError, match=r"p lies outside the 8 x 9 pattern: it must satisfy "
                                         r"0 <= ky <= 7 and 0 <= kx <= 8 \(pixels"):
        core.check_on_camera((8.0, 0), (8, 9), label="p", subject="it", fix="Fix it.")
    with pytest.raises(ValueError, match="outside"):
        core.check_on_camera((np.nan, 1), (8, 8), label="p", subject="it", fix="")
    assert core.pixel_pair([1, 2.5], "c") == (1.0, 2.5)
    for bad in ((1.0, np.inf), (1, 2, 3), "ab", None):
        with pytest.raises(ValueError, match="c must be two finite numbers"):
            core.pixel_pair(bad, "c")
