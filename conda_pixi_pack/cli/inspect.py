"""``inspect``: flags -> :func:`~conda_pixi_pack.unpack.inspect.inspect_pack` -> a report.

The core is imported inside the functions: conda builds this parser on every conda command.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.cli.options import Output, add_output_options, path_argument
from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    import argparse

#: Subcommand name.
NAME: Final = "inspect"
#: One line for the command list and the subcommand's ``--help``.
SUMMARY: Final = "Show what a pack holds and how it can be unpacked, without unpacking it."
#: Positional value meaning standard input.
STDIN: Final = "-"


def configure_parser(parser: argparse.ArgumentParser, *, conda: bool = False) -> None:
    """Declare the flags of ``inspect``; ``conda`` selects conda's helpers for the shared ones."""
    parser.add_argument(
        "pack",
        metavar="PACK",
        help=f"The pack: a tar, a folder made by pack --directory-only, a self-extracting .sh/.ps1 "
        f"pack (ours or pixi-pack's), or '{STDIN}' for one of them on stdin.",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="Also check every package against its sha256 and size, and every wheel against its "
        "RECORD; exit 1 naming the first file that does not match.",
    )
    add_output_options(parser, conda=conda, prompt=False)


def execute(args: argparse.Namespace, output: Output | None = None) -> int:
    """Inspect, render progress on stderr, and print the report on stdout (text or JSON)."""
    from conda_pixi_pack.cli.render import ConsoleReporter, print_json, render_inspection
    from conda_pixi_pack.unpack.inspect import inspect_pack

    output = output or Output.from_args(args)
    from_stdin = args.pack == STDIN
    if from_stdin and (sys.stdin is None or sys.stdin.isatty()):
        raise PackError("no pack on stdin", "pipe a pack into it, or give its path")
    source = sys.stdin.buffer if from_stdin else path_argument(args.pack)
    with ConsoleReporter(output) as reporter:
        inspection = inspect_pack(source, verify=args.verify, reporter=reporter)
    if output.json:
        print_json(inspection)
    else:
        render_inspection(inspection)
    return 0
