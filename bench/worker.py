"""What runs inside one benchmark subprocess: ``python -m bench.worker TASK SPEC.json OUT.json``.

Each task reads its parameters from a JSON file and writes its result to another (atomically),
so that the parent process only orchestrates and every row's peak resident memory
(``VmHWM``) is its own.

Tasks
-----
``train``
    Train one row on the synthetic set for a fixed CPU budget with a hand-written SVI loop
    (the package's step, :class:`_PackageStep`: one Adam state for the whole run, which
    repeated ``fit(..., epochs=1)`` calls would not give), evaluating angle recovery and
    held-out errors at checkpoints whose CPU time is excluded from the count.
``graphene``
    Time training steps of one row on the simulated graphene patterns.
``simulate``
    Simulate and prepare the graphene patterns (abTEM: its memory stays in this subprocess).
``peak``
    Measure the fp32 matrix-product peak with the benchmark's thread count.
``import-pyroved``
    Try ``import pyroved`` and report the version or the error.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench import data as bdata
from bench import quality
from bench.flops import measure_matmul_peak
from bench.rows import PAPER_DECODER_HIDDEN, PAPER_ENCODER_HIDDEN, ROWS, Row

__all__ = ["main", "write_json"]


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1, default=_jsonable)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this program's own memory.
    Not ``ru_maxrss``: Linux carries that over ``fork`` + ``exec``, so a subprocess would report
    its parent's resident memory when that is larger (measured: 789 MB for a fresh interpreter
    whose parent held 800 MB). Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


# ------------------------------------------------------------------------------------------
# Models behind one interface



class _PackageStep:
    """One training step of :func:`rrvae_nb.fit`'s loop (the ELBO module of
    :func:`rrvae_nb.train._elbo`, ``torch.optim.Adam``), with ``svi.step``'s signature so that
    the rrVAE and pyroVED rows share the timing loop."""

    def __init__(self, model, lr: float):
        import torch

        from rrvae_nb.train import _elbo

        self.elbo = _elbo(model)
        self.optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    def step(self, batch) -> float:
        loss = self.elbo(batch, kl_weight=1.0)
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        return float(loss.detach())

class _RrVAEAdapter:
    def __init__(self, row: Row, size: int, seed: int):
        from rrvae_nb import RrVAE

        self.model = RrVAE((size, size), seed=seed, **row.kwargs)
        self.config = asdict(self.model.config)

    def svi(self, lr: float, patterns=None):
        if patterns is not None:  # as rrvae_nb.fit does before the first epoch
            self.model.calibrate_inputs(patterns)
        return _PackageStep(self.model, lr)

    def train_mode(self):
        self.model.train()

    def encode_angle(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return self.model.encode(x, batch_size=batch_size, progress=False).angle

    def reconstruct(self, x: np.ndarray, batch_size: int) -> np.ndarray | None:
        return self.model.reconstruct(x, batch_size=batch_size)


class _PyroVEDAdapter:
    """pyroVED's iVAE. Not importable on this project's machines (see the table's note); written
    against pyroVED's documented API (``iVAE``, ``model``/``guide``, ``encode``)."""

    def __init__(self, row: Row, size: int, seed: int):
        from pyroved.models import iVAE

        kwargs = dict(row.kwargs)
        kwargs["seed"] = seed
        self.model = iVAE((size, size), device="cpu", **kwargs)
        # The same accounting as rrVAE's "paper" row: 2 x 128 MLP encoder with (1 + latent) x 2
        # outputs, per-pixel decoder with two 128 -> 128 layers.
        latent = int(kwargs.get("latent_dim", 2))
        self.config = dict(
            encoder="mlp", decoder="spatial", latent_dim=latent, angle_prior="gaussian",
            translation=False, encoder_hidden=PAPER_ENCODER_HIDDEN,
            decoder_hidden=PAPER_DECODER_HIDDEN,
        )

    def svi(self, lr: float):
        import pyro
        from pyro.infer import SVI, Trace_ELBO

        pyro.clear_param_store()
        return SVI(self.model.model, self.model.guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())

    def train_mode(self):
        self.model.train()

    def encode_angle(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        import torch

        z_loc, _ = self.model.encode(torch.as_tensor(x), batch_size=batch_size)
        # pyroVED's coordinate grid is mirrored (rows linspace(-1, 1), columns (1, -1)): its
        # angle turns the other way, which the table's note accounts for (|r| is reported).
        return z_loc[:, 0].detach().cpu().numpy()

    def reconstruct(self, x: np.ndarray, batch_size: int) -> np.ndarray | None:
        return None  # pyroVED's decode() renders at pose 0 only: no reconstruction at the pose


def _adapter(row: Row, size: int, seed: int):
    return _RrVAEAdapter(row, size, seed) if row.kind == "rrvae" else _PyroVEDAdapter(
        row, size, seed)


def _row(spec: dict) -> Row:
    for r in ROWS:
        if r.name == spec["row"]:
            return r
    raise ValueError(f"unknown row {spec['row']!r}")


def _setup_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))


