"""``--unpacker-source``: the installer a self-extracting pack embeds, so it installs anywhere.

A bare machine (a ``debian`` container, a server without conda) has no installer; the pack can
carry one: ``micromamba`` (one static program) or ``conda-standalone`` (a frozen conda), for the
pack's platform. The source is a conda package of either (conda-forge's ``micromamba`` or
``conda-standalone``; its program is taken out of it) or the program itself, given as a path or
a URL. A URL is fetched like any package (the same client, credentials, mirrors and cache) and
checked against ``--unpacker-sha256`` when given. Everything is checked before any package is
downloaded, except what only the download itself can tell.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

from conda_pixi_pack.artifacts import Artifact, file_digests
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.format import CONDA_SUFFIX, TAR_BZ2_SUFFIX
from conda_pixi_pack.pack.writers.executable import Unpacker

if TYPE_CHECKING:
    from conda_pixi_pack.pack.download import NetworkSettings
    from conda_pixi_pack.progress import Reporter

#: The installers a pack can embed -> where their program is inside their conda package.
PROGRAMS: Final[dict[str, tuple[str, ...]]] = {
    "micromamba": ("bin/micromamba", "Library/bin/micromamba.exe"),
    "conda-standalone": ("standalone_conda/conda.exe", "conda.exe"),
}
#: URL schemes fetched through the download client (anything else is a local path).
URL_SCHEMES: Final = ("http", "https", "s3", "gcs", "oci", "file")
#: ELF ``e_machine`` -> the architecture part of a Linux subdir.
ELF_MACHINES: Final = {62: "64", 183: "aarch64", 21: "ppc64le", 3: "32", 40: "armv7l", 22: "s390x"}
#: Mach-O ``cputype`` -> the architecture part of a macOS subdir.
MACHO_CPUS: Final = {0x01000007: "64", 0x0100000C: "arm64"}
#: PE ``Machine`` -> the architecture part of a Windows subdir.
PE_MACHINES: Final = {0x8664: "64", 0xAA64: "arm64", 0x14C: "32"}
#: Hint of every refusal.
HINT: Final = (
    "give the micromamba or conda-standalone conda package (or its program) built for the pack's "
    "platform, e.g. from conda-forge"
)


@dataclass(frozen=True)
class UnpackerSource:
    """``--unpacker-source`` as given, and ``--unpacker-sha256``."""

    location: str
    sha256: str | None = None

    @property
    def is_url(self) -> bool:
        return urlsplit(self.location).scheme.lower() in URL_SCHEMES

    @property
    def file_name(self) -> str:
        if self.is_url:
            return unquote(PurePosixPath(urlsplit(self.location).path).name)
        return Path(self.location).name


def check_source(source: UnpackerSource) -> None:
    """What can be checked before anything is downloaded: a file that is there, a checksum that
    is one, a name that says what it is."""
    if source.sha256 is not None and (len(source.sha256) != 64 or not _is_hex(source.sha256)):
        raise PackError(f"--unpacker-sha256 {source.sha256!r} is not a sha256 (64 hex digits)")
    if not source.file_name:
        raise PackError(f"--unpacker-source {source.location} names no file", HINT)
    if not source.is_url:
        path = Path(source.location).expanduser()
        if not path.is_file():
            raise PackError(f"--unpacker-source {source.location} does not exist (or is not a file)", HINT)
    _kind_of(source.file_name, source.location)


def resolve(
    source: UnpackerSource,
    platform: str,
    work: Path,
    *,
    network: NetworkSettings,
    cache_dir: Path | None,
    reporter: Reporter,
) -> Unpacker:
    """The installer's program for ``platform``, fetched or copied into ``work`` and checked."""
    check_source(source)
    work.mkdir(parents=True, exist_ok=True)
    if source.is_url:
        from conda_pixi_pack.pack import download

        artifact = Artifact(
            url=source.location,
            file_name=source.file_name,
            sha256=source.sha256,
            md5=None,
            size=None,
            relative_path=f"{platform}/{source.file_name}",
            label=f"the unpacker {source.file_name}",
        )
        fetched = download.fetch_all(
            [artifact], work / "fetched", network=network, cache_dir=cache_dir, reporter=reporter
        )
        path = fetched[artifact.relative_path]
    else:
        path = Path(source.location).expanduser()
        if source.sha256 is not None:
            actual = file_digests(path)[1]
            if actual != source.sha256.lower():
                raise PackError(
                    f"--unpacker-source {source.location} does not match --unpacker-sha256: "
                    f"sha256 {source.sha256.lower()} expected, got {actual}",
                    "give the file the checksum belongs to, or the right checksum",
                )
    if source.file_name.endswith((CONDA_SUFFIX, TAR_BZ2_SUFFIX)):
        return _from_package(path, source.location, platform, work)
    kind = _kind_of(source.file_name, source.location)
    found = program_platform(path)
    if found is None or not _fits(found, platform):
        what = f"a program for {found}" if found else "not a program this tool recognises"
        raise PackError(f"--unpacker-source {source.location} is {what}, the pack is for {platform}", HINT)
    reporter.debug(f"embedding {kind} from {source.location} ({found})")
    return Unpacker(kind, path)


