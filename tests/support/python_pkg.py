"""A conda package named ``python`` made from this machine's own interpreter.

Tests that unpack noarch: python packages and wheels need a real Python inside the environment,
and no conda channel is reachable here, so the running interpreter's installation
(``sys.base_prefix``) is repackaged: the binary, libpython, and the standard library file by file
(conda refuses links to directories), without tests, GUI modules and site-packages contents.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path
from typing import Final

from tests.support.packages import PackageSpec, build_package

#: Standard library folders left out: large and never needed by the tests.
EXCLUDED_DIRS: Final[frozenset[str]] = frozenset(
    {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__pycache__", "site-packages"}
)

#: Where the installed interpreter must look for libpython: the environment's own ``lib``.
RUNPATH: Final[bytes] = b"$ORIGIN/../lib"

#: zstd level for this big package: speed over size.
COMPRESSION: Final[int] = 1


def _version() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


def _stdlib_files(stdlib: Path, base: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith("config-"))
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_symlink() or not path.is_file() or filename.endswith((".pyc", ".pyo")):
                continue
            files[path.relative_to(base).as_posix()] = path
    return files


def _relocatable_binary(binary: Path, libdir: str) -> bytes:
    """The interpreter binary with an absolute RUNPATH into ``libdir`` rewritten to ``$ORIGIN/../lib``.

    Done in place like a binary prefix replacement (a shorter NUL-padded C string at the same
    offset) so that no patchelf is needed: the installed python loads the environment's libpython,
    not the build machine's.
    """
    data = binary.read_bytes()
    needle = b"\0" + libdir.encode() + b"\0"
    if data.count(needle) != 1 or len(RUNPATH) > len(libdir):
        return data  # no (or an ambiguous) absolute RUNPATH: leave the binary alone
    replacement = b"\0" + RUNPATH + b"\0" * (len(needle) - len(RUNPATH) - 1)
    return data.replace(needle, replacement)


def python_spec() -> PackageSpec:
    """The spec of the ``python`` package for this interpreter (file contents read lazily)."""
    base = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_path("stdlib", vars={"installed_base": str(base), "base": str(base)}))
    libdir = sysconfig.get_config_var("LIBDIR") or str(base / "lib")
    files: dict[str, bytes | str | Path] = dict(_stdlib_files(stdlib, base))
    files[f"lib/python{version}/site-packages/README.txt"] = (
        "This directory exists so that 3rd party packages can be installed here.\n"
    )
    binary = base / "bin" / f"python{version}"
    files[f"bin/python{version}"] = _relocatable_binary(binary.resolve(), libdir)
    symlinks = {"bin/python3": f"python{version}", "bin/python": f"python{version}"}
    executables = [f"bin/python{version}"]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
        files[f"lib/{soname}"] = Path(libdir) / soname
        executables.append(f"lib/{soname}")
        ldlibrary = sysconfig.get_config_var("LDLIBRARY")
        if ldlibrary and ldlibrary != soname:
            symlinks[f"lib/{ldlibrary}"] = soname
    # The build prefix in sysconfig data, as conda-build records it: rewritten to the env's prefix.
    text_prefix = [
        path
        for path, source in files.items()
        if isinstance(source, Path)
        and path.rsplit("/", 1)[-1].startswith("_sysconfigdata")
        and str(base).encode() in source.read_bytes()
    ]
    return PackageSpec(
        "python",
        _version(),
        f"h0_0_cp{sys.version_info.major}{sys.version_info.minor}",
        files=files,
        symlinks=symlinks,
        executables=executables,
        text_prefix_files=text_prefix,
        placeholders={path: str(base) for path in text_prefix},
        compression_level=COMPRESSION,
    )


def build_python_package(channel_root: Path) -> Path:
    """Build ``channel_root/<subdir>/python-<X.Y.Z>-<build>.conda`` from this interpreter."""
    return build_package(python_spec(), channel_root)
