"""The pack format, version "1": the one place that knows file names and their contents.

Everything here is what Quantco's pixi-pack writes and pixi-unpack reads, plus one extension
that pixi-unpack ignores: the ``conda-pixi-pack`` key of ``pixi-pack.json`` records where each
package came from (its original URL and channel), so that an unpacked environment keeps its
provenance (``conda list`` shows ``conda-forge``, ``conda list --explicit`` the original URLs).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from conda_pixi_pack.errors import PackError, plain_reason

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path, PurePath

#: The only format version this tool reads and writes; pixi-unpack requires the string.
FORMAT_VERSION: Final = "1"
#: Pack metadata file at the root of the pack.
METADATA_FILE: Final = "pixi-pack.json"
#: conda/mamba-readable description of the environment at the root of the pack.
ENVIRONMENT_FILE: Final = "environment.yml"
#: conda's ``@EXPLICIT`` list of the packages (paths relative to the pack's root, with sha256):
#: ``conda create -p ./env --offline --file explicit.txt`` installs it without a solver. Optional
#: on read (pixi-pack writes none).
EXPLICIT_FILE: Final = "explicit.txt"
#: The marker line of an explicit list (CEP 23).
EXPLICIT_MARKER: Final = "@EXPLICIT"
#: Folder with one sub-folder per subdir, each with its packages and ``repodata.json``.
CHANNEL_DIR: Final = "channel"
#: Flat folder of wheels.
PYPI_DIR: Final = "pypi"
#: The subdir every platform's pack has besides its own; always present, even empty, since conda
#: refuses a local channel without ``noarch/repodata.json``.
NOARCH: Final = "noarch"
#: Per-subdir index file.
REPODATA_FILE: Final = "repodata.json"
#: Our extension key in ``pixi-pack.json``; pixi-unpack ignores unknown keys.
EXTENSION_KEY: Final = "conda-pixi-pack"
#: The fixed mtime pixi-pack stamps on every tar entry (2006-07-24), kept for identical output.
TAR_MTIME: Final = 1153704088
#: Record keys that describe where a file lives rather than what the package is.
LOCATION_KEYS: Final = ("url", "channel", "fn")

CONDA_SUFFIX: Final = ".conda"
TAR_BZ2_SUFFIX: Final = ".tar.bz2"
WHEEL_SUFFIX: Final = ".whl"


#: Hint for every damaged pack.
DAMAGED_HINT: Final = "the pack is damaged or incomplete; copy or build it again"

#: ``writer_version`` of a pack that has our key but no version in it.
EARLIER_WRITER: Final = "an earlier version"


@dataclass(frozen=True)
class Origin:
    """Where a packed conda package was downloaded from."""

    url: str
    channel: str | None = None


@dataclass(frozen=True)
class PackMetadata:
    """The parsed ``pixi-pack.json``."""

    version: str
    tool_version: str
    platform: str
    #: ``"<subdir>/<file name>"`` -> origin; empty for packs written by pixi-pack.
    origins: Mapping[str, Origin] = field(default_factory=dict)
    #: The conda-pixi-pack version under our own key: None for a pack written by pixi-pack
    #: (whose ``pixi-pack-version`` is then pixi-pack's, not ours).
    writer_version: str | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "version": self.version,
            "pixi-pack-version": self.tool_version,
            "platform": self.platform,
        }
        # Our key marks the pack as ours (pixi-unpack ignores it) and says which version wrote it.
        extension: dict[str, Any] = {"version": self.writer_version or self.tool_version}
        if self.origins:
            extension["origins"] = {
                key: {k: v for k, v in vars(o).items() if v is not None}
                for key, o in sorted(self.origins.items())
            }
        data[EXTENSION_KEY] = extension
        return json.dumps(data, indent=2) + "\n"


def read_metadata(root: Path) -> PackMetadata:
    """Parse and check ``pixi-pack.json`` of an extracted pack (the platform is checked by unpack)."""
    try:
        data = (root / METADATA_FILE).read_bytes()
    except FileNotFoundError:
        raise PackError(
            f"not a pack: {METADATA_FILE} is missing",
            "give a file written by `pack` (or pixi-pack)",
        ) from None
    except OSError as exc:
        raise PackError(f"cannot read {METADATA_FILE} of the pack: {exc.strerror or exc}") from None
    return parse_metadata(data)


def load_json(data: bytes, name: str) -> Any:
    """A pack's JSON file, or a "damaged pack" error naming it: undecodable bytes or broken JSON
    mean the file was damaged, and the error says so rather than quoting a codec."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(f"broken pack: {name} is damaged: {plain_reason(exc)}", DAMAGED_HINT) from None


