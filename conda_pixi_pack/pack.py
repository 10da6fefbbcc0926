"""``pack``: a pixi lock -> an offline pack (orchestration only).

SEED written by the lead: the options/result shapes below are the contract with the CLI.
The pack helper owns this file and may add fields (with defaults) but not rename existing ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conda_pixi_pack.progress import Reporter


@dataclass
class PackOptions:
    """Everything ``pack`` needs; the CLI fills it from its flags."""

    #: ``pixi.toml``, ``pyproject.toml`` or a directory holding one; the lock is ``pixi.lock`` beside it.
    manifest: Path = field(default_factory=Path.cwd)
    environment: str = "default"
    #: A conda subdir such as ``linux-64``; None means the platform this runs on.
    platform: str | None = None
    #: Target archive (or folder with ``directory_only``). Ignored when ``to_stdout``.
    output: Path = Path("environment.tar")
    to_stdout: bool = False
    directory_only: bool = False
    cache_dir: Path | None = None
    inject: list[Path] = field(default_factory=list)
    ignore_pypi_non_wheel: bool = False
    auth_file: Path | None = None
    config_file: Path | None = None


@dataclass
class PackResult:
    """What the CLI reports when a pack is done."""

    output: Path | None  # None when written to stdout
    conda_packages: int
    wheels: int
    size: int  # bytes of the archive (or of the folder's files)
    platform: str


def pack(options: PackOptions, reporter: Reporter | None = None) -> PackResult:
    """Write the pack described by ``options``; raises PackError, leaves nothing behind on failure."""
    raise NotImplementedError
