"""``-o`` beyond a plain new file: a fifo or our stdout is written through, a symlink is followed,
a folder name is refused, and an output that is one of the pack's own inputs is refused."""

from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack import fileio
from conda_pixi_pack.errors import PackError, UserCancelled
from conda_pixi_pack.pack import pipeline as pack_module
from conda_pixi_pack.pack.output import OutputMode
from conda_pixi_pack.pack.pipeline import PackOptions, pack
from conda_pixi_pack.pack.sources.lockfile import LockSource
from conda_pixi_pack.pack.writers import folder as folder_writer
from tests.conftest import Channel

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.support.server import ChannelServer

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
    result = pack(PackOptions(source=LockSource(project), platform="linux-64", output=fifo))
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
        pack(
            PackOptions(
                source=LockSource(make_project(["alpha", "beta"])), output=fifo, mode=OutputMode.FOLDER
            )
        )


def test_a_symlink_is_followed(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["alpha", "beta"])
    real = tmp_path / "real" / "environment.tar"
    real.parent.mkdir()
    link = tmp_path / "link.tar"
    link.symlink_to(real)
    result = pack(PackOptions(source=LockSource(project), platform="linux-64", output=link))
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


def read_all(stream: socket.socket) -> bytes:
    chunks = []
    while chunk := stream.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.skipif(not os.path.exists("/dev/stdout"), reason="no /dev/stdout on this platform")
@pytest.mark.parametrize("kind", ["pipe", "socket"], ids=["pipe", "socket"])
def test_dev_stdout_gets_the_same_pack_as_a_file(
    make_project: Callable[..., Path], tmp_path: Path, kind: str
) -> None:
    """``pack -o /dev/stdout | …``: /dev/stdout leads to ``pipe:[…]``, which has no real path."""
    project = make_project(["alpha", "beta", "noarch-data"], wheels=["fixture-wheel"])
    reference = tmp_path / "environment.tar"
    pack(PackOptions(source=LockSource(project), platform="linux-64", output=reference))
    command = [sys.executable, "-m", "conda_pixi_pack", "pack", str(project), "-p", "linux-64"]
    command += ["-o", "/dev/stdout"]
    if kind == "pipe":
        done = subprocess.run(command, capture_output=True, cwd=tmp_path, timeout=120)
        code, received, errors = done.returncode, done.stdout, done.stderr
    else:  # e.g. a service manager or a remote shell: opening /dev/stdout by name fails (ENXIO)
        ours, theirs = socket.socketpair()
        with ours, theirs:
            child = subprocess.Popen(command, stdout=theirs.fileno(), stderr=subprocess.PIPE, cwd=tmp_path)
            theirs.close()
            received = read_all(ours)
            errors = child.stderr.read() if child.stderr else b""
            code = child.wait(timeout=120)
    assert code == 0, errors.decode()
    assert received == reference.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.tar"]  # nothing else written


@pytest.mark.parametrize(
    ("directory_only", "expected"),
    [(False, None), (True, "folder")],
    ids=["refused-without-directory-only", "folder-pack-with-directory-only"],
)
def test_a_trailing_separator_names_a_folder(
    make_project: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    directory_only: bool,
    expected: str | None,
) -> None:
    project = make_project(["beta"])
    monkeypatch.chdir(tmp_path)
    options = PackOptions(
        source=LockSource(project),
        platform="linux-64",
        output=Path("newdir/"),
        output_text="newdir/",
        mode=OutputMode.FOLDER if directory_only else OutputMode.ARCHIVE,
    )
    if expected is None:
        with pytest.raises(PackError) as info:
            pack(options)
        assert info.value.message == "cannot write newdir/: a file name is needed, not a folder"
        assert info.value.hint == "give a file name with -o, or use --directory-only to write a folder"
        assert list(tmp_path.iterdir()) == []
    else:
        pack(options)
        assert (tmp_path / "newdir").is_dir()
        assert (tmp_path / "newdir" / "pixi-pack.json").is_file()


def local_channel(sample_channel: Channel, root: Path) -> Channel:
    """A private copy of two sample packages: a test that fails must not harm the shared channel."""
    channel = Channel(root)
    for name in ("alpha", "beta"):
        copy = root / sample_channel.relpath(name)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample_channel.packages[name], copy)
        channel.packages[name] = copy
    return channel


def assert_refused(options: PackOptions, message: str, victim: Path) -> None:
    """The pack stops with ``message`` and ``victim`` keeps its bytes, with nothing left beside it."""
    before = victim.read_bytes()
    neighbours = sorted(victim.parent.iterdir())
    with pytest.raises(PackError) as info:
        pack(options)
    assert info.value.message == message
    assert info.value.hint == "choose another output with -o"
    assert victim.read_bytes() == before
    assert sorted(victim.parent.iterdir()) == neighbours


