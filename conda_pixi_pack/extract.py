"""Safe extraction of a pack's outer tar into a private folder, fast for a file, streaming for a pipe.

The tar comes from someone else, so every member is checked before a byte of it is written:
an absolute name, a ``..`` component, a link, a device or fifo, or a second member with the same
name is refused with a :class:`PackError` naming the member. Packs (ours and pixi-pack's) hold only
folders and regular files, so links of any kind are refused outright rather than resolved: there
is no legitimate use for one and no way for a refused link to escape the target.

Python's extraction filters (``tarfile.data_filter``) would cover most of this, but they exist only
from 3.12 (and late 3.10/3.11 patch releases) and *sanitize* some members rather than refuse them;
the checks below behave the same on every supported Python.

Two readers share those checks. A pack given as a regular file that is a plain tar (what pack and
pixi-pack write) is read with random access: tarfile parses the headers and each member's bytes
are copied by the kernel (``os.copy_file_range``), never through Python, which makes extraction
several times faster than tarfile's own 10 KiB stream reads. Anything else (standard input, a
compressed tar) is read in stream mode (``r|*``), which never seeks. Memory stays flat either way.

The random-access reader can also leave chosen members where they are: it then writes an empty
placeholder (so clashes are caught as for any file) and returns the member's :class:`Extent`, the
range of the pack file that holds its bytes. The rattler backend extracts package files straight
from there (install/seed.py), so the 500 MB of a large environment are not copied first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.self_extracting import HEADER_LIMIT, EmbeddedArchive, Prefixed, header_end

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from conda_pixi_pack.progress import Reporter, Task

#: Copy buffer for member data; large enough to keep syscalls cheap, small enough to stay flat.
CHUNK_SIZE: Final = 1 << 20
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
#: The first bytes of a zstd frame: pixi-pack 0.1 wrote packs as zstd-compressed tars.
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
#: Why a tar that stopped early is damaged (tarfile itself stops quietly there).
END_MISSING: Final = "it ends without tar's end-of-archive marker (cut short or garbled)"
#: Shown with every refusal: a good pack never triggers one.
UNSAFE_HINT: Final = "the pack is damaged or was not written by `pack`/pixi-pack; do not use it"
#: Shown when the archive ends inside a member.
DAMAGED_HINT: Final = "copy the pack again"


@dataclass(frozen=True)
class Extent:
    """A member left inside the pack: its ``size`` bytes start at ``offset`` of the pack ``file``."""

    file: Path
    offset: int
    size: int


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    """The member's path components, refusing anything that could land outside the target."""
    name = member.name
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


def _safe_members(tar: tarfile.TarFile, target: Path) -> Iterator[tuple[tarfile.TarInfo, Path]]:
    """Each member with the path it goes to, after every check; ``.`` itself is skipped."""
    seen: set[tuple[str, ...]] = set()
    for member in tar:
        parts = _member_parts(member)
        _check_type(member)
        if not parts:  # "." itself: the target folder
            continue
        if parts in seen:
            raise PackError(f"unsafe pack: member {member.name!r} appears twice", UNSAFE_HINT)
        seen.add(parts)
        yield member, target.joinpath(*parts)


def _create(member: tarfile.TarInfo, path: Path) -> IO[bytes] | None:
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


