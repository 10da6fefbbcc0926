"""Where fetched files go: a folder (one file each), or their slots in the archive being written.

The fetcher (``download.py``) writes every attempt of a download through an :class:`Attempt`,
keeps it once verified, and puts files it already has (cache entries, package-cache archives)
with :meth:`Destination.put` or :meth:`Destination.take`. :class:`FolderDestination` gives each
file its own path (a temp file renamed into place; a link where it can); :class:`SlotDestination`
writes each straight into its member's slot of the archive (``writers/tar.py``,
:func:`~conda_pixi_pack.pack.writers.tar.archive_around`): no staging copy to write, read back
and remove.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Protocol

from conda_pixi_pack.artifacts import Hasher, file_mismatch
from conda_pixi_pack.fileio import CHUNK_SIZE, copy_range, create_new, place, pread, pwrite_all, temp_path
from conda_pixi_pack.pack.cache import file_identity, stamp_matches

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from conda_pixi_pack.artifacts import Artifact
    from conda_pixi_pack.pack.writers.tar import Slot


class Attempt(Protocol):
    """One try at writing a file: ``write`` pieces in order, then ``close``; ``keep`` it once
    verified, or ``drop`` it."""

    def write(self, data: bytes | memoryview) -> object: ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...

    def keep(self) -> None: ...

    def drop(self) -> None: ...


class Destination(Protocol):
    """Where the fetched files of a pack go."""

    def attempt(self, artifact: Artifact) -> Attempt:
        """A fresh attempt at ``artifact``'s place."""
        ...

    def put(self, artifact: Artifact, source: Path) -> None:
        """Put the verified file ``source`` at ``artifact``'s place."""
        ...

    def take(self, artifact: Artifact, entry: Path, vouched: os.stat_result | None = None) -> bool:
        """Put the cache entry ``entry`` at ``artifact``'s place if what was put is verified: the
        very file its stamp vouches for (``vouched``: the stat the stamp was found to match, else
        the stamp is read again), or bytes that hash right. False, with nothing put, when it is
        not (another pack replaced or discarded the entry meanwhile)."""
        ...

    def location(self, artifact: Artifact) -> Path:
        """The folder or file written for ``artifact`` (named when a write fails: a full disk)."""
        ...

    def path(self, artifact: Artifact) -> Path | None:
        """The file ``artifact`` is at once fetched (None: inside the archive)."""
        ...


class FileAttempt:
    """An attempt written to a temp file beside ``final``; ``keep`` renames it there."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.temp = temp_path(final)
        self._stream = os.fdopen(create_new(self.temp), "wb")

    def write(self, data: bytes | memoryview) -> object:
        return self._stream.write(data)

    def close(self) -> None:
        self._stream.close()

    @property
    def closed(self) -> bool:
        return self._stream.closed

    def keep(self) -> None:
        os.replace(self.temp, self.final)

    def drop(self) -> None:
        self.close()
        self.temp.unlink(missing_ok=True)


class FolderDestination:
    """Every file at ``root/<relative path>``: cache entries and package-cache archives linked
    (copied across file systems)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: set[Path] = set()
        self._lock = threading.Lock()

    def _target(self, artifact: Artifact) -> Path:
        target = self.root / artifact.relative_path
        with self._lock:  # made once, and by one thread: the others wait until it exists
            if target.parent not in self._folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(target.parent)
        return target

    def attempt(self, artifact: Artifact) -> FileAttempt:
        return FileAttempt(self._target(artifact))

    def path(self, artifact: Artifact) -> Path:
        return self.root / artifact.relative_path

    def put(self, artifact: Artifact, source: Path) -> None:
        place(source, self._target(artifact))

    def location(self, artifact: Artifact) -> Path:
        return self.path(artifact).parent

    def take(self, artifact: Artifact, entry: Path, vouched: os.stat_result | None = None) -> bool:
        target = self._target(artifact)
        try:
            # A plain link: nobody else looks into our fresh folder, so the temp name and
            # rename that place() uses for atomicity are not needed here.
            os.link(entry, target)
        except FileNotFoundError:  # another pack discarded it meanwhile
            return False
        except OSError:  # across devices, or links not allowed: place() copies
            try:
                place(entry, target)
            except FileNotFoundError:
                return False
        # The link shares the inode the stamp vouched for, unless another pack replaced the
        # entry in between (or place() copied): then the file itself is hashed.
        try:
            if _vouched_for(entry, artifact, target.stat(), vouched):
                return True
            if file_mismatch(target, artifact) is None:
                return True
        except FileNotFoundError:
            return False
        target.unlink(missing_ok=True)
        return False


class SlotAttempt:
    """An attempt written into an archive slot. Bytes beyond the slot are not written: the hash,
    which counts them, refuses the file, and the next attempt starts at the slot's start again."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.position = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> object:
        if self.closed:
            raise OSError("download cancelled")
        room = max(0, self.slot.size - self.position)
        if room:
            pwrite_all(self.slot.fd, memoryview(data)[:room], self.slot.offset + self.position)
        self.position += len(data)
        return len(data)

    def close(self) -> None:
        self.closed = True

    def keep(self) -> None:
        return None

    def drop(self) -> None:
        self.close()


class SlotDestination:
    """Every file in its member's slot of the archive (by relative path below ``prefix``)."""

    def __init__(self, slots: Mapping[str, Slot], prefix: str, archive: Path) -> None:
        self.slots = slots
        self.prefix = prefix
        self.archive = archive

    def location(self, artifact: Artifact) -> Path:
        return self.archive

    def _slot(self, artifact: Artifact) -> Slot:
        return self.slots[f"{self.prefix}{artifact.relative_path}"]

    def attempt(self, artifact: Artifact) -> SlotAttempt:
        return SlotAttempt(self._slot(artifact))

    def path(self, artifact: Artifact) -> None:
        return None

    def put(self, artifact: Artifact, source: Path) -> None:
        slot = self._slot(artifact)
        with source.open("rb", buffering=0) as handle:
            _fill(slot, handle.fileno(), source)

    def take(self, artifact: Artifact, entry: Path, vouched: os.stat_result | None = None) -> bool:
        slot = self._slot(artifact)
        try:
            handle = entry.open("rb", buffering=0)
        except FileNotFoundError:  # another pack discarded it meanwhile
            return False
        with handle:
            fd = handle.fileno()
            # The open file is the inode the stamp describes, or it is hashed: replacing the
            # entry afterwards (another pack) does not change what this descriptor reads.
            if not (_vouched_for(entry, artifact, os.fstat(fd), vouched) or _hashes_right(fd, artifact)):
                return False
            _fill(slot, fd, entry)
        return True


def _vouched_for(
    entry: Path, artifact: Artifact, current: os.stat_result, vouched: os.stat_result | None
) -> bool:
    """Whether ``current`` is the file ``entry``'s stamp vouches for (compared with the stat the
    stamp matched when there is one: no second read of the stamp)."""
    if vouched is None:
        return stamp_matches(entry, artifact, current)
    return file_identity(current) == file_identity(vouched)


def _fill(slot: Slot, fd: int, source: Path) -> None:
    if os.fstat(fd).st_size != slot.size:
        raise OSError(f"{source} is not the size the lock gives")
    copy_range(fd, slot.fd, 0, slot.size, at=slot.offset)


def _hashes_right(fd: int, artifact: Artifact) -> bool:
    hasher = Hasher(artifact)
    offset = 0
    while chunk := pread(fd, CHUNK_SIZE, offset):
        hasher.update(chunk)
        offset += len(chunk)
    return hasher.mismatch() is None
