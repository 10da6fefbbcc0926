"""``--use-cache DIR``: a channel-shaped folder of verified package files shared between packs.

Layout: ``<dir>/<subdir>/<file>`` and ``<dir>/pypi/<file>``, plus a ``CACHEDIR.TAG`` so that
backup tools skip it. Entries only ever appear by ``os.replace`` of a complete, verified temp file
written in the entry's own folder, so two packs sharing a cache never see half a file; a hit is
verified again before use (a file may rot or be edited) and linked, or copied, into the pack.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from conda_pixi_pack.download import Artifact

#: Name of the cache directory tag (https://bford.info/cachedir/).
CACHEDIR_TAG: Final = "CACHEDIR.TAG"
#: Its content: the standard signature line, then comments.
CACHEDIR_TAG_CONTENT: Final = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by conda-pixi-pack.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
#: Read size when hashing or copying a file (constant memory whatever the file size).
CHUNK_SIZE: Final = 1 << 20
#: Suffix of files being written; never a valid entry name (packages end in .conda/.tar.bz2/.whl).
PARTIAL_SUFFIX: Final = ".part"


class Hasher:
    """Incremental checksum of one artifact: sha256 (md5 when that is all the lock has) and size."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self._md5 = hashlib.md5(usedforsecurity=False) if artifact.md5 and not artifact.sha256 else None
        self._sha256 = None if self._md5 else hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        (self._md5 or self._sha256).update(data)  # type: ignore[union-attr]
        self.size += len(data)

    def mismatch(self) -> str | None:
        """None when the bytes are the ones the lock describes, else what differs (both values)."""
        expected = self.artifact
        if expected.size is not None and expected.size != self.size:
            return f"size {expected.size} expected, got {self.size}"
        if self._sha256 is not None and expected.sha256:
            actual = self._sha256.hexdigest()
            if actual != expected.sha256.lower():
                return f"sha256 {expected.sha256} expected, got {actual}"
        if self._md5 is not None and expected.md5:
            actual = self._md5.hexdigest()
            if actual != expected.md5.lower():
                return f"md5 {expected.md5} expected, got {actual}"
        return None


def file_mismatch(path: Path, artifact: Artifact) -> str | None:
    """Hash ``path`` in chunks and compare it with ``artifact``; None when it matches."""
    hasher = Hasher(artifact)
    if artifact.size is not None and path.stat().st_size != artifact.size:
        return f"size {artifact.size} expected, got {path.stat().st_size}"
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.mismatch()


def temp_path(final: Path) -> Path:
    """A unique name beside ``final`` for a file being written (same folder: os.replace is atomic)."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")


def create_new(path: Path) -> int:
    """Open a fresh file for writing; mode 0o666 minus umask (mkstemp's 0o600 would leak into packs)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


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


class Cache:
    """A verified package cache rooted at ``root`` (created, and tagged, on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tag = self.root / CACHEDIR_TAG
            if not tag.exists():
                temp = temp_path(tag)
                try:
                    with os.fdopen(create_new(temp), "w", encoding="ascii") as stream:
                        stream.write(CACHEDIR_TAG_CONTENT)
                    os.replace(temp, tag)
                finally:
                    temp.unlink(missing_ok=True)
        except OSError as exc:
            raise PackError(
                f"cannot use {self.root} as a cache: {exc.strerror or exc}",
                "give a writable folder with `--use-cache`",
            ) from exc

    def entry(self, artifact: Artifact) -> Path:
        """Where ``artifact`` lives in the cache (not necessarily present)."""
        return self.root / artifact.relative_path

    def lookup(self, artifact: Artifact) -> Path | None:
        """The verified cached file for ``artifact``, or None; a corrupt entry is discarded."""
        path = self.entry(artifact)
        try:
            before = path.stat()
            problem = file_mismatch(path, artifact)
        except FileNotFoundError:
            return None
        if problem is None:
            return path
        # Discard it only if it is still the file that was checked: another pack may just have
        # replaced it with a good one.
        try:
            after = path.stat()
            if (after.st_ino, after.st_dev, after.st_mtime_ns) == (
                before.st_ino,
                before.st_dev,
                before.st_mtime_ns,
            ):
                path.unlink()
        except FileNotFoundError:
            pass
        return None

    def add(self, verified_temp: Path, artifact: Artifact) -> Path:
        """Publish a verified file written in the entry's folder (see :func:`temp_path`)."""
        path = self.entry(artifact)
        os.replace(verified_temp, path)
        return path
