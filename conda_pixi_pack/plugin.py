"""conda's entry point: registers ``conda pixi-pack``.

conda imports this module on every conda command, so it imports nothing but conda's plugin API;
the parser and the command live in :mod:`conda_pixi_pack.cli` and are imported when conda calls them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from conda.plugins import hookimpl
from conda.plugins.types import CondaSubcommand

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


@hookimpl
def conda_subcommands() -> Iterator[CondaSubcommand]:
    """The ``pixi-pack`` subcommand."""
    yield CondaSubcommand(name=NAME, summary=SUMMARY, action=action, configure_parser=configure_parser)
