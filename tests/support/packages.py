"""Build real conda packages (``.conda`` and ``.tar.bz2``) for tests.

Written by hand rather than with ``rattler_build.assemble_package`` because tests need what that
function does not expose: a chosen prefix placeholder with explicit text/binary modes,
``info/link.json`` entry points, link scripts, track_features, and byte-for-byte deterministic
archives (fixed mtimes, sorted members, fixed zip timestamps) so that pack snapshots are stable.
The archives follow conda-build's layout, so both conda and rattler install them.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Literal

try:  # Python >= 3.14
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # conda-package-streaming depends on the backport below 3.14
    from backports import zstd  # type: ignore[no-redef]

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The build prefix written into files, padded like conda-build's ``_h_env_placehold...`` host
#: prefix to 255 characters so that binary replacement has room for any test prefix.
PLACEHOLDER: Final[str] = ("/opt/conda-bld/fixture_1700000000000/_h_env" + "_placehold" * 30)[:255]

#: mtime of every archive member and the ``timestamp`` of every index.json (seconds).
EPOCH: Final[int] = 1_700_000_000

#: Fixed zip entry time for ``.conda`` containers (zip cannot store dates before 1980).
ZIP_DATE: Final[tuple[int, int, int, int, int, int]] = (2023, 11, 14, 22, 13, 20)

#: Default zstd level: tests value speed over size.
ZSTD_LEVEL: Final[int] = 3

#: Default bzip2 level for ``.tar.bz2``.
BZ2_LEVEL: Final[int] = 1

#: What a spec file content may be: literal bytes/text, or a file on disk (copied as is).
Content = bytes | str | Path


def binary_with_prefix(
    suffix: str = "/lib", *, padding: int = 64, head: bytes = b"\x7fELF\x02\x01\x01\0"
) -> bytes:
    """Bytes shaped like a compiled binary holding a C string that starts with :data:`PLACEHOLDER`.

    The string is NUL terminated and followed by NUL padding, as in real binaries, which is what
    conda's and rattler's binary prefix replacement look for.
    """
    return head + b"\0" * 8 + (PLACEHOLDER + suffix).encode() + b"\0" * padding + b"END\0"


@dataclass
class PackageSpec:
    """Everything a test may want in one package; :func:`build_package` writes it.

    ``subdir`` becomes ``"noarch"`` automatically when ``noarch`` is set and subdir was left at
    its default.
    """

    name: str
    version: str = "1.0"
    build: str = "0"
    build_number: int = 0
    subdir: str = "linux-64"
    noarch: Literal["generic", "python"] | None = None
    depends: list[str] = field(default_factory=list)
    constrains: list[str] = field(default_factory=list)
    #: Relative path -> content; a :class:`~pathlib.Path` value is copied from disk.
    files: dict[str, Content] = field(default_factory=dict)
    #: Files whose content contains :data:`PLACEHOLDER` (``file_mode: text``).
    text_prefix_files: list[str] = field(default_factory=list)
    #: Files whose content contains :data:`PLACEHOLDER` + NUL padding (``file_mode: binary``).
    binary_prefix_files: list[str] = field(default_factory=list)
    #: Link path -> target relative to the link's directory.
    symlinks: dict[str, str] = field(default_factory=dict)
    #: Files written with mode 0o755 (all others 0o644).
    executables: list[str] = field(default_factory=list)
    #: bash body of ``bin/.<name>-post-link.sh``.
    post_link: str | None = None
    #: bash body of ``bin/.<name>-pre-unlink.sh``.
    pre_unlink: str | None = None
    #: bash body of ``etc/conda/activate.d/<name>.sh``.
    activate_d: str | None = None
    #: ``"cmd = module:func"`` entry points (noarch: python) written to ``info/link.json``.
    entry_points: list[str] = field(default_factory=list)
    fmt: Literal["conda", "tar.bz2"] = "conda"
    track_features: str | None = None
    license: str | None = "BSD-3-Clause"
    #: Per-file placeholder override (path -> placeholder), e.g. a real build prefix.
    placeholders: dict[str, str] = field(default_factory=dict)
    compression_level: int | None = None

    def __post_init__(self) -> None:
        if self.noarch is not None and self.subdir == "linux-64":
            self.subdir = "noarch"
        if self.noarch is None and self.subdir == "noarch":
            self.noarch = "generic"

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"

    @property
    def file_name(self) -> str:
        return f"{self.stem}.{self.fmt}"


@dataclass(frozen=True)
class _Member:
    """One tar member: a regular file (``data`` or ``source``) or a symlink (``target``)."""

    path: str
    mode: int = 0o644
    data: bytes | None = None
    source: Path | None = None
    target: str | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.source is not None
        return self.source.read_bytes()


def _as_bytes(content: Content) -> bytes | Path:
    if isinstance(content, str):
        return content.encode()
    return content


def _payload(spec: PackageSpec) -> dict[str, _Member]:
    """The package's non-``info/`` members."""
    files: dict[str, Content] = dict(spec.files)
    scripts: list[str] = []
    if spec.post_link is not None:
        path = f"bin/.{spec.name}-post-link.sh"
        files[path] = spec.post_link
        scripts.append(path)
    if spec.pre_unlink is not None:
        path = f"bin/.{spec.name}-pre-unlink.sh"
        files[path] = spec.pre_unlink
        scripts.append(path)
    if spec.activate_d is not None:
        files[f"etc/conda/activate.d/{spec.name}.sh"] = spec.activate_d
    executables = set(spec.executables) | set(scripts)
    members: dict[str, _Member] = {}
    for path, content in files.items():
        value = _as_bytes(content)
        mode = 0o755 if path in executables else 0o644
        if isinstance(value, Path):
            members[path] = _Member(path, mode=mode, source=value)
        else:
            members[path] = _Member(path, mode=mode, data=value)
    for path, target in spec.symlinks.items():
        members[path] = _Member(path, mode=0o777, target=target)
    for path in members:
        if path.startswith(("/", "info/")) or ".." in path.split("/"):
            raise ValueError(f"bad package path {path!r}")
    listed = [*spec.text_prefix_files, *spec.binary_prefix_files, *spec.executables, *spec.placeholders]
    missing = sorted({path for path in listed if path not in files})
    if missing:
        raise ValueError(f"{spec.name}: listed but not in files: {', '.join(missing)}")
    return members


