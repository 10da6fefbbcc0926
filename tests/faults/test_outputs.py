"""Where ``pack`` writes: a read-only or full file system, another file system than the cache,
awkward names, and a reader that goes away. Always: one clear line or the right pack, nothing
half-written at the output path, no temporary file, the cache as it was.

The plain cases run in-process in tests/pack/test_pack.py (``test_missing_output_folder_is_refused``,
``test_read_only_output_folder_is_refused`` with permission bits, ``test_failed_pack_leaves_no_file_
and_keeps_an_old_one``) and tests/pack/test_pack_outputs.py (``test_closed_stdout_is_one_clear_error``);
here they meet real file systems: small tmpfs mounts where this machine allows mounting (root),
else ``RLIMIT_FSIZE`` in the child.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Final

import pytest

from tests.faults.helpers import (
    CLI,
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
from tests.support.fault_server import FaultServer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.faults.conftest import Ledger

#: The project's packages: 6 of 256 KiB, so a pack (~1.5 MB) fits a 2 MiB tmpfs once, not twice.
FILES: Final = 6
SIZE: Final = 256 * 1024
#: A name with what shells and encodings trip over.
AWKWARD: Final = "dir with spaces/ünï cødé – 日本語"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bytes]]:
    """A project on a local server and its reference pack."""
    root = tmp_path_factory.mktemp("outputs")
    files = fake_packages(root / "channel", FILES, SIZE)
    with FaultServer(root / "channel") as server:
        write_fake_lock(root / "project", server.url, files)
        out = root / "reference.tar"
        done = run_cli("pack", str(root / "project"), "-p", "linux-64", "-o", str(out), "-q")
        assert done.returncode == 0, done.stderr
        yield root / "project", out.read_bytes()


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted at ``where`` for the block; skips where mounting is not
    allowed (not root, or in a container without the capability)."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command here: a small file system cannot be made for this case")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here ({done.stderr.strip() or done.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def warm_cache(served: tuple[Path, bytes], tmp_path: Path) -> Path:
    """A cache filled by one good pack (on the ordinary disk)."""
    project, _ = served
    cache = tmp_path / "cache"
    done = run_cli(
        "pack",
        str(project),
        "-p",
        "linux-64",
        "-o",
        str(tmp_path / "warm.tar"),
        "--use-cache",
        str(cache),
        "-q",
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "warm.tar").unlink()
    return cache


def refused(
    args: list[str], out: Path, cache: Path, project: Path, tmp_path: Path, ledger: Ledger, message: str
) -> str:
    """Run a pack that must fail: one error line matching ``message``; the output's folder, the
    cache and TMPDIR as they were; returns the line."""
    cache_before, folder_before = snapshot(cache), snapshot(out.parent)
    done = run_cli(*args, env=cli_env(tmp_path / "tmp"))
    assert done.returncode == 1, done.stderr
    line = error_line(done.stderr)
    assert re.search(message, line), line
    ledger.lose(lost_bytes(cache_before, snapshot(cache)) + lost_bytes(folder_before, snapshot(out.parent)))
    assert snapshot(out.parent) == folder_before
    assert lost_bytes(cache_before, snapshot(cache)) == 0  # new verified entries may have come
    assert temp_leftovers(tmp_path) == []
    assert_cache_verified(cache, project)
    print(line)
    return line


def test_a_read_only_file_system_is_refused_before_anything(
    served: tuple[Path, bytes], warm_cache: Path, tmp_path: Path, ledger: Ledger
) -> None:
    """Root ignores permission bits, not a read-only mount: the output folder is really unwritable."""
    project, _ = served
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as folder:
        out = folder / "environment.tar"
        args = ["pack", str(project), "-p", "linux-64", "-o", str(out), "--use-cache", str(warm_cache)]
        refused(
            args,
            out,
            warm_cache,
            project,
            tmp_path,
            ledger,
            rf"cannot write {re.escape(str(out))}: .* not writable",
        )


@pytest.mark.parametrize("where", ["output", "cache"], ids=["output-on-tmpfs", "cache-on-tmpfs"])
def test_output_and_cache_on_different_file_systems(
    served: tuple[Path, bytes], tmp_path: Path, ledger: Ledger, where: str
) -> None:
    """No hard link across file systems: the cache is copied from, and the pack is the same."""
    project, reference = served
    with tmpfs(tmp_path / "mnt", "16m") as mounted:
        out = (mounted if where == "output" else tmp_path) / "environment.tar"
        cache = (tmp_path if where == "output" else mounted) / "cache"
        args = ["pack", str(project), "-p", "linux-64", "-o", str(out), "--use-cache", str(cache), "-q"]
        for _ in ("cold", "warm"):
            cache_before = snapshot(cache)
            done = run_cli(*args, env=cli_env(tmp_path / "tmp"))
            assert done.returncode == 0, done.stderr
            ledger.lose(lost_bytes(cache_before, snapshot(cache)))
            produced = out.read_bytes()
            ledger.lose(0 if produced == reference else len(reference))
            assert produced == reference
            assert_cache_verified(cache, project)
            assert temp_leftovers(tmp_path) == [] and temp_leftovers(mounted) == []
            out.unlink()


def test_spaces_and_non_ascii_in_every_path(
    served: tuple[Path, bytes], tmp_path: Path, ledger: Ledger
) -> None:
    """The project, the cache and the output under names with spaces and non-ASCII characters."""
    import shutil

    project, reference = served
    base = tmp_path / AWKWARD
    base.mkdir(parents=True)
    moved = shutil.copytree(project, base / "project é")
    out, cache = base / "pack ü.tar", base / "cache ß"
    for _ in ("cold", "warm"):
        done = run_cli("pack", str(moved), "-p", "linux-64", "-o", str(out), "--use-cache", str(cache), "-q")
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == reference
        ledger.lose(0 if out.read_bytes() == reference else len(reference))
    assert temp_leftovers(tmp_path) == []


def test_a_reader_that_exits_early_is_one_clear_error(
    served: tuple[Path, bytes], warm_cache: Path, tmp_path: Path, ledger: Ledger
) -> None:
    """``pack -o - | head -c 1000``: the pack stops with one line, removes its staging folder
    (in TMPDIR for a stream) and leaves the cache as it was."""
    project, _ = served
    cache_before = snapshot(warm_cache)
    env = cli_env(tmp_path / "tmp")
    command = [*CLI, "pack", str(project), "-p", "linux-64", "-o", "-", "--use-cache", str(warm_cache)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    head = process.stdout.read(1000)
    process.stdout.close()  # the consumer exits: the pipe has no reader any more
    stderr = process.stderr.read().decode(errors="replace")
    code = process.wait(timeout=120)
    assert len(head) == 1000
    assert code != 0, stderr
    assert re.search(r"standard output was closed", error_line(stderr)), stderr
    ledger.lose(lost_bytes(cache_before, snapshot(warm_cache)))
    assert snapshot(warm_cache) == cache_before
    assert temp_leftovers(tmp_path) == [] and list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("cache", ["no-cache", "cold-cache", "warm-cache"])
@pytest.mark.parametrize(
    ("size", "output"),
    [
        # the archive, written in place as the packages arrive, does not fit (said before any download)
        pytest.param("1m", "environment.tar", id="full-while-downloading"),
        # a self-extracting pack gathers its packages beside it first: they fit, the script does not
        pytest.param("2m", "environment.sh", id="full-while-writing-the-archive"),
    ],
)
def test_a_full_disk_is_one_clear_error(
    served: tuple[Path, bytes],
    tmp_path: Path,
    ledger: Ledger,
    request: pytest.FixtureRequest,
    size: str,
    output: str,
    cache: str,
) -> None:
    """A small tmpfs as the output's file system: one line saying the disk is full and where, the
    older pack there kept, no temporary file, the cache intact."""
    project, _ = served
    cache_dir = request.getfixturevalue("warm_cache") if cache == "warm-cache" else tmp_path / "cache"
    with tmpfs(tmp_path / "small", size) as folder:
        out = folder / output
        out.write_bytes(b"an older pack")
        args = ["pack", str(project), "-p", "linux-64", "-o", str(out)]
        if output.endswith(".sh"):
            args.append("--create-executable")
        if cache != "no-cache":
            args += ["--use-cache", str(cache_dir)]
        expected = rf"cannot write {re.escape(str(folder))}\S*: No space left on device"
        refused(args, out, cache_dir, project, tmp_path, ledger, expected)


@pytest.mark.parametrize("cache", ["no-cache", "cold-cache", "warm-cache"])
def test_an_archive_that_fits_only_without_a_staging_copy_is_written(
    served: tuple[Path, bytes], tmp_path: Path, request: pytest.FixtureRequest, cache: str
) -> None:
    """The packages of a lock go straight into the archive: a disk that holds the pack once, but
    not twice over, takes it (the same pack as on a large disk)."""
    project, _ = served
    cache_dir = request.getfixturevalue("warm_cache") if cache == "warm-cache" else tmp_path / "cache"
    reference = tmp_path / "reference.tar"
    assert run_cli("pack", str(project), "-p", "linux-64", "-o", str(reference)).returncode == 0
    assert 1 << 20 < reference.stat().st_size < 2 << 20  # the 2 MiB disk holds it once, not twice
    with tmpfs(tmp_path / "small", "2m") as folder:
        out = folder / "environment.tar"
        out.write_bytes(b"an older pack")
        args = ["pack", str(project), "-p", "linux-64", "-o", str(out)]
        if cache != "no-cache":
            args += ["--use-cache", str(cache_dir)]
        done = run_cli(*args, env=cli_env(tmp_path / "tmp"))
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == reference.read_bytes()
        assert sorted(p.name for p in folder.iterdir()) == ["environment.tar"]


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
@pytest.mark.parametrize("cache", ["no-cache", "warm-cache"])
def test_a_file_size_limit_is_one_clear_error(
    served: tuple[Path, bytes], tmp_path: Path, ledger: Ledger, request: pytest.FixtureRequest, cache: str
) -> None:
    """Where nothing can be mounted: the child may write files of 1 MiB at most (``ulimit -f``),
    every package fits, the archive does not."""
    project, _ = served
    cache_dir = request.getfixturevalue("warm_cache") if cache == "warm-cache" else tmp_path / "cache"
    out = tmp_path / "out" / "environment.tar"
    out.parent.mkdir()
    args = ["pack", str(project), "-p", "linux-64", "-o", str(out)]
    if cache != "no-cache":
        args += ["--use-cache", str(cache_dir)]
    limit = "import resource, os, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
    limit += "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    cache_before, folder_before = snapshot(cache_dir), snapshot(out.parent)
    done = subprocess.run(
        [sys.executable, "-c", limit, "-m", "conda_pixi_pack", *args],
        capture_output=True, text=True, env=cli_env(tmp_path / "tmp"), timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    line = error_line(done.stderr)
    assert re.search(rf"cannot write {re.escape(str(out))}: File too large", line), line
    ledger.lose(
        lost_bytes(cache_before, snapshot(cache_dir)) + lost_bytes(folder_before, snapshot(out.parent))
    )
    assert snapshot(out.parent) == folder_before
    assert temp_leftovers(tmp_path) == []
    assert_cache_verified(cache_dir, project)
