"""The ``conda`` backend: the environment is made by conda's own machinery, offline, no solver.

How it works (the same two steps as ``conda create --file explicit.txt``, see ``conda.misc``):

1. One :class:`~conda.models.records.PackageRecord` per packed package, built from the pack's
   repodata record (repodata patches kept) plus ``url``/``channel`` from the pack's provenance
   (``Origin``): the record conda will write to ``conda-meta/<pkg>.json`` is therefore the original
   one, so ``conda list`` shows e.g. ``conda-forge`` and ``conda list --explicit`` the lock's URLs.
   A pack without provenance (written by Quantco's pixi-pack) gets the ``file://`` URL of the pack's
   own ``channel/`` folder instead; ``conda list`` then shows that folder as the channel.
2. :class:`~conda.core.package_cache_data.ProgressiveFetchExtract` decides, as usual, what each
   record needs: nothing when the package cache already holds it extracted (a second unpack of the
   same packages extracts nothing), an extraction when the tarball is cached, else a download. The
   download is the one step replaced: :class:`_PackFileAction` is conda's ``CacheUrlAction`` whose
   ``execute`` hard-links (or copies) the pack's file into the cache and records the original URL in
   ``urls.txt``, leaving exactly what a download would have left. conda then extracts in parallel and
   writes ``info/repodata_record.json`` from our record; nothing goes to the network (``offline`` is
   also set, so a bug would fail with conda's OfflineError rather than reach out).
3. :class:`~conda.core.link.UnlinkLinkTransaction` links the records in dependency order: prefix
   replacement, symlinks, noarch: python entry points and bytecode, pre/post-link scripts,
   ``conda-meta/history`` and the registration in ``~/.conda/environments.txt``.

conda is imported inside the functions only: this module must import where conda is absent.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from conda_pixi_pack.errors import PackError, UserCancelled
from conda_pixi_pack.format import DAMAGED_HINT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from conda.models.records import PackageRecord

    from conda_pixi_pack.artifacts import PackedPackage
    from conda_pixi_pack.progress import Reporter, Task

#: Settings forced while we drive conda: never touch the network, never prompt, and keep conda's
#: own output off stdout (``json`` silences its spinners, which ``quiet`` alone still prints, and
#: sends package messages to stderr).
_FORCED_SETTINGS: Final = {
    "offline": True,
    "quiet": True,
    "json": True,
    "always_yes": True,
    "dry_run": False,
}

#: Keys of a repodata record that name a location, replaced by the pack's provenance.
_LOCATION_KEYS: Final = ("url", "channel", "fn", "subdir")

#: What conda's LinkError says when a link script fails (``conda.core.link.run_script``); parsed
#: because LinkError carries only its text.
_SCRIPT_FAILED: Final = re.compile(r"(pre-link|post-link) script failed for package (\S+)")
_SCRIPT_OUTPUT: Final = re.compile(r"stdout: (.*)\nstderr: (.*)\nreturn code: (-?\d+)", re.DOTALL)

#: Longest script output quoted in an error message.
_MAX_OUTPUT: Final = 400


class CondaInstaller:
    """The conda backend behind the :class:`~conda_pixi_pack.unpack.install.Installer` interface."""

    name: Final = "conda"
    #: conda's extraction reads package files: they are copied out of the pack first.
    takes_extents: Final = False

    def install(
        self,
        packages: list[PackedPackage],
        prefix: Path,
        *,
        pkgs_dir: Path | None,
        reporter: Reporter,
        on_linked: Callable[[], None] | None = None,
    ) -> None:
        """Create the environment at ``prefix`` from ``packages`` through conda; raises PackError.

        ``pkgs_dir``, when given, is the only package cache used (created if missing); otherwise
        conda's configured caches are. On failure the environment is unregistered again and the caller
        deletes the prefix; extractions already finished stay in the cache, as with any conda command.
        Progress: half a step per package once it is extracted in the cache, the other half when the
        transaction is done (conda's transaction reports nothing per package). ``on_linked`` is called
        once the pack's package files are no longer needed.
        """
        prefix = Path(os.path.abspath(prefix))  # normalised as conda registers it
        task = reporter.task("Installing", total=len(packages))
        try:
            with _conda_context(pkgs_dir, reporter):
                was_registered = is_registered(prefix)
                try:
                    records = self._cache(packages, task)
                    _link(records, prefix)
                    if on_linked is not None:
                        on_linked()
                except BaseException:
                    if not was_registered:
                        unregister(prefix)
                    raise
                task.advance(len(packages) / 2)
        finally:
            task.done()

    def cache(self, packages: list[PackedPackage], *, reporter: Reporter) -> list[PackageRecord]:
        """Put ``packages`` into conda's package cache, extracted and checked, and return the records
        conda links them by (with their original URLs and channels): what ``conda env create``
        needs from a pack (unpack/conda_spec.py)."""
        task = reporter.task("Extracting packages", total=len(packages))
        try:
            with _conda_context(None, reporter):
                records = self._cache(packages, task)
            task.advance(len(packages) / 2)  # the half that linking counts in install()
            return records
        finally:
            task.done()

    @staticmethod
    def _cache(packages: list[PackedPackage], task: Task) -> list[PackageRecord]:
        records = [_record(package) for package in packages]
        _fetch_extract(records, {id(r): p for r, p in zip(records, packages)}, task)
        _check_extracted(records)
        return records

    def registration_undo(self, prefix: Path) -> Callable[[], None] | None:
        """conda lists every environment it creates in ``environments.txt``; a failed unpack takes
        a new entry out again (one that was there before stays)."""
        return None if is_registered(prefix) else lambda: unregister(prefix)


@contextmanager
def _conda_context(pkgs_dir: Path | None, reporter: Reporter) -> Iterator[None]:
    """conda's context for one install, restored afterwards.

    Under ``conda pixi-pack`` the conda CLI has initialised the context (condarc, CONDA_* variables,
    its flags) and we keep all of it; called standalone, the context is still conda's import-time
    default and we load the configuration as the conda CLI would. The forced settings go into the
    context's parameter cache because conda merges sequence settings (``pkgs_dirs``) across all
    sources, so no configuration layer can make one cache the only one.
    """
    from conda.base.context import context, reset_context
    from conda.core.package_cache_data import PackageCacheData
    from conda.reporters import _get_render_func

    # conda's CLI sets its arguments on the context (and has read condarc and CONDA_*); without
    # them this is the standalone command. (conda 26.3 keeps no usable search path to test.)
    if not context._argparse_args:
        reset_context()  # standalone: read condarc files and CONDA_* like `conda` does
    saved = dict(context._cache_)
    forced: dict[str, Any] = dict(_FORCED_SETTINGS)
    if pkgs_dir is not None:
        forced["_pkgs_dirs"] = (str(Path(pkgs_dir).absolute()),)
    context._cache_.update(forced)
    # conda caches the reporter backend chosen from `json`; drop it on the way in and out.
    _get_render_func.cache_clear()
    handler = _forward_conda_logs(reporter)
    try:
        yield
    finally:
        if handler is not None:
            logging.getLogger("conda").removeHandler(handler)
        context._cache_.clear()
        context._cache_.update(saved)
        _get_render_func.cache_clear()
        if pkgs_dir is not None:
            # the cache object of a (usually temporary) pkgs dir must not outlive it
            PackageCacheData._cache_.pop(str(Path(pkgs_dir).absolute()), None)


class _ReporterHandler(logging.Handler):
    """Sends conda's log records to the reporter instead of Python's last-resort stderr handler."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__(logging.DEBUG)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().strip()
        except Exception:  # a malformed conda log call must not break the install
            return
        if record.levelno >= logging.ERROR:
            # conda logs its failures before raising them; the raised error is what we report
            self.reporter.debug(f"conda: {message}")
        elif record.levelno >= logging.WARNING:
            self.reporter.warn(f"conda: {message}")
        else:
            self.reporter.debug(f"conda: {message}")


def _forward_conda_logs(reporter: Reporter) -> logging.Handler | None:
    """Route conda's logging to ``reporter`` unless the conda CLI already set up its handlers."""
    logger = logging.getLogger("conda")
    if logger.handlers:
        return None
    handler = _ReporterHandler(reporter)
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def _record(package: PackedPackage) -> PackageRecord:
    """The record conda links and writes to ``conda-meta``: the pack's record plus provenance."""
    from conda.base.context import context
    from conda.common.url import has_platform, path_to_url
    from conda.models.channel import Channel
    from conda.models.records import PackageRecord

    fields = {k: v for k, v in package.record.items() if k not in _LOCATION_KEYS}
    if package.origin is not None:
        url = package.origin.url
        # The URL names channel and subdir (what conda itself derives for explicit URLs); the
        # lock's channel is the fallback for URLs without a subdir (a bare file server).
        if has_platform(url, context.known_subdirs) or not package.origin.channel:
            channel = Channel(url)
        else:
            channel = Channel(package.origin.channel)
    else:
        url = path_to_url(str(package.path))
        channel = Channel(url)
    try:
        return PackageRecord(
            **fields,
            fn=package.file_name,
            url=url,
            channel=channel,
            subdir=package.subdir,
        )
    except Exception as exc:  # conda's ValidationError and TypeError for a malformed record
        raise PackError(
            f"broken pack: the repodata record of {package.subdir}/{package.file_name} is invalid: {exc}",
            DAMAGED_HINT,
        ) from None


def _fetch_extract(records: list[PackageRecord], files: dict[int, PackedPackage], task: Task) -> None:
    """Make every record available, extracted, in the package cache (conda's own decisions)."""
    from conda.core.package_cache_data import ProgressiveFetchExtract

    pack_file_action, counting_extract_action = _actions(task)
    pfe = ProgressiveFetchExtract(tuple(records))
    pfe.prepare()
    cached = 0
    for record, (cache_action, extract_action) in list(pfe.paired_actions.items()):
        if extract_action is None:
            cached += 1
            continue
        if cache_action is not None:
            package = files[id(record)]
            cache_action = pack_file_action(package.path, record.url, cache_action)
        extract_action = counting_extract_action(
            source_full_path=extract_action.source_full_path,
            target_pkgs_dir=extract_action.target_pkgs_dir,
            target_extracted_dirname=extract_action.target_extracted_dirname,
            record_or_spec=extract_action.record_or_spec,
            sha256=extract_action.sha256,
            size=extract_action.size,
            md5=extract_action.md5,
        )
        pfe.paired_actions[record] = (cache_action, extract_action)
    task.advance(cached * 0.5)
    _run_conda(pfe.execute, "extracting the packages into the package cache failed")


def _actions(task: Task) -> tuple[Any, Any]:
    """conda's download and extraction actions, adapted: the "download" is served from the pack,
    and each extraction is counted on ``task``. (Classes made here: conda is imported lazily.)"""
    from conda.core.path_actions import CacheUrlAction, ExtractPackageAction

    class PackFileAction(CacheUrlAction):
        """conda's "download" of one package, served from the pack: hard link or copy + urls.txt."""

        def __init__(self, source: Path, origin_url: str, action: CacheUrlAction) -> None:
            super().__init__(
                url=origin_url,
                target_pkgs_dir=action.target_pkgs_dir,
                target_package_basename=action.target_package_basename,
                sha256=action.sha256,
                size=action.size,
                md5=action.md5,
            )
            self.source = source

        def execute(self, progress_update_callback: Any = None) -> None:
            from conda.core.package_cache_data import PackageCacheData
            from conda.gateways.disk.create import create_hard_link_or_copy
            from conda.gateways.disk.delete import rm_rf
            from conda.gateways.disk.update import backoff_rename

            target = self.target_full_path
            if Path(self.hold_path).exists() or Path(self.hold_path).is_symlink():
                rm_rf(self.hold_path)
            if Path(target).exists() or Path(target).is_symlink():
                backoff_rename(target, self.hold_path, force=True)  # reverse() restores it
            create_hard_link_or_copy(str(self.source), target)
            PackageCacheData(self.target_pkgs_dir)._urls_data.add_url(self.url)

        def reverse(self) -> None:
            from conda.gateways.disk.delete import rm_rf

            rm_rf(self.target_full_path)  # the half-made cache entry; CacheUrlAction keeps it
            super().reverse()

    class CountingExtractAction(ExtractPackageAction):
        """conda's extraction, counted once on our progress bar when it is done: conda 26.7
        extracts in worker processes and finishes with ``_finish_extract`` in this one, earlier
        versions run ``execute`` (which 26.7 still uses where it cannot start workers)."""

        counted = False

        def execute(self, progress_update_callback: Any = None) -> None:
            super().execute(progress_update_callback)
            self._count()

        def _finish_extract(self) -> None:
            super()._finish_extract()
            self._count()

        def _count(self) -> None:
            if not self.counted:
                self.counted = True
                task.advance(0.5)

    return PackFileAction, CountingExtractAction


def _check_extracted(records: Sequence[PackageRecord]) -> None:
    """Refuse a package whose extraction does not match its own ``info/paths.json``.

    conda-package-handling extracts a tar member it cannot reproduce (a hard link without a link
    name, as in an old ``zlib`` ``.tar.bz2``) as an empty file without complaint, and conda would
    link that into the environment. Comparing every path's type and size with ``paths.json``
    costs one ``lstat`` per file (no hashing) and catches it before anything is linked.
    """
    import json

    from conda.core.package_cache_data import PackageCacheData

    for record in records:
        try:
            directory = Path(PackageCacheData.get_entry_to_link(record).extracted_package_dir)
            paths = json.loads((directory / "info" / "paths.json").read_text(encoding="utf-8"))["paths"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # old packages without paths.json: conda links them from info/files
        except Exception as exc:  # conda's CondaError: not in any cache, which PFE guarantees
            raise PackError(f"{record.fn} is missing from the package cache after extraction: {exc}") from exc
        for entry in paths:
            problem = _path_problem(directory, entry)
            if problem is not None:
                raise PackError(
                    f"package {record.fn} is broken: {problem}",
                    "the archive cannot be extracted faithfully; rebuild the package or leave it out",
                )


def _path_problem(directory: Path, entry: dict[str, Any]) -> str | None:
    """What differs between one ``paths.json`` entry and the extracted file, if anything."""
    relative = entry.get("_path")
    if not isinstance(relative, str):
        return None
    try:
        st = (directory / relative).lstat()
    except FileNotFoundError:
        return f"{relative} is listed in info/paths.json but missing from the archive"
    kind = entry.get("path_type", "hardlink")
    if kind == "softlink" and not stat.S_ISLNK(st.st_mode):
        return f"{relative} should be a symbolic link but the archive holds a regular file"
    size = entry.get("size_in_bytes")
    if kind == "hardlink" and isinstance(size, int) and stat.S_ISREG(st.st_mode) and st.st_size != size:
        return f"{relative} has {st.st_size} bytes, info/paths.json says {size}"
    return None


def _link(records: Sequence[PackageRecord], prefix: Path) -> None:
    """Link ``records`` into ``prefix`` with one UnlinkLinkTransaction, in dependency order."""
    from conda.core.link import PrefixSetup, UnlinkLinkTransaction
    from conda.models.match_spec import MatchSpec
    from conda.models.prefix_graph import PrefixGraph

    ordered = tuple(PrefixGraph(records).graph)
    # every package is "requested", as for an explicit file: `conda-meta/history` lists them all
    specs = tuple(MatchSpec(f"{r.name}=={r.version}={r.build}") for r in ordered)
    setup = PrefixSetup(
        target_prefix=str(prefix),
        unlink_precs=(),
        link_precs=ordered,
        remove_specs=(),
        update_specs=specs,
        neutered_specs=(),
    )
    _run_conda(UnlinkLinkTransaction(setup).execute, "linking the packages into the environment failed")


def _run_conda(step: Any, what: str) -> None:
    """Run one conda step, turning conda's errors into one-line PackErrors."""
    from conda import CondaError, CondaMultiError

    try:
        step()
    except CondaMultiError as exc:
        raise _pack_error(_leaves(exc), what) from exc
    except CondaError as exc:
        raise _pack_error([exc], what) from exc
    except SystemExit as exc:
        # conda exits the process on a corrupt tarball (ExtractPackageAction._finish_extract)
        raise PackError(f"{what}: a package archive is corrupt", "re-create the pack") from exc


def _leaves(error: BaseException) -> list[BaseException]:
    """The individual errors inside (nested) CondaMultiErrors; conda nests them when rolling back."""
    from conda import CondaMultiError

    if isinstance(error, CondaMultiError):
        return [leaf for inner in error.errors for leaf in _leaves(inner)]
    if isinstance(error, (list, tuple)):
        return [leaf for inner in error for leaf in _leaves(inner)]
    return [error] if isinstance(error, BaseException) else []


def _pack_error(errors: list[BaseException], what: str) -> PackError:
    """The most useful of conda's errors, as one sentence and a hint."""
    from conda.exceptions import ClobberError, CondaSignalInterrupt, LinkError, OfflineError

    if any(isinstance(error, (CondaSignalInterrupt, KeyboardInterrupt)) for error in errors):
        # conda turns Ctrl-C into CondaSignalInterrupt (after rolling its transaction back)
        return UserCancelled()
    for error in errors:
        if isinstance(error, LinkError) and _SCRIPT_FAILED.search(str(error)):
            return _script_error(str(error))
    for error in errors:
        if isinstance(error, ClobberError):
            return PackError(
                f"two packages of the pack install the same file: {_one_line(str(error))}",
                "conda's `path_conflict: prevent` setting refuses this; "
                "set it to `clobber` to let the later package win",
            )
        if isinstance(error, OfflineError):
            return PackError(
                f"{what}: conda tried to download a package that should come from the pack",
                "this is a bug in conda-pixi-pack; please report it",
            )
    first = errors[0] if errors else None
    detail = _one_line(str(first)) if first is not None else "unknown error"
    return PackError(f"{what}: {detail}")


def _script_error(text: str) -> PackError:
    """A failed pre-/post-link script: name the package and quote what the script printed."""
    match = _SCRIPT_FAILED.search(text)
    assert match is not None
    # conda names the package by its dist string, `<channel>::<name>-<version>-<build>`
    action, package = match.group(1), match.group(2).rsplit("::", 1)[-1]
    message = f"the {action} script of {package} failed"
    output = _SCRIPT_OUTPUT.search(text)
    if output is not None:
        stdout, stderr, code = output.group(1), output.group(2), output.group(3)
        printed = _one_line(" ".join(part for part in (stdout, stderr) if part.strip()))
        message += f" (exit code {code})"
        if printed:
            message += f": {printed}"
    return PackError(
        message, "the environment was not created; the package's script needs something missing here"
    )


def _one_line(text: str) -> str:
    """Collapse conda's multi-line messages to one line, capped at :data:`_MAX_OUTPUT` characters."""
    line = " ".join(text.split())
    return line if len(line) <= _MAX_OUTPUT else line[: _MAX_OUTPUT - 1] + "…"


def is_registered(prefix: Path) -> bool:
    """Whether ``prefix`` is listed in the user's ``environments.txt``."""
    from conda.core.envs_manager import get_user_environments_txt_file
    from conda.gateways.disk.read import yield_lines

    return str(Path(os.path.abspath(prefix))) in set(yield_lines(get_user_environments_txt_file()))


def unregister(prefix: Path) -> None:
    """Drop ``prefix`` from ``environments.txt`` after a failed install.

    conda's ``unregister_env`` keeps the entry while ``conda-meta`` still holds records, which a
    failed prefix may until the caller deletes it, so the entry is removed directly with the
    helper ``unregister_env`` itself uses.
    """
    from conda.core.envs_manager import _clean_environments_txt, get_user_environments_txt_file

    try:
        _clean_environments_txt(get_user_environments_txt_file(), str(Path(os.path.abspath(prefix))))
    except OSError:  # best effort: never hide the error that brought us here
        pass
