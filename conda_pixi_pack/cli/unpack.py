"""``unpack``: flags -> :class:`UnpackOptions` -> :func:`conda_pixi_pack.unpack.pipeline.unpack`.

pixi-unpack's flags (``-o``, ``-e``, ``-s``) plus conda's (``-n``/``-p``, ``--dry-run``, ``-y``,
``--json``). The core is imported inside the functions: conda builds this parser on every command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, get_args

from conda_pixi_pack.cli.options import (
    Output,
    UsageError,
    add_output_options,
    add_prefix_options,
    path_argument,
)
from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    import argparse

    from conda_pixi_pack.unpack.pipeline import UnpackOptions

#: Subcommand name.
NAME: Final = "unpack"
#: One line for the command list and the subcommand's ``--help``.
SUMMARY: Final = "Unpack a pack (ours or pixi-pack's) into a conda environment, offline."
#: Positional value meaning standard input.
STDIN: Final = "-"
#: pixi-unpack's defaults.
DEFAULT_PACK: Final = "environment.tar"
DEFAULT_ENV_NAME: Final = "env"


def configure_parser(parser: argparse.ArgumentParser, *, conda: bool = False) -> None:
    """Declare the flags of ``unpack``; ``conda`` selects conda's helpers for the shared ones."""
    # the core's own lists (light modules: no rattler, no conda)
    from conda_pixi_pack.unpack.activation import SHELLS
    from conda_pixi_pack.unpack.install import InstallerName

    parser.add_argument(
        "pack",
        nargs="?",
        default=None,
        metavar="PACK",
        help="The pack: a tar, a folder made by pack --directory-only, a self-extracting .sh/.ps1 pack "
        f"(ours or pixi-pack's), or '{STDIN}' for one of them on stdin (default: ./{DEFAULT_PACK}).",
    )
    parser.add_argument(
        "-o",
        "--output-directory",
        metavar="DIR",
        help="Where the environment (DIR/ENV_NAME) and activate.<ext> go (default: the current directory).",
    )
    parser.add_argument(
        "-e",
        "--env-name",
        metavar="ENV_NAME",
        help=f"Name of the environment folder inside the output directory (default: {DEFAULT_ENV_NAME}).",
    )
    add_prefix_options(parser, conda=conda)
    parser.add_argument(
        "--force", action="store_true", help="Replace an existing non-empty environment at the target."
    )
    parser.add_argument(
        "-s",
        "--shell",
        choices=list(SHELLS),
        help="Shell of the activation script activate.<ext> (default: the platform's).",
    )
    parser.add_argument(
        "--installer",
        choices=get_args(InstallerName),
        help="Install with conda's transaction or py-rattler's installer "
        "(default: conda when importable, else rattler).",
    )
    parser.add_argument(
        "--pkgs-dir",
        type=path_argument,
        metavar="DIR",
        help="Package cache to extract into (default: conda's first writable pkgs_dirs with "
        "--installer conda; a temporary cache, removed at the end, with --installer rattler).",
    )
    add_output_options(parser, conda=conda, prompt=True)


def options_from_args(args: argparse.Namespace) -> UnpackOptions:
    """The one place flags become :class:`UnpackOptions` (tested flag by flag).

    ``-n``/``-p`` choose the prefix instead of ``-o``/``-e``; ``-o`` still says where the
    activation script goes, but ``-e`` with them is contradictory and refused.
    """
    from conda_pixi_pack.unpack.pipeline import UnpackOptions

    targets = (("-e/--env-name", args.env_name), ("-n/--name", args.name), ("-p/--prefix", args.prefix))
    for flag, value in targets:
        if value is not None and not str(value).strip():
            raise UsageError(f"{flag} is empty", "give a name or a path, or leave the flag out")
    if args.env_name is not None and (args.name or args.prefix):
        raise UsageError(
            "-e/--env-name names a folder inside -o and cannot be combined with -n/--name or -p/--prefix",
            "use either -o DIR -e NAME, or -n NAME, or -p PATH",
        )
    if args.output_directory == STDIN:
        # for pack, -o - is stdout; here it would make a folder literally named "-"
        raise UsageError(
            "-o/--output-directory cannot be '-': unpack writes an environment, not a stream",
            "give a folder, such as -o .",
        )
    from_stdin = args.pack == STDIN
    options = UnpackOptions(
        source=Path(DEFAULT_PACK) if args.pack is None or from_stdin else path_argument(args.pack),
        from_stdin=from_stdin,
        env_name=args.env_name or DEFAULT_ENV_NAME,
        name=args.name or None,
        prefix=path_argument(args.prefix) if args.prefix else None,
        force=args.force,
        shell=args.shell,
        installer=args.installer,
        pkgs_dir=args.pkgs_dir,
        dry_run=bool(args.dry_run),
    )
    if args.output_directory is not None:
        options.output_directory = path_argument(args.output_directory)
    return options


def execute(args: argparse.Namespace, output: Output | None = None) -> int:
    """Unpack, render progress on stderr, and report the result (lines, or JSON on stdout)."""
    from conda_pixi_pack.cli.render import ConsoleReporter, print_json, render_unpack_result
    from conda_pixi_pack.unpack.pipeline import unpack

    output = output or Output.from_args(args)
    options = options_from_args(args)
    if options.from_stdin and sys.stdin is None:
        raise PackError("standard input is closed", "pipe a pack into it, or give its path")
    if options.from_stdin and sys.stdin.isatty():
        raise PackError("no pack on stdin: it is a terminal", "pipe a pack into it, or give its path")
    with ConsoleReporter(output) as reporter:
        result = unpack(options, reporter)
    # after the bars are stopped, so the result is the last thing on screen
    if output.json:
        print_json(result)
    else:
        render_unpack_result(result, reporter, name=options.name)
    return 0
