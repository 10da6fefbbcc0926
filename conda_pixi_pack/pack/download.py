"""Verified, parallel, streamed, cached fetching: the standard library's HTTP client where it
can, py-rattler's where it must.

The shapes below are the contract between lockfile.py, download.py and pack.py: fields may be
added (with defaults), not renamed.

Up to ``concurrency.downloads`` threads take the files, largest first (the largest one sets the
end). Each file is streamed to a temp file beside its target while it is hashed (memory does not
grow with file size), verified against the lock, and renamed into place. Two transports
(``transport/``): plain ``http(s)://`` URLs go to ``direct.py`` (``http.client`` and OpenSSL,
in the fetching thread: as fast as curl over TLS, where rattler's client took 2-3x as long);
everything that needs one of rattler's middlewares or settings (credentials, proxies, several
mirrors, S3/GCS/OCI, webpki roots: ``route.py`` decides) goes through py-rattler's client, as
does any URL whose direct request met a 4xx (rattler asks again with whatever credentials it
finds, keyring included, and its answer is the one reported). Per server, a ramp (``ramp.py``)
starts a few transfers and adds more while the server answers.

On top of both this module retries what they do not (a body cut short, a stalled transfer, a
checksum mismatch once), says the first silence of each host as a warning, and turns failures
into one-line :class:`PackError` s. Timeouts come from ``--config`` (see :func:`load_limits`).
The first failure, or Ctrl-C, stops every transfer, and each thread removes its temp file
before the error is raised.

Nothing heavy is imported for a pack whose every file is a stamped cache hit: the transports
(``ssl``, ``http.client``; ``asyncio`` only with rattler's client) are imported on first use.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

from conda_pixi_pack import __version__
from conda_pixi_pack.artifacts import Artifact, Hasher
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.fileio import CHUNK_SIZE, remove_uninterrupted
from conda_pixi_pack.pack.cache import Cache
from conda_pixi_pack.pack.destination import Destination, FileAttempt, FolderDestination
from conda_pixi_pack.pack.transport.settings import (
    AUTH_FILE_ENV,
    CONNECT_TIMEOUT_KEY,
    MAX_RETRIES_KEY,
    READ_TIMEOUT_KEY,
    NetworkSettings,
    auth_file,
    load_config,
    load_limits,
)
from conda_pixi_pack.pack.urls import public_url
from conda_pixi_pack.progress import Reporter, plural

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

    from rattler import Config

    from conda_pixi_pack.pack.destination import Attempt
    from conda_pixi_pack.pack.transport.direct import Direct, Job, TransferError
    from conda_pixi_pack.pack.transport.ramp import Gate, Ramp
    from conda_pixi_pack.pack.transport.rattler_client import RattlerClient
    from conda_pixi_pack.pack.transport.route import Router
    from conda_pixi_pack.progress import Task

#: Parallel transfers when the config has no ``concurrency.downloads`` (rattler's default too).
DEFAULT_CONCURRENCY: Final = 50
#: Attempts per file whose bytes arrive complete but do not match the lock.
CHECKSUM_ATTEMPTS: Final = 2
#: First pause between our attempts (seconds), doubled after each.
BACKOFF_SECONDS: Final = 0.25
#: Seconds the GIL is left to py-rattler's runtime threads after the downloads (see fetch_all).
RUNTIME_GRACE: Final = 0.05
#: Hint for every 401/403.
AUTH_HINT: Final = f"give credentials with `--auth-file FILE` or the {AUTH_FILE_ENV} environment variable"
#: Hint for a server that cannot be reached.
NETWORK_HINT: Final = "check the URL, the network, and the mirrors and proxy in `--config`"
#: Hint for a certificate that failed verification (checksums from the lock are checked either way).
TLS_HINT: Final = (
    "trust the server's CA with SSL_CERT_FILE=/path/to/ca.pem, or, for a server you trust, set "
    "`tls-no-verify = true` in a config file given with `--config` (every package is still checked "
    "against the lock's sha256)"
)


#: An attempt of either kind (a temp file, an archive slot).
A = TypeVar("A", bound="Attempt")


class _Retry(Exception):
    """A failure worth another attempt; ``error`` is what to raise when attempts run out."""

    def __init__(self, error: PackError, silence: tuple[str, str] | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        #: For a server that said nothing (a stall, a connect timeout): ``(host, what)``; the
        #: first on each host is a warning, since a silent minute looks like a hang.
        self.silence = silence


class _ChecksumMismatch(_Retry):
    pass


def fetch_all(
    artifacts: list[Artifact],
    destination: Path | Destination,
    *,
    network: NetworkSettings,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Path]:
    """Fetch every artifact, verified, to ``destination / relative_path`` (a folder) or into its
    slot of an archive (a :class:`~conda_pixi_pack.pack.destination.SlotDestination`); returns
    the paths of the files (none for slots).

    Raises PackError naming the artifact on 404, 401/403 (hint: ``--auth-file``), checksum
    mismatch (both hashes), unreachable host. Never leaves a partial file at a final path.
    """
    reporter = reporter or Reporter()
    unique = _unique(artifacts)
    config = load_config(network)
    cache = Cache(cache_dir) if cache_dir is not None else None
    if isinstance(destination, (str, os.PathLike)):
        destination = FolderDestination(Path(destination))
    fetcher = _Fetcher(config, destination, network, cache, reporter)
    sizes = [a.size for a in unique]
    task = reporter.task("Fetching packages", sum(s for s in sizes if s) if all(sizes) else None, unit="B")
    fetcher.task = task
    try:
        done: set[str] = set()
        if cache is not None:
            cacheable = [a for a in unique if _cacheable(a)]
            done = _take_trusted(cacheable, destination, cache, task, reporter)
        rest = [a for a in unique if a.relative_path not in done]
        if rest:
            try:
                fetcher.run(rest)
            finally:
                # py-rattler's runtime threads still hold Python objects (the client, finished
                # futures) for a moment after the downloads resolve, and need the GIL to drop
                # them; if the interpreter finalizes meanwhile, CPython aborts ("PyGILState_Release
                # ... finalizing"). Dropping the client and yielding the GIL briefly lets them
                # finish. Measured here: 7 in 60 processes exiting right after 40 parallel
                # downloads crashed without this, none in 80 with it. Not needed when rattler's
                # client was never made (every file came through the direct transport).
                if fetcher.release():
                    time.sleep(RUNTIME_GRACE)
    finally:
        task.done()
    return {a.relative_path: path for a in artifacts if (path := destination.path(a)) is not None}


def _cacheable(artifact: Artifact) -> bool:
    """Only a file the lock pins by checksum can be looked up by name; a local file is as cheap
    to copy as a cache hit (and may change under the same name)."""
    return bool(artifact.sha256 or artifact.md5) and urlsplit(artifact.url).scheme.lower() != "file"


def _take_trusted(
    artifacts: list[Artifact], destination: Destination, cache: Cache, task: Task, reporter: Reporter
) -> set[str]:
    """Put every stamped cache hit into ``destination`` now, in this thread; returns their
    relative paths.

    A stamped hit costs a stat, a small read and a link (or a kernel copy into its slot): far
    less than a hop to a worker thread and back, which made up most of a warm pack's fetch.
    Anything else (a miss, an unstamped or stale entry to hash) is left to the parallel fetcher.
    """
    done: set[str] = set()
    for artifact in artifacts:
        trusted = cache.trusted(artifact)
        if trusted is None:
            continue
        hit, vouched = trusted
        try:
            # False when another pack replaced or discarded the entry meanwhile: the fetcher will see
            if not destination.take(artifact, hit, vouched):
                continue
        except OSError as exc:  # the copy does not fit (a full disk)
            raise cannot_gather(destination.location(artifact), exc) from exc
        task.advance(artifact.size or vouched.st_size)
        reporter.debug(f"cached {artifact.label}: {hit}")
        done.add(artifact.relative_path)
    return done


def cannot_gather(folder: Path, exc: OSError) -> PackError:
    """A write into the folder where the packages are gathered failed: said as such (a full
    disk is no network error, and retrying does not help)."""
    return PackError(
        f"cannot write {folder}: {exc.strerror or exc}",
        "free some space there, or choose another output with -o (the packages are gathered beside it first)",
    )


def _unique(artifacts: list[Artifact]) -> list[Artifact]:
    """One artifact per relative path; the same path with other hashes is a broken lock."""
    seen: dict[str, Artifact] = {}
    for artifact in artifacts:
        _check_relative(artifact.relative_path)
        other = seen.setdefault(artifact.relative_path, artifact)
        if other is not artifact and (other.sha256, other.md5) != (artifact.sha256, artifact.md5):
            raise PackError(
                f"{artifact.relative_path} is listed twice with different checksums "
                f"({other.label} and {artifact.label})",
                "run `pixi lock` again",
            )
    return list(seen.values())


def _check_relative(relative_path: str) -> None:
    parts = PurePosixPath(relative_path).parts
    if (
        len(parts) != 2
        or relative_path.startswith("/")
        or "\\" in relative_path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise PackError(f"refusing to write {relative_path!r}: not a <folder>/<file> name")


class _Writer:
    """The sink of a transfer: hashes, counts for the byte bar, and writes.

    Transfers call ``write`` from their own threads (rattler's runtime, the direct transport's);
    once ``close`` ran (cancellation), writes fail so that a transfer still in flight stops
    instead of writing into a deleted file.
    """

    def __init__(self, attempt: Attempt, artifact: Artifact, task: Task) -> None:
        self._stream = attempt
        self._lock = threading.Lock()
        self.hasher = Hasher(artifact)
        self.task = task
        self.last_activity = time.monotonic()
        #: The local error of a failed write (a full disk): transports may word it as their own
        #: failure (rattler's client does), so it is kept here to be told as what it is.
        self.write_error: OSError | None = None
        #: Called once, when the first byte arrives (rattler's transfers: see the ramp).
        self.on_first_byte: Callable[[], None] | None = None

    def write(self, data: bytes | memoryview) -> int:
        """Store and hash one piece (rattler's transfers, local copies)."""
        self.store(data)
        self.digest(data)
        return len(data)

    def store(self, data: bytes | memoryview) -> None:
        """Write one piece to the file and count it."""
        with self._lock:
            if self._stream.closed:
                raise OSError("download cancelled")
            try:
                self._stream.write(data)
            except OSError as exc:
                self.write_error = exc
                raise
        self.last_activity = time.monotonic()
        self.task.advance(len(data))
        if self.on_first_byte is not None:
            first, self.on_first_byte = self.on_first_byte, None
            first()

    def digest(self, data: bytes | memoryview) -> None:
        """Hash one piece (after it was stored; the direct transport may do it in another thread)."""
        self.hasher.update(data)

    def close(self) -> None:
        with self._lock:
            self._stream.close()

    @property
    def closed(self) -> bool:
        return self._stream.closed


class _Stop(Exception):
    """The fetch is being stopped (another file failed, or Ctrl-C): this transfer gives up."""


class _Fetcher:
    """Fetches artifacts in worker threads (up to the cap), the largest first: it sets the end."""

    def __init__(
        self,
        config: Config,
        destination: Destination,
        network: NetworkSettings,
        cache: Cache | None,
        reporter: Reporter,
    ) -> None:
        self.config = config
        self.destination = destination
        self.network = network
        self.limits = load_limits(network)
        self.cache = cache
        self.reporter = reporter
        self.task: Task
        self.cap = config.concurrency_downloads or DEFAULT_CONCURRENCY
        self.user_agent = f"conda-pixi-pack/{__version__}"
        self._router: Router | None = None
        self._direct: Direct | None = None
        self._rattler: RattlerClient | None = None
        self._ramp: Ramp | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        #: Set once a file failed or the user interrupted: every transfer stops.
        self._stop = threading.Event()
        #: Worker threads still running, and the condition they signal when they end.
        self._running = 0
        self._finished = threading.Condition()
        self._jobs: set[Job] = set()
        self._failure: BaseException | None = None
        #: Origins whose direct requests met a 4xx: rattler's client serves them from then on.
        self._rattler_only: set[str] = set()
        #: Hosts whose first silence (stall, connect timeout) was already said as a warning.
        self._silent: set[str] = set()

    # -- the parts, made on first use -----------------------------------------------------------
    @property
    def router(self) -> Router:
        """Made on first use: a pack of cache hits reads no credentials file or netrc."""
        with self._lock:
            if self._router is None:
                from conda_pixi_pack.pack.transport.route import DEFAULT_CREDENTIALS, Router

                auth_files = [f for f in (auth_file(self.network, self.config), DEFAULT_CREDENTIALS) if f]
                self._router = Router.from_config(self.config, auth_files)
            return self._router

    @property
    def direct(self) -> Direct:
        with self._lock:
            if self._direct is None:
                from conda_pixi_pack.pack.transport.direct import Direct, Timeouts

                self._direct = Direct(
                    Timeouts(connect=self.limits.connect, read=self.limits.read),
                    self._tls,
                    user_agent=self.user_agent,
                    retries=self.network.retries,
                    backoff=BACKOFF_SECONDS,
                )
            return self._direct

    @property
    def rattler(self) -> RattlerClient:
        with self._lock:
            if self._rattler is None:
                from conda_pixi_pack.pack.transport.rattler_client import RattlerClient

                self._rattler = RattlerClient(
                    self.config,
                    retries=self.network.retries,
                    user_agent=self.user_agent,
                    read_timeout=self.limits.read,
                )
            return self._rattler

    def _tls(self) -> ssl.SSLContext:
        """The TLS settings of ``--config`` for Python's OpenSSL: the system's trust store
        (``SSL_CERT_FILE``/``SSL_CERT_DIR`` override it, as for rattler), or none with
        ``tls-no-verify``."""
        import ssl

        with self._lock:
            if self._tls_context is None:
                context = ssl.create_default_context()
                if self.config.tls_no_verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                context.set_alpn_protocols(["http/1.1"])
                self._tls_context = context
            return self._tls_context

    def gate(self, url: str) -> Gate:
        with self._lock:
            if self._ramp is None:
                from conda_pixi_pack.pack.transport.ramp import CpuMeter, Ramp

                self._ramp = Ramp(self.cap, meter=CpuMeter())
            ramp = self._ramp
        return ramp.gate(_origin(url))

    def release(self) -> bool:
        """Close the transports; True if rattler's client was made."""
        if self._direct is not None:
            self._direct.close()
        return self._rattler is not None and self._rattler.close()

    # -- the worker threads --------------------------------------------------------------------
    def run(self, artifacts: list[Artifact]) -> None:
        """Fetch ``artifacts`` (largest first) with up to ``cap`` threads; the first failure stops
        the others (and is raised), as Ctrl-C does. Returns when every thread has cleaned up.

        The threads are awaited through a counter, not ``Thread.join``: a join interrupted by
        Ctrl-C marks its thread as finished before Python 3.13 (gh-90882), and a second join
        would return while the thread still removes its temp file.
        """
        import queue

        todo: queue.SimpleQueue[Artifact] = queue.SimpleQueue()
        for artifact in sorted(artifacts, key=lambda a: -(a.size or 0)):
            todo.put(artifact)
        self._running = 0
        try:
            for _ in range(min(self.cap, len(artifacts))):
                with self._finished:
                    self._running += 1
                threading.Thread(
                    target=self._work, args=(todo,), name="conda-pixi-pack-fetch", daemon=True
                ).start()
            self._wait_for_workers()
        except BaseException:  # Ctrl-C: stop the transfers, and let each remove its temp file
            self._halt()
            if remove_uninterrupted(self._wait_for_workers):
                raise KeyboardInterrupt from None
            raise
        if self._failure is not None:
            raise self._failure

    def _wait_for_workers(self) -> None:
        with self._finished:
            while self._running:
                self._finished.wait()

    def _work(self, todo: Any) -> None:
        try:
            self._fetch_queued(todo)
        finally:
            with self._finished:
                self._running -= 1
                self._finished.notify_all()

    def _fetch_queued(self, todo: Any) -> None:
        import queue

        while not self._stop.is_set():
            try:
                artifact = todo.get_nowait()
            except queue.Empty:
                return
            try:
                self.fetch(artifact)
            except _Stop:
                return
            except BaseException as exc:  # the first failure is the one the user sees
                with self._lock:
                    if self._failure is None:
                        self._failure = exc
                self._halt()
                return

    def _halt(self) -> None:
        """Stop every transfer: those in the direct transport's sockets return at once."""
        self._stop.set()
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.abort()

    def _pause(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stop()

    # -- one artifact ---------------------------------------------------------------------------
    def fetch(self, artifact: Artifact) -> None:
        """``artifact`` verified at its place in the destination; a local write that fails there
        (a full disk) is said as such, never as a network error."""
        try:
            self._fetch(artifact)
        except OSError as exc:  # PackErrors (network, checksums, the cache) are not OSErrors
            raise cannot_gather(self.destination.location(artifact), exc) from exc

    def _fetch(self, artifact: Artifact) -> None:
        if self.cache is None or not _cacheable(artifact):
            self.download(artifact, lambda: self.destination.attempt(artifact)).keep()
            return
        hit = self.cache.lookup(artifact)
        if hit is not None and self.destination.take(artifact, hit):
            self.task.advance(artifact.size or hit.stat().st_size)
            self.reporter.debug(f"cached {artifact.label}: {hit}")
            return
        entry = self.cache.entry(artifact)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            attempt = self.download(artifact, lambda: FileAttempt(entry))
        except OSError as exc:  # PackErrors (network, checksums) are not OSErrors: pass through
            raise self._cache_error(exc) from exc
        try:
            # Into the pack before publishing: the pack never depends on the entry staying.
            self.destination.put(artifact, attempt.temp)
            try:
                self.cache.add(attempt.temp, artifact)
            except OSError as exc:
                raise self._cache_error(exc) from exc
        finally:
            attempt.temp.unlink(missing_ok=True)

    def _cache_error(self, exc: OSError) -> PackError:
        assert self.cache is not None
        return PackError(
            f"cannot write into the cache {self.cache.root}: {exc.strerror or exc}",
            "make it writable (or free some space there), or pack without --use-cache",
        )

    def download(self, artifact: Artifact, begin: Callable[[], A]) -> A:
        """A verified, closed attempt at ``artifact`` (``begin`` starts each one); the caller keeps it."""
        attempts = checksum_attempts = 0
        delay = BACKOFF_SECONDS
        while True:
            attempt = begin()
            writer = _Writer(attempt, artifact, self.task)
            try:
                self._transfer(artifact, writer)
                writer.close()
                problem = writer.hasher.mismatch()
                if problem is not None:
                    raise _ChecksumMismatch(
                        PackError(
                            f"checksum mismatch for {artifact.label} ({public_url(artifact.url)}): {problem}",
                            "the file differs from the one locked; check mirrors, or run `pixi lock` again",
                        )
                    )
                unverified = "" if artifact.sha256 or artifact.md5 else " (no checksum in the lock)"
                self.reporter.debug(f"fetched {artifact.label}: {public_url(artifact.url)}{unverified}")
                return attempt
            except _Retry as retry:
                writer.close()
                attempt.drop()
                self.task.advance(-writer.hasher.size)
                if writer.write_error is not None:  # not the network's fault: no retry
                    raise writer.write_error from None
                if isinstance(retry, _ChecksumMismatch):
                    checksum_attempts += 1
                    exhausted = checksum_attempts >= CHECKSUM_ATTEMPTS
                else:
                    attempts += 1
                    exhausted = attempts >= self.limits.attempts
                if exhausted:
                    raise retry.error from None
                self._say_retry(artifact, retry, attempts)
                self._pause(delay)
                delay *= 2
            except BaseException:
                writer.close()
                attempt.drop()
                if writer.write_error is not None:
                    raise writer.write_error from None
                raise

    def _say_retry(self, artifact: Artifact, retry: _Retry, attempt: int) -> None:
        """The first silence of each host is a warning (``-q`` included); the rest, and every
        other retry, are details for ``-v``."""
        if retry.silence is not None:
            host, what = retry.silence
            with self._lock:
                first = host not in self._silent
                self._silent.add(host)
            if first:
                self.reporter.warn(f"{what}, retrying ({attempt}/{self.limits.attempts - 1})")
        self.reporter.debug(f"retrying {artifact.label}: {retry.error.message}")

    def _transfer(self, artifact: Artifact, writer: _Writer) -> None:
        """One attempt, through the direct transport where the router allows, else rattler's."""
        from conda_pixi_pack.pack.transport.ramp import Stopped

        if urlsplit(artifact.url).scheme.lower() == "file":
            _copy_local(artifact, writer)
            return
        url = self.router.direct_url(artifact.url)
        try:
            if url is not None and _origin(url) not in self._rattler_only:
                gate = self.gate(url)
                with gate.slot(self._stop) as epoch:
                    error = self._direct_transfer(url, artifact, writer, gate, epoch)
                if error is None:
                    return
                if not isinstance(error, _Fallback):
                    raise error
            gate = self.gate(artifact.url)
            with gate.slot(self._stop):
                self._rattler_transfer(artifact, writer, gate)
        except Stopped:
            raise _Stop() from None

    def _direct_transfer(
        self, url: str, artifact: Artifact, writer: _Writer, gate: Gate, epoch: int
    ) -> Exception | None:
        """Fetch through the direct transport; the error to raise (a :class:`_Fallback` when
        rattler's client should have the URL), or None."""
        from conda_pixi_pack.pack.transport.direct import Cancelled, Job, TransferError

        job = Job(url, writer, lambda stalled: gate.opened(epoch, stalled), gate.answered)
        with self._lock:
            self._jobs.add(job)
        try:
            if self._stop.is_set():
                raise _Stop()
            self.direct.fetch(job)
        except Cancelled:
            raise _Stop() from None
        except TransferError as exc:
            return self._error(exc, artifact, url, direct=True)
        finally:
            with self._lock:
                self._jobs.discard(job)
        return None

    def _rattler_transfer(self, artifact: Artifact, writer: _Writer, gate: Gate) -> None:
        """Through rattler's client. Its first byte counts as an answer (it grows the server's
        ramp); nothing shrinks it, since rattler's connections cannot be seen."""
        from conda_pixi_pack.pack.transport.direct import Cancelled, TransferError

        writer.on_first_byte = gate.answered
        try:
            self.rattler.fetch(
                artifact.url,
                writer,
                last_activity=lambda: writer.last_activity,
                stop=self._stop,
                tls=self._tls,
            )
        except Cancelled:
            raise _Stop() from None
        except TransferError as exc:
            raise self._error(exc, artifact, artifact.url, direct=False) from None

    def _error(self, exc: TransferError, artifact: Artifact, url: str, *, direct: bool) -> Exception:
        """A transport's failure as a PackError, a _Retry, or (direct 4xx) a _Fallback to rattler."""
        from conda_pixi_pack.pack.transport import direct as transport
        from conda_pixi_pack.pack.transport.rattler_client import CredentialsError

        label, shown = artifact.label, public_url(url)
        if isinstance(exc, transport.HttpStatus):
            if direct and 400 <= exc.code < 500:
                # Credentials kept where we cannot look (the keyring), or a server that hides
                # private files behind 404: rattler's client asks again, and its answer counts.
                with self._lock:
                    self._rattler_only.add(_origin(url))
                return _Fallback()
            return self._status_error(exc.code, public_url(exc.url), label)
        if isinstance(exc, transport.Stalled):
            return self._stall(artifact, exc.address)
        if isinstance(exc, transport.CutShort):
            return _Retry(
                PackError(
                    f"download of {label} from {shown} failed: {exc}",
                    "the connection broke off repeatedly; check the network or proxy and try again",
                )
            )
        if isinstance(exc, CredentialsError):
            return PackError(str(exc), f"fix the file given with `--auth-file` or {AUTH_FILE_ENV}")
        if isinstance(exc, transport.Untrusted):
            return PackError(f"cannot download {label}: {exc.reason}", TLS_HINT)
        if isinstance(exc, transport.Unreachable):
            if not exc.transient:
                return PackError(f"cannot download {label}: {exc.reason}", NETWORK_HINT)
            host = urlsplit(shown).netloc
            return _Retry(
                PackError(
                    f"cannot download {label}: {exc.reason}",
                    f"{NETWORK_HINT}; to wait longer for a connection, set {CONNECT_TIMEOUT_KEY} "
                    f"(seconds, now {self.limits.connect:g}) in the file given with `--config`",
                ),
                silence=(host, exc.reason),
            )
        return PackError(f"cannot download {label} from {shown}: {exc}", NETWORK_HINT)

    def _status_error(self, code: int, url: str, label: str) -> PackError:
        if code in (401, 403):
            return PackError(f"access denied (HTTP {code}) to {url} for {label}", self._auth_hint(url))
        if code in (404, 410):
            return PackError(
                f"{label} not found (HTTP {code}): {url}",
                "check the channel and the mirrors in `--config`, or run `pixi lock` again",
            )
        return PackError(f"HTTP {code} downloading {label} from {url}", "try again later")

    def _stall(self, artifact: Artifact, host: str) -> _Retry:
        seconds, attempts = self.limits.read, self.limits.attempts
        return _Retry(
            PackError(
                f"timed out downloading {artifact.label}: no data from {host} for {seconds:g} s "
                f"({plural(attempts, 'attempt')})",
                f"check the server, the network, and the mirrors and proxy in `--config`; to wait "
                f"longer, set {READ_TIMEOUT_KEY} (seconds, now {seconds:g}) or {MAX_RETRIES_KEY} in the "
                "file given with `--config`",
            ),
            silence=(host, f"no data from {host} for {seconds:g} s"),
        )

    def _auth_hint(self, url: str) -> str:
        """Where to give credentials, or, when a credentials file was given, to check it."""
        given = self.network.auth_file or os.environ.get(AUTH_FILE_ENV)
        if not given:
            return AUTH_HINT
        host = urlsplit(url).hostname or url
        return f"check the credentials for {host} in {given} (they were sent and refused)"


class _Fallback(Exception):
    """The direct transport gives this URL up to rattler's client."""


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: the unit of the ramp and of the fallback to rattler."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"https": 443, "http": 80}.get(scheme)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port or default}"


def _copy_local(artifact: Artifact, writer: _Writer) -> None:
    """Stream a ``file://`` artifact through the writer (hashing and progress as for HTTP)."""
    from urllib.request import url2pathname

    parts = urlsplit(artifact.url)
    path = Path(url2pathname(parts.path))
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(CHUNK_SIZE):
                writer.write(chunk)
    except FileNotFoundError:
        raise PackError(
            f"{artifact.label}: {path} does not exist",
            "the lock refers to a local file (relative to the lock); put it back or run `pixi lock`",
        ) from None
    except IsADirectoryError:
        raise PackError(f"{artifact.label}: {path} is a folder, not a package file") from None
    except OSError as exc:
        if writer.closed:  # cancelled: the caller is already unwinding
            raise
        raise PackError(f"{artifact.label}: {path} cannot be read: {exc.strerror or exc}") from None
