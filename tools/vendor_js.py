#!/usr/bin/env python3
"""Put the JavaScript that shows ipywidgets in the book's pages into ``book/_vendor/``.

A page with an ipywidgets output needs three scripts in the reader's browser: RequireJS, the
widget manager for static pages (``@jupyter-widgets/html-manager``'s ``embed-amd.js`` with its
icon fonts) and, for the clickable maps, ipympl's front end (``jupyter-matplotlib``). By default
myst-nb makes each page fetch them from CDNs, so a book opened without a network (a classroom, a
beamline computer) shows no widget at all. This script takes them from the npm registry instead,
as tarballs pinned by version and verified against the registry's sha512 ``dist.integrity``, and
unpacks the files the pages need into ``book/_vendor/`` (not committed: see .gitignore), which
``book/_config.yml`` lists in ``html_static_path``. ``tools/build_book.py`` runs it before every
build. (MathJax comes from the ``sphinx-mathjax-offline`` package, loaded in ``_config.yml``.)

No JavaScript package manager is needed: the three packages are prebuilt, so Python's standard
library (urllib, hashlib, tarfile) does it in a few lines. Downloads are cached in
``.cache/npm/`` (not committed); with the tarballs there, the build needs no network at all.

Usage::

    python tools/vendor_js.py            # download (or reuse the cache), verify, unpack
    python tools/vendor_js.py --check    # exit 1 unless book/_vendor/ is complete and current
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENDOR_DIR = Path("book") / "_vendor"
CACHE_DIR = Path(".cache") / "npm"
REGISTRY = "https://registry.npmjs.org"
STAMP = "vendor.json"


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm tarball and the files of it that the book serves.

    Attributes
    ----------
    name, version : str
        The npm package and its exact version.
    integrity : str
        The registry's ``dist.integrity`` of the tarball (``sha512-<base64>``).
    folder : str
        Sub-folder of ``book/_vendor/`` that receives the files (served as ``_static/<folder>``).
    members : tuple of str
        Paths inside the tarball (below its ``package/`` folder) to copy; a path ending in ``/*``
        copies every file of that folder whose suffix is in ``suffixes``.
    suffixes : tuple of str
        Suffixes kept from folder members (fonts and images that the scripts load themselves).
    """

    name: str
    version: str
    integrity: str
    folder: str
    members: tuple[str, ...]
    suffixes: tuple[str, ...] = ()

    @property
    def tarball_url(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.name}/-/{base}-{self.version}.tgz"

    @property
    def cache_name(self) -> str:
        return f"{self.name.replace('/', '__')}-{self.version}.tgz"


#: ipywidgets 8.1 pages need html-manager 1.x; ipympl 0.10 asks for jupyter-matplotlib ^0.12.
PACKAGES: tuple[NpmPackage, ...] = (
    NpmPackage(
        name="requirejs",
        version="2.3.7",
        integrity=(
            "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw=="
        ),
        folder="requirejs",
        members=("require.js",),
    ),
    NpmPackage(
        name="@jupyter-widgets/html-manager",
        version="1.0.15",
        integrity=(
            "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
        ),
        folder="html-manager",
        members=("dist/embed-amd.js", "dist/*"),
        suffixes=(".eot", ".svg", ".ttf", ".woff", ".woff2"),
    ),
    NpmPackage(
        name="jupyter-matplotlib",
        version="0.12.0",
        integrity=(
            "sha512-0t1KY7psLrHVjIYnHmfzA5GZ1H7mBrLwTwEuTntsJlTSISvXkAAILC6zCZXcnAYqVzffiOIynB/P0dAWinoTfw=="
        ),
        folder="jupyter-matplotlib",
        members=("dist/index.js",),
    ),
)


class IntegrityError(RuntimeError):
    """A downloaded or cached tarball does not match its pinned sha512 checksum."""


