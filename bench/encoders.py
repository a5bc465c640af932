"""Which encoder? ``python -m bench.encoders [--quick] [--epochs N]``.

Compares the three encoders (``polar``: fixed first-moment pose; ``equivariant``: learned,
exactly equivariant pose; ``mlp``: the paper's) with every other setting at the package
defaults, on the chapters' simulated graphene (the three shipped scans, prepared together as in
chapter 2) and on a material no chapter uses (hBN with a boron vacancy and a carbon
substitution, simulated here with :func:`rrvae_nb.simulate.hexagonal_bn`). For each it prints:

- the agreement of the angle latent with the COM direction
  (:func:`rrvae_nb.metrics.angle_agreement`: 1 for a constant offset, about 0 for unrelated
  angles), for the model and for its encoder's pose alone, at
  initialisation (after :meth:`~rrvae_nb.model.RrVAE.calibrate_inputs`, the footing training
  starts from) and after training;
- the label-free rarity score (:func:`rrvae_nb.metrics.knn_rarity`) of the content latents
  against the vacancy positions (ROC AUC; positions within 0.1 nm of the vacancy), next to the
  same score on the first 2, 3 and 20 principal-component scores of the raw patterns and on the
  COM vector, each at the package's k = 20 and at a k fair to raw patterns (:func:`fair_k`);
- the spread of the content latents and the CPU-seconds per epoch and to a good model (angle-COM
  agreement >= 0.9 and vacancy AUC >= 0.8, checked after every epoch; the checks' own time is
  not counted).

Results: ``bench/results/encoders.md`` and ``.json`` (``bench/results/quick/`` with --quick).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import rrvae_nb as rr
from rrvae_nb import com, datasets, preprocess, simulate
from rrvae_nb.metrics import angle_agreement, knn_rarity, nearest_site, roc_auc
from rrvae_nb.signals import calibration_of

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = ("polar", "equivariant", "mlp")
GOOD_CORR, GOOD_AUC = 0.9, 0.8
DEFECT_RADIUS_NM = 0.1


def com_angle(signal) -> np.ndarray:
    """COM direction, counter-clockwise on screen (radians), one per pattern."""
    v = com.center_of_mass(signal).vector.reshape(-1, 2)
    return np.arctan2(-v[:, 0], v[:, 1])


def fair_k(n_cells: float) -> int:
    """A k for knn_rarity that is fair to every representation: half the number of unit cells
    the patterns cover. Each site of a raw pattern (PCA, COM) has about that many look-alikes;
    rotation-invariant latents have more (sites related by the lattice's rotations), so the
    package's default k = 20 can favour them where a scan holds few unit cells."""
    return max(1, int(n_cells) // 2)


def baselines(raw: np.ndarray, com_vec: np.ndarray, positive: np.ndarray, k_fair: int) -> dict:
    flat = raw.reshape(len(raw), -1).astype(np.float64)
    flat -= flat.mean(0)
    u, s, _ = np.linalg.svd(flat, full_matrices=False)
    reps = {f"pca{n}": u[:, :n] * s[:n] for n in (2, 3, 20)}
    reps["com"] = com_vec
    return {f"{name}_k{k}": roc_auc(knn_rarity(v, k), positive)
            for name, v in reps.items() for k in (20, k_fair)}


def graphene_data(quick: bool) -> dict:
    kinds = ("pristine", "vacancy", "si")
    stride = 2 if quick else 1
    sigs = {k: datasets.load(f"graphene_{k}_sim").inav[::stride, ::stride] for k in kinds}
    truth = simulate.ground_truth_of(datasets.load("graphene_vacancy_sim"))
    cal = calibration_of(sigs["vacancy"])
    shape = sigs["vacancy"].data.shape[:2]
    stacked = np.concatenate([sigs[k].data for k in kinds], axis=0)
    prep = preprocess.prepare(stacked, calibration=cal, progress=False)
    n = shape[0] * shape[1]
    positive = np.zeros(3 * n, bool)
    positive[n:2 * n] = nearest_site(cal, shape, truth.vacancies_nm).distance_nm.ravel() \
        < DEFECT_RADIUS_NM
    com_vec = np.concatenate([com.center_of_mass(sigs[k]).vector.reshape(-1, 2) for k in kinds])
    cells = 3 * _area_nm2(cal, shape) / (math.sqrt(3) / 2 * simulate.GRAPHENE_LATTICE_NM**2)
    k_fair = fair_k(cells)
    return dict(name="graphene (chapter 2's three scans)", patterns=prep.patterns,
                com_angle=np.arctan2(-com_vec[:, 0], com_vec[:, 1]), positive=positive,
                k_fair=k_fair, cells=cells,
                baselines=baselines(stacked.reshape(3 * n, *stacked.shape[-2:]), com_vec,
                                    positive, k_fair))


def _area_nm2(cal, shape) -> float:
    return shape[0] * shape[1] * cal.scan_step_nm**2


def hbn_data(quick: bool) -> dict:
    sim = simulate.hexagonal_bn(scan_gpts=24 if quick else 32, progress=False)
    sig = sim.signal
    cal = calibration_of(sig)
    shape = sig.data.shape[:2]
    prep = preprocess.prepare(sig, progress=False)
    positive = nearest_site(cal, shape, sim.atoms.vacancies_nm).distance_nm.ravel() \
        < DEFECT_RADIUS_NM
    com_vec = com.center_of_mass(sig).vector.reshape(-1, 2)
    cells = _area_nm2(cal, shape) / (math.sqrt(3) / 2 * simulate.HBN_LATTICE_NM**2)
    k_fair = fair_k(cells)
    return dict(name="hBN, V_B + C_B (new material)", patterns=prep.patterns,
                com_angle=np.arctan2(-com_vec[:, 0], com_vec[:, 1]), positive=positive,
                k_fair=k_fair, cells=cells,
                baselines=baselines(sig.data.reshape(-1, *sig.data.shape[-2:]), com_vec,
                                    positive, k_fair))


def measure(model, data) -> tuple[float, float, float, float]:
    """Angle-COM agreement, vacancy AUC at k = 20 and at the fair k, spread of z."""
    enc = model.encode(data["patterns"], progress=False)
    corr = angle_agreement(enc.angle, data["com_angle"])
    aucs = []
    for k in (20, data["k_fair"]):
        try:
            aucs.append(roc_auc(knn_rarity(enc.z, k), data["positive"]))
        except ValueError:  # collapsed latents: no spread to standardise
            aucs.append(float("nan"))
    return float(corr), float(aucs[0]), float(aucs[1]), float(enc.z.std(0).mean())


def pose_corr(model, data) -> float | None:
    """Angle-COM agreement of the encoder's pose alone (:meth:`RrVAE.encoder_pose`), before the
    residual angle the MLP adds; None for ``mlp``, which has no separate pose."""
    pose = model.encoder_pose(data["patterns"])
    return None if pose is None else angle_agreement(pose, data["com_angle"])


def run_encoder(encoder: str, data: dict, epochs: int, seed: int) -> dict:
    x = data["patterns"]
    model = rr.RrVAE(x.shape[1:], 2, encoder=encoder, seed=seed).calibrate_inputs(x)
    init_corr, init_auc, init_auc_fair, _ = measure(model, data)
    init_pose = pose_corr(model, data)
    state = {"check_cpu": 0.0, "good_cpu": None, "good_epoch": None, "curve": []}
    start = time.process_time()

    def check(epoch, hist):
        t0 = time.process_time()
        corr, auc, auc_fair, _ = measure(model, data)
        state["curve"].append([epoch, corr, auc, auc_fair])
        if state["good_cpu"] is None and corr >= GOOD_CORR and auc >= GOOD_AUC:
            state["good_cpu"] = t0 - start - state["check_cpu"]
            state["good_epoch"] = epoch
        state["check_cpu"] += time.process_time() - t0

    hist = rr.fit(model, x, epochs=epochs, seed=seed, progress=False, callback=check)
    train_cpu = time.process_time() - start - state["check_cpu"]
    corr, auc, auc_fair, zspread = measure(model, data)
    mirrored = angle_agreement(model.encode(x, progress=False).angle, -data["com_angle"])
    return dict(encoder=encoder, init_corr=init_corr, init_auc=init_auc, corr=corr, auc=auc,
                mirror_corr=mirrored,
                init_pose_corr=init_pose, pose_corr=pose_corr(model, data),
                init_auc_fair=init_auc_fair, auc_fair=auc_fair,
                z_spread=zspread, latent_variance=hist.latent_variance,
                cpu_per_epoch=train_cpu / epochs, good_cpu=state["good_cpu"],
                good_epoch=state["good_epoch"], curve=state["curve"])


def _seeds_text(meta: dict) -> str:
    seeds = meta.get("seeds", [meta.get("seed", 0)])
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return (f"seeds {', '.join(map(str, seeds))} (each cell: median, and the range over the "
            "seeds in brackets)")


def _cell(values: list, fmt: str = ".3f") -> str:
    """Median of per-seed values, with their range when there is more than one."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    med = float(np.median(vals))
    if len(values) == 1:
        return f"{med:{fmt}}"
    return f"{med:{fmt}} [{min(vals):{fmt}}, {max(vals):{fmt}}]"


def _row(encoder: str, rows: list[dict]) -> str:
    """One table row per encoder; several seeds are summarised by median and range."""
    col = lambda key, fmt=".3f": _cell([r[key] for r in rows], fmt)  # noqa: E731
    reached = [r for r in rows if r["good_cpu"] is not None]
    good = f"{len(reached)}/{len(rows)} runs: " if len(rows) > 1 else ""
    if reached:
        good += (f"{_cell([r['good_cpu'] for r in reached], '.1f')} "
                 f"({_cell([r['good_epoch'] for r in reached], '.0f')} epochs)")
    else:
        good += "not reached"
    pose = (f"{col('init_pose_corr')} / {col('pose_corr')}"
            if rows[0].get("pose_corr") is not None else "-")
    return (f"| {encoder} | {col('init_corr')} | {col('corr')} | {pose} | "
            f"{col('init_auc')} / {col('init_auc_fair')} | {col('auc')} / {col('auc_fair')} | "
            f"{col('z_spread')} | {col('cpu_per_epoch', '.2f')} | {good} |")


def report(results: dict, meta: dict) -> str:
    lines = [f"# Encoders compared ({meta['epochs']} epochs, package defaults otherwise)", "",
             f"{meta['machine']}; torch threads {meta['threads']}; {_seeds_text(meta)}; "
             f"wall time {meta['wall_s']:.0f} s.", ""]
    for res in results.values():
        b, kf = res["baselines"], res["k_fair"]
        base = "; ".join(
            f"{label} {b[f'{key}_k20']:.3f} / {b[f'{key}_k{kf}']:.3f}"
            for key, label in (("pca2", "PCA 2"), ("pca3", "PCA 3"), ("pca20", "PCA 20"),
                               ("com", "COM vector")))
        lines += [f"## {res['name']}", "",
                  f"{res['n_patterns']} patterns of {res['pattern_px']} px over "
                  f"{res['cells']:.0f} unit cells, {res['n_positive']} within "
                  f"{DEFECT_RADIUS_NM} nm of the vacancy. Vacancy AUC of knn_rarity at k = 20 / "
                  f"at the fair k = {kf} (half the unit cells): {base}.", "",
                  "| encoder | angle-COM agreement untrained | trained | pose alone untrained / "
                  "trained | vacancy AUC untrained "
                  f"(k = 20 / {kf}) | trained (k = 20 / {kf}) | z spread | CPU-s / epoch | "
                  "CPU-s to a good model |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for encoder in dict.fromkeys(r["encoder"] for r in res["rows"]):
            lines.append(_row(encoder, [r for r in res["rows"] if r["encoder"] == encoder]))
        mirrored = [f"{r['encoder']} seed {r.get('seed', 0)} ({r['mirror_corr']:.2f})"
                    for r in res["rows"] if r.get("mirror_corr", 0) >= GOOD_CORR]
        lines += ["", "Runs that ended on the mirror image of the COM direction (agreement "
                  f"with it mirrored >= {GOOD_CORR}): {', '.join(mirrored) or 'none'}.", ""]
    lines += [f"A good model: angle-COM agreement >= {GOOD_CORR} and vacancy AUC "
              f">= {GOOD_AUC} (k = 20), checked after every epoch; the time is when that first"
              " held, and the trained columns show where the run ended (it need not still "
              "hold: the per-epoch curves are in the JSON). Untrained: after "
              "calibrate_inputs, the footing training starts from. Angle-COM agreement: mean "
              "resultant length of the angle minus the COM direction (1 for a constant "
              "offset, about 0 for unrelated angles; circular correlation coefficients, "
              "which the earlier tables used, are unreliable for directions spread over the "
              "whole circle, see metrics.angle_agreement); a run that ended on the mirror "
              "image of the COM direction scores about 0 here and is counted below. Pose "
              "alone: the same for the encoder's pose before the residual angle its MLP adds "
              "(polar: the fixed first-moment direction; equivariant: the learned harmonic; "
              "mlp has none). z spread: mean standard deviation of the content latents' "
              "posterior means over the patterns. The fair k: each site of a raw pattern has "
              "about one look-alike per unit cell, so a k above half the unit cells scores "
              "common sites of PCA and COM as rare; rotation-invariant latents merge sites "
              "related by the lattice's rotations and can afford k = 20 where the raw "
              "patterns cannot.", ""]
    return "\n".join(lines)


def rewrite_report(path: Path) -> str:
    """Rewrite the Markdown beside a results JSON (after a change of the report's wording)."""
    raw = json.loads(Path(path).read_text())
    text = report(raw["results"], raw["meta"])
    Path(path).with_suffix(".md").write_text(text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.encoders", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small data and 3 epochs (a smoke run)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seeds", default="0",
                   help="comma-separated seeds; the report gives the median and range over them")
    p.add_argument("--data", default="graphene,hbn")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    epochs = args.epochs or (3 if args.quick else 100)
    seeds = [int(v) for v in args.seeds.split(",")]
    t0 = time.time()
    results = {}
    for name in args.data.split(","):
        data = {"graphene": graphene_data, "hbn": hbn_data}[name](args.quick)
        rows = []
        for encoder in ENCODERS:
            for seed in seeds:
                rows.append(dict(run_encoder(encoder, data, epochs, seed), seed=seed))
                print(name, {k: v for k, v in rows[-1].items() if k != "curve"}, flush=True)
        results[name] = dict(name=data["name"], baselines=data["baselines"], rows=rows,
                             n_patterns=len(data["patterns"]),
                             pattern_px=list(data["patterns"].shape[1:]),
                             n_positive=int(data["positive"].sum()),
                             k_fair=data["k_fair"], cells=data["cells"])
    meta = dict(epochs=epochs, seeds=seeds, threads=torch.get_num_threads(),
                machine=f"{platform.machine()}, {os.cpu_count()} CPUs", wall_s=time.time() - t0)
    out = ROOT / "bench" / "results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    text = report(results, meta)
    (out / "encoders.md").write_text(text)
    (out / "encoders.json").write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    print(text)


if __name__ == "__main__":
    main()
