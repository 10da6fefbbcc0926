"""Activation scripts from py-rattler's activator, one per supported shell."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.unpack.activation import SHELLS, check_quotable, resolve_shell, write_activation_script


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    """A minimal environment: one program and one activate.d script per script kind."""
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "conda-meta").mkdir()
    hello = env / "bin" / "hello-env"
    hello.write_text('#!/bin/sh\necho "hello from $CONDA_PREFIX"\n')
    hello.chmod(0o755)
    activate_d = env / "etc" / "conda" / "activate.d"
    activate_d.mkdir(parents=True)
    (activate_d / "fixture.sh").write_text('export FIXTURE_ACTIVATED="yes"\n')
    (activate_d / "fixture.fish").write_text('set -gx FIXTURE_ACTIVATED "yes"\n')
    return env


@pytest.mark.parametrize(
    ("shell", "file_name", "expected"),
    [
        ("bash", "activate.sh", ["export CONDA_PREFIX=", "activate.d/fixture.sh"]),
        ("zsh", "activate.sh", ["export CONDA_PREFIX=", "activate.d/fixture.sh"]),
        ("fish", "activate.fish", ["set -gx CONDA_PREFIX", "activate.d/fixture.fish"]),
        ("xonsh", "activate.xsh", ["$CONDA_PREFIX", "activate.d/fixture.sh"]),
        ("powershell", "activate.ps1", ["${Env:CONDA_PREFIX}"]),
        ("cmd", "activate.bat", ['@SET "CONDA_PREFIX=']),
    ],
    ids=list(SHELLS),
)
def test_every_shell(tmp_path: Path, prefix: Path, shell: str, file_name: str, expected: list[str]) -> None:
    script = write_activation_script(prefix, shell, "linux-64", tmp_path)
    assert script == tmp_path / file_name
    text = script.read_text()
    assert str(prefix / "bin") in text
    for fragment in expected:
        assert fragment in text
    # The script prepends to the PATH of the shell that sources it, not to ours.
    own_path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    assert not any(p in text for p in own_path if len(p) > 4)


@pytest.mark.parametrize(
    ("platform", "expected"),
    [("linux-64", "bash"), ("osx-arm64", "bash"), ("win-64", "cmd")],
    ids=["linux", "macos", "windows"],
)
def test_default_shell_follows_the_platform(platform: str, expected: str) -> None:
    assert resolve_shell(None, platform) == expected


def test_unknown_shell_lists_the_valid_ones(tmp_path: Path, prefix: Path) -> None:
    with pytest.raises(PackError, match="unknown shell 'tcsh'") as excinfo:
        write_activation_script(prefix, "tcsh", "linux-64", tmp_path)
    assert excinfo.value.hint == "choose one of: bash, zsh, fish, xonsh, powershell, cmd"
    assert not list(tmp_path.glob("activate*"))


def test_replaces_an_old_script_without_leftovers(tmp_path: Path, prefix: Path) -> None:
    (tmp_path / "activate.sh").write_text("old\n")
    write_activation_script(prefix, "bash", "linux-64", tmp_path)
    assert "CONDA_PREFIX" in (tmp_path / "activate.sh").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["activate.sh", "env"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_sourced_in_bash(tmp_path: Path, prefix: Path) -> None:
    script = write_activation_script(prefix, "bash", "linux-64", tmp_path)
    out = subprocess.run(
        ["bash", "-c", f'source "{script}" && echo "$FIXTURE_ACTIVATED" && hello-env'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert out.stdout.splitlines() == ["yes", f"hello from {prefix}"]


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_a_prefix_the_script_cannot_quote_is_refused(shell: str) -> None:
    """rattler puts the prefix in double quotes unescaped: ``$HOME`` or a backquoted command in
    the path would be expanded or run by whoever sources the script."""
    unsafe = {"cmd": "/tmp/100%/env"}.get(shell, "/tmp/d$HOME`x`/env")
    with pytest.raises(PackError, match="cannot quote") as refused:
        check_quotable(Path(unsafe), shell)
    assert "choose a folder" in (refused.value.hint or "")
    check_quotable(Path("/tmp/with space/ünï-code/env"), shell)  # what it does quote is fine


def test_unpack_refuses_such_a_prefix_before_anything_is_made(tmp_path: Path) -> None:
    from conda_pixi_pack.unpack.pipeline import UnpackOptions, unpack

    out = tmp_path / "d$HOME"
    with pytest.raises(PackError, match=r"contains \$, which the bash activation script cannot quote"):
        unpack(UnpackOptions(source=tmp_path / "environment.tar", output_directory=out, installer="rattler"))
    assert list(tmp_path.iterdir()) == []