# ------------------------------------------------------------------------------------------
# Tasks


def task_train(spec: dict) -> dict:
    """Train one row for ``budget_cpu_s`` CPU-seconds; see the module docstring."""
    import pyro
    import torch
    from tqdm.auto import tqdm

    _setup_threads(spec["threads"])
    row = _row(spec)
    rss = {"imports": _peak_rss_mb()}
    arrays = bdata.load_synthetic(spec["data"])
    x_all = arrays["patterns"]
    n, size = x_all.shape[0], x_all.shape[-1]
    train_idx, val_idx = bdata.split(n, spec["seed"])
    # Training batches are gathered from the whole set through the index, as rrvae_nb.fit does
    # (no copy of the training split).
    x_src, train_pos = torch.from_numpy(x_all), torch.from_numpy(train_idx)
    n_train = len(train_idx)
    val_angle, val_label = arrays["angle"][val_idx], arrays["label"][val_idx]
    templates = arrays["templates"]
    eval_bs = spec["batch_size"]

    def held_out_chunks(m: int):
        """(noisy patterns, noise-free patterns, slice) of the first ``m`` held-out patterns,
        chunk by chunk: copies of the held-out set and its noise-free references would count
        in the row's peak memory."""
        for s in range(0, m, eval_bs):
            sl = slice(s, min(s + eval_bs, m))
            yield (x_all[val_idx[sl]],
                   quality.noise_free(templates, val_label[sl], val_angle[sl]), sl)

    def noise_variance(m: int) -> float:
        return sum(quality.sse(x, c) for x, c, _ in held_out_chunks(m)) / (m * size * size)

    noise_var = noise_variance(len(val_idx))
    # Intermediate checkpoints look at the first n_cp held-out patterns (the spatial decoder's
    # reconstructions are expensive); the final one at all of them.
    n_cp = min(int(spec.get("checkpoint_patterns") or len(val_idx)), len(val_idx))
    noise_var_cp = noise_variance(n_cp)
    rss["data"] = _peak_rss_mb()

    adapter = _adapter(row, size, spec["seed"])
    pyro.set_rng_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    svi = adapter.svi(spec["lr"], x_all) if row.kind == "rrvae" else \
        adapter.svi(spec["lr"])
    rss["model"] = _peak_rss_mb()

    checkpoints: list[dict] = []

    def checkpoint(cpu: float, wall: float, steps: int, seen: int, loss: float | None,
                   final: bool = False):
        c0, w0 = time.process_time(), time.perf_counter()
        m = len(val_idx) if final else n_cp
        angle = np.empty(m)
        se_noisy = se_clean = 0.0
        for x, clean, sl in held_out_chunks(m):
            angle[sl] = adapter.encode_angle(x, eval_bs)
            rec = adapter.reconstruct(x, eval_bs)
            if rec is not None:
                se_noisy += quality.sse(rec, x)
                se_clean += quality.sse(rec, clean)
        r = quality.angle_recovery(angle, val_angle[:m], val_label[:m])
        if row.kind == "pyroved":
            r = abs(r)
        mse_noisy = None if rec is None else se_noisy / (m * size * size)
        mse_clean = None if rec is None else se_clean / (m * size * size)
        nv = noise_var if final else noise_var_cp
        adapter.train_mode()
        checkpoints.append({
            "cpu_s": cpu, "wall_s": wall, "steps": steps, "patterns": seen,
            "epochs": seen / len(train_idx), "train_loss": loss, "angle_r": r,
            "mse": mse_noisy, "mse_noise_free": mse_clean, "n_eval": m, "noise_variance": nv,
            "good": mse_clean is not None and quality.is_good(r, mse_clean, nv),
            "eval_cpu_s": time.process_time() - c0, "eval_wall_s": time.perf_counter() - w0,
        })

    budget = float(spec["budget_cpu_s"])
    growth = float(spec["checkpoint_growth"])
    next_cp = float(spec["first_checkpoint_cpu_s"])
    cpu = wall = 0.0
    steps = seen = 0
    loss_sum, loss_n = 0.0, 0
    diverged = None
    checkpoint(0.0, 0.0, 0, 0, None)
    bar = tqdm(total=round(budget), desc=f"{row.name:>14s}", unit="CPU-s", mininterval=2.0,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} CPU-s "
                          "[{elapsed}<{remaining}]{postfix}")
    while cpu < budget and diverged is None:
        perm = train_pos[torch.randperm(n_train, generator=gen)]
        for s in range(0, n_train, spec["batch_size"]):
            batch = x_src[perm[s : s + spec["batch_size"]]]
            c0, w0 = time.process_time(), time.perf_counter()
            loss = svi.step(batch)
            dc, dw = time.process_time() - c0, time.perf_counter() - w0
            cpu, wall = cpu + dc, wall + dw
            steps, seen = steps + 1, seen + batch.shape[0]
            if steps == 1:
                rss["first_step"] = _peak_rss_mb()
            bar.update(min(dc, max(0.0, budget - bar.n)))
            if not math.isfinite(loss):
                diverged = f"loss {loss} at step {steps}"
                break
            loss_sum, loss_n = loss_sum + loss / batch.shape[0], loss_n + 1
            if cpu >= next_cp or cpu >= budget:
                checkpoint(cpu, wall, steps, seen, loss_sum / loss_n, final=cpu >= budget)
                loss_sum, loss_n = 0.0, 0
                last = checkpoints[-1]
                bar.set_postfix_str(f"r={last['angle_r']:.3f}"
                                    + ("" if last["mse"] is None else f" mse={last['mse']:.2e}"))
                while next_cp <= cpu:
                    next_cp *= growth
            if cpu >= budget:
                break
    bar.close()
    if diverged is not None and checkpoints[-1]["steps"] != steps:
        checkpoint(cpu, wall, steps, seen, None, final=True)
    rss["training"] = _peak_rss_mb()

    # Encode throughput over the whole set, at the package's default encode batch size.
    c0, w0 = time.process_time(), time.perf_counter()
    adapter.encode_angle(x_all, 1024)
    enc_cpu, enc_wall = time.process_time() - c0, time.perf_counter() - w0

    return {
        "row": row.name,
        "torch_threads": torch.get_num_threads(),
        "config": adapter.config,
        "size": size,
        "n_patterns": n,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "noise_variance": noise_var,
        "budget_cpu_s": budget,
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "steps": steps,
        "patterns_seen": seen,
        "epochs": seen / len(train_idx),
        "diverged": diverged,
        "cpu_s_per_epoch": cpu / seen * len(train_idx) if seen else None,
        "wall_s_per_epoch": wall / seen * len(train_idx) if seen else None,
        "patterns_per_cpu_s": seen / cpu if cpu else None,
        "patterns_per_wall_s": seen / wall if wall else None,
        "checkpoints": checkpoints,
        "encode": {"patterns": n, "batch_size": 1024, "cpu_s": enc_cpu, "wall_s": enc_wall,
                   "patterns_per_wall_s": n / enc_wall, "patterns_per_cpu_s": n / enc_cpu},
        "peak_rss_mb": rss["training"],
        "peak_rss_mb_stages": dict(rss, encode=_peak_rss_mb()),
    }


