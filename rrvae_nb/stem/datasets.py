"""Datasets: the ones shipped with the repository, and public ones downloaded on demand.

Shipped data
    Small simulated datasets live in the repository's ``data/`` folder, described by
    ``data/manifest.json``::

        {"version": 1, "datasets": {NAME: {"file": "relative/path", "format": "hspy" | "ndata1",
         "size": <bytes>, "sha256": "<hex>", "description": "...",
         "recipe": "rrvae_nb.simulate.<function>", "params": {...}, "seed": <int or null>}}}

    :func:`load` checks the size and SHA-256 before reading, :func:`list_datasets` lists them.

Downloadable data
    Public experimental data are described in the package's ``registry.json`` (URL, size and
    checksum where published, source, licence). :func:`fetch` downloads a file into a cache
    folder, verifies it and says where it came from and under which terms it may be used. The
    experimental files of Oxley et al. (2021) carry no licence: they are downloaded for your own
    use and must not be redistributed.
"""

from __future__ import annotations

import hashlib
import html.parser
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path, PurePosixPath

__all__ = [
    "load",
    "list_datasets",
    "fetch",
    "FetchResult",
    "default_data_dir",
    "default_cache_dir",
    "read_registry",
]

_HERE = Path(__file__).resolve().parent  # rrvae_nb/stem/: registry.json lies beside this file
_REPOSITORY = _HERE.parent.parent  # the checkout the package was installed from (pip install -e .)
#: Environment variable that points :func:`load` at another data folder.
DATA_ENV = "RRVAE_NB_DATA"
#: Environment variable that sets the download cache folder of :func:`fetch`.
CACHE_ENV = "RRVAE_NB_CACHE"

_MANIFEST_KEYS = ("file", "format", "size", "sha256")
_FORMATS = ("hspy", "ndata1")
_NAME_RE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")

#: Seconds to wait before each retry of an interrupted download (one entry per retry).
RETRY_DELAYS_S = (1.0, 3.0, 10.0)
#: Network timeout per request, in seconds.
TIMEOUT_S = 60.0
#: Seconds :func:`fetch` waits for another process (or thread) fetching the same file.
LOCK_TIMEOUT_S = 3600.0
_LOCK_POLL_S = 0.1
_BLOCK = 2**20


# --------------------------------------------------------------------------------------------
# Shipped data
# --------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """The folder holding ``manifest.json`` and the shipped data files.

    ``$RRVAE_NB_DATA`` if set, else the ``data/`` folder of the repository checkout the package
    was installed from (``pip install -e .``): ``<repository>/data``.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return _REPOSITORY / "data"


def _read_manifest(data_dir) -> tuple[Path, dict]:
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    manifest = data_dir / "manifest.json"
    if not manifest.is_file():
        raise OSError(
            f"No data manifest at {manifest}. The shipped datasets live in the repository's "
            "data/ folder, which a wheel install does not contain: clone the repository and "
            "install it with `pip install -e .`, run `make data` to (re)create the files, or "
            f"point the {DATA_ENV} environment variable (or data_dir=) at a folder holding "
            "manifest.json."
        )
    try:
        content = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{manifest} is not valid JSON ({err}); regenerate it with "
                         "`make data`.") from err
    if not isinstance(content, dict) or content.get("version") != 1 or not isinstance(
        content.get("datasets"), dict
    ):
        raise ValueError(
            f"{manifest} is not a version-1 manifest ({{'version': 1, 'datasets': {{...}}}}); "
            "regenerate it with `make data`."
        )
    return data_dir, content["datasets"]


def _safe_relative(base: Path, rel: str, where: str) -> Path:
    """``base / rel``, refusing absolute paths and paths that climb out of ``base``."""
    pure = PurePosixPath(str(rel))
    if not rel or pure.is_absolute() or ".." in pure.parts:
        raise ValueError(
            f"{where}: the file entry {rel!r} must be a relative path inside {base}; fix the "
            "entry."
        )
    return base.joinpath(*pure.parts)


def list_datasets(data_dir=None) -> dict[str, str]:
    """Names and descriptions of the datasets shipped in ``data/``.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Folder with ``manifest.json``; default :func:`default_data_dir`.

    Returns
    -------
    dict
        ``{name: description}``, sorted by name. Downloadable data: see :func:`read_registry`.
    """
    _, entries = _read_manifest(data_dir)
    return {name: str(entries[name].get("description", "")) for name in sorted(entries)}


