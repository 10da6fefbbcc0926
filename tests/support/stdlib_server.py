"""Servers as users run them, on 127.0.0.1: ``python -m http.server``, a silent one, a proxy.

- :class:`StdlibServer`: what ``python -m http.server`` runs (``ThreadingHTTPServer`` and
  ``SimpleHTTPRequestHandler``: HTTP/1.0, a new connection per file), with its listen backlog as
  a parameter (socketserver's default is 5).
- :class:`SilentListener`: accepts connections and never answers (a hung server or proxy).
- :class:`FullListener`: never accepts, its queue full: a new connection gets no answer at all.
- :class:`ForwardProxy`: an HTTP proxy for plain-HTTP URLs, recording what it was asked.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Running:
    """A ``ThreadingHTTPServer`` serving in a daemon thread until :meth:`close`."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> _Running:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class StdlibServer(_Running):
    """``python -m http.server --directory root`` on an ephemeral port, with listen ``backlog``."""

    def __init__(self, root: Path, backlog: int = 5) -> None:
        class Server(ThreadingHTTPServer):
            request_queue_size = backlog
            daemon_threads = True

        super().__init__(Server(("127.0.0.1", 0), partial(_Quiet, directory=str(root))))


class SilentListener:
    """Accepts every connection and holds it open without reading or answering."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        #: Kept after ``close``: the URL of a port nobody listens on any more.
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(connection)

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        for connection in self._held:
            connection.close()


class FullListener:
    """A listener that never accepts, with its accept queue filled (``listen(0)`` holds one):
    the kernel drops every further SYN, so connecting hangs until the client gives up."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._queued = socket.create_connection(self._sock.getsockname()[:2], timeout=5)

    def close(self) -> None:
        self._queued.close()
        self._sock.close()


class ForwardProxy(_Running):
    """An HTTP proxy (absolute-URI GETs, plain HTTP only); ``requested`` lists the URLs asked."""

    def __init__(self) -> None:
        self.requested: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requested.append(self.path)
                direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                try:
                    with direct.open(self.path) as upstream:
                        status, data = upstream.status, upstream.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        super().__init__(httpd)
