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
    meta["spatial_calibrations"][3]["scale"] *= 1.2
    with pytest.raises(ValueError, match="not square"):
        io.load(_nion_export(tmp_path / "rect.ndata1", data, meta))


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
