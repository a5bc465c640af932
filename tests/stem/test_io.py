"""Tests for rrvae_nb.io: .hspy, Nion Swift .ndata1/.ndata/.npy+.json reading and writing."""

from __future__ import annotations

import io as stdio
import json
import os
import struct
import zipfile
from datetime import datetime, timezone

import numpy as np
import pytest

pytest.importorskip("hyperspy")
da = pytest.importorskip("dask.array")

from rrvae_nb import io  # noqa: E402
from rrvae_nb.signals import Calibration, calibration_of, make_signal  # noqa: E402

CAL = Calibration(scan_step_nm=1.0 / 64, k_step_mrad=2.83, scan_offset_nm=(-0.5, -0.25),
                  k_offset_mrad=(-90.56, -90.56), energy_kev=60.0, convergence_mrad=30.0)


def _data(shape=(6, 5, 9, 9), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _signal(lazy=False):
    data = _data()
    return make_signal(da.from_array(data, chunks=(2, 5, 9, 9)) if lazy else data, CAL,
                       title="round trip")


def _assert_same_calibration(a: Calibration, b: Calibration):
    for name in ("scan_step_nm", "k_step_mrad", "energy_kev", "convergence_mrad"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12), name
    np.testing.assert_allclose(a.scan_offset_nm, b.scan_offset_nm, rtol=1e-12)
    np.testing.assert_allclose(a.k_offset_mrad, b.k_offset_mrad, rtol=1e-12)


def _nion_export(path, data, meta, data_first=False, compress=zipfile.ZIP_STORED):
    """Write a file the way Nion Swift does: zip of metadata.json and data.npy."""
    buf = stdio.BytesIO()
    np.save(buf, data)
    members = [("metadata.json", json.dumps(meta).encode("latin-1")),
               ("data.npy", buf.getvalue())]
    if data_first:
        members.reverse()
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for name, raw in members:
            zf.writestr(name, raw)
    return path


def _nion_meta(shape, k_units="rad", k_scale=0.00283, **extra):
    """metadata.json with the keys of Nion Swift's export (ImportExportManager)."""
    meta = {
        "version": 1,
        "reader_version": 1,
        "spatial_calibrations": [
            {"offset": -0.5, "scale": 1.0 / 64, "units": "nm"},
            {"offset": -0.5, "scale": 1.0 / 64, "units": "nm"},
        ] + [{"offset": -n / 2 * k_scale, "scale": k_scale, "units": k_units} for n in shape[2:]],
        "intensity_calibration": {"offset": 0.0, "scale": 1.0, "units": "counts"},
        "collection_dimension_count": 2,
        "datum_dimension_count": 2,
        "metadata": {"instrument": {"high_tension": 60000.0, "defocus": 0.0},
                     "hardware_source": {"hardware_source_id": "ronchigram_camera",
                                         "exposure": 0.001, "C1 ConstW": 1.0}},
        "properties": {"hardware_source_id": "ronchigram_camera", "exposure": 0.001},
        "title": "4D graphene 64x64x256x256 1nmFOV",
        "source_file_path": "C:/Users/x/Nion Swift Library",
        "datetime_modified": {"local_datetime": "2019-10-15T17:02:12.123456", "tz": "-0400",
                              "dst": "+60", "timezone": "America/New_York"},
        "datetime_original": {"local_datetime": "2019-10-15T17:02:12.123456", "tz": "-0400",
                              "dst": "+60", "timezone": "America/New_York"},
        "uuid": "0b1f4c5e-7c53-4e1c-9a31-1b9b1f63a9f0",
    }
    meta.update(extra)
    return meta


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source_lazy", [False, True])
def test_ndata1_round_trip_eager_and_lazy(tmp_path, source_lazy):
    sig = _signal(lazy=source_lazy)
    path = io.write_ndata1(tmp_path / "rt.ndata1", sig)
    expected = _data()
    eager = io.read_ndata1(path)
    np.testing.assert_array_equal(eager.data, expected)
    _assert_same_calibration(calibration_of(eager), CAL)
    assert eager.metadata.General.title == "round trip"
    lazy = io.load(path, lazy=True)
    assert lazy._lazy and isinstance(lazy.data, da.Array)
    # The lazy signal reads the file through a memory map, not a copy in memory.
    assert any(isinstance(v, np.memmap) for v in dict(lazy.data.dask).values())
    np.testing.assert_array_equal(lazy.data.compute(), expected)
    _assert_same_calibration(calibration_of(lazy), CAL)
    assert os.listdir(tmp_path) == ["rt.ndata1"]


def test_ndata1_compressed_round_trip_and_lazy_refusal(tmp_path):
    sig = make_signal(np.zeros((8, 8, 16, 16), np.float32), CAL)
    small = io.write_ndata1(tmp_path / "z.ndata1", sig, compress=True)
    big = io.write_ndata1(tmp_path / "s.ndata1", sig)
    assert small.stat().st_size < big.stat().st_size / 10
    np.testing.assert_array_equal(io.read_ndata1(small).data, 0.0)
    with pytest.raises(ValueError, match="compressed.*lazy=False"):
        io.read_ndata1(small, lazy=True)


def test_written_file_has_nion_layout(tmp_path):
    """Parse our file as Nion Swift's own reader does: local headers read in sequence."""
    ts = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    path = io.write_ndata1(tmp_path / "n.ndata1", _signal(), timestamp=ts)
    raw = path.read_bytes()
    members, pos = {}, 0
    while raw[pos:pos + 4] == b"PK\x03\x04":
        flags, method = struct.unpack("<HH", raw[pos + 6:pos + 10])
        size = struct.unpack("<I", raw[pos + 18:pos + 22])[0]
        name_len, extra_len = struct.unpack("<HH", raw[pos + 26:pos + 30])
        name = raw[pos + 30:pos + 30 + name_len].decode()
        start = pos + 30 + name_len + extra_len
        assert method == 0 and not flags & 0x08  # stored, sizes in the local header
        members[name] = raw[start:start + size]
        pos = start + size
    assert list(members) == ["metadata.json", "data.npy"]  # order of Nion's exporter
    np.testing.assert_array_equal(np.load(stdio.BytesIO(members["data.npy"])), _data())
    meta = json.loads(members["metadata.json"])
    assert meta["collection_dimension_count"] == 2 and meta["datum_dimension_count"] == 2
    assert meta["metadata"]["instrument"]["high_tension"] == pytest.approx(60000.0)
    assert meta["spatial_calibrations"][2] == {"offset": -90.56, "scale": 2.83,
                                                "units": "mrad"}
    assert meta["datetime_original"]["local_datetime"] == "2024-05-06T07:08:09.000000"
    # Same input and timestamp: byte-identical file.
    again = io.write_ndata1(tmp_path / "m.ndata1", _signal(), timestamp=ts)
    assert again.read_bytes() == raw


def test_reads_nion_export_with_rad_units(tmp_path):
    data = _data((4, 4, 8, 8), seed=1)
    path = _nion_export(tmp_path / "export.ndata1", data, _nion_meta(data.shape))
    sig = io.load(path)
    np.testing.assert_array_equal(sig.data, data)
    cal = calibration_of(sig)
    assert cal.k_step_mrad == pytest.approx(2.83)  # 0.00283 rad
    assert cal.k_offset_mrad[0] == pytest.approx(-4 * 2.83)
    assert cal.scan_step_nm == pytest.approx(1 / 64)
    assert cal.energy_kev == pytest.approx(60.0)  # from high_tension in volts
    assert cal.convergence_mrad is None  # Nion records none: not invented
    assert sig.original_metadata.metadata.instrument.defocus == 0.0
    assert sig.metadata.General.title == "4D graphene 64x64x256x256 1nmFOV"


def test_reads_nion_library_layout(tmp_path):
    """A library .ndata: data.npy first, 'dimensional_calibrations', 'data_shape'."""
    data = _data((3, 4, 6, 6), seed=2)
    meta = _nion_meta(data.shape, k_units="mrad", k_scale=1.5, type="data-item",
                      data_shape=list(data.shape), data_dtype="float32")
    meta["dimensional_calibrations"] = meta.pop("spatial_calibrations")
    path = _nion_export(tmp_path / "lib.ndata", data, meta, data_first=True)
    for lazy in (False, True):
        sig = io.load(path, lazy=lazy)
        np.testing.assert_array_equal(np.asarray(sig.data), data)
        assert calibration_of(sig).k_step_mrad == pytest.approx(1.5)


def test_reads_haadf_image(tmp_path):
    img = _data((64, 64), seed=3)
    meta = _nion_meta((64, 64), collection_dimension_count=0, datum_dimension_count=2)
    path = _nion_export(tmp_path / "haadf.ndata1", img, meta)
    sig = io.load(path)
    assert sig.axes_manager.navigation_dimension == 0 and sig.axes_manager.signal_dimension == 2
    np.testing.assert_array_equal(sig.data, img)
    x = sig.axes_manager.signal_axes[0]
    assert x.units == "nm" and x.scale == pytest.approx(1 / 64) and x.offset == -0.5


def test_reads_nion_npy_with_sidecar(tmp_path):
    data = _data((3, 3, 5, 5), seed=4)
    np.save(tmp_path / "raw.npy", data)
    (tmp_path / "raw.json").write_text(json.dumps(_nion_meta(data.shape)))
    eager = io.load(tmp_path / "raw.npy")
    lazy = io.load(tmp_path / "raw.npy", lazy=True)
    np.testing.assert_array_equal(eager.data, data)
    np.testing.assert_array_equal(lazy.data.compute(), data)
    assert calibration_of(lazy).k_step_mrad == pytest.approx(2.83)
    (tmp_path / "raw.json").unlink()
    with pytest.raises(OSError, match="sidecar"):
        io.read_nion_npy(tmp_path / "raw.npy")


def test_reciprocal_units_are_converted_with_the_wavelength(tmp_path):
    # Textbook relativistic wavelengths: 4.866 pm at 60 kV, 2.508 pm at 200 kV.
    assert io.electron_wavelength_nm(60) == pytest.approx(0.004866, rel=1e-3)
    assert io.electron_wavelength_nm(200) == pytest.approx(0.002508, rel=1e-3)
    data = _data((2, 2, 4, 4))
    path = _nion_export(tmp_path / "k.ndata1", data,
                        _nion_meta(data.shape, k_units="1/nm", k_scale=0.5))
    # 0.5 nm^-1 x 4.866 pm = 2.433 mrad
    assert calibration_of(io.load(path)).k_step_mrad == pytest.approx(0.5 * 4.866, rel=1e-3)
    meta = _nion_meta(data.shape, k_units="1/nm", k_scale=0.5)
    del meta["metadata"]["instrument"]["high_tension"]
    path = _nion_export(tmp_path / "k2.ndata1", data, meta)
    with pytest.raises(ValueError, match="energy_kev"):
        io.load(path)
    assert calibration_of(io.load(path, energy_kev=200)).k_step_mrad == pytest.approx(
        0.5 * 2.508, rel=1e-3)


def test_hspy_round_trip_and_atomic_write(tmp_path):
    for lazy_src in (False, True):
        path = io.save(tmp_path / "s.hspy", _signal(lazy=lazy_src))
        for lazy in (False, True):
            back = io.load(path, lazy=lazy)
            assert back._lazy == lazy
            np.testing.assert_array_equal(np.asarray(back.data), _data())
            _assert_same_calibration(calibration_of(back), CAL)
    assert sorted(os.listdir(tmp_path)) == ["s.hspy"]


def _failing_signal():
    def boom(block):
        raise RuntimeError("simulated failure half-way")

    data = da.from_array(_data(), chunks=(2, 5, 9, 9))
    data = data.map_blocks(lambda b, block_info=None: (
        boom(b) if block_info[0]["chunk-location"][0] == 2 else b), dtype=data.dtype)
    return make_signal(data, CAL)


@pytest.mark.parametrize("suffix", [".ndata1", ".hspy"])
def test_failed_write_leaves_no_partial_file(tmp_path, suffix):
    target = tmp_path / f"out{suffix}"
    with pytest.raises(RuntimeError, match="half-way"):
        io.save(target, _failing_signal())
    assert os.listdir(tmp_path) == []
    io.save(target, _signal())
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="half-way"):
        io.save(target, _failing_signal())
    assert os.listdir(tmp_path) == [target.name] and target.read_bytes() == before


