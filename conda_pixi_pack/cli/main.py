"""The command line: one parser factory behind ``conda pixi-pack``, ``conda-pixi-pack`` and ``python -m``.

:func:`configure_parser` builds the ``pack``/``unpack`` subcommands on any parser (conda's or a
plain one); :func:`main` is the standalone entry point and owns error rendering there. Under conda,
``cli/conda_cli.py`` hands errors to conda's own handler instead. Nothing heavy (rattler, rich, the
core) is imported at module level: conda builds this parser on every conda command.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NoReturn

from conda_pixi_pack import __version__
from conda_pixi_pack.cli.options import Output, UsageError
from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: Name of the console script, used as ``prog`` of the standalone parser.
PROG: Final = "conda-pixi-pack"
#: One sentence shown by ``--help`` (and by ``conda --help`` through the plugin's summary).
DESCRIPTION: Final = (
    "Pack a pixi-locked environment into an offline archive (pixi-pack format 1), "
    "and unpack one as a conda environment."
)
#: Exit code of a shell after Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT: Final = 130
#: Exit code when the reader of our output went away (128 + SIGPIPE), as for any program in a pipe.
BROKEN_PIPE_EXIT: Final = 141
#: Exit code of a process ended by SIGTERM (128 + SIGTERM), what CI runners and shells expect.
TERMINATED_EXIT: Final = 143


class _BadFlags(Exception):
    """An error argparse found (unknown flag, invalid choice), held back until :func:`main`
    knows whether to print argparse's usage text or, with ``--json``, the JSON error object."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """The standalone parser (its subcommands are of the same class): usage errors are raised."""

    def error(self, message: str) -> NoReturn:
        raise _BadFlags(self, message)


@dataclass
class Signals:
    """What :func:`terminate_as_interrupt` saw: SIGTERM changes the exit code, not the cleanup."""

    #: The run was interrupted (Ctrl-C or SIGTERM); later signals are ignored.
    interrupted: bool = False
    #: The interruption was SIGTERM.
    terminated: bool = False
    #: Signals that came before :func:`terminate_as_interrupt`'s handler was in place (while the
    #: program started and read its command line), held by the entry's handler (see :func:`run`):
    #: :func:`main` delivers the first.
    pending: list[int] = field(default_factory=list)

    def remember(self, signum: int, frame: object) -> None:
        """The handler outside :func:`main`: before it, the signal is kept for it; after it, the
        process is about to exit and the signal is ignored."""
        self.pending.append(signum)

    def deliver(self) -> None:
        """Interrupt now if a signal came before the handler of :func:`terminate_as_interrupt`."""
        if self.pending and not self.interrupted:
            self.interrupted = True
            self.terminated = self.pending[0] == signal.SIGTERM
            raise KeyboardInterrupt


class _PrintHelp:
    """The action of a bare command: print its help and succeed, as ``conda env`` does."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def __call__(self, args: argparse.Namespace, output: Output | None = None) -> int:
        self.parser.print_help()
        return 0


def configure_parser(parser: argparse.ArgumentParser, *, conda: bool = False) -> None:
    """Add ``--version`` and the ``pack``/``unpack`` subcommands to ``parser``.

    Every subcommand sets ``func`` to its ``execute(args, output) -> int``; without a subcommand
    ``func`` prints the help.
    """
    from conda_pixi_pack.cli import inspect, pack, unpack

    if not parser.description:
        parser.description = DESCRIPTION
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(func=_PrintHelp(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (pack, unpack, inspect):
        sub = commands.add_parser(module.NAME, help=module.SUMMARY, description=module.SUMMARY)
        module.configure_parser(sub, conda=conda)
        # the parser that reports flags it does not know (see parse)
        sub.set_defaults(func=module.execute, command_parser=sub)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The standalone parser (the console script and ``python -m``)."""
    parser = _Parser(prog=prog, description=DESCRIPTION)
    # a bare command has no output flags; these defaults only exist standalone, since under conda
    # they would hide conda's own ``--json``/``-v`` given before the subcommand
    parser.set_defaults(json=False, verbosity=0, quiet=False)
    configure_parser(parser)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that flags nobody knows are reported by the subcommand
    they were given to, with its usage (``unpack --bogus`` shows how to call ``unpack``), as its
    other usage errors are; argparse would report them with the top-level usage."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        (getattr(args, "command_parser", None) or parser).error(
            f"unrecognized arguments: {' '.join(unknown)}"
        )
    return args


