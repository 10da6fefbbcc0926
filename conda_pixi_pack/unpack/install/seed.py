"""Extract the pack's packages into rattler's package cache, verifying them on the way.

``rattler.install`` extracts each package into its cache, then links it into the prefix. Fed
``file://`` URLs it wants every package as a file of its own (500 MB copied out of a large
pack first) and checks no checksum, so unpack would also have to hash every package before
anything is linked. Here worker processes (seed_worker.py) extract the packages with rattler's own
extractor, reading each straight out of the pack through a named pipe (``sendfile``: the kernel
moves the pack's pages into the pipe), and answer each archive's sha256 and md5, computed while
extracting. Only when every package matches its record are the extracted folders renamed into
the cache, under the names rattler looks them up by, each with rattler's metadata file recording
its sha256 (so that rattler, later, tells it from another build of the same name); ``rattler.install``
then only links.

Nothing unverified is ever visible in the cache: extraction goes to a private staging folder
inside it (same file system, so the rename is atomic). The caller checks with rattler's own
cache index that rattler sees the entries, and otherwise installs the slow way.
"""

from __future__ import annotations

import errno
import os
import queue
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from conda_pixi_pack.artifacts import (
    checksum_error,
    cut_short_error,
    expected_checksum,
    package_label,
    verify_checksum,
)
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.fileio import copy_range, remove_uninterrupted
from conda_pixi_pack.format import CONDA_SUFFIX, TAR_BZ2_SUFFIX
from conda_pixi_pack.unpack.install.package_paths import extracted_paths, refuse_escaping

if TYPE_CHECKING:
    from conda_pixi_pack.artifacts import PackedPackage
    from conda_pixi_pack.progress import Reporter, Task

#: At most this many extraction processes (each extracts one package at a time).
MAX_WORKERS: Final = 8
#: How long to wait for an answer between tries while a worker has not yet opened its pipe (seconds).
OPEN_RETRY: Final = 0.0005
#: The staging folder's name in the cache: hidden, as rattler's own temporary folders there.
STAGING_PREFIX: Final = ".conda-pixi-pack-seed-"
#: The worker's code, run as a script of its own: imported as
#: ``conda_pixi_pack.unpack.install.seed_worker`` it would first run the ``__init__`` of each
#: package above it (``typing`` and more: ~13 ms of a worker's ~27 ms start, packages waiting).
WORKER_FILE: Final = Path(__file__).with_name("seed_worker.py")
#: How a worker starts: the file given after it run as ``__main__``, without the current folder
#: (``""``) on ``sys.path`` (``python FILE`` would put the file's folder first, where our own
#: ``rattler.py`` would then be imported instead of rattler).
WORKER_CODE: Final = (
    "import sys; sys.path = [p for p in sys.path if p]; "
    "exec(compile(open(sys.argv[1], 'rb').read(), sys.argv[1], 'exec'))"
)
#: rattler's cache metadata file (``<entry>.lock``): a big-endian u64 revision, then the sha256.
REVISION_BYTES: Final = 8


class SeedUnavailable(Exception):
    """Seeding cannot run here (no worker process, no named pipes): install the slow way."""


def seeding_available() -> bool:
    """Named pipes exist here (not on Windows), and an interpreter and a file to run workers with."""
    return hasattr(os, "mkfifo") and bool(sys.executable) and WORKER_FILE.is_file()


def cache_entry_name(record: dict[str, object]) -> str:
    """The folder rattler's cache keeps a package in: ``<name>-<version>-<build>``."""
    return f"{record['name']}-{record['version']}-{record['build']}"


class _WorkerGone(Exception):
    """A worker process stopped answering."""


