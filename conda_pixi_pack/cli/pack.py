"""``pack``: flags -> :class:`~conda_pixi_pack.pack.pipeline.PackOptions` -> ``pack.pipeline.pack``.

Flags follow pixi-pack's (``-e``, ``-p``, ``-o``, ``-i/--inject``, ``--use-cache``, ...); the core
is imported inside the functions because conda builds this parser on every conda command.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.cli.options import Output, UsageError, add_output_options, path_argument
from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from conda_pixi_pack.pack.pipeline import PackOptions
    from conda_pixi_pack.pack.sources import Source

#: Subcommand name.
NAME: Final = "pack"
#: One line for the command list and the subcommand's ``--help``.
SUMMARY: Final = "Pack the environment of a pixi.lock into an offline archive (pixi-pack format 1)."
#: ``-o`` value meaning standard output.
STDOUT: Final = "-"
#: pixi-pack's default outputs: the archive, or the folder with ``--directory-only``.
DEFAULT_ARCHIVE: Final = "environment.tar"
DEFAULT_DIRECTORY: Final = "environment"


class _ManifestAction(argparse.Action):
    """Shared by the positional and ``-m``: they mean the same, so giving both is a usage error."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        if values is None:  # the optional positional, absent
            return
        if getattr(namespace, self.dest) is not None:
            raise argparse.ArgumentError(self, "give the manifest either as an argument or with -m, not both")
        setattr(namespace, self.dest, values)


def configure_parser(parser: argparse.ArgumentParser, *, conda: bool = False) -> None:
    """Declare the flags of ``pack``; ``conda`` selects conda's helpers for the shared ones."""
    parser.add_argument(
        "manifest",
        nargs="?",
        type=path_argument,
        action=_ManifestAction,
        metavar="MANIFEST",
        help="pixi.toml, pyproject.toml or the project directory, whose pixi.lock is packed; or the "
        "lock file itself: a pixi.lock or a conda-lock file (*.lock, *.yml, *.yaml) "
        "(default: the current directory).",
    )
    parser.add_argument(
        "-m",
        "--manifest-file",
        dest="manifest",
        type=path_argument,
        action=_ManifestAction,
        metavar="MANIFEST",
        help="Same as the MANIFEST argument (pixi-pack's spelling).",
    )
    parser.add_argument(
        "-e",
        "--environment",
        default="default",
        help="Environment of the lock to pack (default: %(default)s).",
    )
    sources = parser.add_argument_group(
        "Other sources", "Instead of a lock: an installed environment, or an @EXPLICIT list."
    )
    sources.add_argument(
        "-n",
        "--name",
        metavar="ENVIRONMENT",
        help="Pack the installed conda environment of that name (needs conda to find it).",
    )
    sources.add_argument(
        "--prefix",
        type=path_argument,
        metavar="PATH",
        help="Pack the installed conda environment at PATH (conda, mamba, micromamba, pixi or unpack "
        "made it). -p stays --platform, as in pixi-pack.",
    )
    sources.add_argument(
        "--from-explicit",
        type=path_argument,
        metavar="FILE",
        help="Pack the packages of an @EXPLICIT list (`conda list --explicit --sha256`, "
        "`conda-lock render --kind explicit`).",
    )
    parser.add_argument(
        "--category",
        action="append",
        metavar="NAME",
        help="conda-lock files: a category to pack (repeatable; default: main, as conda-lock install).",
    )
    parser.add_argument(
        "--ignore-missing",
        action="store_true",
        help="Leave out, with a warning, what cannot be packed exactly (no URL, no checksum, a local "
        "file that is gone, a pip-installed distribution without its wheel) instead of refusing.",
    )
    parser.add_argument(
        "-p",
        "--platform",
        metavar="SUBDIR",
        help="Platform to pack, such as linux-64 (default: the one this runs on).",
    )
    parser.add_argument(
        "-o",
        "--output-file",
        dest="output",
        metavar="FILE",
        help=f"Where to write the pack; '{STDOUT}' writes the tar to stdout "
        f"(default: {DEFAULT_ARCHIVE}, or {DEFAULT_DIRECTORY}/ with --directory-only).",
    )
    parser.add_argument(
        "--directory-only", action="store_true", help="Write the pack as a folder instead of a tar."
    )
    parser.add_argument(
        "--create-executable",
        action="store_true",
        help="Write a self-extracting script that installs the pack by itself: environment.sh "
        "(environment.ps1 for win-* packs).",
    )
    parser.add_argument(
        "--unpacker-source",
        metavar="PATH_OR_URL",
        help="With --create-executable: embed this installer, a micromamba or conda-standalone conda "
        "package or program for the pack's platform, so the script needs nothing on the target.",
    )
    parser.add_argument(
        "--unpacker-sha256",
        metavar="SHA256",
        help="The sha256 the --unpacker-source file must have.",
    )
    parser.add_argument(
        "--use-cache",
        dest="cache_dir",
        type=path_argument,
        metavar="DIR",
        help="Keep downloaded packages in DIR and reuse them (verified) on the next pack.",
    )
    parser.add_argument(
        "-i",
        "--inject",
        action="append",
        type=path_argument,
        metavar="FILE",
        help="Add a .conda, .tar.bz2 or .whl file to the pack (repeatable); "
        "conda packages must fit the locked environment.",
    )
    parser.add_argument(
        "--ignore-pypi-non-wheel",
        action="store_true",
        help="Skip PyPI source distributions (with a warning) instead of refusing to pack.",
    )
    parser.add_argument(
        "--auth-file",
        type=path_argument,
        metavar="FILE",
        help="rattler authentication file for private channels (default: $RATTLER_AUTH_FILE).",
    )
    parser.add_argument(
        "--config",
        dest="config_file",
        type=path_argument,
        metavar="FILE",
        help="pixi/rattler config TOML: mirrors, S3 options, concurrency.downloads.",
    )
    add_output_options(parser, conda=conda, prompt=True)