def _sha256(path: Path, progress: bool = False, desc: str = "") -> str:
    # pooch.file_hash does the same but has no progress bar; files here can be 1 GB.
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh, tqdm(total=size, unit="B", unit_scale=True, desc=desc,
                                       disable=not progress or size < 2**28) as bar:
        while chunk := fh.read(_BLOCK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def load(name: str, lazy: bool = False, *, data_dir=None, verify: bool = True):
    """Load a dataset shipped with the repository (described in ``data/manifest.json``).

    Parameters
    ----------
    name : str
        Dataset name, e.g. ``"graphene_vacancy_sim"`` (see :func:`list_datasets`).
    lazy : bool
        Return a dask-backed lazy signal.
    data_dir : str or os.PathLike, optional
        Folder with ``manifest.json`` and the files; default :func:`default_data_dir`.
    verify : bool
        Check the file's size and SHA-256 against the manifest before reading (default True).

    Returns
    -------
    hyperspy Signal2D
        The dataset, (scan y, scan x | ky, kx) in nm and mrad for 4D-STEM. Its provenance
        (dataset name, recipe, parameters, seed) is in ``metadata.General.rrvae_nb``.

    Raises
    ------
    ValueError
        Unknown name, malformed manifest entry or unknown format.
    OSError
        Missing data folder or file, size or checksum mismatch.
    """
    data_dir, entries = _read_manifest(data_dir)
    if name not in entries:
        raise ValueError(
            f"No shipped dataset named {name!r}. Available: {sorted(entries) or 'none'}. "
            "Downloadable data sets are fetched with rrvae_nb.datasets.fetch()."
        )
    entry = entries[name]
    where = f"{data_dir / 'manifest.json'} entry {name!r}"
    missing = [k for k in _MANIFEST_KEYS if k not in entry]
    if missing:
        raise ValueError(f"{where} lacks {missing}; regenerate the manifest with `make data`.")
    fmt = entry["format"]
    if fmt not in _FORMATS:
        raise ValueError(f"{where} has format {fmt!r}; expected one of {_FORMATS}.")
    path = _safe_relative(data_dir, entry["file"], where)
    if not path.is_file():
        raise OSError(
            f"The file of dataset {name!r} is missing: {path}. Regenerate the shipped data "
            "with `make data` (or restore it from git)."
        )
    if verify:
        size = path.stat().st_size
        if size != int(entry["size"]):
            raise OSError(
                f"{path} has {size} bytes but the manifest says {entry['size']}: the file is "
                "truncated or was changed after the manifest was written. Regenerate it with "
                "`make data` (or restore it from git)."
            )
        digest = _sha256(path, desc=f"checking {path.name}")
        if digest != str(entry["sha256"]).lower():
            raise OSError(
                f"{path} failed its SHA-256 check (got {digest}, manifest says "
                f"{entry['sha256']}): the file is corrupt or was changed after the manifest was "
                "written. Regenerate it with `make data` (or restore it from git)."
            )
    from . import io

    if fmt == "ndata1":  # a verified SHA-256 covers the zip CRC: skip that second pass
        sig = io.read_ndata1(path, lazy=lazy, verify_crc=not verify)
    else:
        sig = io.load(path, lazy=lazy)
    sig.metadata.set_item("General.rrvae_nb", {
        "dataset": name,
        "recipe": entry.get("recipe"),
        "params": json.dumps(entry.get("params")),
        "seed": entry.get("seed"),
    })
    return sig


# --------------------------------------------------------------------------------------------
# Downloadable data
# --------------------------------------------------------------------------------------------

_REGISTRY_KEYS = ("file", "url", "hash", "size", "description", "source", "licence")


def read_registry(registry=None) -> dict[str, dict]:
    """The registry of downloadable datasets, checked.

    Parameters
    ----------
    registry : str, os.PathLike or dict, optional
        A registry (path to a JSON file, or the parsed dict); default: the package's
        ``registry.json``. Tests point entries at a local server this way.

    Returns
    -------
    dict
        ``{name: entry}``; each entry has ``file`` (name in the cache), ``url`` (None when the
        file must be downloaded by hand from ``landing_page``), ``hash`` (``"md5:..."``,
        ``"sha256:..."`` or None when nothing is published), ``size`` (bytes or None),
        ``description``, ``source``, ``licence`` and optionally ``format``, ``shape``,
        ``landing_page``, ``citation``.
    """
    if registry is None:
        registry = _HERE / "registry.json"
    if isinstance(registry, dict):
        content = registry
    else:
        content = json.loads(Path(registry).read_text(encoding="utf-8"))
    if content.get("version") != 1 or not isinstance(content.get("datasets"), dict):
        raise ValueError("A registry must look like {'version': 1, 'datasets': {NAME: {...}}}.")
    entries = content["datasets"]
    for name, entry in entries.items():
        if not _NAME_RE.match(name):
            raise ValueError(f"Registry name {name!r} is not lower_snake_case.")
        missing = [k for k in _REGISTRY_KEYS if k not in entry]
        if missing:
            raise ValueError(f"Registry entry {name!r} lacks {missing}.")
        if entry["hash"] is not None and not re.match(
            r"^(md5:[0-9a-f]{32}|sha256:[0-9a-f]{64})$", entry["hash"]
        ):
            raise ValueError(
                f"Registry entry {name!r}: hash must be 'md5:<32 hex>' or 'sha256:<64 hex>' "
                f"or null; got {entry['hash']!r}."
            )
        if entry["url"] is None and not entry.get("landing_page"):
            raise ValueError(f"Registry entry {name!r} has neither a url nor a landing_page.")
        if "/" in entry["file"] or "\\" in entry["file"] or entry["file"] in ("", ".", ".."):
            raise ValueError(f"Registry entry {name!r}: file must be a plain file name.")
    return entries


def default_cache_dir() -> Path:
    """Download cache: ``$RRVAE_NB_CACHE`` if set, else the user cache (``pooch.os_cache``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("rrvae-nb"))


@dataclass(frozen=True)
class FetchResult:
    """Outcome of :func:`fetch`.

    Attributes
    ----------
    name : str
        Registry name.
    path : pathlib.Path
        The verified file in the cache.
    source : str
        Where the data come from (authors, publication, repository).
    licence : str
        The terms under which you may use the file.
    checks : tuple of str
        The checks that actually passed, in words (never a check that did not happen).
    downloaded : bool
        False when the file was already in the cache.
    """

    name: str
    path: Path
    source: str
    licence: str
    checks: tuple[str, ...] = field(default_factory=tuple)
    downloaded: bool = False

    def notice(self) -> str:
        """A short text naming the file, its source, its licence and the checks done."""
        return (
            f"{self.name}: {self.path}\n"
            f"  source:  {self.source}\n"
            f"  licence: {self.licence}\n"
            f"  checks:  {'; '.join(self.checks) if self.checks else 'none'}"
        )


class _Interrupted(Exception):
    """A transfer ended early (connection dropped, short body): worth retrying."""


class _DriveForm(html.parser.HTMLParser):
    """Collects the download form (action + hidden inputs) of Google Drive's warning page."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.inputs: dict[str, str] = {}
        self.confirm_href: str | None = None
        self._in_form = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and ("download" in (a.get("id") or "") or "download" in (
                a.get("action") or "")):
            self.action = a.get("action")
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name"):
            self.inputs[a["name"]] = a.get("value") or ""
        elif tag == "a" and "confirm=" in (a.get("href") or ""):
            self.confirm_href = a["href"]

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False


def _drive_confirm_url(page: bytes, base_url: str) -> str | None:
    """The real download URL behind Google Drive's "can't scan for viruses" page, if any.

    Large Drive files answer the plain download URL with an HTML page whose form (or, in older
    versions, a link with ``confirm=<token>``) leads to the file.
    """
    parser = _DriveForm()
    parser.feed(page.decode("utf-8", errors="replace"))
    if parser.action:
        action = urllib.parse.urljoin(base_url, parser.action)
        return f"{action}?{urllib.parse.urlencode(parser.inputs)}"
    if parser.confirm_href:
        return urllib.parse.urljoin(base_url, parser.confirm_href.replace("&amp;", "&"))
    return None


def _user_agent() -> str:
    try:
        from .._version import __version__
    except ImportError:  # pragma: no cover
        __version__ = "0"
    return f"rrvae-nb/{__version__} (+https://github.com; python-urllib)"


def _download(url: str, part: Path, *, expected_size: int | None, progress: bool,
              label: str) -> tuple[int | None, int]:
    """Download ``url`` into ``part``, resuming it with HTTP Range after interruptions.

    Returns (size announced by the server or None, number of resumed transfers).

    Written here rather than with pooch, whose downloader keeps no partial file between
    attempts (no Range resume) and cannot pass Google Drive's confirmation page.
    """
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    retries = 0
    resumed = 0
    confirm_steps = 0
    announced: int | None = None
    while True:
        have = part.stat().st_size if part.exists() else 0
        if expected_size is not None and have == expected_size:
            return announced or expected_size, resumed
        headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with opener.open(urllib.request.Request(url, headers=headers),
                             timeout=TIMEOUT_S) as resp:
                if resp.headers.get_content_type() == "text/html":
                    page = resp.read(2**20)
                    follow = _drive_confirm_url(page, resp.geturl())
                    if follow is None or confirm_steps >= 3:
                        raise OSError(
                            f"{url} answered with a web page instead of the file ({label}). "
                            "The link may have moved, the file may no longer be shared, or the "
                            "host's download quota is exhausted: open the URL in a browser, "
                            "and if the file downloads there, save it by hand (see the "
                            "registry's landing_page) and load it with rrvae_nb.io.load()."
                        )
                    url, confirm_steps = follow, confirm_steps + 1
                    continue
                have, total = _where_to_start(resp, have)
                resumed += have > 0
                announced = total if total is not None else announced
                _write_body(resp, part, have, total, label=label, progress=progress)
                return announced, resumed
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # our partial file is not a prefix of theirs
                part.unlink(missing_ok=True)
                continue
            if err.code < 500 and err.code != 429:
                raise OSError(
                    f"Download of {label} from {url} failed: HTTP {err.code} {err.reason}. "
                    "Check the URL in the registry (the file may have moved)."
                ) from err
            failure: Exception = err
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                TimeoutError, _Interrupted) as err:
            failure = err
        if retries >= len(RETRY_DELAYS_S):
            raise OSError(
                f"Download of {label} from {url} failed after {retries + 1} attempts "
                f"({failure}). Check your internet connection and try again later."
            ) from failure
        time.sleep(RETRY_DELAYS_S[retries])
        retries += 1


