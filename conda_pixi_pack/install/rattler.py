"""The rattler backend: py-rattler's installer (pixi-unpack's engine) on the pack's own records.

Records come from the pack's ``channel/<subdir>/repodata.json`` read by rattler's own parser, with
``file://`` URLs into the extracted pack, so nothing touches the network. Beyond pixi-unpack:

- post-link scripts run (``execute_link_scripts=True``) and a failing one fails the install, as
  with conda: both backends then build the same environment from the same pack. (pixi-unpack skips
  them; a pack's packages are trusted to the same degree as the binaries they install.)
- each ``conda-meta/<pkg>.json`` gets its original ``url``/``channel`` back from the pack's origins,
  so ``conda list`` shows e.g. ``conda-forge`` and ``conda list --explicit`` the original URLs;
- ``conda-meta/history`` gets a real revision (rattler leaves it empty), so
  ``conda list --revisions`` works.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rattler import Channel, RepoData
from rattler import install as rattler_install
from rattler.install import InstallerReporter

from conda_pixi_pack import __version__
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.layout import REPODATA_FILE

if TYPE_CHECKING:
    from collections.abc import Callable

    from rattler import RepoDataRecord

    from conda_pixi_pack.install import PackedPackage
    from conda_pixi_pack.progress import Reporter, Task

#: How long, at most, a failed install waits for rattler's worker threads to finish (seconds).
QUIET_TIMEOUT: Final = 30.0
#: A failed install is over once the cache and prefix have not changed for this long (seconds).
QUIET_INTERVAL: Final = 0.3
#: Files rattler leaves at the root of a new prefix, removed unless a package installed them.
STRAY_FILES: Final = frozenset({"CACHEDIR.TAG"})
#: Hosts whose channel URLs conda abbreviates to the channel name (``conda-forge``) in history.
ANACONDA_ORG: Final = "https://conda.anaconda.org/"


class _Progress(InstallerReporter):
    """Forwards rattler's link events to our Reporter and remembers failed post-link scripts."""

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


def _records(packages: list[PackedPackage]) -> list[RepoDataRecord]:
    """rattler's records for exactly ``packages``, parsed from their subdir's repodata.json."""
    wanted: dict[Path, set[str]] = {}
    for package in packages:
        wanted.setdefault(package.path.parent, set()).add(package.file_name)
    records: list[RepoDataRecord] = []
    for subdir_dir, names in wanted.items():
        channel = Channel(subdir_dir.parent.resolve().as_uri())
        repodata = RepoData.from_path(subdir_dir / REPODATA_FILE)
        records += [r for r in repodata.into_repo_data(channel) if r.file_name in names]
    return records


def _channel_name(channel: str) -> str:
    """conda's short channel name for history lines (``conda-forge`` for its anaconda.org URL);
    written by hand because conda's ``Channel`` must not be imported by this backend."""
    channel = channel.rstrip("/")
    if channel.startswith(ANACONDA_ORG):
        return channel[len(ANACONDA_ORG) :]
    return channel


def _meta_path(prefix: Path, record: dict[str, Any]) -> Path:
    return prefix / "conda-meta" / f"{record['name']}-{record['version']}-{record['build']}.json"


def _dump_meta(meta: dict[str, Any]) -> str:
    """``meta`` as JSON with one top-level key per line and each value compact.

    ``json.dumps(indent=2)`` runs Python's pure-Python encoder (the C one has no indent), which
    costs ~1 ms per package for the long ``files``/``paths_data`` lists: too much for rewriting
    two fields. Compact values keep the C encoder and the top level stays readable.
    """
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in meta.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _restore_provenance(prefix: Path, packages: list[PackedPackage]) -> tuple[dict[str, str], set[str]]:
    """Put the original URL and channel back into conda-meta (where rattler wrote file:// ones).

    Returns each package's channel (by conda-meta file name) for the history, and which of
    ``STRAY_FILES`` packages own.
    """
    channels: dict[str, str] = {}
    owned: set[str] = set()
    for package in packages:
        path = _meta_path(prefix, package.record)
        meta = json.loads(path.read_text(encoding="utf-8"))
        owned.update(STRAY_FILES.intersection(meta.get("files") or ()))
        if package.origin is None:
            channels[path.name] = str(meta.get("channel") or "")
            continue
        meta["url"] = package.origin.url
        # "<channel>/<subdir>/<file name>" -> "<channel>/" when the pack did not name the channel.
        meta["channel"] = package.origin.channel or package.origin.url.rsplit("/", 2)[0] + "/"
        channels[path.name] = meta["channel"]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(_dump_meta(meta), encoding="utf-8")
        os.replace(tmp, path)
    return channels, owned


