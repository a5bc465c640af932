"""Property tests: random shapes, dtypes, calibrations and NaN positions through the main entry
points. Each call either returns a finite result of the documented shape or raises a ValueError
(or TypeError) whose message names the argument at fault; nothing else (no ZeroDivisionError,
no IndexError, no silent NaN maps).

Small example counts and a fixed seed (``derandomize``) keep them to seconds and reproducible.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rrvae_nb.com import center_of_mass  # noqa: E402
from rrvae_nb.preprocess import prepare  # noqa: E402
from rrvae_nb.signals import Calibration  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

DTYPES = ("uint8", "uint16", "int32", "float32", "float64")
BAD_VALUES = (0.0, -1.0, float("nan"), float("inf"), -float("inf"))


def mostly(good, bad, n=4):
    """``good`` about n times as often as ``bad`` (hypothesis favours the ends of a range, so
    the choice is taken from the middle of one)."""
    return st.integers(1, 100).flatmap(lambda i: bad if i % (n + 1) == 3 else good)


good_step = st.floats(min_value=1e-3, max_value=1e3)
any_step = mostly(good_step, st.sampled_from(BAD_VALUES))
steps = st.one_of(any_step, st.tuples(any_step, any_step))
offsets = mostly(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), st.just((np.nan, 0.0)))


@st.composite
def cubes(draw, max_scan=4, max_k=10):
    """(scan y, scan x, ky, kx) counts of a random dtype, mostly square patterns, sometimes
    with one NaN/inf value or faint (partly empty) patterns."""
    ky = draw(st.integers(2, max_k))
    kx = draw(mostly(st.just(ky), st.integers(2, max_k), n=2))
    shape = (draw(st.integers(1, max_scan)), draw(st.integers(1, max_scan)), ky, kx)
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dose = draw(mostly(st.sampled_from([5.0, 200.0]), st.just(0.05)))
    data = (rng.poisson(dose, shape) + rng.integers(0, 2, shape)).astype(dtype)
    if dtype.startswith("float") and draw(mostly(st.just(False), st.just(True), n=2)):
        where = tuple(draw(st.integers(0, n - 1)) for n in shape)
        data[where] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        note(f"bad value at {where}")
    note(f"data {shape} {dtype}")
    return data


def assert_names(err: Exception, *names: str) -> None:
    """The refusal names one of the arguments (or the data) it is about."""
    assert isinstance(err, (ValueError, TypeError)), repr(err)
    text = str(err)
    event(f"refused: {text[:60]}")
    assert any(name in text for name in names), f"{text!r} names none of {names}"


def calibration_or_refusal(scan, k, k_offset):
    """A Calibration, or None after checking that its refusal names the value at fault."""
    try:
        return Calibration(scan_step_nm=scan, k_step_mrad=k, k_offset_mrad=k_offset)
    except ValueError as err:
        assert_names(err, "scan_step_nm", "k_step_mrad", "k_offset_mrad")
        return None


@SETTINGS
@given(data=cubes(), k=steps, k_offset=offsets, crop=mostly(st.none(), st.integers(1, 12), n=2),
       centre=st.booleans(), bin_factor=st.none() | st.integers(1, 3),
       square_pixels=st.sampled_from(["refuse", "resample"]), lazy=st.booleans())
def test_prepare_gives_finite_unit_patterns_or_a_named_refusal(data, k, k_offset, crop, centre,
                                                                bin_factor, square_pixels, lazy):
    cal = calibration_or_refusal(0.1, k, k_offset)
    if cal is None:
        return
    source = data
    if lazy:
        da = pytest.importorskip("dask.array")
        source = da.from_array(data, chunks=(1, 2) + data.shape[2:])
    try:
        out = prepare(source, calibration=cal, crop=crop, centre=centre, bin_factor=bin_factor,
                      square_pixels=square_pixels, progress=False)
    except (ValueError, TypeError) as err:
        assert_names(err, "data", "patterns", "pattern", "crop", "bin_factor", "square_pixels")
        return
    event("prepared")
    n, h, w = out.patterns.shape
    assert n == data.shape[0] * data.shape[1] and h == w
    assert out.patterns.dtype == np.float32 and np.isfinite(out.patterns).all()
    assert out.patterns.min() >= 0 and out.patterns.max() <= 1
    assert out.calibration.square_k and out.scan_shape == data.shape[:2]


@SETTINGS
@given(data=cubes(), k=mostly(steps, st.none()), units=st.sampled_from(["px", "mrad", "1/Å"]),
       origin=mostly(st.just("mean"), st.one_of(
           st.tuples(st.floats(0, 1), st.floats(0, 1)).map(lambda p: (p[0] * 9, p[1] * 9)),
           st.tuples(st.floats(-20, 30), st.floats(-20, 30)), st.just((np.nan, 1.0))), n=2),
       negative=st.sampled_from(["raise", "clip", "keep"]),
       scan=mostly(st.none(), steps, n=1),
       energy=mostly(st.just(60.0), st.sampled_from([None, 0.0, -5.0]), n=3))
def test_center_of_mass_gives_finite_maps_or_a_named_refusal(data, k, units, origin, negative,
                                                              scan, energy):
    try:
        com = center_of_mass(data, units=units, k_step_mrad=k, origin=origin,
                             negative=negative, scan_step_nm=scan, energy_kev=energy,
                             progress=False)
    except (ValueError, TypeError) as err:
        assert_names(err, "data", "patterns", "k_step_mrad", "origin", "scan_step_nm",
                     "beam energy", "energy_kev")
        return
    event("COM maps")
    assert com.com_y.shape == com.com_x.shape == data.shape[:2]
    assert np.isfinite(com.com_y).all() and np.isfinite(com.com_x).all()
    assert np.isfinite(com.icom).all()
    if min(data.shape[:2]) >= 2:
        assert np.isfinite(com.divergence()).all() and np.isfinite(com.curl()).all()
    else:
        with pytest.raises(ValueError, match="at least 2 scan positions"):
            com.divergence()


@SETTINGS
@given(data=cubes(), scan=steps, k=steps, k_offset=offsets,
       inner=mostly(st.sampled_from([0.0, 1.0, 10.0]), st.sampled_from([1e4, -1.0, np.nan])),
       outer=mostly(st.sampled_from([None, 50.0, 1e3]), st.sampled_from([5.0, 0.5, np.nan])),
       centre=mostly(st.sampled_from(["calibration", "bf_disk"]), st.one_of(
           st.just("middle"), st.tuples(st.floats(-5, 15), st.floats(-5, 15)))),
       as_signal=st.booleans())
def test_annular_image_gives_a_finite_image_or_a_named_refusal(data, scan, k, k_offset, inner,
                                                               outer, centre, as_signal):
    from rrvae_nb.detector import annular_image

    cal = calibration_or_refusal(scan, k, k_offset)
    if cal is None:
        return
    kwargs = {"calibration": cal}
    if as_signal:
        pytest.importorskip("hyperspy")
        from rrvae_nb.signals import make_signal

        data, kwargs = make_signal(data, cal), {}
    try:
        image = annular_image(data, inner, outer, centre=centre, **kwargs)
    except (ValueError, TypeError) as err:
        assert_names(err, "data", "inner_mrad", "outer_mrad", "centre", "pattern")
        return
    event("annular image")
    shape = data.data.shape[:2] if as_signal else data.shape[:2]
    assert image.shape == shape and image.dtype == np.float64 and np.isfinite(image).all()
