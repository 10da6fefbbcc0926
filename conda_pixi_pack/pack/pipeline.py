"""``pack``: a source's locked environment -> an offline pack (orchestration only).

source (:mod:`~conda_pixi_pack.pack.sources`) -> locked records -> ``--inject`` files checked
(:mod:`~conda_pixi_pack.pack.inject`) -> the format's files (:mod:`~conda_pixi_pack.format`) ->
an archive laid out around the packages, each download (:mod:`~conda_pixi_pack.pack.download`,
through the cache) written into its slot (:func:`_assemble_in_place`); or, where sizes or
records come only with the files, or the output is no archive file: downloads into a staging
folder, the format's files, the output's writer (:mod:`~conda_pixi_pack.pack.output`,
:func:`_assemble`). Nothing appears at the output path unless the whole pack succeeded; the
staging folder is removed on every path out, Ctrl-C included. Every check that can fail (the
output, the cache folder, the source, the injected files) runs before anything is downloaded.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from conda_pixi_pack import __version__
from conda_pixi_pack import format as layout
from conda_pixi_pack.errors import PackError, UserCancelled
from conda_pixi_pack.fileio import remove_uninterrupted
from conda_pixi_pack.pack import cache, download, inject, package_caches, supply
from conda_pixi_pack.pack.destination import FolderDestination, SlotDestination
from conda_pixi_pack.pack.output import OutputMode, default_output, file_url_path, plan_output
from conda_pixi_pack.pack.sources.lockfile import LockSource
from conda_pixi_pack.pack.urls import public_url
from conda_pixi_pack.progress import Reporter, plural

if TYPE_CHECKING:
    from collections.abc import Mapping

    from conda_pixi_pack.artifacts import Artifact
    from conda_pixi_pack.pack.output import Output
    from conda_pixi_pack.pack.sources import LockedConda, LockedEnvironment, LockedWheel, Source
    from conda_pixi_pack.pack.unpacker import UnpackerSource
    from conda_pixi_pack.pack.writers.executable import ScriptFacts

#: Downloads land here inside the pack's folder, then move to their place in the pack.
FETCH_DIR: Final = ".fetch"
#: The pack is assembled in this folder of the staging folder ...
PACK_DIR: Final = "pack"
#: ... and an embedded installer (``--unpacker-source``) is prepared beside it.
UNPACKER_DIR: Final = "unpacker"


@dataclass
class PackOptions:
    """Everything ``pack`` needs; the CLI fills it from its flags."""

    #: Where the packages are listed (a lock file by default: ``./pixi.lock``).
    source: Source = field(default_factory=LockSource)
    #: A conda subdir such as ``linux-64``; None means the platform this runs on.
    platform: str | None = None
    mode: OutputMode = OutputMode.ARCHIVE
    #: Target archive, folder or script; None: pixi-pack's default name for the mode and platform
    #: (``environment.tar``, ``environment``, ``environment.sh``/``.ps1``). Unused by
    #: :attr:`OutputMode.STREAM` (standard output).
    output: Path | None = None
    #: ``-o`` as typed, when there is one: its trailing separator (``-o out/``) names a folder,
    #: which ``output`` (a Path) no longer shows.
    output_text: str | None = None
    cache_dir: Path | None = None
    inject: list[Path] = field(default_factory=list)
    auth_file: Path | None = None
    config_file: Path | None = None
    #: The installer a self-extracting pack embeds (``--unpacker-source``, ``--unpacker-sha256``).
    unpacker: UnpackerSource | None = None
    #: Leave out (with a warning) what the source lists but cannot be packed exactly, instead of
    #: refusing to pack.
    ignore_missing: bool = False
    #: Say what would be packed and where each file would come from; fetch and write nothing.
    dry_run: bool = False

    @property
    def network(self) -> download.NetworkSettings:
        """The network settings every fetch of this pack uses (packages, the embedded installer)."""
        return download.NetworkSettings(auth_file=self.auth_file, config_file=self.config_file)


@dataclass(frozen=True)
class PlannedFile:
    """A file of the pack, as ``--dry-run`` shows it."""

    path: str
    label: str
    origin: str
    location: str
    size: int | None


@dataclass
class PackResult:
    """What the CLI reports when a pack is done."""

    output: Path | None  # None when written to stdout
    conda_packages: int
    wheels: int
    size: int  # bytes of the archive (or of the folder's files); with dry_run, of the packages
    platform: str
    #: How many files came from each place: ``cache``, ``package cache``, ``download``, ``local file``.
    sources: dict[str, int] = field(default_factory=dict)
    #: What the source listed but could not be packed exactly (left out with ``ignore_missing``).
    skipped: list[str] = field(default_factory=list)
    dry_run: bool = False
    #: With ``dry_run``: every file, and where it would come from.
    files: list[PlannedFile] = field(default_factory=list)


def pack(options: PackOptions, reporter: Reporter | None = None) -> PackResult:
    """Write the pack described by ``options``; raises PackError, leaves nothing behind on failure."""
    reporter = reporter or Reporter()
    path = options.output or default_output(options.mode, options.platform or layout.current_platform())
    output = plan_output(options.mode, path, options.output_text)
    if options.unpacker is not None:
        from conda_pixi_pack.pack import unpacker  # with the executable writer: ~5 ms a tar pack need not pay

        unpacker.check_source(options.unpacker)
    try:
        return _pack(options, output, reporter)
    except KeyboardInterrupt:
        if output.replaced():  # the signal came after the rename: say so, the pack is there
            raise UserCancelled(
                f"interrupted, but the pack was already complete at {output.target}"
            ) from None
        raise UserCancelled() from None


def _pack(options: PackOptions, output: Output, reporter: Reporter) -> PackResult:
    if options.cache_dir is not None:
        cache.check_folder(options.cache_dir)
    env = options.source.load(options.platform, reporter)
    skipped = _missing(env, options, reporter)
    if not options.dry_run:
        output.refuse_overlap(_inputs(env, options), options.cache_dir)
    injection, conda, wheels = _with_injections(env, options, reporter)
    supplies = supply.plan(
        [(c.artifact, c.local_copies) for c in conda] + [(w.artifact, ()) for w in wheels],
        options.cache_dir,
        package_cache_dirs=package_caches.package_cache_dirs,
    )
    result = PackResult(
        output=output.target,
        conda_packages=len(conda) + len(injection.conda),
        wheels=len(wheels) + len(injection.wheels),
        size=0,
        platform=env.platform,
        sources=supply.counts(supplies),
        skipped=skipped,
        dry_run=options.dry_run,
    )
    _check_local_files(conda)
    if options.dry_run:
        result.files = [_planned(s) for s in supplies]
        result.size = sum(s.artifact.size or 0 for s in supplies)
        return result
    staging = output.make_staging()
    try:
        parts = _Parts(env.platform, conda, wheels, injection, supplies)
        result.size = _assemble_in_place(staging / PACK_DIR, output, parts, options, reporter)
        if result.size is None:
            result.size = _assemble(staging, output, parts, options, reporter)
    finally:
        _remove_staging(staging)
    return result


@dataclass(frozen=True)
class _Parts:
    """What a pack is made of, once the source is read and the injections checked."""

    platform: str
    conda: list[LockedConda]
    wheels: list[LockedWheel]
    injection: inject.Injection
    supplies: list[supply.Supply]


def _assemble(staging: Path, output: Output, parts: _Parts, options: PackOptions, reporter: Reporter) -> int:
    """Fetch every file into the staging folder, add the format's files, and hand the folder to
    the output's writer."""
    root = staging / PACK_DIR
    conda = _fetch(root, parts.conda, parts.wheels, parts.supplies, options, reporter)
    inject.copy_into(root, layout.CHANNEL_DIR, layout.PYPI_DIR, parts.injection)
    _write_format_files(root, parts.platform, conda, parts.wheels, parts.injection)
    facts = _facts(
        parts.platform, conda, parts.wheels, parts.injection, options, staging / UNPACKER_DIR, reporter
    )
    return output.write(root, reporter, facts)


