"""Every chapter runs top to bottom the way JupyterLab's "Run All" runs it.

nbmake and the book build honour cell tags that JupyterLab ignores (``skip-execution``,
``raises-exception``): a chapter can pass both and still stop a student who presses Run All.
Here every cell runs in order in a fresh kernel, with all tags removed, and the first error
fails the test, as it stops Lab. The course kit's student copies (solutions removed, exercise
cells as handed out, their checks saying "not answered yet") run the same way.

Opt-in (the chapters take minutes): ``pytest tests/test_run_all.py --run-chapters=chapters``
(or ``student``, or ``all``); ``make test`` runs the chapters in quick mode
(``RRVAE_NB_QUICK=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _ipc_kernel_manager(socket_dir: Path):
    # Kernels on Unix sockets, not TCP ports. With TCP, jupyter_client picks five free ports,
    # closes them and lets the kernel bind them a second later; with two chapters running side
    # by side (one starting a dask cluster) another socket can take a port in that second and
    # the kernel dies with "Address already in use". Socket files in a private folder cannot.
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(socket_dir / uuid.uuid4().hex[:12])

    return IPCKernelManager


def without_tags(nb: dict) -> dict:
    """A copy of notebook ``nb`` with every cell's tags removed (Lab honours none of ours)."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("tags", None)
    return nb


def run_all(nb: dict, cwd: Path, timeout: int = 900, save_as: str | None = None) -> None:
    """Execute every cell of ``nb`` in order in a fresh kernel; raise on the first error.

    With ``RRVAE_NB_EXECUTED_DIR`` set, the executed notebook (outputs up to the error) is
    written there as ``save_as``, to read the numbers a run printed."""
    import nbformat
    from nbclient import NotebookClient

    socket_dir = Path(tempfile.mkdtemp(prefix="rrvae-runall-"))
    try:
        node = nbformat.reads(json.dumps(without_tags(nb)), as_version=4)
        client = NotebookClient(node, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd)}},
                                kernel_manager_class=_ipc_kernel_manager(socket_dir))
        try:
            client.execute()
        finally:
            out = os.environ.get("RRVAE_NB_EXECUTED_DIR")
            if out and save_as:
                Path(out).mkdir(parents=True, exist_ok=True)
                nbformat.write(node, Path(out) / save_as)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_without_tags_drops_every_tag_and_keeps_the_sources():
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["skip-execution"]},
                     "source": "1/0", "outputs": [], "execution_count": None}]}
    out = without_tags(nb)
    assert "tags" not in out["cells"][0]["metadata"] and out["cells"][0]["source"] == "1/0"
    assert nb["cells"][0]["metadata"]["tags"] == ["skip-execution"]   # the input is untouched


@pytest.mark.slow
def test_run_all_stops_at_an_error_that_a_skip_tag_would_hide():
    # the harness must not honour skip-execution / raises-exception, as Lab does not
    from nbclient.exceptions import CellExecutionError

    nb = {"cells": [{"cell_type": "code", "id": "a", "metadata": {"tags": ["skip-execution",
                     "raises-exception"]}, "source": "open('/no/such/file')", "outputs": [],
                     "execution_count": None}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    with pytest.raises(CellExecutionError, match="FileNotFoundError"):
        run_all(nb, ROOT, timeout=120)


def _which(config, kind: str) -> bool:
    chosen = config.getoption("--run-chapters")
    return chosen in (kind, "all")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_all(path, request):
    if not _which(request.config, "chapters"):
        pytest.skip("the chapters run with --run-chapters=chapters (or all)")
    run_all(json.loads(path.read_text(encoding="utf-8")), path.parent, save_as=path.name)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_student_copy_runs_all(path, request):
    if not _which(request.config, "student"):
        pytest.skip("the student copies run with --run-chapters=student (or all)")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from make_course import split_notebook
    finally:
        sys.path.remove(str(ROOT / "tools"))
    student, _ = split_notebook(json.loads(path.read_text(encoding="utf-8")), path.name)
    run_all(student, path.parent, save_as=f"student_{path.name}")
