"""Shared test set-up: tiny, fast, deterministic."""

from __future__ import annotations

import os

# before torch is imported: idle OpenMP threads sleep instead of spinning
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist each worker gets one thread: two workers on two cores, no oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


def pytest_addoption(parser):
    parser.addoption(
        "--run-chapters", action="store", default=None, choices=("chapters", "student", "all"),
        help="tests/test_run_all.py: run every chapter ('chapters'), every student copy of the "
             "course kit ('student') or both ('all') top to bottom in a fresh kernel, as "
             "JupyterLab's Run All does (no cell tags honoured). Set RRVAE_NB_QUICK=1 for CI.",
    )
