"""Self-extracting packs (``--create-executable``): a script that installs the pack it carries.

``environment.sh`` (linux-*, osx-*) is ``header.sh`` with this pack's facts filled in, then the
embedded installer's program when there is one, then the pack's tar itself, raw, to the end of the
file: the script streams it with ``tail -c +OFFSET`` (no base64 to decode, no copy of the archive),
and ``unpack``/``inspect`` read the file in place. Offsets are padded with spaces to a fixed width,
so the script's length, and so every offset, is known before anything is written; the file is
written like any archive (kernel copies, atomic rename) and is byte for byte the same for the same
inputs.

``environment.ps1`` (win-*) follows pixi-pack's layout, since PowerShell parses a whole script
before it runs it and cannot skip binary data: the script (CRLF), a line ``__END_HEADER__``, the
tar as one line of base64, ``__END_ARCHIVE__``, then the installer's program in base64. The
script decodes the archive from the file as a stream. The base64 is written as it is encoded, so
memory stays flat here too.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from importlib import resources
from typing import IO, TYPE_CHECKING, Final

from conda_pixi_pack import __version__
from conda_pixi_pack.fileio import atomic_file
from conda_pixi_pack.pack.writers import tar
from conda_pixi_pack.pack.writers.tree import Entry

if TYPE_CHECKING:
    from pathlib import Path

    from conda_pixi_pack.progress import Reporter

#: Width of every number written into the script (padded with spaces: a leading zero would make
#: it octal in shell arithmetic).
NUMBER_WIDTH: Final = 20
#: Mode of a self-extracting pack: it is run as a program.
EXECUTABLE_MODE: Final = 0o755
#: Lines of the PowerShell script end like this (pixi-pack's header.ps1 does too).
CRLF: Final = b"\r\n"
#: pixi-pack's markers around the base64 archive of a ``.ps1`` pack.
PS1_HEADER_END: Final = b"__END_HEADER__"
PS1_ARCHIVE_END: Final = b"__END_ARCHIVE__"
#: Bytes of the tar encoded per step (a multiple of 3, so no padding appears mid-stream).
ENCODE_CHUNK: Final = 3 * 1024 * 1024


@dataclass(frozen=True)
class Unpacker:
    """An installer program embedded in the pack: ``micromamba`` or ``conda-standalone``."""

    kind: str
    program: Path


@dataclass(frozen=True)
class ScriptFacts:
    """What the script says and checks before installing."""

    platform: str
    packages: int
    #: ``name==version`` of every wheel (installed with the environment's pip without this tool).
    wheels: tuple[str, ...]
    #: The environment has pip, so the wheels can be installed without this tool.
    has_pip: bool
    unpacker: Unpacker | None = None


def is_windows(platform: str) -> bool:
    return platform.startswith("win-")


def default_name(platform: str) -> str:
    """``environment.ps1`` for a Windows pack, ``environment.sh`` otherwise."""
    return "environment.ps1" if is_windows(platform) else "environment.sh"


def write_executable(root: Path, target: Path, facts: ScriptFacts, reporter: Reporter | None = None) -> int:
    """Write the self-extracting pack of the staging folder ``root`` to ``target`` (atomically,
    mode 0755); returns its size."""
    if is_windows(facts.platform):
        return _write_ps1(root, target, facts, reporter)
    program = _program_entry(facts.unpacker)
    placeholder = _sh_header(facts, target.name, 0, 0, 0, 0)
    program_size = program.size if program is not None else 0
    header = _sh_header(
        facts,
        target.name,
        unpacker_offset=len(placeholder),
        unpacker_size=program_size,
        archive_offset=len(placeholder) + program_size,
        archive_size=tar.tar_size(root),
    )
    assert len(header) == len(placeholder)  # fixed-width numbers: the offsets hold
    head: tuple[tar.Piece, ...] = (header,) if program is None else (header, program)
    return tar.write_archive(root, target, reporter, head=head, mode=EXECUTABLE_MODE)


def _program_entry(unpacker: Unpacker | None) -> Entry | None:
    if unpacker is None:
        return None
    return Entry(f"the embedded {unpacker.kind}", unpacker.program, False, unpacker.program.stat().st_size)


def _number(value: int) -> str:
    return f"{value:<{NUMBER_WIDTH}}"


def _sh_header(
    facts: ScriptFacts,
    script_name: str,
    unpacker_offset: int,
    unpacker_size: int,
    archive_offset: int,
    archive_size: int,
) -> bytes:
    """``header.sh`` with this pack's facts; every value is plain ASCII without quotes (package
    names and versions cannot hold them), so the substitutions need no escaping."""
    values = {
        "TOOL_VERSION": __version__,
        "SCRIPT_NAME": script_name.replace("'", ""),
        "PLATFORM": facts.platform,
        "PACKAGES": str(facts.packages),
        "WHEELS": " ".join(facts.wheels),
        "HAS_PIP": "1" if facts.has_pip else "0",
        "UNPACKER_KIND": facts.unpacker.kind if facts.unpacker is not None else "",
        "UNPACKER_OFFSET": _number(unpacker_offset),
        "UNPACKER_SIZE": _number(unpacker_size),
        "ARCHIVE_OFFSET": _number(archive_offset),
        "ARCHIVE_SIZE": _number(archive_size),
    }
    return _render("header.sh", values).encode("utf-8")


def _render(template: str, values: dict[str, str]) -> str:
    text = resources.files(__package__).joinpath(template).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    return text


def _write_ps1(root: Path, target: Path, facts: ScriptFacts, reporter: Reporter | None) -> int:
    values = {
        "TOOL_VERSION": __version__,
        "PLATFORM": facts.platform,
        "PACKAGES": str(facts.packages),
        "WHEELS": " ".join(facts.wheels),
        "HAS_PIP": "1" if facts.has_pip else "0",
        "UNPACKER_KIND": facts.unpacker.kind if facts.unpacker is not None else "",
        "ARCHIVE_BASE64": str(4 * -(-tar.tar_size(root) // 3)),
    }
    script = _render("header.ps1", values).replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    with atomic_file(target, durable=True) as out:
        out.write(script + PS1_HEADER_END + CRLF)
        encoder = _Base64Sink(out)
        tar.write_tar(root, encoder, reporter)  # type: ignore[arg-type]
        encoder.close()
        out.write(CRLF + PS1_ARCHIVE_END + CRLF)
        if facts.unpacker is not None:
            with facts.unpacker.program.open("rb") as program:
                encoder = _Base64Sink(out)
                while block := program.read(ENCODE_CHUNK):
                    encoder.write(block)
                encoder.close()
            out.write(CRLF)
        os.fchmod(out.fileno(), EXECUTABLE_MODE)
        size = out.tell()
    return size


class _Base64Sink:
    """A write-only stream that writes the base64 of what it is given to ``out``, as one line."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._pending = b""

    def write(self, data: bytes | memoryview) -> int:
        data = self._pending + bytes(data)
        usable = len(data) - len(data) % 3
        if usable:
            self._out.write(base64.b64encode(data[:usable]))
        self._pending = data[usable:]
        return len(data)

    def flush(self) -> None:
        """Nothing to do: the rest is written by :meth:`close` (it may need padding)."""

    def close(self) -> None:
        if self._pending:
            self._out.write(base64.b64encode(self._pending))
            self._pending = b""