def _assemble_in_place(
    root: Path, output: Output, parts: _Parts, options: PackOptions, reporter: Reporter
) -> int | None:
    """Fetch every package straight into its place in the archive; None where that cannot be.

    It can when the output is an archive file and every downloaded file's size and record are
    known before the download (a lock's conda packages): then the archive's layout is known too,
    its headers and the format's files are written first, and each package is written once, by
    its download, at its offset. That saves writing every byte a second time (the staging copy
    read back into the tar) and removing the staging copies: about a third of a pack's time
    where the network is fast. Wheels (no size in a lock) and ``@EXPLICIT`` lines (no record)
    take the staging folder.
    """
    conda = parts.conda
    if not output.fills_in_place or parts.wheels:
        return None
    if any(c.artifact.size is None or c.record_from_archive for c in conda):
        return None
    holes = {f"{layout.CHANNEL_DIR}/{c.artifact.relative_path}": c.artifact.size or 0 for c in conda}
    inject.copy_into(root, layout.CHANNEL_DIR, layout.PYPI_DIR, parts.injection)
    _write_format_files(root, parts.platform, conda, parts.wheels, parts.injection)
    with output.write_around(root, holes, reporter) as archive:
        _say_fetching(conda, parts.wheels, parts.supplies, reporter)
        destination = SlotDestination(archive.slots, f"{layout.CHANNEL_DIR}/", archive.target)
        supply.fetch(
            parts.supplies,
            destination,
            network=options.network,
            cache_dir=options.cache_dir,
            reporter=reporter,
        )
    return archive.size


