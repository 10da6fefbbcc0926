"""A stand-in for conda-forge's ``micromamba`` package, for ``pack --unpacker-source``.

No conda channel is reachable from the tests, so the embedded installer of a self-extracting pack
is a real linux-64 ``micromamba`` conda package built here whose ``bin/micromamba`` records how the
script calls it (its arguments, the folder it runs in and what that folder holds) and then
installs the pack it is run on with this tool, through the absolute path of the test's
interpreter and this checkout's package (whatever the interpreter has installed): nothing it
needs comes from PATH, as with the real static binary.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final, Literal

from tests.support.packages import PackageSpec, build_package

#: The folder that holds the ``conda_pixi_pack`` under test.
CHECKOUT: Final = Path(__file__).resolve().parents[2]


def fake_micromamba(
    tmp_path: Path, *, delay: float = 0, fmt: Literal["conda", "tar.bz2"] = "conda"
) -> tuple[Path, Path]:
    """Build the package under ``tmp_path``; returns the package and the record file.

    The record file lists the arguments, one a line; ``<record>.cwd`` holds the folder it ran in
    and ``<record>.ls`` that folder's listing. ``delay`` seconds pass between recording and
    installing (to interrupt it).
    """
    record = tmp_path / "micromamba-called"
    program = "\n".join([
        "#!/bin/sh",
        f'printf "%s\\n" "$PWD" > "{record}.cwd"',
        f'ls > "{record}.ls"',
        f': > "{record}"',
        f'for argument in "$@"; do printf "%s\\n" "$argument" >> "{record}"; done',
        f"sleep {delay}",
        'while [ "$#" -gt 0 ]; do [ "$1" = --prefix ] && prefix="$2"; shift; done',
        f'export PYTHONPATH="{CHECKOUT}"',
        f'exec "{sys.executable}" -m conda_pixi_pack unpack . -p "$prefix" --installer rattler -q',
        "",
    ])  # fmt: skip
    spec = PackageSpec(
        "micromamba", "2.0.0", "0", files={"bin/micromamba": program}, executables=["bin/micromamba"], fmt=fmt
    )
    return build_package(spec, tmp_path / "unpacker-channel"), record
