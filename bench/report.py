"""Tables, target checks and result files of the benchmark.

:func:`summarise` derives every reported figure from the raw per-row results (nothing is
typed in by hand); :func:`markdown` renders them; :func:`write_results` writes ``cpu.md`` and
``cpu.json`` atomically.
"""

from __future__ import annotations

import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench.flops import training_flops_per_epoch
from bench.quality import ANGLE_TARGET
from bench.worker import write_json

__all__ = ["machine", "time_to", "summarise", "markdown", "write_results"]

REFERENCE = "paper"
DEFAULT = "default"
#: Targets of the issue: speed-ups over the paper row and the default row's memory.
SPEEDUP_TARGET = 10.0
RSS_TARGET_GB = 0.5


def _gb(mib: float) -> float:
    """MiB (what the worker measures: VmHWM / 1024) as GB of 10^9 bytes, the unit of the issue's
    target and of every memory figure in the report."""
    return mib * 2**20 / 1e9


def machine() -> dict:
    """CPU model, core counts, library versions and the date (UTC)."""
    import pyro
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "platform": platform.platform(),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017
    }


def time_to(checkpoints: list[dict], key: str) -> dict:
    """CPU time at the first checkpoint where ``key`` holds.

    ``key`` is ``"angle"`` (angle recovery >= :data:`~bench.quality.ANGLE_TARGET`) or
    ``"good"`` (the good-model criterion). Returns ``reached``, ``cpu_s`` (the first checkpoint
    that meets it: an upper bound), ``after_cpu_s`` (the checkpoint before: a lower bound) and
    ``at_init`` (met before any training step).
    """
    for i, c in enumerate(checkpoints):
        ok = c["angle_r"] >= ANGLE_TARGET if key == "angle" else c["good"]
        if ok:
            return {"reached": True, "cpu_s": c["cpu_s"], "epochs": c["epochs"],
                    "after_cpu_s": checkpoints[i - 1]["cpu_s"] if i else 0.0, "at_init": i == 0}
    return {"reached": False, "cpu_s": None, "epochs": None, "after_cpu_s": None,
            "at_init": False}


def _ratio(ref: dict, row: dict, budget: float) -> dict:
    """Speed-up of ``row`` over ``ref`` in a time-to-quality, with its kind: exact, bound, ..."""
    if not row["reached"]:
        return {"kind": "not reached", "value": None}
    if row["at_init"]:
        return {"kind": "at init", "value": None}
    if ref["reached"]:
        return {"kind": "value", "value": ref["cpu_s"] / row["cpu_s"]}
    return {"kind": "at least", "value": budget / row["cpu_s"]}


def summarise(raw: dict) -> dict:
    """Every figure of the tables from the raw results (see :mod:`bench.run` for the layout)."""
    rows = {k: v for k, v in raw["rows"].items() if "checkpoints" in v}
    peak = raw.get("peak", {}).get("gflops")
    ref = rows.get(REFERENCE)
    out: dict = {"rows": {}, "graphene": {}, "targets": []}
    for name, r in rows.items():
        final = r["checkpoints"][-1]
        s = {
            "cpu_s_per_epoch": r["cpu_s_per_epoch"],
            "wall_s_per_epoch": r["wall_s_per_epoch"],
            "patterns_per_cpu_s": r["patterns_per_cpu_s"],
            "peak_rss_gb": _gb(r["peak_rss_mb"]),
            "epochs_in_budget": r["epochs"],
            "train_cpu_s": r["train_cpu_s"],
            "mse": final["mse"],
            "mse_noise_free": final["mse_noise_free"],
            "angle_r": final["angle_r"],
            "to_angle": time_to(r["checkpoints"], "angle"),
            "to_good": time_to(r["checkpoints"], "good"),
            "encode_patterns_per_s": r["encode"]["patterns_per_wall_s"],
            "diverged": r["diverged"],
        }
        flops = training_flops_per_epoch(r["config"], r["size"], r["n_train"])
        s["gflop_per_epoch"] = flops / 1e9
        if peak:
            s["floor_wall_s_per_epoch"] = flops / (peak * 1e9)
            s["fraction_of_peak"] = s["floor_wall_s_per_epoch"] / r["wall_s_per_epoch"]
        out["rows"][name] = s
    if ref is not None:
        rs = out["rows"][REFERENCE]
        for name, s in out["rows"].items():
            budget = raw["rows"][name]["budget_cpu_s"]
            s["epoch_speedup"] = rs["cpu_s_per_epoch"] / s["cpu_s_per_epoch"]
            s["angle_speedup"] = _ratio(rs["to_angle"], s["to_angle"], budget)
            s["good_speedup"] = _ratio(rs["to_good"], s["to_good"], budget)
    g = raw.get("graphene", {}).get("rows", {})
    for name, r in g.items():
        if "cpu_s_per_epoch" not in r:
            continue
        out["graphene"][name] = dict(r)
    if REFERENCE in out["graphene"]:
        for _name, r in out["graphene"].items():
            r["epoch_speedup"] = (out["graphene"][REFERENCE]["cpu_s_per_epoch"]
                                  / r["cpu_s_per_epoch"])
    out["targets"] = _targets(out)
    return out


