"""Ctrl-C and SIGTERM at random moments of a real ``pack`` or ``unpack`` subprocess.

The moments are drawn (seeded, so CI repeats them) over the length of an uninterrupted run, so
they fall anywhere: while the interpreter starts, while the lock is read, mid-download, while the
archive is written, around the final rename. Whatever the moment, the user must find either
nothing (exit 130 or 143) or the complete result (the signal came too late to matter), never a
half-written pack or environment, no temporary file, a cache holding only verified entries, and
a next run that works.

Single interruptions at chosen points are tested elsewhere (tests/pack/test_pack.py
``test_ctrl_c_mid_download_leaves_nothing``, tests/unpack/test_unpack.py ``test_ctrl_c_rolls_back``,
tests/unpack/test_unpack_seed.py ``test_ctrl_c_while_extracting_stops_the_workers``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Final

import pytest

from conda_pixi_pack.unpack.install import seed
from tests.faults.helpers import (
    CLI,
    assert_cache_verified,
    cli_env,
    error_line,
    fake_packages,
    run_cli,
    temp_leftovers,
    write_fake_lock,
)
from tests.support.fault_server import FaultServer
from tests.support.packs import make_pack
from tests.support.server import write_auth_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from tests.faults.conftest import Ledger

#: Interruptions per signal and command; the seed makes the moments the same on every run
#: (``FAULTS_SEED=N`` explores other moments by hand).
POINTS: Final = 3
SEED: Final = int(os.environ.get("FAULTS_SEED", "12"))
#: Exit code after each signal once our handler runs (128 + the signal).
EXIT: Final = {signal.SIGINT: 130, signal.SIGTERM: 143}
SIGNALS: Final = [signal.SIGINT, signal.SIGTERM]
SIGNAL_IDS: Final = ["ctrl-c", "sigterm"]


def moments(duration: float, salt: int) -> list[float]:
    """``POINTS`` moments over ``[0, duration)``, one per equal slice so that they spread out."""
    rng = random.Random(SEED * 1000 + salt)
    return [duration * (i + rng.random()) / POINTS for i in range(POINTS)]


def interrupted_run(args: list[str], env: Mapping[str, str], after: float, signum: int) -> tuple[int, str]:
    """Start the command, send ``signum`` after ``after`` seconds, wait; its exit code and stderr."""
    process = subprocess.Popen(
        [*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(env)
    )
    try:
        time.sleep(after)
        if process.poll() is None:
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr.decode(errors="replace")


def timed(args: list[str], env: Mapping[str, str]) -> float:
    started = time.monotonic()
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


def judge(
    code: int, stderr: str, signum: int, complete: Callable[[], bool], absent: Callable[[], bool]
) -> str:
    """What the user got: ``nothing`` (interrupted cleanly), ``complete`` (the signal came after
    the work was done) or ``startup`` (the signal came before Python had started our code: the
    interpreter's default action, with nothing of ours begun)."""
    if code == EXIT[signum]:
        line = error_line(stderr)
        if "already complete" in line:
            assert complete(), stderr
            return "complete"
        assert line.startswith("error: interrupted"), stderr
        assert absent(), stderr
        return "nothing"
    if code == 0:
        assert complete(), stderr
        return "complete"
    # before our code ran: the interpreter's own default ("Could not import runpy module" or
    # "Fatal Python error: init_import_site", exit 1, or killed by the signal); nothing of ours
    # had begun, so no line of ours either
    ours = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code in (-signum, 1) and ours == [], (code, stderr)
    assert absent(), stderr
    return "startup"


# -- pack ------------------------------------------------------------------------------------------

#: Enough data over a slow enough server that downloads take about a second.
PACK_FILES: Final = 16
PACK_SIZE: Final = 512 * 1024


@pytest.fixture(scope="module")
def slow_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bytes, float]]:
    """A project of fake packages on a slow server, its reference pack and a pack's duration."""
    root = tmp_path_factory.mktemp("signals-pack")
    files = fake_packages(root / "channel", PACK_FILES, PACK_SIZE)
    with FaultServer(root / "channel", delay=0.1, chunk_delay=0.06) as server:
        write_fake_lock(root / "project", server.url, files)
        out = root / "reference.tar"
        duration = timed(["pack", str(root / "project"), "-p", "linux-64", "-o", str(out), "-q"], cli_env())
        yield root / "project", out.read_bytes(), duration


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["direct", "rattler"])
@pytest.mark.parametrize("signum", SIGNALS, ids=SIGNAL_IDS)
def test_a_pack_interrupted_anywhere_leaves_nothing_and_the_next_run_works(
    slow_project: tuple[Path, bytes, float], tmp_path: Path, ledger: Ledger, signum: int, transport: str
) -> None:
    """Through either transport: rattler's client (its event loop in a thread of its own, its
    transfers in its Rust runtime) takes the downloads when a credentials file names the host
    (the fault server ignores the credentials sent)."""
    project, reference, duration = slow_project
    ledger.cases = POINTS
    seen = []
    through: list[str] = []
    if transport == "rattler":
        through = ["--auth-file", str(write_auth_file(tmp_path / "credentials.json"))]
    salt = int(signum) + (100 if transport == "rattler" else 0)
    for index, after in enumerate(moments(duration, salt)):
        work = tmp_path / f"run{index}"
        out, cache, tmp = work / "out" / "environment.tar", work / "cache", work / "tmp"
        out.parent.mkdir(parents=True)
        env = cli_env(tmp)
        args = ["pack", str(project), "-p", "linux-64", "-o", str(out), "--use-cache", str(cache), *through]
        code, stderr = interrupted_run(args, env, after, signum)
        outcome = judge(
            code,
            stderr,
            signum,
            complete=lambda: out.read_bytes() == reference,
            absent=lambda: not out.exists(),
        )
        seen.append((round(after, 2), outcome))
        assert sorted(p.name for p in out.parent.iterdir()) == (
            ["environment.tar"] if outcome == "complete" else []
        )
        assert temp_leftovers(work) == [], (after, outcome)
        assert_cache_verified(cache, project) if cache.exists() else None
        out.unlink(missing_ok=True)
        again = run_cli(*args, "-q", env=env)
        assert again.returncode == 0, again.stderr
        produced = out.read_bytes()
        ledger.lose(0 if produced == reference else len(reference))
        assert produced == reference
    ledger.notes.append(f"pack ({transport}) {signal.Signals(signum).name} at {seen}")
    print(f"pack ({transport}) {signal.Signals(signum).name}: {seen} (a run takes {duration:.2f} s)")


