"""Shared by the benchmarks: a synthetic channel shaped like a real environment, served on loopback.

The shape is the default/linux-64 environment of pixi-pack's own ``pixi.lock`` (171 packages,
571 MB, the largest 183 MB): the same names, versions, builds, archive formats, noarch kinds,
dependencies and (within a few hundred bytes) file sizes. The contents are random, so they do not
compress, and are split into files of :data:`CHUNK` bytes. The packages are real: built with the
project's fixture builder (``tests/support/packages.py``), installable by conda and rattler.

The channel is built once into ``$CONDA_PIXI_PACK_BENCH_DIR`` (default
``/tmp/conda-pixi-pack-bench``) and reused; delete that folder to rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

#: The project root (benchmarks/ is one level below it).
ROOT: Final[Path] = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The real lock whose default/linux-64 environment the synthetic channel imitates.
REAL_LOCK: Final[Path] = (ROOT / "../shared/fixtures/real-lockfiles/pixi-pack-repo/pixi.lock").resolve()

#: Where the channel, packs and environments go (several GB while running; outside git).
BENCH_DIR: Final[Path] = Path(os.environ.get("CONDA_PIXI_PACK_BENCH_DIR", "/tmp/conda-pixi-pack-bench"))

#: Where the markdown tables are written (gitignored).
RESULTS_DIR: Final[Path] = ROOT / "bench-results"

#: Size of each random file inside a package: a realistic number of files to link (~4,500).
CHUNK: Final[int] = 128 * 1024

#: Archive bytes that are not payload, estimated per package and per file, so sizes match the real ones.
BASE_OVERHEAD: Final[int] = 1800
FILE_OVERHEAD: Final[int] = 560

#: Bump when the channel's shape changes, so that an old cached channel is rebuilt.
CHANNEL_VERSION: Final[int] = 3


@dataclass(frozen=True)
class Measurement:
    """One timed run of a command."""

    seconds: float
    max_rss: int  # bytes, the largest process of the command's tree


def real_records() -> list[dict[str, object]]:
    """The default/linux-64 records of :data:`REAL_LOCK`, as repodata JSON."""
    import rattler

    if not REAL_LOCK.is_file():
        sys.exit(f"error: {REAL_LOCK} is missing (the shared fixtures hold the lock the benchmark imitates)")
    environment = rattler.LockFile.from_path(REAL_LOCK).environment("default")
    (linux,) = [p for p in environment.platforms() if p.name == "linux-64"]
    return [json.loads(r.to_json()) for r in environment.conda_repodata_records_for_platform(linux)]


def _spec(record: dict[str, object], staging: Path) -> object:
    """A fixture-builder spec for one real record: same identity, random content of about its size."""
    from tests.support.packages import PackageSpec

    size = int(record["size"])  # type: ignore[arg-type]
    files: dict[str, object] = {}
    payload = max(size - BASE_OVERHEAD, 64)
    count = max(1, -(-payload // (CHUNK + FILE_OVERHEAD)))
    payload = max(payload - count * FILE_OVERHEAD, 64)
    noarch = record.get("noarch")
    name = str(record["name"])
    root = f"site-packages/{name}" if noarch == "python" else f"share/{name}"
    for index in range(count):
        chunk = min(CHUNK, payload - index * CHUNK) if index < count - 1 else payload - (count - 1) * CHUNK
        path = staging / f"{index:05d}.bin"
        path.write_bytes(os.urandom(max(chunk, 1)))
        files[f"{root}/data-{index:05d}.bin"] = path
    file_name = str(record["fn"])
    spec = PackageSpec(
        name=name,
        version=str(record["version"]),
        build=str(record["build"]),
        build_number=int(record.get("build_number", 0)),  # type: ignore[arg-type]
        subdir=str(record["subdir"]),
        noarch=noarch,  # type: ignore[arg-type]
        depends=list(record.get("depends", [])),  # type: ignore[arg-type]
        constrains=list(record.get("constrains", [])),  # type: ignore[arg-type]
        files=files,  # type: ignore[arg-type]
        fmt="tar.bz2" if file_name.endswith(".tar.bz2") else "conda",
        license=str(record.get("license") or "") or None,
        compression_level=1,
    )
    # The builder files every noarch package under noarch/; some real ones (abi3 builds) are not.
    spec.subdir = str(record["subdir"])
    return spec


def _digests(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def ensure_channel(bench_dir: Path = BENCH_DIR) -> Path:
    """Build the channel under ``bench_dir/channel`` unless a complete one is there; return it."""
    from tests.support.packages import build_package

    channel = bench_dir / "channel"
    marker = channel / "complete.json"
    if marker.is_file() and json.loads(marker.read_text()).get("version") == CHANNEL_VERSION:
        return channel
    shutil.rmtree(channel, ignore_errors=True)
    channel.mkdir(parents=True)
    started = time.perf_counter()
    records = real_records()
    repodata: dict[str, dict[str, dict[str, object]]] = {}
    print(f"building the synthetic channel in {channel} ({len(records)} packages)...", flush=True)
    for record in records:
        with tempfile.TemporaryDirectory(dir=bench_dir) as staging:
            path = build_package(_spec(record, Path(staging)), channel)  # type: ignore[arg-type]
        sha256, md5 = _digests(path)
        synthetic = {k: v for k, v in record.items() if k not in ("url", "channel", "fn")}
        synthetic.update(sha256=sha256, md5=md5, size=path.stat().st_size)
        key = "packages.conda" if path.name.endswith(".conda") else "packages"
        repodata.setdefault(str(record["subdir"]), {}).setdefault(key, {})[path.name] = synthetic
    for subdir, packages in repodata.items():
        document = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1}
        document.update(packages)
        (channel / subdir / "repodata.json").write_text(json.dumps(document, indent=1, sort_keys=True))
    total = sum(p.stat().st_size for p in channel.glob("*/*") if p.name != "repodata.json")
    marker.write_text(json.dumps({"version": CHANNEL_VERSION, "packages": len(records), "bytes": total}))
    print(f"built in {time.perf_counter() - started:.0f} s: {total / 1e6:.0f} MB", flush=True)
    return channel


def channel_summary(channel: Path) -> str:
    """One line describing the channel, for the tables."""
    info = json.loads((channel / "complete.json").read_text())
    largest = max(p.stat().st_size for p in channel.glob("*/*") if p.name != "repodata.json")
    return f"{info['packages']} packages, {info['bytes'] / 1e6:.0f} MB, the largest {largest / 1e6:.0f} MB"


def records(channel_url: str, channel: Path) -> list[object]:
    """The channel's records as py-rattler ``RepoDataRecord``s whose URLs start with ``channel_url``."""
    import rattler

    result: list[object] = []
    for subdir in sorted(p.parent for p in channel.glob("*/repodata.json")):
        repodata = rattler.RepoData.from_path(subdir / "repodata.json")
        result.extend(repodata.into_repo_data(rattler.Channel(channel_url)))
    return sorted(result, key=lambda r: r.name.normalized)  # type: ignore[attr-defined]


