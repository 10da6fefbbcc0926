"""cli/render.py: what the user sees on stderr (bars on a terminal, plain lines otherwise)."""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path, PurePosixPath

import pytest
from rich.console import Console

from conda_pixi_pack.cli.options import Output
from conda_pixi_pack.cli.render import (
    ConsoleReporter,
    activate_command,
    human_amount,
    print_json,
    render_pack_result,
    render_unpack_result,
)
from conda_pixi_pack.pack.pipeline import PackResult
from conda_pixi_pack.unpack.pipeline import UnpackResult

#: ANSI escape sequences (colours, cursor moves) rich writes on a terminal.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def make_reporter(terminal: bool, **output: object) -> tuple[ConsoleReporter, io.StringIO]:
    buffer = io.StringIO()
    console = Console(
        file=buffer, force_terminal=terminal, width=120, soft_wrap=True, highlight=False, markup=False
    )
    return ConsoleReporter(Output(**output), console=console), buffer  # type: ignore[arg-type]


def test_plain_lines_for_a_finished_stage() -> None:
    reporter, buffer = make_reporter(False)
    with reporter:
        task = reporter.task("Downloading 3 packages", 34_500_000, unit="B")
        task.advance(34_500_000)
        task.done()
        count = reporter.task("Linking", 12, unit="pkg")
        count.advance(12)
        count.done()
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "Downloading 3 packages (34.5 MB)…"
    assert lines[1].startswith("Downloading 3 packages: done (34.5 MB in ")
    assert lines[2] == "Linking (12 packages)…"
    assert lines[3].startswith("Linking: done (12 packages in ")
    assert "\x1b[" not in buffer.getvalue()  # no escape codes without a terminal
    assert not reporter.bars


def test_a_stage_cut_short_is_not_reported_done() -> None:
    reporter, buffer = make_reporter(False, verbosity=1)
    task = reporter.task("Downloading", 10, unit="pkg")
    task.advance(4)
    task.done()
    task.done()  # a second call (the core's finally) changes nothing
    out = buffer.getvalue()
    assert "done" not in out
    assert out.count("Downloading: stopped after 4 packages of 10 packages") == 1


