"""The package's layout: layers that import only the layers before them, the short names of the flat
layout still naming the same modules, and ``import rrvae_nb`` staying light."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import rrvae_nb

ROOT = Path(__file__).resolve().parent.parent
_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, not an installed one
sys.path.insert(0, str(ROOT / "tools"))
import layout_report  # noqa: E402

sys.path.remove(str(ROOT / "tools"))

# Every module name of the flat layout (before the subpackages) and where it lives now. The
# chapters, bench/, tools/, data/*.py and the README use these names.
FLAT = {
    "_atomic": "stem._atomic", "_checks": "stem._checks", "com": "stem.com", "core": "stem.core",
    "datasets": "stem.datasets", "detector": "stem.detector", "io": "stem.io",
    "preprocess": "stem.preprocess", "signals": "stem.signals", "simulate": "stem.simulate",
    "units": "stem.units", "networks": "model.networks", "priors": "model.priors",
    "recipe": "model.recipe", "rotate": "model.rotate", "stream": "model.stream",
    "synthetic": "model.synthetic", "train": "model.train", "weights": "model.weights",
    "_explorer": "viz._explorer", "_explorer_common": "viz._explorer_common", "plot": "viz.plot",
    "widgets": "viz.widgets",
}


def test_the_table_of_short_names_is_the_flat_layout():
    assert rrvae_nb.SHORT_NAMES == FLAT


@pytest.mark.parametrize("short", sorted(FLAT))
def test_every_short_name_is_the_module_itself(short):
    """``rrvae_nb.<old>`` must be the module object of its new place, not a copy: a test or a
    reader that monkeypatches ``rrvae_nb.train.X`` must change what ``rrvae_nb.model.train``
    uses. Checked through the four ways the chapters and tests reach a module."""
    if short == "_explorer":
        pytest.importorskip("ipywidgets")
    new = importlib.import_module(f"rrvae_nb.{FLAT[short]}")
    assert importlib.import_module(f"rrvae_nb.{short}") is new  # import rrvae_nb.<short>
    assert getattr(rrvae_nb, short) is new  # rr.<short>
    assert sys.modules[f"rrvae_nb.{short}"] is new
    namespace = {}
    exec(f"from rrvae_nb import {short} as m", namespace)  # noqa: S102
    assert namespace["m"] is new
    assert new.__name__ == new.__spec__.name == f"rrvae_nb.{FLAT[short]}"  # its own identity kept


def test_monkeypatching_the_short_name_patches_the_module(monkeypatch):
    import rrvae_nb.model.train as train

    monkeypatch.setattr(rrvae_nb.train, "ACTIVE_VARIANCE", 0.5)
    assert train.ACTIVE_VARIANCE == 0.5


def test_the_model_subpackage_holds_the_names_of_the_rrvae_module():
    """``rrvae_nb.model`` was the RrVAE module; it is now the model layer, which re-exports it."""
    from rrvae_nb.model import FORMAT_VERSION, PAPER_CONFIG, Encoding, RrVAE, rrvae

    assert (RrVAE, Encoding, FORMAT_VERSION, PAPER_CONFIG) == (
        rrvae.RrVAE, rrvae.Encoding, rrvae.FORMAT_VERSION, rrvae.PAPER_CONFIG)
    assert rrvae_nb.RrVAE is rrvae.RrVAE and rrvae_nb.fit is rrvae_nb.model.train.fit


def test_unknown_names_still_raise_attribute_and_import_errors():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rrvae_nb.nothing  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("rrvae_nb.nothing")


def test_no_module_imports_against_the_data_flow():
    """stem -> model -> viz: a layer never imports a later layer or the top level (deferred imports
    inside functions included), so each layer can be read, and tested, without the next."""
    assert layout_report.upward_imports() == []


def test_no_import_cycles():
    assert layout_report.cycles() == []


def test_every_module_imports():
    """Each module of the package imports (in one fresh interpreter, package order); a module
    whose optional extra is missing must say so with an ImportError naming it."""
    names = [m.name for m in pkgutil.walk_packages(rrvae_nb.__path__, "rrvae_nb.")]
    assert {"rrvae_nb.stem.com", "rrvae_nb.model.rrvae", "rrvae_nb.viz.plot"} <= set(names)
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ModuleNotFoundError as err:\n"
            "        if err.name.split('.')[0] == 'rrvae_nb': raise\n"
            "        print(name, 'needs', err.name)\n")
    result = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                            cwd=ROOT, env=_ENV)
    assert result.returncode == 0, result.stderr[-3000:]


def test_import_rrvae_nb_stays_light():
    """The model works without the optional extras: ``import rrvae_nb`` (the model and trainer)
    must not import hyperspy, dask, abTEM, ipywidgets, LiberTEM, scipy or matplotlib, nor any
    module of the data or figure layers beyond the two small helpers the model uses."""
    code = ("import sys, rrvae_nb\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('hyperspy', 'dask', 'abtem', 'ipywidgets', 'libertem', 'scipy', 'matplotlib'))))\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('rrvae_nb.'))))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env=_ENV, check=True)
    heavy, ours = result.stdout.splitlines()
    assert heavy == ""
    assert set(ours.split()) == {
        "rrvae_nb._version", "rrvae_nb.model", "rrvae_nb.model.rrvae", "rrvae_nb.model.networks",
        "rrvae_nb.model.priors", "rrvae_nb.model.rotate", "rrvae_nb.model.train",
        "rrvae_nb.stem", "rrvae_nb.stem._atomic", "rrvae_nb.stem._checks"}


def test_the_test_tree_mirrors_the_package():
    """tests/<layer>/test_<module>.py for each public module of a layer that has tests."""
    for layer in layout_report.LAYERS:
        tests = {p.stem.removeprefix("test_") for p in (ROOT / "tests" / layer).glob("test_*.py")}
        modules = {p.stem for p in (ROOT / "rrvae_nb" / layer).glob("*.py")}
        strays = tests - {m.lstrip("_") for m in modules} - {"properties"}
        assert not strays, f"tests/{layer}/ holds tests of modules outside rrvae_nb/{layer}/"
    flat = {p.stem.removeprefix("test_") for p in (ROOT / "tests").glob("test_*.py")}
    assert not flat & set(FLAT), "a layer's tests lie at the top of tests/"
