"""The fault suite's ledger: every test reports what it tried, and one line sums up the run.

Per run of ``tests/faults`` the summary line gives:

- **cases tried**: fault cases executed: one per test (each parametrization is a test), or what
  the test declared (``ledger.cases``: one per example the fuzzer fed, one per signal sent...);
- **faults survived**: the cases of tests that passed, i.e. where pack, unpack or inspect did all
  the case asks (a transient fault retried into a byte-identical pack, a hostile input refused
  with one clear line, nothing left behind). Cases of ``xfail`` tests (known bugs) are tried and
  not survived; they, and what they lost or let escape, are counted apart;
- **bytes lost**: bytes that a run should have kept or produced and did not, measured by the tests
  (``ledger.lose``): files that existed before a failed or interrupted run (an older pack at the
  output path, cache entries, files beside the target) and were removed or changed, and bytes of
  a pack or environment made after a transient fault that differ from the fault-free one;
- **escapes**: paths a run created or changed outside the places it may write (the output path
  and its temporary siblings, ``--use-cache``/``--pkgs-dir``, the private ``TMPDIR``, the target
  folder), and files of a hostile pack or package found outside the folder they were extracted
  into (``ledger.escape``).

The tests assert that bytes lost and escapes are 0, so a red run shows the first non-zero one; the
line then still says how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass
class Ledger:
    """What one test tried and measured (see the module docstring)."""

    cases: int = 1
    lost: int = 0
    escapes: int = 0
    notes: list[str] = field(default_factory=list)

    def lose(self, count: int) -> None:
        self.lost += count

    def escape(self, count: int) -> None:
        self.escapes += count


@dataclass
class _Totals:
    tried: int = 0
    survived: int = 0
    failed: int = 0
    lost: int = 0
    escapes: int = 0
    #: Cases of known bugs (xfail), and what they lost or let escape (counted apart).
    known_bugs: int = 0
    known_lost: int = 0
    known_escapes: int = 0


_TOTALS = _Totals()


@pytest.fixture(autouse=True)
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """This test's ledger; its outcome is read from the report once the test has run."""
    entry = Ledger()
    request.node.fault_ledger = entry
    yield entry


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    entry: Ledger | None = getattr(item, "fault_ledger", None)
    if entry is None or report.when != "call" or (report.skipped and not hasattr(report, "wasxfail")):
        return
    _TOTALS.tried += entry.cases
    if hasattr(report, "wasxfail"):
        _TOTALS.known_bugs += entry.cases
        _TOTALS.known_lost += entry.lost
        _TOTALS.known_escapes += entry.escapes
        return
    _TOTALS.lost += entry.lost
    _TOTALS.escapes += entry.escapes
    if report.passed:
        _TOTALS.survived += entry.cases
    else:
        _TOTALS.failed += entry.cases


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line with the figures of this run (only when fault cases ran)."""
    if not _TOTALS.tried:
        return
    t = _TOTALS
    terminalreporter.write_line(
        f"fault suite: {t.tried} cases tried, {t.survived} faults survived, "
        f"{t.lost} bytes lost, {t.escapes} escapes; {t.failed} failed; known bugs (xfail): "
        f"{t.known_bugs} cases, {t.known_lost} bytes lost, {t.known_escapes} escapes"
    )
