"""Hostile inputs built by the fault tests: conda packages whose own tar escapes, and pack edits.

The packages are real archives in both formats (``.conda`` and ``.tar.bz2``), written with the
same member layout as :mod:`tests.support.packages` (``info/`` listing every path), plus one member
that tries to leave the folder it is extracted into.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from tests.support import packages as builder
from tests.support.packages import PackageSpec

if TYPE_CHECKING:
    from pathlib import Path

#: Content of every escaping file: found anywhere outside its folder, it proves an escape.
ESCAPED: Final = b"escaped from a hostile package\n"
#: How each hostile package tries to escape (see :func:`escaping_package`).
ESCAPES: Final = ("dotdot", "absolute", "symlink-then-file")


def escaping_package(channel_root: Path, how: str, outside: Path, fmt: str = "conda") -> Path:
    """A package ``evil-1.0-0`` whose payload writes ``ESCAPED`` outside its extraction folder.

    ``dotdot``: a member ``../../evil-escaped.txt``; ``absolute``: a member at the absolute
    path ``outside/evil-escaped.txt``; ``symlink-then-file``: a symbolic link ``lib/evil`` to
    ``outside`` then a file ``lib/evil/evil-escaped.txt`` through it. Every member is listed in
    ``info/paths.json``, as a crafted package would do to get it linked too.
    """
    spec = PackageSpec("evil", "1.0", "0", fmt=fmt, files={"share/evil/README": "looks harmless\n"})  # type: ignore[arg-type]
    members = builder._payload(spec)
    if how == "dotdot":
        members["../../evil-escaped.txt"] = builder._Member("../../evil-escaped.txt", data=ESCAPED)
    elif how == "absolute":
        path = f"{outside}/evil-escaped.txt"
        members[path] = builder._Member(path, data=ESCAPED)
    elif how == "symlink-then-file":
        members["lib/evil"] = builder._Member("lib/evil", mode=0o777, target=str(outside))
        members["lib/evil/evil-escaped.txt"] = builder._Member("lib/evil/evil-escaped.txt", data=ESCAPED)
    else:
        raise ValueError(how)
    info = builder._info(spec, members)
    out_dir = channel_root / spec.subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / spec.file_name
    if fmt == "conda":
        builder._write_conda(target, spec, info, members)
    else:
        builder._write_tar_bz2(target, spec, info, members)
    return target


def escaped_files(*roots: Path) -> list[str]:
    """Every ``evil-escaped.txt`` below ``roots``, or right in one of their four nearest parents
    (where ``..`` members relative to a folder below a root would land)."""
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            found += [os.path.join(folder, n) for n in names if n == "evil-escaped.txt"]
        found += [
            str(p / "evil-escaped.txt") for p in list(root.parents)[:4] if (p / "evil-escaped.txt").exists()
        ]
    return sorted(set(found))
