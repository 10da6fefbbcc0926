"""``inspect``: what a pack holds and how it can be unpacked, read without extracting it.

Every member goes through the reader once, front to back (a pack on standard input cannot be read
twice): the small JSON and text files are kept, package and wheel files are only counted, or
hashed on the way with ``verify``. A random-access tar is not even read where nothing is hashed
(its headers say it all). Memory holds the metadata, never a package, whatever the pack's size.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Final

from conda_pixi_pack import format as layout
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.fileio import CHUNK_SIZE
from conda_pixi_pack.progress import Reporter
from conda_pixi_pack.unpack.reader import open_pack

if TYPE_CHECKING:
    from pathlib import Path

    from conda_pixi_pack.progress import Task
    from conda_pixi_pack.unpack.reader.base import Member, OpenedPack

#: Largest JSON or text file of a pack read into memory (repodata of thousands of packages fits).
TEXT_LIMIT: Final = 64 * 1024 * 1024
#: A wheel read from a stream is kept in memory up to this size, on disk beyond (zipfile seeks).
SPOOL_LIMIT: Final = 64 * 1024 * 1024
#: ``channel/<subdir>/repodata.json``.
_REPODATA: Final = re.compile(rf"{layout.CHANNEL_DIR}/([^/]+)/{re.escape(layout.REPODATA_FILE)}")
#: How the verification is described in the result.
VERIFIED: Final = "every package matches its size and checksum, every wheel its RECORD"


@dataclass(frozen=True)
class PackedItem:
    """One conda package of the pack, as its record describes it."""

    name: str
    version: str
    build: str
    subdir: str
    file: str
    size: int
    #: The original channel (ours record it; pixi-pack's packs do not).
    channel: str | None


@dataclass(frozen=True)
class WheelItem:
    file: str
    size: int


@dataclass(frozen=True)
class UnpackPath:
    """One way to install the pack, and what it needs on the target."""

    command: str
    needs: str


@dataclass
class Inspection:
    """What ``inspect`` reports (and prints with ``--json``)."""

    pack: str
    kind: str
    format_version: str
    platform: str
    #: The tool that wrote it: ``conda-pixi-pack 0.1.0`` or ``pixi-pack 0.7.10``.
    written_by: str
    packages: list[PackedItem]
    wheels: list[WheelItem]
    #: Bytes of all files in the pack.
    size: int
    unpack_paths: list[UnpackPath]
    #: None without ``--verify``; else what was checked.
    verified: str | None = None
    #: Files the pack holds beyond the format's (every unpacker ignores them).
    extra_files: list[str] = field(default_factory=list)
    #: The parsed ``pixi-pack.json``, for callers (``unpack --dry-run``); not printed.
    metadata: layout.PackMetadata | None = field(default=None, repr=False, metadata={"internal": True})


@dataclass
class _Seen:
    """What one pass over the members gathered."""

    files: dict[str, int] = field(default_factory=dict)
    texts: dict[str, bytes] = field(default_factory=dict)
    digests: dict[str, tuple[str, str]] = field(default_factory=dict)


def inspect_pack(
    source: Path | IO[bytes], *, verify: bool = False, reporter: Reporter | None = None
) -> Inspection:
    """Describe the pack at ``source`` (a path or a binary stream); with ``verify``, check every
    package against its record and every wheel against its RECORD, raising PackError at the first
    file that does not match."""
    reporter = reporter or Reporter()
    # the stage is "done" only once the last check passed (the comparisons after the reading)
    task = reporter.task("Verifying pack" if verify else "Reading pack", None, "B")
    try:
        with open_pack(source) as opened:
            return _inspect(opened, verify, task)
    finally:
        task.done()


def _inspect(opened: OpenedPack, verify: bool, task: Task) -> Inspection:
    seen = _read(opened, verify, task)
    if layout.METADATA_FILE not in seen.texts:
        raise PackError(
            f"not a pack: {opened.label} has no {layout.METADATA_FILE}",
            "give a file written by `pack` (or pixi-pack)",
        )
    metadata = layout.parse_metadata(seen.texts[layout.METADATA_FILE])
    packages = _packages(seen, metadata)
    if verify:
        _verify(packages, seen)
    wheels = [
        WheelItem(PurePosixPath(n).name, size) for n, size in sorted(seen.files.items()) if _is_wheel(n)
    ]
    listed = {path for _, path in packages}
    return Inspection(
        pack=opened.label,
        kind=opened.kind,
        format_version=metadata.version,
        platform=metadata.platform,
        written_by=_writer(metadata),
        packages=[item for item, _ in packages],
        wheels=wheels,
        size=sum(seen.files.values()),
        unpack_paths=_unpack_paths(opened, seen, bool(wheels), packages),
        verified=VERIFIED if verify else None,
        extra_files=sorted(n for n in seen.files if not _known(n) and n not in listed),
        metadata=metadata,
    )


def _read(opened: OpenedPack, verify: bool, task: Task) -> _Seen:
    seen = _Seen()
    for member, stream in opened.members():
        if member.is_dir or stream is None:
            continue
        seen.files[member.name] = member.size
        if _is_text(member.name):
            seen.texts[member.name] = _read_text(member, stream)
        elif verify and _is_wheel(member.name):
            _check_wheel(member, stream)
        elif verify and layout.is_package_path(PurePosixPath(member.name)):
            seen.digests[member.name] = _digests(stream)
        task.advance(member.size)
    return seen


def _is_text(name: str) -> bool:
    texts = (layout.METADATA_FILE, layout.ENVIRONMENT_FILE, layout.EXPLICIT_FILE)
    return name in texts or _REPODATA.fullmatch(name) is not None


def _is_wheel(name: str) -> bool:
    path = PurePosixPath(name)
    return path.parent.as_posix() == layout.PYPI_DIR and path.name.endswith(layout.WHEEL_SUFFIX)


def _known(name: str) -> bool:
    return _is_text(name) or _is_wheel(name)


def _read_text(member: Member, stream: IO[bytes]) -> bytes:
    if member.size > TEXT_LIMIT:
        raise PackError(
            f"broken pack: {member.name} has {member.size} bytes, too many for a pack's metadata",
            layout.DAMAGED_HINT,
        )
    return stream.read()


def _digests(stream: IO[bytes]) -> tuple[str, str]:
    """(sha256, md5) in one pass: which one a record gives is known only once repodata is read."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    while block := stream.read(CHUNK_SIZE):
        sha256.update(block)
        md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def _check_wheel(member: Member, stream: IO[bytes]) -> None:
    """The wheel against its own RECORD; zipfile needs to seek, so a stream is spooled first."""
    from conda_pixi_pack.unpack.install.wheels import check_wheel

    label = PurePosixPath(member.name).name
    # zipfile asks seekable(), which SpooledTemporaryFile has from Python 3.11 on only
    spooled = sys.version_info >= (3, 11)
    with tempfile.SpooledTemporaryFile(SPOOL_LIMIT) if spooled else tempfile.TemporaryFile() as spool:
        while block := stream.read(CHUNK_SIZE):
            spool.write(block)
        spool.seek(0)
        check_wheel(spool, label)  # type: ignore[arg-type]


