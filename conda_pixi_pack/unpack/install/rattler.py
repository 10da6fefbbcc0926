"""The rattler backend: py-rattler's installer (pixi-unpack's engine) on the pack's own records.

Records come from the pack's ``channel/<subdir>/repodata.json`` read by rattler's own parser.
The packages are first extracted into rattler's package cache straight out of the pack, and
verified on the way (seed.py); ``rattler.install`` then finds every package in its cache and
only links. Its records keep their original URLs, so rattler itself writes them into conda-meta,
and a client that refuses every request makes sure nothing is fetched. Where that cannot run
(no named pipes, or a rattler that does not see the entries), the packages are copied out of the
pack, verified, and handed over as ``file://`` URLs instead. Beyond pixi-unpack:

- post-link scripts run (``execute_link_scripts=True``) and a failing one fails the install, as
  with conda: both backends then build the same environment from the same pack. (pixi-unpack skips
  them; a pack's packages are trusted to the same degree as the binaries they install.)
- each ``conda-meta/<pkg>.json`` has its original ``url``/``channel`` from the pack's origins,
  so ``conda list`` shows e.g. ``conda-forge`` and ``conda list --explicit`` the original URLs;
- ``conda-meta/history`` gets a real revision (rattler leaves it empty), so
  ``conda list --revisions`` works.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

from conda_pixi_pack import __version__
from conda_pixi_pack.artifacts import fill_placeholders, package_label, verify_checksum
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.fileio import write_atomically
from conda_pixi_pack.format import DAMAGED_HINT, REPODATA_FILE
from conda_pixi_pack.unpack.install.package_paths import extracted_paths, refuse_escaping
from conda_pixi_pack.unpack.install.seed import (
    SeedUnavailable,
    cache_entry_name,
    seed_cache,
    seeding_available,
)

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine

    from rattler import RepoDataRecord
    from rattler.networking import Client

    from conda_pixi_pack.artifacts import PackedPackage
    from conda_pixi_pack.progress import Reporter, Task

    #: Each package with its record, and the URL and channel conda-meta should show for each (by
    #: conda-meta file name); see :class:`_Records`.
    Records = tuple[list[tuple[PackedPackage, RepoDataRecord]], dict[str, tuple[str, str]]]

T = TypeVar("T")

#: How long, at most, a failed install waits for rattler's worker threads to finish (seconds).
QUIET_TIMEOUT: Final = 30.0
#: A failed install is over once the cache and prefix have not changed for this long (seconds).
QUIET_INTERVAL: Final = 0.3
#: Files rattler leaves at the root of a new prefix, removed unless a package installed them.
STRAY_FILES: Final = frozenset({"CACHEDIR.TAG"})
#: Hosts whose channel URLs conda abbreviates to the channel name (``conda-forge``) in history.
ANACONDA_ORG: Final = "https://conda.anaconda.org/"
#: Where the refusing client sends any request: a scheme rattler's HTTP client never fetches,
#: named so that an error quoting it says why.
NOWHERE: Final = "file:///conda-pixi-pack-installs-offline/"


class _Progress:
    """Forwards rattler's link events to our Reporter and remembers failed post-link scripts
    (rattler's ``InstallerReporter`` protocol: it calls the methods there are)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.failed_post_links: list[str] = []
        self._scripts: dict[int, str] = {}

    def on_link_complete(self, index: int) -> None:
        self.task.advance(1)

    def on_post_link_start(self, package_name: str, script_path: str) -> int:
        self._scripts[len(self._scripts)] = package_name
        return len(self._scripts) - 1

    def on_post_link_complete(self, index: int, success: bool) -> None:
        if not success:
            self.failed_post_links.append(self._scripts.get(index, "?"))


def _records(packages: list[PackedPackage]) -> list[tuple[PackedPackage, RepoDataRecord]]:
    """Each of ``packages`` with rattler's record for it, parsed from its subdir's repodata.json
    (with a ``file://`` URL into the extracted pack)."""
    wanted: dict[Path, dict[str, PackedPackage]] = {}
    for package in packages:
        wanted.setdefault(package.path.parent, {})[package.file_name] = package
    from rattler import Channel, RepoData

    pairs: list[tuple[PackedPackage, RepoDataRecord]] = []
    for subdir_dir, by_name in wanted.items():
        channel = Channel(subdir_dir.parent.resolve().as_uri())
        repodata = RepoData.from_path(subdir_dir / REPODATA_FILE)
        records = repodata.into_repo_data(channel)
        pairs += [(by_name[r.file_name], r) for r in records if r.file_name in by_name]
    return pairs


def _provenance(package: PackedPackage, record: RepoDataRecord) -> tuple[str, str]:
    """The URL and channel conda-meta should show: the original ones where the pack has them,
    else the package's place in the extracted pack (what pixi-unpack records)."""
    if package.origin is None:
        return record.url, record.channel
    # "<channel>/<subdir>/<file name>" -> "<channel>/" when the pack did not name the channel.
    return package.origin.url, package.origin.channel or package.origin.url.rsplit("/", 2)[0] + "/"


def _point_at_origins(
    pairs: list[tuple[PackedPackage, RepoDataRecord]], wanted: dict[str, tuple[str, str]]
) -> tuple[Client, dict[str, tuple[str, str]]]:
    """Give each record the URL and channel conda-meta should show (rattler writes them there),
    and return a client that refuses every request: the packages are all in the cache already,
    and an original URL must never be fetched (the point is to install offline, exactly the
    pack's packages). Also returns the entries to rewrite afterwards: those whose URL rattler
    does not take (it parses them; the pack is someone else's)."""
    from rattler.networking import Client, MirrorMiddleware

    refused: dict[str, list[str]] = {}
    rewrite: dict[str, tuple[str, str]] = {}
    for package, record in pairs:
        name = _meta_name(package.record)
        url, channel = wanted[name]
        if url == record.url:
            continue
        if not _url_taken(url):
            rewrite[name] = (url, channel)
            continue
        record.url, record.channel = url, channel
        if urlsplit(url).scheme != "file":
            refused[record.url] = [NOWHERE]
    return (Client([MirrorMiddleware(refused)]) if refused else Client()), rewrite


def _url_taken(url: str) -> bool:
    """Whether rattler parses ``url`` as a URL.

    Asked before a record is given it: py-rattler 0.28's record panics on a URL it cannot parse
    (a Rust panic message on stderr, and pyo3's ``PanicException``, which ``except Exception``
    does not catch: the unpack died). ``MirrorMiddleware`` parses its keys with the same parser
    and raises an ordinary error (~3 us a URL).
    """
    from rattler.networking import MirrorMiddleware

    try:
        MirrorMiddleware({url: [NOWHERE]})
    except Exception:  # py-rattler's InvalidUrlError
        return False
    return True


def _channel_name(channel: str) -> str:
    """conda's short channel name for history lines (``conda-forge`` for its anaconda.org URL);
    written by hand because conda's ``Channel`` must not be imported by this backend."""
    channel = channel.rstrip("/")
    if channel.startswith(ANACONDA_ORG):
        return channel[len(ANACONDA_ORG) :]
    return channel


def _meta_name(record: dict[str, Any]) -> str:
    """The package's file name in conda-meta (``<name>-<version>-<build>.json``)."""
    return f"{record['name']}-{record['version']}-{record['build']}.json"


def _dump_meta(meta: dict[str, Any]) -> str:
    """``meta`` as JSON with one top-level key per line and each value compact.

    ``json.dumps(indent=2)`` runs Python's pure-Python encoder (the C one has no indent), which
    costs ~1 ms per package for the long ``files``/``paths_data`` lists: too much for rewriting
    two fields. Compact values keep the C encoder and the top level stays readable.
    """
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in meta.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _restore_provenance(prefix: Path, rewrite: dict[str, tuple[str, str]]) -> None:
    """Write the wanted ``url``/``channel`` into the conda-meta files named in ``rewrite``."""
    for name, (url, channel) in rewrite.items():
        path = prefix / "conda-meta" / name
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta["url"], meta["channel"] = url, channel
        write_atomically(path, _dump_meta(meta).encode("utf-8"))


def _owners(prefix: Path, names: frozenset[str]) -> set[str]:
    """Which of ``names`` (files at the prefix's root) some installed package lists as its own.

    The bytes are searched before they are decoded and parsed: the JSON of a large environment
    is tens of MB (decoded, the benchmark's 171 files took 8 ms).
    """
    owned: set[str] = set()
    for path in (prefix / "conda-meta").glob("*.json"):
        data = path.read_bytes()
        candidates = {name for name in names if f'"{name}"'.encode() in data}
        if candidates:
            owned |= candidates.intersection(json.loads(data).get("files") or ())
    return owned


def _remove_stray_files(prefix: Path, owned: set[str]) -> None:
    """Remove what py-rattler leaves at the prefix's root that no package installed.

    py-rattler 0.28 writes a ``CACHEDIR.TAG`` there (a bare ``rattler.install`` does too), which
    makes backup tools (``tar --exclude-caches``, borg, restic) skip the whole environment.
    """
    for name in STRAY_FILES - owned:
        (prefix / name).unlink(missing_ok=True)


def _write_history(prefix: Path, channels: dict[str, str]) -> None:
    """One conda-style revision listing every package (``channels``: each one's channel by
    conda-meta file name), unless rattler already wrote one."""
    history = prefix / "conda-meta" / "history"
    if history.is_file() and history.read_text(encoding="utf-8").strip():
        return
    lines = [
        f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} <==",
        f"# cmd: conda-pixi-pack unpack (conda-pixi-pack {__version__}, rattler backend)",
    ]
    dists = [f"+{_channel_name(channel)}::{name.removesuffix('.json')}" for name, channel in channels.items()]
    history.write_text("\n".join(lines + sorted(dists)) + "\n", encoding="utf-8")


