"""How many transfers one server gets at once: a few at first, more while it answers.

Opening ``concurrency.downloads`` (50) connections at once overflows a small listen backlog
(``python -m http.server`` has 5): the server's kernel drops the SYNs it has no room for, and the
client sends them again only after 1 s, then 3 s, 7 s... A pack from such a server took 12x as
long as curl's. So each origin (scheme, host, port) starts with :data:`INITIAL_TRANSFERS`, and:

- every answer that comes (its head) adds one more (the number doubles each round, as in TCP's
  slow start), up to the cap; past a back-off, one more per round;
- a connection that stalled (its SYN went unanswered: ``direct.py``'s hedged connect won)
  halves the number, once per burst;
- a server that closes every connection after one answer keeps :data:`INITIAL_TRANSFERS` at
  most (see :meth:`Gate.answered`);
- while this process keeps the cores it may use busy (:class:`CpuMeter`), the number does not
  grow, and it halves once per busy :data:`METER_WINDOW`, down to :data:`BUSY_TRANSFERS` (a
  burst of answers in one window halves it once; answers that come before
  the first measure, :data:`METER_WINDOW` in, count once it is taken). More transfers only help
  while each is held back by the network (latency, a per-connection limit); where the cores are
  the limit (hashing, TLS, the copies), more of them only add work: threads contending for the
  GIL, more TLS state. Measured with the benchmark's 391 MB from nginx on loopback, 2 cores:
  0.95 s over HTTPS with 2-3 transfers against 1.16 s with 50, 0.55 s against 0.64 s over HTTP.
  Only this process's own CPU time counts: other programs keeping the machine busy are no
  reason to wait on fewer, slower connections.

``concurrency.downloads`` caps every origin, and the fetcher's threads cap all of them together.
A slow server (as opposed to a full backlog) is no reason to open fewer connections: only
stalled connects, and busy cores, make the number smaller.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Transfers a new origin gets at first: fewer than the smallest listen backlog in common use
#: (``python -m http.server``: 5), so that the first burst cannot overflow it.
INITIAL_TRANSFERS: Final = 4
#: Longest wait between two looks at ``stop`` while waiting for a slot (seconds).
STOP_POLL: Final = 0.1
#: Transfers an origin keeps while the cores are busy: one receiving while another waits for
#: its answer.
BUSY_TRANSFERS: Final = 2
#: Share of the cores this process may use, in use by it, from which they count as busy (on
#: loopback, 2 cores: 0.85 over HTTP and 0.65 over HTTPS, where the server encrypts on the same
#: cores; a transfer held back by the network leaves them mostly idle).
BUSY_SHARE: Final = 0.5
#: Seconds over which the process's CPU time is measured.
METER_WINDOW: Final = 0.02


class CpuMeter:
    """Whether this process kept the cores it may use busy over its last :data:`METER_WINDOW`
    (its CPU time, all threads, against wall time times the cores); None until a first window
    has passed (a number grown before the first look cannot be taken back from the transfers
    already under way). Thread-safe and cheap: a look reads two clocks."""

    def __init__(
        self,
        cores: int | None = None,
        clocks: tuple[Callable[[], float], Callable[[], float]] = (time.monotonic, time.process_time),
    ) -> None:
        self.cores = cores or _usable_cores()
        self._wall, self._cpu = clocks
        self._lock = threading.Lock()
        self._last = (self._wall(), self._cpu())
        self._busy: bool | None = None
        #: Windows measured so far (a halving per window: see Gate._settle).
        self.windows = 0

    def busy(self) -> bool | None:
        with self._lock:
            wall, cpu = self._wall(), self._cpu()
            elapsed = wall - self._last[0]
            if elapsed >= METER_WINDOW:
                self._busy = (cpu - self._last[1]) / (elapsed * self.cores) >= BUSY_SHARE
                self._last = (wall, cpu)
                self.windows += 1
            return self._busy


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class Stopped(Exception):
    """Raised instead of a slot once the fetch is being stopped."""


class Gate:
    """The transfers of one origin: how many may run (``limit``) and how many do (``active``).

    Thread-safe: transfers take slots and report from their own threads.
    """

    def __init__(self, cap: int, initial: int = INITIAL_TRANSFERS, meter: CpuMeter | None = None) -> None:
        self.cap = max(1, cap)
        self.meter = meter
        self.limit = max(1, min(initial, self.cap))
        #: Below it the limit grows by one per answer, above it by one per round.
        self.threshold = self.cap
        self.active = 0
        #: Bumped at every back-off: stalls of connections begun before it are not counted twice.
        self.epoch = 0
        #: Answers after which the server closed the connection, and whether any kept it open.
        self.closed_answers = 0
        self.kept_alive = False
        self._credit = 0.0
        #: Answers not yet turned into growth (see :meth:`_settle`), and the meter's window of
        #: the last halving.
        self._answers = 0
        self._halved_in = -1
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def slot(self, stop: threading.Event) -> Iterator[int]:
        """Hold one of the origin's transfers; yields the epoch to report connections with.
        Raises :class:`Stopped` when ``stop`` is set while waiting."""
        with self._changed:
            while self.active >= self.limit:
                if stop.is_set():
                    raise Stopped()
                self._settle()  # answers counted before the cores' use was known
                if self.active < self.limit:
                    break
                self._changed.wait(STOP_POLL)
            self.active += 1
            epoch = self.epoch
        try:
            yield epoch
        finally:
            with self._changed:
                self.active -= 1
                self._changed.notify()

    def opened(self, epoch: int, stalled: bool) -> None:
        """A connection opened; after a stall (a lost SYN) the number halves, once per burst
        (the stalls of connections begun before the last back-off are that burst's)."""
        if not stalled:
            return
        with self._changed:
            if epoch == self.epoch:
                self.epoch += 1
                self.threshold = self.limit = max(1, self.limit // 2)
                self._credit = 0.0

    def answered(self, closes: bool = False) -> None:
        """The server answered (an answer's head, or rattler's first byte): one more transfer may
        run, one per round past a back-off; while the cores are busy, half as many instead (once
        per measured window).
        ``closes`` when it will close the connection after this answer.

        A server that does so every time (HTTP/1.0 as ``python -m http.server`` speaks it,
        ``Connection: close``) pays a connection and an accept per file. The servers that do so
        take connections in one thread and serve them under one lock (the GIL): more than a few
        transfers at once only overflow their listen queue and slow them down (measured with
        ``python -m http.server``: 0.44 s for the benchmark's files with 4 at once, 0.8-1.4 s
        once the number had grown to 20-40). After :data:`INITIAL_TRANSFERS` such answers and
        none that kept its connection, the origin keeps that many at most.
        """
        with self._changed:
            if not closes:
                self.kept_alive = True
            else:
                self.closed_answers += 1
                if not self.kept_alive and self.closed_answers >= INITIAL_TRANSFERS:
                    self.cap = min(self.cap, INITIAL_TRANSFERS)
                    self.threshold = self.limit = min(self.limit, self.cap)
            self._answers += 1
            self._settle()

    def _settle(self) -> None:
        """Turn the answers counted into growth (or, cores busy, a halving); kept for later
        while the cores' use is not known yet. Called with the lock held."""
        busy = self.meter.busy() if self.meter is not None else False
        if busy is None or not self._answers:
            return
        answers, self._answers = self._answers, 0
        if busy:
            assert self.meter is not None
            if self.meter.windows != self._halved_in:  # once per busy window: the number measured
                self._halved_in = self.meter.windows  # is the one before this halving
                self.limit = max(min(BUSY_TRANSFERS, self.limit), self.limit // 2)
            return
        for _ in range(answers):
            if self.limit >= self.cap:
                break
            if self.limit < self.threshold:
                self.limit += 1
            else:
                self._credit += 1 / self.limit
                if self._credit >= 1:
                    self._credit -= 1
                    self.limit += 1
        self._changed.notify_all()


class Ramp:
    """One :class:`Gate` per origin, all with the same cap."""

    def __init__(self, cap: int, initial: int = INITIAL_TRANSFERS, meter: CpuMeter | None = None) -> None:
        self.cap = cap
        self.initial = initial
        self.meter = meter
        self._gates: dict[str, Gate] = {}
        self._lock = threading.Lock()

    def gate(self, origin: str) -> Gate:
        with self._lock:
            gate = self._gates.get(origin)
            if gate is None:
                gate = self._gates[origin] = Gate(self.cap, self.initial, self.meter)
            return gate
