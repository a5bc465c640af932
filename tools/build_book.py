#!/usr/bin/env python3
"""Build the rrvae-nb Jupyter Book: execute every chapter and write the HTML.

Two variants, each in its own folder so that one never overwrites the other:

- ``full``  (``make book``): chapters run with ``RRVAE_NB_QUICK=0``, the sizes used in the book;
- ``quick`` (``make book-quick``, CI): chapters run with ``RRVAE_NB_QUICK=1``.

The HTML lands in ``book/_build/<variant>/_build/html`` (Jupyter Book appends ``_build/html`` to
its output path). The build first brings ``book/_toc.yml`` up to date with the chapters present
(tools/book_toc.py), then runs::

    jupyter-book build . --config book/_config.yml --toc book/_toc.yml \
        --path-output book/_build/<variant> --all -W -n --keep-going

``-W -n --keep-going``: every warning (a failing cell, a broken reference, a missing citation)
fails the build, after all pages were tried. The variant's folder is emptied first and ``--all``
re-reads every page, so every chapter is executed again even when its notebook did not change.
The wall time and the page count are written to ``book/_build/<variant>/build_info.json``, and the
run time of every chapter, as measured by the build's executor, to
``book/_build/<variant>/timings.json`` (the book shows the same table on its "Run times measured
at build" page; book/_ext/rrvae_book.py writes it).

Before building, tools/vendor_js.py puts the widget scripts (RequireJS, the ipywidgets
html-manager, ipympl's front end) from pinned, checksummed npm tarballs into ``book/_vendor/``, so
the built book loads nothing from a CDN and reads fully offline (MathJax comes from the
``sphinx-mathjax-offline`` package).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import book_toc  # noqa: E402  (sibling scripts in tools/)
import vendor_js  # noqa: E402

REPO_ROOT = book_toc.REPO_ROOT
VARIANTS = {"full": "0", "quick": "1"}


def output_dir(variant: str, repo_root: Path = REPO_ROOT) -> Path:
    """Return the folder a variant is built into, ``book/_build/<variant>``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown book variant {variant!r}: use one of {sorted(VARIANTS)}")
    return repo_root / "book" / "_build" / variant


def html_dir(variant: str, repo_root: Path = REPO_ROOT) -> Path:
    """Return the folder holding a variant's HTML, ``book/_build/<variant>/_build/html``."""
    return output_dir(variant, repo_root) / "_build" / "html"


def jupyter_book_command(variant: str, repo_root: Path = REPO_ROOT) -> list[str]:
    """Return the jupyter-book command line that builds ``variant`` (run from the repo root)."""
    executable = Path(sys.executable).parent / "jupyter-book"
    if not executable.exists():
        raise OSError(
            f"jupyter-book is not installed next to {sys.executable}; install the book extra: "
            "pip install -c constraints.txt -e '.[book]' (or run `make book`, which does it)"
        )
    return [
        str(executable),
        "build",
        ".",
        "--config",
        "book/_config.yml",
        "--toc",
        "book/_toc.yml",
        "--path-output",
        str(output_dir(variant, repo_root).relative_to(repo_root)),
        "--builder",
        "html",
        "--all",
        "-W",
        "-n",
        "--keep-going",
    ]


def build(variant: str, repo_root: Path = REPO_ROOT, update_toc: bool = True) -> int:
    """Build one variant of the book and return jupyter-book's exit status.

    Parameters
    ----------
    variant : {"full", "quick"}
        Which mode the chapters run in (sets ``RRVAE_NB_QUICK`` to "0" or "1").
    repo_root : Path
        Repository root.
    update_toc : bool
        Regenerate ``book/_toc.yml`` from the chapters present before building.
    """
    if update_toc:
        status = book_toc.main(["--root", str(repo_root)])
        if status:
            return status
    try:
        vendor_js.vendor(repo_root)
    except (OSError, vendor_js.IntegrityError) as err:
        print(f"cannot provide the widget scripts for an offline book: {err}", file=sys.stderr)
        return 1
    command = jupyter_book_command(variant, repo_root)
    env = dict(os.environ, RRVAE_NB_QUICK=VARIANTS[variant])
    out = output_dir(variant, repo_root)
    # Start from an empty folder: no page, image or script of an earlier build can survive and
    # hide a problem (every chapter is executed again anyway).
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    print(f"Building the {variant} book (RRVAE_NB_QUICK={env['RRVAE_NB_QUICK']}):")
    print("  " + " ".join(command), flush=True)
    start = time.perf_counter()
    status = subprocess.call(command, cwd=repo_root, env=env)
    seconds = time.perf_counter() - start
    pages = book_toc.toc_pages(repo_root / book_toc.TOC_PATH)
    timings = html_dir(variant, repo_root) / "timings.json"
    if timings.exists():  # also after a failed build: it says which chapters failed
        book_toc.write_atomic(out / "timings.json", timings.read_bytes())
    info = {
        "variant": variant,
        "rrvae_nb_quick": env["RRVAE_NB_QUICK"],
        "exit_status": status,
        "wall_seconds": round(seconds, 1),
        "pages": pages,
        "html": str(html_dir(variant, repo_root).relative_to(repo_root)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    book_toc.write_atomic(out / "build_info.json", json.dumps(info, indent=2) + "\n")
    verdict = "built" if status == 0 else f"FAILED (exit status {status})"
    print(
        f"{variant} book {verdict} in {seconds:.1f} s: {len(pages)} pages, "
        f"open {html_dir(variant, repo_root) / 'index.html'}"
    )
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Execute every chapter and build the HTML book (warnings are errors). "
            "Output: book/_build/<variant>/_build/html."
        )
    )
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="full",
        help="full: chapters at book size (RRVAE_NB_QUICK=0); quick: RRVAE_NB_QUICK=1",
    )
    parser.add_argument(
        "--no-toc-update",
        action="store_true",
        help="build with book/_toc.yml as it is instead of regenerating it first",
    )
    args = parser.parse_args(argv)
    return build(args.variant, update_toc=not args.no_toc_update)


if __name__ == "__main__":
    sys.exit(main())
