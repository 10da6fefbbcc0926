"""HTTP(S) downloads with the standard library: ``http.client`` over sockets and OpenSSL, in threads.

Why not rattler's client for these (measured on the benchmark's 171 packages, 391 MB, from nginx
on loopback, 2 cores): over TLS it hands Python each piece of the stream as it decrypts it, ~8 KiB
at a time (48,000 calls, each taking the GIL from one of its runtime threads), and took 2.5 s
where ``curl --parallel`` took 0.9 s; streamed to files inside Rust it still took 2.0 s, and
py-rattler 0.28 exposes no setting of that client's TLS, HTTP/2 windows or connection pool
(``Client`` takes middlewares, headers, a user agent and one overall timeout). Here each
transfer runs in the fetching thread that took it and reads :data:`BUFFER_SIZE` at a time:
OpenSSL decrypts, ``hashlib`` hashes and the kernel writes with the GIL released, so both cores
work (0.9-1.2 s, the hash included). Over plain HTTP both clients run at wire speed; this one
also sees its connections open, which the ramp (``ramp.py``) needs. HTTP/1.1 only: every server
that speaks HTTP/2 to curl speaks HTTP/1.1 too, and parallel connections do what HTTP/2's
streams would.

Connections are kept alive per origin and reused, and TLS sessions resumed (a full handshake
signs with the server's key: ~1 ms of CPU on each side, 50 times over without resumption). A
new connection is opened with a *hedged* connect:
when its SYN has no answer after ``patience`` (three times the slowest connect seen to that
origin lately, at least :data:`MIN_PATIENCE`), a second connect starts beside it, and whichever
completes first is used. A full listen backlog drops SYNs silently and the kernel resends them
only after 1 s, 3 s...: a hedge that wins costs ``patience`` instead, and tells the ramp to back off.

What this transport does not do (credentials, proxies, several mirrors, other schemes) never
reaches it: see ``route.py``. Failures are :class:`TransferError` s; ``download.py`` words them and
decides on retries.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import queue
import selectors
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import urljoin, urlsplit

from conda_pixi_pack.errors import first_line

if TYPE_CHECKING:
    from collections.abc import Callable

#: Bytes read per call: large enough that Python's per-call work is noise next to decryption,
#: hashing and the write; small enough that 50 transfers hold little memory.
BUFFER_SIZE: Final = 256 * 1024
#: Bodies this large are hashed by a thread of their own (:class:`_Digest`).
DIGEST_APART: Final = 8 * 1024 * 1024
#: Buffers going round between a large body's receiving and hashing threads.
DIGEST_BUFFERS: Final = 4
#: Large bodies hashed apart at once, at most (the largest come first, and they set the end;
#: more would only hold more memory: the others hash as they receive).
DIGEST_THREADS: Final = 2
#: Hedge delay for an origin with no connection seen yet (seconds).
FIRST_PATIENCE: Final = 0.25
#: Hedge delays never go below or above these (seconds).
MIN_PATIENCE: Final = 0.05
MAX_PATIENCE: Final = 1.0
#: Connects racing for one connection at most (the first and two hedges).
MAX_RACERS: Final = 3
#: Longest wait between two looks at a cancelled transfer while connecting (seconds).
CANCEL_POLL: Final = 0.1
#: Redirects followed per request (reqwest's default too).
MAX_REDIRECTS: Final = 10
#: Answers that send the client elsewhere (with a ``Location``).
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: Answers worth asking again after a pause (rattler's RetryMiddleware retries these too).
RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
#: Errors of a non-blocking ``connect`` that mean "under way".
IN_PROGRESS: Final = frozenset(
    getattr(errno, name)
    for name in ("EINPROGRESS", "EWOULDBLOCK", "EAGAIN", "WSAEWOULDBLOCK")
    if hasattr(errno, name)
)
#: Seconds a diagnosis (:func:`diagnose`) waits for a host.
PROBE_TIMEOUT: Final = 3.0


@dataclass(frozen=True)
class Timeouts:
    """How long a transfer waits: to open a connection (TCP and TLS), and for any byte after that."""

    connect: float
    read: float


class TransferError(Exception):
    """A transfer that failed; ``transient`` when another attempt may well succeed."""

    transient = False


class HttpStatus(TransferError):
    """The server answered ``code`` (after retries of 5xx, and redirects) for ``url``."""

    def __init__(self, code: int, url: str) -> None:
        super().__init__(f"HTTP {code} for {url}")
        self.code, self.url = code, url


class Unreachable(TransferError):
    """No connection: ``reason`` says why (unresolvable, refused, timed out...)."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.transient = reason, transient


