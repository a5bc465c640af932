"""4D-STEM data, before any model: the first layer of the package.

Calibration and units (``units``, ``signals``: the ``Calibration`` of a scan, hyperspy signals in
and out), one way into the data and one chunked pass over it (``core``), files (``io``: ``.hspy``,
Nion ``.ndata1``, ``.npy``), the shipped and downloadable datasets (``datasets``,
``registry.json``), abTEM simulation (``simulate``), virtual detectors (``detector``), centre of
mass (``com``) and the preprocessing that turns a scan into model inputs (``preprocess``), with
their private helpers (``_checks``: input checks with clear errors, ``_atomic``: files written
whole or not at all). Modules here import numpy, scipy and torch, and each other; never
``rrvae_nb.model``, ``rrvae_nb.viz`` or the package's top level (only ``rrvae_nb._version``).
hyperspy, dask and abTEM are imported inside the functions that need them.
"""
