"""Opening packs: every kind of pack is opened here, for every consumer.

:func:`open_pack` tells what it was given (a folder made by ``pack --directory-only``, a plain tar
file, a self-extracting script, a compressed tar or standard input) and returns the reader for it
(:class:`~conda_pixi_pack.unpack.reader.base.OpenedPack`): ``extract`` writes the pack into a
private folder (``unpack``), ``members`` hands out each member's bytes without writing anything
(``inspect``). Both go through the same safety checks (``base.py``).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.unpack.reader.base import DAMAGED_HINT, EndAwareInfo, OpenedPack
from conda_pixi_pack.unpack.reader.folder import FolderPack
from conda_pixi_pack.unpack.reader.self_extracting import (
    HEADER_LIMIT,
    EmbeddedArchive,
    Prefixed,
    archive_offset,
    header_end,
    script_facts,
)
from conda_pixi_pack.unpack.reader.tar import TarFilePack, TarStreamPack

if TYPE_CHECKING:
    from collections.abc import Callable

    from conda_pixi_pack.artifacts import Extent
    from conda_pixi_pack.progress import Reporter

__all__ = ["OpenedPack", "extract_tar", "open_pack"]

#: How messages name a pack read from standard input.
STDIN_LABEL: Final = "standard input"
#: The first bytes of a zstd frame: pixi-pack 0.1 wrote packs as zstd-compressed tars.
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


def open_pack(source: Path | IO[bytes]) -> OpenedPack:
    """The reader for ``source``: a path (folder or file) or a readable binary stream (stdin).

    Raises PackError when it is missing, unreadable, or not a pack in any form this tool reads
    (naming zstd-compressed packs of pixi-pack 0.1 as such).
    """
    if isinstance(source, Path):
        if source.is_dir():
            return FolderPack(source)
        if not source.exists():
            raise PackError(f"pack {source} does not exist", "give the path of a pack file or folder")
        plain = TarFilePack.open(source)
        if plain is not None:
            return plain
    label = str(source) if isinstance(source, Path) else STDIN_LABEL
    opened: IO[bytes] | None = None  # a file opened here, closed with the reader
    try:
        opened = open(source, "rb") if isinstance(source, Path) else None
        stream = opened if opened is not None else source
        assert not isinstance(stream, Path)
        head = _read_head(stream)
        return _stream_reader(head, stream, label, opened)
    except OSError as exc:
        _close(opened)
        raise PackError(f"cannot read pack {label}: {exc.strerror or exc}") from None
    except BaseException:
        _close(opened)
        raise


def _stream_reader(head: bytes, stream: IO[bytes], label: str, opened: IO[bytes] | None) -> OpenedPack:
    """A reader for what ``head`` (the first bytes of ``stream``) shows."""
    offset = archive_offset(head)
    if offset is not None:  # one of our self-extracting packs: the tar follows the script, raw
        ours = _ours(head, stream, offset, label, opened)
        ours.kind, ours.script = "conda-pixi-pack script", script_facts(head)
        return ours
    script = header_end(head)
    try:
        if script is not None:  # pixi-pack --create-executable: the tar is inside, in base64
            embedded = EmbeddedArchive(Prefixed(head[script[0] :], stream), script[1])
            tar = tarfile.open(fileobj=embedded, mode="r|", tarinfo=EndAwareInfo)
            reader = TarStreamPack(tar, label, opened, embedded)
            reader.kind = "pixi-pack script"
            return reader
        # standard input, a compressed tar, or not a tar at all
        tar = tarfile.open(fileobj=Prefixed(head, stream), mode="r|*", tarinfo=EndAwareInfo)
        return TarStreamPack(tar, label, opened)
    except (tarfile.TarError, EOFError) as exc:
        if script is not None:
            raise PackError(f"pack {label} is damaged: {exc}", DAMAGED_HINT) from None
        if head.startswith(ZSTD_MAGIC):
            raise PackError(
                f"{label} is a zstd-compressed pack (as pixi-pack 0.1 wrote them)",
                f"decompress it first, e.g. `zstd -d {label} -o environment.tar`"
                if opened is not None
                else "decompress it on the way in, e.g. `zstd -dc PACK | conda-pixi-pack unpack -`",
            ) from None
        raise PackError(
            f"{label} is not a pack: it is not a tar archive ({exc})",
            "give a .tar pack, a pack folder, or a self-extracting .sh/.ps1 pack from pixi-pack",
        ) from None


def _ours(head: bytes, stream: IO[bytes], offset: int, label: str, opened: IO[bytes] | None) -> OpenedPack:
    """The tar of one of our self-extracting packs: read in place from a file, else from the
    stream once the script is skipped."""
    if opened is None:
        return _embedded_tar(head, stream, offset, label)
    ours = TarFilePack.open(Path(opened.name), offset)
    if ours is None:
        raise PackError(f"pack {label} is damaged: no archive at byte {offset}", DAMAGED_HINT)
    opened.close()
    return ours


def _embedded_tar(head: bytes, stream: IO[bytes], offset: int, label: str) -> OpenedPack:
    """The tar of one of our self-extracting packs read from a stream: the script is skipped."""
    skip = max(0, offset - len(head))
    while skip:
        data = stream.read(min(skip, HEADER_LIMIT))
        if not data:
            raise PackError(f"pack {label} is damaged: it ends before its archive", DAMAGED_HINT)
        skip -= len(data)
    try:
        tar = tarfile.open(fileobj=Prefixed(head[offset:], stream), mode="r|", tarinfo=EndAwareInfo)
    except (tarfile.TarError, EOFError) as exc:
        raise PackError(f"pack {label} is damaged: {exc}", DAMAGED_HINT) from None
    return TarStreamPack(tar, label)


def extract_tar(
    source: Path | IO[bytes],
    target: Path,
    reporter: Reporter,
    *,
    on_file: Callable[[Path], None] | None = None,
    leave: Callable[[Path], bool] | None = None,
) -> dict[Path, Extent]:
    """Open ``source`` and extract it into the empty folder ``target`` (see ``OpenedPack.extract``)."""
    with open_pack(source) as pack:
        return pack.extract(target, reporter, on_file=on_file, leave=leave)


def _read_head(stream: IO[bytes]) -> bytes:
    """The first bytes of ``stream``, enough to tell a self-extracting pack (or a zstd file)."""
    parts: list[bytes] = []
    size = 0
    while size < HEADER_LIMIT:
        data = stream.read(HEADER_LIMIT - size)
        if not data:
            break
        parts.append(data)
        size += len(data)
    return b"".join(parts)


def _close(handle: IO[bytes] | None) -> None:
    if handle is not None:
        handle.close()
