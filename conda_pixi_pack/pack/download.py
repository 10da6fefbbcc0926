"""Verified, parallel, streamed, cached fetching through py-rattler's HTTP client.

The shapes below are the contract between lockfile.py, download.py and pack.py: fields may be
added (with defaults), not renamed.

rattler's client brings authentication (``--auth-file``, ``RATTLER_AUTH_FILE``, keyring, netrc),
mirrors, S3/GCS/OCI, proxies, TLS settings and retries of 5xx answers and failed connections.
On top of it this module streams each body to a temp file beside its target while hashing it
(memory does not grow with file size), verifies it against the lock, retries what rattler cannot
(a body cut short, a stalled transfer, a checksum mismatch once), and turns failures into one-line
:class:`PackError` s.

``asyncio`` and ``urllib.request`` (~35 ms to import together) are imported where they are
used: a pack whose every file is a stamped cache hit never starts an event loop, and that
time is a tenth of such a pack.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from conda_pixi_pack import __version__
from conda_pixi_pack.artifacts import Artifact, Hasher, file_mismatch
from conda_pixi_pack.errors import PackError, first_line
from conda_pixi_pack.fileio import CHUNK_SIZE, create_new, place, temp_path
from conda_pixi_pack.pack.cache import Cache, stamp_matches
from conda_pixi_pack.pack.urls import public_url
from conda_pixi_pack.progress import Reporter

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from rattler import Client, Config

    from conda_pixi_pack.progress import Task

#: Parallel transfers when the config has no ``concurrency.downloads`` (rattler's default too).
DEFAULT_CONCURRENCY: Final = 50
#: Retries rattler's RetryMiddleware makes (5xx answers, failed connections) inside one attempt.
CLIENT_RETRIES: Final = 3
#: Our attempts per file for what rattler does not retry: cut bodies, stalls, local read errors.
ATTEMPTS: Final = 4
#: Attempts per file whose bytes arrive complete but do not match the lock.
CHECKSUM_ATTEMPTS: Final = 2
#: First pause between our attempts (seconds), doubled after each.
BACKOFF_SECONDS: Final = 0.25
#: Seconds to wait when probing a host that rattler could not reach (for the error message).
PROBE_TIMEOUT: Final = 3.0
#: Seconds the GIL is left to py-rattler's runtime threads after the downloads (see fetch_all).
RUNTIME_GRACE: Final = 0.05
#: Environment variable that rattler's AuthenticationMiddleware reads.
AUTH_FILE_ENV: Final = "RATTLER_AUTH_FILE"
#: rattler's message for an HTTP error status: ``HTTP status client error (404 Not Found) for url (…)``.
STATUS_RE: Final = re.compile(r"HTTP status \w+ error \((\d{3})[^)]*\) for url \((.*)\)")
#: rattler's messages when no answer came at all (after its own retries).
CONNECTION_MARKERS: Final = ("error sending request", "Request failed after")
#: Hint for every 401/403.
AUTH_HINT: Final = f"give credentials with `--auth-file FILE` or the {AUTH_FILE_ENV} environment variable"


@dataclass(frozen=True)
class NetworkSettings:
    """What configures the client: ``--auth-file`` and ``--config`` (pixi/rattler TOML)."""

    auth_file: Path | None = None
    config_file: Path | None = None
    #: An attempt that receives no byte for this long is abandoned (and retried).
    stall_timeout: float = 120.0
    #: Our attempts per file for transient failures (rattler's own retries come on top).
    attempts: int = ATTEMPTS
    #: rattler's retries of 5xx answers and failed connections within one attempt.
    retries: int = CLIENT_RETRIES


class _Retry(Exception):
    """A failure worth another attempt; ``error`` is what to raise when attempts run out."""

    def __init__(self, error: PackError) -> None:
        super().__init__(error.message)
        self.error = error


class _ChecksumMismatch(_Retry):
    pass


def load_config(network: NetworkSettings) -> Config:
    """The rattler config from ``--config`` (or defaults), with ``--auth-file`` as override file."""
    from rattler import Config

    config = Config()
    if network.config_file is not None:
        path = Path(network.config_file)
        if not path.is_file():
            raise PackError(f"config file {path} does not exist", "give a pixi/rattler config.toml")
        try:
            config = Config.load_from_files([path])
        except Exception as exc:  # rattler.exceptions.ConfigError
            raise PackError(f"cannot read config file {path}: {first_line(exc)}") from exc
    auth_file = network.auth_file
    if auth_file is not None:
        config.set("authentication-override-file", json.dumps(str(Path(auth_file).resolve())))
    else:
        env_file = os.environ.get(AUTH_FILE_ENV) or config.authentication_override_file
        auth_file = Path(env_file) if env_file else None
    # rattler silently ignores a missing credentials file; a typo would surface as a 401 later.
    if auth_file is not None and not Path(auth_file).is_file():
        raise PackError(
            f"authentication file {auth_file} does not exist",
            f"check `--auth-file`, {AUTH_FILE_ENV} or authentication-override-file",
        )
    return config


def fetch_all(
    artifacts: list[Artifact],
    destination: Path,
    *,
    network: NetworkSettings,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Path]:
    """Fetch every artifact to ``destination / relative_path``, verified; returns those paths.

    Raises PackError naming the artifact on 404, 401/403 (hint: ``--auth-file``), checksum
    mismatch (both hashes), unreachable host. Never leaves a partial file at a final path.
    """
    reporter = reporter or Reporter()
    unique = _unique(artifacts)
    config = load_config(network)
    cache = Cache(cache_dir) if cache_dir is not None else None
    fetcher = _Fetcher(config, Path(destination), network, cache, reporter)
    sizes = [a.size for a in unique]
    task = reporter.task("Fetching packages", sum(s for s in sizes if s) if all(sizes) else None, unit="B")
    fetcher.task = task
    try:
        paths = {}
        if cache is not None:
            cacheable = [a for a in unique if _cacheable(a)]
            paths = _take_trusted(cacheable, Path(destination), cache, task, reporter)
        rest = [a for a in unique if a.relative_path not in paths]
        if rest:
            import asyncio

            try:
                paths.update(asyncio.run(fetcher.run(rest)))
            finally:
                # py-rattler's runtime threads still hold Python objects (the client, finished
                # futures) for a moment after the downloads resolve, and need the GIL to drop
                # them; if the interpreter finalizes meanwhile, CPython aborts ("PyGILState_Release
                # ... finalizing"). Dropping the client and yielding the GIL briefly lets them
                # finish. Measured here: 7 in 60 processes exiting right after 40 parallel
                # downloads crashed without this, none in 80 with it.
                fetcher.release()
                time.sleep(RUNTIME_GRACE)
    finally:
        task.done()
    return {a.relative_path: paths[a.relative_path] for a in artifacts}


def _cacheable(artifact: Artifact) -> bool:
    """Only a file the lock pins by checksum can be looked up by name; a local file is as cheap
    to copy as a cache hit (and may change under the same name)."""
    return bool(artifact.sha256 or artifact.md5) and urlsplit(artifact.url).scheme.lower() != "file"


def _take_trusted(
    artifacts: list[Artifact], destination: Path, cache: Cache, task: Task, reporter: Reporter
) -> dict[str, Path]:
    """Link every stamped cache hit into ``destination`` now, in this thread.

    A stamped hit costs a stat, a small read and a link: far less than a hop to a worker
    thread and back, which made up most of a warm pack's fetch. Anything else (a miss, an
    unstamped or stale entry to hash) is left to the parallel fetcher.
    """
    paths: dict[str, Path] = {}
    folders: set[Path] = set()
    for artifact in artifacts:
        hit = cache.trusted(artifact)
        if hit is None:
            continue
        target = destination / artifact.relative_path
        if target.parent not in folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            folders.add(target.parent)
        try:
            try:
                # A plain link: nobody else looks into our fresh destination, so the temp
                # name and rename that place() uses for atomicity are not needed here.
                os.link(hit, target)
            except FileNotFoundError:
                raise
            except OSError:  # across devices, or links not allowed: place() copies
                place(hit, target)
        except FileNotFoundError:  # another pack discarded it meanwhile: the fetcher will see
            continue
        if not _still_verified(hit, artifact, target):
            continue
        task.advance(artifact.size or target.stat().st_size)
        reporter.debug(f"cached {artifact.label}: {hit}")
        paths[artifact.relative_path] = target
    return paths


def _still_verified(entry: Path, artifact: Artifact, linked: Path) -> bool:
    """Whether the file linked from ``entry`` is the one its stamp vouches for.

    Another pack may replace the entry between its check and our link; the link shares the inode
    it got, so comparing that inode with the stamp closes the gap. A copy (across devices) has an
    inode of its own and is hashed instead. Anything that fails is removed: the fetcher takes over.
    """
    try:
        if stamp_matches(entry, artifact, linked.stat()) or file_mismatch(linked, artifact) is None:
            return True
    except FileNotFoundError:
        return False
    linked.unlink(missing_ok=True)
    return False


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
    """The sink for ``download_to_writer``: hashes, counts for the byte bar, and writes.

    rattler calls ``write`` from its own threads; once ``close`` ran (cancellation), writes fail so
    that a transfer still in flight stops instead of writing into a deleted file.
    """

    def __init__(self, path: Path, artifact: Artifact, task: Task) -> None:
        self._stream = os.fdopen(create_new(path), "wb")
        self._lock = threading.Lock()
        self.hasher = Hasher(artifact)
        self.task = task
        self.last_activity = time.monotonic()

    def write(self, data: bytes) -> int:
        with self._lock:
            if self._stream.closed:
                raise OSError("download cancelled")
            self._stream.write(data)
            self.hasher.update(data)
        self.last_activity = time.monotonic()
        self.task.advance(len(data))
        return len(data)

    def close(self) -> None:
        with self._lock:
            self._stream.close()

    @property
    def closed(self) -> bool:
        return self._stream.closed


class _Fetcher:
    def __init__(
        self,
        config: Config,
        destination: Path,
        network: NetworkSettings,
        cache: Cache | None,
        reporter: Reporter,
    ) -> None:
        self.config = config
        self.destination = destination
        self.network = network
        self.cache = cache
        self.reporter = reporter
        self.task: Task
        self._client: Client | None = None

    def release(self) -> None:
        """Drop the client (and its connection pool) before the grace period starts."""
        self._client = None

    @property
    def client(self) -> Client:
        if self._client is None:
            from rattler import Client

            try:
                self._client = Client.from_config(
                    self.config, max_retries=self.network.retries, user_agent=f"conda-pixi-pack/{__version__}"
                )
            except Exception as exc:  # AuthenticationStorageError, bad TLS/proxy settings
                raise PackError(f"cannot set up downloads: {first_line(exc)}") from exc
        return self._client

    async def run(self, artifacts: list[Artifact]) -> dict[str, Path]:
        import asyncio

        limit = asyncio.Semaphore(self.config.concurrency_downloads or DEFAULT_CONCURRENCY)

        async def one(artifact: Artifact) -> tuple[str, Path]:
            async with limit:
                return artifact.relative_path, await self.fetch(artifact)

        tasks = [asyncio.ensure_future(one(a)) for a in artifacts]
        try:
            if tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                failed = [t for t in done if not t.cancelled() and t.exception() is not None]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
            return dict(t.result() for t in tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def fetch(self, artifact: Artifact) -> Path:
        import asyncio

        target = self.destination / artifact.relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.cache is None or not _cacheable(artifact):
            temp = await self.download(artifact, target)
            os.replace(temp, target)
            return target
        hit = await asyncio.to_thread(self.cache.lookup, artifact)
        if hit is not None:
            try:
                await asyncio.to_thread(place, hit, target)
            except FileNotFoundError:  # another pack discarded it meanwhile: fetch it again
                hit = None
            else:
                if not _still_verified(hit, artifact, target):
                    hit = None
            if hit is not None:
                self.task.advance(artifact.size or hit.stat().st_size)
                self.reporter.debug(f"cached {artifact.label}: {hit}")
                return target
        entry = self.cache.entry(artifact)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            temp = await self.download(artifact, entry)
        except OSError as exc:  # PackErrors (network, checksums) are not OSErrors: pass through
            raise PackError(
                f"cannot write into the cache {self.cache.root}: {exc.strerror or exc}",
                "make it writable, or pack without --use-cache",
            ) from exc
        try:
            # Link into the pack before publishing: the pack never depends on the entry staying.
            await asyncio.to_thread(place, temp, target)
            self.cache.add(temp, artifact)
        finally:
            temp.unlink(missing_ok=True)
        return target

    async def download(self, artifact: Artifact, final: Path) -> Path:
        """A verified copy of ``artifact`` in a temp file beside ``final`` (the caller renames it)."""
        import asyncio

        attempts = checksum_attempts = 0
        delay = BACKOFF_SECONDS
        while True:
            temp = temp_path(final)
            writer = _Writer(temp, artifact, self.task)
            try:
                await self._transfer(artifact, writer)
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
                return temp
            except _Retry as retry:
                writer.close()
                temp.unlink(missing_ok=True)
                self.task.advance(-writer.hasher.size)
                if isinstance(retry, _ChecksumMismatch):
                    checksum_attempts += 1
                    exhausted = checksum_attempts >= CHECKSUM_ATTEMPTS
                else:
                    attempts += 1
                    exhausted = attempts >= self.network.attempts
                if exhausted:
                    raise retry.error from None
                self.reporter.debug(f"retrying {artifact.label}: {retry.error.message}")
                await asyncio.sleep(delay)
                delay *= 2
            except BaseException:
                writer.close()
                temp.unlink(missing_ok=True)
                raise

    async def _transfer(self, artifact: Artifact, writer: _Writer) -> None:
        import asyncio

        if urlsplit(artifact.url).scheme.lower() == "file":
            await self._watch(asyncio.to_thread(_copy_local, artifact, writer), artifact, writer)
            return
        from rattler.package_streaming import download_to_writer

        try:
            await self._watch(download_to_writer(self.client, artifact.url, writer), artifact, writer)
        except (_Retry, PackError):
            raise
        except Exception as exc:
            raise await self._classify(exc, artifact) from None

    async def _watch(self, work: Awaitable[None], artifact: Artifact, writer: _Writer) -> None:
        """Await ``work``, abandoning it when no byte arrived for ``stall_timeout`` seconds."""
        import asyncio

        stall = self.network.stall_timeout
        future = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=min(1.0, stall))
                if done:
                    future.result()
                    return
                if time.monotonic() - writer.last_activity > stall:
                    host = urlsplit(public_url(artifact.url)).netloc or public_url(artifact.url)
                    raise _Retry(
                        PackError(
                            f"timed out downloading {artifact.label}: no data from {host} for {stall:g} s",
                            "check the network, or the mirrors and proxy in `--config`",
                        )
                    )
        finally:
            if not future.done():
                future.cancel()
                with contextlib.suppress(BaseException):
                    await future

    async def _classify(self, exc: Exception, artifact: Artifact) -> PackError:
        """Turn rattler's exception into a PackError (final) or a _Retry (transient)."""
        import asyncio

        message = first_line(exc)
        kind = type(exc).__name__
        if kind == "AuthenticationStorageError":
            return PackError(
                f"cannot read credentials: {message}",
                f"fix the file given with `--auth-file` or {AUTH_FILE_ENV}",
            )
        status = STATUS_RE.search(str(exc))
        if status is not None:
            code, url = int(status.group(1)), public_url(status.group(2))
            if code in (401, 403):
                return PackError(
                    f"access denied (HTTP {code}) to {url} for {artifact.label}", self._auth_hint(url)
                )
            if code in (404, 410):
                return PackError(
                    f"{artifact.label} not found (HTTP {code}): {url}",
                    "check the channel and the mirrors in `--config`, or run `pixi lock` again",
                )
            return PackError(f"HTTP {code} downloading {artifact.label} from {url}", "try again later")
        if any(marker in message for marker in CONNECTION_MARKERS):
            # rattler already retried; its message does not say why, so ask the host ourselves.
            url = public_url(self._effective_url(artifact.url))
            reason = await asyncio.to_thread(_probe, url)
            return PackError(
                f"cannot download {artifact.label}: {reason}",
                "check the URL, the network, and the mirrors and proxy in `--config`",
            )
        # Anything else failed while the body was streaming (cut connection, reset): try again.
        url = public_url(artifact.url)
        return _Retry(
            PackError(
                f"download of {artifact.label} from {url} failed: {message}",
                "the connection broke off repeatedly; check the network or proxy and try again",
            )
        )

    def _auth_hint(self, url: str) -> str:
        """Where to give credentials, or, when a credentials file was given, to check it."""
        given = self.network.auth_file or os.environ.get(AUTH_FILE_ENV)
        if not given:
            return AUTH_HINT
        host = urlsplit(url).hostname or url
        return f"check the credentials for {host} in {given} (they were sent and refused)"

    def _effective_url(self, url: str) -> str:
        """The URL rattler really asked, after ``[mirrors]`` (for messages only)."""
        for prefix, mirrors in self.config.mirrors.items():
            if mirrors and url.startswith(prefix):
                return mirrors[0].rstrip("/") + "/" + url[len(prefix) :].lstrip("/")
        return url


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


def _probe(url: str) -> str:
    """Why a host cannot be reached: unresolvable, refusing, silent, or closing connections."""
    import socket

    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return f"{url} cannot be reached"
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower(), 443)
    except ValueError:
        return f"{url} has an invalid port"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return f"host {host} cannot be resolved"
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            pass
    except ConnectionRefusedError:
        return f"{host}:{port} refused the connection"
    except TimeoutError:
        return f"{host}:{port} did not answer (timed out)"
    except OSError as exc:
        return f"{host}:{port} is unreachable ({exc.strerror or exc})"
    return f"{host}:{port} accepted a connection but the request failed (closed or timed out)"
