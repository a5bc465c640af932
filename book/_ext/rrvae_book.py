"""A small Sphinx fix for the rrvae-nb book (loaded through ``local_extensions`` in _config.yml).

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

from typing import Any


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


def setup(app):
    # Run after every other handler, which may still add scripts for this page.
    app.connect("html-page-context", _drop_duplicate_scripts, priority=999)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
