"""Why does chapter 4's trained model miss the Si? ``python -m bench.si_ablation [--quick]``.

Chapter 4 trains one rrVAE per emulated experimental scan and scores each position by how far
its unit-cell-averaged content latents lie from their median. On the shipped emulation the
trained model finds the vacancy but not the Si dopant, while the untrained model and |COM| do.
This script regenerates the Si scan with :func:`rrvae_nb.simulate.emulate_graphene_experiment`
with one group of the measurement knobs of ``data/make_data.py`` (``_MEASUREMENT``) switched
off at a time (scan-camera rotation; probe aberrations; drift; camera PSF, gain and read-out
noise), and with all of them off, and runs the chapter's pipeline on each (its cells 911159a2,
f817e652, 2ebbe40a, e734bb63, e7f67b93, 1523d83f, 94650e20 and cc5360ce, copied here:
``prepare(normalise=False)``, PCA with 20 fitted and ``noise_floor_keep(factor=1.5, tail=10)``
kept, division by the std, ``RrVAE(latent_dim=2)``, ``fit(epochs, batch_size=128,
calibrate=False)``, the 0.08 nm defect score and ``locate``). For each variant it reports:

- the AUC (positions < 0.15 nm from the Si against > 0.3 nm) and the distance of the score's
  maximum from the Si, for the trained default model (per seed), the untrained model with the
  same seed, and the same score on |COM| (after ``com.find_rotation``, as the chapter does);
- how many PCA components the noise-floor rule keeps;
- what the trained content latents encode, at positions > 0.3 nm from the Si: the largest
  |Spearman correlation| of a latent with |COM| (the dipole strength, which is what sets a Si
  apart) and with the distance from the (true, drifted) probe position to the nearest carbon
  atom (the site in the unit cell).

With ``--fix N`` it adds one change of the pipeline (not of the data): the same model with N
content latents instead of 2, on the shipped vacancy scan and on every Si variant, with its
untrained control (the shipped vacancy scan is also run with 2 latents then, for comparison).

Each variant is simulated once (about 2 CPU-minutes for the 64 x 64 scan) and cached in
``--cache`` (default: a folder in the system's temporary directory). ``--quick``: a 32 x 32 scan
over the same 1 nm field (every variant and the baseline alike), 30 epochs, one seed.

``--variants "no defocus" "no astigmatism" "no coma" --name si_ablation_aberrations`` switches
off one aberration at a time instead.

Results: ``bench/results/si_ablation.md`` and ``.json`` (``bench/results/quick/`` with --quick;
``--name`` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

import rrvae_nb as rr
from rrvae_nb import com, datasets, io, preprocess, simulate
from rrvae_nb.metrics import nearest_site, roc_auc
from rrvae_nb.signals import calibration_of

ROOT = Path(__file__).resolve().parents[1]
PCA_FIT = 20
BATCH_SIZE = 128
SMOOTH_NM = 0.08

#: The knob groups of data/make_data.py's _MEASUREMENT; switching a group off means leaving its
#: keywords out, so the recipe's defaults (no rotation, no aberrations, no drift, an ideal
#: counting camera) apply. Source size, jitter and dose are the recipe's defaults in every variant.
GROUPS = {
    "rotation": ("scan_rotation_deg",),
    "aberrations": ("defocus_nm", "astigmatism_nm", "astigmatism_angle_deg", "coma_nm",
                    "coma_angle_deg"),
    "drift": ("drift_nm", "drift_quadratic_nm"),
    "camera": ("camera_gain", "camera_psf_px", "camera_psf_tail", "camera_psf_tail_px",
               "read_noise"),
}
VARIANTS = {"shipped knobs": (), **{f"no {g}": (g,) for g in GROUPS},
            "all off": tuple(GROUPS)}
#: Not run by default (--variants): one aberration at a time switched off.
ABERRATIONS = {"defocus": ("defocus_nm",),
               "astigmatism": ("astigmatism_nm", "astigmatism_angle_deg"),
               "coma": ("coma_nm", "coma_angle_deg")}
GROUPS.update(ABERRATIONS)
VARIANTS.update({f"no {g}": (g,) for g in ABERRATIONS})
DEFAULT_VARIANTS = ["shipped knobs", "no rotation", "no aberrations", "no drift", "no camera",
                    "all off"]


def measurement_knobs() -> dict:
    """The shipped Si scan's knobs, from data/make_data.py (read from the file, not imported as a
    package): ``_MEASUREMENT`` and the Si's height; without the HAADF image, which the chapter's
    pipeline does not read (it leaves the patterns unchanged)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_data", ROOT / "data" / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    params = dict(mod.DATASETS["graphene_si_experiment"]["params"])
    for key in ("defects", "camera_binning", "haadf_inner_mrad", "haadf_outer_mrad"):
        params.pop(key, None)
    return params


