"""The book reads offline: pinned widget scripts, local MathJax, and a browser check that fails
on anything fetched from another host, on raw LaTeX and on widgets that did not render.

Everything here runs in memory or in a temporary folder, without a network or a browser.
"""

from __future__ import annotations

import io
import sys
import tarfile
import urllib.error
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the book extra (jupyter-book)")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import book_toc  # noqa: E402
import browser_check  # noqa: E402
import vendor_js  # noqa: E402

# --------------------------------------------------------------------------------------------
# tools/vendor_js.py
# --------------------------------------------------------------------------------------------


def make_tarball(files: dict[str, bytes]) -> bytes:
    """An npm-style .tgz (every file under package/) holding ``files``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture()
def fake_package(tmp_path):
    """A pinned package whose tarball sits in the cache of a temporary repository."""
    data = make_tarball(
        {
            "dist/embed.js": b"define('x', [], () => 1);",
            "dist/font.woff2": b"font",
            "dist/embed.js.map": b"{}",
            "dist/sub/ignored.woff2": b"deeper",
            "README.md": b"readme",
        }
    )
    package = vendor_js.NpmPackage(
        name="@scope/fake",
        version="1.2.3",
        integrity=vendor_js.sri_sha512(data),
        folder="fake",
        members=("dist/embed.js", "dist/*"),
        suffixes=(".woff2",),
    )
    cache = tmp_path / vendor_js.CACHE_DIR
    cache.mkdir(parents=True)
    (cache / package.cache_name).write_bytes(data)
    return package, data


def test_sri_matches_the_npm_format():
    # sha512 of the empty string, base64, as npm writes dist.integrity
    assert vendor_js.sri_sha512(b"") == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )


def test_pinned_packages_are_exact_and_checksummed():
    assert {p.name for p in vendor_js.PACKAGES} == {
        "requirejs", "@jupyter-widgets/html-manager", "jupyter-matplotlib"
    }
    for package in vendor_js.PACKAGES:
        assert package.integrity.startswith("sha512-") and len(package.integrity) == 95
        assert all(part.isdigit() for part in package.version.split("."))
        assert package.tarball_url.startswith("https://registry.npmjs.org/")
        assert package.tarball_url.endswith(f"-{package.version}.tgz")


def test_vendor_unpacks_the_selected_files_from_the_cache(tmp_path, fake_package, monkeypatch):
    package, _ = fake_package

    def no_network(*args, **kwargs):
        raise AssertionError("the cached tarball must be used, not the network")

    monkeypatch.setattr(vendor_js.urllib.request, "urlopen", no_network)
    folder = vendor_js.vendor(tmp_path, (package,))
    files = sorted(p.name for p in (folder / "fake").iterdir())
    # the named file plus the folder's fonts; no source map, nothing from sub-folders
    assert files == ["embed.js", "font.woff2"]
    assert (folder / "fake" / "embed.js").read_bytes() == b"define('x', [], () => 1);"
    assert vendor_js.is_current(folder, (package,))
    # a second run changes nothing; a different pin makes the folder out of date
    assert vendor_js.vendor(tmp_path, (package,)) == folder
    other = vendor_js.NpmPackage(**{**package.__dict__, "version": "1.2.4"})
    assert not vendor_js.is_current(folder, (other,))


def test_a_corrupt_tarball_fails_with_a_clear_message(tmp_path, fake_package):
    package, data = fake_package
    cached = tmp_path / vendor_js.CACHE_DIR / package.cache_name
    cached.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(vendor_js.IntegrityError, match="checksum") as err:
        vendor_js.vendor(tmp_path, (package,))
    assert "@scope/fake@1.2.3" in str(err.value) and str(cached) in str(err.value)
    # nothing half-written: no vendor folder appeared
    assert not (tmp_path / vendor_js.VENDOR_DIR).exists()


def test_a_download_with_other_bytes_is_refused_and_not_cached(tmp_path, fake_package, monkeypatch):
    package, _ = fake_package
    (tmp_path / vendor_js.CACHE_DIR / package.cache_name).unlink()

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(
        vendor_js.urllib.request, "urlopen", lambda *a, **k: Response(b"not the release")
    )
    with pytest.raises(vendor_js.IntegrityError):
        vendor_js.fetch_tarball(package, tmp_path / vendor_js.CACHE_DIR)
    assert not (tmp_path / vendor_js.CACHE_DIR / package.cache_name).exists()


def test_offline_without_a_cache_says_where_to_put_the_tarball(tmp_path, fake_package, monkeypatch):
    package, _ = fake_package
    (tmp_path / vendor_js.CACHE_DIR / package.cache_name).unlink()

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(vendor_js.urllib.request, "urlopen", offline)
    with pytest.raises(OSError, match="cannot download") as err:
        vendor_js.fetch_tarball(package, tmp_path / vendor_js.CACHE_DIR)
    assert package.cache_name in str(err.value)


def test_a_missing_member_is_named(fake_package):
    package, data = fake_package
    broken = vendor_js.NpmPackage(**{**package.__dict__, "members": ("dist/nope.js",)})
    with pytest.raises(FileNotFoundError, match="dist/nope.js"):
        vendor_js.unpack(broken, data, Path("/nonexistent"))


# --------------------------------------------------------------------------------------------
# book/_config.yml: nothing from a CDN
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "book" / "_config.yml").read_text(encoding="utf-8"))


def test_mathjax_and_widget_scripts_come_from_the_build(config):
    sphinx = config["sphinx"]
    assert "sphinx-mathjax-offline" in sphinx["extra_extensions"]
    scripts = sphinx["config"]["nb_ipywidgets_js"]
    static = sphinx["config"]["html_static_path"]
    assert "book/_vendor" in static
    provided = {
        f"{p.folder}/{Path(m).name}" for p in vendor_js.PACKAGES for m in p.members
        if not m.endswith("/*")
    }
    for script in scripts:
        assert "://" not in script, f"{script} would be fetched from another host"
        assert script in provided or (ROOT / "book" / "_static" / script).exists(), script
    # RequireJS first, the widget manager last (it renders on load with what is configured)
    names = list(scripts)
    assert names[0].startswith("requirejs/") and names[-1].startswith("html-manager/")
    assert (ROOT / ".gitignore").read_text().count("book/_vendor/") == 1


def test_toc_lists_the_parts_of_a_split_chapter_in_order(tmp_path):
    nb = tmp_path / "notebooks"
    nb.mkdir()
    for name in ("02_next", "01_3_c", "01_1_a", "01_2_b", "conftest", "1_bad"):
        (nb / f"{name}.ipynb").write_text("{}")
    assert book_toc.find_chapters(tmp_path) == [
        "notebooks/01_1_a", "notebooks/01_2_b", "notebooks/01_3_c", "notebooks/02_next"]
    (nb / "01_2_again.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="part 2 of chapter 01"):
        book_toc.find_chapters(tmp_path)
    (nb / "01_2_again.ipynb").unlink()
    (nb / "01_whole.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="both a whole notebook"):
        book_toc.find_chapters(tmp_path)


def test_the_committed_toc_is_up_to_date():
    assert book_toc.main(["--check", "--root", str(ROOT)]) == 0


def test_chapter_badges_are_local_images():
    import json

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        first = "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])
        assert "colab.research.google.com/assets" not in first and "shields.io" not in first
        assert "](../book/images/colab-badge.svg)" in first, path.name
        assert "../book/run_times.md" in first, f"{path.name}: no pointer to the measured times"
    assert (ROOT / "book" / "images" / "colab-badge.svg").exists()


def test_orientation_pages_are_in_the_toc_and_exist():
    pages = book_toc.toc_pages(ROOT / book_toc.TOC_PATH)
    for name in ("book/notation", "book/glossary", "book/paper_map", "book/run_times"):
        assert name in pages and (ROOT / f"{name}.md").exists(), name
    glossary = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    assert "```{glossary}" in glossary
    for term in ("CBED", "COM", "iCOM", "Descan", "HAADF", "ELBO", "KL", "Equivariant",
                 "Posterior collapse", "Convergence semi-angle"):
        assert f"\n{term}\n" in glossary, f"glossary lacks {term}"
    # the paper map points at every chapter
    paper_map = (ROOT / "book" / "paper_map.md").read_text(encoding="utf-8")
    for chapter in book_toc.find_chapters(ROOT):
        assert f"../{chapter}.ipynb" in paper_map, chapter


# --------------------------------------------------------------------------------------------
# tools/browser_check.py: what counts as a failure
# --------------------------------------------------------------------------------------------
BASE = "http://127.0.0.1:8000/"


def test_every_request_to_another_host_is_external_even_when_it_loads():
    events = [
        {"method": "Network.requestWillBeSent",
         "params": {"requestId": "1", "request": {"url": BASE + "_static/mathjax/tex-chtml.js"}}},
        {"method": "Network.requestWillBeSent",
         "params": {"requestId": "2", "request": {"url": "https://cdn.jsdelivr.net/npm/x.js"}}},
        {"method": "Network.responseReceived",
         "params": {"response": {"url": "https://cdn.jsdelivr.net/npm/x.js", "status": 200}}},
        {"method": "Network.requestWillBeSent",
         "params": {"requestId": "3", "request": {"url": BASE + "missing.woff2"}}},
        {"method": "Network.responseReceived",
         "params": {"response": {"url": BASE + "missing.woff2", "status": 404}}},
    ]
    problems, external = browser_check.classify_events(events, BASE)
    assert external == ["https://cdn.jsdelivr.net/npm/x.js"]
    assert problems == [f"HTTP 404 for {BASE}missing.woff2"]


GOOD_FACTS = {
    "title": "Notation — book", "h1": "Notation", "images": [], "binder_links": ["b"],
    "colab_links": ["c"], "widget_views": 2, "widgets_rendered": 2, "widget_state": 1,
    "widget_notes_visible": 2,
    "mathjax_loaded": True, "math_formulas": 10, "math_untypeset": 0, "raw_latex": [],
    "solutions": 1, "solutions_open": 0,
}


def test_a_clean_page_has_no_problems():
    assert browser_check.check_facts("book/notation", GOOD_FACTS, is_notebook=False) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"mathjax_loaded": False}, "MathJax did not load"),
        ({"math_untypeset": 3}, "left 3 of 10 formulas untypeset"),
        ({"raw_latex": ["\\(k\\)"]}, "raw LaTeX visible"),
        ({"math_clipped": ["log p(x) = ..."]}, "wider than the text column"),
        ({"widgets_rendered": 1}, "1 of 2 widget outputs were not rendered"),
        ({"widgets_rendered": 0, "widget_state": 0}, "no saved widget state"),
    ],
)
def test_math_and_widget_failures_are_reported(change, expected):
    problems = browser_check.check_facts("book/notation", {**GOOD_FACTS, **change}, False)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_probe_looks_for_raw_latex_outside_code():
    probe = browser_check.PAGE_PROBE_JS
    assert "MathJax.startup.promise" in probe  # waits for typesetting
    assert "pre, code" in probe  # LaTeX in code cells (plot labels) is not prose
    assert "mjx-container" in probe
    assert 'mjx-container[display="true"]' in probe  # displayed formulas measured for width


# --------------------------------------------------------------------------------------------
# book/_ext/rrvae_book.py: the measured run times
# --------------------------------------------------------------------------------------------


def fake_build(monkeypatch, quick: str):
    """A stand-in for the Sphinx app and environment after two chapters were executed."""
    from types import SimpleNamespace

    from docutils import nodes

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import rrvae_book

    monkeypatch.setenv("RRVAE_NB_QUICK", quick)
    env = SimpleNamespace(
        nb_metadata={
            "notebooks/02_b": {"exec_data": {"runtime": 161.04, "succeeded": True}},
            "notebooks/01_a": {"exec_data": {"runtime": 22.46, "succeeded": False}},
            "book/run_times": {"rrvae_run_times": True},  # a page, not executed
        },
        titles={
            "notebooks/01_a": nodes.title(text="One"),
            "notebooks/02_b": nodes.title(text="Two"),
        },
        toctree_includes={"book/intro": ["book/run_times", "notebooks/01_a", "notebooks/02_b"]},
        config=SimpleNamespace(root_doc="book/intro"),
    )
    builder = SimpleNamespace(get_relative_uri=lambda start, to: f"../{to}.html", format="html")
    return rrvae_book, SimpleNamespace(env=env, builder=builder)


def test_timings_follow_the_toc_and_record_mode_and_machine(monkeypatch):
    rrvae_book, app = fake_build(monkeypatch, "1")
    timings = rrvae_book.collect_timings(app.env)
    assert [c["docname"] for c in timings["chapters"]] == ["notebooks/01_a", "notebooks/02_b"]
    assert [c["seconds"] for c in timings["chapters"]] == [22.5, 161.0]
    assert [c["succeeded"] for c in timings["chapters"]] == [False, True]
    assert timings["chapters"][1]["title"] == "Two"
    assert timings["mode"] == "quick" and timings["cpu_count"] >= 1
    monkeypatch.setenv("RRVAE_NB_QUICK", "0")
    assert rrvae_book.collect_timings(app.env)["mode"] == "full"


def test_the_run_time_table_shows_each_chapter(monkeypatch):
    rrvae_book, app = fake_build(monkeypatch, "0")
    intro, table, summary = rrvae_book._run_times_table(app, "book/run_times")
    assert "full mode" in intro.astext() and "CPU cores" in intro.astext()
    rows = [row.astext().split("\n\n") for row in table.findall(lambda n: n.tagname == "row")]
    assert rows[1:] == [["One", "22 s (failed)", "22.5"], ["Two", "2.7 min", "161.0"]]
    refs = [r["refuri"] for r in table.findall(lambda n: n.tagname == "reference")]
    assert refs == ["../notebooks/01_a.html", "../notebooks/02_b.html"]
    assert "3.1 min in total" in summary.astext()