def _where_to_start(resp, have: int) -> tuple[int, int | None]:
    """(byte to append at, whole file's size or None) for a response to a request from ``have``.

    206: the server resumed our partial file, which must be where it resumed; 200: it ignored the
    Range and sends the whole file from the start.
    """
    if have and resp.status == 206:
        start, total = _content_range(resp.headers.get("Content-Range"))
        if start != have:
            raise _Interrupted(f"server resumed at byte {start}, not {have}")
        return have, total
    length = resp.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _write_body(resp, part: Path, have: int, total: int | None, *, label: str,
                progress: bool) -> None:
    """Append the response body to ``part`` from byte ``have`` (0: start afresh), with a bar."""
    from tqdm.auto import tqdm

    with open(part, "ab" if have else "wb") as fh, tqdm(
        total=total, initial=have, unit="B", unit_scale=True, desc=label, disable=not progress,
    ) as bar:
        while True:
            try:
                chunk = resp.read(_BLOCK)
            except http.client.IncompleteRead as err:
                fh.write(err.partial)
                raise _Interrupted("connection closed early") from err
            if not chunk:
                break
            fh.write(chunk)
            bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got != total:
        raise _Interrupted(f"received {got} of {total} bytes")


def _content_range(value: str | None) -> tuple[int, int | None]:
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value or "")
    if not m:
        raise _Interrupted(f"unusable Content-Range {value!r}")
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), total


