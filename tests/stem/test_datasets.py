"""Tests for rrvae_nb.datasets: shipped data (manifest) and on-demand downloads (local server)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hyperspy")

from rrvae_nb import datasets, io  # noqa: E402
from rrvae_nb.signals import Calibration, calibration_of, make_signal  # noqa: E402

from .._datasets_server import LocalServer, Route  # noqa: E402

# --------------------------------------------------------------------------------------------
# Shipped data
# --------------------------------------------------------------------------------------------


def _signal(seed=0):
    rng = np.random.default_rng(seed)
    data = rng.random((4, 5, 8, 8)).astype(np.float32)
    cal = Calibration(scan_step_nm=0.02, k_step_mrad=2.5, scan_offset_nm=(0.1, -0.2),
                      k_offset_mrad=(-10.0, -10.0), energy_kev=60.0, convergence_mrad=30.0)
    return make_signal(data, cal, title="tiny")


def _ship(tmp_path: Path, fmt="hspy", name="tiny_sim"):
    """A data folder with one dataset and its manifest, as data/make_data.py writes it."""
    sig = _signal()
    rel = f"sim/{name}.{fmt}"
    (tmp_path / "sim").mkdir(exist_ok=True)
    path = io.save(tmp_path / rel, sig)
    manifest = {"version": 1, "datasets": {name: {
        "file": rel, "format": fmt, "size": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "description": "a tiny test set", "recipe": "rrvae_nb.simulate.graphene",
        "params": {"scan": [4, 5]}, "seed": 3}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return sig, path, manifest


@pytest.mark.parametrize("fmt", ["hspy", "ndata1"])
def test_load_shipped_dataset_verifies_and_reads(tmp_path, fmt):
    sig, _, _ = _ship(tmp_path, fmt)
    out = datasets.load("tiny_sim", data_dir=tmp_path)
    np.testing.assert_array_equal(out.data, sig.data)
    assert calibration_of(out) == calibration_of(sig)
    assert out.metadata.General.rrvae_nb.dataset == "tiny_sim"
    assert out.metadata.General.rrvae_nb.seed == 3
    lazy = datasets.load("tiny_sim", lazy=True, data_dir=tmp_path)
    assert lazy._lazy
    np.testing.assert_array_equal(lazy.data.compute(), sig.data)


def test_list_datasets(tmp_path):
    _ship(tmp_path)
    assert datasets.list_datasets(tmp_path) == {"tiny_sim": "a tiny test set"}


def test_load_rejects_changed_or_missing_files(tmp_path):
    _, path, manifest = _ship(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(raw))
    with pytest.raises(OSError, match="SHA-256"):
        datasets.load("tiny_sim", data_dir=tmp_path)
    path.write_bytes(bytes(raw[:-10]))
    with pytest.raises(OSError, match="truncated"):
        datasets.load("tiny_sim", data_dir=tmp_path)
    path.unlink()
    with pytest.raises(OSError, match="make data"):
        datasets.load("tiny_sim", data_dir=tmp_path)
    with pytest.raises(ValueError, match="Available: \\['tiny_sim'\\]"):
        datasets.load("other", data_dir=tmp_path)


def test_bad_manifests(tmp_path):
    with pytest.raises(OSError, match="No data manifest"):
        datasets.load("x", data_dir=tmp_path / "nowhere")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        datasets.list_datasets(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 2, "datasets": {}}))
    with pytest.raises(ValueError, match="version-1"):
        datasets.list_datasets(tmp_path)
    entry = {"file": "../outside.hspy", "format": "hspy", "size": 1, "sha256": "0"}
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "datasets": {"a": entry}}))
    with pytest.raises(ValueError, match="relative path inside"):
        datasets.load("a", data_dir=tmp_path)
    entry = {"file": "a.tif", "format": "tif", "size": 1, "sha256": "0"}
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "datasets": {"a": entry}}))
    with pytest.raises(ValueError, match="format"):
        datasets.load("a", data_dir=tmp_path)


def test_default_data_dir_is_the_repository_data_folder(monkeypatch):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    repo = Path(datasets.__file__).resolve().parents[2]  # <repository>/rrvae_nb/stem/datasets.py
    assert datasets.default_data_dir() == repo / "data"
    monkeypatch.setenv(datasets.DATA_ENV, "/somewhere/else")
    assert datasets.default_data_dir() == Path("/somewhere/else")


# --------------------------------------------------------------------------------------------
# Downloads, against a local server
# --------------------------------------------------------------------------------------------

PAYLOAD = np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch):
    monkeypatch.setattr(datasets, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))


def _registry(url, *, hash_="sha256", size=True, fmt=None, file="payload.bin"):
    digest = {"sha256": "sha256:" + hashlib.sha256(PAYLOAD).hexdigest(),
              "md5": "md5:" + hashlib.md5(PAYLOAD).hexdigest(), None: None}[hash_]
    entry = {"file": file, "url": url, "hash": digest, "size": len(PAYLOAD) if size else None,
             "description": "test payload", "source": "the test suite",
             "licence": "CC0 for the test", "format": fmt}
    return {"version": 1, "datasets": {"payload": entry}}


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.mark.parametrize("hash_", ["sha256", "md5"])
def test_fetch_downloads_verifies_and_caches(tmp_path, capsys, hash_):
    route = Route(PAYLOAD)
    with LocalServer({"/f.bin": route}) as srv:
        reg = _registry(srv.url("/f.bin"), hash_=hash_)
        res = datasets.fetch("payload", cache_dir=tmp_path, progress=False, registry=reg)
        assert res.downloaded and res.path == tmp_path / "payload.bin"
        assert res.path.read_bytes() == PAYLOAD
        assert any(c.startswith(hash_) and "published" in c for c in res.checks)
        assert "CC0 for the test" in capsys.readouterr().out
        again = datasets.fetch("payload", cache_dir=tmp_path, progress=False, registry=reg)
    assert not again.downloaded
    assert len(route.requests) == 1  # the second fetch did not download
    assert _leftovers(tmp_path) == ["payload.bin"]


def test_fetch_uses_cache_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "envcache"))
    with LocalServer({"/f.bin": Route(PAYLOAD)}) as srv:
        res = datasets.fetch("payload", progress=False, verbose=False,
                             registry=_registry(srv.url("/f.bin")))
    assert res.path == tmp_path / "envcache" / "payload.bin"


def test_fetch_corrupted_file_leaves_nothing(tmp_path):
    bad = bytearray(PAYLOAD)
    bad[1234] ^= 0x01
    with LocalServer({"/f.bin": Route(bytes(bad))}) as srv:
        with pytest.raises(OSError, match="sha256") as err:
            datasets.fetch("payload", cache_dir=tmp_path, progress=False,
                           registry=_registry(srv.url("/f.bin")))
    assert "Nothing was kept" in str(err.value)
    assert _leftovers(tmp_path) == []


def test_fetch_resumes_after_dropped_connection(tmp_path):
    route = Route(PAYLOAD, drop_after=100_000, drops=2)
    with LocalServer({"/f.bin": route}) as srv:
        res = datasets.fetch("payload", cache_dir=tmp_path, progress=True, verbose=False,
                             registry=_registry(srv.url("/f.bin")))
    assert res.path.read_bytes() == PAYLOAD
    ranges = [r["range"] for r in route.requests]
    assert ranges == [None, "bytes=100000-", "bytes=200000-"]
    assert _leftovers(tmp_path) == ["payload.bin"]


def test_fetch_restarts_when_server_cannot_resume(tmp_path):
    route = Route(PAYLOAD, drop_after=50_000, drops=1, ranges=False)
    with LocalServer({"/f.bin": route}) as srv:
        res = datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                             registry=_registry(srv.url("/f.bin")))
    assert res.path.read_bytes() == PAYLOAD
    assert len(route.requests) == 2


def test_fetch_gives_up_cleanly_when_every_attempt_drops(tmp_path):
    route = Route(PAYLOAD, drop_after=10_000, drops=100)
    with LocalServer({"/f.bin": route}) as srv:
        with pytest.raises(OSError, match="attempts"):
            datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                           registry=_registry(srv.url("/f.bin")))
    assert len(route.requests) == 1 + len(datasets.RETRY_DELAYS_S)
    assert _leftovers(tmp_path) == []


def test_fetch_resumes_partial_file_from_an_earlier_session(tmp_path):
    (tmp_path / "payload.bin.part").write_bytes(PAYLOAD[:123_456])
    route = Route(PAYLOAD)
    with LocalServer({"/f.bin": route}) as srv:
        res = datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                             registry=_registry(srv.url("/f.bin")))
    assert res.path.read_bytes() == PAYLOAD
    assert [r["range"] for r in route.requests] == ["bytes=123456-"]


def test_fetch_discards_a_stale_partial_file_that_fails_the_check(tmp_path):
    (tmp_path / "payload.bin.part").write_bytes(b"x" * 1000)  # not a prefix of the file
    route = Route(PAYLOAD)
    with LocalServer({"/f.bin": route}) as srv:
        res = datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                             registry=_registry(srv.url("/f.bin")))
    assert res.path.read_bytes() == PAYLOAD
    assert [r["range"] for r in route.requests] == ["bytes=1000-", None]


def test_fetch_without_published_checksum_records_and_rechecks(tmp_path):
    with LocalServer({"/f.bin": Route(PAYLOAD)}) as srv:
        reg = _registry(srv.url("/f.bin"), hash_=None, size=False)
        res = datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                             registry=reg)
        digest = hashlib.sha256(PAYLOAD).hexdigest()
        assert (tmp_path / "payload.bin.sha256").read_text().strip() == digest
        assert any("announced by the server" in c for c in res.checks)
        assert any("cannot prove" in c for c in res.checks)
        assert not any("published" in c and "no published" not in c for c in res.checks)
        again = datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                               registry=reg)
        assert not again.downloaded
        assert any("unchanged since first download" in c for c in again.checks)
        # A cached file changed later is detected and fetched again.
        (tmp_path / "payload.bin").write_bytes(PAYLOAD[:-1] + b"\x00")
        with pytest.warns(UserWarning, match="failed its check"):
            third = datasets.fetch("payload", cache_dir=tmp_path, progress=False,
                                   verbose=False, registry=reg)
    assert third.downloaded and third.path.read_bytes() == PAYLOAD


def test_fetch_follows_google_drive_confirmation_page(tmp_path):
    route = Route(PAYLOAD, confirm_page=True)
    with LocalServer({"/uc": route}) as srv:
        res = datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                             registry=_registry(srv.url("/uc?export=download&id=abc")))
    assert res.path.read_bytes() == PAYLOAD
    assert "confirm=t" in route.requests[1]["path"] and "uuid=u-1" in route.requests[1]["path"]


def test_fetch_refuses_to_store_a_web_page(tmp_path):
    with LocalServer({"/uc": Route(PAYLOAD, html_only=True)}) as srv:
        with pytest.raises(OSError, match="web page instead of the file"):
            datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                           registry=_registry(srv.url("/uc"), hash_=None, size=False))
    assert _leftovers(tmp_path) == []


def test_fetch_http_errors_and_unknown_names(tmp_path):
    with LocalServer({}) as srv:
        with pytest.raises(OSError, match="HTTP 404"):
            datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                           registry=_registry(srv.url("/missing")))
        with pytest.raises(ValueError, match="Available"):
            datasets.fetch("nope", cache_dir=tmp_path, registry=_registry(srv.url("/x")))
    assert _leftovers(tmp_path) == []


def test_fetch_checks_nion_structure(tmp_path):
    """A downloaded .ndata1 without published checksum must at least be a complete Nion zip."""
    sig = _signal()
    good = io.write_ndata1(tmp_path / "good.ndata1", sig)
    body = good.read_bytes()
    cache = tmp_path / "cache"
    with LocalServer({"/good": Route(body), "/cut": Route(body[: len(body) // 2])}) as srv:
        reg = _registry(srv.url("/good"), hash_=None, size=False, fmt="ndata1",
                        file="x.ndata1")
        res = datasets.fetch("payload", cache_dir=cache, progress=False, verbose=False,
                             registry=reg)
        assert any("complete Nion zip" in c and "(4, 5, 8, 8)" in c for c in res.checks)
        np.testing.assert_array_equal(io.load(res.path).data, sig.data)
        reg["datasets"]["payload"].update(url=srv.url("/cut"), file="y.ndata1")
        with pytest.raises(OSError, match="truncated or corrupt"):
            datasets.fetch("payload", cache_dir=cache, progress=False, verbose=False,
                           registry=reg)
    assert _leftovers(cache) == ["x.ndata1", "x.ndata1.sha256"]


def test_manual_entries_say_where_to_get_the_data(tmp_path):
    with pytest.raises(OSError, match=r"zenodo\.org/records/5113449"):
        datasets.fetch("strauch2021_srtio3_4dstem", cache_dir=tmp_path)
    with pytest.raises(OSError, match=r"phaidra\.564"):
        datasets.fetch("susi2025_graphene_4dstem", cache_dir=tmp_path)


def test_packaged_registry_entries():
    reg = datasets.read_registry()
    ids = {
        "pristine": ("1Y5UvHy9_dIWpBHYSsbt0I5z_hcxWldt4", "1tSzTgy8lSn9a6-4Mm-fmpO2e4U1NC377"),
        "si": ("1rmVvcVkv2JnGOkkMiOvJqHFNmhrZZWha", "14UQGE55KLfEZ1cKFVi9R0fs-RcEd0IoW"),
        "vacancy": ("1HP_6DfrVsGjpDh5ueYVOPde7bqlE05ip", "1CT_TTIgU_DqmU01MGC8IIsz7Dsm-utVj"),
    }
    for kind, (data_id, haadf_id) in ids.items():
        for suffix, drive_id in (("4dstem", data_id), ("haadf", haadf_id)):
            entry = reg[f"oxley2021_graphene_{kind}_{suffix}"]
            assert entry["url"] == f"https://drive.google.com/uc?export=download&id={drive_id}"
            assert entry["hash"] is None  # nothing published: never pretend otherwise
            assert "redistribute" in entry["licence"]
            assert entry["format"] == "ndata1"
    ws2 = reg["ws2_bilayer_small_ptychography"]
    assert ws2["hash"] == "md5:df9376d5c020a23f0f7f51cfe79f303f"
    assert "CC-BY-4.0" in ws2["licence"]
    assert re.match(r"https://zenodo\.org/records/15490547/", ws2["url"])
    for entry in reg.values():
        assert entry["url"] or entry["landing_page"]
        if entry["url"]:  # every automatic download can be checked by something
            assert entry["hash"] or entry["size"] or entry["format"] == "ndata1"


def test_registry_validation():
    base = _registry("http://127.0.0.1/x")
    base["datasets"]["payload"]["hash"] = "crc32:1234"
    with pytest.raises(ValueError, match="md5"):
        datasets.read_registry(base)
    with pytest.raises(ValueError, match="lower_snake_case"):
        datasets.read_registry({"version": 1, "datasets": {"Bad-Name": {}}})


def test_two_fetches_of_one_file_take_turns(tmp_path):
    """Two fetches of the same file at once used to share one .part file: the loser got a raw
    error (or both downloaded). Now one downloads and the other waits and uses its file."""
    route = Route(PAYLOAD, delay_s=0.5)
    results, errors = [], []
    with LocalServer({"/f.bin": route}) as srv:
        reg = _registry(srv.url("/f.bin"))

        def run():
            try:
                results.append(datasets.fetch("payload", cache_dir=tmp_path, progress=False,
                                              verbose=False, registry=reg))
            except Exception as err:  # noqa: BLE001 - collected for the assertion below
                errors.append(err)

        threads = [threading.Thread(target=run) for _ in range(2)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "waiting for another fetch"
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
    assert errors == []
    assert sorted(r.downloaded for r in results) == [False, True]
    assert len(route.requests) == 1
    assert results[0].path.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["payload.bin"]


def test_fetch_gives_up_waiting_for_another_fetch(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "LOCK_TIMEOUT_S", 0.3)
    with datasets._FetchLock(tmp_path / "payload.bin", "payload", 1.0):
        with pytest.warns(UserWarning, match="Waiting for another fetch of payload"), \
                pytest.raises(TimeoutError, match=r"Another process \(or thread\) has been "
                              r"fetching payload .*payload\.bin\.lock"):
            datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                           registry=_registry("http://127.0.0.1:9/never"))
    assert _leftovers(tmp_path) == []  # the lock file goes with its holder


def test_fetch_refuses_a_download_nothing_can_verify(tmp_path):
    """No hash, no size, no announced size: whatever arrived used to be cached."""
    with LocalServer({"/f.bin": Route(PAYLOAD, content_length=False)}) as srv:
        reg = _registry(srv.url("/f.bin"), hash_=None, size=False)
        with pytest.raises(OSError, match=r"nothing can verify the download of payload.*"
                           r"Nothing was kept.*'size'.*'hash'") as err:
            datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                           registry=reg)
        assert "report it" not in str(err.value)
        assert _leftovers(tmp_path) == []
        reg["datasets"]["payload"]["size"] = len(PAYLOAD)  # a size is enough to accept it
        res = datasets.fetch("payload", cache_dir=tmp_path, progress=False, verbose=False,
                             registry=reg)
    assert res.path.read_bytes() == PAYLOAD
    assert any("size" in c and "(registry)" in c for c in res.checks)