def _missing(env: LockedEnvironment, options: PackOptions, reporter: Reporter) -> list[str]:
    """What cannot be packed exactly: an error naming all of it, or (``ignore_missing``) left out
    with a warning each."""
    if not env.missing:
        return []
    if not options.ignore_missing:
        raise PackError(
            f"{plural(len(env.missing), 'package')} cannot be packed exactly: "
            + "; ".join(str(m) for m in env.missing),
            "pack the rest with --ignore-missing (these are left out, and named in the summary)",
        )
    for missing in env.missing:
        reporter.warn(f"left out {missing}")
    return [str(m) for m in env.missing]


def _with_injections(
    env: LockedEnvironment, options: PackOptions, reporter: Reporter
) -> tuple[inject.Injection, list[LockedConda], list[LockedWheel]]:
    """The ``--inject`` files, read and checked before anything is downloaded (a misfit fails
    fast), and the locked packages they leave in place."""
    injection = inject.read_injections(options.inject, env.platform)
    # Source packages (`pixi build`) cannot be downloaded: each needs a built package injected.
    unbuilt = [name for name in env.source_packages if name not in injection.conda_names]
    if unbuilt:
        raise PackError(
            f"the lock has source packages that must be built first: {', '.join(unbuilt)}",
            "build each into a .conda file (for example with `pixi build`) and add it with `--inject FILE`",
        )
    conda, wheels = inject.without_replaced(env.conda, env.wheels, injection, reporter)
    if injection.conda:
        inject.check_fits([c.record for c in conda], [c.record for c in injection.conda], reporter)
    return injection, conda, wheels


def _check_local_files(conda: list[LockedConda]) -> None:
    """A package named by a local path or ``file://`` URL must be there: said now, before anything
    is downloaded, with a hint that matches how the source names it."""
    for item in conda:
        if urlsplit(item.artifact.url).scheme.lower() != "file":
            continue
        path = file_url_path(item.artifact.url)
        if path.exists() or any(copy.is_file() for copy in item.local_copies):
            continue
        if "://" in item.url:
            how = f"it is named by the URL {public_url(item.url)}"
        elif os.path.isabs(item.url):
            how = f"it is named by the absolute path {item.url}"
        else:
            how = f"the lock names it by {item.url}, relative to the lock"
        raise PackError(
            f"{item.artifact.label}: {path} does not exist", f"{how}; put the file back, or lock again"
        )


