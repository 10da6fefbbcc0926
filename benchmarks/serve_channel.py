"""Serve a folder over HTTP on 127.0.0.1: ``http.server``, threaded, with ``sendfile`` and a
chosen listen backlog. ``python serve_channel.py DIR PORT BACKLOG`` runs until terminated;
``synthetic.Server`` runs the same server in a thread.

The benchmark's "well-configured ``http.server``": with socketserver's default backlog of 5,
50 connections opened at once overflow the listen queue (see benchmarks/README.md); 1024 does
not. ``sendfile`` keeps this server off the GIL while it sends, so that it is not the limit.
"""

from __future__ import annotations

import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    """Static files with ``sendfile``: the server must not be the bottleneck on a 2-core machine."""

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        try:
            self.connection.sendfile(source)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_server(directory: str, port: int, backlog: int) -> ThreadingHTTPServer:
    """The server for ``directory`` on ``127.0.0.1:port`` (0: any free port)."""

    class Server(ThreadingHTTPServer):
        request_queue_size = backlog
        daemon_threads = True

    return Server(("127.0.0.1", port), partial(Handler, directory=directory))


def main() -> None:
    make_server(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])).serve_forever()


if __name__ == "__main__":
    main()
