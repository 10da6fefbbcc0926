"""conda-lock's categories: which packages of a conda-lock file a pack takes.

conda-lock files mark each package with a ``category`` (or a ``categories`` list): ``main``, ``dev``,
or an extra's name; ``conda-lock install`` takes ``main`` unless told otherwise. py-rattler reads
the packages but not their categories, so they are read here from the file's text (conda-lock
writes it, one key per line, in a fixed layout) and the packages filtered by name.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

#: What ``conda-lock install`` takes by default.
DEFAULT_CATEGORIES: Final = ("main",)
#: ``  key: value`` of a package entry.
_KEY: Final = re.compile(r"^  (name|manager|platform|category|categories):\s*(.*?)\s*$")
#: A list item under ``categories:``.
_ITEM: Final = re.compile(r"^\s+-\s+(.+?)\s*$")


def is_conda_lock(text: str) -> bool:
    """A conda-lock file (version 1 of its format: ``package:`` entries with a ``manager``)."""
    return re.search(r"^package:", text, re.MULTILINE) is not None and "\n  manager: " in text


def categories(text: str) -> dict[tuple[str, str, str], frozenset[str]]:
    """``(manager, platform, name) -> categories`` of every package entry of a conda-lock file."""
    result: dict[tuple[str, str, str], frozenset[str]] = {}
    entry: dict[str, str] = {}
    listed: list[str] = []
    in_list = False

    def close() -> None:
        if entry.get("name"):
            found = frozenset(listed or [entry.get("category") or "main"])
            result[(entry.get("manager", "conda"), entry.get("platform", ""), entry["name"])] = found

    for line in text.splitlines():
        if line.startswith("- name:"):
            close()
            entry, listed, in_list = {"name": line.split(":", 1)[1].strip().strip("'\"")}, [], False
            continue
        item = _ITEM.match(line)
        if in_list and item is not None and not line.startswith("- "):
            listed.append(item.group(1).strip("'\""))
            continue
        key = _KEY.match(line)
        in_list = key is not None and key.group(1) == "categories"
        if key is not None and key.group(2):
            entry[key.group(1)] = key.group(2).strip("'\"")
    close()
    return result


def selected_names(path: Path, text: str, manager: str, platform: str, wanted: Iterable[str]) -> set[str]:
    """Names of the ``manager``'s packages for ``platform`` in any of the ``wanted`` categories."""
    found = categories(text)
    available = set().union(*found.values()) if found else set()
    unknown = sorted(set(wanted) - available)
    if unknown:
        raise PackError(
            f"{path} has no category {', '.join(unknown)} (it has: {', '.join(sorted(available)) or 'none'})",
            "choose with --category",
        )
    return {
        name
        for (kind, where, name), cats in found.items()
        if kind == manager and where == platform and cats & set(wanted)
    }
