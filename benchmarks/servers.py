"""The servers the pack benchmark fetches from, each run as its user would run it, on loopback.

- nginx (Debian's ``nginx-light``, found on PATH or in ``/usr/sbin``) with a Debian-like default
  configuration (``worker_processes auto``, ``sendfile on``, ``tcp_nopush on``), over plain
  HTTP/1.1 and over HTTPS with HTTP/2 (a throwaway self-signed certificate written with
  ``openssl``; clients trust it through ``SSL_CERT_FILE`` / ``--cacert``, as a user would);
- ``python -m http.server`` itself (threaded, HTTP/1.0, listen backlog 5);
- the same ``http.server`` with a backlog of 1024 and ``sendfile`` (``serve_channel.py``).

Every server is a process of its own, started here and stopped by its process id. A server
whose program is missing is not installed: :class:`Unavailable` says why, and the benchmark
shows the row as skipped with that reason.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from types import TracebackType

#: The script that serves a folder with a large backlog and sendfile.
SERVE_SCRIPT: Final = Path(__file__).resolve().parent / "serve_channel.py"
#: Seconds a server gets to start listening.
START_TIMEOUT: Final = 10.0


class Unavailable(Exception):
    """A server that cannot run on this machine; the message says what to install."""


@dataclass
class Running:
    """A started server: its base URL, and what clients need to trust it (HTTPS)."""

    url: str
    process: subprocess.Popen[bytes]
    #: A CA file for ``SSL_CERT_FILE`` and ``curl --cacert`` (HTTPS only).
    ca_file: Path | None = None
    log: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def __enter__(self) -> Running:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stop(self.process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server this module started (nginx's master stops its workers on SIGTERM)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise SystemExit(f"error: the server exited at start ({process.returncode}):\n{detail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    stop(process)
    raise SystemExit(f"error: the server did not listen on port {port} within {START_TIMEOUT:g} s")


def python_http_server(directory: Path) -> Running:
    """``python -m http.server --bind 127.0.0.1 --directory DIR PORT``, exactly as users run it."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(port, process, None)
    return Running(f"http://127.0.0.1:{port}/", process)


def large_backlog_server(directory: Path) -> Running:
    """The threaded ``http.server`` with a listen backlog of 1024 and ``sendfile``."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVE_SCRIPT), str(directory), str(port), "1024"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(port, process, None)
    return Running(f"http://127.0.0.1:{port}/", process)


def nginx_program() -> str:
    """The nginx executable, or :class:`Unavailable` saying how to get it."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise Unavailable("nginx is not installed (Debian/Ubuntu: `apt-get install nginx-light`)")
    return found


def _nginx_version(program: str) -> tuple[int, ...]:
    output = subprocess.run([program, "-v"], capture_output=True, text=True).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", output)
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


def _certificate(work: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (two days), written with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise Unavailable("openssl is not installed, so no test certificate (`apt-get install openssl`)")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def nginx(directory: Path, work: Path, *, tls: bool) -> Running:
    """nginx serving ``directory``: HTTP/1.1, or HTTPS with HTTP/2 (``tls``)."""
    program = nginx_program()
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ca_file = None
    if tls:
        cert, key = _certificate(work)
        ca_file = cert
        http2_in_listen = _nginx_version(program) < (1, 25, 1)
        listen = f"listen 127.0.0.1:{port} ssl{' http2' if http2_in_listen else ''};"
        listen += "" if http2_in_listen else "\n    http2 on;"
        listen += f"\n    ssl_certificate {cert};\n    ssl_certificate_key {key};"
        listen += "\n    ssl_protocols TLSv1.2 TLSv1.3;"
    else:
        listen = f"listen 127.0.0.1:{port};"
    temp = "\n".join(
        f"  {kind}_temp_path {work / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (work / "nginx.conf").write_text(
        f"""worker_processes auto;
pid {work / "nginx.pid"};
error_log {work / "error.log"};
events {{ worker_connections 768; }}
http {{
  sendfile on;
  tcp_nopush on;
  types_hash_max_size 2048;
  default_type application/octet-stream;
  access_log off;
{temp}
  server {{
    {listen}
    root {directory};
  }}
}}
"""
    )
    log = work / "error.log"
    process = subprocess.Popen(
        [program, "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(port, process, log)
    scheme = "https" if tls else "http"
    return Running(f"{scheme}://127.0.0.1:{port}/", process, ca_file=ca_file, log=log)
