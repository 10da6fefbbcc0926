"""Pack sources: each turns its input into the same locked records and wheel artifacts.

A source (one module each: ``lockfile.py`` reads pixi and conda-lock lock files, ``prefix.py`` an
installed conda environment, ``explicit.py`` an ``@EXPLICIT`` list) answers :meth:`Source.load`
with a :class:`LockedEnvironment`; the pack pipeline, the fetcher and the writers never know which
source it came from. The shapes below are the contract: fields may be added (with defaults), not
renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from conda_pixi_pack.artifacts import Artifact
    from conda_pixi_pack.progress import Reporter


@dataclass(frozen=True)
class LockedConda:
    """One locked conda package: its repodata record as the source has it, and where to get it."""

    #: The record (``RepoDataRecord.to_json()`` parsed for a lock): includes repodata patches.
    record: dict[str, Any]
    subdir: str
    file_name: str
    #: Original URL as the source names it (kept as provenance in the pack).
    url: str
    channel: str | None
    artifact: Artifact
    #: Files that may already hold this very package (an installed environment's
    #: ``package_tarball_full_path``); each is used only if its checksum matches.
    local_copies: tuple[Path, ...] = ()
    #: The record is only what a URL says (an ``@EXPLICIT`` line): the rest (dependencies,
    #: build number...) is read from the archive's ``info/index.json`` once it is fetched.
    record_from_archive: bool = False


@dataclass(frozen=True)
class LockedWheel:
    """One locked PyPI wheel."""

    name: str
    version: str
    file_name: str
    artifact: Artifact


@dataclass(frozen=True)
class Missing:
    """A package the source lists but that cannot be packed exactly, and why."""

    label: str
    reason: str

    def __str__(self) -> str:
        return f"{self.label}: {self.reason}"


@dataclass(frozen=True)
class LockedEnvironment:
    """What one pack needs from its source."""

    platform: str
    conda: list[LockedConda]
    wheels: list[LockedWheel]
    #: Names of source packages (``pixi build``) left out, each to be replaced by an ``--inject``.
    source_packages: tuple[str, ...] = ()
    #: Files the environment was read from, with what each is ("the lock file"): the pack's
    #: output must never replace one.
    inputs: tuple[tuple[Path, str], ...] = ()
    #: Packages that cannot be packed exactly (no URL, no checksum, a local file that is gone, a
    #: pip-installed distribution without its wheel): an error, or skipped with a warning.
    missing: tuple[Missing, ...] = ()


class Source(Protocol):
    """Where a pack's packages are listed."""

    def load(self, platform: str | None, reporter: Reporter) -> LockedEnvironment:
        """The environment for ``platform`` (None: the source's own, or this machine's); raises
        PackError."""
