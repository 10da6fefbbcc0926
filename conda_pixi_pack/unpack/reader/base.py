"""What every pack reader offers, and the checks every member of someone else's tar goes through.

A pack comes from someone else, so every member is checked before a byte of it is written or
handed on: an absolute name, a ``..`` component, a link, a device or fifo, or a second member with
the same name is refused with a :class:`PackError` naming the member. Packs (ours and pixi-pack's)
hold only folders and regular files, so links of any kind are refused outright rather than
resolved: there is no legitimate use for one and no way for a refused link to escape the target.

Python's extraction filters (``tarfile.data_filter``) would cover most of this, but they exist only
from 3.12 (and late 3.10/3.11 patch releases) and *sanitize* some members rather than refuse them;
the checks below behave the same on every supported Python.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

    from conda_pixi_pack.artifacts import Extent
    from conda_pixi_pack.progress import Reporter, Task

#: Why a tar that stopped early is damaged (tarfile itself stops quietly there).
END_MISSING: Final = "it ends without tar's end-of-archive marker (cut short or garbled)"
#: Shown with every refusal: a good pack never triggers one.
UNSAFE_HINT: Final = "the pack is damaged or was not written by `pack`/pixi-pack; do not use it"
#: Shown when the archive ends inside a member.
DAMAGED_HINT: Final = "copy the pack again"


@dataclass(frozen=True)
class Member:
    """One entry of a pack, checked: its POSIX name relative to the pack's root."""

    name: str
    size: int
    is_dir: bool


class OpenedPack:
    """A pack opened for reading (see :func:`conda_pixi_pack.unpack.reader.open_pack`).

    Use as a context manager: leaving it closes what was opened. Each pack can be read once,
    by one of :meth:`extract` or :meth:`members` (standard input cannot be read twice).
    """

    #: How messages name the pack: its path, or "standard input".
    label: str = "the pack"
    #: A folder pack is used where it is; None for a pack that must be extracted first.
    root: Path | None = None
    #: What was opened, for ``inspect``: "tar", "folder", "compressed tar", "conda-pixi-pack
    #: script" or "pixi-pack script".
    kind: str = "tar"
    #: What a self-extracting script of ours says of itself (``CPP_*`` lines: the embedded
    #: installer, the wheels...), without the prefix; empty for anything else.
    script: Mapping[str, str] = MappingProxyType({})

    def extract(
        self,
        target: Path,
        reporter: Reporter,
        *,
        on_file: Callable[[Path], None] | None = None,
        leave: Callable[[Path], bool] | None = None,
    ) -> dict[Path, Extent]:
        """Write every member into the empty folder ``target``.

        Files are created exclusively, so nothing already there is ever followed or overwritten.
        ``on_file`` is called with each regular file once it is complete and closed (the caller
        starts verifying it meanwhile). A reader with random access leaves the regular files
        whose target path ``leave`` accepts inside the pack: each gets an empty placeholder, and
        the returned mapping gives where its bytes are (``on_file`` is not called for them).
        """
        task = reporter.task("Extracting pack", None, "B")
        try:
            return self._extract(target, task, on_file, leave)
        except (tarfile.TarError, EOFError) as exc:  # cut short, garbled, undecodable
            raise damaged(self.label, exc) from None
        finally:
            task.done()

    def _extract(
        self,
        target: Path,
        task: Task,
        on_file: Callable[[Path], None] | None,
        leave: Callable[[Path], bool] | None,
    ) -> dict[Path, Extent]:
        """:meth:`extract`'s work; tar errors are reported as a damaged pack by the caller."""
        raise PackError(f"pack {self.label} is a folder, not a tar file")

    def members(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        """Every member in order, checked, with a stream of its bytes (None for a folder); the
        stream is valid until the next member is asked for. Nothing is written to disk."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what was opened (idempotent)."""

    def __enter__(self) -> OpenedPack:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def member_parts(name: str) -> tuple[str, ...]:
    """A member's path components, refusing anything that could land outside the target."""
    if not name or "\0" in name:
        raise PackError(f"unsafe pack: member {name!r} has an invalid name", UNSAFE_HINT)
    posix = PurePosixPath(name.replace("\\", "/"))
    # Windows drive letters ("C:...") are absolute there even without a leading slash.
    if posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise PackError(f"unsafe pack: member {name!r} has an absolute path", UNSAFE_HINT)
    parts = tuple(p for p in posix.parts if p != ".")
    if ".." in parts:
        raise PackError(f"unsafe pack: member {name!r} points outside the pack ('..')", UNSAFE_HINT)
    return parts


def _check_type(member: tarfile.TarInfo) -> None:
    if member.issym() or member.islnk():
        kind = "symbolic link" if member.issym() else "hard link"
        raise PackError(
            f"unsafe pack: member {member.name!r} is a {kind} (to {member.linkname!r}); "
            "packs hold only files and folders",
            UNSAFE_HINT,
        )
    if not (member.isfile() or member.isdir()):
        raise PackError(
            f"unsafe pack: member {member.name!r} is a device, fifo or other special file",
            UNSAFE_HINT,
        )
    if member.issparse():  # a few bytes that declare gigabytes of zeros: no writer of packs makes one
        raise PackError(
            f"unsafe pack: member {member.name!r} is a sparse file; packs hold only files and folders",
            UNSAFE_HINT,
        )


def safe_members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, tuple[str, ...]]]:
    """Each member with its path components, after every check; ``.`` itself is skipped."""
    seen: set[tuple[str, ...]] = set()
    for member in tar:
        parts = member_parts(member.name)
        _check_type(member)
        if not parts:  # "." itself: the target folder
            continue
        if parts in seen:
            raise PackError(f"unsafe pack: member {member.name!r} appears twice", UNSAFE_HINT)
        seen.add(parts)
        yield member, parts


