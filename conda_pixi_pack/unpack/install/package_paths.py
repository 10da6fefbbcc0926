"""Refuse a package whose own file list reaches outside the environment.

A package's ``info/paths.json`` (or, in old ones, ``info/files``) names the files linking writes,
relative to the prefix. conda refuses an absolute or ``..`` path there itself; rattler's linker
aborts the whole process on an absolute one (a panic: no message, a half environment). So every
package the rattler backend installs is checked here first, from its extracted folder or its
archive.
"""

from __future__ import annotations

import json
import string
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

#: Hint for a package that would write outside the environment.
UNSAFE_PACKAGE_HINT: Final = (
    "the package was crafted or is corrupt; do not install it, rebuild the pack from a trusted channel"
)


def refuse_escaping(label: str, paths: Iterable[str]) -> None:
    """Raise PackError naming the first of ``paths`` that is absolute or climbs out with ``..``."""
    for path in paths:
        if escapes(path):
            raise PackError(
                f"unsafe pack: {label} would write outside the environment ({path!r})", UNSAFE_PACKAGE_HINT
            )


def escapes(path: str) -> bool:
    """Whether ``path``, joined to a prefix on any OS, lands outside it: rooted (``/x``, ``\\x``),
    on a drive (``C:x``) or with a ``..`` part.

    Strings, not ``PurePath`` s: two path objects for each of the 4,400 paths of the
    benchmark's packages took 40 ms of the unpack's CPU, the strings 1.4 ms.
    """
    if path[:1] in ("/", "\\") or (path[1:2] == ":" and path[:1] in string.ascii_letters):
        return True
    return ".." in path and ".." in path.replace("\\", "/").split("/")


def extracted_paths(folder: Path) -> list[str]:
    """The paths an extracted package lists: ``info/paths.json``, else the older ``info/files``;
    none when it has neither (the installer then reports the package as broken itself)."""
    info = folder / "info"
    try:
        document = json.loads((info / "paths.json").read_bytes())
    except FileNotFoundError:
        try:
            return (info / "files").read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
    except ValueError:
        return []  # unreadable: rattler refuses it with its own message
    entries = document.get("paths") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return []
    return [str(e.get("_path", "")) for e in entries if isinstance(e, dict)]
