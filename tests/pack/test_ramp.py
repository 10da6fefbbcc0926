"""The ramp's policy (transport/ramp.py): how many transfers a server gets, on clocks the test sets.

The network cases (a full listen backlog, 50 at once from a slow server, a failure that cancels
the rest) run against real servers in test_download.py, test_download_servers.py and
tests/faults/test_network.py; these pin the rule for busy cores, which no loopback server here
can make happen on demand.
"""

from __future__ import annotations

import threading

from conda_pixi_pack.pack.transport.ramp import (
    BUSY_SHARE,
    BUSY_TRANSFERS,
    INITIAL_TRANSFERS,
    METER_WINDOW,
    CpuMeter,
    Gate,
)

#: A little more than the meter's window (the clocks' sums are floats).
WINDOW = METER_WINDOW * 1.5


class Clocks:
    """Wall time and this process's CPU time, moved by the test."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def run(self, seconds: float, cores_busy: float) -> None:
        self.wall += seconds
        self.cpu += seconds * cores_busy


def meter(clocks: Clocks, cores: int = 2) -> CpuMeter:
    return CpuMeter(cores, (lambda: clocks.wall, lambda: clocks.cpu))


def test_answers_grow_the_number_while_the_cores_are_idle() -> None:
    """A server held back by the network: each answer lets one more transfer run (slow start)."""
    clocks = Clocks()
    gate = Gate(50, meter=meter(clocks))
    clocks.run(WINDOW, cores_busy=0.2)
    for _ in range(10):
        gate.answered()
    assert gate.limit == INITIAL_TRANSFERS + 10


def test_busy_cores_halve_the_number_down_to_two() -> None:
    """Where this process keeps the cores busy, more transfers add work, not bytes: each answer
    halves the number, never below BUSY_TRANSFERS, and none makes it grow."""
    clocks = Clocks()
    gate = Gate(50, meter=meter(clocks))
    clocks.run(WINDOW, cores_busy=0.2)
    for _ in range(12):
        gate.answered()
    assert gate.limit == 16
    clocks.run(WINDOW, cores_busy=2 * BUSY_SHARE)  # both cores, at the threshold
    gate.answered()
    gate.answered()  # the same window: its measure was of 16, not of 8
    assert gate.limit == 8
    for _ in range(5):
        clocks.run(WINDOW, cores_busy=1.9)
        gate.answered()
    assert gate.limit == BUSY_TRANSFERS
    clocks.run(WINDOW, cores_busy=0.3)  # idle again: growth resumes
    gate.answered()
    assert gate.limit == BUSY_TRANSFERS + 1


def test_answers_before_the_first_measure_are_kept_until_it() -> None:
    """Answers that come before the cores' use is known neither grow nor halve the number; they
    count once it is known, also for a transfer waiting for its slot with no answer to come."""
    clocks = Clocks()
    gate = Gate(50, meter=meter(clocks))
    for _ in range(INITIAL_TRANSFERS):
        gate.answered()
    assert gate.limit == INITIAL_TRANSFERS
    stop = threading.Event()
    held = [gate.slot(stop) for _ in range(INITIAL_TRANSFERS)]
    for slot in held:
        slot.__enter__()
    clocks.run(WINDOW, cores_busy=0.1)
    with gate.slot(stop):  # would wait for ever if the kept answers did not count now
        assert gate.limit == 2 * INITIAL_TRANSFERS
    for slot in held:
        slot.__exit__(None, None, None)


def test_the_meter_counts_this_process_only() -> None:
    """Its own CPU time against the cores it may use: half of two cores is busy, a tenth is not."""
    clocks = Clocks()
    cores = meter(clocks, cores=2)
    assert cores.busy() is None
    clocks.run(WINDOW, cores_busy=1.0)
    assert cores.busy() is True
    clocks.run(WINDOW, cores_busy=0.2)
    assert cores.busy() is False
    clocks.run(WINDOW / 4, cores_busy=2.0)  # within a window: the last answer holds
    assert cores.busy() is False
