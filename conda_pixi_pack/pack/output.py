"""Where a pack goes: the output modes, and the policy for ``-o`` (checked before any download).

A pack is first assembled in a staging folder, then handed to its output, which writes it with
the matching writer: an archive (renamed into place, so no one ever sees half of one), a folder
(the staging folder itself, renamed), or a stream (standard output, a device, a fifo: written
through, since there is nothing to rename). Nothing appears at the output path unless the whole
pack succeeded, and an output that is one of the pack's own inputs is refused: the rename would
destroy it.
"""

from __future__ import annotations

import enum
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.pack.writers import tar

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from contextlib import AbstractContextManager

    from conda_pixi_pack.pack.writers.executable import ScriptFacts
    from conda_pixi_pack.progress import Reporter

#: A typed ``-o`` ending in one of these names a folder (``/`` counts on Windows too).
SEPARATORS: Final = tuple(sep for sep in (os.sep, os.altsep) if sep)
#: Standard output's descriptor: ``-o /dev/stdout`` writes into it directly (see :class:`StreamOutput`).
STDOUT_FD: Final = 1


class OutputMode(enum.Enum):
    """What a pack is written as (pixi-pack's ``OutputMode``)."""

    #: A tar file, renamed into place (the default).
    ARCHIVE = "archive"
    #: A folder (``--directory-only``), renamed into place.
    FOLDER = "folder"
    #: A tar streamed to standard output (``-o -``).
    STREAM = "stream"
    #: A self-extracting script with the tar inside (``--create-executable``), renamed into place.
    EXECUTABLE = "executable"


def default_output(mode: OutputMode, platform: str) -> Path | None:
    """pixi-pack's default names: ``environment.tar``, ``environment/``, ``environment.sh`` (or
    ``.ps1`` for a Windows pack); None for standard output."""
    if mode is OutputMode.STREAM:
        return None
    if mode is OutputMode.EXECUTABLE:
        from conda_pixi_pack.pack.writers import executable  # the script's writer: only its packs

        return Path(executable.default_name(platform))
    return Path("environment" if mode is OutputMode.FOLDER else "environment.tar")


class Output:
    """One pack's destination: where staging goes, what may not be overwritten, how it is written."""

    #: The path written (None for standard output).
    target: Path | None = None

    def make_staging(self) -> Path:
        """A private folder to assemble the pack in: beside a renamed target (one file system, so
        the final rename is atomic), else in the system's temporary folder."""
        return make_staging(None)

    def refuse_overlap(self, inputs: Iterable[tuple[Path, str]], cache_dir: Path | None) -> None:
        """Refuse an output that would replace one of the pack's ``inputs`` or lie in its cache."""

    def write(self, staging: Path, reporter: Reporter, facts: ScriptFacts) -> int:
        """Write the pack assembled in ``staging`` (``facts`` describe it); returns its size in bytes."""
        raise NotImplementedError

    def replaced(self) -> bool:
        """Whether the new pack is already in place (asked after Ctrl-C, to say so)."""
        return False

    #: Whether :meth:`write_around` can write this output: a file whose parts can be filled in
    #: any order (not a folder, a stream or a script with its installer).
    fills_in_place = False

    def write_around(
        self, staging: Path, holes: Mapping[str, int], reporter: Reporter
    ) -> AbstractContextManager[tar.Holes]:
        """Write the pack of ``staging`` and of the files ``holes`` names (not on disk), leaving
        those files' slots for the caller to fill within the block (see :attr:`fills_in_place`)."""
        raise NotImplementedError


class _Renamed(Output):
    """An output renamed into place: an archive, a folder or a self-extracting script."""

    def __init__(self, target: Path, mode: OutputMode) -> None:
        self.target = target
        self.mode = mode
        self.is_folder = mode is OutputMode.FOLDER
        # filled with os.pwrite, which Windows lacks (its packs take the staging folder)
        self.fills_in_place = mode is OutputMode.ARCHIVE and hasattr(os, "pwrite")
        self._before: tuple[int, int] | None = None

    def make_staging(self) -> Path:
        return make_staging(self.target)

    def refuse_overlap(self, inputs: Iterable[tuple[Path, str]], cache_dir: Path | None) -> None:
        target = self.target
        assert target is not None
        for path, what in inputs:
            if _same_file(target, path):
                raise PackError(
                    f"the output {target} is {what} of this pack", "choose another output with -o"
                )
        if cache_dir is not None:
            cache_root = Path(os.path.realpath(cache_dir))
            # A pack inside the cache could replace an entry; a cache inside a folder pack would be packed.
            inside = target.is_relative_to(cache_root)
            if inside or (self.is_folder and cache_root.is_relative_to(target)):
                raise PackError(
                    f"the output {target} and the --use-cache folder {cache_root} overlap",
                    "choose another output with -o",
                )

    def write(self, staging: Path, reporter: Reporter, facts: ScriptFacts) -> int:
        assert self.target is not None
        self._before = _identity(self.target)
        if self.is_folder:
            from conda_pixi_pack.pack.writers import folder  # only a folder output needs it

            reporter.info(f"Moving the pack folder into place at {self.target}")
            return folder.write_tree(staging, self.target)
        reporter.info(f"Writing {self.target}")
        if self.mode is OutputMode.EXECUTABLE:
            from conda_pixi_pack.pack.writers import executable

            return executable.write_executable(staging, self.target, facts, reporter)
        return tar.write_archive(staging, self.target, reporter)

    def write_around(
        self, staging: Path, holes: Mapping[str, int], reporter: Reporter
    ) -> AbstractContextManager[tar.Holes]:
        assert self.target is not None and self.fills_in_place
        self._before = _identity(self.target)
        reporter.info(f"Writing {self.target}")
        return tar.archive_around(staging, self.target, holes)

    def replaced(self) -> bool:
        """True once a new file or folder (a new inode: the rename) is at the target."""
        return self.target is not None and _identity(self.target) not in (None, self._before)