def knobs_of(variant: str) -> dict:
    off = {k for g in VARIANTS[variant] for k in GROUPS[g]}
    return {k: v for k, v in measurement_knobs().items() if k not in off}


def simulate_variant(variant: str, quick: bool, cache: Path) -> tuple[object, object, float]:
    """The Si scan with the variant's knobs: (signal, ground truth, seconds; 0 when cached or
    shipped: the shipped file is the "shipped knobs" variant, byte for byte)."""
    if variant == "shipped knobs" and not quick:
        return (*load_shipped("si"), 0.0)
    size = dict(scan_gpts=32) if quick else {}
    stem = variant.replace(" ", "_") + ("_quick" if quick else "")
    data_path, truth_path = cache / f"{stem}.hspy", cache / f"{stem}_truth.pkl"
    if data_path.exists() and truth_path.exists():
        with open(truth_path, "rb") as fh:
            truth = pickle.load(fh)
        return io.load(data_path), truth, 0.0
    t0 = time.perf_counter()
    sim = simulate.emulate_graphene_experiment(defects=["si"], camera_binning=8, **size,
                                               **knobs_of(variant), progress=False)
    seconds = time.perf_counter() - t0
    try:  # a cache only: a failure to write it costs a rerun its simulation, nothing else
        cache.mkdir(parents=True, exist_ok=True)
        sim.signal.save(data_path, overwrite=True)
        with open(truth_path, "wb") as fh:
            pickle.dump(sim.atoms, fh)
    except Exception as err:  # noqa: BLE001
        print(f"not cached ({err})")
        data_path.unlink(missing_ok=True)
        truth_path.unlink(missing_ok=True)
    return sim.signal, sim.atoms, seconds


# ---- the chapter's pipeline (cells 911159a2, f817e652, 2ebbe40a, e7f67b93, 1523d83f) --------

def prepare(sig, seed: int = 0):
    """Chapter 4: centre and subtract the mean, PCA above the noise floor, divide by the std."""
    red = preprocess.prepare(sig, normalise=False, progress=False)
    _, ratio = preprocess.pca_denoise(red.patterns, PCA_FIT, seed=seed)
    keep, _ = preprocess.noise_floor_keep(np.asarray(ratio), factor=1.5, tail=10)
    den = preprocess.pca_denoise(red.patterns, PCA_FIT, keep, seed=seed)[0]
    return red, (den / den.std()).astype(np.float32), keep


def defect_score(z_map, step_nm, smooth_nm=SMOOTH_NM):
    sigma = smooth_nm / step_nm
    averaged = np.stack([ndimage.gaussian_filter(z_map[..., i], sigma, mode="reflect")
                         for i in range(z_map.shape[-1])], axis=-1)
    score = np.linalg.norm(averaged - np.median(averaged, axis=(0, 1)), axis=-1)
    edge = int(math.ceil(2 * sigma))
    out = np.full(score.shape, np.nan)
    out[edge:-edge, edge:-edge] = score[edge:-edge, edge:-edge]
    return out


def locate(s, cal, defect_nm) -> tuple[float, float]:
    r = nearest_site(cal, s.shape, defect_nm).distance_nm
    valid = np.isfinite(s)
    peak = np.unravel_index(np.nanargmax(s), s.shape)
    near, far = valid & (r < 0.15), valid & (r > 0.3)
    return float(r[peak]), roc_auc(s[near | far], near[near | far])