def _file_digest(path: Path, algorithm: str, progress: bool) -> str:
    if algorithm == "sha256":
        return _sha256(path, progress, desc=f"checking {path.name}")
    import pooch

    return pooch.file_hash(str(path), alg=algorithm)


class _Unverifiable(OSError):
    """A download that nothing can check (no hash, no size, no known structure)."""


def _verify(path: Path, entry: dict, name: str, *, announced: int | None, progress: bool,
            downloaded: bool = False) -> list[str]:
    """Check ``path`` against everything known about it; return the checks that passed.

    Raises OSError on the first failed check, and :class:`_Unverifiable` for a new download
    that nothing could check.
    """
    checks = []
    size = path.stat().st_size
    if entry.get("size") is not None:
        if size != int(entry["size"]):
            raise OSError(f"{name}: {size} bytes, but the registry says {entry['size']}")
        checks.append(f"size {size} bytes (registry)")
    elif announced is not None:
        if size != announced:
            raise OSError(f"{name}: {size} bytes, but the server announced {announced}")
        checks.append(f"size {size} bytes (as announced by the server)")
    if entry.get("hash"):
        algorithm, expected = entry["hash"].split(":", 1)
        digest = _file_digest(path, algorithm, progress)
        if digest != expected:
            raise OSError(f"{name}: {algorithm} {digest}, but the registry says {expected}")
        checks.append(f"{algorithm} {expected} (published)")
    else:
        record = _hash_record(path)
        if record.is_file():
            expected = record.read_text().strip()
            digest = _sha256(path, progress, desc=f"checking {path.name}")
            if digest != expected:
                raise OSError(
                    f"{name}: sha256 {digest}, but it was {expected} when first downloaded"
                )
            checks.append(f"sha256 unchanged since first download ({expected[:12]}...; no "
                          "published checksum exists)")
    if entry.get("format") == "ndata1":
        from . import io

        info = io.ndata1_info(path)  # raises OSError if not a complete Nion zip
        if entry.get("shape") and list(info.shape) != list(entry["shape"]):
            raise OSError(f"{name}: data.npy has shape {info.shape}, expected {entry['shape']}")
        checks.append(f"complete Nion zip, data.npy {info.dtype} array of shape {info.shape}")
    if downloaded and not checks:
        raise _Unverifiable(
            f"nothing can verify the download of {name}: the registry gives no hash and no size "
            "for it, and the server announced no size, so a truncated or wrong file would go "
            "unnoticed"
        )
    return checks


