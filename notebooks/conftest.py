"""pytest set-up for running the chapters under nbmake (`make test`).

Kernels talk to pytest over Unix (IPC) sockets instead of TCP ports. With TCP, jupyter_client
picks five free ports, closes them and lets the kernel bind them a second later; with two
chapters running side by side (one of them starting a dask cluster) another socket can take a
port in that second and the kernel dies with "Address already in use" before the notebook runs.
Socket files under a private directory cannot collide. nbmake offers no option for this, so the
client class it uses is wrapped here; if a future nbmake moves it, the chapters still run (over
TCP) and a warning says so.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

_SOCKET_DIR: Path | None = None


def _ipc_kernel_manager():
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        """A kernel manager whose kernel listens on socket files in a private directory."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            # Unix socket paths are limited to ~100 bytes: keep the prefix short and unique.
            self.ip = str(_SOCKET_DIR / uuid.uuid4().hex[:12])

    return IPCKernelManager


def pytest_configure(config):
    global _SOCKET_DIR
    try:
        from nbmake import nb_run
    except ImportError:  # nbmake not installed: no notebooks are collected either
        return
    client_class = getattr(nb_run, "NotebookClient", None)
    if client_class is None:
        warnings.warn(
            "nbmake no longer exposes NotebookClient; kernels fall back to TCP ports",
            stacklevel=1,
        )
        return
    _SOCKET_DIR = Path(tempfile.mkdtemp(prefix="rrvae-kernels-"))
    manager_class = _ipc_kernel_manager()

    def notebook_client(*args, **kwargs):
        kwargs.setdefault("kernel_manager_class", manager_class)
        return client_class(*args, **kwargs)

    nb_run.NotebookClient = notebook_client


def pytest_unconfigure(config):
    if _SOCKET_DIR is not None:
        shutil.rmtree(_SOCKET_DIR, ignore_errors=True)
