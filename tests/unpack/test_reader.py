"""The outer tar of a pack is untrusted: every unsafe member is refused before anything escapes."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.progress import Reporter
from conda_pixi_pack.unpack.reader import extract_tar
from tests.support.packs import raw_tar

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


# -- the random-access reader (a pack given as a regular file) --------------------------------------


def _pack_like(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A plain tar shaped like a pack, with members of awkward sizes (not multiples of 512)."""
    contents = {
        "pixi-pack.json": b"{}",
        "channel/noarch/a-1-0.conda": bytes(range(256)) * 4099,
        "channel/linux-64/b-1-0.tar.bz2": b"b" * 3,
        "channel/linux-64/empty.conda": b"",
    }
    return raw_tar(tmp_path / "pack.tar", [_file(name, data) for name, data in contents.items()]), contents


def _extracted(target: Path) -> dict[str, bytes]:
    return {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "copy",
    ["kernel", "refused", "missing", "no-kernel-copy"],
    ids=["copy_file_range", "copy_file_range-refused", "no-copy_file_range", "pread-write"],
)
def test_file_pack_copies_every_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: str) -> None:
    """Whatever the kernel offers (other file systems refuse copy_file_range), the bytes are exact."""
    import errno
    import os

    if copy == "refused":

        def refuse(*args: object, **kwargs: object) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    elif copy == "missing":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    elif copy == "no-kernel-copy":  # neither copy_file_range nor sendfile: through a buffer
        monkeypatch.delattr(os, "copy_file_range", raising=False)
        monkeypatch.delattr(os, "sendfile", raising=False)
    archive, contents = _pack_like(tmp_path)
    target = tmp_path / "out"
    target.mkdir()
    extract_tar(archive, target, Reporter())
    assert _extracted(target) == contents


def test_compressed_tar_still_accepted(tmp_path: Path) -> None:
    """Only plain tars take the fast path; a gzip'd pack is read as a stream, as before."""
    _, contents = _pack_like(tmp_path)
    archive = tmp_path / "pack.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    target = tmp_path / "out"
    target.mkdir()
    extract_tar(archive, target, Reporter())
    assert _extracted(target) == contents


@pytest.mark.parametrize("as_stream", [False, True], ids=["file", "stream"])
def test_on_file_sees_each_complete_file(tmp_path: Path, as_stream: bool) -> None:
    """Hashing starts from this callback, so each file must be whole and closed when it runs."""
    archive, contents = _pack_like(tmp_path)
    target = tmp_path / "out"
    target.mkdir()
    seen: dict[str, bytes] = {}

    def on_file(path: Path) -> None:
        seen[path.relative_to(target).as_posix()] = path.read_bytes()

    if as_stream:
        with open(archive, "rb") as f:
            extract_tar(io.BufferedReader(f), target, Reporter(), on_file=on_file)  # type: ignore[arg-type]
    else:
        extract_tar(archive, target, Reporter(), on_file=on_file)
    assert seen == contents


def test_member_cut_short_on_the_file_path(tmp_path: Path) -> None:
    """The random-access reader notices a member running past the end of the file."""
    archive, _ = _pack_like(tmp_path)
    data = archive.read_bytes()
    archive.write_bytes(data[: data.index(bytes(range(256))) + 1000])
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(PackError, match="is damaged: unexpected end of data"):
        extract_tar(archive, target, Reporter())


@pytest.mark.parametrize("where", ["after-first-member", "garbled-header"])
def test_a_pack_cut_between_members_is_damaged(tmp_path: Path, where: str) -> None:
    """tarfile stops quietly at a header boundary; the pack must not look complete but small."""
    archive = raw_tar(
        tmp_path / "p.tar", [_file("pixi-pack.json", b"{}"), _file("channel/x.conda", b"x" * 5000)]
    )
    data = archive.read_bytes()
    second = 1024  # the first member: one header block and one data block
    if where == "after-first-member":
        archive.write_bytes(data[:second])
    else:
        archive.write_bytes(data[:second] + b"garbage!" * 64 + data[second + 512 :])
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(PackError, match="is damaged: it ends without tar's end-of-archive marker"):
        extract_tar(archive, target, Reporter())
