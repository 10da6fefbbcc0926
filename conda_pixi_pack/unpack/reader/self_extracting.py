"""Self-extracting packs: a script with the pack's tar inside.

Ours (``pack --create-executable``, see pack/writers/executable.py) carry the tar raw at the end
of the file, at the offset the script names in a line ``CPP_ARCHIVE_OFFSET=<bytes>``: it is read
like any tar, from there (:func:`archive_offset`). pixi-pack's carry it in base64:

The layout, from pixi-pack's ``create_self_extracting_executable`` (src/pack.rs) and its
``src/header.sh``/``src/header.ps1``: the script's text up to a line ``@@END_HEADER@@``
(``__END_HEADER__`` in the PowerShell one, whose lines end in CRLF), a line ending, the tar as
ONE line of standard base64, a line ending, a line ``@@END_ARCHIVE@@`` (``__END_ARCHIVE__``) and
the base64 of a pixi-unpack executable. That executable is ignored here: our own installers make
the environment. Markers also appear *inside* the scripts' code (``grep "^@@END_HEADER@@"``), so
only a line that is exactly a marker counts.

The archive is decoded while tarfile reads it, a few MiB at a time: memory stays flat whatever
the pack's size, and the tar goes through the same safety checks as any other pack.
"""

from __future__ import annotations

import binascii
import re
import sys
import tarfile
from typing import IO, Final

#: End-of-header marker line -> end-of-archive marker line (sh, ps1).
MARKERS: Final = {b"@@END_HEADER@@": b"@@END_ARCHIVE@@", b"__END_HEADER__": b"__END_ARCHIVE__"}
#: The scripts are ~4 KiB; a marker further in than this is not a pixi-pack script.
HEADER_LIMIT: Final = 256 * 1024
#: Base64 characters decoded per step (a multiple of 4).
ENCODED_CHUNK: Final = 4 * 1024 * 1024
#: The marker line; trailing blanks allowed, as the script's own ``grep "^@@END_HEADER@@"`` does.
_HEADER_END = re.compile(rb"^(@@END_HEADER@@|__END_HEADER__)[ \t]*\r?\n", re.MULTILINE)
#: Where a tar header (ustar or GNU) has its magic: a tar is never taken for a script, even
#: when one of its files holds a marker line.
TAR_MAGIC_AT: Final = slice(257, 262)
_BLANK = b"\r\n"


#: The signature of our scripts, and the line naming where their tar starts.
_OURS: Final = re.compile(rb"\A#![^\n]*\n(?:#[^\n]*\n)*# conda-pixi-pack self-extracting pack \(format 1\)")
_OFFSET: Final = re.compile(rb"^CPP_ARCHIVE_OFFSET=(\d{1,19}) *$", re.MULTILINE)


def archive_offset(head: bytes) -> int | None:
    """Where the tar starts in one of our self-extracting packs (``head`` is its first bytes), or
    None when ``head`` is not the start of one."""
    if _OURS.match(head) is None:
        return None
    found = _OFFSET.search(head, 0, HEADER_LIMIT)
    return int(found.group(1)) if found is not None else None


#: A fact our script states about itself: ``CPP_<NAME>=<value>`` (quoted or padded).
_FACT: Final = re.compile(rb"^CPP_([A-Z_]+)='?([^'\n]*?)'? *$", re.MULTILINE)


def script_facts(head: bytes) -> dict[str, str]:
    """The ``CPP_*`` values one of our scripts states, lower-cased names (``unpacker_kind``...)."""
    end = head.find(b"\n@@CONDA_PIXI_PACK_PAYLOAD@@\n")
    text = head[: end if end >= 0 else HEADER_LIMIT]
    return {m.group(1).decode().lower(): m.group(2).decode("utf-8", "replace") for m in _FACT.finditer(text)}


def header_end(head: bytes) -> tuple[int, bytes] | None:
    """Where the archive starts in ``head`` (the first bytes of a file) and the end marker that
    closes it; None when ``head`` is not the start of a self-extracting pack."""
    if head[TAR_MAGIC_AT] == b"ustar":
        return None
    match = _HEADER_END.search(head, 0, HEADER_LIMIT)
    if match is None:
        return None
    return match.end(), MARKERS[match.group(1)]


