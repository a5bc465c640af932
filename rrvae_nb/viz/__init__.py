"""Figures and widgets: the last layer of the package, which draws what the others compute.

``plot`` (matplotlib figures of patterns, scan maps, latent spaces and COM vectors) and
``widgets`` (the interactive explorer of a trained model over a scan, and its static stand-in
``explorer_figure`` for the book; the widget class lives in ``_explorer``, imported with
ipywidgets on first use, the parts shared with the static figure in ``_explorer_common``).
Modules here may import ``rrvae_nb.stem`` and ``rrvae_nb.model``; nothing outside this layer
imports them, except the chapters' helpers at the top level.
"""