# ---- measurements ---------------------------------------------------------------------------

def site_distance(truth, cal, shape) -> np.ndarray:
    """Distance (nm) from each true (drifted, jittered) probe position to the nearest carbon."""
    probes = truth.probe_positions_nm
    if probes is None:
        probes = cal.scan_positions_nm(shape)
    probes = np.asarray(probes)
    if probes.shape[:2] != tuple(shape):  # a strided scan (quick mode): every n-th position
        probes = probes[::probes.shape[0] // shape[0], ::probes.shape[1] // shape[1]]
    carbon = truth.positions_nm[~np.asarray(truth.is_defect)]
    return cKDTree(carbon).query(np.asarray(probes).reshape(-1, 2))[0].reshape(shape)


def _r2(y, features) -> float:
    """Share of the variance of y explained by a least-squares fit on the features."""
    a = np.column_stack([np.ones(len(y))] + list(features))
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(1 - np.var(y - a @ coef) / np.var(y))


def _rho(a, b, mask) -> float:
    return float(spearmanr(a[mask], b[mask])[0])


def diagnose(z, angle, score, mag, d_site, far, sigma) -> dict:
    """What the trained latents and the score follow, at positions > 0.3 nm from the defect.

    Raw latents (all far positions): Spearman with |COM|, with the distance from the true probe
    position to the nearest carbon (site in the cell), with the row (time along the raster:
    drift), and the share of their variance explained by the angle latent's first three
    harmonics. The score (the far positions it covers): Spearman with the row, the distance from
    the scan's edge, the unit-cell-averaged |COM|, the length of the unit-cell-averaged unit
    vector of the angle latent (1 where the angle hardly changes), and how far the
    unit-cell-averaged distance to the nearest carbon lies from its median (what is left of the
    lattice after the average); and each unit-cell-averaged latent against that averaged distance.
    """
    ny, nx = score.shape
    iy, ix = np.mgrid[:ny, :nx]
    edge = np.minimum.reduce([iy, ix, ny - 1 - iy, nx - 1 - ix])
    harmonics = [f(k * angle[far]) for k in (1, 2, 3) for f in (np.cos, np.sin)]
    latents = {f"z{i + 1}": dict(
        com=_rho(z[..., i], mag, far), site=_rho(z[..., i], d_site, far),
        row=_rho(z[..., i], iy, far), angle_r2=_r2(z[..., i][far], harmonics))
        for i in range(z.shape[-1])}
    m = far & np.isfinite(score)
    smooth = lambda v: ndimage.gaussian_filter(v, sigma, mode="reflect")  # noqa: E731
    order = np.hypot(smooth(np.cos(angle)), smooth(np.sin(angle)))
    site = smooth(d_site)
    return dict(latents=latents, score=dict(
        row=_rho(score, iy, m), edge=_rho(score, edge, m), com_smoothed=_rho(score, smooth(mag), m),
        angle_order=_rho(score, order, m),
        site_residual=_rho(score, np.abs(site - np.median(site[m])), m)),
        smoothed_latent_vs_smoothed_site={k: _rho(smooth(z[..., i]), site, m)
                                          for i, k in enumerate(latents)})


def evaluate(sig, truth, seeds, epochs: int, latent_dim: int = 2) -> dict:
    cal = calibration_of(sig)
    is_defect = np.asarray(truth.is_defect)
    defect = truth.positions_nm[is_defect][0] if is_defect.any() else truth.vacancies_nm[0]
    red, x, keep = prepare(sig)
    shape = red.scan_shape
    step = cal.scan_step_nm
    com_det = com.center_of_mass(sig, negative="clip", progress=False)
    rotation = com.find_rotation(com_det)
    com_scan = com.apply_rotation(com_det, rotation.rotation_deg, rotation.transpose)
    mag = com_scan.magnitude
    r = nearest_site(cal, shape, defect).distance_nm
    far = r > 0.3
    d_site = site_distance(truth, cal, shape)
    out = dict(keep=keep, rotation_found_deg=float(rotation.rotation_deg), latent_dim=latent_dim,
               com=locate(defect_score(mag[..., None], step), cal, defect), seeds={})
    for seed in seeds:
        t0 = time.perf_counter()
        model = rr.RrVAE(x.shape[1:], latent_dim=latent_dim, seed=seed)
        untrained = defect_score(red.to_map(model.encode(x, progress=False).z), step)
        hist = rr.fit(model, x, epochs=epochs, batch_size=BATCH_SIZE, seed=seed, progress=False,
                      calibrate=False)
        seconds = time.perf_counter() - t0
        enc = model.encode(x, progress=False)
        z, angle = red.to_map(enc.z), red.to_map(enc.angle)
        trained = defect_score(z, step)
        diag = diagnose(z, angle, trained, mag, d_site, far, SMOOTH_NM / step)
        near = (r < 0.15) & np.isfinite(trained)
        out["seeds"][seed] = dict(
            trained=locate(trained, cal, defect), untrained=locate(untrained, cal, defect),
            rho_com=max(abs(v["com"]) for v in diag["latents"].values()),
            rho_site=max(abs(v["site"]) for v in diag["latents"].values()),
            score_near_over_far=float(np.median(trained[near])
                                      / np.nanmedian(trained[far & np.isfinite(trained)])),
            diagnostics=diag, val_loss=[float(hist.val_loss[0]), float(hist.val_loss[-1])],
            seconds=seconds)
    return out


def load_shipped(kind: str):
    man = json.loads((datasets.default_data_dir() / "manifest.json").read_text())["datasets"]
    entry = man[f"graphene_{kind}_experiment"]
    sig = io.load(datasets.default_data_dir() / entry["file"], lazy=True)
    return sig, simulate.ground_truth_from_recipe(entry["recipe"], entry["params"])


def _fmt(pair) -> str:
    return f"{pair[1]:.3f} ({pair[0]:.2f})"


def write(results: dict, args, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.name}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    lines = [
        "# Si dopant: which measurement knob hides it from the trained model?",
        "",
        f"`{results['command']}` on {results['machine']}; {results['scan']}, "
        f"{args.epochs} epochs.",
        "",
        "AUC of positions < 0.15 nm from the defect against > 0.3 nm, and in brackets the "
        "distance (nm) of the score's maximum from it. `keep`: PCA components above the noise "
        "floor; `z`: content latents. rho: largest |Spearman| of a trained content latent, at "
        "positions > 0.3 nm from the defect, with |COM| (the dipole strength, which sets a Si "
        "apart) and with the distance from the true probe position to the nearest carbon atom "
        "(the site in the unit cell). near/far: median trained score < 0.15 nm from the defect "
        "over the median > 0.3 nm. sim s: seconds to simulate the scan (0: the shipped file, or "
        "read from the cache of an earlier run).",
        "",
        "Data: `Si, shipped knobs` is data/graphene_si_experiment as shipped (every knob of "
        "data/make_data.py, the Si 0.1 nm out of the carbon plane); each `no ...` row "
        "regenerates it with that group of knobs left out (the Si's height kept).",
        "",
        "| data | z | keep | seed | trained | untrained | \\|COM\\| | rho \\|COM\\| "
        "| rho site | near/far | held-out loss | train s | sim s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        for seed, r in row["seeds"].items():
            lines.append(
                f"| {row['data']} | {row['latent_dim']} | {row['keep']} | {seed} | "
                f"{_fmt(r['trained'])} | {_fmt(r['untrained'])} | {_fmt(row['com'])} | "
                f"{r['rho_com']:.2f} | {r['rho_site']:.2f} | {r['score_near_over_far']:.2f} | "
                f"{r['val_loss'][0]:.0f} -> {r['val_loss'][1]:.0f} | {r['seconds']:.0f} | "
                f"{row['sim_seconds']:.0f} |")
    lines += ["", "Scan-camera rotation found by `com.find_rotation` (deg): " + ", ".join(
        f"{row['data']} {row['rotation_found_deg']:+.1f}" for row in results["rows"]
        if row["latent_dim"] == 2), ""]
    first = next((row for row in results["rows"] if row["data"] == "Si, shipped knobs"
                  and row["latent_dim"] == 2), None)
    if first is not None:
        seed, r = next(iter(first["seeds"].items()))
        d = r["diagnostics"]
        lines += [f"Diagnostics, Si with the shipped knobs, 2 latents, seed {seed}, positions "
                  "> 0.3 nm from the Si (Spearman; angle R^2: variance share explained by the "
                  "angle latent's harmonics 1 to 3):", ""]
        for name, v in d["latents"].items():
            lines.append(f"- {name}: |COM| {v['com']:+.2f}, distance to nearest C "
                         f"{v['site']:+.2f}, row {v['row']:+.2f}, angle R^2 {v['angle_r2']:.2f}")
        s = d["score"]
        lines.append(f"- score: row {s['row']:+.2f}, distance from the edge {s['edge']:+.2f}, "
                     f"unit-cell-averaged |COM| {s['com_smoothed']:+.2f}, order of the angle "
                     f"{s['angle_order']:+.2f}, |unit-cell-averaged distance to the nearest C - "
                     f"its median| {s['site_residual']:+.2f}")
        lines.append("- unit-cell-averaged latents vs the unit-cell-averaged distance to the "
                     "nearest C: " + ", ".join(f"{k} {v:+.2f}" for k, v in
                                               d["smoothed_latent_vs_smoothed_site"].items()))
        lines.append("")
    (out_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="32 x 32 scans, 30 epochs, one seed")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--fix", type=int, default=None, metavar="LATENT_DIM",
                   help="also run the shipped vacancy and Si scans, and the variants, with this "
                   "many content latents")
    p.add_argument("--name", default="si_ablation", help="stem of the results files")
    p.add_argument("--cache", type=Path,
                   default=Path(tempfile.gettempdir()) / "rrvae_si_ablation")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (30 if args.quick else 60)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1])
    out_dir = ROOT / "bench" / "results" / ("quick" if args.quick else "")
    torch_threads = __import__("torch").get_num_threads()
    results = dict(command="python -m bench.si_ablation " + " ".join(argv or __import__(
                       "sys").argv[1:]),
                   machine=f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
                   f"{torch_threads}",
                   scan="32 x 32 over 1 nm" if args.quick else "64 x 64 over 1 nm (as shipped)",
                   epochs=args.epochs, seeds=args.seeds, rows=[])

    def add(data, sig, truth, sim_seconds, latent_dim=2):
        r = evaluate(sig, truth, args.seeds, args.epochs, latent_dim=latent_dim)
        r.update(data=data, sim_seconds=sim_seconds)
        results["rows"].append(r)
        for seed, s in r["seeds"].items():
            print(f"{data:>18} z {latent_dim} seed {seed}: keep {r['keep']}, trained "
                  f"{_fmt(s['trained'])}, untrained {_fmt(s['untrained'])}, |COM| "
                  f"{_fmt(r['com'])}, rho |COM| {s['rho_com']:.2f}, rho site "
                  f"{s['rho_site']:.2f} ({s['seconds']:.0f} s)", flush=True)
        write(results, args, out_dir)

    stride = 2 if args.quick else 1
    vacancy = load_shipped("vacancy")
    if stride > 1:
        vacancy = (vacancy[0].inav[::stride, ::stride], vacancy[1])
    for latent_dim in [2] + ([args.fix] if args.fix else []):
        if latent_dim != 2 or args.fix:
            add("vacancy, shipped", *vacancy, 0.0, latent_dim=latent_dim)
        for variant in args.variants:
            sig, truth, sec = simulate_variant(variant, args.quick, args.cache)
            add(f"Si, {variant}", sig, truth, sec, latent_dim=latent_dim)
    print(f"wrote {out_dir / args.name}.md")


if __name__ == "__main__":
    main()
