"""``pack``: a pixi lock -> an offline pack (orchestration only).

The steps, each owned by its own module: read the lock (:mod:`lockfile`), read and check
``--inject`` files (:mod:`inject`), fetch into a staging folder beside the output
(:mod:`download`), write the format's files (:mod:`layout`), then archive deterministically
and rename into place (:mod:`archive`). Nothing appears at the output path unless the whole
pack succeeded; the staging folder is removed on every path out, Ctrl-C included. An output that
is one of the pack's own inputs (the lock, the manifest, a local package, an ``--inject`` file) is
refused before anything is fetched: the rename would destroy it.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from conda_pixi_pack import __version__, archive, cache, download, inject, layout, lockfile
from conda_pixi_pack.errors import PackError, UserCancelled
from conda_pixi_pack.progress import Reporter, plural
from conda_pixi_pack.targets import remove_uninterrupted
from conda_pixi_pack.urls import public_url

if TYPE_CHECKING:
    from collections.abc import Mapping

    from conda_pixi_pack.download import Artifact
    from conda_pixi_pack.lockfile import LockedConda, LockedEnvironment, LockedWheel

#: Downloads land here inside the staging folder, then move to their place in the pack.
FETCH_DIR: Final = ".fetch"
#: Always present, even empty: conda refuses a local channel without ``noarch/repodata.json``.
NOARCH: Final = "noarch"
#: A typed ``-o`` ending in one of these names a folder (``/`` counts on Windows too).
SEPARATORS: Final = tuple(sep for sep in (os.sep, os.altsep) if sep)
#: Standard output's descriptor: ``-o /dev/stdout`` writes into it directly (see :func:`_to_stream`).
STDOUT_FD: Final = 1


@dataclass
class PackOptions:
    """Everything ``pack`` needs; the CLI fills it from its flags."""

    #: ``pixi.toml``, ``pyproject.toml`` or a directory holding one; the lock is ``pixi.lock`` beside it.
    manifest: Path = field(default_factory=Path.cwd)
    environment: str = "default"
    #: A conda subdir such as ``linux-64``; None means the platform this runs on.
    platform: str | None = None
    #: Target archive (or folder with ``directory_only``). Ignored when ``to_stdout``.
    output: Path = Path("environment.tar")
    #: ``-o`` as typed, when there is one: its trailing separator (``-o out/``) names a folder,
    #: which ``output`` (a Path) no longer shows.
    output_text: str | None = None
    to_stdout: bool = False
    directory_only: bool = False
    cache_dir: Path | None = None
    inject: list[Path] = field(default_factory=list)
    ignore_pypi_non_wheel: bool = False
    auth_file: Path | None = None
    config_file: Path | None = None


@dataclass
class PackResult:
    """What the CLI reports when a pack is done."""

    output: Path | None  # None when written to stdout
    conda_packages: int
    wheels: int
    size: int  # bytes of the archive (or of the folder's files)
    platform: str


def pack(options: PackOptions, reporter: Reporter | None = None) -> PackResult:
    """Write the pack described by ``options``; raises PackError, leaves nothing behind on failure."""
    reporter = reporter or Reporter()
    output = _Output()
    try:
        return _pack(options, reporter, output)
    except KeyboardInterrupt:
        if output.replaced():  # the signal came after the rename: say so, the pack is there
            raise UserCancelled(
                f"interrupted, but the pack was already complete at {output.target}"
            ) from None
        raise UserCancelled() from None


@dataclass
class _Output:
    """The output being written, to tell after Ctrl-C whether the new pack is already in place."""

    target: Path | None = None
    before: tuple[int, int] | None = None  # (device, inode) of what was at the target before

    def start(self, target: Path) -> None:
        self.target, self.before = target, _identity(target)

    def replaced(self) -> bool:
        """True once a new file or folder (a new inode: the rename) is at the target."""
        return self.target is not None and _identity(self.target) not in (None, self.before)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _remove_staging(staging: Path) -> None:
    """Remove the staging folder even if Ctrl-C or SIGTERM comes while it is removed (it can hold
    GBs of links or copies); the interrupt is raised again once it is gone."""
    if remove_uninterrupted(lambda: shutil.rmtree(staging, ignore_errors=True)):
        raise KeyboardInterrupt


def _pack(options: PackOptions, reporter: Reporter, output: _Output) -> PackResult:
    if options.to_stdout and options.directory_only:
        raise PackError("a folder pack cannot be written to standard output", "drop -o - or --directory-only")
    target = None if options.to_stdout else _check_output(options)
    # A device or fifo (-o /dev/stdout, -o /dev/null, a named pipe) is written through, like
    # stdout: replacing it by a renamed file would destroy the node and lose the data.
    stream_to = target if target is not None and _is_special(target) else None
    if options.cache_dir is not None:
        cache.check_folder(options.cache_dir)
    env = lockfile.load(
        options.manifest,
        options.environment,
        options.platform,
        ignore_pypi_non_wheel=options.ignore_pypi_non_wheel,
        reporter=reporter,
        allow_source_packages=True,
    )
    if target is not None and stream_to is None:
        _check_not_an_input(target, options, env)
    # Injected files are read and checked before anything is downloaded: a misfit fails fast.
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

    staging = _make_staging(None if stream_to is not None else target)
    try:
        _fill(staging, env, conda, wheels, injection, options, reporter)
        if target is None:
            size = _to_stdout(staging, reporter)
        elif stream_to is not None:
            reporter.info(f"Writing the pack into {stream_to}")
            size = _to_stream(staging, stream_to, reporter)
        elif options.directory_only:
            reporter.info(f"Moving the pack folder into place at {target}")
            output.start(target)
            size = archive.write_tree(staging, target)
        else:
            reporter.info(f"Writing {target}")
            output.start(target)
            size = archive.write_archive(staging, target, reporter)
    finally:
        _remove_staging(staging)
    return PackResult(
        output=target,
        conda_packages=len(conda) + len(injection.conda),
        wheels=len(wheels) + len(injection.wheels),
        size=size,
        platform=env.platform,
    )


def _is_special(path: Path) -> bool:
    """A character device, fifo or socket: something to write into, never to replace."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISBLK(mode)


