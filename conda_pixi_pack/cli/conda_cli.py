"""The conda side of the CLI: only imported by ``plugin.py``'s hooks, so it may import conda freely.

Under conda, errors are conda's business: a :class:`~conda_pixi_pack.errors.PackError` becomes a
:class:`PixiPackError` (a ``CondaError``) so conda's handler renders it (one line, a JSON error
object with ``--json``, the traceback with ``-vv``), runs its exception observers and returns
our exit code. Unexpected exceptions propagate unchanged to conda's report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conda.exceptions import CondaError

from conda_pixi_pack.cli import main as cli
from conda_pixi_pack.cli.options import Output
from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace


class PixiPackError(CondaError):
    """A :class:`PackError` in conda's clothes; ``hint`` and ``return_code`` reach the JSON too."""

    def __init__(self, error: PackError) -> None:
        super().__init__(str(error))
        self.hint = error.hint
        self.return_code = error.exit_code
        self._message_only = error.message

    def dump_map(self) -> dict[str, Any]:
        """conda's JSON error object, with ``message`` (and ``error``) without the hint: the hint
        has its own key."""
        document = super().dump_map()
        document.pop("_message_only", None)
        document["message"] = self._message_only
        document["error"] = f"{type(self).__name__}: {self._message_only}"
        return document


def configure_parser(parser: ArgumentParser) -> None:
    """The very parser of the standalone CLI, with conda's helpers for the shared flags."""
    cli.configure_parser(parser, conda=True)


def execute(args: Namespace) -> int:
    """Run the chosen subcommand with conda's output settings (``context`` also reads CONDA_JSON etc.)."""
    from conda.base.context import context

    output = Output(json=bool(context.json), verbosity=context.verbosity, quiet=bool(context.quiet))
    signals = cli.Signals()
    try:
        with cli.terminate_as_interrupt(signals):
            return args.func(args, output)
    except PackError as exc:
        error = PixiPackError(exc)
        if signals.terminated:  # SIGTERM, not Ctrl-C: the usual 128 + 15
            error.return_code = cli.TERMINATED_EXIT
        raise error from exc
