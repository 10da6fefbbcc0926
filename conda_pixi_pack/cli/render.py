"""Showing the core's progress and results: rich bars on a terminal, plain lines otherwise.

Everything goes to **stderr**: stdout carries only what was asked for (the tar of ``pack -o -``,
the JSON of ``--json``, the package list of ``unpack --dry-run``). Every method may be called
from worker threads: rich's Console and Progress take their own locks, the plain counters ours.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import threading
import time
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Final

from conda_pixi_pack.progress import Reporter, Task, plural

if TYPE_CHECKING:
    from types import TracebackType

    from rich.console import Console
    from rich.progress import Progress, TaskID

    from conda_pixi_pack.cli.options import Output
    from conda_pixi_pack.pack.pipeline import PackResult
    from conda_pixi_pack.unpack.inspect import Inspection
    from conda_pixi_pack.unpack.pipeline import UnpackResult

#: The unit the core uses for byte counts; shown as sizes with a transfer speed.
BYTES: Final = "B"
#: Prefix of a warning line (shown even with ``-q``).
WARNING_PREFIX: Final = "warning:"
#: How the summary says where files came from (``PackResult.sources``).
ORIGINS: Final = {
    "download": "downloaded",
    "cache": "from --use-cache",
    "package cache": "from conda's package cache",
    "local file": "from local files",
}
#: How each activation script is loaded into the current shell, by its extension.
ACTIVATE_COMMANDS: Final = {".ps1": ". {}", ".bat": "call {}"}


def decimal(size: int) -> str:
    """``34.5 MB``: the same text as ``rich.filesize.decimal``.

    Written out because importing anything from rich costs ~30 ms at start-up, and plain output
    (pipes, CI logs, ``-q``) must not pay it; rich is imported only when bars are drawn.
    """
    if size == 1:
        return "1 byte"
    if size < 1000:
        return f"{size:,} bytes"
    value = float(size)
    for suffix in ("kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"):
        value /= 1000
        if value < 1000 or suffix == "YB":
            break
    return f"{value:,.1f} {suffix}"


def human_amount(amount: float, unit: str) -> str:
    """``34.5 MB`` for bytes, ``12 packages`` for ``pkg``, ``3 files`` otherwise."""
    if unit == BYTES:
        return decimal(int(amount))
    count = int(amount)
    noun = "package" if unit == "pkg" else unit
    return f"{count} {noun}" + ("" if count == 1 or noun.endswith("s") else "s")


def _new_progress(console: Console) -> Progress:
    """rich's live display with one bar kind for bytes (size, speed) and one for counts (m/n)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class UnitColumn(ProgressColumn):
        """Sizes for byte tasks and ``m/n`` for counts: one Progress holds both kinds of bars."""

        def __init__(self) -> None:
            super().__init__()
            self._bytes = DownloadColumn()
            self._count = MofNCompleteColumn()

        def render(self, task: Any) -> Text:
            return (self._bytes if task.fields.get("unit") == BYTES else self._count).render(task)

    class SpeedColumn(ProgressColumn):
        """Transfer speed, for byte tasks only."""

        def __init__(self) -> None:
            super().__init__()
            self._speed = TransferSpeedColumn()

        def render(self, task: Any) -> Text:
            return self._speed.render(task) if task.fields.get("unit") == BYTES else Text("")

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        UnitColumn(),
        SpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        # stdout may be the pack itself (-o -): never let rich capture it
        redirect_stdout=False,
        redirect_stderr=False,
    )


class _PlainConsole:
    """Lines on stderr for pipes and files: what rich prints there, without importing rich."""

    is_terminal = False

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def print(self, message: str) -> None:
        stream = sys.stderr
        if stream is None:  # started with stderr closed: nowhere to say it
            return
        with self._lock:
            stream.write(f"{message}\n")
            stream.flush()