class StreamOutput(Output):
    """A tar streamed into standard output (``target`` None), a device, fifo or socket."""

    def __init__(self, target: Path | None) -> None:
        self.target = target

    def write(self, staging: Path, reporter: Reporter, facts: ScriptFacts) -> int:
        if self.target is None:
            return _to_stdout(staging, reporter)
        reporter.info(f"Writing the pack into {self.target}")
        return _to_stream(staging, self.target, reporter)


def plan_output(mode: OutputMode, output: Path | None, typed: str | None = None) -> Output:
    """The output for ``mode`` and ``-o`` (``typed`` as given: a trailing ``/`` names a folder),
    checked before anything is downloaded. A symbolic link is followed (the pack replaces the
    file it points to, not the link); a device or fifo (``-o /dev/stdout``, ``-o /dev/null``, a
    named pipe) is written through: replacing it by a renamed file would destroy the node and
    lose the data."""
    if mode is OutputMode.STREAM:
        return StreamOutput(None)
    assert output is not None
    if typed and typed.endswith(SEPARATORS) and mode is not OutputMode.FOLDER:
        raise PackError(
            f"cannot write {typed}: a file name is needed, not a folder",
            "give a file name with -o, or use --directory-only to write a folder",
        )
    # Checked on the path as given (stat follows links): /dev/stdout on a pipe leads to
    # /proc/PID/fd/1 -> "pipe:[…]", which stat can open but realpath turns into a missing path.
    given = Path(os.path.abspath(output))
    if is_special(given):
        if mode is not OutputMode.ARCHIVE:
            raise PackError(f"cannot write a pack {mode.value} into {given}: it is a device or pipe")
        return StreamOutput(given)
    target = Path(os.path.realpath(given))
    _check_parent(target)
    if mode is OutputMode.FOLDER:
        _check_folder_target(target)
    elif target.is_dir():
        raise PackError(
            f"cannot write {target}: it is a folder",
            "give a file name with -o, or use --directory-only to write a folder",
        )
    return _Renamed(target, mode)


def _check_parent(target: Path) -> None:
    parent = target.parent
    if not parent.is_dir():
        raise PackError(
            f"cannot write {target}: the folder {parent} does not exist",
            "create it first or choose another output with -o",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PackError(
            f"cannot write {target}: the folder {parent} is not writable",
            "choose another output with -o",
        )


def _check_folder_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise PackError(
            f"cannot write the pack folder {target}: a file of that name exists",
            "remove it or choose another output with -o",
        )
    if target.is_dir() and any(target.iterdir()):
        raise PackError(
            f"cannot write the pack folder {target}: it exists and is not empty",
            "remove it or choose another output with -o",
        )


def is_special(path: Path) -> bool:
    """A character device, fifo or socket: something to write into, never to replace."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISBLK(mode)


def file_url_path(url: str) -> Path:
    """The local path of a ``file://`` URL (urllib.request is imported only for such locks)."""
    from urllib.request import url2pathname

    return Path(url2pathname(urlsplit(url).path))


def _same_file(a: Path, b: Path) -> bool:
    """One file by identity where both exist (symbolic and hard links), else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def make_staging(target: Path | None) -> Path:
    """A private folder beside ``target`` (None: in the system's temporary folder)."""
    try:
        if target is None:
            return Path(tempfile.mkdtemp(prefix="conda-pixi-pack-"))
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        where = target.parent if target is not None else tempfile.gettempdir()
        raise PackError(f"cannot create a temporary folder in {where}: {exc.strerror or exc}") from None


def names_descriptor(path: str | Path | None, fd: int) -> bool:
    """Whether ``path`` (``/dev/stdout``, or any other name) is the very file descriptor ``fd`` is
    open on. The descriptor itself is asked: ``sys.stdout`` may be None (closed) or replaced."""
    if path is None:
        return False
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except (OSError, ValueError):  # no such descriptor (closed), or the path went away
        return False


def _to_stream(root: Path, target: Path, reporter: Reporter) -> int:
    """Stream the tar into a device, fifo or socket (there is nothing to rename atomically).

    Our own standard output (``-o /dev/stdout``) is written through its descriptor: a socket
    there cannot be opened again by name (ENXIO), a pipe or device can but need not be.
    """
    try:
        own = names_descriptor(target, STDOUT_FD)
        with open(os.dup(STDOUT_FD) if own else target, "wb") as sink:
            return tar.write_tar(root, sink, reporter)
    except BrokenPipeError:
        raise PackError(f"{target} was closed before the pack was written") from None
    except OSError as exc:
        raise PackError(f"cannot write the pack into {target}: {exc.strerror or exc}") from None


def _to_stdout(root: Path, reporter: Reporter) -> int:
    """Stream the tar to standard output; nothing else may be written there."""
    sink = sys.stdout.buffer
    try:
        size = tar.write_tar(root, sink, reporter)
        sink.flush()
    except BrokenPipeError:
        raise PackError("standard output was closed before the pack was written") from None
    return size