@pytest.mark.parametrize("error", [OSError("connection reset"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_stage_ended_by_an_exception_is_not_reported_done(error: BaseException) -> None:
    """A stage of unknown length that fails must not print "done" before the error line."""
    reporter, buffer = make_reporter(False, verbosity=1)
    task = reporter.task("Downloading", None, unit="B")
    task.advance(1_800_000)
    with pytest.raises(type(error)):
        try:
            raise error
        finally:
            task.done()
    out = buffer.getvalue()
    assert "done" not in out
    assert "Downloading: stopped after 1.8 MB\n" in out


@pytest.mark.parametrize(
    ("output", "info_shown", "debug_shown"),
    [
        ({}, True, False),
        ({"quiet": True}, False, False),
        ({"verbosity": 1}, True, True),
        ({"json": True}, False, False),
    ],
    ids=["default", "quiet", "verbose", "json"],
)
def test_levels(output: dict[str, object], info_shown: bool, debug_shown: bool) -> None:
    reporter, buffer = make_reporter(False, **output)
    reporter.info("an info line")
    reporter.debug("a debug line")
    reporter.warn("a warning line")
    out = buffer.getvalue()
    assert ("an info line" in out) is info_shown
    assert ("a debug line" in out) is debug_shown
    assert "warning: a warning line" in out  # always, even quiet


def test_terminal_draws_rich_bars() -> None:
    reporter, buffer = make_reporter(True)
    assert reporter.bars
    with reporter:
        task = reporter.task("Downloading", 2_000_000, unit="B")
        task.advance(1_000_000)
        task.advance(1_000_000)
        task.done()
        reporter.task("Linking", 3, unit="pkg").advance(3)
    out = buffer.getvalue()
    assert "━" in out
    assert "100%" in out
    assert "2.0/2.0 MB" in out  # bytes shown as sizes
    assert "3/3" in out  # packages as counts


def test_quiet_terminal_draws_no_bars() -> None:
    reporter, buffer = make_reporter(True, quiet=True)
    with reporter:
        reporter.task("Downloading", 10, unit="pkg").advance(10)
    assert not reporter.bars
    assert buffer.getvalue() == ""


@pytest.mark.parametrize("terminal", [False, True], ids=["plain", "terminal"])
def test_thread_safe_counting(terminal: bool) -> None:
    reporter, buffer = make_reporter(terminal)
    with reporter:
        task = reporter.task("Hashing", 8000, unit="pkg")

        def work() -> None:
            for _ in range(1000):
                task.advance()
            reporter.debug("worker done")
            reporter.warn("worker warned")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        task.done()
    assert task.completed == 8000  # type: ignore[attr-defined]
    assert ANSI.sub("", buffer.getvalue()).count("warning: worker warned") == 8
    if not terminal:
        assert "Hashing: done (8000 packages in" in buffer.getvalue()


@pytest.mark.parametrize(
    ("amount", "unit", "text"),
    [
        (34_500_000, "B", "34.5 MB"),
        (1, "pkg", "1 package"),
        (12, "pkg", "12 packages"),
        (3, "file", "3 files"),
    ],
    ids=["bytes", "one-package", "packages", "other-unit"],
)
def test_human_amount(amount: float, unit: str, text: str) -> None:
    assert human_amount(amount, unit) == text


@pytest.mark.parametrize(
    ("script", "command"),
    [
        ("/x/activate.sh", "source /x/activate.sh"),
        ("/my env/activate.sh", "source '/my env/activate.sh'"),
        ("/x/activate.fish", "source /x/activate.fish"),
        ("/x/activate.ps1", ". /x/activate.ps1"),
        ("/x/activate.bat", "call /x/activate.bat"),
    ],
    ids=["bash", "quoted", "fish", "powershell", "cmd"],
)
def test_activate_command(script: str, command: str) -> None:
    assert activate_command(PurePosixPath(script)) == command


def test_pack_result_line() -> None:
    reporter, buffer = make_reporter(False)
    result = PackResult(
        output=Path("/tmp/out/environment.tar"),
        conda_packages=12,
        wheels=1,
        size=34_500_000,
        platform="linux-64",
        sources={"download": 10, "package cache": 2, "cache": 1},
    )
    render_pack_result(result, reporter)
    assert buffer.getvalue() == (
        "Packed 12 conda packages and 1 wheel for linux-64 into /tmp/out/environment.tar (34.5 MB; "
        "10 downloaded, 2 from conda's package cache, 1 from --use-cache)\n"
    )


def test_unpack_result_lines() -> None:
    reporter, buffer = make_reporter(False)
    result = UnpackResult(
        prefix=Path("/w/env"),
        installer="rattler",
        platform="linux-64",
        conda_packages=["alpha=1.0=h0_0", "beta=1.2=h0_0"],
        wheels=[],
        activation_script=Path("/w/activate.sh"),
    )
    render_unpack_result(result, reporter, name="demo")
    assert buffer.getvalue().splitlines() == [
        "Unpacked 2 conda packages and 0 wheels into /w/env with rattler",
        "Activate it with: source /w/activate.sh",
        "or, in a conda shell: conda activate demo",
    ]


def test_dry_run_lists_packages_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    reporter, buffer = make_reporter(False)
    result = UnpackResult(
        prefix=Path("/w/env"),
        installer="conda",
        platform="linux-64",
        conda_packages=["alpha=1.0=h0_0"],
        wheels=["fixture_wheel-1.0-py3-none-any.whl"],
        activation_script=None,
        dry_run=True,
    )
    render_unpack_result(result, reporter)
    assert capsys.readouterr().out.splitlines() == ["alpha=1.0=h0_0", "fixture_wheel-1.0-py3-none-any.whl"]
    assert "Dry run: would install 1 conda package and 1 wheel into /w/env with conda" in buffer.getvalue()


def test_json_has_paths_as_strings(capsys: pytest.CaptureFixture[str]) -> None:
    result = PackResult(output=Path("/o/e.tar"), conda_packages=2, wheels=0, size=10, platform="noarch")
    print_json(result)
    document = json.loads(capsys.readouterr().out)
    expected = {"output": "/o/e.tar", "conda_packages": 2, "wheels": 0, "size": 10, "platform": "noarch"}
    assert {key: document[key] for key in expected} == expected
