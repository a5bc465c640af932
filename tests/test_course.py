"""The course kit (tools/make_course.py) and the exercise scaffolding of the chapters.

No solution reaches a student copy; every exercise has a cell for the student with a check that
says "not answered yet" until it is filled in, and a solution cell whose check must pass; the
student copy does not need anything that only a solution cell defines (so it runs top to bottom:
``pytest tests/test_run_all.py --run-chapters=student`` runs it for real).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_course  # noqa: E402

CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cell(kind, source, tags=(), cid="c0"):
    cell = {"cell_type": kind, "id": cid, "metadata": {"tags": list(tags)} if tags else {},
            "source": source}
    if kind == "code":
        cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "x"}],
                    execution_count=3)
    return cell


def _nb(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_split_keeps_exercises_for_students_and_solutions_for_instructors():
    nb = _nb(_cell("markdown", "```{exercise}\n:label: ex-a\nDo it.\n```", cid="a"),
             _cell("code", "answer = None\ncheck('a', answer)", ["exercise"], cid="b"),
             _cell("markdown", "```{solution} ex-a\nBecause.\n```", ["solution"], cid="c"),
             _cell("code", "answer = 1\ncheck('a', answer, strict=True)", ["solution"], cid="d"))
    student, instructor = make_course.split_notebook(nb)
    assert [c["id"] for c in student["cells"]] == ["a", "b"]
    assert [c["id"] for c in instructor["cells"]] == ["a", "b", "c", "d"]
    assert all(c["outputs"] == [] and c["execution_count"] is None
               for c in instructor["cells"] if c["cell_type"] == "code")
    assert nb["cells"][1]["outputs"]                      # the chapter itself is untouched


@pytest.mark.parametrize("leak", ["```{solution} ex-a\nBecause.\n```",
                                  "answer = 1\ncheck('a', answer, strict=True)"])
def test_an_untagged_solution_is_refused_naming_the_cell(leak):
    nb = _nb(_cell("code", "answer = None", ["exercise"], cid="ok"),
             _cell("markdown" if "{" in leak else "code", leak, cid="leaky"))
    with pytest.raises(ValueError, match="leaky.*not tagged 'solution'"):
        make_course.split_notebook(nb, "ch.ipynb")


def test_solutions_without_an_exercise_cell_are_refused():
    nb = _nb(_cell("code", "answer = 1", ["solution"]))
    with pytest.raises(ValueError, match="no cell tagged 'exercise'"):
        make_course.split_notebook(nb, "ch.ipynb")


def test_make_course_writes_both_sets_and_replaces_an_old_kit(tmp_path):
    chapter = tmp_path / "01_x.ipynb"
    chapter.write_text(json.dumps(_nb(_cell("code", "answer = None", ["exercise"], cid="e"),
                                      _cell("code", "answer = 1", ["solution"], cid="s"))))
    out = tmp_path / "course"
    (out / "student").mkdir(parents=True)
    (out / "student" / "stale.ipynb").write_text("{}")
    written = make_course.make_course([chapter], out)
    assert [p.name for p in written["student"]] == ["01_x.ipynb"]
    assert not (out / "student" / "stale.ipynb").exists()
    student = json.loads((out / "student" / "01_x.ipynb").read_text())
    instructor = json.loads((out / "instructor" / "01_x.ipynb").read_text())
    assert [c["id"] for c in student["cells"]] == ["e"]
    assert [c["id"] for c in instructor["cells"]] == ["e", "s"]
    assert sorted(p.name for p in out.iterdir()) == ["instructor", "student"]  # no temporaries


def test_make_course_refuses_an_empty_list_and_the_cli_reports_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="no chapters"):
        make_course.make_course([], tmp_path)
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "01_x.ipynb").write_text(json.dumps(_nb(
        _cell("markdown", "```{solution} ex-a\nleak\n```", cid="m"))))
    assert make_course.main(["--notebooks", str(tmp_path / "nb"), "--out",
                             str(tmp_path / "c")]) == 1
    assert "not tagged 'solution'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


# ----------------------------------------------------------------------- the real chapters
def _labels(nb):
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return re.findall(r"\{exercise\}\n:label: ex-(ch\d-[\w-]+)", text)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    make_course.make_course(CHAPTERS, out)
    return out


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_solution_reaches_the_student_copy(path, kit):
    student = json.loads((kit / "student" / path.name).read_text(encoding="utf-8"))
    instructor = json.loads((kit / "instructor" / path.name).read_text(encoding="utf-8"))
    chapter = json.loads(path.read_text(encoding="utf-8"))
    assert len(instructor["cells"]) == len(chapter["cells"])
    for cell in student["cells"]:
        text = "".join(cell["source"])
        assert "solution" not in make_course.tags(cell), cell["id"]
        assert "{solution}" not in text and not re.search(r"check\(.*strict=True", text,
                                                             re.S), cell["id"]
    labels = _labels(chapter)
    assert labels, f"{path.name} has no exercises"
    for name in labels:
        mine = [c for c in student["cells"] if f'check("{name}", answer' in "".join(c["source"])]
        assert len(mine) == 1 and "exercise" in make_course.tags(mine[0]), name
        assert "answer = None" in "".join(mine[0]["source"]), name
        solved = [c for c in chapter["cells"] if "solution" in make_course.tags(c)
                  and c["cell_type"] == "code" and f'check("{name}"' in "".join(c["source"])]
        assert len(solved) == 1 and "strict=True" in "".join(solved[0]["source"]), name
        assert "hide-cell" in make_course.tags(solved[0]), name   # hidden in the book


def _names(source: str) -> tuple[set[str], set[str]]:
    """(assigned, read) top-level names of a code cell (IPython syntax allowed)."""
    from IPython.core.inputtransformer2 import TransformerManager

    tree = ast.parse(TransformerManager().transform_cell(source))
    stored, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (stored if isinstance(node.ctx, ast.Store) else loaded).add(node.id)
        elif isinstance(node, ast.arg):
            stored.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stored.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            stored |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return stored, loaded


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_the_student_copy_needs_nothing_only_a_solution_defines(path):
    # A later cell that reads a name only a solution cell assigns would crash the student copy.
    chapter = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in chapter["cells"] if c["cell_type"] == "code"]
    defined_by_students = set()
    for c in code:
        if "solution" not in make_course.tags(c):
            defined_by_students |= _names("".join(c["source"]))[0]
    only_solutions = set()
    for c in code:
        if "solution" in make_course.tags(c):
            only_solutions |= _names("".join(c["source"]))[0] - defined_by_students
    for c in code:
        if "solution" not in make_course.tags(c):
            loaded = _names("".join(c["source"]))[1]
            assert not (loaded & only_solutions), (c["id"], loaded & only_solutions)


def test_the_exercise_placeholder_is_what_check_calls_not_answered():
    from rrvae_nb.chapter import NOT_ANSWERED

    assert NOT_ANSWERED is None