class _CountingTask(Task):
    """Counts what was done, so ``done`` can tell a finished stage from one cut short."""

    def __init__(self, reporter: ConsoleReporter, description: str, total: float | None, unit: str) -> None:
        self._reporter = reporter
        self._lock = threading.Lock()
        self._closed = False
        self.description = description
        self.total = total
        self.unit = unit
        self.completed: float = 0
        self.started = time.monotonic()

    def advance(self, amount: float = 1) -> None:
        with self._lock:
            self.completed += amount

    def done(self) -> None:
        # The core calls done() from a ``finally``: an exception on its way out (a failed
        # download, Ctrl-C) means the stage did not finish, whatever was counted so far.
        failed = sys.exc_info()[0] is not None
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finish(not failed and (self.total is None or self.completed >= self.total))

    def _finish(self, finished: bool) -> None:
        elapsed = time.monotonic() - self.started
        if finished:
            amount = human_amount(self.completed, self.unit)
            self._reporter.info(f"{self.description}: done ({amount} in {elapsed:.1f}s)")
        else:
            done = human_amount(self.completed, self.unit)
            of = f" of {human_amount(self.total, self.unit)}" if self.total is not None else ""
            self._reporter.debug(f"{self.description}: stopped after {done}{of}")


class _BarTask(_CountingTask):
    """A rich bar; rich's Progress is thread-safe, so ``advance`` goes straight to it."""

    def __init__(self, reporter: ConsoleReporter, progress: Progress, task_id: TaskID, *args: Any) -> None:
        super().__init__(reporter, *args)
        self._progress = progress
        self._id = task_id

    def advance(self, amount: float = 1) -> None:
        super().advance(amount)
        self._progress.advance(self._id, amount)

    def _finish(self, finished: bool) -> None:
        if finished and self.total is None:  # stop the pulsing of a bar of unknown length
            self._progress.update(self._id, total=self.completed, completed=self.completed)
        self._progress.stop_task(self._id)


