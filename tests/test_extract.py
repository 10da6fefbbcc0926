"""The outer tar of a pack is untrusted: every unsafe member is refused before anything escapes."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.extract import extract_tar
from conda_pixi_pack.progress import Reporter
from tests.packs import raw_tar

if TYPE_CHECKING:
    from pathlib import Path


def _file(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


UNSAFE = [
    ([_file("/tmp/evil")], "'/tmp/evil' has an absolute path"),
    ([_file("pixi-pack.json"), _file("../evil")], "'../evil' points outside"),
    ([_file("channel/../../evil")], "'channel/../../evil' points outside"),
    ([_special("link", tarfile.SYMTYPE, "/etc/passwd")], "'link' is a symbolic link"),
    ([_special("channel/link", tarfile.SYMTYPE, "../../../x")], "'channel/link' is a symbolic link"),
    ([_file("a"), _special("hard", tarfile.LNKTYPE, "../../etc/passwd")], "'hard' is a hard link"),
    ([_special("dev", tarfile.CHRTYPE)], "'dev' is a device, fifo"),
    ([_special("blk", tarfile.BLKTYPE)], "'blk' is a device, fifo"),
    ([_special("fifo", tarfile.FIFOTYPE)], "'fifo' is a device, fifo"),
    ([_file("pixi-pack.json", b"1"), _file("pixi-pack.json", b"2")], "'pixi-pack.json' appears twice"),
    ([_file("a/b"), _file("./a/b")], "'./a/b' appears twice"),
    ([_file("a"), _file("a/b")], "'a/b' clashes with another member"),
]


@pytest.mark.parametrize(
    ("members", "message"),
    UNSAFE,
    ids=[
        "absolute",
        "dotdot",
        "dotdot-nested",
        "symlink-absolute",
        "symlink-escape",
        "hardlink-escape",
        "char-device",
        "block-device",
        "fifo",
        "duplicate",
        "duplicate-normalised",
        "file-as-folder",
    ],
)
def test_unsafe_member_refused(tmp_path: Path, members: list, message: str) -> None:
    archive = raw_tar(tmp_path / "bad.tar", members)
    target = tmp_path / "sandbox" / "target"
    target.mkdir(parents=True)
    with pytest.raises(PackError, match="unsafe pack") as excinfo:
        extract_tar(archive, target, Reporter())
    assert message in excinfo.value.message
    # Nothing was written beside the target, let alone elsewhere.
    assert [p.name for p in (tmp_path / "sandbox").iterdir()] == ["target"]
    assert not (tmp_path / "evil").exists()


def test_extracts_files_and_folders(tmp_path: Path) -> None:
    folder = tarfile.TarInfo("channel")
    folder.type = tarfile.DIRTYPE
    archive = raw_tar(
        tmp_path / "ok.tar",
        [(folder, None), _file("channel/x.conda", b"conda bytes"), _file("./pixi-pack.json", b"{}")],
    )
    target = tmp_path / "out"
    target.mkdir()
    extract_tar(archive, target, Reporter())
    assert (target / "channel" / "x.conda").read_bytes() == b"conda bytes"
    assert (target / "pixi-pack.json").read_bytes() == b"{}"


def test_reads_a_non_seekable_stream(tmp_path: Path) -> None:
    """stdin is a pipe: the reader must never seek."""
    archive = raw_tar(tmp_path / "ok.tar", [_file("pixi-pack.json", b"{}")])

    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    target = tmp_path / "out"
    target.mkdir()
    extract_tar(io.BufferedReader(Pipe(archive.read_bytes())), target, Reporter())
    assert (target / "pixi-pack.json").read_bytes() == b"{}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"#!/bin/sh\necho self-extracting\n" * 40, "is not a pack: it is not a tar archive"),
        (b"", "is not a pack: it is not a tar archive"),
    ],
    ids=["shell-script", "empty"],
)
def test_not_a_tar(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "environment.tar"
    path.write_bytes(content)
    with pytest.raises(PackError, match=message):
        extract_tar(path, tmp_path, Reporter())


def test_truncated_tar(tmp_path: Path) -> None:
    archive = raw_tar(tmp_path / "ok.tar", [_file("big", b"x" * 100_000)])
    archive.write_bytes(archive.read_bytes()[:50_000])
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(PackError, match="is damaged"):
        extract_tar(archive, target, Reporter())


def test_memory_does_not_grow_with_member_size(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024
    archive = tmp_path / "big.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("channel/noarch/big.conda")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    target = tmp_path / "out"
    target.mkdir()
    tracemalloc.start()
    try:
        extract_tar(archive, target, Reporter())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (target / "channel/noarch/big.conda").stat().st_size == size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while extracting a {size}-byte member"
