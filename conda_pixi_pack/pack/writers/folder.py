"""Folder packs (``--directory-only``): the staging folder itself, normalised and renamed."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.fileio import fsync_dir, temp_path
from conda_pixi_pack.format import TAR_MTIME
from conda_pixi_pack.pack.writers.tree import DIR_MODE, FILE_MODE, entries

if TYPE_CHECKING:
    from pathlib import Path


def normalise_tree(root: Path) -> int:
    """Give a folder pack the tar's modes and mtimes; returns the total size of its files.

    A file with other hard links (a ``--use-cache`` entry linked into the staging folder) is
    first replaced by a copy of its own: mode and mtime belong to the inode, and changing
    them would change the cache entry too (and void its verification stamp). ``shutil.copyfile``
    copies in the kernel (``sendfile`` on Linux, ``fcopyfile`` on macOS).
    """
    members = entries(root)
    for entry in members:  # first: a copy renamed into a folder would change the folder's mtime
        if not entry.is_dir and os.stat(entry.path).st_nlink > 1:
            _unshare(entry.path)
    for entry in members:
        os.chmod(entry.path, DIR_MODE if entry.is_dir else FILE_MODE)
        os.utime(entry.path, (TAR_MTIME, TAR_MTIME))
    os.chmod(root, DIR_MODE)
    return sum(entry.size for entry in members)


def _unshare(path: Path) -> None:
    """Replace ``path`` by a copy that shares no inode (atomically: a rename over it)."""
    temp = temp_path(path)
    try:
        shutil.copyfile(path, temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_tree(root: Path, target: Path) -> int:
    """Turn the staging folder ``root`` into the folder pack ``target``; returns its size.

    ``root`` must be beside ``target`` (same file system): it is normalised and renamed in
    one step, so ``target`` is either absent or complete. An existing non-empty folder at
    ``target`` is never replaced (that would delete someone's files).
    """
    size = normalise_tree(root)
    try:
        os.replace(root, target)
    except OSError as exc:
        if target.is_dir():
            raise PackError(
                f"cannot write the pack folder: {target} already exists and is not empty",
                "remove it or choose another output with -o",
            ) from None
        raise PackError(f"cannot write the pack folder {target}: {exc.strerror or exc}") from None
    fsync_dir(target.parent)
    return size
