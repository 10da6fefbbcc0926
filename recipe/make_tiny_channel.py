"""Write a tiny channel for the conda package's test: one real noarch package and an @EXPLICIT list.

Usage: ``python make_tiny_channel.py DIR``. Writes ``DIR/noarch/tiny-1.0-0.tar.bz2`` and
``DIR/explicit.txt`` (the package by a path relative to the list, with its sha256), so the test
packs something made on the spot rather than a file shipped with the package. The package has a
text file holding a prefix placeholder: after an install it must name the environment. Standard
library only: it runs in the recipe's test environment, which has nothing else to build with.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Final

#: What the installers replace with the environment's path (any string the metadata declares).
PLACEHOLDER: Final = "/opt/tiny-build-prefix-placeholder-0123456789"
#: The one file of the package, relative to the environment.
FILE: Final = "share/tiny/hello.txt"
CONTENT: Final = f"hello from {PLACEHOLDER}\n".encode()


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1153704088
    return info, io.BytesIO(data)


def build(root: Path) -> Path:
    """The package, in the old ``.tar.bz2`` format: a tar of its files and ``info/``."""
    index = {
        "name": "tiny",
        "version": "1.0",
        "build": "0",
        "build_number": 0,
        "subdir": "noarch",
        "noarch": "generic",
        "depends": [],
        "license": "BSD-3-Clause",
        "timestamp": 1153704088000,
    }
    paths = {
        "paths_version": 1,
        "paths": [
            {
                "_path": FILE,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(CONTENT).hexdigest(),
                "size_in_bytes": len(CONTENT),
                "file_mode": "text",
                "prefix_placeholder": PLACEHOLDER,
            }
        ],
    }
    members = {
        FILE: CONTENT,
        "info/index.json": json.dumps(index, indent=2).encode(),
        "info/paths.json": json.dumps(paths, indent=2).encode(),
        "info/files": f"{FILE}\n".encode(),
        "info/has_prefix": f"{PLACEHOLDER} text {FILE}\n".encode(),
    }
    target = root / "noarch" / "tiny-1.0-0.tar.bz2"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:bz2") as archive:
        for name in sorted(members):
            archive.addfile(*_member(name, members[name]))
    return target


def main(root: Path) -> None:
    package = build(root)
    sha256 = hashlib.sha256(package.read_bytes()).hexdigest()
    relative = package.relative_to(root).as_posix()
    (root / "explicit.txt").write_text(f"@EXPLICIT\n{relative}#{sha256}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
