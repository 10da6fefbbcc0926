"""The conda plugin: ``conda pixi-pack`` registered through the entry point, run as real subprocesses.

Every test needs conda (``@pytest.mark.conda``: skipped with a reason where it is not importable).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from conda_pixi_pack.cli import pack as cli_pack
from conda_pixi_pack.cli import unpack as cli_unpack
from conda_pixi_pack.cli.main import build_parser
from conda_pixi_pack.cli.options import CONDA_ONLY_OPTIONS
from conda_pixi_pack.pack.output import OutputMode

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

pytestmark = pytest.mark.conda

#: The sample channel's lock is for linux-64; unpacking it needs that platform.
ON_LINUX_64: Final = sys.platform == "linux" and os.uname().machine == "x86_64"
#: What conda prints when an entry point fails to load (must never appear).
ENTRY_POINT_ERROR: Final = "Error while loading conda entry point"


def conda(args: Sequence[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conda", *args],
        cwd=cwd,
        env={**env, "NO_PROXY": "127.0.0.1,localhost"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return dict(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def conda_parser() -> argparse.ArgumentParser:
    """The ``pixi-pack`` parser exactly as conda builds it (its ArgumentParser, our hook)."""
    from conda.cli.conda_argparse import ArgumentParser

    from conda_pixi_pack.plugin import conda_subcommands

    (subcommand,) = conda_subcommands()
    parser = ArgumentParser(prog="conda pixi-pack", add_help=False)
    subcommand.configure_parser(parser)
    return parser


def test_plugin_imports_nothing_heavy(tmp_path: Path) -> None:
    """conda imports the plugin (and builds its parser) on every command: no rattler, no rich, no core."""
    code = (
        "import sys\n"
        "import conda_pixi_pack.plugin as plugin\n"
        "(sub,) = plugin.conda_subcommands()\n"
        "assert sub.name == 'pixi-pack', sub.name\n"
        "from conda.cli.conda_argparse import ArgumentParser\n"
        "parser = ArgumentParser(add_help=False)\n"
        "sub.configure_parser(parser)\n"
        "parser.parse_args(['unpack', '-n', 'x'])\n"
        "heavy = ('rattler', 'rich', 'conda_pixi_pack.pack.pipeline', 'conda_pixi_pack.unpack.pipeline',\n"
        "         'conda_pixi_pack.cli.render')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_conda_help_lists_the_subcommand(tmp_path: Path, conda_env: dict[str, str]) -> None:
    done = conda(["--help"], tmp_path, conda_env)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\s+pixi-pack\s+Pack a pixi.lock environment", done.stdout, re.MULTILINE)
    assert ENTRY_POINT_ERROR not in done.stderr

    done = conda(["pixi-pack", "--help"], tmp_path, conda_env)
    assert done.returncode == 0, done.stderr
    # conda names itself "conda", or "__main__.py" under `python -m conda` before 26.7
    assert re.match(r"usage: (conda|__main__\.py) pixi-pack ", done.stdout)
    assert re.search(r"^\s+pack\s+Pack the environment", done.stdout, re.MULTILINE)
    assert re.search(r"^\s+unpack\s+Unpack a pack", done.stdout, re.MULTILINE)


def test_bare_subcommand_prints_help(tmp_path: Path, conda_env: dict[str, str]) -> None:
    done = conda(["pixi-pack"], tmp_path, conda_env)
    assert done.returncode == 0, done.stderr
    assert re.search(r"usage: (conda|__main__\.py) pixi-pack", done.stdout)


@pytest.mark.parametrize("command", ["pack", "unpack"], ids=["pack", "unpack"])
def test_same_options_as_the_standalone_cli(command: str) -> None:
    """conda's helpers supply the shared flags under conda; the flags themselves are the same."""

    def options(parser: argparse.ArgumentParser) -> tuple[set[str], list[str]]:
        sub = subcommand_parsers(parser)[command]
        flags = {option for action in sub._actions for option in action.option_strings}
        positionals = [action.dest for action in sub._actions if not action.option_strings]
        return flags, positionals

    conda_flags, conda_positionals = options(conda_parser())
    flags, positionals = options(build_parser())
    assert conda_flags - CONDA_ONLY_OPTIONS == flags
    assert conda_positionals == positionals


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["pack", "-o", "-"], "mode", OutputMode.STREAM),
        (["pack", "-e", "prod", "-p", "linux-64"], "platform", "linux-64"),
        (["unpack", "-n", "demo"], "name", "demo"),
        (["unpack", "-d"], "dry_run", True),
        (["unpack", "-p", "/opt/env", "-y"], "prefix", Path("/opt/env")),
    ],
    ids=["pack-stdout", "pack-platform", "unpack-name", "unpack-dry-run", "unpack-prefix"],
)
def test_conda_parser_maps_to_the_same_options(argv: list[str], field: str, expected: object) -> None:
    args = conda_parser().parse_args(argv)
    module = cli_pack if argv[0] == "pack" else cli_unpack
    assert getattr(module.options_from_args(args), field) == expected


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Path:
    return make_project(["alpha", "beta"])