def _planned(item: supply.Supply) -> PlannedFile:
    artifact = item.artifact
    location = str(item.path) if item.path is not None else public_url(artifact.url)
    return PlannedFile(artifact.relative_path, artifact.label, item.origin, location, artifact.size)


def _facts(
    platform: str,
    conda: list[LockedConda],
    wheels: list[LockedWheel],
    injection: inject.Injection,
    options: PackOptions,
    work: Path,
    reporter: Reporter,
) -> ScriptFacts:
    """What a self-extracting pack's script needs to know, its installer fetched and checked."""
    from conda_pixi_pack.pack.writers.executable import ScriptFacts  # ~5 ms a tar pack need not pay

    names = {str(c.record["name"]) for c in conda} | injection.conda_names
    embedded = None
    if options.unpacker is not None:
        from conda_pixi_pack.pack import unpacker

        embedded = unpacker.resolve(
            options.unpacker,
            platform,
            work,
            network=options.network,
            cache_dir=options.cache_dir,
            reporter=reporter,
        )
    return ScriptFacts(
        platform=platform,
        packages=len(conda) + len(injection.conda),
        wheels=tuple(f"{w.name}=={w.version}" for w in [*wheels, *injection.wheels]),
        has_pip="pip" in names,
        unpacker=embedded,
    )


def _inputs(env: LockedEnvironment, options: PackOptions) -> list[tuple[Path, str]]:
    """Every file the pack reads, which its output must never replace (checked once the source
    is read, since it names the local packages, and before anything is fetched)."""
    inputs = list(env.inputs)
    for artifact in [c.artifact for c in env.conda] + [w.artifact for w in env.wheels]:
        if urlsplit(artifact.url).scheme.lower() == "file":
            inputs.append((file_url_path(artifact.url), f"an input package ({artifact.file_name})"))
    inputs += [(path, "an --inject file") for path in options.inject]
    inputs += [(path, "the --auth-file") for path in [options.auth_file] if path is not None]
    inputs += [(path, "the --config file") for path in [options.config_file] if path is not None]
    return inputs


def _remove_staging(staging: Path) -> None:
    """Remove the staging folder even if Ctrl-C or SIGTERM comes while it is removed (it can hold
    GBs of links or copies); the interrupt is raised again once it is gone."""
    if remove_uninterrupted(lambda: shutil.rmtree(staging, ignore_errors=True)):
        raise KeyboardInterrupt


def _fetch(
    root: Path,
    conda: list[LockedConda],
    wheels: list[LockedWheel],
    supplies: list[supply.Supply],
    options: PackOptions,
    reporter: Reporter,
) -> list[LockedConda]:
    """Put every package and wheel into its place below ``root``; returns the conda packages with
    the records of those whose record the archive itself completes (an ``@EXPLICIT`` line)."""
    _say_fetching(conda, wheels, supplies, reporter)
    fetch_root = root / FETCH_DIR
    fetched = supply.fetch(
        supplies,
        FolderDestination(fetch_root),
        network=options.network,
        cache_dir=options.cache_dir,
        reporter=reporter,
    )
    channel = root / layout.CHANNEL_DIR
    for item in conda:
        _place(fetched, item.artifact, fetch_root, channel / item.subdir / item.file_name)
    for wheel in wheels:
        _place(fetched, wheel.artifact, fetch_root, root / layout.PYPI_DIR / wheel.file_name)
    shutil.rmtree(fetch_root, ignore_errors=True)
    return [_completed(item, channel / item.subdir / item.file_name) for item in conda]


def _say_fetching(
    conda: list[LockedConda], wheels: list[LockedWheel], supplies: list[supply.Supply], reporter: Reporter
) -> None:
    reporter.info(
        f"Fetching {plural(len(conda), 'conda package')} and {plural(len(wheels), 'wheel')} "
        f"({', '.join(f'{n} from {o}' for o, n in supply.counts(supplies).items())})"
    )


