"""A real HTTP server on 127.0.0.1 that serves a channel folder and misbehaves on request.

Each fault is scoped to one relative path (``"linux-64/a-1.0-0.conda"``), so one test can make
a single package fail while the rest of the channel stays healthy.
"""

from __future__ import annotations

import base64
import json
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from types import TracebackType

#: Bytes per write when streaming a file.
CHUNK: Final[int] = 64 * 1024

#: Byte table that inverts every byte: same length, certainly different content.
_INVERT: Final[bytes] = bytes(range(255, -1, -1))

#: The self-signed certificate (its own CA) and key of ``ChannelServer(root, tls=True)``.
TLS_CERT: Final[Path] = Path(__file__).resolve().parent / "tls" / "cert.pem"
TLS_KEY: Final[Path] = Path(__file__).resolve().parent / "tls" / "key.pem"


def write_auth_file(path: Path, user: str = "u", password: str = "p") -> Path:
    """Write a rattler/pixi auth file (``--auth-file``, ``RATTLER_AUTH_FILE``) for any server on
    127.0.0.1; with a file naming the host, a pack downloads through rattler's client.

    rattler keys credentials by host name **without** the port (a ``127.0.0.1:<port>`` key
    is ignored), so the file holds ``{"127.0.0.1": {"BasicHTTP": {...}}}``.
    """
    path = Path(path)
    credentials = {"BasicHTTP": {"username": user, "password": password}}
    path.write_text(json.dumps({"127.0.0.1": credentials}, indent=2))
    return path