def _check_output(options: PackOptions) -> Path:
    """Refuse an output we could not create, before any download starts.

    A symbolic link is followed (the pack replaces the file it points to, not the link).
    """
    output, directory_only = options.output, options.directory_only
    typed = options.output_text
    if typed and typed.endswith(SEPARATORS) and not directory_only:
        raise PackError(
            f"cannot write {typed}: a file name is needed, not a folder",
            "give a file name with -o, or use --directory-only to write a folder",
        )
    # Checked on the path as given (stat follows links): /dev/stdout on a pipe leads to
    # /proc/PID/fd/1 -> "pipe:[…]", which stat can open but realpath turns into a missing path.
    given = Path(os.path.abspath(output))
    if _is_special(given):
        if directory_only:
            raise PackError(f"cannot write a pack folder into {given}: it is a device or pipe")
        return given
    target = Path(os.path.realpath(given))
    parent = target.parent
    if not parent.is_dir():
        raise PackError(
            f"cannot write {target}: the folder {parent} does not exist",
            "create it first or choose another output with -o",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PackError(
            f"cannot write {target}: the folder {parent} is not writable",
            "choose another output with -o",
        )
    if directory_only:
        if target.exists() and not target.is_dir():
            raise PackError(
                f"cannot write the pack folder {target}: a file of that name exists",
                "remove it or choose another output with -o",
            )
        if target.is_dir() and any(target.iterdir()):
            raise PackError(
                f"cannot write the pack folder {target}: it exists and is not empty",
                "remove it or choose another output with -o",
            )
    elif target.is_dir():
        raise PackError(
            f"cannot write {target}: it is a folder",
            "give a file name with -o, or use --directory-only to write a folder",
        )
    return target


def _check_not_an_input(target: Path, options: PackOptions, env: LockedEnvironment) -> None:
    """Refuse an output that is one of the pack's own inputs: the pack would replace it (data loss).

    Checked once the lock is read (it names the local packages) and before anything is fetched.
    """
    inputs: list[tuple[Path, str]] = [(env.lock_path, "the lock file")]
    manifest = Path(options.manifest)
    if manifest.is_dir():
        found = [manifest / name for name in lockfile.MANIFEST_NAMES]
        inputs += [(path, "the manifest") for path in found if path.is_file()]
    else:
        inputs.append((manifest, "the manifest"))
    for artifact in [c.artifact for c in env.conda] + [w.artifact for w in env.wheels]:
        if urlsplit(artifact.url).scheme.lower() == "file":
            inputs.append((_file_url_path(artifact.url), f"an input package ({artifact.file_name})"))
    inputs += [(path, "an --inject file") for path in options.inject]
    inputs += [(path, "the --auth-file") for path in [options.auth_file] if path is not None]
    inputs += [(path, "the --config file") for path in [options.config_file] if path is not None]
    for path, what in inputs:
        if _same_file(target, path):
            raise PackError(f"the output {target} is {what} of this pack", "choose another output with -o")
    if options.cache_dir is not None:
        cache_root = Path(os.path.realpath(options.cache_dir))
        # A pack inside the cache could replace an entry; a cache inside a folder pack would be packed.
        inside = target.is_relative_to(cache_root)
        if inside or (options.directory_only and cache_root.is_relative_to(target)):
            raise PackError(
                f"the output {target} and the --use-cache folder {cache_root} overlap",
                "choose another output with -o",
            )


def _same_file(a: Path, b: Path) -> bool:
    """One file by identity where both exist (symbolic and hard links), else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _file_url_path(url: str) -> Path:
    """The local path of a ``file://`` URL (urllib.request is imported only for such locks)."""
    from urllib.request import url2pathname

    return Path(url2pathname(urlsplit(url).path))


def _make_staging(target: Path | None) -> Path:
    """A private folder beside the target (one file system: the final rename is atomic)."""
    try:
        if target is None:
            return Path(tempfile.mkdtemp(prefix="conda-pixi-pack-"))
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        where = target.parent if target is not None else tempfile.gettempdir()
        raise PackError(f"cannot create a temporary folder in {where}: {exc.strerror or exc}") from None


def _fill(
    root: Path,
    env: LockedEnvironment,
    conda: list[LockedConda],
    wheels: list[LockedWheel],
    injection: inject.Injection,
    options: PackOptions,
    reporter: Reporter,
) -> None:
    """Put every file of the pack into ``root``."""
    channel = root / layout.CHANNEL_DIR
    artifacts = [c.artifact for c in conda] + [w.artifact for w in wheels]
    reporter.info(f"Fetching {plural(len(conda), 'conda package')} and {plural(len(wheels), 'wheel')}")
    fetch_root = root / FETCH_DIR
    fetched = download.fetch_all(
        artifacts,
        fetch_root,
        network=download.NetworkSettings(auth_file=options.auth_file, config_file=options.config_file),
        cache_dir=options.cache_dir,
        reporter=reporter,
    )
    for item in conda:
        _place(fetched, item.artifact, fetch_root, channel / item.subdir / item.file_name)
    for wheel in wheels:
        _place(fetched, wheel.artifact, fetch_root, root / layout.PYPI_DIR / wheel.file_name)
    shutil.rmtree(fetch_root, ignore_errors=True)
    inject.copy_into(root, layout.CHANNEL_DIR, layout.PYPI_DIR, injection)

    records: list[tuple[str, str, Mapping[str, Any]]] = [(c.subdir, c.file_name, c.record) for c in conda]
    records += [(i.subdir, i.file_name, i.record) for i in injection.conda]
    by_subdir: dict[str, dict[str, Mapping[str, Any]]] = {NOARCH: {}}
    for subdir, file_name, record in records:
        by_subdir.setdefault(subdir, {})[file_name] = record
    for subdir, subdir_records in by_subdir.items():
        (channel / subdir).mkdir(parents=True, exist_ok=True)
        document = layout.repodata(subdir, subdir_records)
        (channel / subdir / layout.REPODATA_FILE).write_text(layout.dump_repodata(document), encoding="utf-8")

    metadata = layout.PackMetadata(layout.FORMAT_VERSION, __version__, env.platform, _origins(conda))
    (root / layout.METADATA_FILE).write_text(metadata.to_json(), encoding="utf-8")
    wheel_specs = [f"{w.name}=={w.version}" for w in wheels]
    wheel_specs += [f"{w.name}=={w.version}" for w in injection.wheels]
    (root / layout.ENVIRONMENT_FILE).write_text(
        layout.environment_yml([layout.conda_spec(r) for _, _, r in records], wheel_specs),
        encoding="utf-8",
    )


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


def _to_stream(root: Path, target: Path, reporter: Reporter) -> int:
    """Stream the tar into a device, fifo or socket (there is nothing to rename atomically).

    Our own standard output (``-o /dev/stdout``) is written through its descriptor: a socket
    there cannot be opened again by name (ENXIO), a pipe or device can but need not be.
    """
    try:
        own = names_descriptor(target, STDOUT_FD)
        with open(os.dup(STDOUT_FD) if own else target, "wb") as sink:
            return archive.write_tar(root, sink, reporter)
    except BrokenPipeError:
        raise PackError(f"{target} was closed before the pack was written") from None
    except OSError as exc:
        raise PackError(f"cannot write the pack into {target}: {exc.strerror or exc}") from None


def names_descriptor(path: str | Path | None, fd: int) -> bool:
    """Whether ``path`` (``/dev/stdout``, or any other name) is the very file descriptor ``fd`` is
    open on. The descriptor itself is asked: ``sys.stdout`` may be None (closed) or replaced."""
    if path is None:
        return False
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except (OSError, ValueError):  # no such descriptor (closed), or the path went away
        return False


def _to_stdout(root: Path, reporter: Reporter) -> int:
    """Stream the tar to standard output; nothing else may be written there."""
    sink = sys.stdout.buffer
    try:
        size = archive.write_tar(root, sink, reporter)
        sink.flush()
    except BrokenPipeError:
        raise PackError("standard output was closed before the pack was written") from None
    return size
