"""Distributions pip installed into a conda environment: packed as the very wheels they came from.

conda does not manage them (no ``conda-meta`` record lists their files), so a pack of the
environment needs their wheels. A wheel is taken only when it is exactly what was installed:

- installed from a wheel URL whose hash pip recorded (``direct_url.json``): that URL, that hash;
- otherwise a wheel of that name and version in pip's cache (``$PIP_CACHE_DIR``, else pip's default)
  whose ``RECORD`` lists exactly the files, hashes and sizes the installed ``RECORD`` does.

Anything else is listed as missing: its version is known, but not which build of it was installed.
(The package index is not asked: a pack is made to go offline, and a wheel found there could only
be matched the same way.)
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from installer.utils import parse_wheel_filename

from conda_pixi_pack.artifacts import Artifact, file_digests
from conda_pixi_pack.format import PYPI_DIR, WHEEL_SUFFIX
from conda_pixi_pack.pack.sources import LockedWheel, Missing

if TYPE_CHECKING:
    from conda_pixi_pack.progress import Reporter

#: Where pip keeps the wheels it built or downloaded, unless ``PIP_CACHE_DIR`` says otherwise.
DEFAULT_PIP_CACHE: Final = Path("~/.cache/pip") if sys.platform != "darwin" else Path("~/Library/Caches/pip")
#: What marks a distribution that conda (or conda-build) installed: never a pip wheel.
CONDA_INSTALLERS: Final = frozenset({"conda"})


def find_pip_installed(
    prefix: Path, records: list[dict[str, Any]], reporter: Reporter
) -> tuple[list[LockedWheel], list[Missing]]:
    """The wheels of the distributions no conda package installed, and those it cannot find."""
    owned = {path for record in records for path in record.get("files") or () if isinstance(path, str)}
    wheels: list[LockedWheel] = []
    missing: list[Missing] = []
    for dist_info in _dist_infos(prefix):
        if f"{dist_info.relative_to(prefix).as_posix()}/METADATA" in owned:
            continue  # a conda package's files
        installer = _read(dist_info / "INSTALLER").strip()
        if installer in CONDA_INSTALLERS:
            continue
        metadata = HeaderParser().parsestr(_read(dist_info / "METADATA"))
        name, version = metadata.get("Name"), metadata.get("Version")
        if not name or not version:
            continue
        label = f"{name} {version} (installed by {installer or 'an unknown tool'}, not conda)"
        wheel = _from_direct_url(dist_info, name, version) or _from_pip_cache(dist_info, name, version)
        if wheel is None:
            missing.append(
                Missing(label, "its wheel is not in pip's cache and it was not installed from a wheel URL")
            )
        else:
            reporter.debug(f"{label}: packing {wheel.artifact.url}")
            wheels.append(wheel)
    return wheels, missing


def _dist_infos(prefix: Path) -> list[Path]:
    folders = [*prefix.glob("lib/python*/site-packages"), prefix / "Lib" / "site-packages"]
    return sorted(
        p for folder in folders if folder.is_dir() for p in folder.glob("*.dist-info") if p.is_dir()
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _wheel(name: str, version: str, url: str, file_name: str, sha256: str) -> LockedWheel:
    artifact = Artifact(
        url=url, file_name=file_name, sha256=sha256, md5=None, size=None,
        relative_path=f"{PYPI_DIR}/{file_name}", label=f"{name} {version} (wheel)",
    )  # fmt: skip
    return LockedWheel(name=name, version=version, file_name=file_name, artifact=artifact)


def _from_direct_url(dist_info: Path, name: str, version: str) -> LockedWheel | None:
    """The wheel pip installed from a URL with a recorded sha256 (PEP 610)."""
    try:
        direct = json.loads(_read(dist_info / "direct_url.json") or "{}")
    except ValueError:
        return None
    url = direct.get("url") if isinstance(direct, dict) else None
    info = direct.get("archive_info") if isinstance(direct, dict) else None
    if not isinstance(url, str) or not isinstance(info, dict):
        return None
    hashes = info.get("hashes") if isinstance(info.get("hashes"), dict) else {}
    legacy = str(info.get("hash") or "")  # PEP 610's older "sha256=<hex>" form
    sha256 = hashes.get("sha256") or (legacy.partition("=")[2] if legacy.startswith("sha256=") else None)
    file_name = unquote(PurePosixPath(urlsplit(url).path).name)
    if not file_name.endswith(WHEEL_SUFFIX):
        return None
    if not sha256:  # pip before 23.1 records no hash for a local file: compare it with RECORD
        parts = urlsplit(url)
        local = (
            Path(unquote(parts.path))
            if parts.scheme == "file" and parts.netloc in ("", "localhost")
            else None
        )
        installed = _record_entries(_read(dist_info / "RECORD"))
        return _matching(local, installed, name, version) if local is not None and installed else None
    return _wheel(name, version, url, file_name, sha256)


def _from_pip_cache(dist_info: Path, name: str, version: str) -> LockedWheel | None:
    """A wheel in pip's cache whose RECORD matches the installed one file for file."""
    installed = _record_entries(_read(dist_info / "RECORD"))
    if not installed:
        return None
    cache = Path(os.environ.get("PIP_CACHE_DIR") or DEFAULT_PIP_CACHE).expanduser() / "wheels"
    for candidate in sorted(cache.rglob(f"*{WHEEL_SUFFIX}")) if cache.is_dir() else []:
        try:
            parsed = parse_wheel_filename(candidate.name)
        except ValueError:
            continue
        if (_normalize(parsed.distribution), parsed.version) != (_normalize(name), version):
            continue
        wheel = _matching(candidate, installed, name, version)
        if wheel is not None:
            return wheel
    return None


def _matching(
    candidate: Path, installed: dict[str, tuple[str, str]], name: str, version: str
) -> LockedWheel | None:
    """``candidate`` as the wheel of ``name`` when its RECORD lists exactly the installed files."""
    try:
        with zipfile.ZipFile(candidate) as archive:
            record = next((n for n in archive.namelist() if n.endswith(".dist-info/RECORD")), None)
            entries = _record_entries(archive.read(record).decode("utf-8")) if record else {}
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, KeyError):
        return None
    if not entries or any(installed.get(path) != entry for path, entry in entries.items()):
        return None
    return _wheel(name, version, candidate.resolve().as_uri(), candidate.name, file_digests(candidate)[1])


def _record_entries(text: str) -> dict[str, tuple[str, str]]:
    """``path -> (hash, size)`` of a RECORD, only the files with a hash (not RECORD, not .pyc)."""
    entries = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 3 and row[1] and not row[0].endswith(".pyc"):
            entries[row[0].replace("\\", "/")] = (_urlsafe(row[1]), row[2])
    return entries


def _urlsafe(digest: str) -> str:
    """A RECORD hash as ``algo=urlsafe-base64`` (hex digests, as uv_build wrote them, converted)."""
    algorithm, _, value = digest.partition("=")
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        value = base64.urlsafe_b64encode(bytes.fromhex(value)).decode().rstrip("=")
    return f"{algorithm}={value}"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()
