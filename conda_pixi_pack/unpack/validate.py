"""Check an extracted pack before anything is installed from it.

What pixi-unpack checks (metadata version, platform) plus what it does not (each package's size and
checksum against its ``repodata.json`` record). Like pixi-unpack, the packages installed are exactly
those the ``repodata.json`` files list; other files in ``channel/`` are ignored.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from conda_pixi_pack import __version__
from conda_pixi_pack.artifacts import (
    DAMAGED_HINT,
    PackedPackage,
    expected_checksum,
    package_label,
    read_package,
    verify_checksum,
)
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.format import (
    CHANNEL_DIR,
    CONDA_SUFFIX,
    EARLIER_WRITER,
    PYPI_DIR,
    TAR_BZ2_SUFFIX,
    WHEEL_SUFFIX,
    PackMetadata,
    current_platform,
    is_package_path,
    read_metadata,
    read_repodata,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from conda_pixi_pack.artifacts import Extent
    from conda_pixi_pack.progress import Reporter, Task

#: Hashing threads: hashlib releases the GIL on large updates, so a few threads use the disk and
#: the cores well without oversubscribing small machines.
HASH_WORKERS: Final = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class ValidatedPack:
    """An extracted pack whose metadata, package files and wheels have all been checked."""

    root: Path
    metadata: PackMetadata
    packages: list[PackedPackage]
    wheels: list[Path]


class _Cancelled(Exception):
    """A background hash stopped because the unpack is over."""


class PackageDigests:
    """sha256 of the package files, computed in background threads while the tar is extracted.

    Extraction calls :meth:`submit` with each file it finishes; validation then only waits for
    the digests instead of reading 500 MB again after the extraction. hashlib releases the GIL,
    so hashing runs on the other cores beside the kernel copy of the tar. Use as a context
    manager: leaving it, on success or failure, stops the threads and waits for them, so none
    is still reading (or holding open) a file that a rollback removes.

    (rattler's ``package_streaming.extract`` returns the sha256 while extracting, which would
    make the checksum free for the rattler backend, but py-rattler 0.28 holds the GIL while it
    runs: extracting that way serialises with the tar copy and measured slower than hashing
    here and letting ``rattler.install`` extract in its own threads.)
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="conda-pixi-pack-hash")
        self._futures: dict[Path, Future[str]] = {}
        self._stop = threading.Event()

    def __enter__(self) -> PackageDigests:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def submit(self, path: Path, extent: Extent | None = None) -> None:
        """Start on ``path`` (whose bytes are at ``extent`` when given) if it can be a package file
        (the records are not read yet)."""
        if is_package_path(path):
            self._futures[path] = self._pool.submit(self._digest, path, extent)

    def sha256(self, path: Path) -> str | None:
        """The hex sha256 of ``path`` when it was submitted, waiting for it; else None."""
        future = self._futures.get(path)
        if future is None:
            return None
        try:
            return future.result()
        except (OSError, CancelledError, _Cancelled):
            return None  # e.g. removed since: the caller reads it again and reports what it finds

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _digest(self, path: Path, extent: Extent | None) -> str:
        digest = hashlib.sha256()
        for chunk in read_package(path, extent):
            if self._stop.is_set():
                raise _Cancelled
            digest.update(chunk)
        return digest.hexdigest()


def _check_metadata(root: Path, platform: str, reporter: Reporter) -> PackMetadata:
    metadata = read_metadata(root)
    check_metadata(metadata, platform, reporter)
    return metadata


def check_metadata(metadata: PackMetadata, platform: str, reporter: Reporter) -> None:
    """Refuse a pack for another platform; say when another tool (or version) wrote it."""
    if metadata.platform != platform:
        shown = metadata.platform if metadata.platform.isprintable() else repr(metadata.platform)
        raise PackError(
            f"the pack is for {shown} but this machine is {platform}",
            f"pack the environment again with --platform {platform}",
        )
    if metadata.writer_version is None:  # Quantco's pixi-pack: its version means nothing to us
        reporter.warn(
            f"the pack was written by pixi-pack (version {metadata.tool_version}), "
            f"this is conda-pixi-pack {__version__}; unpacking anyway"
        )
    elif metadata.writer_version == EARLIER_WRITER:
        reporter.warn(
            f"the pack was written by an earlier conda-pixi-pack, this is {__version__}; unpacking anyway"
        )
    elif metadata.writer_version != __version__:
        reporter.warn(
            f"the pack was written by conda-pixi-pack {metadata.writer_version}, "
            f"this is {__version__}; unpacking anyway"
        )


def _safe_file_name(subdir: str, file_name: str) -> None:
    """Refuse a repodata key that is not a plain package file name (it becomes a path)."""
    if (
        Path(file_name).name != file_name
        or "\\" in file_name
        or not file_name.endswith((CONDA_SUFFIX, TAR_BZ2_SUFFIX))
    ):
        raise PackError(
            f"broken pack: {CHANNEL_DIR}/{subdir}/repodata.json lists {file_name!r}, "
            "which is not a package file name",
            DAMAGED_HINT,
        )


