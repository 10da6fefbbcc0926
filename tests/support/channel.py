"""Index a fixture channel and write ``pixi.lock`` / ``pixi.toml`` files that point into it."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit
from urllib.request import url2pathname

import rattler
from rattler import LockChannel, LockFile, LockPlatform

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

#: A locked PyPI package: (name, version, url, sha256 or None).
Wheel = tuple[str, str, str, "str | None"]

#: Platforms a fixture project declares unless told otherwise.
DEFAULT_PLATFORMS: Final[tuple[str, ...]] = ("linux-64",)


def index_channel(channel_root: Path) -> None:
    """Write ``<subdir>/repodata.json`` for every subdir of ``channel_root`` (noarch always).

    Uses rattler's offline indexer; it leaves an empty ``.tmp`` work folder that is removed.
    """
    from rattler.index import index_fs

    root = Path(channel_root)
    (root / "noarch").mkdir(parents=True, exist_ok=True)
    asyncio.run(index_fs(root, write_zst=False, write_shards=False, force=True))
    shutil.rmtree(root / ".tmp", ignore_errors=True)


def channel_of(url: str) -> str:
    """``<channel>/<subdir>/<file>`` -> ``<channel>``."""
    return url.rsplit("/", 2)[0]


def record_for(package_path: Path, url: str, channel: str | None = None) -> rattler.RepoDataRecord:
    """The repodata record of a package archive (sha256, md5, size from the file) served at ``url``.

    ``url`` may be anything a lock may hold (``http://``, ``file://``, a relative path);
    ``channel`` defaults to ``url`` minus ``/<subdir>/<file>``.
    """
    record = asyncio.run(rattler.RepoDataRecord.from_package_archive(Path(package_path)))
    if record.md5 is None:  # pixi locks carry both hashes; rattler's archive reader gives sha256 only
        record.md5 = hashlib.md5(Path(package_path).read_bytes()).digest()
    record.url = url
    record.channel = channel if channel is not None else channel_of(url)
    return record


def write_lock(
    lock_path: Path,
    records: Sequence[rattler.RepoDataRecord],
    *,
    channel: str,
    wheels: Iterable[Wheel] = (),
    environment: str = "default",
    platform: str = "linux-64",
    extra_environments: Mapping[str, Sequence[rattler.RepoDataRecord]] | None = None,
    extra_platforms: Mapping[str, Sequence[rattler.RepoDataRecord]] | None = None,
    relocate: tuple[str, str] | None = None,
) -> Path:
    """Write a real pixi lock (format of py-rattler's writer) and return its path.

    ``extra_environments`` adds environments (same platform, same channel); ``extra_platforms``
    adds records for other platforms to ``environment``. Wheels and sdists are PyPI entries; a
    given sha256 is written as pixi does (``sha256:`` under the package), which py-rattler's
    ``add_pypi_package`` cannot do itself. ``relocate=(old, new)`` rewrites package locations
    starting with ``old`` (e.g. a ``file://`` channel URL) to start with ``new`` (a relative or
    plain absolute path, as pixi writes for local packages; ``RepoDataRecord.url`` refuses those).
    """
    platforms = {platform: LockPlatform(platform)}
    for name in extra_platforms or {}:
        platforms.setdefault(name, LockPlatform(name))
    lock = LockFile(list(platforms.values()))
    envs: dict[str, Sequence[rattler.RepoDataRecord]] = {environment: records, **(extra_environments or {})}
    for env_name, env_records in envs.items():
        lock.set_channels(env_name, [LockChannel(channel)])
        for record in env_records:
            lock.add_conda_package(env_name, platforms[platform], record)
    for plat, plat_records in (extra_platforms or {}).items():
        for record in plat_records:
            lock.add_conda_package(environment, platforms[plat], record)
    hashes: dict[str, str] = {}
    for name, version, url, sha256 in wheels:
        lock.add_pypi_package(environment, platforms[platform], name, version, url)
        if sha256:
            hashes[url] = sha256
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock.to_path(lock_path)
    if hashes or relocate:
        text = _add_pypi_hashes(lock_path.read_text(), hashes)
        if relocate:
            text = _relocate(text, *relocate)
        lock_path.write_text(text)
    return lock_path


def _relocate(text: str, old: str, new: str) -> str:
    """Rewrite ``- conda:``/``- pypi:`` locations that start with ``old``."""
    # py-rattler writes file:// locations as plain absolute paths: match both spellings.
    olds = {old, url2pathname(urlsplit(old).path)} if old.startswith("file://") else {old}
    for prefix in sorted(olds, key=len, reverse=True):
        pattern = re.compile(r"^(\s*- (?:conda|pypi): )" + re.escape(prefix), re.MULTILINE)
        text = pattern.sub(lambda m: m.group(1) + new, text)
    return text


def _add_pypi_hashes(text: str, hashes: Mapping[str, str]) -> str:
    """Insert ``sha256:`` into the top-level ``- pypi: <url>`` package blocks."""
    lines = text.splitlines()
    out: list[str] = []
    current: str | None = None
    for line in lines:
        match = re.fullmatch(r"- pypi: (.+)", line)
        if match:
            current = match.group(1).strip("'\"")
        elif current is not None and not line.startswith("  "):
            current = None
        out.append(line)
        if current is not None and line.startswith("  version:") and current in hashes:
            out.append(f"  sha256: {hashes[current]}")
    return "\n".join(out) + "\n"


def write_project(
    directory: Path,
    *,
    channels: Sequence[str],
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    name: str = "fixture-project",
    dependencies: Mapping[str, str] | None = None,
    pypi_dependencies: Mapping[str, str] | None = None,
    environments: Sequence[str] = (),
) -> Path:
    """Write a minimal ``pixi.toml`` (the manifest the lock lives beside); returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[workspace]",
        f'name = "{name}"',
        "channels = [" + ", ".join(f'"{c}"' for c in channels) + "]",
        "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]",
        "",
        "[dependencies]",
        *(f'{dep} = "{spec}"' for dep, spec in (dependencies or {}).items()),
        "",
    ]
    if pypi_dependencies:
        lines += [
            "[pypi-dependencies]",
            *(f'{dep} = "{spec}"' for dep, spec in pypi_dependencies.items()),
            "",
        ]
    extra = [env for env in environments if env != "default"]
    for env in extra:
        lines += [f"[feature.{env}.dependencies]", ""]
    if extra:
        lines += ["[environments]", *(f'{env} = ["{env}"]' for env in extra), ""]
    manifest = directory / "pixi.toml"
    manifest.write_text("\n".join(lines))
    return manifest


def rattler_install(
    package_paths: Iterable[Path],
    prefix: Path,
    *,
    cache_dir: Path,
    execute_link_scripts: bool = False,
) -> list[rattler.RepoDataRecord]:
    """Install package archives into ``prefix`` with ``rattler.install`` (no channel, no solve).

    The records get ``file://`` URLs, so nothing is downloaded; returns them.
    """
    records = [record_for(path, Path(path).resolve().as_uri()) for path in package_paths]
    asyncio.run(
        rattler.install(
            records,
            Path(prefix),
            cache_dir=Path(cache_dir),
            show_progress=False,
            execute_link_scripts=execute_link_scripts,
        )
    )
    return records
