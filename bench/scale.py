"""Out-of-core benchmark: preprocess and encode a 4D-STEM file far larger than one chunk.

Run ``python -m bench.scale`` (full size, about 5 minutes on two cores) or
``python -m bench.scale --quick`` (a small file, about a minute: checks that the script works;
its numbers mean little). Results go to ``bench/results/scale.md`` and ``scale.json``
(``bench/results/quick/`` with ``--quick``).

What it does
------------
1. **Generate** a synthetic 4D-STEM data set, (scan y, scan x, ky, kx) = 256 x 256 x 128 x 128
   uint16 electron counts (2.1 GB: 2 bytes x 2^30 pixels; the issue's "about 8 GB" would be
   float32 on a 256 x 256 camera), written chunk by chunk as an uncompressed chunked ``.hspy``
   file in a temporary folder, without ever holding it in memory. Each pattern is a bright-field
   disk shifted by a smooth deflection field, with Poisson noise; each chunk is seeded by its
   position, so the file is the same on every run.
2. **Train** the default model on a random sample of the preprocessed patterns (not part of the
   measured figures; its time is reported on its own).
3. **Measure** ``prepare(..., compute=False)`` plus ``encode_maps`` over the whole file (four
   streaming passes over the raw data: the mean pattern with the count checks, the mean reduced
   pattern, the value range, and the encoding) in three configurations, each in a fresh
   subprocess so that its peak resident memory (``getrusage`` ``ru_maxrss``) is its own:

   - ``threads``: dask's threaded scheduler in one process (two threads);
   - ``distributed-1`` and ``distributed-2``: a ``dask.distributed`` ``LocalCluster`` with 1 or 2
     worker processes of one thread each. The client process (which also runs the scheduler)
     and the workers are reported separately; a worker's peak is read inside the worker.

   Reported: wall time and throughput (patterns per second), CPU time (the process plus its
   workers), peak RSS, the 1 -> 2 worker speed-up, and whether the latent maps of every
   configuration equal those of the threaded run. As a baseline, each configuration also times
   one plain pass that only reads the file (not part of the totals). The criterion of the issue
   is a peak RSS of at most 1.5 GB for the whole in-process run.

The machine is usually shared: load averages at the start and the end are recorded with the
results, and wall-clock figures are only as good as they allow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "SETTINGS", "synthetic_signal", "RSS_LIMIT_BYTES"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

#: The issue's memory criterion for preprocessing plus encoding in one process.
RSS_LIMIT_BYTES = 1.5e9

#: Sizes of the full run and of ``--quick``.
SETTINGS = {
    "full": dict(scan=256, detector=128, chunk_scan=16, crop=64, bin_factor=2, train_n=2048,
                 epochs=5, encode_chunk=2048),
    "quick": dict(scan=64, detector=64, chunk_scan=16, crop=32, bin_factor=2, train_n=512,
                  epochs=2, encode_chunk=1024),
}

CONFIGS = ("threads", "distributed-1", "distributed-2")

#: Physics of the synthetic data (chosen to look like a 60 keV graphene experiment).
SCAN_STEP_NM = 0.008        # probe step
DETECTOR_MRAD = 240.0       # full width of the detector, mrad
CONVERGENCE_MRAD = 30.0     # bright-field disk radius
DOSE_PER_PX = 30.0          # mean counts per pixel inside the disk
BACKGROUND_PER_PX = 0.5     # mean counts per pixel outside it
MAX_SHIFT_PX = 2.0          # largest disk shift, raw detector pixels


# ------------------------------------------------------------------------------ the data set
def _shift_field(y, x, scan: int):
    """Disk shift (dy, dx) in raw pixels at scan positions (y, x) (floats, scan pixels)."""
    w = 2 * np.pi / (scan / 2)  # two periods across the scan
    dy = MAX_SHIFT_PX * np.sin(w * (x + 0.3 * y))
    dx = MAX_SHIFT_PX * np.cos(w * (y - 0.2 * x))
    return dy, dx


def _synthetic_block(block_info=None, *, scan: int, detector: int) -> np.ndarray:
    """dask kernel: the uint16 counts of one chunk, seeded by the chunk's position."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"][:2]
    rng = np.random.default_rng([y0, x0])
    y, x = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dy, dx = _shift_field(y, x, scan)
    k = np.arange(detector) - (detector - 1) / 2
    radius = CONVERGENCE_MRAD / (DETECTOR_MRAD / detector)
    r = np.hypot(k[None, None, :, None] - dy[..., None, None],
                 k[None, None, None, :] - dx[..., None, None])
    inside = np.clip(radius - r + 0.5, 0.0, 1.0)  # anti-aliased disk edge
    lam = BACKGROUND_PER_PX + (DOSE_PER_PX - BACKGROUND_PER_PX) * inside
    return rng.poisson(lam).astype(np.uint16)


