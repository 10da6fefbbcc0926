"""One error type for everything a user can cause or fix.

The CLI renders a :class:`PackError` as one line, ``error: <message> (<hint>)``, and exits
with its ``exit_code``; under conda it becomes a ``CondaError`` for conda's own handler. Anything
else is a bug: one line too, and the traceback with ``-v``.
"""

from __future__ import annotations

import re

#: Runs of control characters other than line breaks (a tab included).
_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]+")
#: What rattler and conda put before a cause or a list item on a line of its own.
_LINE_PREFIX = re.compile(r"^(?:Caused by:\s*|\d+:\s+|[-*]\s+)+")


def one_line(text: str) -> str:
    """``text`` as one line: rattler's and conda's messages add causes and lists on lines of
    their own ("Caused by: ...", "  - /path"). The first line is kept as it is; a cause that
    repeats it, or a line that repeats an earlier one, is dropped. Control characters (raw
    archive bytes quoted by an extractor, escape sequences from a hostile pack) become spaces."""
    text = _CONTROL.sub(" ", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    result, parts, causes = lines[0], [lines[0]], False
    for line in lines[1:]:
        causes = causes or line.startswith("Caused by")
        item = _LINE_PREFIX.sub("", line)
        if not item or item in parts or (causes and item in parts[0]):
            continue
        parts.append(item)
        result += (" " if result.endswith(":") else "; ") + item
    return result


class PackError(Exception):
    """A failure the user can act on: ``message`` says what is wrong, ``hint`` what to do."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        message = one_line(message)  # whatever a library put in it: errors are one line
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UserCancelled(PackError):
    """Ctrl-C: everything already rolled back; exit 130 like a shell does."""

    exit_code = 130

    def __init__(self, message: str = "interrupted; nothing was written") -> None:
        super().__init__(message)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (rattler's span several, with excerpts)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def plain_reason(exc: BaseException) -> str:
    """Why a file could not be read, in plain words: the codec's or the parser's own text is not
    something a user can act on ("'utf-8' codec can't decode byte 0xdd in position 3")."""
    import json

    if isinstance(exc, UnicodeDecodeError):
        return f"it is not UTF-8 text (byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"it is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    if isinstance(exc, OSError):
        return exc.strerror or first_line(exc)
    return first_line(exc)
