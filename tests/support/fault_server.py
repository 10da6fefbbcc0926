"""An HTTP server on 127.0.0.1 that plays a script of faults per path, for the fault suite.

:class:`tests.support.server.ChannelServer` has one fault at a time per path; a fault case often
needs a sequence ("503, 503, then the file") or a fault it lacks (a connection reset mid-body, a
clean close short of ``Content-Length``, an HTML page with 200). Each request of a path takes the
next fault of its script; once the script is used up the path is served normally, unless a fault
was set with :meth:`FaultServer.always`. ``delay`` (before the headers) and ``chunk_delay``
(between 64 KiB chunks) make a slow server; ``peak`` is the most requests in flight at once.
With ``tls`` it serves HTTPS with the certificate of ``server.TLS_CERT``: a close then ends the
TCP stream without TLS's closing message, as a dropped connection does.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

from tests.support.server import TLS_CERT, TLS_KEY

if TYPE_CHECKING:
    from types import TracebackType

#: Bytes per write when streaming a file.
CHUNK: Final = 64 * 1024
#: What each fault does; ``ok`` serves the file. ``chunked`` and ``until-close`` serve it whole
#: in the other two framings of HTTP/1.1 (``Transfer-Encoding: chunked``; no length, the end of
#: the body is the connection's close), which a client must read as well as ``Content-Length``.
#: ``stall`` sends half the body, then nothing for :data:`STALL_SECONDS` (the connection open).
FAULTS: Final = ("ok", "503", "reset", "short", "corrupt", "html", "chunked", "until-close", "stall")
#: How long a ``stall`` keeps silent before it closes the connection (seconds).
STALL_SECONDS: Final = 10.0
#: The page a captive portal or a misconfigured proxy answers with, status 200.
HTML_PAGE: Final = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
    b"<body><p>Please sign in to continue.</p></body></html>\n"
)


class FaultServer:
    """Serve ``root`` on an ephemeral port of 127.0.0.1, with scripted faults per relative path."""

    def __init__(
        self, root: Path, *, delay: float = 0.0, chunk_delay: float = 0.0, tls: bool = False
    ) -> None:
        self.root = Path(root).resolve()
        self.tls = tls
        self.delay, self.chunk_delay = delay, chunk_delay
        self._lock = threading.Lock()
        self._scripts: dict[str, list[str]] = {}
        self._always: dict[str, str] = {}
        self._requests: list[str] = []
        self.in_flight = self.peak = 0
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read ``requests`` instead."""

            def do_GET(self) -> None:
                with outer._lock:
                    outer.in_flight += 1
                    outer.peak = max(outer.peak, outer.in_flight)
                try:
                    outer._serve(self)
                except (ConnectionError, TimeoutError):  # the client gave up: normal under faults
                    self.close_connection = True
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_CERT, TLS_KEY)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # 50 parallel downloads connect at once

            def finish_request(self, request: object, client_address: object) -> None:
                if context is not None:  # in the handler's thread: a failed handshake ends only it
                    request = context.wrap_socket(request, server_side=True)  # type: ignore[arg-type]
                super().finish_request(request, client_address)  # type: ignore[arg-type]

            def handle_error(self, request: object, client_address: object) -> None:
                """Quiet: a client hanging up on a faulty answer is what the tests provoke."""

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- configuration -----------------------------------------------------------------------------
    def script(self, relpath: str, *faults: str) -> None:
        """The next requests of ``relpath`` get these faults in turn, then the file."""
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        with self._lock:
            self._scripts.setdefault(_norm(relpath), []).extend(faults)

    def always(self, relpath: str, fault: str) -> None:
        """Every request of ``relpath`` (after its script) gets ``fault``."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._always[_norm(relpath)] = fault

    def clear(self) -> None:
        """Forget every fault and the request log."""
        with self._lock:
            self._scripts.clear()
            self._always.clear()
            self._requests.clear()
            self.peak = self.in_flight

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._httpd.server_address[1]}"

    def count(self, relpath: str) -> int:
        """How many times ``relpath`` was requested."""
        with self._lock:
            return self._requests.count(_norm(relpath))

    @property
    def requests(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- serving -------------------------------------------------------------------------------
    def _next_fault(self, relpath: str) -> str:
        with self._lock:
            self._requests.append(relpath)
            script = self._scripts.get(relpath)
            if script:
                return script.pop(0)
            return self._always.get(relpath, "ok")

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        relpath = _norm(handler.path)
        fault = self._next_fault(relpath)
        if self.delay:
            time.sleep(self.delay)
        target = (self.root / relpath).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            _answer(handler, 404, b"not found\n", "text/plain")
            return
        if fault == "503":
            _answer(handler, 503, b"503 Service Unavailable\n", "text/plain")
            return
        if fault == "html":
            _answer(handler, 200, HTML_PAGE, "text/html; charset=utf-8")
            return
        data = target.read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        if fault == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
        elif fault == "until-close":
            handler.send_header("Connection", "close")
            handler.close_connection = True
        else:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if fault == "chunked":
            for start in range(0, len(data), CHUNK):
                piece = data[start : start + CHUNK]
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
            return
        if fault == "corrupt":
            data = bytes(255 - b for b in data)  # same length, every byte wrong
        cut = len(data) // 2 if fault in ("reset", "short", "stall") else len(data)
        view = memoryview(data)[:cut]
        for start in range(0, len(view), CHUNK):
            if self._stop.is_set():
                return
            if start and self.chunk_delay:
                handler.wfile.flush()
                time.sleep(self.chunk_delay)
            handler.wfile.write(view[start : start + CHUNK])
        handler.wfile.flush()
        if fault == "stall":  # silence, the connection open, until the client gives up or we stop
            self._stop.wait(STALL_SECONDS)
            handler.close_connection = True
        elif fault == "reset":  # RST: SO_LINGER with a zero timeout makes close() abort
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.close_connection = True
            handler.connection.close()
        elif fault in ("short", "until-close"):  # FIN: the end of the stream
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_WR)


def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _norm(relpath: str) -> str:
    return unquote(urlsplit(relpath).path).lstrip("/")