def _targets(summary: dict) -> list[dict]:
    rows = summary["rows"]
    if REFERENCE not in rows or DEFAULT not in rows:
        return [{"target": "compare the default row with the paper row", "met": None,
                 "detail": "both rows are needed"}]
    d, p = rows[DEFAULT], rows[REFERENCE]
    out = []
    for key, what in (("good_speedup", "time to a good model"),
                      ("angle_speedup", f"time to angle recovery >= {ANGLE_TARGET}")):
        sp = d[key]
        if sp["kind"] == "at init":
            met, detail = True, "the default reaches it before training (0 CPU-s)"
        elif sp["kind"] == "not reached":
            met, detail = False, "the default does not reach it within the budget"
        elif sp["kind"] == "at least":
            met = sp["value"] >= SPEEDUP_TARGET
            detail = (f"at least x{sp['value']:.0f} (the paper row does not reach it within the "
                      "budget)")
        else:
            met, detail = sp["value"] >= SPEEDUP_TARGET, f"x{sp['value']:.1f}"
        out.append({"target": f"{what} at least {SPEEDUP_TARGET:.0f}x shorter", "met": met,
                    "detail": detail})
    out.append({"target": f"CPU time per epoch at least {SPEEDUP_TARGET:.0f}x less",
                "met": d["epoch_speedup"] >= SPEEDUP_TARGET,
                "detail": f"x{d['epoch_speedup']:.1f}"})
    better = d["mse"] is not None and p["mse"] is not None and d["mse"] <= p["mse"]
    out.append({"target": "held-out error equal or better (after the same CPU budget)",
                "met": better, "detail": f"{d['mse']:.3g} vs {p['mse']:.3g}"})
    out.append({"target": f"angle recovery >= {ANGLE_TARGET} (after the budget)",
                "met": d["angle_r"] >= ANGLE_TARGET,
                "detail": f"{d['angle_r']:.3f} (paper row {p['angle_r']:.3f})"})
    out.append({"target": f"peak RSS at most {RSS_TARGET_GB} GB (default row)",
                "met": d["peak_rss_gb"] <= RSS_TARGET_GB,
                "detail": f"{d['peak_rss_gb']:.2f} GB (paper row {p['peak_rss_gb']:.2f} GB)"})
    return out


# ------------------------------------------------------------------------------------------
# Markdown