def _snapshot(folders: list[Path]) -> set[tuple[str, int, int]]:
    found = set()
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                found.add((os.path.join(dirpath, name), st.st_size, st.st_mtime_ns))
    return found


def _wait_until_quiet(folders: list[Path]) -> None:
    """After a failed install, wait until rattler's leftover workers stop writing.

    rattler returns the first error while extraction/link tasks it already started keep running
    in its own threads; cleaning up under them would leave files behind. Only used on failure.
    """
    deadline = time.monotonic() + QUIET_TIMEOUT
    before = _snapshot(folders)
    while time.monotonic() < deadline:
        time.sleep(QUIET_INTERVAL)
        after = _snapshot(folders)
        if after == before:
            return
        before = after


class RattlerInstaller:
    """The rattler backend behind the :class:`~conda_pixi_pack.unpack.install.Installer` interface."""

    name: Final = "rattler"

    @property
    def takes_extents(self) -> bool:
        """Packages left inside a pack file are extracted from there (seed.py), where it can run."""
        return seeding_available()

    def install(
        self,
        packages: list[PackedPackage],
        prefix: Path,
        *,
        pkgs_dir: Path | None,
        reporter: Reporter,
        on_linked: Callable[[], None] | None = None,
    ) -> None:
        """Install ``packages`` into the new ``prefix`` with rattler; raises PackError on any failure.

        Packages whose checksum validation deferred are verified before anything is linked.
        ``pkgs_dir`` keeps the extracted packages for later runs; without it they go to a temporary
        folder beside ``prefix`` (same file system, so rattler can hard-link) removed at the end.
        ``on_linked`` is called once the package files are no longer needed (the caller may start
        removing them while the metadata is finished).
        """
        made = _Records(packages)
        temp_cache = None
        if pkgs_dir is None:
            temp_cache = tempfile.TemporaryDirectory(
                prefix=".conda-pixi-pack-cache-", dir=prefix.parent, ignore_cleanup_errors=True
            )
        cache = pkgs_dir if pkgs_dir is not None else Path(temp_cache.name)  # type: ignore[union-attr]
        try:
            seeded = _seed(packages, cache, reporter)
            pairs, wanted = made.result()
            client, rewrite = _prepare(pairs, wanted, cache, seeded, reporter)
        except BaseException:
            if temp_cache is not None:
                temp_cache.cleanup()
            raise
        cleaner = _run_install(
            [record for _, record in pairs], prefix, cache, temp_cache, client, reporter, on_linked
        )
        try:
            _restore_provenance(prefix, rewrite)
            _remove_stray_files(prefix, _owners(prefix, STRAY_FILES))
            _write_history(prefix, {name: channel for name, (_, channel) in wanted.items()})
        finally:
            if cleaner is not None:
                cleaner.join()

    def registration_undo(self, prefix: Path) -> Callable[[], None] | None:
        """rattler registers nothing."""
        return None