@pytest.mark.parametrize(
    "how", ["same-path", "symlink", "hard-link"], ids=["same-path", "symlink", "hard-link"]
)
def test_the_lock_file_is_not_overwritten(
    make_server: Callable[[Path], ChannelServer],
    sample_channel: Channel,
    make_project: Callable[..., Path],
    tmp_path: Path,
    how: str,
) -> None:
    server = make_server(sample_channel.root)
    project = make_project(["alpha", "beta"], server=server)
    lock = project / "pixi.lock"
    output, shown = lock, lock.resolve()
    if how == "symlink":
        output = tmp_path / "environment.tar"
        output.symlink_to(lock)
    elif how == "hard-link":
        output = tmp_path / "environment.tar"
        os.link(lock, output)
        shown = output.resolve()
    options = PackOptions(source=LockSource(lock), platform="linux-64", output=output)
    assert_refused(options, f"the output {shown} is the lock file of this pack", lock)
    assert server.requests == []  # refused before any download


@pytest.mark.parametrize("urls", ["file", "relative"], ids=["file-url", "lock-relative-path"])
def test_an_input_package_is_not_overwritten(
    sample_channel: Channel, make_project: Callable[..., Path], tmp_path: Path, urls: str
) -> None:
    channel = local_channel(sample_channel, tmp_path / "channel")
    project = make_project(["alpha", "beta"], channel=channel, urls=urls)
    victim = channel.packages["beta"]
    options = PackOptions(source=LockSource(project), platform="linux-64", output=victim)
    message = f"the output {victim.resolve()} is an input package ({victim.name}) of this pack"
    assert_refused(options, message, victim)


def test_the_manifest_is_not_overwritten(make_project: Callable[..., Path]) -> None:
    project = make_project(["beta"])
    manifest = project / "pixi.toml"
    options = PackOptions(source=LockSource(project), platform="linux-64", output=manifest)
    assert_refused(options, f"the output {manifest.resolve()} is the manifest of this pack", manifest)


def test_an_injected_file_is_not_overwritten(
    sample_channel: Channel, make_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = make_project(["alpha", "beta"])
    injected = tmp_path / "inject" / sample_channel.packages["beta"].name
    injected.parent.mkdir()
    shutil.copyfile(sample_channel.packages["beta"], injected)
    options = PackOptions(source=LockSource(project), platform="linux-64", output=injected, inject=[injected])
    assert_refused(options, f"the output {injected.resolve()} is an --inject file of this pack", injected)


def test_an_output_inside_the_cache_is_refused(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["beta"])
    cache = tmp_path / "cache"
    output = cache / "environment.tar"
    options = PackOptions(source=LockSource(project), platform="linux-64", output=output, cache_dir=cache)
    cache.mkdir()
    with pytest.raises(PackError) as info:
        pack(options)
    assert (
        info.value.message
        == f"the output {output.resolve()} and the --use-cache folder {cache.resolve()} overlap"
    )
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("directory_only", [False, True], ids=["archive", "folder"])
def test_an_interrupt_after_the_rename_says_the_pack_is_there(
    make_project: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, directory_only: bool
) -> None:
    """Ctrl-C or SIGTERM in the last step (syncing the folder): the pack is complete, say so."""
    project = make_project(["alpha", "beta"])
    output = tmp_path / ("environment" if directory_only else "environment.tar")
    real_sync = fileio.fsync_dir

    def interrupted(folder: Path) -> None:
        real_sync(folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "fsync_dir", interrupted)
    monkeypatch.setattr(folder_writer, "fsync_dir", interrupted)
    with pytest.raises(UserCancelled, match=f"the pack was already complete at {output}"):
        pack(
            PackOptions(
                source=LockSource(project),
                platform="linux-64",
                output=output,
                mode=OutputMode.FOLDER if directory_only else OutputMode.ARCHIVE,
            )
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]  # no staging folder left
    assert (output / "pixi-pack.json").is_file() if directory_only else tarfile.is_tarfile(output)


def test_an_interrupt_while_staging_is_removed_still_removes_it(
    make_project: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staging folder can hold GBs of links: a second signal must not leave it behind."""
    project = make_project(["alpha", "beta"])
    output = tmp_path / "environment.tar"
    real_rmtree = shutil.rmtree
    calls: list[str] = []

    def rmtree_interrupted_once(path: str, *args: object, **kwargs: object) -> None:
        if Path(path).name.startswith(".environment.tar."):  # the staging folder
            calls.append(str(path))
            if len(calls) == 1:
                raise KeyboardInterrupt
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pack_module.shutil, "rmtree", rmtree_interrupted_once)
    with pytest.raises(UserCancelled, match="already complete"):
        pack(PackOptions(source=LockSource(project), platform="linux-64", output=output))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.tar"]
    assert len(calls) == 2  # interrupted once, then finished
