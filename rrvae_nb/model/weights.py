"""Cached model weights, so a reader can skip training.

Trained models that the chapters can load instead of training live in ``data/weights/``, listed
in ``data/weights/manifest.json`` with their size, SHA-256, the package version that wrote them
and how they were trained::

    {"version": 1, "weights": {NAME: {"file": "NAME.pt", "size": <bytes>, "sha256": "<hex>",
     "package_version": "0.1.0", "provenance": {...}}}}

The books' full build always trains live; the cached files are written from such a run with
:func:`save_weights` (the chapters do it when ``RRVAE_NB_SAVE_WEIGHTS=1``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .._version import __version__
from ..stem._atomic import replace_atomically
from ..stem.datasets import _sha256, default_data_dir
from .rrvae import RrVAE

__all__ = ["save_weights", "load_weights", "list_weights"]


def _folder(data_dir) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()) / "weights"


def _read(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.is_file():
        return {"version": 1, "weights": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): restore it from git.") from err
    if not isinstance(manifest.get("weights"), dict):
        raise ValueError(f"{path} has no 'weights' table: restore it from git.")
    return manifest


def list_weights(data_dir=None) -> dict[str, dict]:
    """Cached models: ``{name: provenance}``."""
    return {k: v.get("provenance", {}) for k, v in _read(_folder(data_dir))["weights"].items()}


def save_weights(model: RrVAE, name: str, *, data_dir=None, **provenance) -> Path:
    """Save ``model`` as cached weights ``name`` and record it in the weights manifest.

    Parameters
    ----------
    model : RrVAE
        A trained model.
    name : str
        Lower-case name, e.g. ``"ch2_graphene"``.
    data_dir : path, optional
        The data folder (default: the repository's ``data/``).
    **provenance
        How the model was trained (data set, epochs, seed, ...), stored in the manifest.
    """
    if not name or not name.replace("_", "").isalnum() or name.lower() != name:
        raise ValueError(f"weights name must be lower_snake_case letters and digits; got {name!r}")
    folder = _folder(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = model.save(folder / f"{name}.pt")
    manifest = _read(folder)
    manifest["weights"][name] = {
        "file": path.name,
        "size": path.stat().st_size,
        "sha256": _sha256(path),
        "package_version": __version__,
        "provenance": provenance,
    }
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    replace_atomically(folder / "manifest.json", lambda tmp: tmp.write_text(text))
    return path


def load_weights(name: str, *, data_dir=None, device=None) -> RrVAE:
    """Load cached weights ``name`` after checking their size and SHA-256.

    Raises
    ------
    KeyError
        If no cached weights of that name exist (the message lists those that do).
    ValueError
        If the file is missing, has the wrong size or checksum, or cannot be read.
    """
    folder = _folder(data_dir)
    entries = _read(folder)["weights"]
    if name not in entries:
        raise KeyError(
            f"No cached weights named {name!r}; available: {sorted(entries) or 'none'}. Train "
            "the model instead (set USE_CACHED_WEIGHTS = False)."
        )
    entry = entries[name]
    path = folder / entry["file"]
    if not path.is_file():
        raise ValueError(f"Cached weights {name!r} are listed but {path} is missing.")
    if path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
        raise ValueError(
            f"Cached weights {path} do not match their checksum (changed or truncated): restore "
            "the file from git or retrain."
        )
    return RrVAE.load(path, device=device)