def create(member: tarfile.TarInfo, path: Path) -> IO[bytes] | None:
    """The folder made, or the new file opened; a name already taken is a clash, never followed."""
    try:
        if member.isdir():
            path.mkdir(parents=True, exist_ok=True)
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        # "xb": never follow or replace something already there.
        return open(path, "xb")
    except (FileExistsError, NotADirectoryError):
        raise PackError(
            f"unsafe pack: member {member.name!r} clashes with another member", UNSAFE_HINT
        ) from None


def finish(member: tarfile.TarInfo, path: Path, on_file: Callable[[Path], None] | None) -> None:
    """A file is complete: keep its executable bit, and tell the caller."""
    if member.mode & 0o111:
        os.chmod(path, 0o755)
    if on_file is not None:
        on_file(path)


class EndAwareInfo(tarfile.TarInfo):
    """Records on its TarFile that the end-of-archive block was read.

    tarfile's iteration also stops, without an error, at a cut between members or at a garbled
    header; in stream mode nothing can be read again afterwards, so the header reader itself
    must say whether it met the real end (every reader uses it, see :func:`check_end`).
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EOFHeaderError:  # type: ignore[attr-defined]
            tarfile_.end_seen = True  # type: ignore[attr-defined]
            raise


def check_end(tar: tarfile.TarFile) -> None:
    """After the last member: only the end-of-archive block (zeros) says the whole pack was read."""
    if not getattr(tar, "end_seen", False):
        raise tarfile.ReadError(END_MISSING)


def damaged(label: str, exc: BaseException) -> PackError:
    """The error for a tar that cannot be read to its end."""
    return PackError(f"pack {label} is damaged: {exc}", DAMAGED_HINT)


def member_of(info: tarfile.TarInfo, parts: tuple[str, ...]) -> Member:
    """The public face of a checked tar member."""
    return Member("/".join(parts), info.size if info.isfile() else 0, info.isdir())


class _Guarded:
    """A member's stream whose read errors (the pack cut short, bad base64) are "damaged" errors."""

    def __init__(self, stream: IO[bytes], label: str) -> None:
        self._stream = stream
        self._label = label

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except (tarfile.TarError, EOFError) as exc:
            raise damaged(self._label, exc) from None


def guarded(stream: IO[bytes] | None, label: str) -> IO[bytes] | None:
    """``stream`` with its read errors reported as a damaged pack (see :class:`_Guarded`)."""
    return None if stream is None else _Guarded(stream, label)  # type: ignore[return-value]