def _packages(seen: _Seen, metadata: layout.PackMetadata) -> list[tuple[PackedItem, str]]:
    """Every record of every ``repodata.json``, with the path its file has in the pack."""
    result: list[tuple[PackedItem, str]] = []
    for name in seen.files:
        path = PurePosixPath(name)
        repodata = f"{path.parent.as_posix()}/{layout.REPODATA_FILE}"
        if layout.is_package_path(path) and repodata not in seen.texts:
            raise layout.missing_repodata(path.parent.name)
    for name in sorted(seen.texts):
        match = _REPODATA.fullmatch(name)
        if match is None:
            continue
        subdir = match.group(1)
        for file_name, record in sorted(layout.parse_repodata(seen.texts[name], name).items()):
            path = f"{layout.CHANNEL_DIR}/{subdir}/{file_name}"
            origin = metadata.origins.get(f"{subdir}/{file_name}")
            item = PackedItem(
                name=str(record.get("name", "")),
                version=str(record.get("version", "")),
                build=str(record.get("build", "")),
                subdir=subdir,
                file=file_name,
                size=_record_size(record, seen.files.get(path)),
                channel=origin.channel if origin is not None else None,
            )
            result.append((item, path))
    return result


def _record_size(record: dict[str, Any], found: int | None) -> int:
    size = record.get("size")
    return size if isinstance(size, int) else found or 0


