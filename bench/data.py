"""The benchmark's data sets, written once to files that every row's subprocess reads.

- Synthetic: :func:`rrvae_nb.synthetic.rotated_shapes` (rotated copies of a few asymmetric
  templates, known angles), saved as ``.npy`` with its ground truth beside it.
- Graphene: :func:`rrvae_nb.simulate.graphene` (abTEM), a scan of graphene with a Si dopant,
  patterns resampled on the camera to the model's size, then :func:`rrvae_nb.preprocess.prepare`
  (centred on the bright-field disk, mean pattern subtracted, normalised to [0, 1]); saved as
  ``.npy`` (N, ky, kx) float32. Used for timing only: its angles are not known.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["make_synthetic", "make_graphene", "load_synthetic", "split"]

#: Fraction of the patterns held out for the quality measures (the authors' 15 %).
VAL_FRACTION = 0.15


def _save_atomically(path: Path, writer) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            writer(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_synthetic(folder, n: int, size: int, n_templates: int = 3, seed: int = 0) -> dict:
    """Draw the synthetic set and save it in ``folder``: ``patterns.npy`` (N, H, W) float32 and
    ``truth.npz`` (``angle`` in rad, ``label``, ``templates``).

    The patterns get a plain ``.npy`` file so that a subprocess reads them straight into one
    array (an ``.npz`` member passes through an extra in-memory copy, which would count in the
    row's peak memory).

    Returns
    -------
    dict
        The parameters used: ``n``, ``size``, ``n_templates``, ``seed``.
    """
    from rrvae_nb.synthetic import rotated_shapes

    folder = Path(folder)
    data = rotated_shapes(n, size, n_templates=n_templates, seed=seed)
    _save_atomically(folder / "truth.npz", lambda fh: np.savez(
        fh, angle=data.angle, label=data.label, templates=data.templates))
    _save_atomically(folder / "patterns.npy", lambda fh: np.save(fh, data.patterns))
    return {"n": n, "size": size, "n_templates": n_templates, "seed": seed}


def load_synthetic(folder) -> dict[str, np.ndarray]:
    """Arrays written by :func:`make_synthetic`: ``patterns``, ``angle``, ``label``,
    ``templates``."""
    folder = Path(folder)
    with np.load(folder / "truth.npz") as f:
        out = {k: f[k] for k in ("angle", "label", "templates")}
    out["patterns"] = np.load(folder / "patterns.npy")
    return out


def split(n: int, seed: int = 0, val_fraction: float = VAL_FRACTION):
    """Sorted (train, validation) indices, drawn exactly as :func:`rrvae_nb.fit` draws them."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def make_graphene(path, scan: int, size: int, progress: bool = True) -> dict:
    """Simulate graphene with a Si dopant on a ``scan`` x ``scan`` grid and save the prepared
    (N, size, size) patterns to ``path`` (.npy).

    The 1 nm scan window and 60 keV / 30 mrad optics are :func:`rrvae_nb.simulate.graphene`'s
    defaults; the camera spans +/- 45 mrad on ``size`` pixels so the whole bright-field disk is
    recorded.

    Returns
    -------
    dict
        Shape, angular pixel size (mrad) and the parameters used.
    """
    from rrvae_nb.preprocess import prepare
    from rrvae_nb.simulate import graphene

    params = dict(defects=("si",), scan_gpts=scan, detector_px=size, max_angle_mrad=45.0)
    sim = graphene(**params, progress=progress)
    prep = prepare(sim.signal, progress=progress)
    x = np.ascontiguousarray(prep.patterns, dtype=np.float32)
    _save_atomically(path, lambda fh: np.save(fh, x))
    return {
        "shape": list(x.shape),
        "k_step_mrad": float(prep.calibration.k_step_mrad) if prep.calibration else None,
        "recipe": "rrvae_nb.simulate.graphene",
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
        "preprocess": "rrvae_nb.preprocess.prepare (defaults: centre, subtract mean, [0, 1])",
    }