def options_from_args(args: argparse.Namespace) -> PackOptions:
    """The one place flags become :class:`PackOptions` (tested flag by flag)."""
    from conda_pixi_pack.pack.output import OutputMode
    from conda_pixi_pack.pack.pipeline import PackOptions

    _check_flags(args)
    to_stdout = args.output == STDOUT
    if to_stdout:
        mode = OutputMode.STREAM
    elif args.create_executable:
        mode = OutputMode.EXECUTABLE
    else:
        mode = OutputMode.FOLDER if args.directory_only else OutputMode.ARCHIVE
    if args.output is None and mode is not OutputMode.EXECUTABLE:  # its name follows the platform
        output: Path | None = Path(DEFAULT_DIRECTORY if args.directory_only else DEFAULT_ARCHIVE)
    else:
        output = None if to_stdout or args.output is None else path_argument(args.output)
    unpacker = None
    if args.unpacker_source is not None:
        from conda_pixi_pack.pack.unpacker import UnpackerSource  # with the executable writer, ~5 ms

        unpacker = UnpackerSource(args.unpacker_source, args.unpacker_sha256)
    return PackOptions(
        source=_source(args),
        platform=args.platform,
        mode=mode,
        output=output,
        # as typed: a trailing "/" names a folder, which Path() would forget
        output_text=None if to_stdout or args.output is None else str(args.output),
        cache_dir=args.cache_dir,
        inject=list(args.inject or []),
        auth_file=args.auth_file,
        config_file=args.config_file,
        unpacker=unpacker,
        ignore_missing=args.ignore_missing,
        dry_run=bool(args.dry_run),
    )