def write_project(project: Path, channel_url: str, channel: Path) -> Path:
    """A ``pixi.toml`` and a ``pixi.lock`` (py-rattler ``LockFile``) locking every package of the channel."""
    import rattler

    project.mkdir(parents=True, exist_ok=True)
    platform_ = rattler.LockPlatform("linux-64")
    lock = rattler.LockFile([platform_])
    lock.set_channels("default", [rattler.LockChannel(channel_url)])
    for record in records(channel_url, channel):
        lock.add_conda_package("default", platform_, record)  # type: ignore[arg-type]
    lock.to_path(project / "pixi.lock")
    (project / "pixi.toml").write_text(
        f'[workspace]\nname = "bench"\nchannels = ["{channel_url}"]\nplatforms = ["linux-64"]\n'
    )
    return project


class _Handler(SimpleHTTPRequestHandler):
    """Static files with ``sendfile``: the server must not be the bottleneck on a 2-core machine."""

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        try:
            self.connection.sendfile(source)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ThreadingServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a listen backlog fit for 50 parallel clients.

    socketserver's default backlog is 5: with 50 connections opened at once the kernel drops
    SYNs (``ListenOverflows``), and the client's retransmission after 1 s, 3 s... made one
    fetch of the same files take 1.9 s or 7.8 s at random. nginx's default is 511.
    """

    request_queue_size = 1024
    daemon_threads = True


class Server:
    """A loopback HTTP server for ``directory`` on an ephemeral port, in a daemon thread."""

    def __init__(self, directory: Path) -> None:
        self._httpd = _ThreadingServer(("127.0.0.1", 0), partial(_Handler, directory=str(directory)))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def run_measured(
    command: Sequence[str | os.PathLike[str]], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Measurement:
    """Run ``command``, return its wall time and peak RSS (``wait4``), fail loudly if it fails.

    ``wait4`` reports the largest RSS of the child and of the descendants it waited for, so a
    ``bash -c`` pipeline reports its biggest process.
    """
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            [os.fspath(c) for c in command],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"error: {' '.join(map(str, command))} exited {process.returncode}:\n{tail}")
    return Measurement(seconds, usage.ru_maxrss * 1024)


def median_time(measurements: Sequence[Measurement]) -> float:
    return statistics.median(m.seconds for m in measurements)


def peak_rss(measurements: Sequence[Measurement]) -> int:
    return max(m.max_rss for m in measurements)


def machine_note(runs: int) -> str:
    """Where and how the figures were taken, printed under each table."""
    return (
        f"Median of {runs} runs; peak RSS is the largest of any run. {os.cpu_count()} CPUs "
        f"({platform.machine()}, Linux {platform.release()}), Python {platform.python_version()}, "
        f"loopback HTTP server with sendfile, files in the page cache."
    )


def write_results(name: str, markdown: str) -> Path:
    """Print the table and keep it in ``bench-results/<name>.md``."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(markdown)
    print(markdown)
    print(f"(written to {path.relative_to(ROOT)})")
    return path


def row(*cells: object) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def verdict(value: float, target: float) -> str:
    return "yes" if value <= target else "**no**"