class _Worker:
    """One seed_worker.py process and its request/answer lines (bytes: paths are bytes)."""

    def __init__(self, cwd: Path) -> None:
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER_CODE, str(WORKER_FILE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=cwd,
            )
        except OSError as exc:
            raise SeedUnavailable(f"cannot start an extraction process: {exc}") from exc
        self.stdin: IO[bytes] = self.process.stdin  # type: ignore[assignment]
        self.stdout: IO[bytes] = self.process.stdout  # type: ignore[assignment]
        #: Answer bytes read but not yet taken. Read here, not through ``stdout``'s buffer: with a
        #: request ahead, two answers may arrive together, and a line held in that buffer would
        #: be invisible to :meth:`answered` (``select`` sees the pipe only).
        self._unread = b""

    def request(self, source: Path, destination: Path) -> None:
        try:
            self.stdin.write(os.fsencode(source) + b"\t" + os.fsencode(destination) + b"\n")
            self.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise _WorkerGone from None

    def answer(self) -> tuple[str, str] | str:
        """``(sha256, md5)`` of the archive just extracted, or rattler's error message."""
        while b"\n" not in self._unread:
            try:
                chunk = os.read(self.stdout.fileno(), 4096)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                raise _WorkerGone
            self._unread += chunk
        raw, _, self._unread = self._unread.partition(b"\n")
        kind, _, rest = raw.decode("utf-8", "replace").partition("\t")
        if kind == "ok":
            sha256, _, md5 = rest.partition("\t")
            return sha256, md5
        return rest

    def answered(self, timeout: float) -> bool:
        """Whether an answer waits to be taken, within ``timeout`` seconds."""
        if b"\n" in self._unread:
            return True
        ready, _, _ = select.select([self.stdout], [], [], timeout)
        return bool(ready)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, kill: bool) -> None:
        """End the process (idempotent): at the end of its requests, or at once with ``kill``."""
        if kill and self.alive():
            self.process.kill()
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self.process.wait()


def _open_writer(fifo: Path, worker: _Worker) -> int | None:
    """The pipe's writing end, once the worker has opened it for reading; None when the worker
    answered without opening it (rattler refused the request). Never blocks on a dead worker,
    as a plain ``open`` would."""
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        else:
            os.set_blocking(fd, True)
            return fd
        if not worker.alive():
            raise _WorkerGone
        if worker.answered(OPEN_RETRY):
            return None


def _pump(pack: int, offset: int, size: int, fifo: Path, worker: _Worker) -> None:
    """Move ``size`` bytes at ``offset`` of the open pack into the pipe the worker reads (in the
    kernel where it can: ``sendfile`` moves the pack's pages into the pipe)."""
    out = _open_writer(fifo, worker)
    if out is None:
        return
    try:
        copy_range(pack, out, offset, size)
    except BrokenPipeError:
        pass  # the worker stopped reading: its answer says why
    except EOFError:
        raise cut_short_error() from None
    finally:
        os.close(out)


