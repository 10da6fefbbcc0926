"""Which paths of a package's file list would land outside the environment (package_paths.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.unpack.install.package_paths import escapes, extracted_paths, refuse_escaping

if TYPE_CHECKING:
    from pathlib import Path

ESCAPING = [
    "/etc/passwd",  # rooted on POSIX
    "\\Windows\\evil.dll",  # rooted on the current drive on Windows
    "\\\\server\\share\\evil",  # UNC
    "//server/share/evil",
    "C:\\evil.dll",
    "c:evil.dll",  # a drive, relative to its current folder
    "..",
    "../evil",
    "lib/../../evil",
    "lib\\..\\..\\evil",
    "lib/python3.12/..",
]
INSIDE = [
    "lib/libz.so.1",
    "share/doc/..hidden",
    "share/doc/a..b",
    "share/...",
    "bin/x:y",  # a colon past the first part is no drive
    "1:not-a-drive",
    "./lib/ok",
    "Lib/site-packages/pkg/__init__.py",
]


@pytest.mark.parametrize("path", ESCAPING)
def test_an_escaping_path_is_refused_with_its_name(path: str) -> None:
    assert escapes(path)
    with pytest.raises(PackError, match="would write outside the environment") as caught:
        refuse_escaping("evil-1.0-0", ["lib/ok", path])
    assert repr(path) in str(caught.value)


@pytest.mark.parametrize("path", INSIDE)
def test_a_path_inside_passes(path: str) -> None:
    assert not escapes(path)
    refuse_escaping("good-1.0-0", [path])


def test_paths_are_read_from_paths_json_else_files(tmp_path: Path) -> None:
    modern, old, empty = tmp_path / "modern", tmp_path / "old", tmp_path / "empty"
    for folder in (modern, old, empty):
        (folder / "info").mkdir(parents=True)
    document = {"paths": [{"_path": "bin/a"}, {"_path": "../b"}], "paths_version": 1}
    (modern / "info" / "paths.json").write_text(json.dumps(document))
    (old / "info" / "files").write_text("bin/a\nlib/b\n")
    assert extracted_paths(modern) == ["bin/a", "../b"]
    assert extracted_paths(old) == ["bin/a", "lib/b"]
    assert extracted_paths(empty) == []