class _Records:
    """rattler's records of the packages, made in a thread.

    The imports of py-rattler and asyncio (~45 ms) and the parse of repodata.json need none of
    the extraction: here they run while the extraction processes start and keep both cores busy,
    instead of before them with one core idle.
    """

    def __init__(self, packages: list[PackedPackage]) -> None:
        self._packages = packages
        self._made: Records | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._make, name="conda-pixi-pack-records", daemon=True)
        self._thread.start()

    def _make(self) -> None:
        try:
            import asyncio  # noqa: F401  (for _prepare and _run_install; _records imports rattler)

            pairs = _records(self._packages)
            wanted = {_meta_name(package.record): _provenance(package, record) for package, record in pairs}
            self._made = (pairs, wanted)
        except BaseException as exc:  # raised in the caller's thread by result()
            self._error = exc

    def result(self) -> Records:
        """What was made, once made; raises what making it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._made is not None
        return self._made


def _seed(packages: list[PackedPackage], cache: Path, reporter: Reporter) -> set[Path] | None:
    """Extract and verify ``packages`` into the cache (seed.py); the paths of those it placed
    there, or None when seeding cannot run here."""
    try:
        return seed_cache(packages, cache, reporter)
    except SeedUnavailable as exc:
        reporter.debug(f"installing from package files: {exc}")
        return None


def _prepare(
    pairs: list[tuple[PackedPackage, RepoDataRecord]],
    wanted: dict[str, tuple[str, str]],
    cache: Path,
    seeded: set[Path] | None,
    reporter: Reporter,
) -> tuple[Client | None, dict[str, tuple[str, str]]]:
    """Verify every package and put it where rattler takes it from; returns the client rattler
    fetches with and the conda-meta entries (by file name) to rewrite afterwards to ``(url,
    channel)``.

    First choice: every package extracted into the cache (``seeded``, see :func:`_seed`), records
    with their original URLs and a client that fetches nothing. Otherwise: package files (copied
    out of the pack where extraction left them there) behind ``file://`` URLs, provenance
    rewritten afterwards.
    """
    packages = [package for package, _ in pairs]
    records = [record for _, record in pairs]
    if seeded is not None:
        for package in packages:  # already in the cache: not extracted, so not verified yet
            if package.path not in seeded:
                if package.checksum_deferred:
                    verify_checksum(package)
                entry = cache / cache_entry_name(package.record)
                refuse_escaping(package_label(package), extracted_paths(entry))
        if _run(_all_cached(cache, records)):
            return _point_at_origins(pairs, wanted)
        reporter.debug("rattler does not see the extracted packages in its cache: installing from files")
    try:
        fill_placeholders({p.path: p.extent for p in packages if p.extent is not None})
    except (OSError, EOFError) as exc:
        raise PackError(f"cannot copy the packages out of the pack: {exc}") from exc
    for package in packages:  # what rattler reads now, which it does not verify itself
        if package.extent is not None:
            verify_checksum(replace(package, extent=None))
        refuse_escaping(package_label(package), _archive_paths(package))
    # rattler writes the file:// URLs; the original ones replace them afterwards.
    return None, {
        _meta_name(p.record): wanted[_meta_name(p.record)] for p in packages if p.origin is not None
    }


def _archive_paths(package: PackedPackage) -> list[str]:
    """The paths a package archive lists (rattler reads them from its ``info`` part)."""
    from rattler import PathsJson

    try:
        return [str(entry.relative_path) for entry in PathsJson.from_package_archive(package.path).paths]
    except Exception as exc:  # rattler's own error types: the archive is not a package
        raise PackError(f"broken pack: {package_label(package)} cannot be read: {exc}", DAMAGED_HINT) from exc


#: The event loops of interrupted :func:`_run` s, kept open to the end of the process.
_INTERRUPTED_LOOPS: list[asyncio.AbstractEventLoop] = []


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for py-rattler's coroutines, except that an interrupted run leaves its
    event loop open.

    py-rattler hands each result back through the loop, from its own threads
    (``call_soon_threadsafe``). A Ctrl-C can end a run while one of its futures is in flight and
    nothing awaits it any more (between its creation and its ``await``; on Python 3.10 inside a
    task's step): once the loop is closed, that late call fails and py-rattler prints the error
    with a traceback. An open loop takes the call, and nothing runs it.
    """
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(coroutine)
    except BaseException:
        _INTERRUPTED_LOOPS.append(loop)  # referenced: a loop is closed when it is collected
        tasks = asyncio.all_tasks(loop)
        for task in tasks:  # as asyncio.run does: what they await is cancelled too
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        raise
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    return result


