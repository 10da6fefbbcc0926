"""Verified, parallel, streamed, cached fetching through py-rattler's HTTP client.

SEED written by the lead: the shapes below are the contract between lockfile.py, download.py
and pack.py. The lock/download helper owns this file; fields may be added, not renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from conda_pixi_pack.progress import Reporter


@dataclass(frozen=True)
class Artifact:
    """A file to fetch and how to verify it."""

    #: ``http(s)://``, ``s3://``, ``oci://``… (through rattler's client) or ``file://``.
    url: str
    file_name: str
    sha256: str | None
    md5: str | None
    size: int | None
    #: Where it lands below the destination (and the cache): ``<subdir>/<file>`` or ``pypi/<file>``.
    relative_path: str
    #: Human label for messages, e.g. ``numpy 2.1.0`` or the file name.
    label: str


@dataclass(frozen=True)
class NetworkSettings:
    """What configures the client: ``--auth-file`` and ``--config`` (pixi/rattler TOML)."""

    auth_file: Path | None = None
    config_file: Path | None = None


def fetch_all(
    artifacts: list[Artifact],
    destination: Path,
    *,
    network: NetworkSettings,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Path]:
    """Fetch every artifact to ``destination / relative_path``, verified; returns those paths.

    Raises PackError naming the artifact on 404, 401/403 (hint: ``--auth-file``), checksum
    mismatch (both hashes), unreachable host. Never leaves a partial file at a final path.
    """
    raise NotImplementedError
