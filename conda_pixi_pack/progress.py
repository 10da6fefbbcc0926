"""The progress interface the core reports to; the CLI decides how it is shown.

The core never prints. It calls a :class:`Reporter`; the CLI passes one that draws rich
progress bars on a TTY or plain lines otherwise (``cli/render.py``), tests pass
:class:`Reporter` itself (silent) or a recording subclass.
"""

from __future__ import annotations


class Task:
    """One progress bar: ``total`` in ``unit`` ("B" for bytes, "pkg" for packages)."""

    def advance(self, amount: float = 1) -> None:
        """Move the bar forward; called from worker threads, so implementations must be safe."""

    def done(self) -> None:
        """Finish the bar (also called on failure, from a ``finally``)."""


class Reporter:
    """Silent reporter; subclasses render. Methods may be called from several threads."""

    def task(self, description: str, total: float | None, unit: str = "pkg") -> Task:
        """Start a bar. ``total`` None means unknown."""
        return Task()

    def info(self, message: str) -> None:
        """A step worth a line in plain output (hidden with ``-q``)."""

    def debug(self, message: str) -> None:
        """Detail shown only with ``-v``."""

    def warn(self, message: str) -> None:
        """Something the user should know that does not stop the job (shown even with ``-q``)."""


def plural(count: int, noun: str) -> str:
    """``1 wheel``, ``2 wheels``: for messages of the core and the CLI alike."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
