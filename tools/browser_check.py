#!/usr/bin/env python3
r"""Open every page of the built book in headless Chromium and check what a reader would see.

For each page listed in book/_toc.yml the check loads the built HTML from a local web server on
127.0.0.1 and verifies, through Chromium's DevTools protocol:

- the page loads (HTTP 200) and has a title and a first heading;
- every ``<img>`` has loaded (``naturalWidth > 0``), including lazily loaded ones;
- Binder and Colab links are in the page; chapter (notebook) pages also carry the theme's launch
  buttons pointing at that very notebook;
- every ipywidgets output is rendered from its saved state by the book's own copy of the widget
  scripts, and has its visible static note (book/_static/widget_fallback.js);
- exercise solutions start collapsed;
- the mathematics is typeset: MathJax ran, every formula became rendered math, and no raw LaTeX
  delimiter (``$$``, ``\(``, ``\[``, ``\begin{``) is left in the text a reader sees;
- no JavaScript exception, no console error, and no failed request to the book's own server.

A screenshot of what a reader sees first (the browser window, WINDOW pixels, navigation
included) goes to ``book/_build/<variant>/screenshots/NAME.png``; a page with mathematics gets a
second one scrolled to its first displayed formula, ``NAME-math.png``. A JSON report goes to
``book/_build/<variant>/browser_check.json``.

Nothing leaves the machine: Chromium resolves every host but 127.0.0.1 to "not found". Every
request to another host (a CDN's MathJax or widget scripts, a badge image) is listed in the
report; with ``--strict-external`` (``make test`` uses it) each one fails the page, which is how
the check proves that the book reads offline.

Chromium comes from Debian's package: ``--install-browser`` runs
``apt-get install -y chromium chromium-driver`` when /usr/bin/chromium is missing (as root).
The DevTools connection uses the ``websocket-client`` package, which jupyter-server (book extra)
already installs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import book_toc  # noqa: E402  (sibling scripts in tools/)
import build_book  # noqa: E402

REPO_ROOT = book_toc.REPO_ROOT
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: The browser window (CSS pixels): a laptop screen, wide enough for both navigation bars.
WINDOW = (1366, 900)
BINDER_HOST = "mybinder.org"
COLAB_HOST = "colab.research.google.com"

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    # Keep every request on this machine: any host but the local server is "not found".
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

# Runs in the page after it loaded: waits for every image (lazy ones are switched to eager), then
# returns what the checks need. Kept free of anything the theme might not define.
PAGE_PROBE_JS = r"""
(async () => {
  // MathJax typesets after the page's load event: wait for it (at most 20 s).
  const mathjax = typeof window.MathJax === "object" && window.MathJax !== null;
  if (mathjax && window.MathJax.startup && window.MathJax.startup.promise) {
    await Promise.race([window.MathJax.startup.promise,
                        new Promise((done) => setTimeout(done, 20000))]);
  }
  const images = Array.from(document.images);
  for (const img of images) { if (img.loading === "lazy") { img.loading = "eager"; } }
  await Promise.all(images.map((img) => img.complete ? null : new Promise((done) => {
    img.addEventListener("load", done, {once: true});
    img.addEventListener("error", done, {once: true});
    setTimeout(done, 10000);
  })));
  const visible = (el) => {
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    return box.width > 0 && box.height > 0 && style.visibility !== "hidden"
      && style.display !== "none";
  };
  const links = Array.from(document.querySelectorAll("a[href]")).map((a) => a.href);
  const launch = Array.from(document.querySelectorAll(".dropdown-launch-buttons a[href]"))
    .map((a) => a.href);
  const views = document.querySelectorAll(
    'script[type="application/vnd.jupyter.widget-view+json"]');
  // html-manager renders each view from the saved state into a .widget-subarea that it inserts
  // just before the view's script; give it up to 15 s (it loads its modules first).
  const widgetRendered = (v) => {
    const box = v.previousElementSibling;
    return Boolean(box && box.matches(".widget-subarea") && box.childElementCount > 0);
  };
  for (let waited = 0; waited < 15000; waited += 250) {
    if (Array.from(views).every(widgetRendered)) { break; }
    await new Promise((done) => setTimeout(done, 250));
  }
  const notes = Array.from(document.querySelectorAll(".rrvae-widget-fallback"));
  const solutions = Array.from(document.querySelectorAll("div.solution"));
  const h1 = document.querySelector("article h1, main h1, h1");
  const formulas = Array.from(document.querySelectorAll(".math"));
  const untypeset = formulas.filter((m) => !m.querySelector("mjx-container"));
  // Raw LaTeX in prose: text outside code, scripts and typeset math.
  const raw = [];
  const root = document.querySelector("article") || document.body;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const skip = "pre, code, script, style, textarea, mjx-container, .highlight";
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent;
    if (!/\$\$|\\\(|\\\[|\\begin\{/.test(text)) { continue; }
    if (node.parentElement && node.parentElement.closest(skip)) { continue; }
    raw.push(text.trim().slice(0, 80));
  }
  // Displayed formulas wider than the text column: cut off at the column's edge.
  const column = (document.querySelector("article") || document.body).getBoundingClientRect();
  const clipped = Array.from(document.querySelectorAll('mjx-container[display="true"]'))
    .filter((c) => {
      const inner = c.firstElementChild;
      return inner && inner.getBoundingClientRect().right > column.right + 2;
    })
    .map((c) => (c.getAttribute("aria-label") || c.textContent || "").trim().slice(0, 60));
  return {
    title: document.title,
    math_clipped: clipped.slice(0, 5),
    h1: h1 ? h1.textContent.replace(/[#¶]/g, "").trim() : "",
    images: images.map((img) => ({src: img.currentSrc || img.src, width: img.naturalWidth})),
    binder_links: links.filter((h) => h.includes("BINDER_HOST")),
    colab_links: links.filter((h) => h.includes("COLAB_HOST")),
    launch_links: launch,
    widget_views: views.length,
    widgets_rendered: Array.from(views).filter(widgetRendered).length,
    widget_state: document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-state+json"]').length,
    widget_notes_visible: notes.filter(visible).length,
    mathjax_loaded: mathjax && typeof window.MathJax.typesetPromise === "function",
    math_formulas: formulas.length,
    math_untypeset: untypeset.length,
    raw_latex: raw.slice(0, 5),
    solutions: solutions.length,
    solutions_open: solutions.filter((s) => {
      const body = Array.from(s.children).filter((c) => !c.classList.contains("admonition-title"));
      return body.some(visible);
    }).length,
  };
})()
""".replace("BINDER_HOST", BINDER_HOST).replace("COLAB_HOST", COLAB_HOST)


# --------------------------------------------------------------------------------------------
# Set-up: the browser and the local web server
# --------------------------------------------------------------------------------------------


def find_chromium() -> str | None:
    """Return the path of Debian's chromium, or None if it is not installed."""
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def install_chromium() -> str:
    """Install Debian's chromium and chromium-driver with apt-get and return the browser path."""
    if os.geteuid() != 0:
        raise OSError(
            "chromium is not installed and installing it needs root: run "
            "`sudo apt-get install -y chromium chromium-driver`, then this check again"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("Installing Debian's chromium (apt-get install -y chromium chromium-driver)...")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True, env=env
    )
    path = find_chromium()
    if path is None:
        raise OSError("apt-get reported success but no chromium executable was found")
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass


@contextlib.contextmanager
def serve_folder(folder: Path):
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) and yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class DevTools:
    """A minimal client of Chromium's DevTools protocol over one browser-level websocket."""

    def __init__(self, websocket_url: str):
        import websocket  # websocket-client, installed with jupyter-server

        self._ws = websocket.create_connection(websocket_url, timeout=60, suppress_origin=True)
        self._next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params):
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._receive(deadline - time.monotonic())
            if reply is None:
                continue
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(f"DevTools {method} got no answer in {timeout} s")

    def wait_for(self, method: str, session: str, timeout: float) -> bool:
        """Wait until an event ``method`` of ``session`` was received; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            event = self._receive(remaining)
            if event is not None:
                self.events.append(event)

    def settle(self, quiet: float = 1.0, limit: float = 10.0) -> None:
        """Collect events until none arrived for ``quiet`` seconds (at most ``limit`` s)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            event = self._receive(min(quiet, deadline - time.monotonic()))
            if event is None:
                return
            self.events.append(event)

    def _receive(self, timeout: float) -> dict | None:
        import websocket

        self._ws.settimeout(max(timeout, 0.01))
        try:
            return json.loads(self._ws.recv())
        except websocket.WebSocketTimeoutException:
            return None

    def close(self) -> None:
        self._ws.close()


@contextlib.contextmanager
def launch_chromium(executable: str):
    """Start headless Chromium with a fresh profile and yield a connected DevTools client."""
    with tempfile.TemporaryDirectory(prefix="rrvae-chromium-") as profile:
        command = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"]
        log = open(Path(profile).parent / f"{Path(profile).name}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = None
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    output = Path(log.name).read_text(errors="replace")[-2000:]
                    raise OSError(f"chromium did not start (command: {command}):\n{output}")
                time.sleep(0.1)
            port, path = port_file.read_text().split()[:2]
            client = DevTools(f"ws://127.0.0.1:{port}{path}")
            yield client
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.call("Browser.close", timeout=10)
                client.close()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()
            Path(log.name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


@dataclass
class PageResult:
    """What the check found on one page."""

    page: str
    url: str
    screenshot: str = ""
    problems: list[str] = field(default_factory=list)
    external_failures: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_local(url: str, base_url: str) -> bool:
    return url.startswith(base_url) or urlsplit(url).scheme in ("data", "blob", "about")


def _console_text(args: list[dict]) -> str:
    parts = []
    for arg in args:
        parts.append(str(arg.get("value", arg.get("description", arg.get("type", "")))))
    return " ".join(parts)


def classify_events(events: list[dict], base_url: str) -> tuple[list[str], list[str]]:
    """Split a page's DevTools events into problems and failed requests to other hosts.

    Returns
    -------
    problems : list of str
        JavaScript exceptions, console errors, failed or non-200 requests to the book's server.
    external : list of str
        URLs on other hosts that the page requested (they fail here: the check is offline).
    """
    problems: list[str] = []
    external: list[str] = []
    request_urls: dict[str, str] = {}
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            request_urls[params["requestId"]] = url
            if not _is_local(url, base_url):
                external.append(url)  # any request to another host, whether it failed or not
        elif method == "Network.loadingFailed":
            url = request_urls.get(params.get("requestId"), "?")
            if params.get("canceled"):
                continue
            if _is_local(url, base_url):
                problems.append(f"request failed: {url} ({params.get('errorText')})")
            else:
                external.append(url)
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            url, status = response.get("url", ""), response.get("status", 0)
            if _is_local(url, base_url) and status >= 400:
                problems.append(f"HTTP {status} for {url}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            problems.append(f"JavaScript exception: {text.splitlines()[0] if text else details}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append(f"console.{params['type']}: {_console_text(params.get('args', []))}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") != "error":
                continue
            url = entry.get("url", "")
            if entry.get("source") == "network":
                if url and not _is_local(url, base_url):
                    external.append(url)
                # local network failures are reported through the Network events above
                continue
            problems.append(f"console error ({entry.get('source')}): {entry.get('text')}")
    return problems, sorted(set(external))


def check_facts(page: str, facts: dict, is_notebook: bool) -> list[str]:
    """Return the problems found in what the page showed (see PAGE_PROBE_JS)."""
    problems = []
    title, h1 = facts.get("title", "").strip(), facts.get("h1", "")
    if not h1:
        problems.append("no first heading (h1)")
    if not title or title.startswith("<no title>"):
        problems.append(f"no page title (document.title={title!r})")
    elif h1 and not title.startswith(h1):
        problems.append(f"page title {title!r} does not start with the heading {h1!r}")
    for image in facts.get("images", []):
        # images from other hosts (the Colab badge) cannot load offline: like every other
        # external request they are listed as "not checked", and --strict-external fails them
        local = image["src"].startswith(("http://127.0.0.1", "data:", "blob:"))
        if image["width"] <= 0 and local:
            problems.append(f"image did not load: {image['src']}")
    if not facts.get("binder_links"):
        problems.append("no Binder link in the page")
    if not facts.get("colab_links"):
        problems.append("no Colab link in the page")
    if is_notebook:
        notebook = f"{page}.ipynb"
        launch = facts.get("launch_links", [])
        if not any(BINDER_HOST in h and notebook in h for h in launch):
            problems.append(f"no Binder launch button for {notebook} (found: {launch})")
        if not any(COLAB_HOST in h and notebook in h for h in launch):
            problems.append(f"no Colab launch button for {notebook} (found: {launch})")
    views, notes = facts.get("widget_views", 0), facts.get("widget_notes_visible", 0)
    rendered = facts.get("widgets_rendered", 0)
    if views and rendered < views:
        why = (
            "the page has no saved widget state (did the chapter's execution fail?)"
            if not facts.get("widget_state", 1)
            else "are the widget scripts in _static/? see tools/vendor_js.py"
        )
        problems.append(f"{views - rendered} of {views} widget outputs were not rendered ({why})")
    if views != notes:
        problems.append(f"{views} widget outputs but {notes} visible static fallback notes")
    formulas, untypeset = facts.get("math_formulas", 0), facts.get("math_untypeset", 0)
    if formulas and not facts.get("mathjax_loaded"):
        problems.append(f"{formulas} formulas but MathJax did not load: the LaTeX shows raw")
    elif untypeset:
        problems.append(f"MathJax left {untypeset} of {formulas} formulas untypeset")
    for text in facts.get("raw_latex", []):
        problems.append(f"raw LaTeX visible in the text: {text!r}")
    for text in facts.get("math_clipped", []):
        problems.append(f"a displayed formula is wider than the text column and cut off: {text!r} "
                        "(break it over lines, e.g. with \\begin{aligned})")
    if facts.get("solutions_open", 0):
        problems.append(
            f"{facts['solutions_open']} of {facts['solutions']} exercise solutions are open on "
            "load: give each solution `:class: dropdown`"
        )
    return problems


# Scrolls the first displayed formula (or any formula) to the top third of the window.
SCROLL_TO_MATH_JS = r"""
(async () => {
  const target = document.querySelector("div.math") || document.querySelector(".math");
  if (!target) { return false; }
  window.scrollTo(0, Math.max(0, target.getBoundingClientRect().top + window.scrollY - 250));
  await new Promise((done) => setTimeout(done, 300));
  return true;
})()
"""


def write_screenshot(tools: DevTools, session: str, path: Path) -> None:
    """Capture the browser window (WINDOW, as the reader sees it) into the PNG file ``path``."""
    data = tools.call("Page.captureScreenshot", session=session, format="png")["data"]
    book_toc.write_atomic(path, base64.b64decode(data))


def check_page(tools: DevTools, page: str, base_url: str, shot: Path) -> PageResult:
    """Load one page, run the checks, write its screenshot and return the result."""
    url = base_url + page + ".html"
    result = PageResult(page=page, url=url, screenshot=str(shot))
    target = tools.call("Target.createTarget", url="about:blank")["targetId"]
    session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable", session=session)
        tools.call(
            "Emulation.setDeviceMetricsOverride",
            session=session,
            width=WINDOW[0],
            height=WINDOW[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        tools.events.clear()
        navigation = tools.call("Page.navigate", session=session, url=url)
        if navigation.get("errorText"):
            result.problems.append(f"page did not load: {navigation['errorText']}")
            return result
        if not tools.wait_for("Page.loadEventFired", session, timeout=60):
            result.problems.append("page did not finish loading within 60 s")
        tools.settle()
        probe = tools.call(
            "Runtime.evaluate",
            session=session,
            expression=PAGE_PROBE_JS,
            awaitPromise=True,
            returnByValue=True,
            timeout=60,
        )
        if "exceptionDetails" in probe:
            result.problems.append(f"page probe failed: {probe['exceptionDetails']}")
            facts = {}
        else:
            facts = probe["result"]["value"]
        tools.settle(quiet=0.5, limit=5)
        session_events = [e for e in tools.events if e.get("sessionId") == session]
        problems, external = classify_events(session_events, base_url)
        is_notebook = (REPO_ROOT / f"{page}.ipynb").exists()
        result.facts = facts
        result.problems += problems + check_facts(page, facts, is_notebook)
        result.external_failures = external

        # What a reader sees: the window as it is (a full-page capture re-lays the page out at
        # its whole height, which shifts the content and cuts the theme's fixed navigation).
        write_screenshot(tools, session, shot)
        if facts.get("math_formulas", 0):
            scrolled = tools.call(
                "Runtime.evaluate",
                session=session,
                expression=SCROLL_TO_MATH_JS,
                awaitPromise=True,
                returnByValue=True,
            )
            if scrolled.get("result", {}).get("value"):
                write_screenshot(tools, session, shot.with_name(f"{shot.stem}-math.png"))
    finally:
        with contextlib.suppress(Exception):
            tools.call("Target.closeTarget", targetId=target, timeout=10)
    return result


def screenshot_names(pages: list[str]) -> dict[str, str]:
    """Map each page to a screenshot file name: its last path part, or the whole path if taken."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for page in pages:
        name = page.rsplit("/", 1)[-1]
        if name in taken:
            name = page.replace("/", "__")
        taken.add(name)
        names[page] = f"{name}.png"
    return names


def run_check(
    html: Path,
    pages: list[str],
    out_dir: Path,
    chromium: str,
    strict_external: bool = False,
) -> tuple[bool, list[PageResult]]:
    """Check ``pages`` of the HTML book in ``html``; write screenshots and a report to out_dir."""
    missing = [p for p in pages if not (html / f"{p}.html").exists()]
    if missing:
        raise OSError(
            f"the built book in {html} lacks {missing}: build it first (make book or make "
            "book-quick) with the current book/_toc.yml"
        )
    shots = out_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    names = screenshot_names(pages)
    results = []
    with serve_folder(html) as base_url, launch_chromium(chromium) as tools:
        version = tools.call("Browser.getVersion").get("product", "?")
        print(f"{version}: checking {len(pages)} pages served at {base_url}")
        for page in pages:
            result = check_page(tools, page, base_url, shots / names[page])
            if strict_external and result.external_failures:
                result.problems += [f"external resource: {u}" for u in result.external_failures]
            results.append(result)
            status = "ok  " if result.ok else "FAIL"
            print(
                f"  {status} {page}: {len(result.facts.get('images', []))} images, "
                f"{result.facts.get('widget_views', 0)} widgets, "
                f"{len(result.external_failures)} external requests blocked"
            )
            for problem in result.problems:
                print(f"       - {problem}")
    external = sorted({u for r in results for u in r.external_failures})
    if external:
        print(
            f"Requests to other hosts (blocked here; a reader offline would miss them): "
            f"{len(external)} URLs, e.g. {external[:3]}"
        )
    report = {
        "browser": version,
        "pages": [r.__dict__ for r in results],
        "passed": all(r.ok for r in results),
    }
    book_toc.write_atomic(out_dir / "browser_check.json", json.dumps(report, indent=2) + "\n")
    return report["passed"], results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Check every page of the built book in headless Chromium (title, images, Binder/Colab "
            "links, widget fallbacks, collapsed solutions, no JavaScript errors) and write a "
            "screenshot of each to book/_build/<variant>/screenshots/."
        )
    )
    parser.add_argument(
        "--variant",
        choices=sorted(build_book.VARIANTS),
        default="full",
        help="which build to check: full (make book) or quick (make book-quick); default full",
    )
    parser.add_argument(
        "--install-browser",
        action="store_true",
        help="apt-get install chromium chromium-driver when /usr/bin/chromium is missing",
    )
    parser.add_argument(
        "--strict-external",
        action="store_true",
        help="fail when a page requests anything from another host (the book must read offline)",
    )
    args = parser.parse_args(argv)

    chromium = find_chromium()
    if chromium is None:
        if not args.install_browser:
            print(
                "chromium is not installed: run `apt-get install -y chromium chromium-driver` "
                "or pass --install-browser",
                file=sys.stderr,
            )
            return 2
        chromium = install_chromium()
    html = build_book.html_dir(args.variant)
    make_target = "make book" if args.variant == "full" else "make book-quick"
    info_file = build_book.output_dir(args.variant) / "build_info.json"
    if not (html / "index.html").exists() or not info_file.exists():
        print(f"no built book in {html}: run `{make_target}` first", file=sys.stderr)
        return 2
    info = json.loads(info_file.read_text(encoding="utf-8"))
    if info.get("exit_status") != 0:
        # Its HTML may be incomplete or stale: a pass here would mean nothing.
        print(
            f"the last {args.variant} build failed (exit status {info.get('exit_status')}): "
            f"fix the warnings it printed and run `{make_target}` again before this check",
            file=sys.stderr,
        )
        return 2
    pages = book_toc.toc_pages(REPO_ROOT / book_toc.TOC_PATH)
    out_dir = build_book.output_dir(args.variant)
    passed, results = run_check(html, pages, out_dir, chromium, args.strict_external)
    failed = [r.page for r in results if not r.ok]
    print(
        f"browser check {'passed' if passed else 'FAILED'}: {len(results) - len(failed)} of "
        f"{len(results)} pages ok; screenshots in {out_dir / 'screenshots'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