def _line_end(data: bytes) -> int:
    """Index of the first CR or LF in ``data``, or -1 (two memchr scans: a regex is 20x slower)."""
    found = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(found) if found else -1


def _decode(data: bytes) -> bytes:
    """Strict base64 where Python has it (3.11+): a damaged pack fails here, not later."""
    try:
        if sys.version_info >= (3, 11):
            return binascii.a2b_base64(data, strict_mode=True)
        return binascii.a2b_base64(data)  # 3.10 skips stray bytes; tar and checksums catch them
    except binascii.Error as exc:
        raise tarfile.ReadError(f"its embedded archive is not valid base64 ({exc})") from None


class EmbeddedArchive:
    """The tar of a self-extracting pack as a readable stream (``read`` is all tarfile needs).

    ``stream`` is positioned just after the end-of-header marker line. Errors are
    :class:`tarfile.ReadError`, which the extraction reports as a damaged pack.
    """

    def __init__(self, stream: IO[bytes], end_marker: bytes) -> None:
        self._stream = stream
        self._end_marker = end_marker
        self._started = False
        self._line_done = False
        self._carry = b""  # base64 characters waiting for a complete group of four
        self._after = b""  # what followed the archive's line (the end marker, normally)
        self._buffer = b""
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        parts = []
        while size != 0:
            if self._offset >= len(self._buffer):
                if self._line_done:
                    break
                self._buffer, self._offset = self._decode_more(), 0
                continue
            end = len(self._buffer) if size < 0 else min(len(self._buffer), self._offset + size)
            parts.append(self._buffer[self._offset : end])
            if size > 0:
                size -= end - self._offset
            self._offset = end
        return b"".join(parts)

    def _decode_more(self) -> bytes:
        chunk = self._stream.read(ENCODED_CHUNK)
        if not chunk:  # the end of the file before the end of the archive's line: it was cut
            self._line_done = True
            where = "inside" if self._started else "before"
            raise tarfile.ReadError(f"it ends {where} its embedded archive")
        if not self._started:
            chunk = chunk.lstrip(_BLANK)  # the line ending pixi-pack writes after the header
            if not chunk:
                return b""
            self._started = True
        end = _line_end(chunk)
        if end >= 0:
            self._after = chunk[end:]
            chunk = chunk[:end]
            self._line_done = True
            following = self._after.lstrip(_BLANK)[: len(self._end_marker)]
            if following and not self._end_marker.startswith(following):
                # pixi-pack writes the archive as ONE line; a wrapped one (base64's default 76
                # columns) is not what it writes, and decoding only its first line would mislead.
                raise tarfile.ReadError(
                    f"its archive is not one line of base64 followed by {self._end_marker.decode()}, "
                    "as pixi-pack writes it"
                )
        data = self._carry + chunk
        usable = len(data) if self._line_done else len(data) - len(data) % 4
        self._carry = data[usable:]
        return _decode(data[:usable])

    def finish(self) -> None:
        """Read past the archive and check the end marker: without it the file was cut short
        (a tar can look complete at a cut in its end padding)."""
        while not self._line_done:
            self._decode_more()
        after = self._after.lstrip(_BLANK)
        while len(after) < len(self._end_marker):
            more = self._stream.read(len(self._end_marker))
            if not more:
                break
            after = (after + more).lstrip(_BLANK)
        if not after.startswith(self._end_marker):
            raise tarfile.ReadError(f"its archive is not followed by {self._end_marker.decode()}")


class Prefixed:
    """``head`` (bytes already read to look at the file) followed by the rest of ``stream``."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = head
        self._offset = 0
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._offset < len(self._head):
            end = len(self._head) if size < 0 else min(len(self._head), self._offset + size)
            data = self._head[self._offset : end]
            self._offset = end
            return data + self._stream.read() if size < 0 else data
        return self._stream.read(size)
