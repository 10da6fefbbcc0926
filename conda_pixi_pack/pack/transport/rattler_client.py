"""py-rattler's HTTP client, for the URLs only it can fetch, driven from the fetcher's threads.

It brings what the direct transport does not have (``route.py``): credentials (``--auth-file``,
``RATTLER_AUTH_FILE``, keyring, netrc), proxies, several mirrors, S3/GCS/OCI, webpki roots.
Its coroutines run on an event loop in a thread of their own, started on first use (a pack
that never needs rattler's client never imports ``asyncio``); each transfer's thread waits for
its own, watching for stalls, and cancels it when the fetch stops. Failures come back as the
direct transport's :class:`~conda_pixi_pack.pack.transport.direct.TransferError` s, so that
``download.py`` words both alike.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from conda_pixi_pack.errors import first_line
from conda_pixi_pack.pack.transport.direct import (
    Cancelled,
    CutShort,
    HttpStatus,
    Stalled,
    TransferError,
    diagnose,
)

if TYPE_CHECKING:
    import asyncio
    import ssl
    from collections.abc import Callable

    from rattler import Client, Config

    from conda_pixi_pack.pack.transport.direct import Sink

#: rattler's message for an HTTP error status: ``HTTP status client error (404 Not Found) for url (…)``.
STATUS_RE: Final = re.compile(r"HTTP status \w+ error \((\d{3})[^)]*\) for url \((.*)\)")
#: rattler's messages when no answer came at all (after its own retries).
CONNECTION_MARKERS: Final = ("error sending request", "Request failed after")
#: Longest wait between two looks at a transfer (stalled? stopped?), in seconds.
WATCH_INTERVAL: Final = 0.25
#: Longest wait for abandoned transfers to wind down when the client closes (seconds).
DRAIN_TIMEOUT: Final = 5.0


async def _cancel_the_rest() -> None:
    """Cancel every other task of the running loop and wait for them to end."""
    import asyncio

    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class CredentialsError(TransferError):
    """rattler could not read the credentials it was pointed at."""


class RattlerClient:
    """One rattler ``Client`` (made from ``config`` on first use) and the loop it runs on."""

    def __init__(self, config: Config, *, retries: int, user_agent: str, read_timeout: float) -> None:
        self.config, self.retries, self.user_agent = config, retries, user_agent
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def fetch(
        self,
        url: str,
        sink: Sink,
        *,
        last_activity: Callable[[], float],
        stop: threading.Event,
        tls: Callable[[], ssl.SSLContext],
    ) -> None:
        """Stream ``url`` into ``sink.write`` through rattler's client; raises TransferErrors
        (:class:`Stalled` when no byte came for the read timeout, :class:`Cancelled` on ``stop``)."""
        import asyncio

        from rattler.package_streaming import download_to_writer

        client, loop = self._started()

        async def transfer() -> None:
            await download_to_writer(client, url, sink)

        future = asyncio.run_coroutine_threadsafe(transfer(), loop)
        try:
            self._wait(future, url, last_activity, stop)
        except TransferError:
            future.cancel()
            raise
        except Exception as exc:
            raise self._classify(exc, url, tls) from None

    def close(self) -> bool:
        """Stop the loop and drop the client; True if a client was made (its runtime threads then
        need a moment, see ``download.fetch_all``)."""
        import asyncio
        import concurrent.futures

        with self._lock:
            made, self._client = self._client is not None, None
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None and thread is not None:
            # Transfers abandoned on a failure or Ctrl-C are cancelled and awaited here, so that
            # none is left pending (and reported as destroyed) when the loop closes.
            drained = asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop)
            with contextlib.suppress(concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                drained.result(timeout=DRAIN_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
        return made

    def _started(self) -> tuple[Client, asyncio.AbstractEventLoop]:
        import asyncio

        from rattler import Client

        with self._lock:
            if self._client is None:
                try:
                    self._client = Client.from_config(
                        self.config, max_retries=self.retries, user_agent=self.user_agent
                    )
                except Exception as exc:  # AuthenticationStorageError, bad TLS/proxy settings
                    raise CredentialsError(f"cannot set up downloads: {first_line(exc)}") from exc
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="conda-pixi-pack-rattler", daemon=True
                )
                self._thread.start()
            return self._client, self._loop

    def _wait(
        self, future: object, url: str, last_activity: Callable[[], float], stop: threading.Event
    ) -> None:
        """Until the transfer is done: abandoned when nothing came for the read timeout."""
        import concurrent.futures

        assert isinstance(future, concurrent.futures.Future)
        while True:
            try:
                future.result(timeout=min(WATCH_INTERVAL, self.read_timeout))
                return
            except concurrent.futures.TimeoutError:
                pass
            except concurrent.futures.CancelledError:
                raise Cancelled() from None
            if stop.is_set():
                raise Cancelled()
            if time.monotonic() - last_activity() > self.read_timeout:
                raise Stalled(urlsplit(url).netloc.rpartition("@")[2] or url)

    def _classify(self, exc: Exception, url: str, tls: Callable[[], ssl.SSLContext]) -> TransferError:
        """rattler's exception as a TransferError: its message is all it tells."""
        message = first_line(exc)
        if type(exc).__name__ == "AuthenticationStorageError":
            return CredentialsError(f"cannot read credentials: {message}")
        status = STATUS_RE.search(str(exc))
        if status is not None:
            return HttpStatus(int(status.group(1)), status.group(2))
        if any(marker in message for marker in CONNECTION_MARKERS):
            # rattler already retried; its message does not say why, so ask the host ourselves.
            target = self._effective_url(url)
            return diagnose(target, tls() if target.lower().startswith("https:") else None)
        # Anything else failed while the body was streaming (cut connection, reset): try again.
        return CutShort(message)

    def _effective_url(self, url: str) -> str:
        """The URL rattler really asked, after ``[mirrors]`` (for messages only)."""
        for prefix, mirrors in self.config.mirrors.items():
            if mirrors and url.startswith(prefix):
                return mirrors[0].rstrip("/") + "/" + url[len(prefix) :].lstrip("/")
        return url