def _hash_record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


class _FetchLock:
    """An exclusive lock on ``<target>.lock`` while one process (or thread) fetches ``target``.

    POSIX: ``fcntl.flock`` on the lock file, which the system releases when the holder dies (a
    killed kernel never leaves a stale lock); the file is removed on release, and a waiter that
    locked a removed file tries again. Elsewhere: the lock file is created exclusively
    (``O_EXCL``) and removed on release; a process killed while fetching leaves it behind, and
    the timeout message says to delete it.
    """

    def __init__(self, target: Path, name: str, timeout_s: float):
        self.path = target.with_name(target.name + ".lock")
        self.name, self.timeout_s = name, timeout_s
        self.fd: int | None = None

    def _try(self) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR)
            except FileExistsError:
                return False
            return True
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # the holder removed it as we locked it
            same = False
        if not same:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def __enter__(self) -> _FetchLock:
        deadline = time.monotonic() + self.timeout_s
        told = False
        while not self._try():
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Another process (or thread) has been fetching {self.name} for over "
                    f"{self.timeout_s:g} s (lock file {self.path}); fetch it again when that "
                    "one has finished. If no other fetch is running (e.g. it was killed on a "
                    "system without flock), delete the lock file and try again."
                )
            if not told:
                warnings.warn(f"Waiting for another fetch of {self.name} to finish (lock file "
                              f"{self.path}).", stacklevel=3)
                told = True
            time.sleep(_LOCK_POLL_S)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.path.unlink(missing_ok=True)  # while still locked: see the class docstring
        finally:
            if self.fd is not None:
                os.close(self.fd)  # releases the flock
                self.fd = None


