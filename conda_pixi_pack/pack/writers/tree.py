"""The staging tree both writers read: its entries in archive order, and the modes they get.

pixi-pack walks its staging folder with walkdir's ``sort_by_file_name``: depth first, siblings
sorted by name, each directory before its contents. The tar and the folder writers use the same
walk, so a folder pack and a tar pack list the same entries in the same order.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from pathlib import Path

#: Mode of every directory entry (and of every directory of a folder pack).
DIR_MODE: Final = 0o755
#: Mode of every file entry: packs hold packages and JSON, nothing executable.
FILE_MODE: Final = 0o644


@dataclass(frozen=True)
class Entry:
    """One member of a pack: its POSIX name inside the pack and where it is on disk."""

    name: str
    path: Path
    is_dir: bool
    size: int


def entries(root: Path) -> list[Entry]:
    """Every entry below ``root`` in archive order (depth-first, siblings sorted by name).

    This is walkdir's ``sort_by_file_name`` order that pixi-pack uses, so a directory is
    always followed by its contents. Anything but regular files and directories (a symlink,
    a socket) is refused: the staging tree is ours, so such an entry means something is wrong.
    """
    result: list[Entry] = []

    def walk(directory: Path, prefix: str) -> None:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name.encode("utf-8", "surrogateescape"))
        for child in children:
            name = f"{prefix}{child.name}"
            st = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                result.append(Entry(name, directory / child.name, True, 0))
                walk(directory / child.name, f"{name}/")
            elif stat.S_ISREG(st.st_mode):
                result.append(Entry(name, directory / child.name, False, st.st_size))
            else:
                raise PackError(f"cannot pack {name}: not a regular file or directory")

    walk(root, "")
    return result