class _Seeding:
    """Workers extracting a queue of packages into ``staging`` (pipes in ``pipes``), biggest first;
    each checked entry gets its metadata for ``cache`` beside it (:func:`_stage_metadata`)."""

    def __init__(
        self, packages: list[PackedPackage], staging: Path, pipes: Path, cache: Path, task: Task
    ) -> None:
        self.packages = packages
        self.staging = staging
        self.cache = cache
        self.pipes = pipes
        self.task = task
        self.jobs: queue.SimpleQueue[tuple[int, PackedPackage]] = queue.SimpleQueue()
        for job in sorted(enumerate(packages), key=lambda job: -job[1].size):
            self.jobs.put(job)
        self.failures: list[BaseException] = []
        self.stop = threading.Event()
        self.packs: dict[Path, int] = {}  # each pack file opened once: gone from its folder, still read

    def run(self, count: int) -> None:
        workers: list[_Worker] = []
        threads: list[threading.Thread] = []
        try:
            for package in self.packages:
                if package.extent is not None and package.extent.file not in self.packs:
                    self.packs[package.extent.file] = _open_pack(package.extent.file)
            for _ in range(count):
                workers.append(_Worker(self.pipes))
            for worker in workers:
                thread = threading.Thread(target=self._feed, args=(worker,), name="conda-pixi-pack-seed")
                thread.start()
                threads.append(thread)
            for thread in threads:
                thread.join()
        except BaseException:
            self.stop.set()
            # Run to its end even under more Ctrl-C: no worker may outlive this (it would write
            # into the staging folder after its removal).
            remove_uninterrupted(lambda: self._shut_down(workers, threads, kill=True))
            raise
        finally:
            for fd in self.packs.values():
                os.close(fd)
            self.packs.clear()
        self._shut_down(workers, threads, kill=bool(self.failures))
        if self.failures:
            failure = self.failures[0]
            if isinstance(failure, _WorkerGone):
                raise SeedUnavailable("an extraction process stopped unexpectedly")
            if isinstance(failure, OSError) and failure.filename is not None:
                raise SeedUnavailable(f"cannot use {failure.filename}: {failure.strerror or failure}")
            raise failure

    @staticmethod
    def _shut_down(workers: list[_Worker], threads: list[threading.Thread], *, kill: bool) -> None:
        for worker in workers:  # killing them unblocks the feeding threads (EPIPE, EOF)
            worker.stop(kill=kill)
        for thread in threads:
            thread.join()

    def _feed(self, worker: _Worker) -> None:
        """Keep ``worker`` busy with the queue's packages, one request ahead.

        The next request is in the worker's input before it answers the current one, and each
        answer is checked (checksum, paths) while the worker extracts the next package. Checked
        all at the end, the benchmark's 171 packages took ~70 ms after the last answer, with
        the workers done; now ~20 ms.
        """
        waiting: tuple[PackedPackage, Path] | None = None  # fed to the worker, not answered yet
        try:
            while not self.stop.is_set():
                try:
                    index, package = self.jobs.get_nowait()
                except queue.Empty:
                    break
                destination = self.staging / cache_entry_name(package.record)
                fifo = None
                if package.extent is None:
                    worker.request(package.path, destination)
                else:
                    # rattler tells the archive type by the name's ending
                    suffix = CONDA_SUFFIX if package.file_name.endswith(CONDA_SUFFIX) else TAR_BZ2_SUFFIX
                    fifo = self.pipes / f"{index}{suffix}"
                    os.mkfifo(fifo, 0o600)
                    worker.request(fifo, destination)
                # the previous package's answer first: the worker then takes this request
                answered = (*waiting, worker.answer()) if waiting is not None else None
                if fifo is not None:
                    extent = package.extent
                    assert extent is not None
                    _pump(self.packs[extent.file], extent.offset, extent.size, fifo, worker)
                    fifo.unlink()
                if answered is not None:
                    self._checked(*answered)
                waiting = (package, destination)
            if waiting is not None and not self.stop.is_set():
                self._checked(*waiting, worker.answer())
        except BaseException as exc:  # handed to the main thread, which stops the others
            self.failures.append(exc)
            self.stop.set()

    def _checked(self, package: PackedPackage, destination: Path, answer: tuple[str, str] | str) -> None:
        _check(package, answer, destination)
        _stage_metadata(self.staging, self.cache, destination.name, expected_checksum(package))
        self.task.advance(package.size)


