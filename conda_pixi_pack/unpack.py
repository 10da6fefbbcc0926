"""``unpack``: a pack -> a working environment, all or nothing (orchestration only).

The steps, each owned by its own module: resolve the target (:mod:`targets`), extract the pack
safely (:mod:`extract`) while its packages are hashed, validate it (:mod:`validate`), install with
conda or rattler (:mod:`install`) and the wheels, then write the activation script
(:mod:`activation`). Every step records what it created in an undo log, so a failure or Ctrl-C
takes back exactly what this run made.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from conda_pixi_pack.activation import check_quotable, resolve_shell, script_path, write_activation_script
from conda_pixi_pack.errors import PackError, UserCancelled
from conda_pixi_pack.extract import Extent, extract_tar
from conda_pixi_pack.install.seed import seeding_available
from conda_pixi_pack.layout import CHANNEL_DIR, conda_spec
from conda_pixi_pack.progress import Reporter
from conda_pixi_pack.targets import (
    TEMP_PREFIX,
    PrefixSwap,
    check_prefix,
    make_dirs,
    remove_created,
    remove_uninterrupted,
    resolve_prefix,
    rmtree,
)
from conda_pixi_pack.validate import PackageDigests, current_platform, is_package_path, validate_pack

if TYPE_CHECKING:
    from collections.abc import Callable

    from conda_pixi_pack.validate import ValidatedPack

Installer = Literal["conda", "rattler"]


@dataclass
class UnpackOptions:
    """Everything ``unpack`` needs; the CLI fills it from its flags."""

    #: A pack archive or a folder made by ``pack --directory-only``; ignored with ``from_stdin``.
    source: Path = Path("environment.tar")
    from_stdin: bool = False
    #: pixi-unpack's target: ``<output_directory>/<env_name>``; also where ``activate.<ext>`` goes.
    output_directory: Path = field(default_factory=Path.cwd)
    env_name: str = "env"
    #: conda-style targets; at most one of them, each overriding output_directory/env_name.
    name: str | None = None
    prefix: Path | None = None
    force: bool = False
    #: bash, zsh, fish, xonsh, powershell, cmd; None means the platform's default.
    shell: str | None = None
    #: None: conda when importable, else rattler.
    installer: Installer | None = None
    pkgs_dir: Path | None = None
    dry_run: bool = False


@dataclass
class UnpackResult:
    """What the CLI reports (and prints with ``--json``)."""

    prefix: Path
    installer: Installer
    platform: str
    conda_packages: list[str]  # name=version=build
    wheels: list[str]  # wheel file names
    activation_script: Path | None  # None with dry_run
    dry_run: bool = False
    #: True when ``--force`` replaced an existing environment.
    replaced: bool = False
    #: ``pixi-pack-version`` of the pack (the tool that wrote it).
    pack_tool_version: str | None = None


@dataclass
class _Undo:
    """What this run has created so far, so that a failure can take exactly that back."""

    created_dirs: list[Path] = field(default_factory=list)
    work_dir: Path | None = None
    swap: PrefixSwap | None = None
    new_prefix: Path | None = None
    #: The prefix existed as an empty folder: emptied again rather than removed.
    keep_prefix_dir: bool = False
    script: Path | None = None
    #: The conda backend registers the new prefix in environments.txt; a rollback takes it out.
    unregister: bool = False
    #: Removals running in the background; joined before anything else is cleaned up.
    removals: list[threading.Thread] = field(default_factory=list)

    def remove_in_background(self, path: Path) -> None:
        """Start removing ``path`` (unlinks release the GIL, so this overlaps the metadata work)."""
        thread = threading.Thread(
            target=shutil.rmtree, args=(path,), kwargs={"ignore_errors": True}, name="remove-packages"
        )
        thread.start()
        self.removals.append(thread)

    def join_removals(self) -> None:
        while self.removals:
            self.removals.pop().join()

    def rollback(self, reporter: Reporter) -> None:
        self.join_removals()
        if self.script is not None:
            rmtree(self.script, reporter)
        if self.new_prefix is not None:
            rmtree(self.new_prefix, reporter)
            if self.unregister:
                from conda_pixi_pack.install.conda import unregister

                unregister(self.new_prefix)
            if self.keep_prefix_dir:
                self.new_prefix.mkdir(exist_ok=True)
        if self.swap is not None:
            self.swap.rollback(reporter)
        self.cleanup(reporter)

    def rollback_fully(self, reporter: Reporter) -> None:
        """:meth:`rollback`, run to its end under any number of Ctrl-C (each step can be repeated:
        it starts again from the first)."""
        remove_uninterrupted(lambda: self.rollback(reporter))

    def cleanup(self, reporter: Reporter) -> None:
        self.join_removals()
        if self.work_dir is not None and (self.swap is None or self.swap.moved is None):
            rmtree(self.work_dir, reporter)
        remove_created(self.created_dirs)


def conda_importable() -> bool:
    """True when conda can be imported (found *and* importable: a broken install counts as absent)."""
    if importlib.util.find_spec("conda") is None:
        return False
    try:
        import conda.core.link  # noqa: F401
    except Exception:  # any import-time failure means the conda backend cannot work
        return False
    return True


def _registered(prefix: Path) -> bool:
    """Whether conda already lists ``prefix`` in environments.txt (then a rollback leaves it)."""
    from conda_pixi_pack.install.conda import is_registered

    return is_registered(prefix)


def choose_installer(requested: Installer | None) -> Installer:
    """``requested``, or conda when importable, else rattler."""
    if requested == "rattler":
        return "rattler"
    if conda_importable():
        return "conda"
    if requested == "conda":
        raise PackError(
            "the conda installer needs conda, which is not importable here",
            "use --installer rattler",
        )
    return "rattler"


def _open_source(
    options: UnpackOptions,
    undo: _Undo,
    work_parent: Path,
    reporter: Reporter,
    digests: PackageDigests,
    *,
    leave_packages: bool,
    hash_left: bool,
) -> tuple[Path, dict[Path, Extent]]:
    """The root of the pack: a folder pack as it is, or a tar extracted into a private folder
    (each package file handed to ``digests`` as soon as it is written).

    With ``leave_packages`` a pack file's package files stay inside it (see extract.py): the
    returned mapping says where they are, and ``hash_left`` hands them to ``digests`` too.
    """
    source = options.source
    if not options.from_stdin:
        if source.is_dir():
            return Path(os.path.abspath(source)), {}
        if not source.exists():
            raise PackError(f"pack {source} does not exist", "give the path of a pack file or folder")
    try:
        undo.work_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=work_parent))
    except OSError as exc:
        raise PackError(f"cannot create a temporary folder in {work_parent}: {exc.strerror or exc}") from None
    root = undo.work_dir / "pack"
    root.mkdir()
    extents = extract_tar(
        sys.stdin.buffer if options.from_stdin else source,
        root,
        reporter,
        on_file=digests.submit,
        leave=is_package_path if leave_packages else None,
    )
    if hash_left:
        for path, extent in extents.items():
            digests.submit(path, extent)
    return root, extents


def _install(
    installer: Installer,
    pack: ValidatedPack,
    prefix: Path,
    options: UnpackOptions,
    reporter: Reporter,
    on_linked: Callable[[], None] | None,
) -> None:
    # Imported here: conda must not be imported unless its backend is used, and the wheel
    # installer only when there are wheels.
    if installer == "conda":
        from conda_pixi_pack.install.conda import install_with_conda

        install_with_conda(
            pack.packages, prefix, pkgs_dir=options.pkgs_dir, reporter=reporter, on_linked=on_linked
        )
    else:
        from conda_pixi_pack.install.rattler import install_with_rattler

        install_with_rattler(
            pack.packages, prefix, pkgs_dir=options.pkgs_dir, reporter=reporter, on_linked=on_linked
        )
    if pack.wheels:
        from conda_pixi_pack.install.wheels import install_wheels

        install_wheels(prefix, pack.wheels, reporter=reporter, checked=True)


def unpack(options: UnpackOptions, reporter: Reporter | None = None) -> UnpackResult:
    """Create the environment described by ``options``; raises PackError, rolls back on failure.

    Order matters for all-or-nothing: every check (options, target, pack contents and checksums)
    runs before the target is touched; an environment being replaced is only moved aside, and
    the activation script is written last, atomically.
    """
    reporter = reporter or Reporter()
    platform = current_platform()
    shell = resolve_shell(options.shell, platform)
    installer = choose_installer(options.installer)
    if options.pkgs_dir is not None:
        _check_pkgs_dir(options.pkgs_dir)
    prefix = resolve_prefix(
        output_directory=options.output_directory,
        env_name=options.env_name,
        name=options.name,
        prefix=options.prefix,
    )
    check_quotable(prefix, shell)
    output_directory = Path(os.path.abspath(options.output_directory))
    replace = check_prefix(prefix, force=options.force)
    # Decided now, before any folder is made (-o may lie inside the new prefix): an empty folder
    # that was there is emptied again on failure, one we made is removed.
    existed_empty = prefix.is_dir() and not replace
    undo = _Undo()
    try:
        if options.dry_run:
            work_parent = prefix.parent if prefix.parent.is_dir() else Path(tempfile.gettempdir())
        else:
            undo.created_dirs += make_dirs(prefix.parent)
            work_parent = prefix.parent
        # Packages are hashed while the rest of the tar is extracted; leaving the block stops and
        # joins the hashing threads, so none outlives validation (or reads during a rollback).
        with PackageDigests() as digests:
            # The rattler backend extracts the packages straight out of a pack file, checking
            # their checksums as it goes, before it links anything (install/seed.py); conda's
            # installer reads package files. A dry run checks them here.
            leave = installer == "rattler" and seeding_available()
            defer = leave and not options.dry_run
            root, extents = _open_source(
                options, undo, work_parent, reporter, digests, leave_packages=leave, hash_left=not defer
            )
            resolved = root.resolve()
            if replace and (resolved == prefix.resolve() or prefix.resolve() in resolved.parents):
                raise PackError(f"the pack {root} is inside the environment {prefix} it would replace")
            pack = validate_pack(
                root, reporter, platform=platform, digests=digests, extents=extents, defer_checksums=defer
            )
        result = UnpackResult(
            prefix=prefix,
            installer=installer,
            platform=platform,
            conda_packages=sorted(conda_spec(p.record) for p in pack.packages),
            wheels=[w.name for w in pack.wheels],
            activation_script=None,
            dry_run=options.dry_run,
            replaced=replace,
            pack_tool_version=pack.metadata.tool_version,
        )
        if options.dry_run:
            undo.cleanup(reporter)
            return result
        undo.created_dirs += make_dirs(output_directory)
        if replace:
            assert undo.work_dir is not None or root.is_dir()
            undo.swap = PrefixSwap(prefix, undo.work_dir or _aside_dir(undo, prefix))
            undo.swap.move_aside()
        undo.keep_prefix_dir = existed_empty
        undo.new_prefix = prefix
        if installer == "conda":
            undo.unregister = not _registered(prefix)
        reporter.info(f"Installing {len(pack.packages)} packages into {prefix} with {installer}")
        # Packages we extracted are not needed once linked: remove them while the rest finishes
        # (never a folder pack: that is the user's).
        ours = undo.work_dir is not None and undo.work_dir in root.parents
        extracted = root / CHANNEL_DIR if ours else None
        _install(
            installer,
            pack,
            prefix,
            options,
            reporter,
            on_linked=(lambda: undo.remove_in_background(extracted)) if extracted is not None else None,
        )
        # written atomically: until the rename, an activate script already there stays as it was
        had_script = script_path(output_directory, shell).exists()
        result.activation_script = write_activation_script(prefix, shell, platform, output_directory)
        if had_script and not replace:  # most likely another environment's (pixi-unpack is silent)
            reporter.warn(f"replaced the existing {result.activation_script}; it now activates {prefix}")
        undo.script = result.activation_script
        if undo.swap is not None:
            undo.swap.commit(reporter)
        undo.cleanup(reporter)
        return result
    except KeyboardInterrupt:
        undo.rollback_fully(reporter)
        raise UserCancelled() from None
    except PackError:
        undo.rollback_fully(reporter)
        raise
    except OSError as exc:
        undo.rollback_fully(reporter)
        where = f" ({exc.filename})" if exc.filename else ""
        raise PackError(f"unpacking failed: {exc.strerror or exc}{where}") from exc
    except BaseException as exc:
        undo.rollback_fully(reporter)
        if not isinstance(exc, Exception):
            raise
        # Backend errors (e.g. conda's) are failures of this unpack too: one message, traceback chained.
        raise PackError(f"unpacking failed: {exc}") from exc


def _check_pkgs_dir(pkgs_dir: Path) -> None:
    """Refuse an unusable ``--pkgs-dir`` before anything is done (conda and rattler would fail
    half-way, with messages about their own configuration)."""
    if pkgs_dir.exists() and not pkgs_dir.is_dir():
        raise PackError(
            f"--pkgs-dir {pkgs_dir} is not a folder",
            "give a folder for the package cache (created if missing)",
        )
    existing = next((p for p in (pkgs_dir, *pkgs_dir.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise PackError(f"--pkgs-dir {pkgs_dir} is not writable", "give a folder you can write to")


def _aside_dir(undo: _Undo, prefix: Path) -> Path:
    """A temp folder beside ``prefix`` to move the replaced environment into (folder packs)."""
    undo.work_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=prefix.parent))
    return undo.work_dir
