"""conda's package caches as a place to take package files from, before any download.

A machine that installed an environment usually still has its archives in a package cache
(``pkgs_dirs``: ``~/.conda/pkgs``, ``<root>/pkgs``, ``CONDA_PKGS_DIRS``); an installed record even
names its own (``package_tarball_full_path``). An archive found there is used only when its size
and checksum are the ones the source gives (it is hashed in full: a cache is shared and may hold
another build under the same name), then linked, or copied, into the pack. So a pack of an
environment can be made with the network off.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.artifacts import file_mismatch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from conda_pixi_pack.artifacts import Artifact

#: Environment variable conda reads its package caches from (comma-separated), as conda does.
PKGS_DIRS_ENV: Final = "CONDA_PKGS_DIRS"
#: Threads hashing candidates (hashlib releases the GIL on large buffers).
HASH_WORKERS: Final = min(4, os.cpu_count() or 1)


def package_cache_dirs() -> list[Path]:
    """conda's package caches: conda's own answer where conda imports, else ``CONDA_PKGS_DIRS``,
    else conda's defaults for a user (``~/.conda/pkgs``) and for the active installation."""
    try:
        from conda.base.context import context
    except ImportError:
        context = None
    if context is not None:
        try:
            return [Path(p) for p in context.pkgs_dirs]
        except Exception:  # a broken conda configuration must not stop a pack that can download
            pass
    if os.environ.get(PKGS_DIRS_ENV):
        return [Path(p).expanduser() for p in os.environ[PKGS_DIRS_ENV].split(",") if p]
    roots = [os.environ.get("CONDA_ROOT", ""), os.environ.get("MAMBA_ROOT_PREFIX", "")]
    return [Path("~/.conda/pkgs").expanduser(), *(Path(root) / "pkgs" for root in roots if root)]


def find(wanted: Sequence[tuple[Artifact, Sequence[Path]]], directories: Sequence[Path]) -> dict[str, Path]:
    """``relative_path -> archive`` for every artifact a package cache holds exactly: its
    ``local_copies`` first, then ``<dir>/<file name>`` in each cache. Only artifacts with a
    checksum are looked for (without one, nothing says it is the same file).

    Files of the right size are found first with a ``stat`` each; only those are hashed, in
    threads. (A cold pack usually finds none, and starting threads to learn that would cost
    more than the look itself.)"""
    candidates = [
        (artifact, found)
        for artifact, copies in wanted
        if (artifact.sha256 or artifact.md5)
        and (found := _sized([*copies, *(d / artifact.file_name for d in directories)], artifact))
    ]
    if not candidates:
        return {}

    def one(item: tuple[Artifact, list[Path]]) -> tuple[str, Path | None]:
        artifact, paths = item
        return artifact.relative_path, next((p for p in paths if _matches(p, artifact)), None)

    from concurrent.futures import ThreadPoolExecutor  # 4 ms, for the packs that find something

    with ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="conda-pixi-pack-pkgs") as pool:
        return {path: found for path, found in pool.map(one, candidates) if found is not None}


def _sized(paths: Sequence[Path], artifact: Artifact) -> list[Path]:
    """The regular files among ``paths`` whose size is the artifact's (any size if not known)."""
    found = []
    for path in paths:
        try:
            info = path.stat()
        except (OSError, ValueError):  # missing, unreadable, or a name the system refuses
            continue
        if stat.S_ISREG(info.st_mode) and (artifact.size is None or info.st_size == artifact.size):
            found.append(path)
    return found


def _matches(candidate: Path, artifact: Artifact) -> bool:
    """Whether the file :func:`_sized` found is still a file and hashes right (``file_mismatch``
    checks the size again: a cache is shared, and the file may have changed since)."""
    try:
        return candidate.is_file() and file_mismatch(candidate, artifact) is None
    except OSError:  # unreadable, gone, or no longer a file meanwhile: not a candidate
        return False