def task_graphene(spec: dict) -> dict:
    """Time training steps of one row on the graphene patterns (one warm-up step excluded).

    Runs batches until a whole epoch (the 85 % training split) is done or ``cpu_limit_s`` is
    used; the per-epoch cost is the measured cost per pattern times the epoch's patterns
    (``extrapolated`` says whether a whole epoch was run).
    """
    import pyro
    import torch
    from tqdm.auto import tqdm

    _setup_threads(spec["threads"])
    row = _row(spec)
    x_all = np.load(spec["data"])
    n, size = x_all.shape[0], x_all.shape[-1]
    train_idx, _ = bdata.split(n, spec["seed"])
    x_src, train_pos = torch.from_numpy(np.ascontiguousarray(x_all)), torch.from_numpy(train_idx)
    adapter = _adapter(row, size, spec["seed"])
    pyro.set_rng_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    svi = adapter.svi(spec["lr"])
    bs = spec["batch_size"]
    perm = train_pos[torch.randperm(len(train_idx), generator=gen)]
    batches = [perm[s : s + bs] for s in range(0, len(train_idx), bs)]
    svi.step(x_src[batches[0]])  # warm-up: one-off Pyro set-up, not timed
    cpu = wall = 0.0
    seen = steps = 0
    losses = []
    limit = float(spec["cpu_limit_s"])
    for idx in tqdm(batches, desc=f"{row.name:>14s} graphene", unit="step", mininterval=2.0):
        c0, w0 = time.process_time(), time.perf_counter()
        losses.append(svi.step(x_src[idx]))
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        seen += len(idx)
        steps += 1
        if cpu >= limit:
            break
    return {
        "row": row.name,
        "shape": list(x_all.shape),
        "n_train": len(train_idx),
        "steps": steps,
        "patterns_seen": seen,
        "extrapolated": seen < len(train_idx),
        "cpu_s_per_epoch": cpu / seen * len(train_idx),
        "wall_s_per_epoch": wall / seen * len(train_idx),
        "patterns_per_cpu_s": seen / cpu,
        "all_losses_finite": bool(np.all(np.isfinite(losses))),
        "peak_rss_mb": _peak_rss_mb(),
    }