def sri_sha512(data: bytes) -> str:
    """Return the Subresource-Integrity string (``sha512-<base64>``) of ``data``."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def verify(package: NpmPackage, data: bytes, source: str) -> None:
    """Raise IntegrityError unless ``data`` is the pinned tarball of ``package``."""
    got = sri_sha512(data)
    if got != package.integrity:
        raise IntegrityError(
            f"{package.name}@{package.version} from {source} has checksum {got}, expected "
            f"{package.integrity} (npm's dist.integrity): the file is corrupt or not the pinned "
            "release. Delete it and run `python tools/vendor_js.py` again; if the registry itself "
            "serves other bytes, do not use them: check the version pinned in tools/vendor_js.py"
        )


def fetch_tarball(package: NpmPackage, cache_dir: Path, timeout: float = 60) -> bytes:
    """Return the verified tarball of ``package``, from ``cache_dir`` or the npm registry."""
    cached = cache_dir / package.cache_name
    if cached.exists():
        data = cached.read_bytes()
        verify(package, data, str(cached))
        return data
    print(f"  downloading {package.tarball_url}", flush=True)
    try:
        with urllib.request.urlopen(package.tarball_url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise OSError(
            f"cannot download {package.tarball_url} ({err}). Building the book offline needs the "
            f"tarball in {cached}: copy it there from a machine with a network (same file name)"
        ) from err
    verify(package, data, package.tarball_url)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{cached.name}.", suffix=".tmp", dir=cache_dir)
    with open(fd, "wb") as handle:
        handle.write(data)
    Path(tmp).replace(cached)
    return data


def selected_members(package: NpmPackage, names: list[str]) -> list[str]:
    """Return the tarball paths (``package/...``) that ``package.members`` select, sorted."""
    chosen: set[str] = set()
    for member in package.members:
        if member.endswith("/*"):
            folder = "package/" + member[:-1]
            chosen.update(
                n for n in names
                if n.startswith(folder) and "/" not in n[len(folder):]
                and n.endswith(package.suffixes)
            )
        elif "package/" + member in names:
            chosen.add("package/" + member)
        else:
            raise FileNotFoundError(
                f"{package.name}@{package.version} has no file {member}: fix its members in "
                "tools/vendor_js.py"
            )
    return sorted(chosen)


def unpack(package: NpmPackage, data: bytes, target: Path) -> list[str]:
    """Write the selected files of the tarball ``data`` into ``target`` (flat); return names."""
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        names = archive.getnames()
        for name in selected_members(package, names):
            source = archive.extractfile(name)
            if source is None:
                continue
            out = target / Path(name).name
            out.write_bytes(source.read())
            written.append(out.name)
    return written


def expected_stamp(packages: tuple[NpmPackage, ...] = PACKAGES) -> dict:
    return {p.name: {"version": p.version, "integrity": p.integrity} for p in packages}


def is_current(vendor_dir: Path, packages: tuple[NpmPackage, ...] = PACKAGES) -> bool:
    """True when ``vendor_dir`` holds exactly the pinned packages' files (its stamp agrees)."""
    stamp = vendor_dir / STAMP
    if not stamp.exists():
        return False
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
    except ValueError:
        return False
    if recorded.get("packages") != expected_stamp(packages):
        return False
    return all((vendor_dir / f).exists() for f in recorded.get("files", []))


def vendor(
    repo_root: Path = REPO_ROOT, packages: tuple[NpmPackage, ...] = PACKAGES
) -> Path:
    """Make ``book/_vendor/`` hold the pinned packages' files; return its path.

    The folder is rebuilt in a temporary sibling and swapped in whole, so an interrupted run
    never leaves a half-filled folder behind.
    """
    vendor_dir = repo_root / VENDOR_DIR
    if is_current(vendor_dir, packages):
        print(f"{VENDOR_DIR} is up to date")
        return vendor_dir
    vendor_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".vendor.", dir=vendor_dir.parent))
    try:
        files = []
        for package in packages:
            data = fetch_tarball(package, repo_root / CACHE_DIR)
            folder = staging / package.folder
            folder.mkdir(parents=True)
            files += [f"{package.folder}/{n}" for n in unpack(package, data, folder)]
        stamp = {"packages": expected_stamp(packages), "files": sorted(files)}
        (staging / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        old = None
        if vendor_dir.exists():
            old = vendor_dir.with_name(f".{vendor_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            vendor_dir.rename(old)
        staging.rename(vendor_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {VENDOR_DIR}: {', '.join(f'{p.name}@{p.version}' for p in packages)}")
    return vendor_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download the pinned widget scripts from npm into book/_vendor/ (verified)."
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless book/_vendor/ is complete and current"
    )
    args = parser.parse_args(argv)
    if args.check:
        current = is_current(REPO_ROOT / VENDOR_DIR)
        print(f"{VENDOR_DIR} is {'up to date' if current else 'missing or out of date'}")
        return 0 if current else 1
    try:
        vendor()
    except (OSError, IntegrityError) as err:
        print(f"vendor_js: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