def _source(args: argparse.Namespace) -> Source:
    """Where the packages are listed: an installed environment, an @EXPLICIT list, or a lock
    (only the module of the one given is imported: a lock's pack starts sooner)."""
    named = (("MANIFEST", args.manifest), ("-n/--name", args.name), ("--prefix", args.prefix))
    given = [flag for flag, value in (*named, ("--from-explicit", args.from_explicit)) if value is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} name two sources", "give one thing to pack")
    if args.category and (args.name or args.prefix or args.from_explicit):
        raise UsageError("--category applies to conda-lock files", "drop --category")
    if args.name is not None or args.prefix is not None:
        if args.name is not None and not args.name.strip():
            raise UsageError("-n/--name is empty", "give the environment's name, or its folder with --prefix")
        from conda_pixi_pack.pack.sources.prefix import PrefixSource

        return PrefixSource(prefix=args.prefix, name=args.name)
    if args.from_explicit is not None:
        from conda_pixi_pack.pack.sources.explicit import ExplicitSource

        return ExplicitSource(args.from_explicit)
    from conda_pixi_pack.pack.sources.lockfile import LockSource

    source = LockSource(
        environment=args.environment,
        ignore_pypi_non_wheel=args.ignore_pypi_non_wheel,
        categories=tuple(args.category or ()),
    )
    return replace(source, manifest=args.manifest) if args.manifest is not None else source


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that parse but cannot go together."""
    from conda_pixi_pack.pack.output import STDOUT_FD, names_descriptor

    to_stdout = args.output == STDOUT
    if to_stdout and args.directory_only:
        raise UsageError(
            "--directory-only writes a folder and cannot write to stdout (-o -)",
            "give a folder name with -o, or drop --directory-only",
        )
    if args.create_executable and (to_stdout or args.directory_only):
        other = "-o -" if to_stdout else "--directory-only"
        raise UsageError(
            f"--create-executable writes a script file and cannot be combined with {other}",
            f"give a file name with -o, or drop {other}",
        )
    if args.unpacker_source is not None and not args.create_executable:
        raise UsageError("--unpacker-source only applies to --create-executable", "add --create-executable")
    if args.unpacker_sha256 is not None and args.unpacker_source is None:
        raise UsageError(
            "--unpacker-sha256 needs --unpacker-source", "give the installer with --unpacker-source"
        )
    if not to_stdout and names_descriptor(args.output, 2) and not names_descriptor(args.output, STDOUT_FD):
        raise UsageError(
            f"-o {args.output} is standard error, where progress and errors go: they would mix with the pack",
            "give -o FILE, or -o - for standard output",
        )
    if args.json and (to_stdout or names_descriptor(args.output, STDOUT_FD)):
        raise UsageError(
            f"--json and -o {args.output} would both write to stdout",
            "write the pack to a file with -o FILE",
        )


def execute(args: argparse.Namespace, output: Output | None = None) -> int:
    """Pack, render progress on stderr, and report the result (a line, or JSON on stdout)."""
    from conda_pixi_pack.cli.render import ConsoleReporter, print_json, render_pack_result
    from conda_pixi_pack.pack.output import STDOUT_FD, OutputMode, names_descriptor
    from conda_pixi_pack.pack.pipeline import pack

    output = output or Output.from_args(args)
    options = options_from_args(args)
    to_stdout = options.mode is OutputMode.STREAM
    if to_stdout and sys.stdout is None:
        raise PackError("standard output is closed", "give -o FILE, or run with stdout open")
    if (
        not options.dry_run
        and (to_stdout or names_descriptor(args.output, STDOUT_FD))
        and os.isatty(STDOUT_FD)
    ):
        raise PackError(
            "refusing to write the pack (a tar) to a terminal",
            "redirect stdout to a file or a pipe, or give -o FILE",
        )
    with ConsoleReporter(output) as reporter:
        result = pack(options, reporter)
    # after the bars are stopped, so the result is the last thing on screen
    if output.json:
        print_json(result)
    else:
        render_pack_result(result, reporter)
    return 0