def fetch(name: str, cache_dir=None, progress: bool = True, *, registry=None,
          verbose: bool = True) -> FetchResult:
    """Download a public dataset on demand, verify it and cache it.

    The file is downloaded to ``<file>.part`` in the cache folder (resuming with HTTP Range
    requests after a dropped connection, or restarting when the server cannot resume), checked
    (size and checksum where the registry knows them), and only then renamed to its final name.
    A failed check, or a download that still fails after its retries, leaves nothing behind; only
    an interrupt (Ctrl-C, a stopped kernel) keeps the ``.part`` file, which the next fetch
    resumes (it is never used unverified). A file already in the cache is re-checked and not
    downloaded again. Two processes (or threads) fetching the same file take turns: a lock file
    ``<file>.lock`` in the cache folder makes the second wait (up to :data:`LOCK_TIMEOUT_S`)
    and then use the file the first one fetched.

    A download must be checkable: an entry without a hash and without a size is accepted only
    if the server announces the size or the file's structure can be checked (``format``
    "ndata1"); otherwise nothing is kept and an OSError says so.

    When no checksum is published (the Google Drive files of Oxley et al.), the SHA-256 of the
    first download is recorded next to the file (``<file>.sha256``) and later fetches check the
    file against it; this detects later corruption but cannot prove the first download was the
    authors' file, and the result's ``checks`` say exactly that.

    Parameters
    ----------
    name : str
        Registry name (see :func:`read_registry`).
    cache_dir : str or os.PathLike, optional
        Cache folder; default :func:`default_cache_dir` (``$RRVAE_NB_CACHE`` or the user cache).
    progress : bool
        Show tqdm progress bars.
    registry : str, os.PathLike or dict, optional
        Another registry (see :func:`read_registry`); default the package's ``registry.json``.
    verbose : bool
        Print the source, licence and checks (default True). They are also returned.

    Returns
    -------
    FetchResult
        Path, source, licence, checks done, and whether a download happened.

    Raises
    ------
    ValueError
        Unknown name.
    OSError
        No automatic download for this entry (the message says where to get the file),
        network failure after retries, failed verification (the file is removed), a download
        that nothing can verify, or (TimeoutError) another fetch of the same file that did not
        finish within :data:`LOCK_TIMEOUT_S`.
    """
    entries = read_registry(registry)
    if name not in entries:
        raise ValueError(f"No downloadable dataset named {name!r}. Available: {sorted(entries)}.")
    entry = entries[name]
    if entry["url"] is None:
        raise OSError(
            f"{name} cannot be downloaded automatically: {entry.get('note') or ''} Get it from "
            f"{entry['landing_page']} (licence: {entry['licence']}), then read it with "
            "rrvae_nb.io.load(path)."
        )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / entry["file"]
    with _FetchLock(target, name, LOCK_TIMEOUT_S):
        return _fetch_locked(name, entry, cache, target, progress, verbose)


def _fetch_locked(name, entry, cache: Path, target: Path, progress, verbose) -> FetchResult:
    """:func:`fetch` once it holds the lock on ``target``."""
    part = target.with_name(target.name + ".part")
    if target.is_file():
        try:
            checks = _verify(target, entry, name, announced=None, progress=progress)
        except OSError as err:
            warnings.warn(f"The cached {target} failed its check ({err}); downloading it again.",
                          stacklevel=3)
            target.unlink()
            _hash_record(target).unlink(missing_ok=True)
        else:
            return _finish(name, target, entry, checks, False, verbose, progress)
    for attempt in (1, 2):
        from_earlier_session = part.is_file()
        announced: int | None = None
        try:
            announced, _ = _download(entry["url"], part, expected_size=entry.get("size"),
                                     progress=progress, label=entry["file"])
            checks = _verify(part, entry, name, announced=announced, progress=progress,
                             downloaded=True)
        except KeyboardInterrupt:
            # Keep the partial file: the next fetch resumes it (it is never used unverified).
            raise
        except _Unverifiable as err:
            part.unlink(missing_ok=True)
            raise OSError(
                f"Could not fetch {name}: {err}. Nothing was kept in {cache}. Add the file's "
                "'size' (bytes) or 'hash' ('sha256:<hex>') to its registry entry, or download "
                f"it by hand from {entry['url']} and read it with rrvae_nb.io.load(path)."
            ) from err
        except OSError as err:
            part.unlink(missing_ok=True)
            if from_earlier_session and attempt == 1:
                continue  # a stale partial file from an earlier session: start afresh once
            raise OSError(
                f"Could not fetch {name}: {err}. Nothing was kept in {cache}. Try again later; "
                f"if it keeps failing, the file at {entry['url']} has changed (report it)."
            ) from err
        break
    os.replace(part, target)
    return _finish(name, target, entry, checks, True, verbose, progress)


def _finish(name: str, path: Path, entry: dict, checks: list[str], downloaded: bool,
            verbose: bool, progress: bool) -> FetchResult:
    record = _hash_record(path)
    if not entry.get("hash") and not record.is_file():
        # Trust on first use: nothing is published to check against, so remember this file.
        digest = _sha256(path, progress, desc=f"hashing {path.name}")
        tmp = record.with_name(record.name + ".part")
        tmp.write_text(digest + "\n")
        os.replace(tmp, record)
        checks = [*checks, f"no published checksum: sha256 {digest} recorded for later checks "
                  "(this cannot prove the file is the authors' original)"]
    result = FetchResult(name=name, path=path, source=str(entry["source"]),
                         licence=str(entry["licence"]), checks=tuple(checks),
                         downloaded=downloaded)
    if verbose:
        print(("Downloaded " if downloaded else "Using cached ") + result.notice())
    return result