def _completed(item: LockedConda, archive: Path) -> LockedConda:
    """``item`` with the record its archive gives (``info/index.json``, size and checksums) where
    the source only knew what the URL says; the archive must be the package the URL names."""
    if not item.record_from_archive:
        return item
    record = inject.archive_record(archive, f"the list names {item.url}; check that URL")
    record["fn"] = item.file_name
    named = tuple(str(item.record[k]) for k in ("name", "version", "build"))
    found = tuple(str(record[k]) for k in ("name", "version", "build"))
    if named != found:
        raise PackError(
            f"{item.url} holds {'-'.join(found)}, not the {'-'.join(named)} its name says",
            "check the URL in the list",
        )
    return replace(item, record=record, record_from_archive=False)


def _write_format_files(
    root: Path,
    platform: str,
    conda: list[LockedConda],
    wheels: list[LockedWheel],
    injection: inject.Injection,
) -> None:
    """``repodata.json`` of every subdir, ``pixi-pack.json``, ``environment.yml`` and the
    ``@EXPLICIT`` list."""
    channel = root / layout.CHANNEL_DIR
    records: list[tuple[str, str, Mapping[str, Any]]] = [(c.subdir, c.file_name, c.record) for c in conda]
    records += [(i.subdir, i.file_name, i.record) for i in injection.conda]
    by_subdir: dict[str, dict[str, Mapping[str, Any]]] = {layout.NOARCH: {}}
    for subdir, file_name, record in records:
        by_subdir.setdefault(subdir, {})[file_name] = record
    for subdir, subdir_records in by_subdir.items():
        (channel / subdir).mkdir(parents=True, exist_ok=True)
        document = layout.repodata(subdir, subdir_records)
        (channel / subdir / layout.REPODATA_FILE).write_text(layout.dump_repodata(document), encoding="utf-8")
    metadata = layout.PackMetadata(layout.FORMAT_VERSION, __version__, platform, _origins(conda))
    (root / layout.METADATA_FILE).write_text(metadata.to_json(), encoding="utf-8")
    wheel_specs = [f"{w.name}=={w.version}" for w in wheels]
    wheel_specs += [f"{w.name}=={w.version}" for w in injection.wheels]
    (root / layout.ENVIRONMENT_FILE).write_text(
        layout.environment_yml([layout.conda_spec(r) for _, _, r in records], wheel_specs),
        encoding="utf-8",
    )
    (root / layout.EXPLICIT_FILE).write_text(layout.explicit_list(platform, records), encoding="utf-8")


def _origins(conda: list[LockedConda]) -> dict[str, layout.Origin]:
    """Provenance of the locked packages, as the lock names them, without credentials.

    Only locations that mean the same everywhere are kept: URLs, and absolute paths (which the
    lock spells out). A path relative to the lock, and an ``--inject`` file, depend on where the
    project sits on this machine; recording them would make the same lock give different packs
    (and leak local paths), so such packages carry no origin, like packs from pixi-pack.
    """
    origins: dict[str, layout.Origin] = {}
    for c in conda:
        if "://" in c.url:
            url = public_url(c.url)
        elif os.path.isabs(c.url):
            url = Path(c.url).as_uri()
        else:
            continue
        channel = public_url(c.channel) if c.channel else None
        origins[f"{c.subdir}/{c.file_name}"] = layout.Origin(url, channel)
    return origins


def _place(fetched: Mapping[str, Path], artifact: Artifact, fetch_root: Path, destination: Path) -> None:
    """Move a fetched file to its place in the pack (a rename: same folder tree)."""
    source = fetched.get(artifact.relative_path) or fetch_root / artifact.relative_path
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        source.relative_to(fetch_root)
    except ValueError:
        # Not ours to move (e.g. a path inside the cache): copy it instead.
        shutil.copyfile(source, destination)
    else:
        os.replace(source, destination)
