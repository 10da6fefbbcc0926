"""A deliberately slow HTTP server on 127.0.0.1 for download tests, and artifacts for its files.

Unlike :class:`tests.support.server.ChannelServer` (a channel on disk, with faults), it serves
in-memory files with delays and stalls and counts the requests in flight, to test parallelism,
stalls, Ctrl-C and concurrent writers of one cache.
"""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from conda_pixi_pack.artifacts import Artifact

if TYPE_CHECKING:
    from pathlib import Path


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


def artifact_for(data: bytes, url: str, name: str = "blob-1.0-0.conda", **overrides: object) -> Artifact:
    fields: dict[str, object] = {
        "url": url,
        "file_name": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": None,
        "size": len(data),
        "relative_path": f"linux-64/{name}",
        "label": name,
    }
    fields.update(overrides)
    return Artifact(**fields)  # type: ignore[arg-type]


class SlowServer:
    """Serves in-memory files slowly and records how many requests were in flight at once.

    ``delay`` seconds before the headers; ``hang`` paths send headers then stall forever
    (until closed); ``chunk_delay`` seconds between 64 KiB chunks.
    """

    def __init__(self, files: dict[str, bytes], delay: float = 0.0, chunk_delay: float = 0.0) -> None:
        self.files, self.delay, self.chunk_delay = files, delay, chunk_delay
        self.hang: dict[str, int] = {}
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with outer.lock:
                    outer.in_flight += 1
                    outer.peak = max(outer.peak, outer.in_flight)
                try:
                    outer.serve(self)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.lstrip("/")
        data = self.files.get(path)
        time.sleep(self.delay)
        if data is None:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        with self.lock:
            hang = self.hang.get(path, 0)
            self.hang[path] = max(hang - 1, 0)
        if hang:
            handler.wfile.write(data[:1000])
            handler.wfile.flush()
            self.stop.wait(30)
            return
        view = memoryview(data)
        for start in range(0, len(data), 65536):
            if self.stop.is_set():
                return
            handler.wfile.write(view[start : start + 65536])
            if self.chunk_delay:
                handler.wfile.flush()
                time.sleep(self.chunk_delay)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