def parse_metadata(data: bytes) -> PackMetadata:
    """Parse and check the bytes of ``pixi-pack.json``."""
    data = load_json(data, METADATA_FILE)
    if not isinstance(data, dict):
        raise PackError(f"not a pack: {METADATA_FILE} is not a JSON object")
    version = data.get("version")
    if version is not None and not isinstance(version, str):
        raise PackError(
            f"broken pack: {METADATA_FILE} has version {json.dumps(version)}, "
            f"which must be the string {json.dumps(FORMAT_VERSION)}",
            "the pack was not written by pixi-pack or conda-pixi-pack; write it again with `pack`",
        )
    if version != FORMAT_VERSION:
        raise PackError(
            f"unsupported pack format version {version!r} (this tool reads {FORMAT_VERSION!r})",
            "unpack it with the tool version that wrote it",
        )
    platform = data.get("platform")
    if not isinstance(platform, str) or not platform:
        raise PackError(f"not a pack: {METADATA_FILE} names no platform")
    tool_version = data.get("pixi-pack-version")
    origins: dict[str, Origin] = {}
    writer_version = None
    ext = data.get(EXTENSION_KEY)
    if isinstance(ext, dict):
        # our key without a usable version: a conda-pixi-pack from before it was recorded
        version = ext.get("version")
        writer_version = version if isinstance(version, str) and version else EARLIER_WRITER
        if isinstance(ext.get("origins"), dict):
            for key, value in ext["origins"].items():
                if isinstance(value, dict) and isinstance(value.get("url"), str):
                    channel = value.get("channel")
                    origins[key] = Origin(value["url"], channel if isinstance(channel, str) else None)
    return PackMetadata(FORMAT_VERSION, str(tool_version or "unknown"), platform, origins, writer_version)


#: This machine's subdir by ``(sys.platform, machine)`` for a 64-bit interpreter, as rattler
#: names it (its ``Platform.current()`` is the platform its binary was built for).
KNOWN_PLATFORMS: Final = {
    ("linux", "x86_64"): "linux-64",
    ("linux", "aarch64"): "linux-aarch64",
    ("linux", "ppc64le"): "linux-ppc64le",
    ("darwin", "x86_64"): "osx-64",
    ("darwin", "arm64"): "osx-arm64",
    ("win32", "AMD64"): "win-64",
    ("win32", "ARM64"): "win-arm64",
}


def current_platform() -> str:
    """This machine's conda subdir, as rattler names it (``linux-64``, ``osx-arm64``, ...).

    The common ones from a table: importing rattler to ask it takes ~30 ms, which ``unpack``
    would spend before its extraction processes start. Others (32-bit, s390x, FreeBSD...) are
    rattler's answer.
    """
    if sys.maxsize > 2**32:
        if hasattr(os, "uname"):
            machine = os.uname().machine
        else:
            import platform

            machine = platform.machine()
        known = KNOWN_PLATFORMS.get((sys.platform, machine))
        if known is not None:
            return known
    from rattler import Subdir

    return str(Subdir.current())


def is_package_path(path: PurePath) -> bool:
    """Whether ``path`` in an extracted pack is where a package file goes (``channel/<subdir>/``)."""
    return path.name.endswith((CONDA_SUFFIX, TAR_BZ2_SUFFIX)) and path.parent.parent.name == CHANNEL_DIR


def environment_yml(conda_specs: Iterable[str], wheel_specs: Iterable[str]) -> str:
    """Render ``environment.yml`` exactly as pixi-pack does.

    ``conda_specs`` are ``name=version=build`` strings in lock order (then injected packages),
    ``wheel_specs`` ``name==version`` strings; the pip section appears only with wheels.
    """
    lines = ["channels:", "  - ./channel", "  - nodefaults", "dependencies:"]
    lines += [f"  - {spec}" for spec in conda_specs]
    wheels = list(wheel_specs)
    if wheels:
        lines += ["  - pip:", "    - --no-index", "    - --find-links ./pypi"]
        lines += [f"    - {spec}" for spec in wheels]
    return "\n".join(lines) + "\n"


def explicit_list(platform: str, packages: Iterable[tuple[str, str, Mapping[str, Any]]]) -> str:
    """conda's ``@EXPLICIT`` list for ``packages`` (``(subdir, file name, record)`` in the order of
    ``environment.yml``): each line a path relative to the pack's root and ``#`` its sha256 (md5
    where the record has no sha256), as ``conda list --explicit --sha256`` writes them. conda and
    micromamba resolve such paths against the current folder: the pack's root after ``tar -xf``."""
    lines = [
        f"# Packages of this pack for {platform}, installed without a solver by, in the folder the",
        "# pack was extracted to (tar -xf environment.tar):",
        f"#   conda create -p ./env --offline --file {EXPLICIT_FILE}",
        f"#   micromamba create -p ./env --offline -f {EXPLICIT_FILE}",
        f"# platform: {platform}",
        EXPLICIT_MARKER,
    ]
    for subdir, file_name, record in packages:
        checksum = record.get("sha256") or record.get("md5")
        suffix = f"#{checksum}" if isinstance(checksum, str) and checksum else ""
        lines.append(f"{CHANNEL_DIR}/{subdir}/{file_name}{suffix}")
    return "\n".join(lines) + "\n"


