"""``unpack``: a pack -> a working environment, all or nothing (orchestration only).

open the pack (:mod:`~conda_pixi_pack.unpack.reader`), extracting it while its packages are
hashed -> validate it (:mod:`~conda_pixi_pack.unpack.validate`) -> install with a backend
(:mod:`~conda_pixi_pack.unpack.install`) and the wheels -> write the activation script
(:mod:`~conda_pixi_pack.unpack.activation`) -> commit. Every check (options, target, pack contents
and checksums) runs before the target is touched, and every step records what it created in an
undo log (:class:`_Undo`), so a failure or Ctrl-C takes back exactly what this run made.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from conda_pixi_pack.errors import PackError, UserCancelled
from conda_pixi_pack.fileio import remove_uninterrupted
from conda_pixi_pack.format import CHANNEL_DIR, conda_spec, current_platform, is_package_path
from conda_pixi_pack.progress import Reporter
from conda_pixi_pack.unpack.activation import (
    check_quotable,
    resolve_shell,
    script_path,
    write_activation_script,
)
from conda_pixi_pack.unpack.install import choose_installer
from conda_pixi_pack.unpack.reader import open_pack
from conda_pixi_pack.unpack.target import (
    TEMP_PREFIX,
    PrefixSwap,
    check_prefix,
    make_dirs,
    remove_created,
    resolve_prefix,
    rmtree,
)
from conda_pixi_pack.unpack.validate import PackageDigests, check_metadata, require_python, validate_pack

if TYPE_CHECKING:
    from collections.abc import Callable

    from conda_pixi_pack.artifacts import Extent
    from conda_pixi_pack.unpack.install import Installer, InstallerName
    from conda_pixi_pack.unpack.validate import ValidatedPack


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
    installer: InstallerName | None = None
    pkgs_dir: Path | None = None
    dry_run: bool = False


@dataclass
class UnpackResult:
    """What the CLI reports (and prints with ``--json``)."""

    prefix: Path
    installer: InstallerName
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
    #: Takes back the backend's registration of the new prefix (conda's environments.txt).
    unregister: Callable[[], None] | None = None
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
            if self.unregister is not None:
                self.unregister()
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


@dataclass(frozen=True)
class _Plan:
    """Everything decided before anything is written: where, for which shell, with which backend."""

    platform: str
    shell: str
    installer: Installer
    prefix: Path
    output_directory: Path
    #: An environment is at the prefix and ``--force`` replaces it.
    replace: bool
    #: The prefix is an existing empty folder: emptied again (not removed) on failure.
    existed_empty: bool


def unpack(options: UnpackOptions, reporter: Reporter | None = None) -> UnpackResult:
    """Create the environment described by ``options``; raises PackError, rolls back on failure.

    Order matters for all-or-nothing: every check (options, target, pack contents and checksums)
    runs before the target is touched; an environment being replaced is only moved aside, and
    the activation script is written last, atomically.
    """
    reporter = reporter or Reporter()
    if options.pkgs_dir is not None:  # the extraction processes run in a folder of their own
        options = replace(options, pkgs_dir=Path(os.path.abspath(options.pkgs_dir)))
    plan = _plan(options)
    if options.dry_run:
        return _dry_run(options, plan, reporter)
    undo = _Undo()
    try:
        pack = _open_and_validate(options, plan, undo, reporter)
        result = UnpackResult(
            prefix=plan.prefix,
            installer=plan.installer.name,
            platform=plan.platform,
            conda_packages=sorted(conda_spec(p.record) for p in pack.packages),
            wheels=[w.name for w in pack.wheels],
            activation_script=None,
            replaced=plan.replace,
            pack_tool_version=pack.metadata.tool_version,
        )
        _install(plan, pack, undo, options, reporter)
        result.activation_script = _activate(plan, undo, reporter)
        if undo.swap is not None:
            undo.swap.commit(reporter)
        undo.cleanup(reporter)
        return result
    except BaseException as exc:
        undo.rollback_fully(reporter)
        if isinstance(exc, KeyboardInterrupt):
            raise UserCancelled() from None
        if isinstance(exc, PackError) or not isinstance(exc, Exception):
            raise
        raise _failure(exc) from exc


def _dry_run(options: UnpackOptions, plan: _Plan, reporter: Reporter) -> UnpackResult:
    """Read the pack through once, as ``inspect --verify`` does (every checksum, every wheel's
    RECORD, the platform), and say what would be installed: nothing is written, not even a
    temporary file, so a dry run works where nothing can be written."""
    from conda_pixi_pack.unpack.inspect import inspect_pack

    inspection = inspect_pack(
        sys.stdin.buffer if options.from_stdin else options.source, verify=True, reporter=reporter
    )
    assert inspection.metadata is not None  # inspect_pack refuses a pack without one
    check_metadata(inspection.metadata, plan.platform, reporter)
    require_python(len(inspection.wheels), {p.name for p in inspection.packages})
    return UnpackResult(
        prefix=plan.prefix,
        installer=plan.installer.name,
        platform=plan.platform,
        conda_packages=sorted(f"{p.name}={p.version}={p.build}" for p in inspection.packages),
        wheels=[w.file for w in inspection.wheels],
        activation_script=None,
        dry_run=True,
        replaced=plan.replace,
        pack_tool_version=inspection.metadata.tool_version,
    )


def _failure(exc: Exception) -> PackError:
    """An error of the file system or of a backend (conda's own types, say), as one line."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return PackError(f"unpacking failed: {exc.strerror or exc}{where}")
    return PackError(f"unpacking failed: {exc}", "nothing was installed; run with -v for the details")


def _plan(options: UnpackOptions) -> _Plan:
    """Check the options and the target; nothing is created."""
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
    replace = check_prefix(prefix, force=options.force)
    output_directory = Path(os.path.abspath(options.output_directory))
    if not options.dry_run:
        for folder, what in ((prefix.parent, "the environment"), (output_directory, "the activation script")):
            _check_writable(folder, what)
    return _Plan(
        platform=platform,
        shell=shell,
        installer=installer,
        prefix=prefix,
        output_directory=output_directory,
        replace=replace,
        # decided now, before any folder is made (-o may lie inside the new prefix)
        existed_empty=prefix.is_dir() and not replace,
    )


def _open_and_validate(options: UnpackOptions, plan: _Plan, undo: _Undo, reporter: Reporter) -> ValidatedPack:
    """The pack, extracted into a private folder beside the prefix (or used in place) and checked."""
    undo.created_dirs += make_dirs(plan.prefix.parent)
    work_parent = plan.prefix.parent
    # Packages are hashed while the rest of the tar is extracted; leaving the block stops and
    # joins the hashing threads, so none outlives validation (or reads during a rollback).
    with PackageDigests() as digests:
        # A backend that reads packages straight out of a pack file checks their checksums as it
        # goes, before it links anything (install/seed.py); a dry run checks them here.
        leave = plan.installer.takes_extents
        defer = leave and not options.dry_run
        root, extents = _extract(
            options, undo, work_parent, reporter, digests, leave=leave, hash_left=not defer
        )
        resolved = root.resolve()
        prefix = plan.prefix.resolve()
        if plan.replace and (resolved == prefix or prefix in resolved.parents):
            raise PackError(f"the pack {root} is inside the environment {plan.prefix} it would replace")
        return validate_pack(
            root, reporter, platform=plan.platform, digests=digests, extents=extents, defer_checksums=leave
        )


def _extract(
    options: UnpackOptions,
    undo: _Undo,
    work_parent: Path,
    reporter: Reporter,
    digests: PackageDigests,
    *,
    leave: bool,
    hash_left: bool,
) -> tuple[Path, dict[Path, Extent]]:
    """The root of the pack: a folder pack as it is, or a pack extracted into a private folder
    (each package file handed to ``digests`` as soon as it is written).

    With ``leave`` a pack file's package files stay inside it (see reader/tar.py): the returned
    mapping says where they are, and ``hash_left`` hands them to ``digests`` too.
    """
    with open_pack(sys.stdin.buffer if options.from_stdin else options.source) as opened:
        if opened.root is not None:
            return opened.root, {}
        try:
            undo.work_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=work_parent))
        except OSError as exc:
            raise PackError(
                f"cannot create a temporary folder in {work_parent}: {exc.strerror or exc}"
            ) from None
        root = undo.work_dir / "pack"
        root.mkdir()
        extents = opened.extract(
            root, reporter, on_file=digests.submit, leave=is_package_path if leave else None
        )
    if hash_left:
        for path, extent in extents.items():
            digests.submit(path, extent)
    return root, extents