# --------------------------------------------------------------------------------------------
# Bad files
# --------------------------------------------------------------------------------------------


def test_truncated_and_corrupt_files(tmp_path):
    good = io.write_ndata1(tmp_path / "g.ndata1", _signal())
    raw = good.read_bytes()
    (tmp_path / "t.ndata1").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OSError, match="truncated or corrupt"):
        io.load(tmp_path / "t.ndata1")
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF  # inside the stored array
    (tmp_path / "c.ndata1").write_bytes(bytes(flipped))
    with pytest.raises(OSError, match="CRC"):
        io.load(tmp_path / "c.ndata1")
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "absent.ndata1")


def test_missing_members(tmp_path):
    with zipfile.ZipFile(tmp_path / "nojson.ndata1", "w") as zf:
        zf.writestr("data.npy", b"")
    with pytest.raises(OSError, match="'metadata.json' is missing"):
        io.load(tmp_path / "nojson.ndata1")
    with zipfile.ZipFile(tmp_path / "nodata.ndata1", "w") as zf:
        zf.writestr("metadata.json", "{}")
    with pytest.raises(OSError, match="'data.npy' is missing"):
        io.load(tmp_path / "nodata.ndata1")
    data = _data((2, 2, 4, 4))
    buf = stdio.BytesIO()
    np.save(buf, data)
    with zipfile.ZipFile(tmp_path / "badjson.ndata1", "w") as zf:
        zf.writestr("metadata.json", "{oops")
        zf.writestr("data.npy", buf.getvalue())
    with pytest.raises(OSError, match="not valid JSON"):
        io.load(tmp_path / "badjson.ndata1")


