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
    from collections.abc import Mapping
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


def entries(root: Path, absent: Mapping[str, int] | None = None) -> list[Entry]:
    """Every entry below ``root`` in archive order (depth-first, siblings sorted by name).

    This is walkdir's ``sort_by_file_name`` order that pixi-pack uses, so a directory is
    always followed by its contents. Anything but regular files and directories (a symlink,
    a socket) is refused: the staging tree is ours, so such an entry means something is wrong.
    ``absent`` adds files that are not on disk (yet), by name and size, in their folders (which
    must exist): the members a writer leaves for its caller to fill.
    """
    result: list[Entry] = []
    pending: dict[str, list[tuple[str, int]]] = {}
    for name, size in (absent or {}).items():
        folder, _, base = name.rpartition("/")
        pending.setdefault(f"{folder}/" if folder else "", []).append((base, size))

    def walk(directory: Path, prefix: str) -> None:
        with os.scandir(directory) as it:
            found: list[tuple[str, os.DirEntry[str] | int]] = [(e.name, e) for e in it]
        found += pending.pop(prefix, [])
        found.sort(key=lambda child: child[0].encode("utf-8", "surrogateescape"))
        for (base, child), following in zip(found, [*found[1:], None]):
            name = f"{prefix}{base}"
            if following is not None and following[0] == base:
                raise PackError(f"cannot pack {name}: it is there twice")
            if isinstance(child, int):
                result.append(Entry(name, directory / base, False, child))
                continue
            st = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                result.append(Entry(name, directory / base, True, 0))
                walk(directory / base, f"{name}/")
            elif stat.S_ISREG(st.st_mode):
                result.append(Entry(name, directory / base, False, st.st_size))
            else:
                raise PackError(f"cannot pack {name}: not a regular file or directory")

    walk(root, "")
    if pending:
        raise PackError(f"cannot pack {', '.join(sorted(pending))}: no such folder in the pack")
    return result
