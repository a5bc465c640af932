"""Atomic file writes: a reader (or a killed process) sees the old file or the new one, never
half of one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["replace_atomically", "stale_temporaries"]


def _temp_path(path: Path) -> Path:
    """A unique temporary name in the folder of ``path`` (same file system, so the final rename
    is atomic), ending in ``path``'s suffix because some writers pick the format from it."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def replace_atomically(path, write: Callable[[Path], object], *, mkdir: bool = False) -> Path:
    """Run ``write(temp_path)``, then rename the temporary file onto ``path``.

    On any error (or interruption) the temporary file is removed and ``path`` is untouched.
    ``mkdir=True`` creates the folder first; otherwise a missing folder is a clear error.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(
            f"The folder {path.parent} does not exist; create it first (Path.mkdir)."
        )
    tmp = _temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def stale_temporaries(path) -> list[Path]:
    """Temporary files that a process killed while writing ``path`` left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp{path.suffix}"))