def _num(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"


def _time(t: dict, budget: float) -> str:
    if not t["reached"]:
        return f"not reached in {budget:.0f}"
    if t["at_init"]:
        return "0 (at init)"
    return f"{_num(t['cpu_s'])} ({t['epochs']:.2g} ep.)"


def _speedup(sp: dict, is_ref: bool) -> str:
    if is_ref:
        return "1"
    if sp["kind"] == "not reached":
        return "n/a"
    if sp["kind"] == "at init":
        return "inf. (at init)"
    if sp["kind"] == "at least":
        return f">= {_num(sp['value'], 2)}"
    return _num(sp["value"], 2)


def markdown(raw: dict, summary: dict) -> str:
    """The report: tables, targets and notes, in Markdown."""
    m, a = raw["meta"], raw["meta"]["settings"]
    syn = raw["data"]["synthetic"]
    lines = [
        "# rrVAE speed benchmark (CPU)",
        "",
        f"{m['machine']['date_utc']}; {m['machine']['cpu']}, {a['threads']} threads "
        f"({m['machine']['usable_cpus']} usable CPUs); torch {m['machine']['torch']}, "
        f"pyro {m['machine']['pyro']}, Python {m['machine']['python']}. "
        f"Whole run: {m['wall_s'] / 60:.1f} min wall; load average "
        f"{m['loadavg_start'][0]:.1f} at the start, {m['loadavg_end'][0]:.1f} at the end."
        + (" **Quick mode: small sizes, the numbers mean nothing.**" if a["quick"] else ""),
        "",
        f"Synthetic set: {syn['n']} rotated {syn['size']} x {syn['size']} patterns "
        f"({syn['n_templates']} templates, seed {syn['seed']}), {a['val_percent']:.0f} % held "
        f"out; batch {a['batch_size']}, Adam lr {a['lr']}, seed {a['seed']}, budget "
        f"{a['budget_cpu_s']:.0f} CPU-s of training per row.",
        "",
        "| configuration | CPU-s / epoch | wall-s / epoch | patterns / CPU-s | peak RSS (GB) "
        "| held-out MSE | MSE vs noise-free | angle r | CPU-s to r >= 0.95 | CPU-s to good model "
        "| x faster: CPU / epoch | x faster: to r >= 0.95 | x faster: to good model |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    from bench.rows import ROWS

    for row in ROWS:
        name = row.name
        r = raw["rows"].get(name)
        if r is None:
            continue
        if "checkpoints" not in r:
            lines.append(f"| {row.label} | {r.get('skipped') or r.get('failed')} |"
                         + " |" * 11)
            continue
        s = summary["rows"][name]
        budget = r["budget_cpu_s"]
        is_ref = name == REFERENCE
        lines.append(
            f"| {row.label} | {_num(s['cpu_s_per_epoch'])} | {_num(s['wall_s_per_epoch'])} "
            f"| {_num(s['patterns_per_cpu_s'])} | {s['peak_rss_gb']:.2f} | {_num(s['mse'])} "
            f"| {_num(s['mse_noise_free'])} | {s['angle_r']:.3f} "
            f"| {_time(s['to_angle'], budget)} | {_time(s['to_good'], budget)} "
            f"| {'1' if is_ref else _num(s.get('epoch_speedup'), 2)} "
            f"| {_speedup(s['angle_speedup'], is_ref) if 'angle_speedup' in s else 'n/a'} "
            f"| {_speedup(s['good_speedup'], is_ref) if 'good_speedup' in s else 'n/a'} |"
        )
    noise = next((r["noise_variance"] for r in raw["rows"].values() if "noise_variance" in r),
                 None)
    lines += [
        "",
        f"Quality columns: after the budget. Noise variance of the held-out patterns: "
        f"{_num(noise)} (a perfect model's held-out MSE; its MSE vs noise-free is 0).",
        "",
    ]
    stages = raw["rows"].get(DEFAULT, {}).get("peak_rss_mb_stages")
    if stages:
        lines += [
            f"Peak RSS of the default row, cumulative: {_gb(stages['imports']):.2f} GB after "
            f"importing torch, pyro and rrvae_nb; {_gb(stages['data']):.2f} GB with the "
            "patterns (training batches are gathered through an index, not copied), the "
            "held-out patterns and their noise-free references; "
            f"{_gb(stages['model']):.2f} GB with the model; "
            + (f"{_gb(stages['first_step']):.2f} GB after the first training step (torch's "
               "optimiser imports torch._dynamo, and with it sympy, on its first step); "
               if "first_step" in stages else "")
            + f"{_gb(stages['training']):.2f} GB after training (the training steps' working "
            "set and the held-out evaluations).",
            "",
        ]
    lines += _graphene_table(raw, summary)
    lines += _flops_table(raw, summary)
    lines += ["## Targets (issue 5)", ""]
    for t in summary["targets"]:
        mark = {True: "met", False: "NOT met", None: "not checked"}[t["met"]]
        lines.append(f"- {t['target']}: **{mark}** ({t['detail']})")
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in raw["notes"]]
    return "\n".join(lines) + "\n"


def _graphene_table(raw: dict, summary: dict) -> list[str]:
    g = raw.get("graphene", {})
    if "skipped" in g:
        return ["## Simulated graphene", "", f"Skipped: {g['skipped']}", ""]
    info = g["data"]
    lines = [
        "## Simulated graphene (timing only)",
        "",
        f"{info['shape'][0]} patterns of {info['shape'][1]} x {info['shape'][2]} "
        f"({info['recipe']}{info['params']}, then {info['preprocess']}); simulation "
        f"{info['wall_s']:.0f} s wall, peak RSS {_gb(info['peak_rss_mb']):.2f} GB. Epoch = the "
        "85 % training split; one warm-up step is not timed.",
        "",
        "| configuration | CPU-s / epoch | wall-s / epoch | patterns / CPU-s | measured on "
        "| peak RSS (GB) | CPU / epoch: x faster |",
        "|---|---|---|---|---|---|---|",
    ]
    from bench.rows import ROWS

    for row in ROWS:
        r = g["rows"].get(row.name)
        if r is None:
            continue
        if row.name not in summary["graphene"]:
            lines.append(f"| {row.label} | {r.get('skipped') or r.get('failed')} | | | | | |")
            continue
        s = summary["graphene"][row.name]
        how = (f"{s['patterns_seen']} patterns, extrapolated" if s["extrapolated"]
               else "a whole epoch")
        sp = "1" if row.name == REFERENCE else _num(s.get("epoch_speedup"), 2)
        lines.append(
            f"| {row.label} | {_num(s['cpu_s_per_epoch'])} | {_num(s['wall_s_per_epoch'])} "
            f"| {_num(s['patterns_per_cpu_s'])} | {how} | {_gb(s['peak_rss_mb']):.2f} | {sp} |"
        )
    return lines + [""]


def _flops_table(raw: dict, summary: dict) -> list[str]:
    p = raw.get("peak", {})
    lines = [
        "## Distance to the physical floor",
        "",
        f"Measured fp32 matrix-product peak: {_num(p.get('gflops'))} GFLOP/s with "
        f"{p.get('threads')} threads (best of {raw['meta']['settings']['peak_repeats']} "
        f"products of {p.get('n')} x {p.get('n')} matrices). FLOPs: matrix products of one "
        "training epoch (forward + backward = 3 x forward).",
        "",
        "| configuration | GFLOP / epoch | floor at peak (wall-s / epoch) "
        "| measured wall-s / epoch | fraction of peak | encode (patterns / wall-s) |",
        "|---|---|---|---|---|---|",
    ]
    from bench.rows import ROWS

    for row in ROWS:
        s = summary["rows"].get(row.name)
        if s is None:
            continue
        lines.append(
            f"| {row.label} | {_num(s['gflop_per_epoch'])} "
            f"| {_num(s.get('floor_wall_s_per_epoch'))} | {_num(s['wall_s_per_epoch'])} "
            f"| {_num(s.get('fraction_of_peak'), 2)} | {_num(s['encode_patterns_per_s'])} |"
        )
    return lines + [""]


def write_results(folder, raw: dict, summary: dict, text: str) -> tuple[Path, Path]:
    """Write ``cpu.json`` (raw results and summary) and ``cpu.md`` (``text``) atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "cpu.json"
    md_path = folder / "cpu.md"
    write_json(json_path, {"summary": summary, **raw})
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".cpu.md.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are for everyone to read
        os.replace(tmp, md_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return md_path, json_path