# -- unpack ----------------------------------------------------------------------------------------

UNPACKED: Final = ("alpha", "beta", "prefixed", "postlink", "activated", "noarch-data")


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory: pytest.TempPathFactory, sample_channel: object) -> Path:
    channel = sample_channel
    root = tmp_path_factory.mktemp("signals-unpack")
    return make_pack(root, [channel.packages[n] for n in UNPACKED], platform="linux-64")  # type: ignore[attr-defined]


def unpack_env(tmp_path: Path, base: Mapping[str, str] | None) -> dict[str, str]:
    """A private HOME (conda registers environments there), TMPDIR and package cache."""
    env = dict(base) if base is not None else cli_env()
    env.update(cli_env(tmp_path / "tmp"))
    env["HOME"] = str(tmp_path / "home")
    env["CONDA_PKGS_DIRS"] = str(tmp_path / "pkgs")
    return env


def environment_complete(prefix: Path) -> bool:
    """The environment is all there: every package's record, placeholders replaced."""
    records = sorted(p.name for p in (prefix / "conda-meta").glob("*.json")) if prefix.is_dir() else []
    if len(records) != len(UNPACKED):
        return False
    return (prefix / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{prefix}"\n'


@pytest.mark.slow
@pytest.mark.parametrize(
    "installer", ["rattler", pytest.param("conda", marks=pytest.mark.conda)], ids=["rattler", "conda"]
)
def test_an_unpack_interrupted_anywhere_leaves_no_half_environment(
    small_pack: Path, tmp_path: Path, ledger: Ledger, installer: str, request: pytest.FixtureRequest
) -> None:
    """Ctrl-C at random moments: no environment or a complete one, no temporary folder, no
    registration; the package cache stays usable: the next unpack with it works."""
    base = request.getfixturevalue("conda_env") if installer == "conda" else None
    env = unpack_env(tmp_path / "timing", base)
    pkgs = tmp_path / "pkgs"
    args = ["unpack", str(small_pack), "--installer", installer, "--pkgs-dir", str(pkgs), "-q"]
    duration = timed([*args, "-o", str(tmp_path / "timing" / "out")], env)
    ledger.cases = POINTS
    seen = []
    for index, after in enumerate(moments(duration, 7 if installer == "conda" else 8)):
        work = tmp_path / f"run{index}"
        out = work / "out"
        out.mkdir(parents=True)
        env = unpack_env(work, base)
        code, stderr = interrupted_run([*args, "-o", str(out)], env, after, signal.SIGINT)
        outcome = judge(
            code,
            stderr,
            signal.SIGINT,
            complete=lambda: environment_complete(out / "env") and (out / "activate.sh").is_file(),
            absent=lambda: sorted(p.name for p in out.iterdir()) == [],
        )
        seen.append((round(after, 2), outcome))
        assert temp_leftovers(work) == [], (after, outcome)
        assert [p.name for p in pkgs.iterdir() if p.name.startswith(seed.STAGING_PREFIX)] == []
        registered = work / "home" / ".conda" / "environments.txt"
        if outcome != "complete" and registered.exists():
            assert str(out / "env") not in registered.read_text()
        if outcome == "complete":
            continue
        again = run_cli(*args, "-o", str(out), env=env)
        assert again.returncode == 0, again.stderr
        assert environment_complete(out / "env")
    print(f"unpack {installer}: {seen} (a run takes {duration:.2f} s)")
