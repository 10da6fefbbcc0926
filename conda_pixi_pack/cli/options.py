"""Flags and settings every subcommand shares: output options, prefix options, paths, usage errors.

Under conda the shared flags come from conda's own argparse helpers (``conda.cli.helpers``), so
``--json``, ``-v`` and ``-n/-p`` mean what they mean in every conda command; standalone the same
flags are declared here. Nothing heavy is imported: conda builds this parser on every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    import argparse

#: Options that conda's argparse helpers add under conda and the standalone CLI does not need.
CONDA_ONLY_OPTIONS: Final = frozenset({"--console", "--debug", "--trace"})
#: Group title shared with conda's ``add_parser_json`` so ``--help`` reads the same in both worlds.
OUTPUT_GROUP: Final = "Output, Prompt, and Flow Control Options"


class UsageError(PackError):
    """Flags that parse but contradict each other; exit 2 like argparse's own usage errors."""

    exit_code = 2


@dataclass(frozen=True)
class Output:
    """How to talk to the user; from the flags standalone, from conda's ``context`` under conda."""

    json: bool = False
    verbosity: int = 0
    quiet: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Output:
        # conda's helpers default to its NULL sentinel (falsy, not an int): normalise here, once
        verbosity = args.verbosity if isinstance(args.verbosity, int) else 0
        return cls(json=bool(args.json), verbosity=verbosity, quiet=bool(args.quiet))


def add_output_options(parser: argparse.ArgumentParser, *, conda: bool, prompt: bool) -> None:
    """``--json``, ``-v``, ``-q`` (and with ``prompt``: ``-d/--dry-run``, ``-y/--yes``).

    Under conda these come from ``conda.cli.helpers`` so they mean what they mean in every conda
    command; standalone the same flags are declared here.
    """
    if conda:
        from conda.cli.helpers import add_output_and_prompt_options, add_parser_json

        (add_output_and_prompt_options if prompt else add_parser_json)(parser)
        return
    group = parser.add_argument_group(OUTPUT_GROUP)
    group.add_argument(
        "--json",
        action="store_true",
        help="Print one JSON object with the result (or the error) on stdout, and nothing else.",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest="verbosity",
        help="Show details, and the traceback of an error.",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="Show no progress, only warnings and errors."
    )
    if prompt:
        group.add_argument(
            "-d", "--dry-run", action="store_true", help="Only display what would have been done."
        )
        group.add_argument(
            "-y", "--yes", action="store_true", help="Accepted for conda compatibility; never prompts."
        )


def add_prefix_options(parser: argparse.ArgumentParser, *, conda: bool) -> None:
    """``-n/--name`` and ``-p/--prefix``, mutually exclusive (conda's own helper under conda)."""
    if conda:
        from conda.cli.helpers import add_parser_prefix

        add_parser_prefix(parser)
        return
    group = parser.add_argument_group("Target Environment Specification")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(
        "-n", "--name", metavar="ENVIRONMENT", help="Name of environment (in conda's envs directories)."
    )
    exclusive.add_argument(
        "-p", "--prefix", metavar="PATH", help="Full path to environment location (i.e. prefix)."
    )


def path_argument(value: str) -> Path:
    """argparse ``type`` for paths: ``~`` is expanded even when the shell did not (``--flag=~/x``)."""
    return Path(value).expanduser()