def _verify(packages: list[tuple[PackedItem, str]], seen: _Seen) -> None:
    """Every listed package present, of its recorded size and checksum (sha256, else md5)."""
    records: dict[str, dict[str, dict[str, Any]]] = {}  # each repodata.json parsed once, not per package
    for item, path in packages:
        if path not in seen.files:
            raise PackError(
                f"broken pack: {path} is listed in repodata.json but missing", layout.DAMAGED_HINT
            )
        if seen.files[path] != item.size:
            raise PackError(
                f"broken pack: {path} has {seen.files[path]} bytes, its record says {item.size}",
                layout.DAMAGED_HINT,
            )
        repodata = f"{layout.CHANNEL_DIR}/{item.subdir}/{layout.REPODATA_FILE}"
        if repodata not in records:
            records[repodata] = layout.parse_repodata(seen.texts[repodata], repodata)
        algorithm, wanted = _expected(records[repodata][item.file], path)
        sha256, md5 = seen.digests[path]
        if (sha256 if algorithm == "sha256" else md5) != wanted:
            raise PackError(
                f"broken pack: {path} does not match its {algorithm} in repodata.json", layout.DAMAGED_HINT
            )


def _expected(record: dict[str, Any], path: str) -> tuple[str, str]:
    for algorithm in ("sha256", "md5"):
        value = record.get(algorithm)
        if isinstance(value, str) and value:
            return algorithm, value.lower()
    raise PackError(
        f"broken pack: {path} has no sha256 or md5 in repodata.json, so it cannot be verified",
        layout.DAMAGED_HINT,
    )


def _writer(metadata: layout.PackMetadata) -> str:
    if metadata.writer_version is None:
        return f"pixi-pack {metadata.tool_version}"
    return f"conda-pixi-pack {metadata.writer_version}"


def _unpack_paths(
    opened: OpenedPack, seen: _Seen, has_wheels: bool, packages: list[tuple[PackedItem, str]]
) -> list[UnpackPath]:
    """Every way to install this pack, with what each needs on the target."""
    pack = opened.label
    paths: list[UnpackPath] = []
    if opened.kind == "conda-pixi-pack script":
        embedded = opened.script.get("unpacker_kind")
        needs = (
            f"nothing: it embeds {embedded}" if embedded else "conda-pixi-pack, micromamba, mamba or conda"
        )
        paths.append(UnpackPath(f"sh {pack}", needs))
    elif opened.kind == "pixi-pack script":
        paths.append(UnpackPath(f"sh {pack}", "nothing: it embeds pixi-unpack"))
    paths.append(UnpackPath(f"conda-pixi-pack unpack {pack}", "conda-pixi-pack (or conda pixi-pack)"))
    if opened.kind in ("tar", "folder"):
        paths.append(UnpackPath(f"pixi-unpack {pack}", "pixi-unpack"))
    if opened.kind == "tar":
        paths.append(UnpackPath(f"conda env create --file {pack} -n NAME", "conda with conda-pixi-pack"))
    where = "in the pack's folder" if opened.kind == "folder" else "after tar -xf, in that folder"
    if layout.EXPLICIT_FILE in seen.texts:
        has_pip = any(item.name == "pip" for item, _ in packages)
        wheels = (
            ("; its pip installs the wheels" if has_pip else "; the wheels need conda-pixi-pack")
            if has_wheels
            else ""
        )
        for command in (f"conda create -p ./env --offline --file {layout.EXPLICIT_FILE}",
                        f"micromamba create -p ./env --offline -f {layout.EXPLICIT_FILE}"):  # fmt: skip
            paths.append(UnpackPath(command, f"{command.split()[0]}, {where}{wheels}"))
    if layout.ENVIRONMENT_FILE in seen.texts:
        command = f"conda env create -p ./env --offline --file {layout.ENVIRONMENT_FILE}"
        paths.append(UnpackPath(command, f"conda, {where} (it solves)"))
    return paths