@contextmanager
def terminate_as_interrupt(signals: Signals | None = None) -> Iterator[Signals]:
    """Treat SIGTERM (a CI cancel, ``kill``) like Ctrl-C, so the same cleanup runs, and let only
    the first of them interrupt.

    Python's default for SIGTERM ends the process at once, leaving temporary folders and partial
    files behind; as a KeyboardInterrupt it unwinds through every ``finally`` and rollback. The
    core turns that into :class:`~conda_pixi_pack.errors.UserCancelled`, so ``signals`` (yielded)
    remembers that it was SIGTERM, for the exit code. A second Ctrl-C (or a stream of them, a
    key held down) would cut that cleanup short and leave half of it; it is ignored instead: the
    rollback is fast and then the process exits.
    """
    signals = signals if signals is not None else Signals()
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield signals
        return

    def interrupt(signum: int, frame: object) -> None:
        if signals.interrupted:
            return  # the first one's cleanup is running: let it finish
        signals.interrupted = True
        signals.terminated = signum == signal.SIGTERM
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None, prog: str = PROG, signals: Signals | None = None) -> int:
    """Run the standalone CLI; returns the exit code (``sys.exit(main())``).

    Bad flags exit 2 with argparse's usage text (the JSON error object with ``--json``). A
    :class:`PackError` is one line on stderr (or a JSON error object on stdout with ``--json``) and
    its exit code; anything else is a bug: one line, exit 1, and the traceback with ``-v``. Ctrl-C
    exits 130, SIGTERM 143, both after the same cleanup.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    signals = signals if signals is not None else Signals()
    output = Output(json="--json" in argv)  # until the flags are read
    # The command line is read inside the block too (a Ctrl-C then stops the run before its
    # command begins), and the error reported there: more Ctrl-C meanwhile are still ignored.
    with terminate_as_interrupt(signals):
        try:
            signals.deliver()
            try:
                args = parse(build_parser(prog), argv)
            except _BadFlags as exc:
                if "--json" not in argv:
                    argparse.ArgumentParser.error(exc.parser, exc.message)  # argparse's own text; exits 2
                error = UsageError(exc.message, f"see `{exc.parser.prog} --help`")
                return report_error(error, Output(json=True), error.exit_code, str(error))
            output = Output.from_args(args)
            return args.func(args, output)
        except PackError as exc:
            return report_error(exc, output, _exit_code(exc.exit_code, signals), str(exc))
        except KeyboardInterrupt as exc:
            return report_error(exc, output, _exit_code(INTERRUPTED_EXIT, signals), "interrupted")
        except BrokenPipeError:
            # whoever read our stdout (`inspect ... | head`) has gone: nothing more to say there
            _silence_stdout()
            return BROKEN_PIPE_EXIT
        except Exception as exc:
            line = f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback; please report it)"
            return report_error(exc, output, _exit_code(1, signals), line)


def _silence_stdout() -> None:
    """Point standard output at the null device, so that the final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no stdout at all: nothing to flush either
        pass


def _exit_code(code: int, signals: Signals) -> int:
    """``code``, unless SIGTERM ended the run: then 143, whatever error the interruption became."""
    return TERMINATED_EXIT if signals.terminated else code


def run(prog: str = PROG, early: list[int] | None = None) -> NoReturn:
    """:func:`main`, then exit at once; ``early`` holds the signals the entry's handler
    (:mod:`~conda_pixi_pack.cli.entry`) caught before this module was imported, and keeps
    collecting them outside main.

    py-rattler's background (tokio) threads may still drop Python objects while the interpreter
    finalizes; CPython then aborts the process ("PyGILState_Release: … finalizing") although the
    work is done (seen here about once in 25 runs of a large download). By then every file of ours
    is closed and every temporary folder removed, so the process flushes its output and leaves
    without the interpreter's teardown: the exit code is the real one.
    """
    # Outside main's own handling a signal is only remembered: one that comes before main's
    # handler is in place (while the command line is read) is delivered by main; one after main
    # (one of a stream of Ctrl-C, after the first) would only print a traceback of this function,
    # and the process ends in a moment anyway. (Not SIG_IGN: that would lose the first, and the
    # commands' subprocesses would inherit it.)
    signals = Signals(pending=early if early is not None else [])
    if early is None:  # not from the entry: its handler is not in place
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signals.remember)
    code = main(prog=prog, signals=signals)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)


def report_error(exc: BaseException, output: Output, code: int, line: str) -> int:
    """Render one error the standalone way and return ``code``.

    With ``--json`` the object has conda's shape (``error``, ``exception_name``,
    ``exception_type``, ``message``) plus ``hint``, so scripts parse both worlds alike; the message
    is only the message, the hint only the hint.
    """
    if output.verbosity:
        import traceback  # only for -v: 3 ms of every start otherwise

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if output.json:
        name = type(exc).__name__
        message = exc.message if isinstance(exc, PackError) else line  # the hint has its own key
        document = {
            "error": f"{name}: {message}",
            "exception_name": name,
            "exception_type": str(type(exc)),
            "message": message,
            "hint": exc.hint if isinstance(exc, PackError) else None,
            "return_code": code,
        }
        print(json.dumps(document, indent=2, sort_keys=True), flush=True)
    else:
        print(f"error: {line}", file=sys.stderr, flush=True)
    return code