def _open_pack(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise PackError(f"the pack {path} disappeared while being unpacked") from None


def seed_cache(packages: list[PackedPackage], cache: Path, reporter: Reporter) -> set[Path]:
    """Extract ``packages`` into the rattler cache ``cache``; returns the paths of those it
    verified and placed there (the others, already in the cache or duplicates, are the
    caller's to verify).

    Raises PackError when a package does not match its record or cannot be extracted (nothing is
    then added to the cache), SeedUnavailable when it cannot run here.
    """
    todo: list[PackedPackage] = []
    names: set[str] = set()
    for package in packages:
        name = cache_entry_name(package.record)
        if name not in names and not (cache / name).exists():
            todo.append(package)
        names.add(name)
    if not todo:
        return set()
    if not all(_sendable(path) for path in [cache, *(p.path for p in todo)]):
        raise SeedUnavailable("a path cannot be passed to an extraction process")
    made: list[Path] = []  # removed at the end, whatever happens
    task: Task | None = None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _private_dir(cache, made)
        # Named pipes go to the system's temporary folder: the cache's file system may have none
        # (FAT, SMB); a private folder, so no one else can open them.
        _private_dir(Path(tempfile.gettempdir()), made)
        # validate.py left these checksums to this stage: its name says so
        task = reporter.task("Extracting and verifying packages", sum(p.size for p in todo), "B")
        seeding = _Seeding(todo, made[0], made[1], cache, task)
        seeding.run(min(_usable_cpus(), MAX_WORKERS, len(todo)))
        for package in todo:
            _place(made[0], cache, cache_entry_name(package.record))
        return {p.path for p in todo}
    except OSError as exc:  # the cache or temporary folder refuses something: the other way
        where = f" ({exc.filename})" if exc.filename else ""
        raise SeedUnavailable(f"{exc.strerror or exc}{where}") from exc
    finally:
        # Finishes under a second Ctrl-C too: a hidden half-extracted folder in a --pkgs-dir
        # would stay there for good.
        interrupted = remove_uninterrupted(lambda: _remove_all(made))
        if task is not None:
            task.done()
        if interrupted and sys.exc_info()[0] is None:
            raise KeyboardInterrupt


def _private_dir(parent: Path, made: list[Path]) -> None:
    """A new folder (mode 0700) in ``parent``, appended to ``made`` *before* it exists (as
    ``tempfile.mkdtemp`` would not): a Ctrl-C right after its creation cannot leave a folder
    that nobody knows to remove."""
    while True:
        path = parent / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
        made.append(path)
        try:
            path.mkdir(mode=0o700)
            return
        except FileExistsError:  # someone else's: never ours to remove
            made.remove(path)


def _usable_cpus() -> int:
    """CPUs this process may run on (a container's or ``taskset``'s limit, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _remove_all(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _stage_metadata(staging: Path, cache: Path, name: str, checksum: tuple[str, str]) -> None:
    """Write rattler's metadata file for the entry ``name`` beside it in ``staging``: the
    revision (one more than any in ``cache`` before it) then the sha256; rattler's own cache
    index, which the caller consults, reads it back.

    Written as each package is checked, while the workers extract others: written by
    :func:`_place` after the last one, the benchmark's 171 files took ~15 ms with nothing else
    running.
    """
    algorithm, hexdigest = checksum
    try:
        old = (cache / f"{name}.lock").read_bytes()[:REVISION_BYTES]
    except FileNotFoundError:
        old = b""
    revision = int.from_bytes(old, "big") + 1 if len(old) == REVISION_BYTES else 1
    data = revision.to_bytes(REVISION_BYTES, "big")
    if algorithm == "sha256":
        data += bytes.fromhex(hexdigest)
    (staging / f"{name}.lock").write_bytes(data)


def _place(staging: Path, cache: Path, name: str) -> None:
    """Rename the verified entry ``name`` into the cache, then its metadata (:func:`_stage_metadata`)
    over any left there: each rename is atomic.

    An entry that appeared meanwhile (another installer) is theirs and stays as it is, with its
    metadata.
    """
    try:
        os.rename(staging / name, cache / name)
    except OSError as exc:
        if (cache / name).is_dir():
            return
        raise SeedUnavailable(f"cannot place {name} in {cache}: {exc.strerror or exc}") from exc
    os.replace(staging / f"{name}.lock", cache / f"{name}.lock")


def _sendable(path: Path) -> bool:
    """Whether ``path`` fits on a request line (no tab, no line break)."""
    return not any(c in str(path) for c in "\t\n\r")


def _check(package: PackedPackage, result: tuple[str, str] | str, extracted: Path) -> None:
    """The worker's answer for ``package``, its checksum, and the paths it would link."""
    if isinstance(result, str):
        # A damaged file mostly fails to decompress before its hash is complete: say what it is.
        verify_checksum(package)
        raise PackError(f"extracting {package_label(package)} failed: {result}")
    algorithm, expected = expected_checksum(package)
    if (result[0] if algorithm == "sha256" else result[1]) != expected:
        raise checksum_error(package, algorithm)
    refuse_escaping(package_label(package), extracted_paths(extracted))
