"""Shared by the benchmarks: a synthetic channel shaped like a real environment, served on loopback.

The shape is the default/linux-64 environment of pixi-pack's own ``pixi.lock`` (171 packages,
571 MB, the largest 183 MB): the same names, versions, builds, archive formats, noarch kinds,
dependencies and payload sizes. The payload is split into files of :data:`CHUNK` bytes, one in
two random (incompressible, like compressed data or media) and one in two text-like (a few hundred
words drawn at random: it compresses about as well as source code), so the archives are about
half the real ones' size, as with real packages whose contents partly compress. The packages are
real: built with the project's fixture builder (``tests/support/packages.py``), installable by
conda and rattler.

``scale=3`` builds the same shape three times over (every package also as ``<name>-x1`` and
``<name>-x2``), to check that time and memory grow linearly with the environment.

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
CHANNEL_VERSION: Final[int] = 4

#: Size of the pool the text-like files are cut from (large against zstd's window at level 1).
TEXT_POOL: Final[int] = 16 << 20


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


def _text_pool() -> bytes:
    """Text that compresses like source code (~3x with zstd -1): words of a small vocabulary at random."""
    import random

    rng = random.Random(4)
    letters = "etaoinshrdlucmfwypvbgkqjxz_"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))).encode() for _ in range(512)]
    words += [b"\n", b"    ", b"(", b"): ", b" = ", b"."]
    out = bytearray()
    while len(out) < TEXT_POOL:
        out += b" ".join(rng.choices(words, k=4096))
    return bytes(out[:TEXT_POOL])


def _content(index: int, size: int, pool: bytes) -> bytes:
    """File ``index`` of a package: random bytes for even indexes, a slice of text for odd ones."""
    if index % 2 == 0 or size > len(pool):
        return os.urandom(size)
    start = int.from_bytes(os.urandom(4), "big") % (len(pool) - size + 1)
    return pool[start : start + size]


def _spec(record: dict[str, object], staging: Path, pool: bytes) -> object:
    """A fixture-builder spec for one real record: same identity, mixed content of about its size."""
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
        path.write_bytes(_content(index, max(chunk, 1), pool))
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


def _scaled(records: list[dict[str, object]], scale: int) -> list[dict[str, object]]:
    """``records``, plus ``scale - 1`` renamed copies of each (``<name>-x1``...), same sizes."""
    result = list(records)
    for copy in range(1, scale):
        for record in records:
            name = f"{record['name']}-x{copy}"
            renamed = dict(record, name=name)
            renamed["fn"] = str(record["fn"]).replace(f"{record['name']}-", f"{name}-", 1)
            result.append(renamed)
    return result


def ensure_channel(bench_dir: Path = BENCH_DIR, scale: int = 1) -> Path:
    """Build the channel under ``bench_dir/channel`` (``channel-x3`` for ``scale=3``) unless a
    complete one is there; return it."""
    from tests.support.packages import build_package

    channel = bench_dir / ("channel" if scale == 1 else f"channel-x{scale}")
    marker = channel / "complete.json"
    if marker.is_file() and json.loads(marker.read_text()).get("version") == CHANNEL_VERSION:
        return channel
    shutil.rmtree(channel, ignore_errors=True)
    channel.mkdir(parents=True)
    started = time.perf_counter()
    records = _scaled(real_records(), scale)
    pool = _text_pool()
    repodata: dict[str, dict[str, dict[str, object]]] = {}
    print(f"building the synthetic channel in {channel} ({len(records)} packages)...", flush=True)
    for record in records:
        with tempfile.TemporaryDirectory(dir=bench_dir) as staging:
            path = build_package(_spec(record, Path(staging), pool), channel)  # type: ignore[arg-type]
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


#: Listen backlog of the in-thread server: socketserver's default of 5 overflows when 50
#: connections open at once (the kernel drops SYNs; see benchmarks/README.md). nginx's is 511.
BACKLOG: Final[int] = 1024


class Server:
    """A loopback HTTP server for ``directory`` on an ephemeral port, in a daemon thread."""

    def __init__(self, directory: Path) -> None:
        from serve_channel import make_server

        self._httpd = make_server(str(directory), 0, BACKLOG)
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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine_note(runs: int) -> str:
    """Where and how the figures were taken, printed under each table."""
    return (
        f"Median of {runs} runs; peak RSS is the largest of any run. {os.cpu_count()} CPUs "
        f"({_cpu_model()}, {platform.machine()}, Linux {platform.release()}), "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end, "
        "servers on loopback, files in the page cache."
    )


#: The memory file system the runs' outputs go to by default (see :func:`runs_dir`).
MEMORY_FS: Final = Path("/dev/shm")


def runs_dir(requested: Path | None, fallback: Path, room: int) -> Path:
    """Where the timed runs write: ``requested``, else a new folder on the memory file system when
    it has ``room`` bytes free, else ``fallback``.

    Why not the disk: this machine's is ext4 without a journal, where the kernel checks every new
    inode against those deleted in the last minute (``recently_deleted`` in its allocator); runs
    that delete thousands of files (prefixes) each paid for the previous one's, by an amount that
    varied from run to run and side to side (see :func:`file_system`).
    """
    if requested is not None:
        return requested
    try:
        if os.access(MEMORY_FS, os.W_OK) and shutil.disk_usage(MEMORY_FS).free >= room:
            return MEMORY_FS / f"conda-pixi-pack-bench-{os.getpid()}"
    except OSError:
        pass
    return fallback


def file_system(path: Path) -> str:
    """The type of the file system holding ``path`` and, for ext4, whether it has a journal
    (without one, the kernel makes each new file wait on the files deleted in the last minute,
    which the baseline's folder of packages pays for, run after run): read from /proc/mounts."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "file system unknown"
    target = os.path.realpath(path)
    best = max(
        (m for m in mounts if len(m) > 3 and (target + "/").startswith(m[1].rstrip("/") + "/")),
        key=lambda m: len(m[1]),
        default=None,
    )
    if best is None:
        return "file system unknown"
    device, kind = best[0], best[2]
    if kind != "ext4":
        return kind
    journal = _ext4_journal(device)
    return "ext4" if journal is None else f"ext4 {'with' if journal else 'without'} a journal"


def _ext4_journal(device: str) -> bool | None:
    """Whether the ext4 file system on ``device`` has a journal (``/sys/fs/ext4/<dev>/journal_task``
    names its thread, ``<none>`` without one); None when that cannot be told."""
    try:
        task = (Path("/sys/fs/ext4") / Path(os.path.realpath(device)).name / "journal_task").read_text()
    except OSError:
        return None
    return task.strip() not in ("", "<none>")


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
