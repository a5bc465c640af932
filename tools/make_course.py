#!/usr/bin/env python3
"""Write the course kit: a student and an instructor copy of every chapter (``make course``).

The chapters carry their exercises as tagged cells, and the tags alone decide what goes where:

- ``exercise``: the cell a student fills in (``answer = None`` and a ``check(...)`` call); kept in
  both copies;
- ``solution``: the worked solution (the markdown explanation and the code that computes the
  answer and checks it with ``strict=True``); in the instructor copy only.

Every other cell goes into both copies. Outputs are stripped (the chapters are stored without
them anyway). The copies land in ``course/student/`` and ``course/instructor/`` (ignored by git),
each folder written in full to a temporary folder and then renamed, so a failed run leaves the
previous kit untouched.

A solution that is not tagged would leak into the student copy: a cell that holds a MyST
``{solution}`` directive or a ``strict=True`` check without the ``solution`` tag is refused, with
the chapter and cell named.

Usage::

    python tools/make_course.py                 # notebooks/NN_*.ipynb -> course/
    python tools/make_course.py --out /tmp/kit  # somewhere else
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
# What only a solution may contain: the MyST solution directive, or a check that must pass.
_SOLUTION_TEXT = re.compile(
    r"`{3,}\s*\{solution(-start|-end)?\}|\bcheck\((?:[^()]|\([^()]*\))*\bstrict\s*=\s*True")


def tags(cell: dict) -> list[str]:
    """The tags of a notebook cell (an empty list when it has none)."""
    return list(cell.get("metadata", {}).get("tags", []))


def _stripped(cell: dict) -> dict:
    cell = json.loads(json.dumps(cell))
    if cell["cell_type"] == "code":
        cell["outputs"], cell["execution_count"] = [], None
    return cell


def split_notebook(nb: dict, name: str = "notebook") -> tuple[dict, dict]:
    """The (student, instructor) copies of one chapter notebook.

    Raises
    ------
    ValueError
        If a cell holds solution material (a ``{solution}`` directive or a ``strict=True``
        check) without the ``solution`` tag, or if a chapter has solutions but no exercise cell.
    """
    student, instructor = [], []
    for i, cell in enumerate(nb["cells"]):
        text = "".join(cell.get("source", ""))
        is_solution = SOLUTION_TAG in tags(cell)
        if not is_solution and _SOLUTION_TEXT.search(text):
            raise ValueError(
                f"{name}, cell {i} (id {cell.get('id')}): holds solution material (a {{solution}} "
                f"directive or a strict=True check) but is not tagged {SOLUTION_TAG!r}; tag it "
                "so that it stays out of the student copy."
            )
        instructor.append(_stripped(cell))
        if not is_solution:
            student.append(_stripped(cell))
    n_solutions = len(instructor) - len(student)
    if n_solutions and not any(EXERCISE_TAG in tags(c) for c in student):
        raise ValueError(f"{name}: has {n_solutions} solution cells but no cell tagged "
                         f"{EXERCISE_TAG!r} for the student to fill in.")
    return {**nb, "cells": student}, {**nb, "cells": instructor}


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def _replace_folder(target: Path, files: dict[str, str]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for fname, text in files.items():
            (tmp / fname).write_text(text, encoding="utf-8")
        old = target.with_name(f".{target.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_course(chapters: list[Path], out: Path) -> dict[str, list[Path]]:
    """Write ``out/student/*.ipynb`` and ``out/instructor/*.ipynb``; returns the paths written."""
    if not chapters:
        raise ValueError("no chapters given: expected notebooks/NN_name.ipynb files.")
    student, instructor = {}, {}
    for path in chapters:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        s, i = split_notebook(nb, Path(path).name)
        student[Path(path).name], instructor[Path(path).name] = _dump(s), _dump(i)
    _replace_folder(out / "student", student)
    _replace_folder(out / "instructor", instructor)
    return {kind: sorted((out / kind).glob("*.ipynb")) for kind in ("student", "instructor")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=REPO_ROOT / "notebooks",
                        help="folder of the chapters (default: notebooks/)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "course",
                        help="where to write student/ and instructor/ (default: course/)")
    args = parser.parse_args(argv)
    chapters = sorted(args.notebooks.glob(CHAPTER_GLOB))
    try:
        written = make_course(chapters, args.out)
    except ValueError as err:
        print(f"make_course: {err}", file=sys.stderr)
        return 1
    for kind, paths in written.items():
        print(f"{kind}: {len(paths)} notebooks in {args.out / kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