def _paths_json(spec: PackageSpec, members: dict[str, _Member]) -> tuple[dict, list[str]]:
    """``info/paths.json`` content and ``info/has_prefix`` lines."""
    entries = []
    has_prefix: list[str] = []
    for path in sorted(members):
        member = members[path]
        entry: dict[str, object] = {"_path": path}
        if member.target is not None:
            entry["path_type"] = "softlink"
            resolved = os.path.normpath(str(Path(path).parent / member.target))
            target = members.get(resolved.removeprefix("./"))
            if target is not None and target.target is None:
                data = target.read()
                entry["sha256"] = hashlib.sha256(data).hexdigest()
                entry["size_in_bytes"] = len(data)
        else:
            data = member.read()
            entry["path_type"] = "hardlink"
            entry["sha256"] = hashlib.sha256(data).hexdigest()
            entry["size_in_bytes"] = len(data)
            mode = (
                "text"
                if path in spec.text_prefix_files
                else "binary"
                if path in spec.binary_prefix_files
                else None
            )
            if mode is not None:
                placeholder = spec.placeholders.get(path, PLACEHOLDER)
                if placeholder.encode() not in data:
                    raise ValueError(f"{path!r} is a prefix file but does not contain its placeholder")
                entry["file_mode"] = mode
                entry["prefix_placeholder"] = placeholder
                has_prefix.append(f"{placeholder} {mode} {path}")
        entries.append(entry)
    return {"paths": entries, "paths_version": 1}, has_prefix


