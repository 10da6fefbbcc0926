"""Files written safely and copied fast: shared by the pack and the unpack flows.

Temporary names beside their target (so the final ``os.replace`` is atomic), files created with the
usual permissions, ranged copies done by the kernel where it can, and removals that finish under
Ctrl-C. Nothing here knows about packs.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

#: Read size when hashing or copying a file (constant memory whatever the file size).
CHUNK_SIZE: Final = 1 << 20
#: Suffix of files being written; never a valid entry name (packages end in .conda/.tar.bz2/.whl).
PARTIAL_SUFFIX: Final = ".part"
#: Largest single ``copy_file_range`` request (the kernel caps one call near 2 GiB anyway).
RANGE_CHUNK: Final = 1 << 30
#: Kernel copies between descriptors, in the order tried (``sendfile`` also writes into pipes).
KERNEL_COPY: Final = ("copy_file_range", "sendfile")
#: Errors of a kernel copy meaning "not for these two files" (a pipe, other file systems, old
#: kernels, sandboxes, O_APPEND): the next method takes over.
UNSUPPORTED_COPY: Final = frozenset(
    getattr(errno, name)
    for name in ("EXDEV", "EINVAL", "ENOSYS", "EBADF", "EOPNOTSUPP", "ENOTSUP", "ENOTSOCK", "EPERM")
    if hasattr(errno, name)
)


def temp_path(final: Path) -> Path:
    """A unique name beside ``final`` for a file being written (same folder: os.replace is atomic)."""
    return final.with_name(f".{final.name}.{os.urandom(6).hex()}{PARTIAL_SUFFIX}")


def create_new(path: Path) -> int:
    """Open a fresh file for writing; mode 0o666 minus umask (mkstemp's 0o600 would leak into packs)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


@contextmanager
def atomic_file(target: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A new file beside ``target`` to write, renamed over ``target`` when the block ends without
    an error (removed otherwise, Ctrl-C included): no reader ever sees half of it. ``durable``
    makes the rename itself durable (the folder is synced; the data is not, as with ``tar``)."""
    temp = temp_path(target)
    try:
        with os.fdopen(create_new(temp), "wb") as stream:
            yield stream
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    if durable:
        fsync_dir(target.parent)


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` into ``path`` by a rename, so that no reader ever sees half of it."""
    with atomic_file(path) as stream:
        stream.write(data)


def place(source: Path, target: Path) -> None:
    """Put ``source``'s content at ``target`` atomically: a hard link, or a copy across devices."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(target)
    try:
        try:
            os.link(source, temp)
        except OSError:  # EXDEV across file systems, EPERM/ENOTSUP where links are not allowed
            with source.open("rb") as src, os.fdopen(create_new(temp), "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_SIZE)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until everything is out (a pipe may take less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


#: Serialises the seek-then-read (or write) where the platform has no positioned I/O (Windows).
_SEEK_LOCK = threading.Lock()


@contextmanager
def _seeked(fd: int, offset: int) -> Iterator[None]:
    """``fd`` at ``offset`` for the block, under a lock, its position restored afterwards (a file
    object may be reading the same descriptor): positioned I/O where the platform has none."""
    with _SEEK_LOCK:
        position = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            yield
        finally:
            os.lseek(fd, position, os.SEEK_SET)


def pread(fd: int, count: int, offset: int) -> bytes:
    """``os.pread``; where it is missing (Windows), a seek and a read (see :func:`_seeked`)."""
    if hasattr(os, "pread"):
        return os.pread(fd, count, offset)
    with _seeked(fd, offset):
        return os.read(fd, count)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``fd``: ``os.pwrite``, or where it is missing
    (Windows) a seek and writes (see :func:`_seeked`)."""
    view = memoryview(data)
    if not hasattr(os, "pwrite"):
        with _seeked(fd, offset):
            write_all(fd, view)
        return
    while view:
        done = os.pwrite(fd, view, offset)
        view = view[done:]
        offset += done


def copy_range(src: int, dst: int, offset: int, size: int, *, at: int | None = None) -> None:
    """Copy ``size`` bytes at ``offset`` of ``src`` to the position of ``dst``, in the kernel if it
    can: ``copy_file_range`` between files, ``sendfile`` into a pipe (or where that is refused),
    else ``pread``/``write``. Raises EOFError when ``src`` ends first.

    With ``at``, the bytes go to that offset of the regular file ``dst`` instead, and no file
    position moves (threads may fill several parts of one file at once): ``copy_file_range``
    with explicit offsets, else ``pread``/``pwrite``.

    ``shutil.copyfileobj`` and friends copy whole files or go through Python buffers; these are
    the ranged copies the standard library has.
    """
    methods = [m for m in KERNEL_COPY if hasattr(os, m) and (at is None or m == "copy_file_range")]
    while size > 0:
        count = min(size, RANGE_CHUNK)
        done: int | None = None
        while methods and done is None:
            try:
                if methods[0] == "copy_file_range":
                    done = os.copy_file_range(src, dst, count, offset_src=offset, offset_dst=at)
                else:
                    done = os.sendfile(dst, src, offset, count)
            except OSError as exc:
                if exc.errno not in UNSUPPORTED_COPY:
                    raise
                # not for this pair (a pipe, another file system, an old kernel): nothing was
                # copied, the next method starts from the same offset
                methods.pop(0)
        if done is None:
            data = pread(src, min(count, CHUNK_SIZE), offset)
            if at is None:
                write_all(dst, data)
            else:
                pwrite_all(dst, data, at)
            done = len(data)
        if done == 0:
            raise EOFError("unexpected end of data")
        offset += done
        size -= done
        if at is not None:
            at += done


def fsync_dir(directory: Path) -> None:
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


def remove_uninterrupted(remove: Callable[[], None]) -> bool:
    """Run the removal ``remove`` to its end even if Ctrl-C or SIGTERM (a KeyboardInterrupt)
    comes meanwhile: it is called again and goes on where it stopped. True when one came, so
    that a caller that is not already handling one can raise it afterwards."""
    interrupted = False
    while True:
        try:
            remove()
            return interrupted
        except KeyboardInterrupt:
            interrupted = True
