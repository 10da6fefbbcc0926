"""Unpacking into awkward prefixes with each backend: spaces and non-ASCII characters, a long path
that still fits the 255-character build placeholder, and one that does not.

Prefix replacement is what breaks first: text files take any prefix, but a binary file's C string
can only be replaced by one no longer than its placeholder. So a long prefix must either be
written into the binary, NUL-padded to the same length, or be refused naming the file, with
nothing left behind. Ordinary prefixes are covered by tests/unpack/test_unpack.py
(``test_prefix_and_shell_options``) and tests/unpack/test_install_conda.py
(``test_files_prefixes_symlinks_and_modes``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Final

import pytest

from tests.faults.helpers import CLI, cli_env, error_line, lost_bytes, snapshot, split_created
from tests.support.packages import PLACEHOLDER, binary_with_prefix
from tests.support.packs import make_pack

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Channel
    from tests.faults.conftest import Ledger

#: Characters shells, encodings and quoting trip over (but none that the activation script
#: refuses: ``$``, a backquote, ``"`` or ``\\``).
AWKWARD: Final = "env with spaces – ünïcødé 日本語 (x) & 'y'"
#: Lengths of the whole prefix: one that fits the placeholder, one that does not.
FITS: Final = 240
TOO_LONG: Final = 300


def long_prefix(base: Path, length: int) -> Path:
    """A prefix below ``base`` of exactly ``length`` characters, in folders of 50."""
    path = str(base)
    while len(path) < length:
        path += "/" + "p" * min(50, length - len(path) - 1)
    assert len(path) == length, path
    return type(base)(path)


@pytest.fixture(scope="module")
def prefixed_pack(tmp_path_factory: pytest.TempPathFactory, sample_channel: Channel) -> Path:
    names = ("prefixed", "activated", "alpha", "beta")
    return make_pack(
        tmp_path_factory.mktemp("prefixes"), [sample_channel.packages[n] for n in names], platform="linux-64"
    )


def _run(
    pack: Path, prefix: Path, out: Path, installer: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    command = [*CLI, "unpack", str(pack), "-p", str(prefix), "-o", str(out), "--installer", installer, "-q"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def _env(installer: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    env = cli_env(tmp_path / "tmp")
    if installer == "conda":
        env = {**request.getfixturevalue("conda_env"), **env}
    return env


INSTALLERS: Final = ["rattler", pytest.param("conda", marks=pytest.mark.conda)]


@pytest.mark.parametrize("installer", INSTALLERS, ids=["rattler", "conda"])
@pytest.mark.parametrize("kind", ["spaces-and-non-ascii", "long-but-fits"])
def test_an_awkward_prefix_gets_every_placeholder_replaced(
    prefixed_pack: Path, tmp_path: Path, request: pytest.FixtureRequest, installer: str, kind: str
) -> None:
    """Text and binary placeholders replaced, the library's length kept, links intact, and the
    activation script works from a real bash."""
    out = tmp_path / "out"
    prefix = out / AWKWARD if kind == "spaces-and-non-ascii" else long_prefix(out, FITS)
    env = _env(installer, tmp_path, request)
    done = _run(prefixed_pack, prefix, out, installer, env)
    assert done.returncode == 0, done.stderr
    text = str(prefix)
    assert (prefix / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{text}"\n'
    assert (prefix / "etc" / "prefixed.conf").read_text() == f"prefix={text}\ndata={text}/share/prefixed\n"
    binary = (prefix / "lib" / "libprefixed.so.2.0").read_bytes()
    assert len(binary) == len(binary_with_prefix("/lib")), "binary replacement keeps the file's length"
    assert (text + "/lib").encode() + b"\0" in binary
    assert PLACEHOLDER.encode() not in binary
    assert (prefix / "lib" / "libprefixed.so").resolve() == (prefix / "lib" / "libprefixed.so.2.0")
    if shutil.which("bash") is not None:
        script = f'source "{out / "activate.sh"}" && echo "$CONDA_PREFIX" && echo "$FIXTURE_ACTIVATED"'
        activated = subprocess.run(
            ["bash", "-c", script],
            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=60,
        )  # fmt: skip
        assert activated.returncode == 0, activated.stderr
        assert activated.stdout.splitlines() == [text, "yes"]


#: What each backend says when the prefix does not fit a binary placeholder.
TOO_LONG_MESSAGES: Final = {
    "rattler": r"failed to link 'lib/libprefixed\.so\.2\.0'.*"
    r"target prefix cannot be longer than the placeholder",
    "conda": r"Placeholder of length '255' too short in package \S+/lib/libprefixed\.so\.2\.0",
}


@pytest.mark.parametrize("installer", INSTALLERS, ids=["rattler", "conda"])
def test_a_prefix_too_long_for_a_binary_placeholder_is_refused(
    prefixed_pack: Path, tmp_path: Path, ledger: Ledger, request: pytest.FixtureRequest, installer: str
) -> None:
    """One line naming the file that cannot take the prefix; nothing left, not even the folders."""
    out = tmp_path / "out"
    prefix = long_prefix(out, TOO_LONG)
    env = _env(installer, tmp_path, request)
    before = snapshot(tmp_path)
    done = _run(prefixed_pack, prefix, out, installer, env)
    after = snapshot(tmp_path)
    left, escaped = split_created(before, after)
    ledger.escape(len(escaped))
    ledger.lose(lost_bytes(before, after))
    assert done.returncode == 1, done.stderr
    line = error_line(done.stderr)
    assert re.search(TOO_LONG_MESSAGES[installer], line), line
    assert (left, escaped) == ([], [])
    assert not out.exists()