def synthetic_signal(scan: int, detector: int, chunk_scan: int):
    """A lazy calibrated 4D-STEM signal (scan, scan | detector, detector) of uint16 counts.

    Parameters
    ----------
    scan : int
        Scan positions per side.
    detector : int
        Detector pixels per side.
    chunk_scan : int
        Scan positions per side of one chunk (a chunk holds whole patterns).

    Returns
    -------
    hyperspy LazySignal2D
        Axes (scan y, scan x | ky, kx) in nm and mrad; nothing is computed until it is written.
    """
    import dask.array as da

    from rrvae_nb.signals import Calibration, make_signal

    if scan % chunk_scan:
        raise ValueError(f"chunk_scan={chunk_scan} must divide scan={scan}.")
    n = scan // chunk_scan
    data = da.map_blocks(
        _synthetic_block, scan=scan, detector=detector, dtype=np.uint16,
        chunks=((chunk_scan,) * n, (chunk_scan,) * n, (detector,), (detector,)),
        meta=np.empty((0, 0, 0, 0), dtype=np.uint16),
    )
    k_step = DETECTOR_MRAD / detector
    half = (detector - 1) / 2 * k_step
    cal = Calibration(scan_step_nm=SCAN_STEP_NM, k_step_mrad=k_step,
                      k_offset_mrad=(-half, -half), energy_kev=60.0,
                      convergence_mrad=CONVERGENCE_MRAD)
    return make_signal(data, cal, title="synthetic shifted disks")