def test_wrong_dimension_counts_and_shapes(tmp_path):
    data = _data((2, 3, 4, 4))
    meta = _nion_meta(data.shape, collection_dimension_count=1)
    with pytest.raises(ValueError, match="collection_dimension_count=1"):
        io.load(_nion_export(tmp_path / "a.ndata1", data, meta))
    meta = _nion_meta(data.shape)
    meta["spatial_calibrations"] = meta["spatial_calibrations"][:3]
    with pytest.raises(ValueError, match="3 axis calibrations"):
        io.load(_nion_export(tmp_path / "b.ndata1", data, meta))
    meta = _nion_meta(data.shape, data_shape=[3, 2, 4, 4])
    with pytest.raises(ValueError, match="data_shape"):
        io.load(_nion_export(tmp_path / "c.ndata1", data, meta))
    meta = _nion_meta(data.shape, is_sequence=True)
    with pytest.raises(ValueError, match="sequence"):
        io.load(_nion_export(tmp_path / "d.ndata1", data, meta))


def test_missing_or_bad_calibration(tmp_path):
    data = _data((2, 2, 4, 4))
    meta = _nion_meta(data.shape)
    for cal in meta["spatial_calibrations"][2:]:
        cal.update(units="", scale=1.0, offset=0.0)  # Nion's "uncalibrated"
    path = _nion_export(tmp_path / "nok.ndata1", data, meta)
    with pytest.raises(ValueError, match="k_step_mrad="):
        io.load(path)
    assert calibration_of(io.load(path, k_step_mrad=1.2)).k_step_mrad == 1.2
    meta = _nion_meta(data.shape)
    del meta["spatial_calibrations"]
    path = _nion_export(tmp_path / "nocal.ndata1", data, meta)
    with pytest.raises(ValueError, match="scan_step_nm="):
        io.load(path)
    cal = calibration_of(io.load(path, scan_step_nm=0.1, k_step_mrad=2.0))
    assert (cal.scan_step_nm, cal.k_step_mrad) == (0.1, 2.0)
    meta = _nion_meta(data.shape)
    meta["spatial_calibrations"][3]["scale"] *= 1.2  # rectangular pixels: valid, read as they are
    cal = calibration_of(io.load(_nion_export(tmp_path / "rect.ndata1", data, meta)))
    assert cal.k_steps_mrad == pytest.approx((2.83, 2.83 * 1.2))
    meta = _nion_meta(data.shape)
    meta["spatial_calibrations"][1]["scale"] = 0.0
    with pytest.raises(ValueError, match=r"scan axis x has scale 0.0 nm.*scan_step_nm="):
        io.load(_nion_export(tmp_path / "zero.ndata1", data, meta))
    meta = _nion_meta(data.shape)
    meta["spatial_calibrations"][2]["scale"] = -0.001
    with pytest.raises(ValueError, match=r"diffraction axis ky has scale -0.001 rad.*k_step_mrad="):
        io.load(_nion_export(tmp_path / "neg.ndata1", data, meta))
    with pytest.raises(ValueError, match=r"k_step_mrad: the ky step must be a finite number > 0"):
        io.load(path, scan_step_nm=0.1, k_step_mrad=0.0)
    with pytest.raises(ValueError, match=r"scan_step_nm: the scan x step must be a finite"):
        io.load(path, scan_step_nm=(0.1, float("nan")), k_step_mrad=1.0)


