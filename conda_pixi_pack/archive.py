"""Deterministic pack archives: the same tree always gives the same bytes.

pixi-pack writes its tar with Rust's ``tar`` crate in ``HeaderMode::Deterministic``: GNU
headers, entries walked depth-first with siblings sorted by file name, directories as their
own entries, mtime 1153704088, uid/gid 0, no user or group names, mode 0o755 for directories
and 0o644 for files. This module writes the same shape with the standard library's
:mod:`tarfile` (py-rattler has no tar *writer*; its ``package_streaming`` only reads conda
packages), streaming every file from disk so that memory stays flat whatever the package size.
"""

from __future__ import annotations

import os
import secrets
import stat
import tarfile
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.layout import TAR_MTIME

if TYPE_CHECKING:
    from pathlib import Path

    from conda_pixi_pack.progress import Reporter, Task

#: Mode of every directory entry (and of every directory of a folder pack).
DIR_MODE: Final = 0o755
#: Mode of every file entry: packs hold packages and JSON, nothing executable.
FILE_MODE: Final = 0o644
#: GNU headers as tar-rs writes them; unlike PAX they carry no access/change times.
TAR_FORMAT: Final = tarfile.GNU_FORMAT
#: Copy buffer for streaming a file into the archive (bounded memory, few syscalls).
COPY_BUFFER: Final = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One member of a pack: its POSIX name inside the pack and where it is on disk."""

    name: str
    path: Path
    is_dir: bool
    size: int


def entries(root: Path) -> list[Entry]:
    """Every entry below ``root`` in archive order (depth-first, siblings sorted by name).

    This is walkdir's ``sort_by_file_name`` order that pixi-pack uses, so a directory is
    always followed by its contents. Anything but regular files and directories (a symlink,
    a socket) is refused: the staging tree is ours, so such an entry means something is wrong.
    """
    result: list[Entry] = []

    def walk(directory: Path, prefix: str) -> None:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name.encode("utf-8", "surrogateescape"))
        for child in children:
            name = f"{prefix}{child.name}"
            st = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                result.append(Entry(name, directory / child.name, True, 0))
                walk(directory / child.name, f"{name}/")
            elif stat.S_ISREG(st.st_mode):
                result.append(Entry(name, directory / child.name, False, st.st_size))
            else:
                raise PackError(f"cannot pack {name}: not a regular file or directory")

    walk(root, "")
    return result


class _CountingWriter:
    """File-like sink that counts bytes (the pack's size) and moves the progress bar."""

    def __init__(self, sink: IO[bytes], task: Task | None) -> None:
        self._sink = sink
        self._task = task
        self.written = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self.written += len(data)
        if self._task is not None:
            self._task.advance(len(data))
        return len(data)

    def flush(self) -> None:
        self._sink.flush()


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name)
    info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
    info.mode = DIR_MODE if entry.is_dir else FILE_MODE
    info.size = entry.size
    info.mtime = TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(root: Path, sink: IO[bytes], reporter: Reporter | None = None) -> int:
    """Stream the deterministic tar of ``root`` into ``sink``; returns the bytes written.

    ``sink`` may be a pipe (stream mode ``w|`` never seeks). Each file is copied in
    :data:`COPY_BUFFER` chunks from an open file object; nothing is read whole into memory.
    """
    members = entries(root)
    total = sum(e.size for e in members)
    task = reporter.task("Writing pack", total, unit="B") if reporter is not None else None
    counter = _CountingWriter(sink, task)
    try:
        # Stream mode pads the end to tarfile's 10 KiB record size; that is valid tar and
        # deterministic, only longer than tar-rs's two zero blocks.
        with tarfile.open(
            fileobj=counter,  # type: ignore[arg-type]
            mode="w|",
            format=TAR_FORMAT,
            encoding="utf-8",
            copybufsize=COPY_BUFFER,
        ) as tar:
            for member in members:
                info = _tarinfo(member)
                if member.is_dir:
                    tar.addfile(info)
                    continue
                with member.path.open("rb") as handle:
                    # The size in the header must match what is copied; a file changing
                    # under us would otherwise give a corrupt archive.
                    if os.fstat(handle.fileno()).st_size != member.size:
                        raise PackError(f"{member.name} changed while the pack was written")
                    tar.addfile(info, handle)
        counter.flush()
    finally:
        if task is not None:
            task.done()
    return counter.written


def _temp_name(target: Path, suffix: str) -> Path:
    """A hidden, unique sibling of ``target`` (same file system, so the final rename is atomic)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; best effort where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_archive(root: Path, target: Path, reporter: Reporter | None = None) -> int:
    """Write the tar of ``root`` to ``target`` atomically; returns its size.

    The tar goes to a hidden temporary file beside ``target``, is fsynced and then renamed
    over ``target`` (replacing an existing file, as pixi-pack does). On any failure, Ctrl-C
    included, the temporary file is removed and ``target`` is untouched.
    """
    temp = _temp_name(target, ".part")
    # os.open with 0o666 honours the umask, unlike mkstemp's 0o600.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            size = write_tar(root, handle, reporter)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return size


def normalise_tree(root: Path) -> int:
    """Give a folder pack the tar's modes and mtimes; returns the total size of its files."""
    members = entries(root)
    for entry in members:
        os.chmod(entry.path, DIR_MODE if entry.is_dir else FILE_MODE)
        os.utime(entry.path, (TAR_MTIME, TAR_MTIME))
    os.chmod(root, DIR_MODE)
    return sum(entry.size for entry in members)


def write_tree(root: Path, target: Path) -> int:
    """Turn the staging folder ``root`` into the folder pack ``target``; returns its size.

    ``root`` must be beside ``target`` (same file system): it is normalised and renamed in
    one step, so ``target`` is either absent or complete. An existing non-empty folder at
    ``target`` is never replaced (that would delete someone's files).
    """
    size = normalise_tree(root)
    try:
        os.replace(root, target)
    except OSError as exc:
        if target.is_dir():
            raise PackError(
                f"cannot write the pack folder: {target} already exists and is not empty",
                "remove it or choose another output with -o",
            ) from None
        raise PackError(f"cannot write the pack folder {target}: {exc.strerror or exc}") from None
    _fsync_dir(target.parent)
    return size
