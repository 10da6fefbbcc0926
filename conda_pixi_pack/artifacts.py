"""What a pack holds, and how its files are checked: shared by the pack and the unpack flows.

:class:`Artifact` is a file ``pack`` fetches (and verifies while it streams, with :class:`Hasher`);
:class:`PackedPackage` is a conda package inside a pack being read, whose bytes may still be inside
the pack file (:class:`Extent`). Both are checked against the checksums their records give, with
the same rule: sha256 where there is one, else md5, and the size where it is known.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.fileio import CHUNK_SIZE, copy_range, pread
from conda_pixi_pack.format import CHANNEL_DIR, DAMAGED_HINT

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from conda_pixi_pack.format import Origin
    from conda_pixi_pack.progress import Task

#: Hint for every damaged-package error.


@dataclass(frozen=True)
class Artifact:
    """A file to fetch and how to verify it."""

    #: ``http(s)://``, ``s3://``, ``oci://``… (through rattler's client) or ``file://``.
    url: str
    file_name: str
    sha256: str | None
    md5: str | None
    size: int | None
    #: Where it lands below the destination (and the cache): ``<subdir>/<file>`` or ``pypi/<file>``.
    relative_path: str
    #: Human label for messages, e.g. ``numpy 2.1.0`` or the file name.
    label: str


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


def file_digests(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file in one streamed pass (memory stays flat whatever its size)."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_SIZE):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


def file_mismatch(path: Path, artifact: Artifact) -> str | None:
    """Hash ``path`` in chunks and compare it with ``artifact``; None when it matches."""
    hasher = Hasher(artifact)
    if artifact.size is not None and path.stat().st_size != artifact.size:
        return f"size {artifact.size} expected, got {path.stat().st_size}"
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.mismatch()


@dataclass(frozen=True)
class Extent:
    """A member left inside the pack: its ``size`` bytes start at ``offset`` of the pack ``file``."""

    file: Path
    offset: int
    size: int


@dataclass(frozen=True)
class PackedPackage:
    """One conda package inside an extracted, validated pack."""

    subdir: str
    file_name: str
    #: Absolute path of the package file inside the extracted pack (an empty placeholder when
    #: ``extent`` is set).
    path: Path
    #: Its record from ``channel/<subdir>/repodata.json``.
    record: dict[str, Any]
    #: Original URL/channel when the pack carries them (ours do; pixi-pack's do not).
    origin: Origin | None
    #: Where its bytes are when extraction left them inside the pack file (see extract.py).
    extent: Extent | None = None
    #: Its checksum is not verified yet: the installer must, before linking anything.
    checksum_deferred: bool = False

    @property
    def size(self) -> int:
        """The package file's size in bytes, wherever its bytes are."""
        return self.extent.size if self.extent is not None else self.path.stat().st_size


class Digests(Protocol):
    """Checksums already computed elsewhere (while a pack was extracted), by file."""

    def sha256(self, path: Path) -> str | None:
        """The hex sha256 of ``path`` when known, else None (the caller reads the file)."""


def read_package(path: Path, extent: Extent | None) -> Iterator[bytes]:
    """The bytes of a package file in ``CHUNK_SIZE`` pieces, from the pack itself for an ``extent``."""
    if extent is None:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                yield chunk
        return
    with open(extent.file, "rb") as f:
        offset, end = extent.offset, extent.offset + extent.size
        while offset < end:
            chunk = pread(f.fileno(), min(CHUNK_SIZE, end - offset), offset)
            if not chunk:
                raise cut_short_error()
            offset += len(chunk)
            yield chunk


def cut_short_error() -> PackError:
    """The error for a pack file that lost bytes after its extraction (someone else's write)."""
    return PackError("broken pack: it was cut short while being unpacked", DAMAGED_HINT)


def expected_checksum(package: PackedPackage) -> tuple[str, str]:
    """The algorithm (sha256, else md5) and lowercase hex digest the package's record gives."""
    record = package.record
    algorithm = "sha256" if record.get("sha256") else "md5" if record.get("md5") else None
    if algorithm is None:
        raise PackError(
            f"broken pack: {package_label(package)} has no sha256 or md5 in repodata.json, "
            "so it cannot be verified",
            DAMAGED_HINT,
        )
    return algorithm, str(record[algorithm]).lower()


def checksum_error(package: PackedPackage, algorithm: str) -> PackError:
    """The error for a package file that does not match its record."""
    return PackError(
        f"broken pack: {package_label(package)} does not match its {algorithm} in repodata.json",
        # pixi-pack --use-cache takes cache hits unverified: rebuilding from it repeats this.
        f"{DAMAGED_HINT} (if pixi-pack wrote it with --use-cache, clear that cache first)",
    )


def verify_checksum(package: PackedPackage, task: Task | None = None, digests: Digests | None = None) -> None:
    """The package file's sha256 (or md5) against its record: from ``digests`` when they have
    the file, else by streaming it once."""
    algorithm, expected = expected_checksum(package)
    hexdigest = digests.sha256(package.path) if digests is not None and algorithm == "sha256" else None
    if hexdigest is not None:
        if task is not None:
            task.advance(package.size)
    else:
        digest = hashlib.new(algorithm)
        for chunk in read_package(package.path, package.extent):
            digest.update(chunk)
            if task is not None:
                task.advance(len(chunk))
        hexdigest = digest.hexdigest()
    if hexdigest != expected:
        raise checksum_error(package, algorithm)


def package_label(package: PackedPackage) -> str:
    """How messages name a package file: its path inside the pack."""
    return f"{CHANNEL_DIR}/{package.subdir}/{package.file_name}"


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