def _finish(member: tarfile.TarInfo, path: Path, on_file: Callable[[Path], None] | None) -> None:
    if member.mode & 0o111:
        os.chmod(path, 0o755)
    if on_file is not None:
        on_file(path)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until everything is out (a pipe may take less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def copy_range(src: int, dst: int, offset: int, size: int) -> None:
    """Copy ``size`` bytes at ``offset`` of ``src`` to the position of ``dst``, in the kernel if it
    can: ``copy_file_range`` between files, ``sendfile`` into a pipe (or where that is refused),
    else ``pread``/``write``. Raises EOFError when ``src`` ends first.

    ``shutil.copyfileobj`` and friends copy whole files or go through Python buffers; these are
    the ranged copies the standard library has.
    """
    methods = [m for m in KERNEL_COPY if hasattr(os, m)]
    while size > 0:
        count = min(size, RANGE_CHUNK)
        done: int | None = None
        while methods and done is None:
            try:
                if methods[0] == "copy_file_range":
                    done = os.copy_file_range(src, dst, count, offset_src=offset)
                else:
                    done = os.sendfile(dst, src, offset, count)
            except OSError as exc:
                if exc.errno not in UNSUPPORTED_COPY:
                    raise
                # not for this pair (a pipe, another file system, an old kernel): nothing was
                # copied, the next method starts from the same offset
                methods.pop(0)
        if done is None:
            data = os.pread(src, min(count, CHUNK_SIZE), offset)
            write_all(dst, data)
            done = len(data)
        if done == 0:
            raise EOFError("unexpected end of data")
        offset += done
        size -= done


def _extract_seekable(
    tar: tarfile.TarFile,
    source: Path,
    fd: int,
    target: Path,
    task: Task,
    on_file: Callable[[Path], None] | None,
    leave: Callable[[Path], bool] | None,
) -> dict[Path, Extent]:
    end = os.fstat(fd).st_size
    left: dict[Path, Extent] = {}
    for member, path in _safe_members(tar, target):
        if member.isfile() and member.offset_data + member.size > end:
            # tarfile's random-access reader stops quietly at a cut; the stream reader does not.
            raise tarfile.ReadError("unexpected end of data")
        out = _create(member, path)
        if out is None:
            continue
        with out:
            if leave is not None and not member.issparse() and leave(path):
                left[path] = Extent(source, member.offset_data, member.size)
                continue  # the empty placeholder stays; its bytes stay in the pack
            if member.issparse():  # data is not one contiguous range: let tarfile rebuild it
                data = tar.extractfile(member)
                assert data is not None  # regular files always have data
                with data:
                    shutil.copyfileobj(data, out, CHUNK_SIZE)
            else:
                copy_range(fd, out.fileno(), member.offset_data, member.size)
        _finish(member, path, on_file)
        task.advance(member.size)
    _check_end(tar)
    return left


class _EndAwareInfo(tarfile.TarInfo):
    """Records on its TarFile that the end-of-archive block was read.

    tarfile's iteration also stops, without an error, at a cut between members or at a garbled
    header; in stream mode nothing can be read again afterwards, so the header reader itself
    must say whether it met the real end (both readers use it, see :func:`_check_end`).
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EOFHeaderError:  # type: ignore[attr-defined]
            tarfile_.end_seen = True  # type: ignore[attr-defined]
            raise


def _extract_stream(
    tar: tarfile.TarFile, target: Path, task: Task, on_file: Callable[[Path], None] | None
) -> None:
    for member, path in _safe_members(tar, target):
        out = _create(member, path)
        if out is None:
            continue
        data = tar.extractfile(member)
        assert data is not None  # regular files always have data
        with data, out:
            shutil.copyfileobj(data, out, CHUNK_SIZE)
        _finish(member, path, on_file)
        task.advance(member.size)
    _check_end(tar)


def _check_end(tar: tarfile.TarFile) -> None:
    """After the last member: only the end-of-archive block (zeros) says the whole pack was read."""
    if not getattr(tar, "end_seen", False):
        raise tarfile.ReadError(END_MISSING)


def _open_plain_tar(source: Path) -> tuple[tarfile.TarFile, IO[bytes]] | None:
    """``source`` opened for random access when it is a regular file holding a plain tar, else None."""
    try:
        f = open(source, "rb")
    except OSError:
        return None  # the stream reader reports the error in its own words
    try:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            f.close()
            return None
        return tarfile.open(fileobj=f, mode="r:", tarinfo=_EndAwareInfo), f
    except (tarfile.TarError, EOFError, OSError):
        f.close()  # compressed, not a tar, or unreadable: the stream reader decides
        return None


def extract_tar(
    source: Path | IO[bytes],
    target: Path,
    reporter: Reporter,
    *,
    on_file: Callable[[Path], None] | None = None,
    leave: Callable[[Path], bool] | None = None,
) -> dict[Path, Extent]:
    """Extract the tar ``source`` (a file or a readable binary stream) into the folder ``target``.

    ``target`` must exist and be empty (a fresh temporary folder): files are created exclusively,
    so nothing already there is ever followed or overwritten. ``on_file`` is called with each
    regular file once it is complete and closed (the caller starts verifying it meanwhile).

    Where ``source`` is a plain tar file, regular files whose target path ``leave`` accepts are
    not copied: each gets an empty placeholder, and the returned mapping gives where its bytes
    are in ``source`` (``on_file`` is not called for them). Other sources extract everything
    and return an empty mapping.
    """
    label = str(source) if isinstance(source, Path) else "standard input"
    plain = _open_plain_tar(source) if isinstance(source, Path) else None
    embedded: EmbeddedArchive | None = None
    opened: IO[bytes] | None = None  # a file opened here, closed at the end
    if plain is None:
        try:
            opened = open(source, "rb") if isinstance(source, Path) else None
            stream = opened if opened is not None else source
            assert not isinstance(stream, Path)
            head = _read_head(stream)
        except FileNotFoundError:
            raise PackError(f"pack {label} does not exist", "give the path of a pack file") from None
        except IsADirectoryError:  # pragma: no cover - unpack() handles folders before this
            raise PackError(f"pack {label} is a folder, not a tar file") from None
        except OSError as exc:
            _close(opened)
            raise PackError(f"cannot read pack {label}: {exc.strerror or exc}") from None
        script = header_end(head)
        try:
            if script is not None:  # pixi-pack --create-executable: the tar is inside, in base64
                embedded = EmbeddedArchive(Prefixed(head[script[0] :], stream), script[1])
                tar = tarfile.open(fileobj=embedded, mode="r|", tarinfo=_EndAwareInfo)
            else:  # standard input, a compressed tar, or not a tar at all
                tar = tarfile.open(fileobj=Prefixed(head, stream), mode="r|*", tarinfo=_EndAwareInfo)
        except (tarfile.TarError, EOFError) as exc:
            _close(opened)
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
        except OSError as exc:
            _close(opened)
            raise PackError(f"cannot read pack {label}: {exc.strerror or exc}") from None
    else:
        tar = plain[0]
    task = reporter.task("Extracting pack", None, "B")
    try:
        # tarfile leaves a file object it was given open: close that one too.
        with tar, plain[1] if plain is not None else contextlib.nullcontext():
            if plain is not None:
                assert isinstance(source, Path)
                pack = Path(os.path.abspath(source))
                return _extract_seekable(tar, pack, plain[1].fileno(), target, task, on_file, leave)
            else:
                _extract_stream(tar, target, task, on_file)
                if embedded is not None:
                    embedded.finish()
                return {}
    except (tarfile.TarError, EOFError) as exc:
        raise PackError(f"pack {label} is damaged: {exc}", DAMAGED_HINT) from None
    finally:
        _close(opened)
        task.done()


def fill_placeholders(extents: Mapping[Path, Extent]) -> None:
    """Copy each member left in the pack into its placeholder, for a reader that needs files."""
    opened: dict[Path, int] = {}
    try:
        for path, extent in extents.items():
            if extent.file not in opened:
                opened[extent.file] = os.open(extent.file, os.O_RDONLY)
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
            try:
                copy_range(opened[extent.file], fd, extent.offset, extent.size)
            finally:
                os.close(fd)
    finally:
        for fd in opened.values():
            os.close(fd)


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
