"""``unpack``: a pack -> a working environment, all or nothing (orchestration only).

SEED written by the lead: the options/result shapes below are the contract with the CLI.
The unpack helper owns this file and may add fields (with defaults) but not rename existing ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from conda_pixi_pack.progress import Reporter

Installer = Literal["conda", "rattler"]


@dataclass
class UnpackOptions:
    """Everything ``unpack`` needs; the CLI fills it from its flags."""

    #: A pack archive or a folder made by ``pack --directory-only``; ignored with ``from_stdin``.
    source: Path = Path("environment.tar")
    from_stdin: bool = False
    #: pixi-unpack's target: ``<output_directory>/<env_name>``; also where ``activate.<ext>`` goes.
    output_directory: Path = field(default_factory=Path.cwd)
    env_name: str = "env"
    #: conda-style targets; at most one of them, each overriding output_directory/env_name.
    name: str | None = None
    prefix: Path | None = None
    force: bool = False
    #: bash, zsh, fish, xonsh, powershell, cmd; None means the platform's default.
    shell: str | None = None
    #: None: conda when importable, else rattler.
    installer: Installer | None = None
    pkgs_dir: Path | None = None
    dry_run: bool = False


@dataclass
class UnpackResult:
    """What the CLI reports (and prints with ``--json``)."""

    prefix: Path
    installer: Installer
    platform: str
    conda_packages: list[str]  # name=version=build
    wheels: list[str]  # wheel file names
    activation_script: Path | None  # None with dry_run
    dry_run: bool = False


def unpack(options: UnpackOptions, reporter: Reporter | None = None) -> UnpackResult:
    """Create the environment described by ``options``; raises PackError, rolls back on failure."""
    raise NotImplementedError
