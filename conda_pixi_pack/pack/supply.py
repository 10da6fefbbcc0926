"""Where each file of a pack comes from: ``--use-cache``, conda's package caches, or its URL.

The order is the issue's and a user's: a verified entry of the ``--use-cache`` folder, then an
archive in conda's package caches whose checksum matches, else the URL (a download, or a copy of a
local file). :func:`plan` decides without writing anything (``pack --dry-run`` shows it);
:func:`fetch` then puts every file into the pack's folder.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from conda_pixi_pack.artifacts import file_mismatch
from conda_pixi_pack.pack import download, package_caches
from conda_pixi_pack.pack.cache import stamp_matches
from conda_pixi_pack.pack.urls import public_url

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from conda_pixi_pack.artifacts import Artifact
    from conda_pixi_pack.pack.destination import Destination
    from conda_pixi_pack.progress import Reporter

#: Where a file comes from, as the summary and ``--dry-run`` name it.
CACHE: Final = "cache"
PACKAGE_CACHE: Final = "package cache"
DOWNLOAD: Final = "download"
LOCAL_FILE: Final = "local file"


@dataclass(frozen=True)
class Supply:
    """One file of the pack and where it will come from."""

    artifact: Artifact
    origin: str
    #: The file it is taken from (the cache entry, the package cache's archive), if local.
    path: Path | None = None

    @property
    def shown(self) -> str:
        """Where it comes from, for a person: the origin, and the URL without credentials."""
        where = str(self.path) if self.path is not None else public_url(self.artifact.url)
        return f"{self.origin}: {where}"


def plan(
    wanted: Sequence[tuple[Artifact, Sequence[Path]]],
    cache_dir: Path | None,
    *,
    package_cache_dirs: Callable[[], Sequence[Path]],
) -> list[Supply]:
    """Where each artifact will come from (``wanted``: each with the local copies its source
    names); reads and hashes, writes nothing. ``package_cache_dirs`` is asked only when a file is
    not in the ``--use-cache`` folder (asking may import conda: a warm pack need not wait)."""
    supplies: dict[str, Supply] = {}
    rest = []
    for artifact, copies in wanted:
        entry = _cached(artifact, cache_dir)
        if entry is not None:
            supplies[artifact.relative_path] = Supply(artifact, CACHE, entry)
        else:
            rest.append((artifact, copies))
    found = package_caches.find(rest, package_cache_dirs()) if rest else {}
    for artifact, _ in rest:
        path = found.get(artifact.relative_path)
        if path is not None:
            supplies[artifact.relative_path] = Supply(artifact, PACKAGE_CACHE, path)
        else:
            local = urlsplit(artifact.url).scheme.lower() == "file"
            supplies[artifact.relative_path] = Supply(artifact, LOCAL_FILE if local else DOWNLOAD)
    return [supplies[artifact.relative_path] for artifact, _ in wanted]


def _cached(artifact: Artifact, cache_dir: Path | None) -> Path | None:
    """The ``--use-cache`` entry for ``artifact`` if it is verified (its stamp, or its hash),
    looked at without changing anything (the fetcher repairs what needs repairing)."""
    if cache_dir is None or not (artifact.sha256 or artifact.md5):
        return None
    entry = cache_dir / artifact.relative_path
    try:
        if stamp_matches(entry, artifact, entry.stat()) or file_mismatch(entry, artifact) is None:
            return entry
    except OSError:
        pass
    return None


def fetch(
    supplies: Sequence[Supply],
    destination: Destination,
    *,
    network: download.NetworkSettings,
    cache_dir: Path | None,
    reporter: Reporter,
) -> dict[str, Path]:
    """Put every file at its place in ``destination`` (a folder, or its slot of the archive):
    package-cache archives linked (or copied), the rest through the fetcher (``--use-cache``
    entries, downloads, local copies). Returns the paths of the files (none for slots)."""
    for item in supplies:
        if item.origin == PACKAGE_CACHE and item.path is not None:
            try:
                destination.put(item.artifact, item.path)
            except OSError as exc:
                raise download.cannot_gather(destination.location(item.artifact), exc) from exc
    rest = [s.artifact for s in supplies if s.origin != PACKAGE_CACHE]
    if rest:
        download.fetch_all(rest, destination, network=network, cache_dir=cache_dir, reporter=reporter)
    return {
        s.artifact.relative_path: path for s in supplies if (path := destination.path(s.artifact)) is not None
    }


def counts(supplies: Sequence[Supply]) -> dict[str, int]:
    """How many files come from each place (for the summary line and ``--json``)."""
    return dict(Counter(s.origin for s in supplies))