class Untrusted(TransferError):
    """The server's TLS certificate failed verification."""

    def __init__(self, address: str, detail: str) -> None:
        super().__init__(f"the TLS certificate of {address} is not trusted ({detail})")
        self.reason = str(self)


class Stalled(TransferError):
    """No byte from ``address`` for the read timeout."""

    transient = True

    def __init__(self, address: str) -> None:
        super().__init__(f"no data from {address}")
        self.address = address


class CutShort(TransferError):
    """The connection broke off before the answer was complete."""

    transient = True


class Cancelled(TransferError):
    """The transfer was abandoned from outside (another one failed, Ctrl-C)."""


class Sink(Protocol):
    """Where a body goes, in order: ``store`` writes a piece, ``digest`` hashes it. A large
    body is hashed in a thread of its own (:class:`_Digest`), each piece after it was stored."""

    def store(self, data: memoryview) -> object: ...

    def digest(self, data: memoryview) -> object: ...


Origin = tuple[str, str, int]


class Job:
    """One transfer, as its thread and whoever may abort it both see it."""

    def __init__(
        self,
        url: str,
        sink: Sink,
        report: Callable[[bool], None],
        answered: Callable[[bool], None] | None = None,
    ) -> None:
        """``report(stalled)`` is called for every connection the transfer opens,
        ``answered(closes)`` when the answer's head came, saying whether the server will close
        the connection after it (a server that does so every time costs a connection per file)."""
        self.url, self.sink, self.report, self.answered = url, sink, report, answered
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
        if self.cancelled.is_set():
            raise Cancelled()

    def abort(self) -> None:
        """Stop the transfer from another thread: one blocked in ``recv`` returns at once."""
        self.cancelled.set()
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    # the plain socket's shutdown: SSLSocket's would also drop its TLS state,
                    # which the transfer's thread may be using at this moment
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