def index_json(spec: PackageSpec) -> dict[str, object]:
    """The package's ``info/index.json`` as conda-build writes it."""
    arch, platform = None, None
    if spec.subdir != "noarch":
        platform, _, machine = spec.subdir.partition("-")
        arch = {"64": "x86_64", "32": "x86", "aarch64": "aarch64", "arm64": "arm64"}.get(machine, machine)
    index: dict[str, object] = {
        "arch": arch,
        "build": spec.build,
        "build_number": spec.build_number,
        "depends": list(spec.depends),
        "name": spec.name,
        "platform": platform,
        "subdir": spec.subdir,
        "timestamp": EPOCH * 1000,
        "version": spec.version,
    }
    if spec.constrains:
        index["constrains"] = list(spec.constrains)
    if spec.license:
        index["license"] = spec.license
    if spec.noarch:
        index["noarch"] = spec.noarch
    if spec.track_features:
        index["track_features"] = spec.track_features
    return dict(sorted(index.items()))


def _info(spec: PackageSpec, members: dict[str, _Member]) -> dict[str, _Member]:
    paths, has_prefix = _paths_json(spec, members)
    info: dict[str, bytes] = {
        "info/index.json": _dumps(index_json(spec)),
        "info/paths.json": _dumps(paths),
        "info/files": "".join(f"{p}\n" for p in sorted(members)).encode(),
        "info/about.json": _dumps({"summary": f"{spec.name} test fixture", "license": spec.license}),
    }
    if has_prefix:
        info["info/has_prefix"] = "".join(f"{line}\n" for line in has_prefix).encode()
    if spec.noarch == "python":
        link = {
            "noarch": {"type": "python", "entry_points": list(spec.entry_points)},
            "package_metadata_version": 1,
        }
        info["info/link.json"] = _dumps(link)
    elif spec.entry_points:
        raise ValueError("entry_points need noarch='python'")
    return {path: _Member(path, data=data) for path, data in info.items()}


def _dumps(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _write_tar(fileobj: IO[bytes], members: Iterator[_Member]) -> None:
    """An uncompressed, deterministic tar: no owners, fixed mtime."""
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.path)
            info.mtime = EPOCH
            info.mode = member.mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if member.target is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = member.target
                tar.addfile(info)
                continue
            if member.source is not None:
                info.size = member.source.stat().st_size
                with member.source.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                data = member.read()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def build_package(spec: PackageSpec, channel_root: Path) -> Path:
    """Write the package to ``channel_root/<subdir>/<file_name>`` and return its path.

    The same spec always produces the same bytes.
    """
    members = _payload(spec)
    info = _info(spec, members)
    out_dir = Path(channel_root) / spec.subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / spec.file_name
    tmp = out_dir / f".{spec.file_name}.tmp"
    try:
        if spec.fmt == "conda":
            _write_conda(tmp, spec, info, members)
        elif spec.fmt == "tar.bz2":
            _write_tar_bz2(tmp, spec, info, members)
        else:
            raise ValueError(f"unknown package format {spec.fmt!r}")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _sorted(members: dict[str, _Member]) -> Iterator[_Member]:
    return (members[path] for path in sorted(members))


def _write_tar_bz2(
    target: Path, spec: PackageSpec, info: dict[str, _Member], members: dict[str, _Member]
) -> None:
    level = spec.compression_level or BZ2_LEVEL
    with target.open("wb") as raw, bz2.BZ2File(raw, "wb", compresslevel=level) as out:
        # info/ first, as conda-build does, so readers find the metadata early.
        _write_tar(out, iter([*_sorted(info), *_sorted(members)]))


def _write_conda(
    target: Path, spec: PackageSpec, info: dict[str, _Member], members: dict[str, _Member]
) -> None:
    level = spec.compression_level or ZSTD_LEVEL
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as container:
        _zip_write(container, "metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode())
        for prefix, part in (("pkg", members), ("info", info)):
            with tempfile.SpooledTemporaryFile(max_size=32 << 20) as tar_file:
                _write_tar(tar_file, _sorted(part))
                tar_file.seek(0)
                entry = zipfile.ZipInfo(f"{prefix}-{spec.stem}.tar.zst", date_time=ZIP_DATE)
                entry.external_attr = 0o644 << 16
                with (
                    container.open(entry, "w", force_zip64=False) as handle,
                    zstd.ZstdFile(handle, mode="w", level=level) as compressed,
                ):
                    shutil.copyfileobj(tar_file, compressed, 1 << 20)


def _zip_write(container: zipfile.ZipFile, name: str, data: bytes) -> None:
    entry = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    entry.external_attr = 0o644 << 16
    container.writestr(entry, data)