def _install(
    plan: _Plan, pack: ValidatedPack, undo: _Undo, options: UnpackOptions, reporter: Reporter
) -> None:
    """Make the environment at the prefix: the conda packages with the backend, then the wheels."""
    undo.created_dirs += make_dirs(plan.output_directory)
    if plan.replace:
        undo.swap = PrefixSwap(plan.prefix, undo.work_dir or _aside_dir(undo, plan.prefix))
        undo.swap.move_aside()
    undo.keep_prefix_dir = plan.existed_empty
    undo.new_prefix = plan.prefix
    undo.unregister = plan.installer.registration_undo(plan.prefix)
    reporter.info(f"Installing {len(pack.packages)} packages into {plan.prefix} with {plan.installer.name}")
    # Packages we extracted are not needed once linked: remove them while the rest finishes
    # (never a folder pack: that is the user's).
    ours = undo.work_dir is not None and undo.work_dir in pack.root.parents
    extracted = pack.root / CHANNEL_DIR if ours else None
    plan.installer.install(
        pack.packages,
        plan.prefix,
        pkgs_dir=options.pkgs_dir,
        reporter=reporter,
        on_linked=(lambda: undo.remove_in_background(extracted)) if extracted is not None else None,
    )
    if pack.wheels:  # imported here: only when there are wheels
        from conda_pixi_pack.unpack.install.wheels import install_wheels

        install_wheels(plan.prefix, pack.wheels, reporter=reporter, checked=True)


def _activate(plan: _Plan, undo: _Undo, reporter: Reporter) -> Path:
    """Write the activation script, atomically: until the rename, one already there stays as it was."""
    had_script = script_path(plan.output_directory, plan.shell).exists()
    script = write_activation_script(plan.prefix, plan.shell, plan.platform, plan.output_directory)
    if had_script and not plan.replace:  # most likely another environment's (pixi-unpack is silent)
        reporter.warn(f"replaced the existing {script}; it now activates {plan.prefix}")
    undo.script = script
    return script


def _check_writable(folder: Path, what: str) -> None:
    """Refuse, before anything is made, a place where nothing can be written (a read-only file
    system, a folder of someone else's): the unpack would fail half-way."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    # a file in the way is make_dirs' to name
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise PackError(
            f"cannot write {what} into {folder}: {existing} is not writable",
            "choose another folder with -o (or -p)",
        )


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
