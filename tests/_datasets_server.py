"""A local HTTP file server for the download tests (127.0.0.1 only, never the internet).

Each route serves bytes and can misbehave on purpose: drop the connection after some bytes,
ignore Range requests, or answer with a Google-Drive-like confirmation page first.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Route:
    """How one path is served.

    Attributes
    ----------
    body : bytes
        The file.
    drop_after : int or None
        Close the connection after sending this many body bytes...
    drops : int
        ...for this many requests (then serve normally).
    ranges : bool
        Honour ``Range: bytes=N-`` with 206 responses.
    content_type : str
        Content-Type of the file.
    confirm_page : bool
        Answer requests without ``confirm=`` in the query with an HTML page whose download form
        leads to the file (as Google Drive does for large files).
    html_only : bool
        Always answer with an HTML page without a download form.
    delay_s : float
        Wait this long before sending the body (lets two concurrent fetches overlap).
    content_length : bool
        Announce the size (Content-Length); False sends the body until the connection closes.
    """

    body: bytes
    drop_after: int | None = None
    drops: int = 0
    ranges: bool = True
    content_type: str = "application/octet-stream"
    confirm_page: bool = False
    html_only: bool = False
    delay_s: float = 0.0
    content_length: bool = True
    requests: list = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Route] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        route = self.routes.get(parts.path)
        if route is None:
            self.send_error(404)
            return
        route.requests.append({"path": self.path, "range": self.headers.get("Range")})
        query = parse_qs(parts.query)
        if route.html_only or (route.confirm_page and "confirm" not in query):
            page = b"<html><body><p>Google Drive can't scan this file for viruses.</p>"
            if not route.html_only:
                page += (b'<form id="download-form" action="' + parts.path.encode()
                         + b'" method="get"><input type="hidden" name="id" value="abc">'
                         b'<input type="hidden" name="confirm" value="t">'
                         b'<input type="hidden" name="uuid" value="u-1"></form>')
            page += b"</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        body, start = route.body, 0
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if m and route.ranges:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        if route.content_length:
            self.send_header("Content-Length", str(len(body) - start))
        else:
            self.close_connection = True  # HTTP/1.0: the body ends when the connection closes
        self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
        self.end_headers()
        payload = body[start:]
        if route.delay_s:
            time.sleep(route.delay_s)
        if route.drops > 0 and route.drop_after is not None:
            route.drops -= 1
            self.wfile.write(payload[: route.drop_after])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(payload)


class LocalServer:
    """Context manager running a threaded HTTP server on 127.0.0.1 with the given routes."""

    def __init__(self, routes: dict[str, Route]):
        handler = type("Handler", (_Handler,), {"routes": routes})
        self.routes = routes
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