def task_simulate(spec: dict) -> dict:
    """Simulate and prepare the graphene patterns; see :func:`bench.data.make_graphene`."""
    c0, w0 = time.process_time(), time.perf_counter()
    info = bdata.make_graphene(spec["path"], spec["scan"], spec["size"])
    info.update(cpu_s=time.process_time() - c0, wall_s=time.perf_counter() - w0,
                peak_rss_mb=_peak_rss_mb())
    return info


def task_peak(spec: dict) -> dict:
    """fp32 matrix-product peak with ``threads`` threads."""
    _setup_threads(spec["threads"])
    out = measure_matmul_peak(spec.get("n", 2048), spec.get("repeats", 8))
    out["threads"] = spec["threads"]
    return out


def task_import_pyroved(spec: dict) -> dict:
    """Whether ``import pyroved`` works here, and if not why (the error's last line)."""
    try:
        import pyroved
    except Exception as err:  # noqa: BLE001 - any failure means the row is skipped
        return {"importable": False, "error": f"{type(err).__name__}: {err}".splitlines()[-1]}
    return {"importable": True, "version": getattr(pyroved, "__version__", "unknown")}


TASKS = {
    "train": task_train,
    "graphene": task_graphene,
    "simulate": task_simulate,
    "peak": task_peak,
    "import-pyroved": task_import_pyroved,
}


def main(argv=None) -> int:
    """Entry point of the subprocess: ``TASK SPEC.json OUT.json``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in TASKS:
        print(f"usage: python -m bench.worker {{{','.join(TASKS)}}} SPEC.json OUT.json",
              file=sys.stderr)
        return 2
    task, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    result = TASKS[task](spec)
    write_json(out_path, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