@pytest.mark.slow
def test_conda_pixi_pack_pack(project: Path, tmp_path: Path, conda_env: dict[str, str]) -> None:
    done = conda(["pixi-pack", "pack", str(project), "-p", "linux-64", "-o", "env.tar"], tmp_path, conda_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"Packed 2 conda packages and 0 wheels for linux-64 into {tmp_path / 'env.tar'} (")
    assert (tmp_path / "env.tar").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "where", ["after", "before"], ids=["json-after-subcommand", "json-before-subcommand"]
)
def test_conda_json(where: str, project: Path, tmp_path: Path, conda_env: dict[str, str]) -> None:
    args = ["pack", str(project), "-p", "linux-64", "-o", "env.tar"]
    argv = ["pixi-pack", *args, "--json"] if where == "after" else ["--json", "pixi-pack", *args]
    done = conda(argv, tmp_path, conda_env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["output"] == str(tmp_path / "env.tar")
    assert (result["conda_packages"], result["wheels"]) == (2, 0)
    assert "Packed" not in done.stderr


@pytest.mark.slow
def test_conda_unpack_json(project: Path, tmp_path: Path, conda_env: dict[str, str]) -> None:
    if not ON_LINUX_64:
        pytest.skip("the fixture lock is for linux-64 and unpacking needs that platform")
    done = conda(["pixi-pack", "pack", str(project), "-p", "linux-64", "-o", "env.tar"], tmp_path, conda_env)
    assert done.returncode == 0, done.stderr
    prefix = tmp_path / "prefix"
    done = conda(["pixi-pack", "unpack", "env.tar", "-p", str(prefix), "--json", "-y"], tmp_path, conda_env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["prefix"] == str(prefix)
    assert result["installer"] == "conda"
    assert sorted(result["conda_packages"]) == ["alpha=1.0=h0_0", "beta=1.2=h0_0"]
    assert (prefix / "conda-meta" / "history").is_file()


def test_errors_go_through_condas_handler(tmp_path: Path, conda_env: dict[str, str]) -> None:
    done = conda(["pixi-pack", "pack", "missing-project"], tmp_path, conda_env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("PixiPackError: ")
    assert "missing-project" in lines[0]
    assert done.stdout == ""
    assert not (tmp_path / "environment.tar").exists()


def test_json_errors_under_conda(tmp_path: Path, conda_env: dict[str, str]) -> None:
    done = conda(["pixi-pack", "pack", "missing-project", "--json"], tmp_path, conda_env)
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["exception_name"] == "PixiPackError"
    assert "missing-project" in error["message"]
    assert error["hint"]
    assert error["hint"] not in error["message"] and error["hint"] not in error["error"]
    assert "Traceback" not in done.stderr


def test_usage_error_keeps_its_exit_code(tmp_path: Path, conda_env: dict[str, str]) -> None:
    done = conda(["pixi-pack", "unpack", "-e", "x", "-n", "y"], tmp_path, conda_env)
    assert done.returncode == 2
    assert "cannot be combined with -n/--name" in done.stderr


def test_traceback_with_conda_verbosity(tmp_path: Path, conda_env: dict[str, str]) -> None:
    """conda shows tracebacks from -vv (its ``context.info``); one -v keeps the one line."""
    done = conda(["pixi-pack", "pack", "missing-project", "-vv"], tmp_path, conda_env)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "PixiPackError" in done.stderr


@pytest.mark.slow
def test_conda_pack_to_stdout_is_only_the_tar(
    project: Path, tmp_path: Path, conda_env: dict[str, str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conda", "pixi-pack", "pack", str(project), "-p", "linux-64", "-o", "-"],
        cwd=tmp_path,
        env={**conda_env, "NO_PROXY": "127.0.0.1,localhost"},
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        assert "pixi-pack.json" in tar.getnames()
    assert "into stdout" in done.stderr.decode()