def conda_spec(record: Mapping[str, Any]) -> str:
    """``name=version=build`` for one record."""
    return f"{record['name']}={record['version']}={record['build']}"


def repodata(subdir: str, records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Build a ``repodata.json`` document for one subdir from ``file name -> record``.

    ``.conda`` files go under ``packages.conda`` and ``.tar.bz2`` files under ``packages``:
    pixi-unpack reads both maps and conda only finds ``.tar.bz2`` under ``packages``.
    Location keys are dropped: a channel index describes packages, not where they came from.
    """
    conda: dict[str, Any] = {}
    bz2: dict[str, Any] = {}
    for file_name in sorted(records):
        record = {k: v for k, v in records[file_name].items() if k not in LOCATION_KEYS}
        (conda if file_name.endswith(CONDA_SUFFIX) else bz2)[file_name] = record
    return {
        "info": {"subdir": subdir},
        "packages": bz2,
        "packages.conda": conda,
        "removed": [],
        "repodata_version": 2,
    }


def dump_repodata(document: Mapping[str, Any]) -> str:
    """Serialise a :func:`repodata` document: one line per package record.

    Readable and diffable like an indented file, but written by the C JSON encoder (the
    ``indent=`` one is pure Python and costs more than the rest of a warm pack's metadata).
    """
    lines = []
    for key, value in document.items():
        if isinstance(value, dict) and key in ("packages", "packages.conda") and value:
            entries = (f"    {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in value.items())
            body = ",\n".join(entries)
            lines.append(f"  {json.dumps(key)}: {{\n{body}\n  }}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def read_repodata(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``subdir -> file name -> record`` for every ``channel/*/repodata.json`` of a pack."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    channel = root / CHANNEL_DIR
    if not channel.is_dir():
        return result
    for subdir_path in sorted(p for p in channel.iterdir() if p.is_dir()):
        path = subdir_path / REPODATA_FILE
        if not path.is_file():
            if any(is_package_path(p) for p in subdir_path.iterdir()):
                raise missing_repodata(subdir_path.name)
            continue
        name = path.relative_to(root).as_posix()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PackError(f"cannot read {name} of the pack: {exc.strerror or exc}") from None
        result[subdir_path.name] = parse_repodata(data, name)
    return result


def parse_repodata(data: bytes, name: str) -> dict[str, dict[str, Any]]:
    """``file name -> record`` of one ``repodata.json`` (``.conda`` and ``.tar.bz2`` records alike)."""
    document = load_json(data, name)
    if not isinstance(document, dict):
        raise PackError(f"broken pack: {name} is not a JSON object", DAMAGED_HINT)
    records: dict[str, dict[str, Any]] = {}
    for key in ("packages", "packages.conda"):
        section = document.get(key) or {}
        if not isinstance(section, dict):
            raise PackError(f"broken pack: {name} has a malformed {key!r}", DAMAGED_HINT)
        records.update(section)
    folder = name.rpartition("/")[0]
    for file_name, record in records.items():
        _check_record(f"{folder}/{file_name}" if folder else file_name, record)
    return records


_HEX: Final = frozenset("0123456789abcdef")
#: Length of each checksum's hex digest in a record.
_DIGEST_LENGTHS: Final = {"sha256": 64, "md5": 32}


def _check_record(label: str, record: object) -> None:
    """The fields a record's file is checked against, of the types they must have: a mistyped
    one would otherwise fail deep in an installer, naming neither the file nor the record."""
    if not isinstance(record, dict):
        raise PackError(f"broken pack: the record of {label} is malformed", DAMAGED_HINT)
    size = record.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise PackError(
            f"broken pack: the record of {label} has a size that is not a number: {size!r}", DAMAGED_HINT
        )
    for algorithm, length in _DIGEST_LENGTHS.items():
        value = record.get(algorithm)
        if value is None:
            continue
        valid = isinstance(value, str) and len(value) == length and all(c in _HEX for c in value.lower())
        if not valid:
            raise PackError(
                f"broken pack: the record of {label} has a {algorithm} that is not "
                f"{length} hex digits: {value!r}",
                DAMAGED_HINT,
            )


def missing_repodata(subdir: str) -> PackError:
    """A subdir folder with packages but no index: pixi-unpack would install none of them."""
    return PackError(
        f"broken pack: {CHANNEL_DIR}/{subdir}/ holds packages but no {REPODATA_FILE}", DAMAGED_HINT
    )