def test_generic_load_errors(tmp_path):
    (tmp_path / "x.unknownext").write_text("hello")
    with pytest.raises(ValueError, match="no reader"):
        io.load(tmp_path / "x.unknownext")
    io.save(tmp_path / "s.hspy", _signal())
    raw = (tmp_path / "s.hspy").read_bytes()
    (tmp_path / "t.hspy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OSError, match="truncated or corrupt"):
        io.load(tmp_path / "t.hspy")
    with pytest.raises(ValueError, match=".hspy and .ndata1"):
        io.save(tmp_path / "x.tif", _signal())


# --------------------------------------------------------------------------------------------
# Rectangular pixels, step overrides, metadata round trips, OS errors (reliability issue)
# --------------------------------------------------------------------------------------------


def _rect_file(tmp_path, name="rect.ndata1"):
    data = _data((3, 4, 6, 8))
    meta = _nion_meta(data.shape, k_units="mrad", k_scale=2.0)
    meta["spatial_calibrations"][0].update(scale=0.02, offset=0.1)
    meta["spatial_calibrations"][1].update(scale=0.03, offset=-0.2)
    meta["spatial_calibrations"][3].update(scale=2.5, offset=-10.0)
    return _nion_export(tmp_path / name, data, meta), data


@pytest.mark.parametrize("lazy", [False, True])
def test_rectangular_pixels_are_read_with_their_true_calibration(tmp_path, lazy):
    """A valid Nion file whose steps differ in y and x used to be refused ("not square")."""
    path, data = _rect_file(tmp_path)
    sig = io.load(path, lazy=lazy)
    cal = calibration_of(sig)
    assert cal.scan_steps_nm == (0.02, 0.03)
    assert cal.k_steps_mrad == (2.0, 2.5)
    assert cal.scan_offset_nm == (0.1, -0.2)
    assert cal.k_offset_mrad == (-6.0, -10.0)
    assert not cal.square_scan and not cal.square_k
    # only what needs one step refuses, and says what to do
    with pytest.raises(ValueError, match="scan pixels are not square.*scan_steps_nm"):
        _ = cal.scan_step_nm
    with pytest.raises(ValueError, match="square_pixels='resample'"):
        _ = cal.k_step_mrad
    back = io.load(io.write_ndata1(tmp_path / "back.ndata1", sig))
    assert calibration_of(back) == cal
    np.testing.assert_array_equal(back.data, data)


def test_nearly_equal_steps_are_kept_apart():
    """Steps within 0.1 % used to be merged into one (signals.SQUARE_TOLERANCE)."""
    cal = Calibration(scan_step_nm=(0.1, 0.10005), k_step_mrad=(2.0, 2.0004))
    got = calibration_of(make_signal(_data((2, 2, 4, 4)), cal))
    assert got.scan_steps_nm == (0.1, 0.10005) and got.k_steps_mrad == (2.0, 2.0004)
    assert not got.square_scan and not got.square_k
    # float32 rounding of one scale is not a different step
    f32 = Calibration(scan_step_nm=(0.1, float(np.float32(0.1))), k_step_mrad=2.0)
    assert f32.square_scan and f32.scan_step_nm == 0.1
    assert f32.scan_steps_nm == (0.1, float(np.float32(0.1)))  # both kept as given


def test_overriding_a_step_keeps_the_files_offsets(tmp_path):
    """load(k_step_mrad=...) used to put k = 0 on camera pixel (0, 0), scan_step_nm= zeroed the
    scan offsets."""
    from rrvae_nb.com import center_of_mass
    from rrvae_nb.detector import annular_image, scattering_angle_mrad

    data = _data((2, 3, 8, 8)) + 0.1
    meta = _nion_meta(data.shape)  # k = 0 on pixel 4; scan starts at -0.5 nm = -32 px
    path = _nion_export(tmp_path / "a.ndata1", data, meta)
    sig = io.load(path, k_step_mrad=1.5, scan_step_nm=0.1)
    cal = calibration_of(sig)
    assert cal.k_steps_mrad == (1.5, 1.5)
    assert cal.k_offset_mrad == pytest.approx((-4 * 1.5, -4 * 1.5))
    assert cal.scan_offset_nm == pytest.approx((-3.2, -3.2))
    assert np.unravel_index(scattering_angle_mrad(cal, (8, 8)).argmin(), (8, 8)) == (4, 4)
    assert center_of_mass(sig, origin="axes", units="px").origin_px == pytest.approx((4, 4))
    ring = scattering_angle_mrad(cal, (8, 8)) < 1.6  # pixel 4 and its 4 neighbours
    np.testing.assert_allclose(annular_image(sig, 0.0, 1.6), data[..., ring].sum(-1))
    # a file without usable offsets: k = 0 at the pattern centre, the scan starts at 0 nm
    for c in meta["spatial_calibrations"]:
        c.update(units="", scale=1.0, offset=0.0)
    path = _nion_export(tmp_path / "b.ndata1", data, meta)
    cal = calibration_of(io.load(path, k_step_mrad=(1.5, 2.0), scan_step_nm=0.1))
    assert cal.k_offset_mrad == pytest.approx((-3.5 * 1.5, -3.5 * 2.0))
    assert cal.scan_offset_nm == (0.0, 0.0)


def test_nion_metadata_and_intensity_units_survive_round_trips(tmp_path):
    """write_ndata1 used to drop the Nion metadata tree and the intensity units."""
    data = _data((2, 3, 8, 8))
    meta = _nion_meta(data.shape)
    first = io.load(_nion_export(tmp_path / "orig.ndata1", data, meta))
    again = io.load(io.write_ndata1(tmp_path / "copy.ndata1", first))
    io.save(tmp_path / "copy.hspy", again)  # numpy scalars in original_metadata after .hspy
    third = io.load(io.write_ndata1(tmp_path / "copy2.ndata1", io.load(tmp_path / "copy.hspy")))
    for sig in (again, third):
        om = sig.original_metadata.as_dictionary()
        assert om["metadata"] == meta["metadata"]  # defocus, hardware source, exposure
        assert om["intensity_calibration"] == meta["intensity_calibration"]  # "counts"
        assert om["properties"] == meta["properties"]
        assert om["datetime_original"] == meta["datetime_original"]
        assert calibration_of(sig) == calibration_of(first)
        np.testing.assert_array_equal(sig.data, data)
    # a signal from elsewhere carries nothing over
    plain = io.load(io.write_ndata1(tmp_path / "plain.ndata1", _signal()))
    assert plain.original_metadata.as_dictionary()["intensity_calibration"]["units"] == ""


def test_lazy_read_checks_the_crc(tmp_path):
    """A lazy read used to skip the zip CRC check (an eager read did it)."""
    raw = bytearray(io.write_ndata1(tmp_path / "g.ndata1", _signal()).read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the stored array
    (tmp_path / "c.ndata1").write_bytes(bytes(raw))
    with pytest.raises(OSError, match="CRC"):
        io.load(tmp_path / "c.ndata1", lazy=True)
    lazy = io.read_ndata1(tmp_path / "c.ndata1", lazy=True, verify_crc=False)  # opt out
    assert lazy.data.shape == (6, 5, 9, 9)


def test_os_errors_name_the_path_and_the_fix(tmp_path, monkeypatch):
    """io.load used to pass raw OS errors through (and called a folder a missing file)."""
    with pytest.raises(FileNotFoundError, match="resolved from the working folder"):
        io.load(tmp_path / "absent.ndata1")
    (tmp_path / "folder.ndata1").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        io.load(tmp_path / "folder.ndata1")
    io.write_ndata1(tmp_path / "x.ndata1", _signal())
    with pytest.raises(IsADirectoryError, match=r"holds e\.g\. x\.ndata1"):
        io.load(tmp_path)
    denied = PermissionError(13, "Permission denied", str(tmp_path / "x.ndata1"))

    def refuse(*args, **kwargs):
        raise denied

    monkeypatch.setattr(zipfile, "ZipFile", refuse)
    with pytest.raises(PermissionError, match=r"Cannot read .*x\.ndata1: Permission denied\. "
                       r"You may not read it: check its permissions") as err:
        io.load(tmp_path / "x.ndata1")
    assert err.value.__cause__ is denied
