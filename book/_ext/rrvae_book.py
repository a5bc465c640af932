"""Sphinx additions for the rrvae-nb book (loaded through ``local_extensions`` in _config.yml).

1. Measured run times: the ``rrvae-run-times`` directive (used by book/run_times.md) shows how
   long each chapter took to execute in this very build, as recorded by myst-nb's executor
   (nbclient, wall time of the whole notebook), with the mode (``RRVAE_NB_QUICK``) and the
   number of CPU cores of the machine. The same numbers go to ``timings.json`` in the HTML folder
   (tools/build_book.py copies it next to build_info.json). myst-nb's own ``nb-exec-table``
   directive shows the same runtimes but neither the mode nor the machine, and writes no file.

2. Duplicate inline scripts:

Sphinx 7.4 (pinned by jupyter-book 1.0.4) writes every inline ``<script>`` that an extension adds
after the builder started *twice*: the builder first stores it with the file name ``None`` and
re-adds it before writing with ``''``, which no longer compares equal. sphinx-thebe's inline
script declares ``const THEBE_JS_URL``, so the second copy raises "Identifier 'THEBE_JS_URL' has
already been declared" in every reader's browser (and fails tools/browser_check.py). This
extension drops exact duplicates from each page's script list; with a Sphinx that no longer
duplicates scripts it changes nothing.

(pydata-sphinx-theme's "Got invalid theme mode" error on a first visit is fixed in _config.yml by
``html_context: {default_mode: light}``.)
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

TIMINGS_FILE = "timings.json"


def _script_key(script: Any) -> tuple:
    filename = getattr(script, "filename", script) or ""
    priority = getattr(script, "priority", 0)
    attributes = getattr(script, "attributes", {}) or {}
    return (str(filename), priority, tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: the builder restores its own list after each page


# ---------------------------------------------------------------------------------------------
# Measured run times
# ---------------------------------------------------------------------------------------------


def cpu_count() -> int:
    """Return the number of CPU cores this process may use (affinity-aware where supported)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def build_mode() -> str:
    """Return "quick" when the chapters run with ``RRVAE_NB_QUICK=1``, else "full"."""
    return "quick" if os.environ.get("RRVAE_NB_QUICK", "0") == "1" else "full"


def collect_timings(env) -> dict:
    """Return the run times of the executed notebooks of this build as a JSON-ready mapping.

    Returns
    -------
    dict
        ``{"mode", "cpu_count", "machine", "python", "built", "chapters": [{"docname", "title",
        "seconds", "succeeded"}, ...]}``, chapters in reading order; ``seconds`` is the wall time
        nbclient took to run the whole notebook in a fresh kernel.
    """
    from myst_nb.sphinx_ import NbMetadataCollector

    data = NbMetadataCollector.get_doc_data(env)
    order = {name: i for i, name in enumerate(_reading_order(env))}
    chapters = []
    for docname, meta in data.items():
        exec_data = meta.get("exec_data")
        if not exec_data or exec_data.get("runtime") is None:
            continue
        title = env.titles.get(docname)
        chapters.append(
            {
                "docname": docname,
                "title": title.astext() if title is not None else docname,
                "seconds": round(float(exec_data["runtime"]), 1),
                "succeeded": bool(exec_data.get("succeeded")),
            }
        )
    chapters.sort(key=lambda c: (order.get(c["docname"], len(order)), c["docname"]))
    return {
        "mode": build_mode(),
        "rrvae_nb_quick": os.environ.get("RRVAE_NB_QUICK", "0"),
        "cpu_count": cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "chapters": chapters,
    }


def _reading_order(env) -> list[str]:
    """Docnames in the order of the table of contents (root first)."""
    order: list[str] = []

    def walk(docname: str) -> None:
        if docname in order:
            return
        order.append(docname)
        for child in env.toctree_includes.get(docname, []):
            walk(child)

    walk(env.config.root_doc)
    return order


class RunTimesNode(nodes.General, nodes.Element):
    """Placeholder for the run-time table, filled in once every chapter has been executed."""


class RunTimesDirective(SphinxDirective):
    """``rrvae-run-times``: the table of chapter run times measured in this build."""

    has_content = False

    def run(self):
        from myst_nb.sphinx_ import NbMetadataCollector

        NbMetadataCollector.set_doc_data(self.env, self.env.docname, "rrvae_run_times", True)
        return [RunTimesNode()]


def _format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def _run_times_table(app, docname: str) -> list[nodes.Node]:
    env = app.env
    timings = collect_timings(env)
    intro = nodes.paragraph(
        text=(
            f"Measured while this book was built on {timings['built']}: every chapter run from "
            f"top to bottom in a fresh kernel in {timings['mode']} mode "
            f"(RRVAE_NB_QUICK={timings['rrvae_nb_quick']}), on a machine with "
            f"{timings['cpu_count']} CPU cores ({timings['machine']}, Python {timings['python']})."
        )
    )
    if not timings["chapters"]:
        return [intro, nodes.paragraph(text="No chapter was executed in this build.")]
    table = nodes.table(classes=["colwidths-auto", "rrvae-run-times"])
    group = nodes.tgroup(cols=3)
    table += group
    for _ in range(3):
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for name in ("Chapter", "Run time", "Seconds"):
        row += nodes.entry("", nodes.paragraph(text=name))
    head += row
    body = nodes.tbody()
    group += body
    builder = app.builder
    for chapter in timings["chapters"]:
        row = nodes.row()
        link = nodes.reference(
            "", chapter["title"], internal=True,
            refuri=builder.get_relative_uri(docname, chapter["docname"]),
        )
        row += nodes.entry("", nodes.paragraph("", "", link))
        status = "" if chapter["succeeded"] else " (failed)"
        row += nodes.entry("", nodes.paragraph(text=_format_seconds(chapter["seconds"]) + status))
        row += nodes.entry("", nodes.paragraph(text=f"{chapter['seconds']:.1f}"))
        body += row
    total = sum(c["seconds"] for c in timings["chapters"])
    summary = nodes.paragraph(
        text=(
            f"All {len(timings['chapters'])} chapters: {_format_seconds(total)} in total. "
            "A machine that is busy with other work, or has fewer cores, takes longer."
        )
    )
    return [intro, table, summary]


def _fill_run_times(app, doctree, docname) -> None:
    for node in list(doctree.findall(RunTimesNode)):
        node.replace_self(_run_times_table(app, docname))


def _pages_with_run_times(app, env):
    from myst_nb.sphinx_ import NbMetadataCollector

    return [
        name for name, meta in NbMetadataCollector.get_doc_data(env).items()
        if meta.get("rrvae_run_times")
    ]


def _write_timings(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    text = json.dumps(collect_timings(app.env), indent=2) + "\n"
    target = Path(app.outdir) / TIMINGS_FILE
    tmp = target.with_name(f".{TIMINGS_FILE}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)


def setup(app):
    # Run after every other handler, which may still add scripts for this page.
    app.connect("html-page-context", _drop_duplicate_scripts, priority=999)
    app.add_node(RunTimesNode)
    app.add_directive("rrvae-run-times", RunTimesDirective)
    # Rewrite the run-time page after all chapters were read (executed), whatever the order.
    app.connect("env-updated", _pages_with_run_times)
    app.connect("doctree-resolved", _fill_run_times)
    app.connect("build-finished", _write_timings)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