def _verify(package: PackedPackage, task: Task, digests: PackageDigests | None, *, checksum: bool) -> None:
    """Size, and unless ``checksum`` is False the checksum (see :func:`verify_checksum`)."""
    label = package_label(package)
    try:
        size = package.size
    except FileNotFoundError:
        raise PackError(
            f"broken pack: {label} is listed in repodata.json but missing", DAMAGED_HINT
        ) from None
    expected_size = package.record.get("size")
    if isinstance(expected_size, int) and size != expected_size:
        raise PackError(
            f"broken pack: {label} has {size} bytes, its record says {expected_size}", DAMAGED_HINT
        )
    if checksum:
        verify_checksum(package, task, digests)
    else:
        expected_checksum(package)  # a record without one is refused all the same
        task.advance(size)


def _collect_packages(
    root: Path, metadata: PackMetadata, extents: Mapping[Path, Extent], *, defer_checksums: bool
) -> list[PackedPackage]:
    if not (root / CHANNEL_DIR).is_dir():
        raise PackError(f"broken pack: the {CHANNEL_DIR}/ folder is missing", DAMAGED_HINT)
    packages: list[PackedPackage] = []
    seen: dict[str, str] = {}
    for subdir, records in read_repodata(root).items():
        for file_name in sorted(records):
            _safe_file_name(subdir, file_name)
            label = f"{CHANNEL_DIR}/{subdir}/{file_name}"
            record: dict[str, Any] = records[file_name]
            if not record.get("name"):  # read_repodata checked that it is an object
                raise PackError(f"broken pack: the record of {label} is malformed", DAMAGED_HINT)
            for field in ("name", "version", "build"):
                # name-version-build becomes a file name (conda-meta/<dist>.json, the cache folder)
                value = str(record.get(field, ""))
                unsafe = "/" in value or "\\" in value or value.startswith(".")
                if not value or unsafe or not value.isprintable():
                    raise PackError(
                        f"broken pack: the record of {label}: its {field} {value!r} is not valid",
                        DAMAGED_HINT,
                    )
            path = root / CHANNEL_DIR / subdir / file_name
            name = str(record["name"])
            if name in seen:
                # One environment holds one package of a name (a lock never has two): both would
                # write conda-meta and the same files.
                raise PackError(
                    f"broken pack: {label} and {seen[name]} are both the package {name}", DAMAGED_HINT
                )
            seen[name] = label
            packages.append(
                PackedPackage(
                    subdir=subdir,
                    file_name=file_name,
                    path=path,
                    record=record,
                    origin=metadata.origins.get(f"{subdir}/{file_name}"),
                    extent=extents.get(path),
                    checksum_deferred=defer_checksums and path in extents,
                )
            )
    return packages


def require_python(wheels: int, names: set[str]) -> None:
    """Wheels need a python package to be installed into (pixi-unpack requires one too)."""
    if wheels and "python" not in names:
        raise PackError(
            f"the pack holds {wheels} wheel(s) in {PYPI_DIR}/ but no python package to install them into",
            "add python to the environment, then pack it again",
        )


def _collect_wheels(root: Path, packages: list[PackedPackage]) -> list[Path]:
    pypi = root / PYPI_DIR
    wheels = sorted(p for p in pypi.glob(f"*{WHEEL_SUFFIX}") if p.is_file()) if pypi.is_dir() else []
    require_python(len(wheels), {str(p.record.get("name")) for p in packages})
    if not wheels:  # the wheel installer's imports (~20 ms) are for packs that have wheels
        return wheels
    from conda_pixi_pack.unpack.install.wheels import check_wheel

    for wheel in wheels:
        check_wheel(wheel)
    return wheels


def validate_pack(
    root: Path,
    reporter: Reporter,
    *,
    platform: str | None = None,
    digests: PackageDigests | None = None,
    extents: Mapping[Path, Extent] | None = None,
    defer_checksums: bool = False,
) -> ValidatedPack:
    """Check the extracted pack at ``root`` for ``platform`` (default: this machine).

    ``digests`` holds sha256s already computed during extraction; files it lacks are read here.
    ``extents`` says where the package files that extraction left inside the pack are. With
    ``defer_checksums`` the checksums of those are left to the installer, which must verify
    them before it links anything (install/seed.py does, while extracting them).
    """
    metadata = _check_metadata(root, platform or current_platform(), reporter)
    packages = _collect_packages(root, metadata, extents or {}, defer_checksums=defer_checksums)
    wheels = _collect_wheels(root, packages)
    total = sum(int(p.record.get("size") or 0) for p in packages)
    # Deferred checksums are checked while the installer extracts: this stage must not claim them.
    deferred = any(p.checksum_deferred for p in packages)
    task = reporter.task("Checking packages" if deferred else "Verifying packages", total or None, "B")
    try:
        with ThreadPoolExecutor(HASH_WORKERS) as pool:
            # list() re-raises the first failure; the pool waits for the others before leaving.
            list(
                pool.map(
                    lambda p: _verify(p, task, digests, checksum=not p.checksum_deferred),
                    packages,
                )
            )
    finally:
        task.done()
    reporter.debug(f"pack verified: {len(packages)} conda packages, {len(wheels)} wheels")
    return ValidatedPack(root, metadata, packages, wheels)
