"""Build real pure-Python wheels (``py3-none-any``) and sdists for tests.

Plain zipfile rather than a build backend: a wheel is a zip with a dist-info folder, and building
one through pip/build would need network access or a backend in every test environment.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Fixed zip entry time: the same arguments always give the same bytes.
ZIP_DATE: Final[tuple[int, int, int, int, int, int]] = (2023, 11, 14, 22, 13, 20)


def normalize(name: str) -> str:
    """Wheel file-name form of a project name (PEP 427/503)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(
    out_dir: Path,
    name: str,
    version: str,
    modules: Mapping[str, str],
    console_scripts: Mapping[str, str] | None = None,
    *,
    requires: tuple[str, ...] = (),
) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``out_dir`` and return its path.

    ``modules`` maps paths inside the wheel (``"pkg/__init__.py"``) to source text;
    ``console_scripts`` maps command names to ``"module:function"``.
    """
    dist = f"{normalize(name)}-{version}"
    dist_info = f"{dist}.dist-info"
    files: dict[str, bytes] = {path: text.encode() for path, text in sorted(modules.items())}
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {req}" for req in requires]
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: conda-pixi-pack-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if console_scripts:
        body = "".join(f"{cmd} = {target}\n" for cmd, target in sorted(console_scripts.items()))
        files[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{body}".encode()
    record_lines = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            entry = zipfile.ZipInfo(path, date_time=ZIP_DATE)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
    return target


def build_sdist(out_dir: Path, name: str, version: str) -> Path:
    """A minimal ``<name>-<version>.tar.gz`` source distribution (for "sdists are refused" tests)."""
    base = f"{normalize(name)}-{version}"
    members = {
        f"{base}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{base}/pyproject.toml": f'[project]\nname = "{name}"\nversion = "{version}"\n',
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{base}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    target.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return target


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (what locks and ``Artifact.sha256`` hold)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