# ------------------------------------------------------------------------------ steps
def _peak_self() -> int:
    """Peak resident memory of this process so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warm_up() -> None:
    """Run inside a dask worker: import what the tasks need (counted as cluster start-up)."""
    import rrvae_nb.preprocess  # noqa: F401
    import rrvae_nb.stream  # noqa: F401


def _worker_stats() -> dict:
    """Run inside a dask worker: its peak RSS (bytes) and CPU seconds so far."""
    import resource as r
    import time as t

    return {"peak_rss": r.getrusage(r.RUSAGE_SELF).ru_maxrss * 1024, "cpu_s": t.process_time()}


def _step_generate(args, st: dict) -> dict:
    from tqdm.dask import TqdmCallback

    from rrvae_nb import io

    sig = synthetic_signal(st["scan"], st["detector"], st["chunk_scan"])
    t0, c0 = time.perf_counter(), time.process_time()
    with TqdmCallback(desc="writing the data set"):
        io.save(args.file, sig, compression=None, show_progressbar=False)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "bytes": Path(args.file).stat().st_size, "shape": list(sig.data.shape),
            "dtype": str(sig.data.dtype), "chunks": [c[0] for c in sig.data.chunks],
            "peak_rss": _peak_self()}


def _step_train(args, st: dict) -> dict:
    import rrvae_nb as rr
    from rrvae_nb import io
    from rrvae_nb.preprocess import prepare
    from rrvae_nb.stream import sample_patterns

    t0 = time.perf_counter()
    prep = prepare(io.load(args.file, lazy=True), crop=st["crop"], bin_factor=st["bin_factor"],
                   compute=False)
    sample = sample_patterns(prep.patterns, st["train_n"], seed=0)
    t1 = time.perf_counter()
    model = rr.RrVAE(sample.shape[1:], 2, seed=0)
    hist = rr.fit(model, sample, epochs=st["epochs"], batch_size=128, seed=0)
    t2 = time.perf_counter()
    model.save(args.model)
    return {"prepare_and_sample_s": t1 - t0, "train_s": t2 - t1, "n": int(len(sample)),
            "pattern_shape": list(sample.shape[1:]), "epochs": st["epochs"],
            "val_loss": hist.val_loss[-1] if hist.val_loss else None,
            "peak_rss": _peak_self()}


def _prepare_and_encode(args, st: dict, model, client=None) -> dict:
    import dask

    from rrvae_nb import io
    from rrvae_nb.preprocess import prepare
    from rrvae_nb.stream import encode_maps

    sig = io.load(args.file, lazy=True)
    # baseline, not part of the total: one plain pass that only reads the file
    t_read = time.perf_counter()
    dask.compute(sig.data.sum(dtype=np.float64))
    read_s = time.perf_counter() - t_read
    before = client.run(_worker_stats) if client is not None else {}
    t0, c0 = time.perf_counter(), time.process_time()
    prep = prepare(sig, crop=st["crop"], bin_factor=st["bin_factor"], compute=False)
    t1 = time.perf_counter()
    encode_maps(model, prep, path=args.maps, chunk=st["encode_chunk"])
    t2, c2 = time.perf_counter(), time.process_time()
    out = {"n_patterns": int(prep.patterns.shape[0]), "read_pass_s": read_s,
           "prepare_s": t1 - t0, "encode_s": t2 - t1, "wall_s": t2 - t0,
           "client_cpu_s": c2 - c0, "cpu_s": c2 - c0}
    if client is not None:
        after = client.run(_worker_stats)
        out["workers"] = [{"peak_rss": after[w]["peak_rss"],
                           "cpu_s": after[w]["cpu_s"] - before[w]["cpu_s"]} for w in sorted(after)]
        out["cpu_s"] += sum(w["cpu_s"] for w in out["workers"])
    return out


def _step_measure(args, st: dict) -> dict:
    from rrvae_nb.model import RrVAE

    model = RrVAE.load(args.model)
    if args.config == "threads":
        out = _prepare_and_encode(args, st, model)
        out["peak_rss"] = _peak_self()
        return out
    from distributed import Client, LocalCluster

    k = int(args.config.split("-")[1])
    t0 = time.perf_counter()
    with LocalCluster(n_workers=k, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(_warm_up)
        start = time.perf_counter() - t0
        out = _prepare_and_encode(args, st, model, client=client)
    out["cluster_start_s"] = start
    out["peak_rss"] = _peak_self()  # the client process, which also runs the scheduler
    return out


STEPS = {"generate": _step_generate, "train": _step_train, "measure": _step_measure}


# ------------------------------------------------------------------------------ orchestration
def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # passive OpenMP waiting: spinning threads would count as CPU time on a shared machine
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _run_step(step: str, settings: str, work: Path, **extra) -> dict:
    """Run one step in a fresh Python process and return its JSON result."""
    result = work / f"{step}-{extra.get('config', '')}.json"
    cmd = [sys.executable, "-m", "bench.scale", "--step", step, "--settings", settings,
           "--result", str(result), "--file", str(work / "scan.hspy"),
           "--model", str(work / "model.pt")]
    if "config" in extra:
        cmd += ["--config", extra["config"], "--maps", str(work / f"maps-{extra['config']}.hspy")]
    label = step if "config" not in extra else f"{step} {extra['config']}"
    print(f"[bench.scale] {label} ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(f"step {label!r} failed with exit status {proc.returncode}")
    out = json.loads(result.read_text())
    out["process_wall_s"] = time.perf_counter() - t0
    print(f"[bench.scale] {label}: {out['process_wall_s']:.1f} s", flush=True)
    return out


def _compare_maps(work: Path) -> dict:
    """Largest difference of each configuration's latent maps from the threaded run's."""
    from rrvae_nb import io
    from rrvae_nb.rotate import wrap_angle

    ref = io.load(work / "maps-threads.hspy")
    names = list(ref.metadata.Signal.channels)
    out = {}
    for config in CONFIGS[1:]:
        other = io.load(work / f"maps-{config}.hspy").data
        diff = np.abs(other - ref.data)
        i = names.index("angle")
        diff[i] = np.abs(wrap_angle(other[i] - ref.data[i]))
        out[config] = float(diff.max())
    return out


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _gb(n: float) -> str:
    """Bytes as GB (MB below 0.1 GB)."""
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _markdown(raw: dict) -> str:
    meta, gen, train, runs = raw["meta"], raw["generate"], raw["train"], raw["runs"]
    n = runs["threads"]["n_patterns"]
    lines = [
        "# Out-of-core benchmark (`python -m bench.scale" + (" --quick" if meta["quick"] else "")
        + "`)",
        "",
        f"Machine: {meta['cpus']} CPUs, {meta['platform']}, Python {meta['python']}, "
        f"dask {meta['dask']}. Load average {meta['loadavg_start'][0]:.1f} at the start, "
        f"{meta['loadavg_end'][0]:.1f} at the end (the machine is shared: wall times are noisy).",
        "",
        f"Data: {' x '.join(map(str, gen['shape']))} {gen['dtype']} "
        f"(scan y, scan x, ky, kx), {_gb(gen['bytes'])} on disk, uncompressed `.hspy`, chunks "
        f"{' x '.join(map(str, gen['chunks']))} ({_gb(np.prod(gen['chunks']) * 2)} each). "
        f"Written chunk by chunk in {gen['wall_s']:.0f} s with a peak RSS of "
        f"{_gb(gen['peak_rss'])}. (256 x 256 x 128 x 128 uint16 is 2.1 GB, not the issue's "
        "8 GB.)",
        "",
        f"Model: the default `RrVAE`, {' x '.join(map(str, train['pattern_shape']))} patterns "
        f"(crop {meta['settings']['crop']}, bin {meta['settings']['bin_factor']}), trained on "
        f"{train['n']} sampled patterns for {train['epochs']} epochs in {train['train_s']:.0f} s "
        "(not part of the figures below).",
        "",
        f"Measured: `prepare(..., compute=False)` + `encode_maps` over all {n} patterns "
        "(four streaming passes over the raw file), each configuration in a fresh process. The "
        "file was just written, so it is read from the operating system's page cache; reading "
        "from disk adds the disk's transfer time (4 x the file per analysis). *Read pass*: one "
        "plain pass that only reads the file (a baseline, not in the total). *CPU*: CPU seconds "
        "of the analysing process plus, for a cluster, its workers.",
        "",
        "| configuration | read pass (s) | prepare (s) | encode (s) | total (s) | CPU (s) "
        "| patterns/s | raw MB/s | peak RSS, client | peak RSS, each worker | maps equal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for config in CONFIGS:
        r = runs[config]
        workers = ", ".join(_gb(w["peak_rss"]) for w in r.get("workers", [])) or "(in process)"
        eq = "reference" if config == "threads" else (
            f"yes (max diff {raw['maps_max_diff'][config]:.1e})"
            if raw["maps_max_diff"][config] <= 1e-4 else
            f"NO (max diff {raw['maps_max_diff'][config]:.1e})")
        mbps = 4 * gen["bytes"] / r["wall_s"] / 1e6
        lines.append(
            f"| {config} | {r['read_pass_s']:.1f} | {r['prepare_s']:.1f} | {r['encode_s']:.1f} | "
            f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {n / r['wall_s']:.0f} | {mbps:.0f} | "
            f"{_gb(r['peak_rss'])} | {workers} | {eq} |"
        )
    s = raw["summary"]
    lines += [
        "",
        f"- Peak RSS of the whole in-process run: {_gb(s['threads_peak_rss'])} "
        f"(criterion: at most {_gb(RSS_LIMIT_BYTES)}): "
        f"**{'pass' if s['rss_ok'] else 'FAIL'}**; the file is {_gb(gen['bytes'])}.",
        f"- Throughput in process (2 threads): {s['threads_patterns_per_s']:.0f} patterns/s "
        f"of wall time, {s['threads_patterns_per_cpu_s']:.0f} patterns per CPU-second (the "
        "steadier figure on a shared machine).",
        f"- A 1-worker cluster spends {s['distributed_cpu_ratio']:.1f} x the CPU time of the "
        "in-process run on the same work.",
        f"- Speed-up from 1 to 2 dask workers: **{s['speedup_1_to_2']:.2f} x** for the "
        f"analysis, {s['read_speedup_1_to_2']:.2f} x for the plain read pass "
        f"({runs['distributed-1']['wall_s']:.1f} s -> {runs['distributed-2']['wall_s']:.1f} s; "
        f"cluster start-up, {runs['distributed-1']['cluster_start_s']:.1f} s and "
        f"{runs['distributed-2']['cluster_start_s']:.1f} s with the workers' imports, not "
        "included).",
        f"- Distributed memory: client + scheduler {_gb(runs['distributed-2']['peak_rss'])}, "
        f"workers {_gb(sum(w['peak_rss'] for w in runs['distributed-2']['workers']))} in all "
        "(2 workers; sum of their peaks).",
        f"- Total wall time of the benchmark: {meta['wall_s']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def _summary(runs: dict) -> dict:
    t = runs["threads"]
    return {
        "threads_peak_rss": t["peak_rss"],
        "rss_ok": t["peak_rss"] <= RSS_LIMIT_BYTES,
        "threads_patterns_per_s": t["n_patterns"] / t["wall_s"],
        "threads_patterns_per_cpu_s": t["n_patterns"] / t["cpu_s"],
        "distributed_cpu_ratio": runs["distributed-1"]["cpu_s"] / t["cpu_s"],
        "speedup_1_to_2": runs["distributed-1"]["wall_s"] / runs["distributed-2"]["wall_s"],
        "read_speedup_1_to_2": (runs["distributed-1"]["read_pass_s"]
                                / runs["distributed-2"]["read_pass_s"]),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description="Out-of-core benchmark: lazy preprocessing and encoding of a generated "
                    "256 x 256 x 128 x 128 uint16 4D-STEM file (2.1 GB): peak memory, "
                    "throughput, and the speed-up from 1 to 2 dask workers.",
    )
    p.add_argument("--quick", action="store_true",
                   help="a 64 x 64 x 64 x 64 file (34 MB), about a minute: checks the script; "
                        "results go to bench/results/quick/")
    p.add_argument("--keep", action="store_true",
                   help="keep the generated file, model and maps (the folder is printed)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="parent folder of the temporary data folder (default: the system's "
                        "temporary folder; needs 2.2 GB free)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for scale.md and scale.json (default: bench/results, or "
                        "bench/results/quick with --quick)")
    # internal: one step inside a subprocess
    for name in ("--step", "--settings", "--result", "--file", "--model", "--config",
                 "--maps"):
        p.add_argument(name, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.step:  # inside a subprocess
        out = STEPS[args.step](args, SETTINGS[args.settings])
        Path(args.result).write_text(json.dumps(out))
        return 0

    import dask

    settings = "quick" if args.quick else "full"
    st = SETTINGS[settings]
    t_start = time.perf_counter()
    raw: dict = {"meta": {
        "quick": args.quick, "settings": st, "cpus": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "dask": dask.__version__, "loadavg_start": list(os.getloadavg()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }}
    work = Path(tempfile.mkdtemp(prefix="rrvae-scale-", dir=args.workdir))
    try:
        raw["generate"] = _run_step("generate", settings, work)
        raw["train"] = _run_step("train", settings, work)
        raw["runs"] = {c: _run_step("measure", settings, work, config=c) for c in CONFIGS}
        raw["maps_max_diff"] = _compare_maps(work)
    finally:
        if args.keep:
            print(f"[bench.scale] kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    raw["meta"]["loadavg_end"] = list(os.getloadavg())
    raw["meta"]["wall_s"] = time.perf_counter() - t_start
    raw["summary"] = _summary(raw["runs"])
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    md = _markdown(raw)
    _atomic_write(out / "scale.json", json.dumps(raw, indent=1) + "\n")
    _atomic_write(out / "scale.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
