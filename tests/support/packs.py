"""Hand-made packs laid out exactly as Quantco's pixi-pack 0.7 writes them (for the unpack tests).

Built here rather than with ``pack()`` so that unpack is tested against the reference format
itself (no file of ours), and so that each test can damage one precise thing.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import tarfile
from typing import TYPE_CHECKING, Any, Final

import rattler

from conda_pixi_pack.format import TAR_MTIME

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

#: What pixi-pack 0.7 writes as ``pixi-pack-version`` (our reader warns on anything but ours).
PIXI_PACK_VERSION: Final = "0.7.10"


def record_of(package: Path) -> dict[str, Any]:
    """The repodata record of a package archive as a lock (and so pixi-pack) carries it."""
    record = asyncio.run(rattler.RepoDataRecord.from_package_archive(package))
    data = json.loads(record.to_json())
    # Locks (and so pixi-pack's records) carry both hashes; rattler's reader computes only sha256.
    data["md5"] = hashlib.md5(package.read_bytes()).hexdigest()
    for key in ("url", "channel", "fn", "file_name"):
        data.pop(key, None)
    return data


def make_pack_dir(
    root: Path,
    packages: Iterable[Path],
    *,
    wheels: Iterable[Path] = (),
    platform: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    origins: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Lay out a pack folder at ``root``: every record under ``packages.conda`` as pixi-pack does.

    ``metadata`` replaces ``pixi-pack.json`` entirely; ``origins`` adds our extension key.
    """
    platform = platform or str(rattler.Subdir.current())
    root.mkdir(parents=True, exist_ok=True)
    by_subdir: dict[str, dict[str, Any]] = {}
    specs: list[str] = []
    for package in packages:
        record = record_of(package)
        subdir = record["subdir"]
        (root / "channel" / subdir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package, root / "channel" / subdir / package.name)
        by_subdir.setdefault(subdir, {})[package.name] = record
        specs.append(f"{record['name']}={record['version']}={record['build']}")
    for subdir, records in by_subdir.items():
        repodata = {
            "info": {"subdir": subdir},
            "packages": {},
            "packages.conda": records,
            "removed": [],
            "repodata_version": 2,
        }
        (root / "channel" / subdir / "repodata.json").write_text(json.dumps(repodata, indent=2))
    wheel_specs = []
    for wheel in wheels:
        (root / "pypi").mkdir(exist_ok=True)
        shutil.copyfile(wheel, root / "pypi" / wheel.name)
        name, version = wheel.name.split("-")[:2]
        wheel_specs.append(f"{name}=={version}")
    data: dict[str, Any] = dict(
        metadata
        if metadata is not None
        else {"version": "1", "pixi-pack-version": PIXI_PACK_VERSION, "platform": platform}
    )
    if origins:
        data["conda-pixi-pack"] = {"origins": dict(origins)}
    (root / "pixi-pack.json").write_text(json.dumps(data, indent=2))
    lines = ["channels:", "  - ./channel", "  - nodefaults", "dependencies:"]
    lines += [f"  - {s}" for s in specs]
    if wheel_specs:
        lines += ["  - pip:", "    - --no-index", "    - --find-links ./pypi"]
        lines += [f"    - {s}" for s in wheel_specs]
    (root / "environment.yml").write_text("\n".join(lines) + "\n")
    return root


def tar_dir(root: Path, target: Path) -> Path:
    """Tar the folder ``root`` as pixi-pack does: sorted entries, directories included, fixed mtime."""
    with tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            info = tar.gettarinfo(path, path.relative_to(root).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = TAR_MTIME, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_dir():
                tar.addfile(info)
            else:
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    return target


def damage(package: Path) -> None:
    """Flip the last byte of ``package``: it no longer matches its record's checksum."""
    data = bytearray(package.read_bytes())
    data[-1] ^= 0xFF
    package.write_bytes(bytes(data))


def make_pack(tmp: Path, packages: Iterable[Path], **kwargs: Any) -> Path:
    """A pack file ``tmp/environment.tar`` (its folder is built in ``tmp/pack-src``)."""
    src = make_pack_dir(tmp / "pack-src", packages, **kwargs)
    return tar_dir(src, tmp / "environment.tar")


def raw_tar(target: Path, members: Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A tar with exactly ``members`` (for the unsafe-archive tests)."""
    with tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return target


#: The start of pixi-pack's script headers (src/header.sh, src/header.ps1), with the markers also
#: inside their code, as in the real ones: only a line that is exactly a marker ends the header.
SH_HEADER = """#!/usr/bin/env bash
set -euo pipefail
archive_begin=$(grep -anm 1 "^@@END_HEADER@@" "$0" | awk -F: '{print $1}')
archive_end=$(grep -anm 1 "^@@END_ARCHIVE@@" "$0" | awk -F: '{print $1}')
exit 0
# shellcheck disable=SC2317
@@END_HEADER@@
"""
PS1_HEADER = """$ErrorActionPreference = "Stop"\r
for ($i = 0; $i -lt $lines.Count; $i++) {\r
    if ($lines[$i] -like "*__END_HEADER__*") {\r
        $headerLine = $i + 2\r
    }\r
}\r
exit 0\r
\r
__END_HEADER__\r
"""


def self_extracting(archive: Path, target: Path, kind: str = "sh") -> Path:
    """``archive`` wrapped as ``pixi-pack --create-executable`` writes it (src/pack.rs): the
    header, a line ending, the tar as one base64 line, a line ending, the end marker and a
    line ending, then the base64 of a (here fake) pixi-unpack executable."""
    import base64

    header, end, eol = (
        (SH_HEADER, "@@END_ARCHIVE@@", "\n") if kind == "sh" else (PS1_HEADER, "__END_ARCHIVE__", "\r\n")
    )
    with open(target, "wb") as out:
        out.write(header.encode() + eol.encode())
        out.write(base64.b64encode(archive.read_bytes()))
        out.write(f"{eol}{end}{eol}".encode())
        out.write(base64.b64encode(b"\x7fELF not really pixi-unpack" * 100))
    return target
