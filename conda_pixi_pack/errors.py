"""One error type for everything a user can cause or fix.

The CLI renders a :class:`PackError` as one line, ``error: <message> (<hint>)``, and exits
with its ``exit_code``; under conda it becomes a ``CondaError`` for conda's own handler. Anything
else is a bug: one line too, and the traceback with ``-v``.
"""

from __future__ import annotations


class PackError(Exception):
    """A failure the user can act on: ``message`` says what is wrong, ``hint`` what to do."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UserCancelled(PackError):
    """Ctrl-C: everything already rolled back; exit 130 like a shell does."""

    exit_code = 130

    def __init__(self) -> None:
        super().__init__("interrupted; nothing was written")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (rattler's span several, with excerpts)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
