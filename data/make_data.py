"""Regenerate the small datasets shipped in ``data/`` and their ``manifest.json``.

Usage::

    .venv/bin/python data/make_data.py                      # all datasets, into data/
    .venv/bin/python data/make_data.py --only graphene_si_sim --only zns_thin_sim
    .venv/bin/python data/make_data.py --out /tmp/regen     # somewhere else

Every dataset is made by a recipe of :mod:`rrvae_nb.simulate` with the exact keyword arguments
recorded in the manifest, so the data can be regenerated and checked. Runs are seeded and the
files are written reproducibly (``.hspy`` without hyperspy's save timestamp, ``.ndata1`` with a
fixed timestamp), so on the same library versions a rerun gives byte-identical files and the
same SHA-256; other machines may differ in the last float bits (compare arrays, not checksums).

Nothing half-written is left behind: each file, and the manifest, is written to a temporary
name in the destination folder and then renamed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
#: Written into .ndata1 files instead of "now", so that reruns are byte-identical.
FIXED_TIMESTAMP = datetime(2000, 1, 1, tzinfo=timezone.utc)

_EXPERIMENT_NOTE = (
    "Emulates a Nion UltraSTEM graphene scan like the paper's (60 keV, 30 mrad, 64 x 64 scan "
    "over 1 nm, 256 x 256 camera spanning +/- 36 mrad so the bright-field disk fills most of it) "
    "at a dose of our choosing, 5e4 electrons per probe position (the authors' files are in "
    "detector units: their dose is unknown). What a measurement adds is modelled: a Gaussian "
    "source (sigma 0.02 nm), probe-position jitter (0.005 nm rms), slow drift (linear plus "
    "quadratic over the frame), residual aberrations (2 nm defocus, 1 nm 2-fold astigmatism, "
    "30 nm coma), a camera turned 37 degrees against the scan, and a camera model: Poisson "
    "electrons, a point-spread function (Gaussian core of 1 pixel, 10 % in an exponential tail of "
    "4 pixels), a gain of 0.8 detector units per electron and Gaussian read-out noise of 0.1 "
    "units per camera pixel. Stored binned 8 x 8 on the camera to fit (32 x 32 pixels of 2.25 "
    "mrad), digitised to whole dark-subtracted detector units ({dtype}, so small negative values "
    "occur): not electron counts. The HAADF image of the same scan is the dataset named as this "
    "one plus _haadf. "
    "All settings are in params. Nion .ndata1 cannot hold the "
    "ground truth: rrvae_nb.simulate.ground_truth_of(signal) rebuilds it from the recipe."
)

#: What a measurement adds to the multislice (rrvae_nb.simulate.emulate_graphene_experiment's
#: knobs): probe aberrations, scan rotation and drift, the camera's PSF, gain and read-out noise.
_MEASUREMENT = dict(
    scan_rotation_deg=37.0, defocus_nm=2.0, astigmatism_nm=1.0, astigmatism_angle_deg=30.0,
    coma_nm=30.0, coma_angle_deg=60.0, drift_nm=[0.02, -0.03], drift_quadratic_nm=[0.01, 0.01],
    camera_gain=0.8, camera_psf_px=1.0, camera_psf_tail=0.1, camera_psf_tail_px=4.0,
    read_noise=0.1, haadf_inner_mrad=80.0, haadf_outer_mrad=160.0,
)

#: The HAADF image that each emulated scan records beside its patterns (a separate Nion data
#: item, as on the microscope).
_HAADF_NOTE = (
    "HAADF image recorded with the same emulated scan as {name} (same probe positions, jitter, "
    "drift and source size): the electrons scattered between 80 and 160 mrad (the outer limit "
    "is what the simulation's 0.01 nm sampling carries at 60 keV), counted by an ideal detector "
    "(Poisson, {dtype}; a real HAADF detector reports amplified units with their own offset). "
    "The atoms are static (no thermal diffuse scattering: for a monolayer the high-angle signal "
    "is mostly single elastic scattering by each atom). 2-D Nion .ndata1, (scan y, scan x) in nm."
)

#: name -> recipe (function of rrvae_nb.simulate), file format, keyword arguments, description.
DATASETS: dict[str, dict] = {
    "graphene_pristine_sim": dict(
        recipe="graphene", format="hspy",
        params=dict(defects=[], scan_gpts=40, scan_extent_nm=1.0, max_angle_mrad=45.0),
        description=(
            "Simulated pristine graphene (abTEM multislice, 60 keV, 30 mrad, noise-free): "
            "40 x 40 scan over 1 nm centred on an atom, 31 x 31 patterns of 2.86 mrad "
            "(+/- 43 mrad). float32 fraction of the incident beam per pixel; ground truth in "
            "metadata.Sample.ground_truth."
        ),
    ),
    "graphene_vacancy_sim": dict(
        recipe="graphene", format="hspy",
        params=dict(defects=["vacancy"], scan_gpts=40, scan_extent_nm=1.0, max_angle_mrad=45.0),
        description=(
            "Simulated graphene with a single vacancy at the scan centre (abTEM, 60 keV, 30 mrad, "
            "noise-free): 40 x 40 scan over 1 nm, 31 x 31 patterns of 2.86 mrad. float32; "
            "ground truth in metadata.Sample.ground_truth."
        ),
    ),
    "graphene_si_sim": dict(
        recipe="graphene", format="hspy",
        params=dict(defects=["si"], scan_gpts=40, scan_extent_nm=1.0, max_angle_mrad=45.0),
        description=(
            "Simulated graphene with a substitutional (3-fold coordinated) Si at the scan "
            "centre (abTEM, 60 keV, 30 mrad, noise-free): 40 x 40 scan over 1 nm, 31 x 31 "
            "patterns of 2.86 mrad. float32; ground truth in metadata.Sample.ground_truth."
        ),
    ),
    "zns_thin_sim": dict(
        recipe="zincblende_110", format="hspy",
        params=dict(material="ZnS", thickness_nm=2.0, scan_gpts=28, scan_extent_nm=0.8,
                    max_angle_mrad=100.8, detector_px=123, detector_binning=3,
                    frozen_phonons=8, phonon_sigma_nm=0.0087),
        description=(
            "Simulated ZnS [110], 1.91 nm thick (thin: COM follows the projected field), abTEM "
            "multislice, 200 keV, 25 mrad, noise-free, averaged over 8 frozen-phonon "
            "configurations (sigma 0.0087 nm: thermal diffuse scattering included): 28 x 28 "
            "scan over 0.8 nm centred on a Zn-S dumbbell, 41 x 41 patterns of 4.92 mrad "
            "(+/- 101 mrad, 4 x the convergence semi-angle; the simulation's 1.64 mrad pixels "
            "binned 3 x 3). float32; ground truth (atomic columns) in "
            "metadata.Sample.ground_truth."
        ),
    ),
    "zns_thick_sim": dict(
        recipe="zincblende_110", format="hspy",
        params=dict(material="ZnS", thickness_nm=5.0, scan_gpts=28, scan_extent_nm=0.8,
                    max_angle_mrad=100.8, detector_px=123, detector_binning=3,
                    frozen_phonons=8, phonon_sigma_nm=0.0087),
        description=(
            "Simulated ZnS [110], 4.97 nm thick (thick: channelling, COM no longer follows the "
            "projected field), otherwise as zns_thin_sim."
        ),
    ),
    "zns_thick_static_sim": dict(
        recipe="zincblende_110", format="hspy",
        params=dict(material="ZnS", thickness_nm=5.0, scan_gpts=28, scan_extent_nm=0.8,
                    max_angle_mrad=100.8, detector_px=123, detector_binning=3,
                    frozen_phonons=0),
        description=(
            "Control for zns_thick_sim: the same 4.97 nm ZnS [110] scan and camera, but one "
            "static crystal (no frozen phonons, no thermal diffuse scattering, no Debye-Waller "
            "damping): purely coherent multislice."
        ),
    ),
    "graphene_pristine_experiment": dict(
        recipe="emulate_graphene_experiment", format="ndata1",
        params=dict(defects=[], camera_binning=8, **_MEASUREMENT),
        description="Emulated experiment, pristine graphene (the control scan beside the vacancy "
        "and the Si). " + _EXPERIMENT_NOTE,
    ),
    "graphene_vacancy_experiment": dict(
        recipe="emulate_graphene_experiment", format="ndata1",
        params=dict(defects=["vacancy"], camera_binning=8, **_MEASUREMENT),
        description="Emulated experiment, graphene with a single vacancy. " + _EXPERIMENT_NOTE,
    ),
    "graphene_si_experiment": dict(
        recipe="emulate_graphene_experiment", format="ndata1",
        params=dict(defects=["si"], camera_binning=8, si_height_nm=0.1, **_MEASUREMENT),
        description="Emulated experiment, graphene with a 3-fold coordinated Si dopant, 0.1 nm "
        "above the carbon plane (two slices: the wave travels 0.1 nm between the carbon and the "
        "Si). " + _EXPERIMENT_NOTE,
    ),
    "graphene_tiny_reference": dict(
        recipe="graphene", format="hspy",
        params=dict(defects=["si"], supercell=[3, 5], scan_gpts=4, scan_extent_nm=0.3,
                    max_angle_mrad=40.0, source_size_nm=0.01, jitter_nm=0.005, seed=7),
        description=(
            "A tiny simulation (4 x 4 scan, Si in graphene, source size and jitter) kept as the "
            "reference that tests regenerate and compare, to catch changes of the recipes or of "
            "abTEM. float32, noise-free."
        ),
    ),
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(2**20):
            h.update(chunk)
    return h.hexdigest()


def _temp(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{suffix}")


def write_hspy_reproducible(path: Path, signal) -> None:
    """Write ``signal`` to ``.hspy`` so that the bytes depend on the data only.

    hyperspy stamps every save with the time (``metadata.General.FileIO``) and HDF5 keeps the
    bytes of deleted objects, so the file is written once, the stamp is deleted, and the live
    objects are copied into a fresh file, which is then renamed onto ``path``.
    """
    import h5py

    raw, clean = _temp(path, ".raw.hspy"), _temp(path, ".hspy")
    try:
        signal.save(raw, overwrite=True, show_progressbar=False)
        with h5py.File(raw, "r+") as f:
            for experiment in f["Experiments"].values():
                general = experiment["metadata/General"]
                if "FileIO" in general:
                    del general["FileIO"]
        with h5py.File(raw, "r") as src, h5py.File(clean, "w") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            for key in src:
                src.copy(src[key], dst, name=key)
        os.replace(clean, path)
    finally:
        raw.unlink(missing_ok=True)
        clean.unlink(missing_ok=True)


def _as_counts(signal):
    """Store whole numbers (electron counts, or digitised detector units that may dip below
    zero after the dark subtraction) in the smallest integer type that holds them exactly."""
    data = signal.data
    if not np.array_equal(data, np.round(data)):
        raise RuntimeError("Expected whole counts or detector units from a finite-dose recipe.")
    lo, hi = data.min(), data.max()
    kinds = (np.uint8, np.uint16) if lo >= 0 else (np.int8, np.int16)
    fits = [t for t in kinds if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max]
    if not fits:
        raise RuntimeError(f"Values from {lo} to {hi} exceed {np.dtype(kinds[-1]).name}; "
                           "lower the dose or the gain, or bin less.")
    signal.data = data.astype(fits[0])
    return np.dtype(fits[0]).name


def make(name: str, out_dir: Path, progress: bool = True) -> dict:
    """Simulate one dataset, write its file(s) into ``out_dir``; return their manifest entries.

    A recipe run that records a HAADF image too writes it beside the patterns as
    ``<name>_haadf`` (its own manifest entry, same recipe and parameters).
    """
    from rrvae_nb import simulate

    spec = DATASETS[name]
    recipe = getattr(simulate, spec["recipe"])
    t0 = time.perf_counter()
    sim = recipe(**spec["params"], progress=progress)
    seconds = time.perf_counter() - t0
    signal = sim.signal
    params = json.loads(signal.metadata.Simulation.parameters_json)  # every keyword, defaults too
    description = spec["description"]
    path = out_dir / f"{name}.{spec['format']}"
    if spec["format"] == "ndata1":
        from rrvae_nb.io import write_ndata1

        description = description.format(dtype=_as_counts(signal))
        write_ndata1(path, signal, timestamp=FIXED_TIMESTAMP)
    else:
        write_hspy_reproducible(path, signal)
    entry = {
        "file": path.name,
        "format": spec["format"],
        "size": path.stat().st_size,
        "sha256": _sha256(path),
        "description": description,
        "recipe": f"rrvae_nb.simulate.{spec['recipe']}",
        "params": params,
        "seed": params.get("seed"),
    }
    print(f"{name}: {signal.data.shape} {signal.data.dtype}, {entry['size'] / 1e6:.2f} MB, "
          f"simulated in {seconds:.0f} s", flush=True)
    entries = {name: entry}
    if sim.haadf is not None:
        from rrvae_nb.io import write_ndata1

        haadf_path = out_dir / f"{name}_haadf.ndata1"
        dtype = _as_counts(sim.haadf)
        write_ndata1(haadf_path, sim.haadf, timestamp=FIXED_TIMESTAMP)
        entries[f"{name}_haadf"] = {
            **entry, "file": haadf_path.name, "format": "ndata1",
            "size": haadf_path.stat().st_size, "sha256": _sha256(haadf_path),
            "description": _HAADF_NOTE.format(name=name, dtype=dtype), "channel": "haadf",
        }
    return entries


def write_manifest(out_dir: Path, entries: dict) -> Path:
    """Merge ``entries`` into ``out_dir/manifest.json`` (atomically)."""
    path = out_dir / MANIFEST
    manifest = {"version": 1, "datasets": {}}
    if path.is_file():
        manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["version"] = 1
    datasets = manifest.setdefault("datasets", {})
    datasets.update(entries)
    manifest["datasets"] = {k: datasets[k] for k in sorted(datasets)}
    tmp = _temp(path, ".json")
    try:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"dataset(s) to make (repeatable); default all: {sorted(DATASETS)}")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="destination folder for the files and manifest.json (default: data/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    names = args.only or list(DATASETS)
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {sorted(DATASETS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name in names:
        made = make(name, args.out, progress=not args.quiet)
        entries.update(made)
        write_manifest(args.out, made)  # keep the manifest true after each file
    print(f"wrote {len(entries)} dataset(s) and {args.out / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