class Direct:
    """Fetches ``http(s)://`` URLs into sinks; one instance per pack, shared by its transfers."""

    def __init__(
        self,
        timeouts: Timeouts,
        tls: Callable[[], ssl.SSLContext],
        *,
        user_agent: str,
        retries: int,
        backoff: float,
    ) -> None:
        """``tls`` makes the TLS context, on the first HTTPS connection (loading the trust store
        takes a moment that a plain-HTTP pack need not pay)."""
        self.timeouts, self._make_tls = timeouts, tls
        self._tls: ssl.SSLContext | None = None
        self.retries, self.backoff = retries, backoff
        self._headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
        self._lock = threading.Lock()
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = {}
        self._addresses: dict[tuple[str, int], list[tuple[int, tuple[object, ...]]]] = {}
        self._connect_time: dict[Origin, float] = {}
        self._sessions: dict[Origin, ssl.SSLSession] = {}
        self._local = threading.local()
        #: Buffers of finished :class:`_Digest` s, for the next ones, and how many may run.
        self._spare_buffers: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._digest_slots = threading.BoundedSemaphore(DIGEST_THREADS)

    def fetch(self, job: Job) -> None:
        """Stream ``job.url``'s body into its sink, in the calling thread. Network failures are
        :class:`TransferError` s (:class:`Cancelled` once ``job.abort()`` was called); the sink's
        own (a full disk) are raised as they are."""
        self._get(job)

    def close(self) -> None:
        """Close the idle connections (those in use close when their transfer ends)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    # -- in the transfer's thread ----------------------------------------------------------------
    def _get(self, job: Job) -> None:
        """GET ``job.url``, following redirects and retrying 5xx answers, into the sink."""
        url, redirects, retries, delay = job.url, 0, 0, self.backoff
        while True:
            origin, connection, response = self._exchange(job, url)
            status = response.status
            location = response.getheader("Location")
            if 200 <= status < 300:
                if job.answered is not None:
                    job.answered(bool(response.will_close))
                self._stream(job, origin, connection, response)
                return
            self._finish(origin, connection, response)
            if status in REDIRECTS and location and redirects < MAX_REDIRECTS:
                url, redirects = urljoin(url, location), redirects + 1
            elif status in RETRY_STATUSES and retries < self.retries:
                retries += 1
                if job.cancelled.wait(delay):
                    raise Cancelled()
                delay *= 2
            else:
                raise HttpStatus(status, url)

    def _exchange(
        self, job: Job, url: str
    ) -> tuple[Origin, http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the request and read the answer's head, on a kept-alive connection if there is one
        (asked once more on a new connection when the server had closed the old one)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        origin = (scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self._take(origin)
        reused = connection is not None
        while True:
            if connection is None:
                connection = self._open(job, origin)
            job.attach(connection.sock)
            try:
                connection.request("GET", target, headers=self._headers)
                response = connection.getresponse()
            except TimeoutError:
                connection.close()
                raise Stalled(_address(origin)) from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if job.cancelled.is_set():
                    raise Cancelled() from None
                if not reused:
                    detail = first_line(exc) or type(exc).__name__
                    raise CutShort(f"no answer from {_address(origin)} ({detail})") from None
                connection, reused = None, False  # the server had closed it while idle
                continue
            self._keep_session(origin, connection.sock)
            return origin, connection, response

    def _stream(
        self,
        job: Job,
        origin: Origin,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
    ) -> None:
        """The body into the sink, :data:`BUFFER_SIZE` at a time; the connection back to the pool.

        A body of :data:`DIGEST_APART` or more is hashed by a second thread while this one
        receives and writes: the largest package is the last to finish, and alone it would
        keep one core busy with both while the other idles.
        """
        expected, received = response.length, 0
        body = _Body(response, connection.sock)
        digest = None
        if (expected or 0) >= DIGEST_APART and self._digest_slots.acquire(blocking=False):
            digest = _Digest(job.sink, self._spare_buffers, self._digest_slots)
        inline = self._thread_buffer() if digest is None else None
        try:
            while True:
                buffer = inline if digest is None else digest.buffer()
                assert buffer is not None
                count = _receive(job, origin, body, buffer, received)
                if not count:
                    if digest is not None:
                        digest.give_back(buffer)
                    break
                job.sink.store(buffer[:count])  # a local error (disk full) is raised as it is
                if digest is None:
                    job.sink.digest(buffer[:count])
                else:
                    digest.put(buffer, count)
                received += count
            if digest is not None:
                digest, finishing = None, digest
                finishing.close()
        except BaseException:
            connection.close()
            raise
        finally:
            if digest is not None:
                digest.close(raise_error=False)
        if body.left:  # fewer bytes than Content-Length: the server closed early
            connection.close()
            if job.cancelled.is_set():  # or we shut the socket
                raise Cancelled()
            raise CutShort(f"the connection closed after {received} of {expected} bytes")
        response.close()  # read in full; the connection stays open
        self._finish(origin, connection, response)

    def _finish(
        self, origin: Origin, connection: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> None:
        """Keep the connection for the next request if the answer is fully read and it stays open."""
        try:
            if not response.isclosed():
                response.read(64 * 1024)  # a redirect's or error's short body
        except (OSError, http.client.HTTPException):
            connection.close()
            return
        if not response.isclosed() or response.will_close or connection.sock is None:
            connection.close()
            return
        with self._lock:
            self._idle.setdefault(origin, []).append(connection)

    def _thread_buffer(self) -> memoryview:
        """The calling thread's read buffer, made once: the same memory for every file it fetches
        (a new buffer per file leaves glibc's per-thread arenas fragmented, and memory grows with
        the number of files)."""
        buffer: memoryview | None = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = memoryview(bytearray(BUFFER_SIZE))
        return buffer

    def _keep_session(self, origin: Origin, sock: socket.socket | None) -> None:
        """Remember the origin's TLS session (read once an answer came: TLS 1.3 sends its
        ticket after the handshake), so that new connections resume it: no certificate signed
        and checked again, about 1 ms of CPU each on both ends.

        Taken once per origin: ``sock.session`` is a copy (Python serializes OpenSSL's session,
        certificates included, and parses it back) that holds the GIL ~0.2 ms; taken after every
        answer it held up the other transfers' threads for ~35 ms of the benchmark's HTTPS pack.
        """
        if origin in self._sessions or not isinstance(sock, ssl.SSLSocket):
            return
        session = sock.session
        if session is not None:
            with self._lock:
                self._sessions.setdefault(origin, session)

    def _take(self, origin: Origin) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(origin)
            return idle.pop() if idle else None

    def _open(self, job: Job, origin: Origin) -> http.client.HTTPConnection:
        """A new connection to ``origin``: hedged connect, then TLS for HTTPS."""
        scheme, host, port = origin
        sock = self._connect(job, origin)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._secure(job, sock, origin)
            sock.settimeout(self.timeouts.read)
        except BaseException:
            sock.close()
            raise
        connection = http.client.HTTPConnection(host, port, timeout=self.timeouts.read)
        connection.sock = sock
        return connection

    def _secure(self, job: Job, sock: socket.socket, origin: Origin) -> socket.socket:
        job.attach(sock)
        sock.settimeout(self.timeouts.connect)
        with self._lock:
            if self._tls is None:
                self._tls = self._make_tls()
            tls = self._tls
            session = self._sessions.get(origin)
        try:
            return tls.wrap_socket(sock, server_hostname=origin[1], session=session)
        except ssl.SSLCertVerificationError as exc:
            raise Untrusted(_address(origin), exc.verify_message or first_line(exc)) from None
        except TimeoutError:
            raise Unreachable(
                f"{_address(origin)} did not complete the TLS handshake (timed out)", transient=True
            ) from None
        except ssl.SSLError as exc:
            raise Unreachable(
                f"the TLS handshake with {_address(origin)} failed ({first_line(exc)})"
            ) from None
        except OSError as exc:
            if job.cancelled.is_set():
                raise Cancelled() from None
            raise Unreachable(
                f"{_address(origin)} broke off the TLS handshake ({exc.strerror or exc})", transient=True
            ) from None

    def _connect(self, job: Job, origin: Origin) -> socket.socket:
        """A connected socket; on Windows a plain connect (its non-blocking connects report
        failures apart from success, which the race below does not watch)."""
        _, host, port = origin
        addresses = self._resolve(host, port)
        if sys.platform == "win32":
            try:
                return socket.create_connection((host, port), timeout=self.timeouts.connect)
            except OSError as exc:
                raise Unreachable(
                    connect_reason(host, port, exc), transient=isinstance(exc, TimeoutError)
                ) from None
        race = _Race(addresses, self._patience(origin), time.monotonic() + self.timeouts.connect)
        try:
            sock, seconds, hedged = race.run(job.cancelled)
        except TimeoutError:
            raise Unreachable(
                f"{host}:{port} did not answer within {self.timeouts.connect:g} s", transient=True
            ) from None
        except OSError as exc:
            raise Unreachable(connect_reason(host, port, exc)) from None
        with self._lock:
            if not hedged:  # a decaying maximum: one slow connect does not set the pace for good
                self._connect_time[origin] = max(seconds, 0.8 * self._connect_time.get(origin, seconds))
        job.report(hedged)
        return sock

    def _patience(self, origin: Origin) -> float:
        with self._lock:
            seconds = self._connect_time.get(origin)
        return FIRST_PATIENCE if seconds is None else min(MAX_PATIENCE, max(MIN_PATIENCE, 3 * seconds))

    def _resolve(self, host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
        with self._lock:
            known = self._addresses.get((host, port))
        if known is None:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError):
                raise Unreachable(f"host {host} cannot be resolved") from None
            known = [(family, address) for family, _, _, _, address in infos]
            with self._lock:
                self._addresses[(host, port)] = known
        return known


class _Digest:
    """A thread that hashes a body's pieces (``sink.digest``) behind the thread receiving them.

    Pieces travel in :data:`DIGEST_BUFFERS` buffers that go round: the receiver takes a free one,
    fills and stores it, and hands it over; the hasher gives it back when done.
    """

    def __init__(
        self, sink: Sink, spare: queue.SimpleQueue[memoryview], slot: threading.BoundedSemaphore
    ) -> None:
        """``spare`` lends the buffers and ``slot`` is held: both are given back by :meth:`close`."""
        self._sink = sink
        self._spare = spare
        self._slot = slot
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        for _ in range(DIGEST_BUFFERS):
            try:
                self._free.put(spare.get_nowait())
            except queue.Empty:
                self._free.put(memoryview(bytearray(BUFFER_SIZE)))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="conda-pixi-pack-digest", daemon=True)
        self._thread.start()

    def buffer(self) -> memoryview:
        return self._free.get()

    def put(self, buffer: memoryview, count: int) -> None:
        self._full.put((buffer, count))

    def give_back(self, buffer: memoryview) -> None:
        """Return a buffer taken with :meth:`buffer` and left unfilled."""
        self._free.put(buffer)

    def close(self, *, raise_error: bool = True) -> None:
        """Wait until every piece handed over is hashed; raise what hashing raised."""
        self._full.put(None)
        self._thread.join()
        while True:  # every buffer is back by now, but the one the receiver may still hold
            try:
                self._spare.put(self._free.get_nowait())
            except queue.Empty:
                break
        self._slot.release()
        if raise_error and self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._full.get()) is not None:
            buffer, count = item
            try:
                if self._error is None:
                    self._sink.digest(buffer[:count])
            except BaseException as exc:  # handed to the receiving thread by close()
                self._error = exc
            finally:
                self._free.put(buffer)


class _Race:
    """Non-blocking connects to an origin's addresses: a new one every ``patience`` seconds while
    none has completed (at most :data:`MAX_RACERS`), the first to complete wins."""

    def __init__(
        self, addresses: list[tuple[int, tuple[object, ...]]], patience: float, deadline: float
    ) -> None:
        self.addresses, self.patience, self.deadline = addresses, patience, deadline
        self.racers: dict[socket.socket, tuple[int, float]] = {}  # socket -> (order, start)
        self.started = 0
        self.error: OSError | None = None

    def run(self, cancelled: threading.Event) -> tuple[socket.socket, float, bool]:
        """The winning socket (blocking again), its connect time, and whether a hedge won."""
        selector = selectors.DefaultSelector()
        next_start = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if cancelled.is_set():
                    raise Cancelled()
                if now >= next_start and self.started < MAX_RACERS:
                    self._start(selector, now)
                    next_start = now + self.patience
                if not self.racers and self.started >= MAX_RACERS:
                    raise self.error or TimeoutError()
                if now >= self.deadline:
                    raise TimeoutError()
                if not self.racers:  # every one failed at once: the next starts now
                    next_start = now
                    continue
                wake = next_start if self.started < MAX_RACERS else self.deadline
                winner = self._wait(selector, max(0.0, min(wake, self.deadline) - now))
                if winner is not None:
                    order, start = self.racers.pop(winner)
                    winner.setblocking(True)
                    return winner, time.monotonic() - start, order > 0
        finally:
            selector.close()
            for sock in self.racers:
                sock.close()

    def _start(self, selector: selectors.BaseSelector, now: float) -> None:
        family, address = self.addresses[self.started % len(self.addresses)]
        order = self.started
        self.started += 1
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in IN_PROGRESS and code != 0:
            sock.close()
            self.error = OSError(code, os.strerror(code))
            return
        self.racers[sock] = (order, now)
        selector.register(sock, selectors.EVENT_WRITE)

    def _wait(self, selector: selectors.BaseSelector, timeout: float) -> socket.socket | None:
        """The earliest-started racer that completed within ``timeout``, if any; failures drop out."""
        ready = [key.fileobj for key, _ in selector.select(min(timeout, CANCEL_POLL))]
        for sock in sorted(ready, key=lambda s: self.racers[s][0]):  # type: ignore[index]
            assert isinstance(sock, socket.socket)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                selector.unregister(sock)
                return sock
            selector.unregister(sock)
            del self.racers[sock]
            sock.close()
            self.error = OSError(code, os.strerror(code))
        return None


def _receive(job: Job, origin: Origin, body: _Body, buffer: memoryview, received: int) -> int:
    """The next piece of the body into ``buffer``; its length, 0 at the end."""
    try:
        return body.readinto(buffer)
    except TimeoutError:
        raise Stalled(_address(origin)) from None
    except (OSError, http.client.HTTPException) as exc:
        if job.cancelled.is_set():
            raise Cancelled() from None
        detail = first_line(exc) or type(exc).__name__
        raise CutShort(f"the connection broke after {received} bytes ({detail})") from None


class _Body:
    """An answer's body, read from its socket straight into the caller's buffer.

    Why not ``response.readinto``: http.client reads through a buffered file over ``SocketIO``,
    and over TLS that is three Python calls under the GIL for every 16 KiB record (a record is
    all one ``SSL_read`` returns). Straight from the socket it is one; an HTTPS pack of the
    benchmark's 391 MB took ~5% less time on 2 cores. Over TLS that one call is the TLS object's
    own ``read``: ``SSLSocket.recv_into`` wraps it in two more Python calls (another ~4%, as the
    24,000 records' threads wait less for each other's GIL). A body without a
    ``Content-Length`` (chunked, or up to the close) is read by http.client, which knows those
    framings.
    """

    def __init__(self, response: http.client.HTTPResponse, sock: socket.socket | None) -> None:
        self._response, self._sock = response, sock
        #: Bytes still to come; None when the framing is http.client's to follow.
        self.left = response.length if sock is not None and not response.chunked else None
        self._started = False
        # ``SSLSocket._sslobj``, there since Python 3.7; without it, ``recv_into`` as for plain sockets
        tls = getattr(sock, "_sslobj", None) if isinstance(sock, ssl.SSLSocket) else None
        self._tls_read: Callable[[int, memoryview], int] | None = tls.read if tls is not None else None

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` as far as the body goes; fewer bytes only at its end or if the
        connection closed early (then :attr:`left` stays above 0)."""
        if self.left is None or self._sock is None:
            return self._response.readinto(buffer)
        want = min(len(buffer), self.left)
        filled = 0
        if not self._started and want:
            # what http.client read past the head is in its buffer: take it first
            self._started = True
            head = self._response.read1(want)
            filled = len(head)
            buffer[:filled] = head
        if self._tls_read is not None:
            filled = _read_tls(self._tls_read, buffer, filled, want)
        else:
            receive = self._sock.recv_into
            while filled < want:
                count = receive(buffer[filled:want])
                if not count:
                    break
                filled += count
        self.left -= filled
        return filled


