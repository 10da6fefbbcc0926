"""Where an unpacked environment goes, and how an existing one is replaced without losing it.

Three ways to name the prefix: pixi-unpack's ``<output_directory>/<env_name>``, conda's ``-p PATH``
and conda's ``-n NAME`` (resolved by conda itself, so ``conda activate NAME`` finds it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.fileio import remove_uninterrupted

if TYPE_CHECKING:
    from conda_pixi_pack.progress import Reporter

#: A conda environment has this folder; ``--force`` only ever replaces such a folder.
CONDA_META: Final = "conda-meta"
#: Prefix of every temporary name we create beside the target.
TEMP_PREFIX: Final = ".conda-pixi-pack-"


def _prefix_from_name(name: str) -> Path:
    """conda's own answer for ``-n NAME``: an existing env of that name, or a new one in the first
    writable envs directory (``PrefixData.from_name`` validates the name as ``conda create`` does)."""
    try:
        from conda.core.prefix_data import PrefixData
    except ImportError:
        raise PackError(
            "-n/--name needs conda, which is not importable here",
            "give the target with -o/--output-directory and -e/--env-name, or -p/--prefix",
        ) from None
    from conda.exceptions import CondaError

    try:
        if hasattr(PrefixData, "from_name"):
            return Path(PrefixData.from_name(name).prefix_path)
        from conda.gateways.disk.create import first_writable_envs_dir  # conda < 25

        return Path(first_writable_envs_dir(), name)
    except CondaError as exc:
        raise PackError(f"invalid environment name {name!r}: {exc}") from None


def resolve_prefix(*, output_directory: Path, env_name: str, name: str | None, prefix: Path | None) -> Path:
    """The absolute prefix the options describe (nothing is created)."""
    if name is not None and prefix is not None:
        raise PackError("give either -n/--name or -p/--prefix, not both")
    if prefix is not None:
        return Path(os.path.abspath(prefix.expanduser()))
    if name is not None:
        return _prefix_from_name(name)
    if not env_name or env_name in (".", "..") or "/" in env_name or os.sep in env_name:
        raise PackError(
            f"invalid environment name {env_name!r}",
            "-e/--env-name is a single folder name; use -o/--output-directory for its location",
        )
    return Path(os.path.abspath(output_directory.expanduser() / env_name))


def check_prefix(prefix: Path, *, force: bool) -> bool:
    """Refuse a target we may not use; True when an existing environment is to be replaced."""
    if prefix.is_symlink() or (prefix.exists() and not prefix.is_dir()):
        raise PackError(f"the target {prefix} exists and is not a folder", "choose another target")
    if not prefix.is_dir() or not any(prefix.iterdir()):
        return False
    for running in _running_prefixes():  # first: --force would not help, so do not suggest it
        if prefix.resolve() == running or prefix.resolve() in running.parents:
            # conda refuses this too: the tool (or the shell's active env) would be replaced under it
            raise PackError(
                f"the target {prefix} is the environment this command runs in (or conda's base)",
                "choose another target",
            )
    if not force:
        raise PackError(
            f"the target {prefix} already exists and is not empty",
            "use --force to replace it, or choose another target",
        )
    if not (prefix / CONDA_META).is_dir():
        # --force replaces environments, never an arbitrary folder such as a home directory.
        raise PackError(
            f"the target {prefix} is not empty and is not a conda environment; not replacing it",
            "remove it yourself or choose another target",
        )
    return True


def _running_prefixes() -> list[Path]:
    """Prefixes that must never be replaced: this interpreter's, the active one, conda's base."""
    candidates = [sys.prefix, sys.base_prefix, os.environ.get("CONDA_PREFIX", "")]
    if "conda" in sys.modules:  # only where conda is already loaded: never import it for this
        try:
            from conda.base.context import context

            candidates.append(context.root_prefix)
        except Exception:  # a broken conda must not stop an unpack that does not use it
            pass
    return [Path(c).resolve() for c in candidates if c]


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p`` that returns the folders it created (outermost first) so they can be undone."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if current.exists() and not current.is_dir():
        raise PackError(f"cannot create {path}: {current} is a file, not a folder", "choose another folder")
    try:
        for folder in reversed(missing):
            folder.mkdir()
    except OSError as exc:
        raise PackError(f"cannot create {path}: {exc.strerror or exc}") from None
    return list(reversed(missing))


def remove_created(folders: list[Path]) -> None:
    """Undo :func:`make_dirs`: remove the folders it made, innermost first, if still empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except FileNotFoundError:  # already gone (e.g. removed with the prefix it was inside)
            continue
        except OSError:
            return


def rmtree(path: Path, reporter: Reporter) -> None:
    """Best-effort recursive removal for cleanup paths; a leftover is reported, never raised.

    A Ctrl-C or SIGTERM arriving meanwhile (a second one, during a rollback) does not stop it:
    the removal goes on where it was, since a half-removed environment is the worst outcome.
    """

    def remove() -> None:
        if not path.exists() and not path.is_symlink():
            return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()

    try:
        remove_uninterrupted(remove)
    except OSError as exc:
        reporter.warn(f"could not remove {path}: {exc}")


@dataclass
class PrefixSwap:
    """Move an environment being replaced out of the way, and back if the new one fails.

    The old environment is renamed into ``aside_dir`` (a temp folder beside it, so the rename is
    atomic and costs nothing); :meth:`commit` deletes it, :meth:`rollback` renames it back.
    """

    prefix: Path
    aside_dir: Path
    moved: Path | None = field(default=None, init=False)

    def move_aside(self) -> None:
        target = Path(tempfile.mkdtemp(prefix="old-", dir=self.aside_dir)) / self.prefix.name
        try:
            os.replace(self.prefix, target)
        except OSError as exc:
            raise PackError(f"cannot move the existing {self.prefix} aside: {exc.strerror or exc}") from None
        self.moved = target

    def rollback(self, reporter: Reporter) -> None:
        if self.moved is None:
            return
        try:
            os.replace(self.moved, self.prefix)
        except OSError as exc:
            reporter.warn(f"could not restore the previous environment; it is kept at {self.moved}: {exc}")
            return
        self.moved = None

    def commit(self, reporter: Reporter) -> None:
        if self.moved is not None:
            rmtree(self.moved, reporter)
            self.moved = None
