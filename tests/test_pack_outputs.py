"""``-o`` onto things that are not plain files: a fifo is written through, a symlink is followed."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.pack import PackOptions, pack

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")


def test_a_fifo_is_written_through_not_replaced(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["alpha", "beta"])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = io.BytesIO()

    def read() -> None:
        with open(fifo, "rb") as stream:
            received.write(stream.read())

    reader = threading.Thread(target=read)
    reader.start()
    result = pack(PackOptions(manifest=project, platform="linux-64", output=fifo))
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the pipe, not a file put in its place
    assert result.output == fifo and result.size == len(received.getvalue())
    with tarfile.open(fileobj=io.BytesIO(received.getvalue())) as tar:
        assert "pixi-pack.json" in tar.getnames()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no staging left beside it


def test_a_fifo_cannot_take_a_folder_pack(make_project: Callable[..., Path], tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(PackError, match="it is a device or pipe"):
        pack(PackOptions(manifest=make_project(["alpha", "beta"]), output=fifo, directory_only=True))


def test_a_symlink_is_followed(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["alpha", "beta"])
    real = tmp_path / "real" / "environment.tar"
    real.parent.mkdir()
    link = tmp_path / "link.tar"
    link.symlink_to(real)
    result = pack(PackOptions(manifest=project, platform="linux-64", output=link))
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert result.output == real
    with tarfile.open(real) as tar:
        assert "environment.yml" in tar.getnames()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_closed_stdout_is_one_clear_error(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["alpha", "beta"])
    command = f"{sys.executable} -m conda_pixi_pack pack {project} -p linux-64 -o - >&-"
    done = subprocess.run(["bash", "-c", command], capture_output=False, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: standard output is closed (give -o FILE, or run with stdout open)"
    ]