def _read_tls(read: Callable[[int, memoryview], int], buffer: memoryview, filled: int, want: int) -> int:
    """``buffer`` filled from ``filled`` up to ``want`` with a TLS object's ``read``; how far it
    got. A close without TLS's closing message ends it early, as ``SSLSocket.read`` (ragged
    EOFs suppressed, its default) would."""
    while filled < want:
        try:
            count = read(want - filled, buffer[filled:want])
        except ssl.SSLEOFError:
            break
        if not count:
            break
        filled += count
    return filled


def _address(origin: Origin) -> str:
    return f"{origin[1]}:{origin[2]}"


def connect_reason(host: str, port: int, exc: OSError) -> str:
    """Why a connection to ``host:port`` failed, in the words of every such message."""
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return f"{host}:{port} refused the connection"
    if isinstance(exc, TimeoutError):
        return f"{host}:{port} did not answer (timed out)"
    return f"{host}:{port} is unreachable ({exc.strerror or exc})"


def diagnose(url: str, tls: ssl.SSLContext | None) -> TransferError:
    """Why a request to ``url`` failed, found out by connecting ourselves (rattler's client does
    not say): unresolvable, refusing, silent, an untrusted certificate, or a connection that opens
    and then fails."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return Unreachable(f"{url} cannot be reached")
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower(), 443)
    except ValueError:
        return Unreachable(f"{url} has an invalid port")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return Unreachable(f"host {host} cannot be resolved")
    try:
        sock = socket.create_connection((host, port), timeout=PROBE_TIMEOUT)
    except OSError as exc:
        return Unreachable(connect_reason(host, port, exc))
    try:
        if parts.scheme.lower() == "https" and tls is not None:
            tls.wrap_socket(sock, server_hostname=host).close()
    except ssl.SSLCertVerificationError as exc:
        return Untrusted(f"{host}:{port}", exc.verify_message or first_line(exc))
    except OSError:
        pass  # the connection opened; what failed after it is not for this diagnosis to say
    finally:
        sock.close()
    return Unreachable(f"{host}:{port} accepted a connection but the request failed (closed or timed out)")
