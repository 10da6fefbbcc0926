"""Where nothing can be written: a dry run still works (it writes nothing at all), a real unpack
says which folder is not writable and what to do, before anything is made."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Final

import pytest

from tests.support.packs import make_pack

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

CLI: Final = [sys.executable, "-m", "conda_pixi_pack"]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only file system (a tmpfs mounted ro), where this machine allows mounting one."""
    target = tmp_path / "read-only"
    target.mkdir()
    mount = shutil.which("mount")
    done = subprocess.run([mount or "mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)],
                          capture_output=True, check=False) if mount else None  # fmt: skip
    if done is None or done.returncode != 0:
        pytest.skip("mounting a read-only file system is not allowed here")
    yield target
    subprocess.run(["umount", str(target)], check=False)


def test_a_dry_run_into_a_read_only_folder_works(
    packages: Callable[..., list[Path]], tmp_path: Path, read_only: Path
) -> None:
    pack = make_pack(tmp_path, packages("alpha", "beta"))
    done = subprocess.run([*CLI, "unpack", str(pack), "--dry-run", "-o", str(read_only)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["alpha=1.0=h0_0", "beta=1.2=h0_0"]
    assert "nothing was written" in done.stderr


def test_unpacking_into_a_read_only_folder_says_so_before_anything(
    packages: Callable[..., list[Path]], tmp_path: Path, read_only: Path
) -> None:
    pack = make_pack(tmp_path, packages("alpha", "beta"))
    done = subprocess.run([*CLI, "unpack", str(pack), "-o", str(read_only), "--installer", "rattler"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        (
            f"error: cannot write the environment into {read_only}: {read_only} is not writable "
            "(choose another folder with -o (or -p))"
        )
    ]


def test_a_dry_run_leaves_no_temporary_folder(packages: Callable[..., list[Path]], tmp_path: Path) -> None:
    pack = make_pack(tmp_path, packages("alpha", "beta"))
    out = tmp_path / "out"
    out.mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp), "PATH": "/usr/bin:/bin"}
    command = [*CLI, "unpack", str(pack), "--dry-run", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert list(out.iterdir()) == [] and list(temp.iterdir()) == []
