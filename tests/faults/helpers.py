"""What every fault case checks the way a user would: the command's exit and its one error line,
what a run left on disk (snapshots of folders before and after), and the pack's bytes.

A snapshot maps every path below a folder to what it is (a file's size and sha256, a link's
target, a folder); comparing two gives the bytes lost (files that were there and are gone or
changed) and the paths created, which outside the places a run may write are escapes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.artifacts import file_mismatch
from conda_pixi_pack.pack.cache import CACHEDIR_TAG, STAMP_SUFFIX
from conda_pixi_pack.pack.sources.lockfile import load
from tests.support.channel import write_lock, write_project

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: This tool as a user runs it.
CLI: Final = [sys.executable, "-m", "conda_pixi_pack"]
#: The project root: subprocesses import the package from this worktree.
ROOT: Final = Path(__file__).resolve().parents[2]
#: Suffixes of the temporary names pack uses (fileio.temp_path, output.make_staging) ...
TEMP_SUFFIXES: Final = (".part", ".tmp")
#: ... and prefixes of those unpack and a streamed pack use (target.TEMP_PREFIX, the seed's staging,
#: rattler's temporary cache, the staging folder in TMPDIR).
TEMP_PREFIXES: Final = (".conda-pixi-pack-", "conda-pixi-pack-")


@dataclass(frozen=True)
class Entry:
    """One path of a snapshot: ``kind`` is ``file``, ``dir`` or ``link``."""

    kind: str
    size: int = 0
    digest: str = ""


Snapshot = dict[str, Entry]


def snapshot(root: Path, *, skip: Iterable[Path] = ()) -> Snapshot:
    """Every path below ``root`` (relative, POSIX), links not followed; ``skip`` folders left out."""
    skipped = {os.path.abspath(p) for p in skip}
    found: Snapshot = {}
    if not root.exists():
        return found
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skipped]
        for name in dirs + files:
            path = os.path.join(folder, name)
            if path in skipped:
                continue
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                found[relative] = Entry("link", digest=os.readlink(path))
            elif os.path.isdir(path):
                found[relative] = Entry("dir")
            else:
                found[relative] = Entry("file", os.path.getsize(path), _sha256(path))
    return found


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def lost_bytes(before: Snapshot, after: Snapshot) -> int:
    """Bytes of the files of ``before`` that are missing or different in ``after``."""
    return sum(
        entry.size for path, entry in before.items() if entry.kind == "file" and after.get(path) != entry
    )


def created(before: Snapshot, after: Snapshot) -> list[str]:
    """Paths new or changed in ``after`` (sorted)."""
    return sorted(path for path, entry in after.items() if before.get(path) != entry)


def split_created(before: Snapshot, after: Snapshot, target: str = "out") -> tuple[list[str], list[str]]:
    """Paths a run created or changed: those in its ``target`` folder (left behind: no prefix, no
    activation script may stay after a failure) and those anywhere else (escapes)."""
    new = created(before, after)
    left = [p for p in new if p == target or p.startswith(target + os.sep)]
    return left, [p for p in new if p not in left]


def temp_leftovers(folder: Path) -> list[str]:
    """Temporary names of ours below ``folder`` (a staging folder, a ``.part`` file...)."""
    if not folder.exists():
        return []
    return sorted(
        os.path.relpath(os.path.join(d, n), folder)
        for d, dirs, files in os.walk(folder)
        for n in dirs + files
        if n.endswith(TEMP_SUFFIXES) or n.startswith(TEMP_PREFIXES)
    )


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """The command, run to its end as a user runs it (text output)."""
    done = subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=dict(env) if env is not None else cli_env(),
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    )


def cli_env(tmpdir: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this worktree first on the path, ``TMPDIR`` private."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("RATTLER_AUTH_FILE", None)
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    env.update(extra)
    return env


def error_line(stderr: str) -> str:
    """The one ``error:`` line a failed command must print, with no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    assert "panicked" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def fake_packages(channel: Path, count: int, size: int) -> list[tuple[str, str, int]]:
    """``count`` files of random bytes served as ``linux-64/p<i>-1.0-0.conda``: pack never opens
    a package, it streams, hashes and verifies them; each comes with its (name, sha256, size)."""
    import hashlib

    (channel / "linux-64").mkdir(parents=True)
    files = []
    for index in range(count):
        data = os.urandom(size)
        name = f"p{index:03d}"
        (channel / "linux-64" / f"{name}-1.0-0.conda").write_bytes(data)
        files.append((name, hashlib.sha256(data).hexdigest(), size))
    return files


def write_fake_lock(project: Path, url: str, files: list[tuple[str, str, int]]) -> None:
    """A project whose lock lists the :func:`fake_packages` files served at ``url``."""
    import rattler

    records = []
    for name, sha256, size in files:
        package = rattler.PackageRecord(
            name,
            "1.0",
            rattler.BuildString("0"),
            0,
            "linux-64",
            sha256=bytes.fromhex(sha256),
            size=size,
            depends=[],
        )
        file_name = f"{name}-1.0-0.conda"
        records.append(rattler.RepoDataRecord(package, file_name, f"{url}/linux-64/{file_name}", url))
    write_lock(project / "pixi.lock", records, channel=url)
    write_project(project, channels=[url])


def assert_cache_verified(cache: Path, project: Path) -> None:
    """Every package file in the cache is a complete, verified copy of a locked file."""
    artifacts = {c.artifact.relative_path: c.artifact for c in load(project, "default", "linux-64").conda}
    for path in cache.rglob("*"):
        if path.is_dir() or path.name == CACHEDIR_TAG or path.name.endswith(STAMP_SUFFIX):
            continue
        relative = path.relative_to(cache).as_posix()
        assert relative in artifacts, f"{relative} in the cache is no locked file"
        assert file_mismatch(path, artifacts[relative]) is None, relative
