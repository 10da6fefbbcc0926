"""``pack`` against a misbehaving server, run as a user runs it: what is transient is retried into
the very pack a healthy server gives, what is not stops with one clear line and leaves nothing.

The single faults are tested on ``fetch_all`` in tests/pack/test_download.py; here the whole
command meets them, with a cache, and the next run after a failure must work.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import textwrap
import time
from typing import TYPE_CHECKING, Final

import pytest

from tests.faults.helpers import (
    CLI,
    ROOT,
    assert_cache_verified,
    cli_env,
    error_line,
    fake_packages,
    lost_bytes,
    run_cli,
    snapshot,
    temp_leftovers,
    write_fake_lock,
)
from tests.support.channel import record_for, write_lock, write_project
from tests.support.fault_server import STALL_SECONDS, FaultServer
from tests.support.server import TLS_CERT

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import Channel
    from tests.faults.conftest import Ledger

#: The packages of the project (the faulty one is ``prefixed``, the largest, so that half a body
#: is many chunks).
NAMES: Final = ("alpha", "beta", "prefixed", "noarch-data")
FAULTY: Final = "prefixed"


@pytest.fixture(scope="module")
def server(sample_channel: Channel) -> Iterator[FaultServer]:
    with FaultServer(sample_channel.root) as served:
        yield served


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, sample_channel: Channel, server: FaultServer) -> Path:
    return _write_project(tmp_path_factory.mktemp("network-project"), sample_channel, server)


def _write_project(folder: Path, channel: Channel, server: FaultServer) -> Path:
    """A pixi project in ``folder`` whose lock has the :data:`NAMES` packages from ``server``."""
    records = [
        record_for(channel.packages[n], f"{server.url}/{channel.relpath(n)}", channel=server.url)
        for n in NAMES
    ]
    write_lock(folder / "pixi.lock", records, channel=server.url)
    write_project(folder, channels=[server.url])
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, project: Path, server: FaultServer) -> bytes:
    """The pack a healthy server gives (no cache): every faulty run must give these bytes or none."""
    out = tmp_path_factory.mktemp("reference") / "environment.tar"
    done = run_cli("pack", str(project), "-p", "linux-64", "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


@pytest.fixture
def faults(server: FaultServer) -> Iterator[FaultServer]:
    server.clear()
    yield server
    server.clear()


def pack_command(project: Path, out: Path, cache: Path) -> list[str]:
    return ["pack", str(project), "-p", "linux-64", "-o", str(out), "--use-cache", str(cache), "-q"]


TRANSIENT = {
    "503-twice-then-200": (("503", "503"), 3),
    "reset-mid-body-once": (("reset",), 2),
    "short-of-content-length-once": (("short",), 2),
    "wrong-bytes-with-200-once": (("corrupt",), 2),
    "html-with-200-once": (("html",), 2),
}


@pytest.mark.parametrize(("script", "requests"), TRANSIENT.values(), ids=list(TRANSIENT))
def test_a_transient_fault_is_retried_into_the_same_pack(
    faults: FaultServer,
    project: Path,
    reference: bytes,
    sample_channel: Channel,
    tmp_path: Path,
    ledger: Ledger,
    script: tuple[str, ...],
    requests: int,
) -> None:
    relpath = sample_channel.relpath(FAULTY)
    faults.script(relpath, *script)
    out, cache = tmp_path / "out" / "environment.tar", tmp_path / "cache"
    out.parent.mkdir()
    done = run_cli(*pack_command(project, out, cache), env=cli_env(tmp_path / "tmp"))
    assert done.returncode == 0, done.stderr
    produced = out.read_bytes()
    ledger.lose(0 if produced == reference else len(reference))
    assert produced == reference
    assert faults.count(relpath) == requests
    assert temp_leftovers(tmp_path) == []
    assert_cache_verified(cache, project)


def test_a_body_that_stops_midway_is_given_up_after_the_read_timeout_and_retried(
    faults: FaultServer,
    project: Path,
    reference: bytes,
    sample_channel: Channel,
    tmp_path: Path,
) -> None:
    """Half the body, then silence with the connection open: the read timeout of ``--config``
    ends the wait (not the server's own close), the file is asked again, the pack is whole."""
    relpath = sample_channel.relpath(FAULTY)
    faults.script(relpath, "stall")
    config = tmp_path / "config.toml"
    config.write_text("remote-read-timeout-secs = 0.5\n")
    out = tmp_path / "environment.tar"
    started = time.monotonic()
    done = run_cli("pack", str(project), "-p", "linux-64", "-o", str(out), "--config", str(config), "-q")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == reference
    assert faults.count(relpath) == 2
    assert elapsed < STALL_SECONDS / 2, elapsed  # the timeout ended it, not the server
    assert "no data from" in done.stderr  # said as a warning before the retry


def test_faults_over_tls_end_as_over_plain_http(sample_channel: Channel, tmp_path: Path) -> None:
    """Over HTTPS a body is read by the TLS connection's own ``read`` (direct.py): a close without
    TLS's closing message halfway (``short``), a reset and a stall past the read timeout are each
    retried once, the bodies framed without a length are read whole, and every package is the
    channel's."""
    scripted = {"alpha": "short", "beta": "reset", "prefixed": "stall"}
    with FaultServer(sample_channel.root, tls=True) as server:
        for name, fault in scripted.items():
            server.script(sample_channel.relpath(name), fault)
        server.always(sample_channel.relpath("noarch-data"), "chunked")
        project = _write_project(tmp_path / "project", sample_channel, server)
        config = tmp_path / "config.toml"
        config.write_text("remote-read-timeout-secs = 0.5\n")
        out = tmp_path / "environment.tar"
        env = cli_env(tmp_path / "tmp", SSL_CERT_FILE=str(TLS_CERT))
        args = ("pack", str(project), "-p", "linux-64", "-o", str(out), "--config", str(config), "-q")
        done = run_cli(*args, env=env)
        assert done.returncode == 0, done.stderr
        counts = {name: server.count(sample_channel.relpath(name)) for name in NAMES}
    assert counts == {"alpha": 2, "beta": 2, "prefixed": 2, "noarch-data": 1}
    with tarfile.open(out) as tar:
        for name in NAMES:
            member = tar.extractfile(f"channel/{sample_channel.relpath(name)}")
            assert member is not None
            assert member.read() == sample_channel.packages[name].read_bytes(), name
    assert temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("framing", ["chunked", "until-close"])
def test_bodies_framed_without_a_length_pack_the_same(
    faults: FaultServer,
    project: Path,
    reference: bytes,
    sample_channel: Channel,
    tmp_path: Path,
    framing: str,
) -> None:
    """A server may send a body in chunks, or without a length up to its close: every file is
    read whole, once, and the connections that stay open serve the next file."""
    for name in NAMES:
        faults.always(sample_channel.relpath(name), framing)
    out = tmp_path / "environment.tar"
    done = run_cli("pack", str(project), "-p", "linux-64", "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == reference
    assert sorted(faults.requests) == sorted(sample_channel.relpath(n) for n in NAMES)


PERMANENT = {
    "503-always": ("503", r"HTTP 503 downloading prefixed 2\.0 h1_0 from http://127\.0\.0\.1:\d+/"),
    "reset-mid-body-always": ("reset", r"download of prefixed 2\.0 h1_0 from http://\S+ failed: "),
    "short-of-content-length-always": ("short", r"download of prefixed 2\.0 h1_0 from http://\S+ failed: "),
    "wrong-bytes-with-200-always": ("corrupt", r"checksum mismatch for prefixed 2\.0 h1_0 \(http://\S+\): "),
    "html-with-200-always": ("html", r"checksum mismatch for prefixed 2\.0 h1_0 \(http://\S+\): "),
}


@pytest.mark.parametrize(("fault", "message"), PERMANENT.values(), ids=list(PERMANENT))
def test_a_lasting_fault_stops_cleanly_and_the_next_run_works(
    faults: FaultServer,
    project: Path,
    reference: bytes,
    sample_channel: Channel,
    tmp_path: Path,
    ledger: Ledger,
    fault: str,
    message: str,
) -> None:
    """One error line naming the package and URL; no pack, no temp file, an older pack kept, only
    verified cache entries; once the server heals, the same command gives the reference pack."""
    relpath = sample_channel.relpath(FAULTY)
    faults.always(relpath, fault)
    out, cache = tmp_path / "out" / "environment.tar", tmp_path / "cache"
    out.parent.mkdir()
    out.write_bytes(b"an older pack that must survive a failed run")
    before = snapshot(out.parent)
    done = run_cli(*pack_command(project, out, cache), env=cli_env(tmp_path / "tmp"))
    assert done.returncode == 1, done.stderr
    assert re.search(message, error_line(done.stderr)), done.stderr
    ledger.lose(lost_bytes(before, snapshot(out.parent)))
    assert snapshot(out.parent) == before
    assert temp_leftovers(tmp_path) == []
    assert_cache_verified(cache, project)
    faults.clear()
    again = run_cli(*pack_command(project, out, cache), env=cli_env(tmp_path / "tmp"))
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == reference
    assert faults.requests == [relpath]  # the rest came from the cache the failed run filled


#: Packages in the concurrency case, their size, and how long the server waits before each answer.
MANY: Final = 200
MANY_SIZE: Final = 1024 * 1024
SLOW_HEADERS: Final = 0.3


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read with getrusage (Linux units)")
def test_200_packages_at_50_in_parallel_from_a_slow_server(tmp_path: Path) -> None:
    """The pack completes, 50 transfers run at once, and memory stays far below what was fetched."""
    files = fake_packages(tmp_path / "channel", MANY, MANY_SIZE)
    with FaultServer(tmp_path / "channel", delay=SLOW_HEADERS, chunk_delay=0.01) as server:
        project = tmp_path / "project"
        write_fake_lock(project, server.url, files)
        config = tmp_path / "config.toml"
        config.write_text("[concurrency]\ndownloads = 50\n")
        out = tmp_path / "environment.tar"
        measure = textwrap.dedent(
            """
            import resource, subprocess, sys
            done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            sys.stderr.buffer.write(done.stderr)
            print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            """
        )
        command = [sys.executable, "-m", "conda_pixi_pack", "pack", str(project), "-p", "linux-64"]
        command += ["-o", str(out), "--config", str(config), "-q"]
        done = subprocess.run(
            [sys.executable, "-c", measure, *command],
            capture_output=True, text=True, timeout=300, env=cli_env(tmp_path / "tmp"), cwd=ROOT,
        )  # fmt: skip
        code, peak_kib = map(int, done.stdout.split())
        assert code == 0, done.stderr
        # a handler counts until its thread returns, a moment after the client has the last byte
        assert 40 <= server.peak <= 50 + 5, server.peak
        assert len(server.requests) == MANY
    fetched_mib = MANY * MANY_SIZE / 2**20
    print(f"peak RSS {peak_kib / 1024:.0f} MiB, {server.peak} requests at once")
    assert peak_kib / 1024 < 120, f"peak RSS {peak_kib / 1024:.0f} MiB after fetching {fetched_mib:.0f} MiB"
    with tarfile.open(out) as tar:
        names = [m.name for m in tar if m.name.endswith(".conda")]
    assert len(names) == MANY


def test_two_packs_at_once_share_a_cache_holding_a_corrupt_entry(
    faults: FaultServer,
    project: Path,
    reference: bytes,
    sample_channel: Channel,
    tmp_path: Path,
    ledger: Ledger,
) -> None:
    """Two commands started together on one cache in which one entry was overwritten in place
    (same size, other bytes): both packs are the reference, the entry is good again, and only
    verified entries remain."""
    cache = tmp_path / "cache"
    warm = run_cli(*pack_command(project, tmp_path / "warm.tar", cache), env=cli_env(tmp_path / "tmp"))
    assert warm.returncode == 0, warm.stderr
    entry = cache / sample_channel.relpath(FAULTY)
    good = entry.read_bytes()
    with entry.open("r+b") as handle:  # in place: the stamp's inode still matches, the mtime not
        handle.write(bytes(255 - b for b in good[:4096]))
    faults.clear()
    outs = [tmp_path / f"pack{i}" / "environment.tar" for i in range(2)]
    processes = []
    for out in outs:
        out.parent.mkdir()
        processes.append(
            subprocess.Popen(
                [*CLI, *pack_command(project, out, cache)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=cli_env(tmp_path / "tmp"),
            )
        )
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    for out in outs:
        produced = out.read_bytes()
        ledger.lose(0 if produced == reference else len(reference))
        assert produced == reference
    assert entry.read_bytes() == good
    assert 1 <= faults.count(sample_channel.relpath(FAULTY)) <= 2  # fetched again, by one or both
    assert len(faults.requests) == faults.count(sample_channel.relpath(FAULTY))  # the rest were hits
    assert_cache_verified(cache, project)
    assert temp_leftovers(tmp_path) == []
