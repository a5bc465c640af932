"""rrvae-nb: rotationally invariant VAEs (rrVAE) for 4D-STEM data.

The package is laid out as the data flow through it; a layer imports only the layers before it:

* ``rrvae_nb.stem``: 4D-STEM data: calibration and units, reading and writing files, the shipped
  and downloadable datasets, abTEM simulation, virtual detectors, centre of mass, preprocessing;
* ``rrvae_nb.model``: the rrVAE (``RrVAE``, its networks, angle priors and rotations), training,
  saved weights, a model's preprocessing recipe, out-of-core encoding, toy data;
* ``rrvae_nb.viz``: figures and the interactive explorer;
* at the top: what spans the layers: ``metrics``, the chapters' helpers (``chapter``,
  ``exercises``) and the LiberTEM UDF (``udf``).

The model and its trainer are imported here; everything else is imported on use, so the model
works without the optional extras (hyperspy, abTEM, ipywidgets, LiberTEM).

Every module is also reachable by its short name, as in the flat layout the chapters were written
for: ``rrvae_nb.com`` *is* ``rrvae_nb.stem.com`` (the same module object), ``from rrvae_nb import
plot`` gives ``rrvae_nb.viz.plot``, ``import rrvae_nb.train`` gives ``rrvae_nb.model.train``. The
old name ``rrvae_nb.model`` is the model subpackage, which holds the ``RrVAE`` module's names.
"""

import importlib as _importlib
import importlib.abc as _abc
import importlib.util as _util
import sys as _sys

from ._version import __version__
from .model import PAPER_CONFIG, Encoding, RrVAE
from .model.rotate import rotate_patterns, wrap_angle
from .model.train import History, evaluate, fit, linear_warmup

__all__ = [
    "__version__",
    "RrVAE",
    "PAPER_CONFIG",
    "Encoding",
    "fit",
    "evaluate",
    "History",
    "linear_warmup",
    "rotate_patterns",
    "wrap_angle",
]

#: Short name -> the module's place in the layout (``rrvae_nb.<short name>`` is that module).
SHORT_NAMES = {
    **{name: f"stem.{name}" for name in (
        "_atomic", "_checks", "com", "core", "datasets", "detector", "io", "preprocess", "signals",
        "simulate", "units")},
    **{name: f"model.{name}" for name in (
        "networks", "priors", "recipe", "rotate", "stream", "synthetic", "train", "weights")},
    **{name: f"viz.{name}" for name in ("_explorer", "_explorer_common", "plot", "widgets")},
}


# Why a finder and not one shim file per old module: the short names are a table here, so the top
# level of the package shows the layout and nothing else. Both the attribute (``rr.com``, through
# ``__getattr__``) and the import statement (``import rrvae_nb.com``, ``from rrvae_nb.com import
# x``, pickles that name the old module, through ``_ShortNames``) give the module object itself, not
# a copy, so that monkeypatching either name patches both; nothing is imported before it is used,
# so ``import rrvae_nb`` stays as light as before. tests/test_layout.py checks every name.
class _ShortNames(_abc.MetaPathFinder, _abc.Loader):
    """Imports ``rrvae_nb.<short name>`` as the module it names in :data:`SHORT_NAMES`."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in SHORT_NAMES:
            return None
        return _util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = _importlib.import_module(f"{__name__}.{SHORT_NAMES[spec.name.rpartition('.')[2]]}")
        spec.loader_state = module.__spec__  # its own spec, put back by exec_module
        return module

    def exec_module(self, module):
        # The import system has given the module the short name's spec (importlib always sets
        # __spec__; __name__, __file__ and __loader__ it leaves as they are): give it back its own,
        # which importlib.reload relies on.
        module.__spec__ = module.__spec__.loader_state


# First in line, so that a short name always means the module of this layout, even where a stale
# flat-layout file or an editable install of another checkout could also answer for it.
_sys.meta_path[:] = [f for f in _sys.meta_path if type(f).__qualname__ != "_ShortNames"
                     or type(f).__module__ != __name__]  # one finder, even after a reload
_sys.meta_path.insert(0, _ShortNames())


def __getattr__(name):
    if name in SHORT_NAMES:
        return _importlib.import_module(f"{__name__}.{name}")  # through _ShortNames
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*(n for n in globals() if not n.startswith("_")), *__all__, *SHORT_NAMES})
