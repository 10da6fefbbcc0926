"""A pack written with ``pack --directory-only``: used where it is, never copied."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, TYPE_CHECKING

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.unpack.reader.base import UNSAFE_HINT, Member, OpenedPack

if TYPE_CHECKING:
    from collections.abc import Iterator


class FolderPack(OpenedPack):
    """A pack folder: its files are read in place (``root``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.label = str(root)
        self.kind = "folder"
        self._open: IO[bytes] | None = None

    def members(self) -> Iterator[tuple[Member, IO[bytes] | None]]:
        """Every folder and regular file, in the order a pack's tar has them (depth first, by
        name); a link or special file is refused, as in a tar."""
        for name, path, is_dir in self._walk(self.root, ""):
            if is_dir:
                yield Member(name, 0, True), None
                continue
            with open(path, "rb") as handle:
                self._open = handle
                yield Member(name, os.fstat(handle.fileno()).st_size, False), handle
            self._open = None

    def _walk(self, directory: Path, prefix: str) -> Iterator[tuple[str, Path, bool]]:
        with os.scandir(directory) as scan:
            children = sorted(scan, key=lambda e: e.name.encode("utf-8", "surrogateescape"))
        for child in children:
            name, path = f"{prefix}{child.name}", directory / child.name
            mode = child.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                yield name, path, True
                yield from self._walk(path, f"{name}/")
            elif stat.S_ISREG(mode):
                yield name, path, False
            else:
                raise PackError(f"unsafe pack: {name!r} is a link or special file", UNSAFE_HINT)

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None