class ConsoleReporter(Reporter):
    """The CLI's :class:`Reporter`; use as a context manager so live bars are stopped on exit.

    Bars are drawn only when stderr is a terminal and the output is neither quiet nor JSON; in
    plain mode a stage is a line when it starts and one when it is done. ``-q`` hides info,
    ``-v`` shows debug, warnings always show.
    """

    def __init__(self, output: Output, console: Console | None = None) -> None:
        self.show_info = not (output.quiet or output.json)
        self.show_debug = output.verbosity > 0
        if console is None and sys.stderr is not None and sys.stderr.isatty():
            from rich.console import Console

            console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
        self.console: Console | _PlainConsole = console or _PlainConsole()
        self.bars = self.show_info and self.console.is_terminal
        self._progress: Progress | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ConsoleReporter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (bars stay on screen as they were)."""
        with self._lock:
            progress, self._progress = self._progress, None
        if progress is not None:
            progress.stop()

    def _live(self) -> Progress:
        with self._lock:
            if self._progress is None:
                self._progress = _new_progress(self.console)  # type: ignore[arg-type]
                self._progress.start()
            return self._progress

    def task(self, description: str, total: float | None, unit: str = "pkg") -> Task:
        args = (description, total, unit)
        if self.bars:
            progress = self._live()
            return _BarTask(self, progress, progress.add_task(description, total=total, unit=unit), *args)
        if self.show_info:
            suffix = f" ({human_amount(total, unit)})" if total is not None else ""
            self.info(f"{description}{suffix}…")
        return _CountingTask(self, *args)

    def info(self, message: str) -> None:
        if self.show_info:
            self.console.print(message)

    def debug(self, message: str) -> None:
        if self.show_debug:
            self._print(message, style="dim")

    def warn(self, message: str) -> None:
        self._print(f"{WARNING_PREFIX} {message}", style="bold yellow", styled=len(WARNING_PREFIX))

    def _print(self, message: str, *, style: str, styled: int | None = None) -> None:
        """Print ``message`` with ``style`` on its first ``styled`` characters (all by default)."""
        if isinstance(self.console, _PlainConsole):
            self.console.print(message)
            return
        from rich.text import Text

        text = Text(message)
        text.stylize(style, 0, styled)
        self.console.print(text)

    def result(self, message: str) -> None:
        """A final line; hidden by ``-q`` like any info."""
        self.info(message)


def _jsonable(value: object) -> str:
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def print_json(result: PackResult | UnpackResult | Inspection) -> None:
    """The result dataclass as one JSON object on stdout (paths as strings)."""
    internal = {f.name for f in dataclasses.fields(result) if f.metadata.get("internal")}
    document = {k: v for k, v in dataclasses.asdict(result).items() if k not in internal}
    print(json.dumps(document, indent=2, default=_jsonable), flush=True)


def render_pack_result(result: PackResult, reporter: ConsoleReporter) -> None:
    """``Packed 12 conda packages and 2 wheels for linux-64 into environment.tar (34.5 MB)``, where
    the files came from, and what was left out; a dry run lists every file on stdout instead."""
    counts = f"{plural(result.conda_packages, 'conda package')} and {plural(result.wheels, 'wheel')}"
    named = {**ORIGINS, "download": "to download"} if result.dry_run else ORIGINS
    origins = ", ".join(f"{count} {named.get(origin, origin)}" for origin, count in result.sources.items())
    origins = f"; {origins}" if origins else ""
    if result.dry_run:
        _columns_out(
            [
                ("file", "from", "size"),
                *((f.path, f"{f.origin}: {f.location}", _size(f.size)) for f in result.files),
            ]
        )
        reporter.result(
            f"Dry run: would pack {counts} for {result.platform} ({_dry_run_total(result)}{origins}); "
            "nothing was fetched or written"
        )
    else:
        where = "stdout" if result.output is None else str(result.output)
        reporter.result(
            f"Packed {counts} for {result.platform} into {where} ({decimal(result.size)}{origins})"
        )
    if result.skipped:
        reporter.warn(f"left out {plural(len(result.skipped), 'package')}: " + "; ".join(result.skipped))


def _size(size: int | None) -> str:
    return decimal(size) if size is not None else "size unknown"


def _dry_run_total(result: PackResult) -> str:
    """The total, honest about files whose size the source does not give (conda-lock v1 has none)."""
    unknown = sum(1 for f in result.files if f.size is None)
    if not unknown:
        return decimal(result.size)
    if unknown == len(result.files):
        return "size unknown until fetched"
    return f"{decimal(result.size)} and {plural(unknown, 'file')} of unknown size"


def _columns_out(rows: list[tuple[str, ...]]) -> None:
    sys.stdout.write("\n".join(_columns(rows)) + "\n")
    sys.stdout.flush()


def activate_command(script: PurePath) -> str:
    """How to load ``activate.<ext>`` into the current shell (``source`` for POSIX-like shells)."""
    return ACTIVATE_COMMANDS.get(script.suffix, "source {}").format(shlex.quote(str(script)))


def render_unpack_result(result: UnpackResult, reporter: ConsoleReporter, name: str | None = None) -> None:
    """The prefix, installer and counts, then how to activate; a dry run lists packages on stdout."""
    counts = (
        f"{plural(len(result.conda_packages), 'conda package')} and {plural(len(result.wheels), 'wheel')}"
    )
    if result.dry_run:
        for line in [*result.conda_packages, *result.wheels]:
            print(line)
        sys.stdout.flush()
        reporter.result(
            f"Dry run: would install {counts} into {result.prefix} with {result.installer}; "
            "nothing was written"
        )
        return
    replaced = " (replacing the environment that was there)" if result.replaced else ""
    reporter.result(f"Unpacked {counts} into {result.prefix} with {result.installer}{replaced}")
    if result.activation_script is not None:
        reporter.result(f"Activate it with: {activate_command(result.activation_script)}")
    if name:
        reporter.result(f"or, in a conda shell: conda activate {name}")


def render_inspection(inspection: Inspection) -> None:
    """The report of ``inspect`` on stdout: what the pack is, its packages and wheels in aligned
    columns, and every way to unpack it."""
    packages = inspection.packages
    lines = [
        f"Pack:       {inspection.pack} ({inspection.kind}, {decimal(inspection.size)})",
        (
            f"Format:     pixi-pack format {inspection.format_version}, for {inspection.platform}, "
            f"written by {inspection.written_by}"
        ),
        (
            f"Contents:   {plural(len(packages), 'conda package')} "
            f"({decimal(sum(p.size for p in packages))}), {plural(len(inspection.wheels), 'wheel')}"
        ),
    ]
    if inspection.verified is not None:
        lines.append(f"Verified:   {inspection.verified}")
    rows = [("name", "version", "build", "channel", "size")]
    rows += [(p.name, p.version, p.build, p.channel or "-", decimal(p.size)) for p in packages]
    lines += ["", *_columns(rows)]
    if inspection.wheels:
        lines += ["", *_columns([("wheel", "size"), *((w.file, decimal(w.size)) for w in inspection.wheels)])]
    if inspection.extra_files:
        lines += ["", "Other files (ignored when unpacking): " + ", ".join(inspection.extra_files)]
    lines += ["", "Unpack with:"]
    lines += _columns([(f"  {path.command}", f"needs {path.needs}") for path in inspection.unpack_paths])
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """``rows`` as left-aligned columns two spaces apart (the last one not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows]
