"""One prepared script for a GPU machine: ``python -m bench.gpu`` (``make bench-gpu``).

``device="cuda"`` had never run on a GPU when this was written; the script measures it in one go
and writes ``bench/results/gpu.md`` and ``gpu.json`` (after every step, so that a run cut short
keeps what it measured). Without CUDA it refuses (exit status 2); ``--dry-run`` runs every step
on the CPU at tiny sizes, with the CPU standing in for the GPU, to check the script itself
(``tests/test_bench_gpu.py``; results go to ``bench/results/dry/`` unless ``--out`` is given).

Steps (each one's failure is recorded and the next step runs):

1. ``tests``: the unit tests marked ``gpu`` (``pytest -m gpu tests``).
2. ``same_weights``: the default and the paper's model, same weights, encoded and decoded on the
   CPU and on the GPU: the largest differences (float32 rounding expected: different kernels).
3. ``chapter2``: the default and the paper's model trained on chapter 2's graphene (the three
   shipped simulations, prepared as the chapter does) on the CPU and on the GPU with the same
   seeds; per-epoch time, losses, and how far the two trained models agree (encoded angles'
   circular correlation, latent correlation). Training draws its random numbers on the
   training device, and CUDA's generator is not the CPU's: the two runs see different ELBO
   samples, so their weights are not expected to be equal, only equally good.
4. ``synthetic``: ``make bench``'s 4096 rotated 64 x 64 synthetic patterns on the GPU, both
   models, epoch by epoch up to a wall-clock budget: seconds per epoch, time to a good model
   (angle recovery >= 0.95 and error against the noise-free patterns below the noise variance,
   as in ``make bench``), and encoding patterns per second (CPU and GPU).
5. ``scan``: a generated 64 x 64 x 256 x 256 scan (uint16 ``.hspy``, 0.5 GB; ``bench.scale``'s
   shifted disks) prepared to 64 x 64 patterns: ``encode_maps`` (CPU), the model's ``encode`` on
   the GPU, and the LiberTEM UDF on the CPU and on LiberTEM's CUDA backend, in patterns per
   second, with the UDF maps compared to ``encode_maps``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

REFUSAL = (
    "bench.gpu needs a CUDA GPU and a CUDA build of torch: torch.cuda.is_available() is False "
    "here. Run it on a machine with an NVIDIA GPU (pip install torch with CUDA there), or pass "
    "--dry-run to check the script on the CPU at tiny sizes."
)

#: Sizes of the real run and of --dry-run.
SETTINGS = {
    "full": dict(ch2_stride=1, ch2_epochs={"default": 10, "paper": 3}, synthetic_n=4096,
                 synthetic_size=64, budget_s={"default": 60.0, "paper": 120.0}, max_epochs=200,
                 scan=64, detector=256, chunk_scan=16, crop=128, bin_factor=2, udf_batch=1024,
                 test_paths=["tests"]),
    "dry": dict(ch2_stride=8, ch2_epochs={"default": 2, "paper": 1}, synthetic_n=128,
                synthetic_size=24, budget_s={"default": 2.0, "paper": 2.0}, max_epochs=2,
                scan=8, detector=64, chunk_scan=4, crop=32, bin_factor=2, udf_batch=16,
                test_paths=["tests/test_gpu.py"]),
}

MODELS = ("default", "paper")


def make_model(name: str, shape, **extra):
    """The default model or the paper's (AtomAI's networks, free-mean angle prior)."""
    import rrvae_nb as rr
    from bench.rows import PAPER_DECODER_HIDDEN, PAPER_ENCODER_HIDDEN

    if name == "default":
        return rr.RrVAE(shape, 2, seed=0, **extra)
    return rr.RrVAE(shape, 2, encoder="mlp", decoder="spatial", angle_prior="free",
                    encoder_hidden=PAPER_ENCODER_HIDDEN, decoder_hidden=PAPER_DECODER_HIDDEN,
                    seed=0, **extra)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _angle_diff(a, b) -> float:
    import rrvae_nb as rr

    return float(np.abs(rr.wrap_angle(np.asarray(a) - np.asarray(b))).max())


# ------------------------------------------------------------------------------ steps
def step_tests(st, device, work) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
           *st["test_paths"]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "tail": tail,
            "summary": tail[-1] if tail else "", "wall_s": time.perf_counter() - t0}


def step_same_weights(st, device, work) -> dict:
    import torch

    from bench import data as bdata

    folder = work / "synthetic"
    if not (folder / "patterns.npy").is_file():
        bdata.make_synthetic(folder, st["synthetic_n"], st["synthetic_size"], seed=0)
    x = bdata.load_synthetic(folder)["patterns"][:256]
    out = {}
    for name in MODELS:
        model = make_model(name, x.shape[1:]).calibrate_inputs(x)
        cpu = model.encode(x)
        rec_cpu = model.decode(cpu.z[:32], cpu.angle[:32])
        model.to(device)
        dev = model.encode(x)
        rec_dev = model.decode(cpu.z[:32], cpu.angle[:32])
        model.to("cpu")
        out[name] = {"angle": _angle_diff(dev.angle, cpu.angle),
                     "z": float(np.abs(dev.z - cpu.z).max()),
                     "z_std": float(np.abs(dev.z_std - cpu.z_std).max()),
                     "decode": float(np.abs(rec_dev - rec_cpu).max()),
                     "n": int(len(x))}
    out["torch"] = torch.__version__
    return out


def _chapter2_patterns(stride: int):
    from rrvae_nb import datasets, preprocess
    from rrvae_nb.signals import calibration_of

    signals = [datasets.load(f"graphene_{kind}_sim").inav[::stride, ::stride]
               for kind in ("pristine", "vacancy", "si")]
    stacked = np.concatenate([s.data for s in signals], axis=0)
    prep = preprocess.prepare(stacked, calibration=calibration_of(signals[0]), progress=False)
    return prep.patterns


def step_chapter2(st, device, work) -> dict:
    import rrvae_nb as rr
    from rrvae_nb.synthetic import circular_correlation

    x = _chapter2_patterns(st["ch2_stride"])
    out = {"n_patterns": int(len(x)), "pattern_shape": list(x.shape[1:])}
    for name in MODELS:
        runs = {}
        for key, dev in (("cpu", "cpu"), ("device", device)):
            model = make_model(name, x.shape[1:], scale=0.01)  # chapter 2's likelihood width
            t0 = time.perf_counter()
            hist = rr.fit(model, x, epochs=st["ch2_epochs"][name], batch_size=128, seed=0,
                          calibrate=False, device=dev, progress=False)
            _sync(dev)
            wall = time.perf_counter() - t0
            model.to("cpu")
            enc = model.encode(x)
            runs[key] = dict(seconds_per_epoch=[float(s) for s in hist.seconds], wall_s=wall,
                             train_loss=[float(v) for v in hist.train_loss],
                             val_loss=[float(v) for v in hist.val_loss], enc=enc,
                             state={k: v.clone() for k, v in model.state_dict().items()})
        a, b = runs["cpu"], runs["device"]
        corr = circular_correlation(a["enc"].angle, b["enc"].angle)
        weight_diff = max(float((a["state"][k].float() - b["state"][k].float()).abs().max())
                          for k in a["state"])
        z_corr = [float(abs(np.corrcoef(a["enc"].z[:, i], b["enc"].z[:, i])[0, 1]))
                  for i in range(a["enc"].z.shape[1])]
        for r in (a, b):
            r.pop("enc"), r.pop("state")
        out[name] = {"cpu": a, "device": b, "angle_circular_correlation": float(corr),
                     "latent_abs_correlation": z_corr, "max_weight_diff": weight_diff,
                     "epochs": st["ch2_epochs"][name]}
    return out


class _Budget(Exception):
    """Raised by the epoch callback when the wall-clock budget is used."""


def step_synthetic(st, device, work) -> dict:
    import rrvae_nb as rr
    from bench import data as bdata
    from bench import quality

    folder = work / "synthetic"
    if not (folder / "patterns.npy").is_file():
        bdata.make_synthetic(folder, st["synthetic_n"], st["synthetic_size"], seed=0)
    arrays = bdata.load_synthetic(folder)
    x = arrays["patterns"]
    _, val = bdata.split(len(x), 0)
    clean = quality.noise_free(arrays["templates"], arrays["label"][val], arrays["angle"][val])
    size = x.shape[-1]
    noise_var = quality.sse(x[val], clean) / (len(val) * size * size)
    out = {"n_patterns": int(len(x)), "size": int(size), "noise_variance": noise_var}
    for name in MODELS:
        model = make_model(name, x.shape[1:])
        epochs: list[dict] = []
        budget = st["budget_s"][name]
        train_s = 0.0

        def measure(epoch, history, model=model, epochs=epochs, budget=budget):
            nonlocal train_s
            train_s += history.seconds[-1]
            enc = model.encode(x[val], batch_size=1024)
            rec = model.decode(enc.z, enc.angle)
            mse = quality.sse(rec, clean) / (len(val) * size * size)
            r = quality.angle_recovery(enc.angle, arrays["angle"][val], arrays["label"][val])
            epochs.append({"epoch": epoch, "train_s": train_s, "angle_r": r,
                           "mse_noise_free": mse,
                           "good": quality.is_good(r, mse, noise_var)})
            if train_s >= budget:
                raise _Budget

        try:
            rr.fit(model, x, epochs=st["max_epochs"], batch_size=128, seed=0, device=device,
                   progress=False, callback=measure)
        except _Budget:
            pass
        good = next((e for e in epochs if e["good"]), None)
        enc_rates = {}
        for key, dev in (("cpu", "cpu"), ("device", device)):
            model.to(dev)
            model.encode(x[:1024], batch_size=1024)  # warm-up
            _sync(dev)
            t0 = time.perf_counter()
            model.encode(x, batch_size=1024)
            enc_rates[key] = len(x) / (time.perf_counter() - t0)
        model.to("cpu")
        out[name] = {"epochs": epochs, "s_per_epoch": train_s / max(len(epochs), 1),
                     "time_to_good_s": None if good is None else good["train_s"],
                     "epochs_to_good": None if good is None else good["epoch"],
                     "encode_patterns_per_s": enc_rates, "budget_s": budget}
    return out


def step_scan(st, device, work) -> dict:
    import torch

    from bench.scale import synthetic_signal
    from rrvae_nb import io
    from rrvae_nb.preprocess import prepare
    from rrvae_nb.recipe import Recipe
    from rrvae_nb.stream import encode_maps
    from rrvae_nb.udf import RrVAEEncoderUDF, latent_maps

    path = work / "scan.hspy"
    sig = synthetic_signal(st["scan"], st["detector"], st["chunk_scan"])
    t0 = time.perf_counter()
    io.save(path, sig, compression=None, show_progressbar=False)
    out = {"shape": list(sig.data.shape), "bytes": path.stat().st_size,
           "write_s": time.perf_counter() - t0}
    n = st["scan"] ** 2
    sig = io.load(path, lazy=True)
    prep = prepare(sig, crop=st["crop"], bin_factor=st["bin_factor"], compute=False,
                   progress=False)
    x = np.asarray(prep.patterns.compute())
    model = make_model("default", x.shape[1:]).calibrate_inputs(x)
    out["pattern_shape"] = list(x.shape[1:])

    t0 = time.perf_counter()
    ref_sig = encode_maps(model, prep, progress=False)
    rates = {"encode_maps_cpu": n / (time.perf_counter() - t0)}
    ref = {k: ref_sig.data[i] for i, k in enumerate(ref_sig.metadata.Signal.channels)}
    for key, dev in (("cpu", "cpu"), ("device", device)):
        model.to(dev)
        model.encode(x[:1024], batch_size=1024)
        _sync(dev)
        t0 = time.perf_counter()
        model.encode(x, batch_size=1024)
        rates[f"encode_in_memory_{key}"] = n / (time.perf_counter() - t0)
    model.to("cpu")

    import libertem.api as lt

    udf = RrVAEEncoderUDF(model, recipe=Recipe.from_prepared(prep), batch_size=st["udf_batch"])
    diffs = {}
    runs = [("udf_inline_cpu", dict(executor_spec="inline"), None)]
    if device.startswith("cuda"):
        runs.append(("udf_cuda_backend", dict(executor_spec="dask", cpus=1, gpus=1),
                     ("cuda",)))
    else:  # dry run: the same code path with LiberTEM's dask executor on one CPU worker
        runs.append(("udf_cuda_backend (dry run: CPU worker)",
                     dict(executor_spec="dask", cpus=1), ("numpy",)))
    for key, ctx_kw, backends in runs:
        with lt.Context.make_with(**ctx_kw) as ctx:
            ds = ctx.load("auto", path=path)
            ctx.run_udf(ds, udf, backends=backends)  # warm-up (compilation, weights to device)
            t0 = time.perf_counter()
            maps = latent_maps(ctx.run_udf(ds, udf, backends=backends))
            rates[key] = n / (time.perf_counter() - t0)
        diffs[key] = {k: (_angle_diff(maps[k], v) if k == "angle"
                          else float(np.abs(maps[k] - v).max())) for k, v in ref.items()}
    out.update(patterns_per_s=rates, max_diff_vs_encode_maps=diffs,
               torch_threads=torch.get_num_threads())
    return out


STEPS = {"tests": step_tests, "same_weights": step_same_weights, "chapter2": step_chapter2,
         "synthetic": step_synthetic, "scan": step_scan}


# ------------------------------------------------------------------------------ report
def _f(v, fmt=".3g") -> str:
    return "—" if v is None else format(v, fmt)


def markdown(raw: dict) -> str:
    meta = raw["meta"]
    dry = meta["dry_run"]
    lines = ["# GPU benchmark (`python -m bench.gpu" + (" --dry-run" if dry else "") + "`)", ""]
    if dry:
        lines += ["**DRY RUN: no GPU. Every 'GPU' figure below was measured on the CPU at tiny "
                  "sizes; this file only shows that the script works.**", ""]
    m = meta["machine"]
    lines += [f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs; GPU: {meta['gpu']}; "
              f"torch {m['torch']}; {m['date_utc']}; wall {meta.get('wall_s', 0) / 60:.1f} min.",
              ""]
    s = raw.get("steps", {})

    def failed(name):
        r = s.get(name)
        if r is None:
            return "not run"
        if "failed" in r:
            return "FAILED: " + r["failed"].strip().splitlines()[-1]
        return None

    lines += ["## Unit tests marked gpu", ""]
    r = s.get("tests")
    lines += [failed("tests") or f"`{r['command']}`: exit status {r['returncode']}, "
              f"`{r['summary']}`", ""]
    lines += ["## Same weights on CPU and GPU", ""]
    if failed("same_weights"):
        lines += [failed("same_weights"), ""]
    else:
        r = s["same_weights"]
        lines += ["| model | angle (rad) | z | z std | decoded pattern |",
                  "| --- | --- | --- | --- | --- |"]
        for name in MODELS:
            d = r[name]
            lines.append(f"| {name} | {d['angle']:.1e} | {d['z']:.1e} | {d['z_std']:.1e} | "
                         f"{d['decode']:.1e} |")
        lines += ["", f"Largest differences over {r[MODELS[0]]['n']} patterns.", ""]
    lines += ["## Training on chapter 2's graphene: CPU vs GPU, same seeds", ""]
    if failed("chapter2"):
        lines += [failed("chapter2"), ""]
    else:
        r = s["chapter2"]
        lines += [f"{r['n_patterns']} patterns of {r['pattern_shape'][0]} x "
                  f"{r['pattern_shape'][1]}, batch 128, seed 0.", "",
                  "| model | epochs | s / epoch CPU | s / epoch GPU | final val loss CPU | "
                  "final val loss GPU | angle corr. CPU-GPU model | latent abs corr. |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name in MODELS:
            d = r[name]
            c, g = d["cpu"], d["device"]
            lines.append(
                f"| {name} | {d['epochs']} | {np.median(c['seconds_per_epoch']):.3g} | "
                f"{np.median(g['seconds_per_epoch']):.3g} | {_f(c['val_loss'][-1], '.4g')} | "
                f"{_f(g['val_loss'][-1], '.4g')} | {d['angle_circular_correlation']:.3f} | "
                + ", ".join(f"{v:.3f}" for v in d["latent_abs_correlation"]) + " |")
        diffs = ", ".join(f"{n} {r[n]['max_weight_diff']:.2g}" for n in MODELS)
        lines += ["", (f"Dry run: both runs on the CPU, largest weight difference {diffs} "
                       "(the same seeds must give the same weights)." if dry else
                       "Training draws its random numbers (minibatch order is seeded alike, "
                       "ELBO samples are not) on the training device; CUDA's generator differs "
                       "from the CPU's, so the weights differ (largest weight difference: "
                       f"{diffs}). Equal quality, not equal numbers, is the expectation."), ""]
    lines += ["## `make bench` rows on the GPU: the synthetic rotated patterns", ""]
    if failed("synthetic"):
        lines += [failed("synthetic"), ""]
    else:
        r = s["synthetic"]
        lines += [f"{r['n_patterns']} patterns of {r['size']} x {r['size']}, batch 128; a good "
                  "model: angle recovery >= 0.95 and error below the noise variance "
                  f"({r['noise_variance']:.3g}).", "",
                  "| model | s / epoch (GPU) | time to a good model | epochs | final angle "
                  "recovery | encode patterns/s CPU | encode patterns/s GPU |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name in MODELS:
            d = r[name]
            last = d["epochs"][-1] if d["epochs"] else {}
            ttg = (f"{d['time_to_good_s']:.3g} s" if d["time_to_good_s"] is not None
                   else f"not reached in {d['budget_s']:.0f} s")
            lines.append(f"| {name} | {d['s_per_epoch']:.3g} | {ttg} | {len(d['epochs'])} | "
                         f"{_f(last.get('angle_r'))} | "
                         f"{d['encode_patterns_per_s']['cpu']:.0f} | "
                         f"{d['encode_patterns_per_s']['device']:.0f} |")
        lines.append("")
    lines += ["## A generated scan: encoding and the LiberTEM UDF", ""]
    if failed("scan"):
        lines += [failed("scan"), ""]
    else:
        r = s["scan"]
        lines += [f"Scan {r['shape']} uint16, {r['bytes'] / 1e9:.2f} GB, prepared to "
                  f"{r['pattern_shape'][0]} x {r['pattern_shape'][1]}; default model.", "",
                  "| route | patterns/s | largest difference from encode_maps |",
                  "| --- | --- | --- |"]
        for key, rate in r["patterns_per_s"].items():
            d = r["max_diff_vs_encode_maps"].get(key)
            lines.append(f"| {key} | {rate:.0f} | "
                         + ("" if d is None else f"{max(d.values()):.1e}") + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _write(out: Path, raw: dict) -> None:
    from bench.scale import _atomic_write

    _atomic_write(out / "gpu.json", json.dumps(raw, indent=1, default=float) + "\n")
    _atomic_write(out / "gpu.md", markdown(raw))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: every step on the CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default bench/results, dry run bench/results/dry)")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated steps to run (default: {','.join(STEPS)})")
    args = parser.parse_args(argv)
    import torch

    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"unknown steps {unknown}; choose from {list(STEPS)}", file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print(REFUSAL, file=sys.stderr)
        return 2
    from bench.report import machine
    from rrvae_nb.train import UnusedLatentWarning

    device = "cpu" if args.dry_run else "cuda"
    st = SETTINGS["dry" if args.dry_run else "full"]
    out = args.out or (RESULTS / "dry" if args.dry_run else RESULTS)
    raw = {"meta": {"dry_run": args.dry_run, "machine": machine(), "settings": st,
                    "gpu": (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                            else "none (dry run)")},
           "steps": {}}
    t_start = time.perf_counter()
    failed = False
    with tempfile.TemporaryDirectory(prefix="rrvae-bench-gpu-") as tmp:
        for name in steps:
            print(f"[bench.gpu] {name}", flush=True)
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():  # short trainings leave latents unused
                    warnings.simplefilter("ignore", UnusedLatentWarning)
                    raw["steps"][name] = STEPS[name](st, device, Path(tmp))
            except Exception:  # noqa: BLE001 - record it and go on with the next step
                failed = True
                raw["steps"][name] = {"failed": traceback.format_exc()}
                print(raw["steps"][name]["failed"], file=sys.stderr, flush=True)
            raw["steps"][name]["step_wall_s"] = time.perf_counter() - t0
            raw["meta"]["wall_s"] = time.perf_counter() - t_start
            _write(out, raw)
    text = markdown(raw)
    print(text)
    print(f"[bench.gpu] wrote {out / 'gpu.md'} and {out / 'gpu.json'}")
    tests = raw["steps"].get("tests")
    if tests and "returncode" in tests and tests["returncode"] not in (0, 5):
        failed = True  # 5: no test selected
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    raise SystemExit(main())