def _kind_of(file_name: str, location: str) -> str:
    """micromamba or conda-standalone, from the file's name (a package's name starts with it)."""
    lowered = file_name.lower()
    for kind in PROGRAMS:
        if lowered.startswith(kind) or (kind == "conda-standalone" and lowered in ("conda.exe", "_conda")):
            return kind
    raise PackError(
        f"--unpacker-source {location} is neither micromamba nor conda-standalone "
        "(its file name must start with micromamba or conda-standalone)",
        HINT,
    )


def _from_package(path: Path, location: str, platform: str, work: Path) -> Unpacker:
    """The program inside a micromamba or conda-standalone conda package built for ``platform``."""
    import asyncio

    from rattler import RepoDataRecord
    from rattler.package_streaming import extract

    try:
        record = asyncio.run(RepoDataRecord.from_package_archive(path))
    except Exception as exc:  # rattler's own error types for a broken archive
        raise PackError(
            f"--unpacker-source {location} is not a readable conda package ({exc})", HINT
        ) from None
    name, subdir = record.name.normalized, record.subdir
    if name not in PROGRAMS:
        raise PackError(
            f"--unpacker-source {location} is the package {name}, not micromamba or conda-standalone", HINT
        )
    if subdir != platform:
        raise PackError(
            f"--unpacker-source {location} is {name} for {subdir}, the pack is for {platform}", HINT
        )
    target = work / "extracted"
    try:
        extract(str(path), str(target))
    except Exception as exc:  # rattler's own error types
        raise PackError(f"--unpacker-source {location} cannot be extracted ({exc})", HINT) from None
    program = next((target / p for p in PROGRAMS[name] if (target / p).is_file()), None)
    if program is None:
        raise PackError(
            f"--unpacker-source {location} holds no {name} program ({', '.join(PROGRAMS[name])})", HINT
        )
    return Unpacker(name, program)


def program_platform(path: Path) -> str | None:
    """The conda subdir a program is built for, from its header (ELF, Mach-O, PE), or None."""
    with path.open("rb") as f:
        head = f.read(4096)
    if head[:4] == b"\x7fELF" and len(head) >= 20:
        order = "<" if head[5] == 1 else ">"
        (machine,) = struct.unpack_from(f"{order}H", head, 18)
        arch = ELF_MACHINES.get(machine)
        return f"linux-{arch}" if arch else None
    if head[:4] in (b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe") and len(head) >= 8:
        (cpu,) = struct.unpack_from("<i", head, 4)
        arch = MACHO_CPUS.get(cpu)
        return f"osx-{arch}" if arch else None
    if head[:4] == b"\xca\xfe\xba\xbe":  # a universal program: every macOS architecture
        return "osx-universal"
    if head[:2] == b"MZ" and len(head) >= 64:
        (offset,) = struct.unpack_from("<I", head, 0x3C)
        if offset + 6 <= len(head) and head[offset : offset + 4] == b"PE\0\0":
            (machine,) = struct.unpack_from("<H", head, offset + 4)
            arch = PE_MACHINES.get(machine)
            return f"win-{arch}" if arch else None
    return None


def _fits(found: str, platform: str) -> bool:
    """A program for ``found`` runs on ``platform`` (a universal macOS one on every macOS)."""
    return found == platform or (found == "osx-universal" and platform.startswith("osx-"))


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