class ChannelServer:
    """Serve ``root`` over HTTP on an ephemeral port; use as a context manager.

    ``url`` has no trailing slash. ``requests`` lists the relative paths asked for (GET and
    HEAD, in order), e.g. to assert that a cache hit made no request.
    """

    def __init__(self, root: Path, *, tls: bool = False) -> None:
        self.root = Path(root).resolve()
        self.tls = tls
        self._lock = threading.Lock()
        self._requests: list[str] = []
        self._log: list[tuple[str, str, int]] = []
        self._auth: str | None = None
        self._forbidden: set[str] = set()
        self._failures: dict[str, list[int]] = {}
        self._corrupt: set[str] = set()
        self._drops: dict[str, int] = {}
        self._redirects: dict[str, tuple[int, str]] = {}
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        if tls:
            self._httpd.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._httpd.tls.load_cert_chain(TLS_CERT, TLS_KEY)
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> ChannelServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="channel-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ChannelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url_for(self, relpath: str) -> str:
        """Absolute URL of a file below ``root``."""
        return f"{self.url}/{relpath.lstrip('/')}"

    # -- behaviour -----------------------------------------------------------------------------
    def require_auth(self, user: str, password: str) -> None:
        """Answer 401 to every request without these Basic credentials."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        with self._lock:
            self._auth = f"Basic {token}"

    def write_auth_file(self, path: Path, user: str, password: str) -> Path:
        """Write a rattler/pixi auth file for this server (see :func:`write_auth_file`)."""
        return write_auth_file(path, user, password)

    def forbid(self, relpath: str) -> None:
        """Answer 403 for this path."""
        with self._lock:
            self._forbidden.add(_norm(relpath))

    def fail_once(self, relpath: str, status: int = 503, *, times: int = 1) -> None:
        """Answer ``status`` for the next ``times`` requests of this path, then serve it."""
        with self._lock:
            self._failures.setdefault(_norm(relpath), []).extend([status] * times)

    def corrupt(self, relpath: str) -> None:
        """Serve this path with the right length but wrong bytes (every byte inverted)."""
        with self._lock:
            self._corrupt.add(_norm(relpath))

    def drop(self, relpath: str, times: int = 1) -> None:
        """For the next ``times`` requests: send the headers and half the body, then close."""
        with self._lock:
            self._drops[_norm(relpath)] = self._drops.get(_norm(relpath), 0) + times

    def redirect(self, relpath: str, location: str, status: int = 302) -> None:
        """Answer ``status`` with ``Location: location`` for this path (a URL or a path)."""
        with self._lock:
            self._redirects[_norm(relpath)] = (status, location)

    def reset(self) -> None:
        """Forget every fault, the credentials and the request log."""
        with self._lock:
            self._redirects.clear()
            self._auth = None
            self._forbidden.clear()
            self._failures.clear()
            self._corrupt.clear()
            self._drops.clear()
            self._requests.clear()
            self._log.clear()

    @property
    def requests(self) -> list[str]:
        """Relative paths requested so far (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def log(self) -> list[tuple[str, str, int]]:
        """``(method, relpath, status)`` of every answered request (a copy)."""
        with self._lock:
            return list(self._log)

    def count(self, relpath: str) -> int:
        """How many times this path was requested."""
        return self.requests.count(_norm(relpath))

    # -- used by the handler -------------------------------------------------------------------
    def _decide(self, relpath: str, authorization: str | None) -> tuple[int, str]:
        """Status and mode (``ok``/``corrupt``/``drop``) for one request; records it."""
        with self._lock:
            self._requests.append(relpath)
            if self._auth is not None and authorization != self._auth:
                return HTTPStatus.UNAUTHORIZED, "error"
            if relpath in self._forbidden:
                return HTTPStatus.FORBIDDEN, "error"
            if relpath in self._redirects:
                return self._redirects[relpath][0], "redirect"
            failures = self._failures.get(relpath)
            if failures:
                return failures.pop(0), "error"
            target = self._resolve(relpath)
            if target is None:
                return HTTPStatus.NOT_FOUND, "error"
            if self._drops.get(relpath, 0) > 0:
                self._drops[relpath] -= 1
                return HTTPStatus.OK, "drop"
            if relpath in self._corrupt:
                return HTTPStatus.OK, "corrupt"
            return HTTPStatus.OK, "ok"

    def _resolve(self, relpath: str) -> Path | None:
        target = (self.root / relpath).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target

    def _record(self, method: str, relpath: str, status: int) -> None:
        with self._lock:
            self._log.append((method, relpath, int(status)))


class _QuietServer(ThreadingHTTPServer):
    """Daemon handler threads; a client that hangs up mid-body (a cancelled download) is normal.

    With ``tls`` set, each connection is wrapped in TLS in its handler's thread (a client that
    refuses the certificate ends only its own connection).
    """

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: object, client_address: object) -> None:
        if self.tls is not None:
            request = self.tls.wrap_socket(request, server_side=True)  # type: ignore[arg-type]
        super().finish_request(request, client_address)  # type: ignore[arg-type]

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _norm(relpath: str) -> str:
    return unquote(urlsplit(relpath).path).lstrip("/")


def _handler_for(server: ChannelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: tests read ``server.log`` instead."""

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            relpath = _norm(self.path)
            status, mode = server._decide(relpath, self.headers.get("Authorization"))
            server._record(self.command, relpath, status)
            if mode == "error":
                self._error(status)
                return
            if mode == "redirect":
                self.send_response(status)
                self.send_header("Location", server._redirects[relpath][1])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            target = server._resolve(relpath)
            assert target is not None
            size = target.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header(
                "Content-Type", "application/json" if target.suffix == ".json" else "application/octet-stream"
            )
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if not body:
                return
            limit = size // 2 if mode == "drop" else size
            sent = 0
            with target.open("rb") as handle:
                while sent < limit:
                    chunk = handle.read(min(CHUNK, limit - sent))
                    if not chunk:
                        break
                    if mode == "corrupt":
                        chunk = chunk.translate(_INVERT)
                    self.wfile.write(chunk)
                    sent += len(chunk)
            if mode == "drop":
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

        def _error(self, status: int) -> None:
            body = (
                f"{status} {HTTPStatus(status).phrase}\n".encode()
                if status in HTTPStatus._value2member_map_
                else b"error\n"
            )
            self.send_response(status)
            if status == HTTPStatus.UNAUTHORIZED:
                self.send_header("WWW-Authenticate", 'Basic realm="fixture channel"')
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler
