"""rrvae-nb: rotationally invariant VAEs (rrVAE) for 4D-STEM data.

The model and its trainer are imported here; data modules (``rrvae_nb.io``, ``rrvae_nb.simulate``,
``rrvae_nb.preprocess``, ``rrvae_nb.com``, ``rrvae_nb.detector``, ``rrvae_nb.metrics``, ...)
are imported on use, so the model works without the optional extras.
"""

from ._version import __version__
from .model import PAPER_CONFIG, Encoding, RrVAE
from .rotate import rotate_patterns, wrap_angle
from .train import History, evaluate, fit, linear_warmup

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