def _remove_stray_files(prefix: Path, owned: set[str]) -> None:
    """Remove what py-rattler leaves at the prefix's root that no package installed.

    py-rattler 0.28 writes a ``CACHEDIR.TAG`` there (a bare ``rattler.install`` does too), which
    makes backup tools (``tar --exclude-caches``, borg, restic) skip the whole environment.
    """
    for name in STRAY_FILES - owned:
        (prefix / name).unlink(missing_ok=True)


def _write_history(prefix: Path, packages: list[PackedPackage], channels: dict[str, str]) -> None:
    """One conda-style revision listing every package, unless rattler already wrote one."""
    history = prefix / "conda-meta" / "history"
    if history.is_file() and history.read_text(encoding="utf-8").strip():
        return
    lines = [
        f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} <==",
        f"# cmd: conda-pixi-pack unpack (conda-pixi-pack {__version__}, rattler backend)",
    ]
    dists = []
    for package in packages:
        record = package.record
        channel = channels[_meta_path(prefix, record).name]
        dists.append(f"+{_channel_name(channel)}::{record['name']}-{record['version']}-{record['build']}")
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


def install_with_rattler(
    packages: list[PackedPackage],
    prefix: Path,
    *,
    pkgs_dir: Path | None,
    reporter: Reporter,
    on_linked: Callable[[], None] | None = None,
) -> None:
    """Install ``packages`` into the new ``prefix`` with rattler; raises PackError on any failure.

    ``pkgs_dir`` keeps the extracted packages for later runs; without it they go to a temporary
    folder beside ``prefix`` (same file system, so rattler can hard-link) removed at the end.
    ``on_linked`` is called once the package files are no longer needed (the caller may start
    removing them while the metadata is finished).
    """
    records = _records(packages)
    temp_cache = None
    if pkgs_dir is None:
        temp_cache = tempfile.TemporaryDirectory(
            prefix=".conda-pixi-pack-cache-", dir=prefix.parent, ignore_cleanup_errors=True
        )
    cache = pkgs_dir if pkgs_dir is not None else Path(temp_cache.name)  # type: ignore[union-attr]
    task = reporter.task("Installing packages", len(records), "pkg")
    progress = _Progress(task)
    try:
        asyncio.run(
            rattler_install(
                records,
                prefix,
                cache_dir=cache,
                installed_packages=[],
                execute_link_scripts=True,
                show_progress=False,
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
    # The prefix holds hard links to the extracted packages, so the temporary cache can go now:
    # its ~10,000 unlinks run in a thread (they release the GIL) while conda-meta is rewritten.
    cleaner = None
    if temp_cache is not None:
        cleaner = threading.Thread(target=temp_cache.cleanup, name="remove-temporary-cache")
        cleaner.start()
    try:
        if progress.failed_post_links:
            raise PackError(
                f"the post-link script of {', '.join(sorted(progress.failed_post_links))} failed",
                # rattler logs the script's output only to its own (Rust) log, which py-rattler
                # does not pass on; conda's installer reports it.
                "the environment was not created; to see the script's output, "
                "unpack with --installer conda where conda is installed",
            )
        channels, owned = _restore_provenance(prefix, packages)
        _remove_stray_files(prefix, owned)
        _write_history(prefix, packages, channels)
    finally:
        if cleaner is not None:
            cleaner.join()