async def _all_cached(cache: Path, records: list[RepoDataRecord]) -> bool:
    """Whether rattler's own cache index finds every record in ``cache`` (so nothing is fetched)."""
    from rattler.package_cache import PackageCache

    index = await PackageCache(cache).index()
    return all(index.contains_record(record) for record in records)


def _run_install(
    records: list[RepoDataRecord],
    prefix: Path,
    cache: Path,
    temp_cache: tempfile.TemporaryDirectory[str] | None,
    client: Client | None,
    reporter: Reporter,
    on_linked: Callable[[], None] | None,
) -> threading.Thread | None:
    """``rattler.install`` into the new ``prefix``, its failures as PackError; returns the thread
    removing ``temp_cache`` (the caller joins it once conda-meta is finished)."""
    from rattler import install as rattler_install

    task = reporter.task("Installing packages", len(records), "pkg")
    progress = _Progress(task)
    try:
        _run(
            rattler_install(
                records,
                prefix,
                cache_dir=cache,
                installed_packages=[],
                execute_link_scripts=True,
                show_progress=False,
                client=client,
                reporter=progress,
            )
        )
    except BaseException as exc:
        _wait_until_quiet([cache, prefix])
        if temp_cache is not None:
            temp_cache.cleanup()
        if not isinstance(exc, Exception):
            raise
        # rattler raises its own types for broken packages, link errors, ...
        raise PackError(f"installing the packages into {prefix} failed: {exc}") from exc
    finally:
        task.done()
    if on_linked is not None:
        on_linked()
    cleaner = None
    if temp_cache is not None:
        # The prefix holds hard links to the extracted packages, so the temporary cache can go
        # now: its ~10,000 unlinks run in a thread (they release the GIL) meanwhile.
        cleaner = threading.Thread(target=temp_cache.cleanup, name="remove-temporary-cache")
        cleaner.start()
    if progress.failed_post_links:
        if cleaner is not None:
            cleaner.join()
        raise PackError(
            f"the post-link script of {', '.join(sorted(progress.failed_post_links))} failed",
            # rattler logs the script's output only to its own (Rust) log, which py-rattler
            # does not pass on; conda's installer reports it.
            "the environment was not created; to see the script's output, "
            "unpack with --installer conda where conda is installed",
        )
    return cleaner
