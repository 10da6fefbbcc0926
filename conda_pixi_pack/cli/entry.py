"""The console script's and ``python -m``'s entry: Ctrl-C and SIGTERM are caught from its first line.

The parser and the core are imported after the handler is in place. A signal during those
imports (~25 ms) would otherwise end the process with Python's traceback of an import (Ctrl-C)
or at once, with no cleanup said (SIGTERM). Remembered here, it ends the run as a later one
does: one line, exit 130 or 143 (see :func:`conda_pixi_pack.cli.main.run`).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import NoReturn


def run(prog: str | None = None) -> NoReturn:
    """Remember the signals that come, then import and run the standalone CLI."""
    early: list[int] = []

    def remember(signum: int, frame: object) -> None:
        early.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, remember)
    from conda_pixi_pack.cli import main

    main.run(prog or main.PROG, early)
