"""conda's entry point: registers ``conda pixi-pack``.

conda imports this module on every conda command, so it imports nothing but conda's plugin API;
the parser and the command live in :mod:`conda_pixi_pack.cli` and are imported when conda calls them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from conda.plugins import hookimpl
from conda.plugins.types import CondaEnvironmentSpecifier, CondaPostCommand, CondaSubcommand

if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace
    from collections.abc import Iterator

#: Subcommand name: ``conda pixi-pack pack|unpack``.
NAME: Final = "pixi-pack"
#: Shown by ``conda --help``.
SUMMARY: Final = "Pack a pixi.lock environment for offline use, and unpack it as a conda environment."


def configure_parser(parser: ArgumentParser) -> None:
    """Deferred to the CLI package (conda calls this while building its parser, on every command)."""
    from conda_pixi_pack.cli.conda_cli import configure_parser

    configure_parser(parser)


def action(args: Namespace) -> int:
    """Deferred to the CLI package, which wraps our errors for conda's handler."""
    from conda_pixi_pack.cli.conda_cli import execute

    return execute(args)


def install_wheels(command: str) -> None:
    """Deferred to the environment-spec module: the wheels of a pack given to ``conda env create``."""
    from conda_pixi_pack.unpack.conda_spec import install_wheels_after_create

    install_wheels_after_create(command)


@hookimpl
def conda_subcommands() -> Iterator[CondaSubcommand]:
    """The ``pixi-pack`` subcommand."""
    yield CondaSubcommand(name=NAME, summary=SUMMARY, action=action, configure_parser=configure_parser)


@hookimpl
def conda_environment_specifiers() -> Iterator[CondaEnvironmentSpecifier]:
    """``conda env create --file environment.tar``: a pack as an environment specification.

    conda calls this only when it reads environment files, so the spec module is imported here.
    """
    from conda_pixi_pack.unpack.conda_spec import DEFAULT_FILENAMES, DESCRIPTION, PackSpec
    from conda_pixi_pack.unpack.conda_spec import NAME as SPEC_NAME

    yield CondaEnvironmentSpecifier(
        name=SPEC_NAME,
        environment_spec=PackSpec,
        default_filenames=DEFAULT_FILENAMES,
        description=DESCRIPTION,
    )


@hookimpl
def conda_post_commands() -> Iterator[CondaPostCommand]:
    """After ``conda create`` / ``conda env create`` from a pack: its wheels (a no-op otherwise)."""
    # `conda env create` runs post-commands as "env_create" before conda 26.7, "create" since
    yield CondaPostCommand(
        name="conda-pixi-pack-wheels", action=install_wheels, run_for={"create", "env_create"}
    )
