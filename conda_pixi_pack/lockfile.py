"""pixi.lock -> the conda records and wheels of one environment and platform (py-rattler).

SEED written by the lead: the shapes below are the contract between lockfile.py, download.py
and pack.py. The lock/download helper owns this file; fields may be added, not renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from conda_pixi_pack.download import Artifact
    from conda_pixi_pack.progress import Reporter


@dataclass(frozen=True)
class LockedConda:
    """One locked conda package: its repodata record as the lock has it, and where to get it."""

    #: The lock's record (``RepoDataRecord.to_json()`` parsed): includes repodata patches.
    record: dict[str, Any]
    subdir: str
    file_name: str
    #: Original URL as written in the lock (kept as provenance in the pack).
    url: str
    channel: str | None
    artifact: Artifact


@dataclass(frozen=True)
class LockedWheel:
    """One locked PyPI wheel."""

    name: str
    version: str
    file_name: str
    artifact: Artifact


@dataclass(frozen=True)
class LockedEnvironment:
    """The part of a lock that one pack needs."""

    lock_path: Path
    environment: str
    platform: str
    conda: list[LockedConda]
    wheels: list[LockedWheel]


def load(
    manifest: Path,
    environment: str,
    platform: str | None,
    *,
    ignore_pypi_non_wheel: bool = False,
    reporter: Reporter | None = None,
) -> LockedEnvironment:
    """Find the lock beside ``manifest`` and select one environment/platform; raises PackError."""
    raise NotImplementedError
