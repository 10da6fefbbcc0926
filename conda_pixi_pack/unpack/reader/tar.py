"""The two tar readers: random access for a pack file, streaming for everything else.

A pack given as a regular file that is a plain tar (what pack and pixi-pack write) is read with
random access: tarfile parses the headers and each member's bytes are copied by the kernel
(``os.copy_file_range``), never through Python, which makes extraction several times faster than
tarfile's own 10 KiB stream reads. Anything else (standard input, a compressed tar, the tar inside
a self-extracting script) is read in stream mode, which never seeks. Memory stays flat either way.

The random-access reader can also leave chosen members where they are: it then writes an empty
placeholder (so clashes are caught as for any file) and returns the member's :class:`Extent`, the
range of the pack file that holds its bytes. The rattler backend extracts package files straight
from there (install/seed.py), so the 500 MB of a large environment are not copied first.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from conda_pixi_pack.artifacts import Extent
from conda_pixi_pack.fileio import CHUNK_SIZE, copy_range
from conda_pixi_pack.unpack.reader.base import (
    EndAwareInfo,
    Member,
    OpenedPack,
    check_end,
    create,
    damaged,
    finish,
    guarded,
    member_of,
    safe_members,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conda_pixi_pack.progress import Task
    from conda_pixi_pack.unpack.reader.self_extracting import EmbeddedArchive


class TarFilePack(OpenedPack):
    """A plain tar in a regular file, read with random access (see the module docstring)."""

    def __init__(self, path: Path, handle: IO[bytes], tar: tarfile.TarFile) -> None:
        self.path = Path(os.path.abspath(path))
        self.label = str(path)
        self._handle = handle
        self._tar = tar

    @classmethod
    def open(cls, path: Path, offset: int = 0) -> TarFilePack | None:
        """``path`` opened when it is a regular file holding a plain tar from byte ``offset`` on
        (after the script of a self-extracting pack), else None (the stream reader then decides
        what it is, and reports errors in its own words). Member offsets are the file's."""
        try:
            handle = open(path, "rb")
        except OSError:
            return None
        try:
            if stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                handle.seek(offset)  # tarfile starts where the file object is
                return cls(path, handle, tarfile.open(fileobj=handle, mode="r:", tarinfo=EndAwareInfo))
        except (tarfile.TarError, EOFError, OSError):
            pass  # compressed, not a tar, or unreadable
        handle.close()
        return None

    def _extract(
        self,
        target: Path,
        task: Task,
        on_file: Callable[[Path], None] | None,
        leave: Callable[[Path], bool] | None,
    ) -> dict[Path, Extent]:
        fd = self._handle.fileno()
        end = os.fstat(fd).st_size
        left: dict[Path, Extent] = {}
        for member, parts in safe_members(self._tar):
            path = target.joinpath(*parts)
            if member.isfile() and member.offset_data + member.size > end:
                # tarfile's random-access reader stops quietly at a cut; the stream reader does not.
                raise tarfile.ReadError("unexpected end of data")
            out = create(member, path)
            if out is None:
                continue
            with out:
                if leave is not None and leave(path):
                    left[path] = Extent(self.path, member.offset_data, member.size)
                    continue  # the empty placeholder stays; its bytes stay in the pack
                copy_range(fd, out.fileno(), member.offset_data, member.size)
            finish(member, path, on_file)
            task.advance(member.size)
        check_end(self._tar)
        return left

    def members(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        end = os.fstat(self._handle.fileno()).st_size
        try:
            for member, parts in safe_members(self._tar):
                if member.isfile() and member.offset_data + member.size > end:
                    raise tarfile.ReadError("unexpected end of data")
                yield member_of(member, parts), guarded(self._tar.extractfile(member), self.label)
            check_end(self._tar)
        except (tarfile.TarError, EOFError) as exc:
            raise damaged(self.label, exc) from None

    def close(self) -> None:
        self._tar.close()
        self._handle.close()  # tarfile leaves a file object it was given open


class TarStreamPack(OpenedPack):
    """A tar read once, front to back: standard input, a compressed tar, or the tar decoded out
    of a self-extracting script (``embedded``, whose end marker is checked after the last member)."""

    def __init__(
        self,
        tar: tarfile.TarFile,
        label: str,
        opened: IO[bytes] | None = None,
        embedded: EmbeddedArchive | None = None,
    ) -> None:
        self.label = label
        self._tar = tar
        self._opened = opened
        self._embedded = embedded

    def _extract(
        self,
        target: Path,
        task: Task,
        on_file: Callable[[Path], None] | None,
        leave: Callable[[Path], bool] | None,
    ) -> dict[Path, Extent]:
        for member, parts in self._checked():
            path = target.joinpath(*parts)
            out = create(member, path)
            if out is None:
                continue
            data = self._tar.extractfile(member)
            assert data is not None  # regular files always have data
            with data, out:
                shutil.copyfileobj(data, out, CHUNK_SIZE)
            finish(member, path, on_file)
            task.advance(member.size)
        return {}

    def members(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        for member, parts in self._checked():
            yield member_of(member, parts), guarded(self._tar.extractfile(member), self.label)

    def _checked(self) -> Iterator[tuple[tarfile.TarInfo, tuple[str, ...]]]:
        """The safe members, then the checks that the whole pack was there; tar errors become
        one "damaged" error."""
        try:
            yield from safe_members(self._tar)
            check_end(self._tar)
            if self._embedded is not None:
                self._embedded.finish()
        except (tarfile.TarError, EOFError) as exc:
            raise damaged(self.label, exc) from None

    def close(self) -> None:
        self._tar.close()
        if self._opened is not None:
            self._opened.close()
