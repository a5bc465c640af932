"""Command line of the benchmark: ``python -m bench [--quick] [--budget CPU_S] ...``.

Orchestrates the subprocesses of :mod:`bench.worker` (one per row and task, run one after the
other so that they do not compete for the cores), then writes ``bench/results/cpu.md`` and
``cpu.json`` (``bench/results/quick/`` for ``--quick``) and prints the Markdown report.

Layout of the raw results (``cpu.json`` adds a ``summary`` from :func:`bench.report.summarise`):
``meta`` (machine, settings, wall time, load averages), ``data`` (what was generated),
``rows`` (per row: the ``train`` task's result, or ``skipped`` / ``failed``), ``graphene``
(``data`` and per-row timings, or ``skipped``), ``peak`` (matrix-product peak), ``notes``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import data as bdata
from bench import report
from bench.quality import ANGLE_TARGET
from bench.rows import PAPER_DECODER_HIDDEN, ROWS, rows_by_name

__all__ = ["main", "SETTINGS"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

#: Sizes of the full run and of ``--quick`` (which only checks that the script works).
SETTINGS = {
    "full": dict(n=4096, size=64, budget_cpu_s=300.0, graphene_scan=64, graphene_cpu_limit_s=20.0,
                 first_checkpoint_cpu_s=0.5, checkpoint_growth=1.25, checkpoint_patterns=256,
                 peak_n=2048, peak_repeats=8),
    "quick": dict(n=512, size=32, budget_cpu_s=3.0, graphene_scan=16, graphene_cpu_limit_s=1.0,
                  first_checkpoint_cpu_s=0.1, checkpoint_growth=1.5, checkpoint_patterns=None,
                  peak_n=512, peak_repeats=4),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="rrVAE speed benchmark: the paper's spatial decoder against the package "
                    "default (CPU time per epoch, time to quality, memory, FLOPs).",
    )
    p.add_argument("--quick", action="store_true",
                   help="small sizes (about a minute) to check the script; results go to "
                        "bench/results/quick/")
    p.add_argument("--budget", type=float, default=None, metavar="CPU_S",
                   help="training CPU-seconds per row (default: 300; quick: 3)")
    p.add_argument("--rows", default=",".join(r.name for r in ROWS),
                   help="comma-separated rows to run (default: all: "
                        f"{','.join(r.name for r in ROWS)})")
    p.add_argument("--no-graphene", action="store_true",
                   help="skip the graphene simulation and its timings")
    p.add_argument("--threads", type=int, default=2, help="torch threads per subprocess (2)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="folder for cpu.md and cpu.json (default: bench/results, or "
                        "bench/results/quick with --quick)")
    p.add_argument("--render", type=Path, default=None, metavar="CPU_JSON",
                   help="run nothing: rebuild cpu.md (and the summary in cpu.json) from the "
                        "raw results of an earlier run, e.g. after a change to the report")
    return p


def _env(threads: int) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    # OpenMP threads that spin while they wait are counted as CPU time; on a shared machine a
    # descheduled partner thread makes that spinning dominate small operations (measured here:
    # 0.5 instead of 0.055 CPU-s per step of the default row). Passive waiting makes the CPU
    # time measure the work.
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run_task(task: str, spec: dict, workdir: Path, threads: int) -> dict:
    """Run one worker task in a subprocess; {"failed": ...} if it does not finish."""
    tag = f"{task}-{spec.get('row', '')}".strip("-")
    spec_path = workdir / f"{tag}.spec.json"
    out_path = workdir / f"{tag}.out.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker", task, str(spec_path), str(out_path)],
        cwd=ROOT, env=_env(threads), check=False,
    )
    if proc.returncode != 0 or not out_path.is_file():
        return {"failed": f"subprocess exited with status {proc.returncode} (traceback above)"}
    return json.loads(out_path.read_text())


def _simulate_available() -> str | None:
    """None when rrvae_nb.simulate and rrvae_nb.preprocess can be used, else why not."""
    try:
        import rrvae_nb.preprocess  # noqa: F401
        import rrvae_nb.simulate as sim

        sim._require_sim()
    except Exception as err:  # noqa: BLE001 - any failure means: skip with the reason
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def main(argv=None) -> int:
    """Run the benchmark; returns 0, or 1 when a requested row failed."""
    args = _parser().parse_args(argv)
    if args.render is not None:
        return _render(args.render, args.out)
    mode = "quick" if args.quick else "full"
    st = dict(SETTINGS[mode])
    if args.budget is not None:
        if not args.budget > 0:
            raise SystemExit(f"--budget must be a positive number of CPU-seconds; got "
                             f"{args.budget}")
        st["budget_cpu_s"] = float(args.budget)
    try:
        rows = rows_by_name([n.strip() for n in args.rows.split(",") if n.strip()])
    except ValueError as err:
        raise SystemExit(str(err)) from None
    out_dir = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    t_start = time.perf_counter()
    settings = dict(st, quick=args.quick, threads=args.threads, batch_size=args.batch_size,
                    lr=args.lr, seed=args.seed, val_percent=100 * bdata.VAL_FRACTION,
                    rows=[r.name for r in rows], omp_wait_policy="PASSIVE")
    raw: dict = {
        "meta": {"machine": report.machine(), "settings": settings,
                 "loadavg_start": list(os.getloadavg())},
        "data": {}, "rows": {}, "graphene": {}, "peak": {}, "notes": [],
    }
    common = dict(threads=args.threads, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    failed = False
    with tempfile.TemporaryDirectory(prefix="rrvae-bench-") as tmp:
        work = Path(tmp)
        print(f"[bench] {mode} run: {st['n']} synthetic patterns of {st['size']} x {st['size']}, "
              f"{st['budget_cpu_s']:.0f} CPU-s per row, rows {[r.name for r in rows]}",
              flush=True)
        syn_path = work / "synthetic"
        raw["data"]["synthetic"] = bdata.make_synthetic(syn_path, st["n"], st["size"],
                                                        seed=args.seed)

        print("[bench] fp32 matrix-product peak", flush=True)
        raw["peak"] = _run_task("peak", dict(threads=args.threads, n=st["peak_n"],
                                             repeats=st["peak_repeats"]), work, args.threads)

        pyroved = _run_task("import-pyroved", {}, work, args.threads)
        for row in rows:
            if row.kind == "pyroved" and not pyroved.get("importable"):
                raw["rows"][row.name] = {
                    "skipped": "skipped: `import pyroved` fails here ("
                               f"{pyroved.get('error', pyroved.get('failed'))})"}
                continue
            print(f"[bench] training row '{row.name}'", flush=True)
            spec = dict(common, row=row.name, data=str(syn_path),
                        budget_cpu_s=st["budget_cpu_s"],
                        first_checkpoint_cpu_s=st["first_checkpoint_cpu_s"],
                        checkpoint_growth=st["checkpoint_growth"],
                        checkpoint_patterns=st["checkpoint_patterns"])
            res = _run_task("train", spec, work, args.threads)
            failed |= "failed" in res
            raw["rows"][row.name] = res

        why_not = "--no-graphene was given" if args.no_graphene else _simulate_available()
        if why_not is None:
            print("[bench] simulating graphene", flush=True)
            g_path = work / "graphene.npy"
            sim = _run_task("simulate", dict(path=str(g_path), scan=st["graphene_scan"],
                                             size=st["size"]), work, args.threads)
            if "failed" in sim:
                why_not = f"the simulation failed: {sim['failed']}"
            else:
                raw["graphene"] = {"data": sim, "rows": {}}
                for row in rows:
                    if row.name in raw["rows"] and "skipped" in raw["rows"][row.name]:
                        raw["graphene"]["rows"][row.name] = raw["rows"][row.name]
                        continue
                    spec = dict(common, row=row.name, data=str(g_path),
                                cpu_limit_s=st["graphene_cpu_limit_s"])
                    res = _run_task("graphene", spec, work, args.threads)
                    failed |= "failed" in res
                    raw["graphene"]["rows"][row.name] = res
        if why_not is not None:
            raw["graphene"] = {"skipped": why_not}

    raw["meta"]["loadavg_end"] = list(os.getloadavg())
    raw["meta"]["wall_s"] = time.perf_counter() - t_start
    raw["notes"] = _notes(raw, st)
    summary = report.summarise(raw)
    text = report.markdown(raw, summary)
    md, js = report.write_results(out_dir, raw, summary, text)
    print(text)
    print(f"[bench] wrote {md} and {js} ({raw['meta']['wall_s'] / 60:.1f} min)", flush=True)
    return 1 if failed else 0


def _render(json_path: Path, out_dir: Path | None) -> int:
    """Rebuild the report of an earlier run from its cpu.json."""
    try:
        raw = json.loads(Path(json_path).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"Cannot read benchmark results from {json_path}: {err}. Give the "
                         "cpu.json that an earlier `python -m bench` wrote.") from None
    raw.pop("summary", None)
    if "meta" not in raw or "rows" not in raw:
        raise SystemExit(f"{json_path} is not a cpu.json written by `python -m bench`.")
    raw["notes"] = _notes(raw, raw["meta"]["settings"])
    summary = report.summarise(raw)
    text = report.markdown(raw, summary)
    md, js = report.write_results(out_dir or Path(json_path).parent, raw, summary, text)
    print(text)
    print(f"[bench] rebuilt {md} and {js}", flush=True)
    return 0


def _notes(raw: dict, st: dict) -> list[str]:
    s = raw["meta"]["settings"]
    n_train = next((r["n_train"] for r in raw["rows"].values() if "n_train" in r), None)
    default_budget = SETTINGS["quick" if s["quick"] else "full"]["budget_cpu_s"]
    return [
        f"Training budget: {st['budget_cpu_s']:.0f} CPU-s per row"
        + ("" if st["budget_cpu_s"] == default_budget else
           f" (set with --budget; the default is {default_budget:.0f})") + ".",
        "Rows: " + "; ".join(f"**{r.label}**: {r.description}" for r in ROWS
                            if r.name in s["rows"]) + ". Everything else is the package's "
        "default (periodic angle prior, Gaussian likelihood of width 0.1, 2 content latents). "
        f"The paper row's decoder_hidden={PAPER_DECODER_HIDDEN}: the authors' decoder has two "
        "128 -> 128 layers per pixel after the coordinate/latent layer (3.3 TFLOP per epoch of "
        "4096 x 64 x 64, the issue's figure); decoder_hidden=(128, 128) would be half that.",
        "Each row runs in its own subprocess (peak RSS = that process's VmHWM, Python, torch "
        "and the data included; GB = 10^9 bytes) with torch.set_num_threads({s['threads']}) and "
        "OMP_WAIT_POLICY=PASSIVE (spinning OpenMP threads on a shared machine otherwise inflate "
        "the CPU time of small operations up to tenfold).",
        f"CPU-s = time.process_time() (all threads summed) of the training steps only. Epoch = "
        f"one pass over the {n_train} training patterns (the held-out "
        f"{s['val_percent']:.0f} % excluded); per-epoch figures are the measured cost per "
        "pattern over the whole budget (the first step's one-off set-up included) times the "
        "epoch's patterns. The training loop is the package's (the ELBO module of "
        "rrvae_nb.train._elbo and one torch.optim.Adam state for the whole run, one step per "
        "batch, the same split, batch order and seeds as rrvae_nb.fit).",
        f"Angle recovery r: circular correlation of the encoded and the true angle on the held-"
        f"out set, computed per template (each template's canonical orientation is arbitrary) "
        f"and averaged weighted by counts; signed (a mirrored angle scores -1). Time to r >= "
        f"{ANGLE_TARGET}: CPU-s at the first checkpoint where it holds (the issue's definition).",
        "Good model: r >= 0.95 and a held-out MSE against the noise-free patterns below the "
        "noise variance of the data (the model's own error is smaller than the noise). It is "
        "needed because a polar encoder recovers the angle before any training (0 CPU-s: it "
        "is equivariant by construction), so angle recovery alone does not say when the model "
        "is good.",
        f"Checkpoints (held-out evaluation, excluded from the CPU count) at training CPU times "
        f"growing by x{st['checkpoint_growth']} from {st['first_checkpoint_cpu_s']} CPU-s, plus "
        "one before training and one at the end of the budget"
        + (f"; they use the first {st['checkpoint_patterns']} held-out patterns, the final one "
           "all of them" if st["checkpoint_patterns"] else "")
        + ": a time to quality is the first "
        "checkpoint meeting the criterion, so the true time lies between it and the checkpoint "
        "before (both in cpu.json). Ratios marked >= use the budget as the paper row's time "
        "when it never gets there: a lower bound, never an invented number.",
        *_pyroved_notes(raw),
        "Timings were taken while other work shared the machine (see the load averages): they "
        "are noisy, read them as orders of magnitude; ratios of CPU time are more robust than "
        "wall times.",
    ]


def _pyroved_notes(raw: dict) -> list[str]:
    r = raw["rows"].get("pyroved", {})
    if "checkpoints" not in r:
        return []
    return ["pyroVED row: its coordinate grid is mirrored, so its angle turns the other way; "
            "|r| is reported. Its decode() renders at pose 0 only, so it has no held-out "
            "reconstruction error and no 'good model' time."]


if __name__ == "__main__":
    raise SystemExit(main())
