"""The standalone CLI: ``conda-pixi-pack`` and ``python -m conda_pixi_pack``, run as real subprocesses.

Flag -> option mapping is tested in-process, flag by flag; what a user sees (help, errors, the
final lines, stdout kept clean, bars on a terminal) through the installed console script.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from conda_pixi_pack.cli import pack as cli_pack
from conda_pixi_pack.cli import unpack as cli_unpack
from conda_pixi_pack.cli.main import build_parser, main
from conda_pixi_pack.cli.options import Output
from conda_pixi_pack.errors import PackError, UserCancelled
from conda_pixi_pack.pack.output import OutputMode
from conda_pixi_pack.pack.pipeline import PackResult
from conda_pixi_pack.unpack.activation import SHELLS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from conda_pixi_pack.progress import Reporter

#: The console script installed beside this interpreter (the project is installed in the venv).
SCRIPT: Final = shutil.which("conda-pixi-pack", path=str(Path(sys.executable).parent))
#: Both ways to run the standalone CLI.
LAUNCHERS: Final = {
    "console-script": [SCRIPT] if SCRIPT else None,
    "python-m": [sys.executable, "-m", "conda_pixi_pack"],
}
#: Every option of each subcommand, as the user types them (the tests below check each one).
PACK_FLAGS: Final = (
    "-m --manifest-file -e --environment -n --name --prefix --from-explicit --category --ignore-missing "
    "-p --platform -o --output-file --directory-only -d --dry-run -y --yes "
    "--create-executable --unpacker-source --unpacker-sha256 --use-cache "
    "-i --inject --ignore-pypi-non-wheel --auth-file --config --json -v --verbose -q --quiet"
).split()
UNPACK_FLAGS: Final = (
    "-o --output-directory -e --env-name -n --name -p --prefix --force -s --shell --installer "
    "--pkgs-dir -d --dry-run -y --yes --json -v --verbose -q --quiet"
).split()
#: ANSI escape sequences (colours, cursor moves) rich writes on a terminal.
ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: The sample channel's lock is for linux-64; unpacking it needs that platform.
ON_LINUX_64: Final = sys.platform == "linux" and os.uname().machine == "x86_64"


def launcher(name: str) -> list[str]:
    command = LAUNCHERS[name]
    # the project is installed for its tests (make test): a missing console script is a failure
    assert command is not None, "the conda-pixi-pack console script is not installed beside this interpreter"
    return command


def run(
    args: Sequence[str], cwd: Path, *, launch: str = "console-script", stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("RATTLER_AUTH_FILE", None)
    return subprocess.run(
        [*launcher(launch), *args], cwd=cwd, input=stdin, capture_output=True, env=env, timeout=300
    )


def text(stream: bytes) -> str:
    return stream.decode("utf-8", "replace")


# -- help, version, bare command -----------------------------------------------------------------


@pytest.fixture(scope="module")
def help_texts(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    """``--help`` of the top level and both subcommands, for both launchers (run once)."""
    cwd = tmp_path_factory.mktemp("help")
    texts = {}
    for name, command in LAUNCHERS.items():
        if command is None:
            continue
        for sub in ("", "pack", "unpack"):
            done = run([sub, "--help"] if sub else ["--help"], cwd, launch=name)
            assert done.returncode == 0, text(done.stderr)
            texts[name, sub] = text(done.stdout)
    return texts


@pytest.mark.parametrize("launch", list(LAUNCHERS), ids=list(LAUNCHERS))
def test_help_lists_both_subcommands(launch: str, help_texts: dict[tuple[str, str], str]) -> None:
    launcher(launch)
    top = help_texts[launch, ""]
    assert re.search(r"^\s+pack\s+Pack the environment of a pixi.lock", top, re.MULTILINE)
    assert re.search(r"^\s+unpack\s+Unpack a pack", top, re.MULTILINE)
    prog = "conda-pixi-pack" if launch == "console-script" else "python -m conda_pixi_pack"
    assert top.startswith(f"usage: {prog} ")


@pytest.mark.parametrize("launch", list(LAUNCHERS), ids=list(LAUNCHERS))
@pytest.mark.parametrize(
    ("command", "flag"),
    [("pack", flag) for flag in PACK_FLAGS] + [("unpack", flag) for flag in UNPACK_FLAGS],
    ids=[f"pack{flag}" for flag in PACK_FLAGS] + [f"unpack{flag}" for flag in UNPACK_FLAGS],
)
def test_every_flag_in_help(
    launch: str, command: str, flag: str, help_texts: dict[tuple[str, str], str]
) -> None:
    launcher(launch)
    assert re.search(rf"(^|[\s\[,]){re.escape(flag)}([\s,\]]|$)", help_texts[launch, command])


def test_help_says_what_the_readme_says(help_texts: dict[tuple[str, str], str]) -> None:
    """A lock file can be given as the manifest; rattler's default cache is a temporary one."""
    pack_help = " ".join(help_texts["python-m", "pack"].split())
    assert "or the lock file itself: a pixi.lock or a conda-lock file" in pack_help
    unpack_help = " ".join(help_texts["python-m", "unpack"].split())
    assert "conda's first writable pkgs_dirs with --installer conda" in unpack_help
    assert "a temporary cache, removed at the end, with --installer rattler" in unpack_help


@pytest.mark.parametrize(
    ("command", "flags"), [("pack", PACK_FLAGS), ("unpack", UNPACK_FLAGS)], ids=["pack", "unpack"]
)
def test_flag_lists_are_complete(command: str, flags: Sequence[str]) -> None:
    """The lists above are the parser's options: a new flag cannot slip past these tests."""
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    options = {option for action in sub._actions for option in action.option_strings}
    assert options == {*flags, "-h", "--help"}


@pytest.mark.parametrize("launch", list(LAUNCHERS), ids=list(LAUNCHERS))
def test_bare_command_prints_help(launch: str, tmp_path: Path) -> None:
    done = run([], tmp_path, launch=launch)
    assert done.returncode == 0
    assert "pack" in text(done.stdout)
    assert "unpack" in text(done.stdout)


def test_version(tmp_path: Path) -> None:
    from conda_pixi_pack import __version__

    done = run(["--version"], tmp_path)
    assert done.returncode == 0
    assert text(done.stdout).strip() == f"conda-pixi-pack {__version__}"


def test_parser_imports_nothing_heavy(tmp_path: Path) -> None:
    """Building and parsing (what conda does on every command) loads neither rattler nor rich."""
    code = (
        "import sys\n"
        "from conda_pixi_pack.cli.main import build_parser\n"
        "build_parser().parse_args(['pack', '-o', 'x.tar'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('rattler', 'rich'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_standalone_works_without_conda(tmp_path: Path) -> None:
    """CI has no conda: the standalone CLI must never import it (blocked here to prove it)."""
    code = (
        "import sys\n"
        "sys.modules['conda'] = None\n"
        "from conda_pixi_pack.cli.main import main\n"
        "assert main(['pack', '--help']) == 0\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--manifest-file" in done.stdout
    code = code.replace("assert main(['pack', '--help']) == 0", "sys.exit(main(['pack', 'nope']))")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "nope" in done.stderr, done.stderr


# -- flags -> options ----------------------------------------------------------------------------


def pack_options(argv: Sequence[str]) -> object:
    return cli_pack.options_from_args(build_parser().parse_args(["pack", *argv]))


def unpack_options(argv: Sequence[str]) -> object:
    return cli_unpack.options_from_args(build_parser().parse_args(["unpack", *argv]))


PACK_MAPPING: Final = [
    ("manifest-positional", ["proj"], "source.manifest", Path("proj")),
    ("manifest-short", ["-m", "proj/pixi.toml"], "source.manifest", Path("proj/pixi.toml")),
    ("manifest-long", ["--manifest-file", "pyproject.toml"], "source.manifest", Path("pyproject.toml")),
    ("environment-default", [], "source.environment", "default"),
    ("environment-short", ["-e", "prod"], "source.environment", "prod"),
    ("environment-long", ["--environment", "test"], "source.environment", "test"),
    ("platform-default", [], "platform", None),
    ("platform-short", ["-p", "osx-arm64"], "platform", "osx-arm64"),
    ("platform-long", ["--platform", "win-64"], "platform", "win-64"),
    ("output-default", [], "output", Path("environment.tar")),
    ("output-short", ["-o", "out.tar"], "output", Path("out.tar")),
    ("output-long", ["--output-file", "dir/out.tar"], "output", Path("dir/out.tar")),
    ("output-stdout", ["-o", "-"], "mode", OutputMode.STREAM),
    ("output-not-stdout", ["-o", "out.tar"], "mode", OutputMode.ARCHIVE),
    ("directory-only", ["--directory-only"], "mode", OutputMode.FOLDER),
    ("directory-only-default-output", ["--directory-only"], "output", Path("environment")),
    ("directory-only-output", ["--directory-only", "-o", "packdir"], "output", Path("packdir")),
    ("use-cache", ["--use-cache", "cache"], "cache_dir", Path("cache")),
    ("use-cache-tilde", ["--use-cache=~/cache"], "cache_dir", Path.home() / "cache"),
    ("use-cache-default", [], "cache_dir", None),
    ("inject-repeated", ["--inject", "a.conda", "-i", "b.whl"], "inject", [Path("a.conda"), Path("b.whl")]),
    ("inject-default", [], "inject", []),
    ("ignore-pypi-non-wheel", ["--ignore-pypi-non-wheel"], "source.ignore_pypi_non_wheel", True),
    ("ignore-pypi-non-wheel-default", [], "source.ignore_pypi_non_wheel", False),
    ("auth-file", ["--auth-file", "auth.json"], "auth_file", Path("auth.json")),
    ("config", ["--config", "config.toml"], "config_file", Path("config.toml")),
]


@pytest.mark.parametrize(
    ("argv", "field", "expected"), [case[1:] for case in PACK_MAPPING], ids=[case[0] for case in PACK_MAPPING]
)
def test_pack_flag_to_option(argv: list[str], field: str, expected: object) -> None:
    assert attrgetter(field)(pack_options(argv)) == expected


def test_pack_manifest_defaults_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert pack_options([]).source.manifest == tmp_path  # type: ignore[attr-defined]


UNPACK_MAPPING: Final = [
    ("pack-default", [], "source", Path("environment.tar")),
    ("pack-positional", ["my.tar"], "source", Path("my.tar")),
    ("pack-folder", ["packdir"], "source", Path("packdir")),
    ("pack-stdin", ["-"], "from_stdin", True),
    ("pack-not-stdin", ["my.tar"], "from_stdin", False),
    ("output-directory-short", ["-o", "out"], "output_directory", Path("out")),
    ("output-directory-long", ["--output-directory", "out2"], "output_directory", Path("out2")),
    ("output-directory-dash-folder", ["-o", "./-"], "output_directory", Path("-")),
    ("output-directory-tilde", ["-o", "~/envs"], "output_directory", Path.home() / "envs"),
    ("env-name-default", [], "env_name", "env"),
    ("env-name-short", ["-e", "myenv"], "env_name", "myenv"),
    ("env-name-long", ["--env-name", "other"], "env_name", "other"),
    ("name-short", ["-n", "demo"], "name", "demo"),
    ("name-long", ["--name", "demo2"], "name", "demo2"),
    ("name-default", [], "name", None),
    ("prefix-short", ["-p", "/opt/env"], "prefix", Path("/opt/env")),
    ("prefix-long", ["--prefix", "rel/env"], "prefix", Path("rel/env")),
    ("prefix-default", [], "prefix", None),
    ("name-keeps-output-directory", ["-n", "demo", "-o", "scripts"], "output_directory", Path("scripts")),
    ("force", ["--force"], "force", True),
    ("force-default", [], "force", False),
    ("shell-default", [], "shell", None),
    *[(f"shell-{shell}", ["-s", shell], "shell", shell) for shell in SHELLS],
    ("shell-long", ["--shell", "fish"], "shell", "fish"),
    ("installer-default", [], "installer", None),
    ("installer-conda", ["--installer", "conda"], "installer", "conda"),
    ("installer-rattler", ["--installer", "rattler"], "installer", "rattler"),
    ("pkgs-dir", ["--pkgs-dir", "pkgs"], "pkgs_dir", Path("pkgs")),
    ("pkgs-dir-default", [], "pkgs_dir", None),
    ("dry-run-short", ["-d"], "dry_run", True),
    ("dry-run-long", ["--dry-run"], "dry_run", True),
    ("dry-run-default", [], "dry_run", False),
]


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [case[1:] for case in UNPACK_MAPPING],
    ids=[case[0] for case in UNPACK_MAPPING],
)
def test_unpack_flag_to_option(argv: list[str], field: str, expected: object) -> None:
    assert getattr(unpack_options(argv), field) == expected


def test_unpack_output_directory_defaults_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert unpack_options([]).output_directory == tmp_path  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], Output()),
        (["--json"], Output(json=True)),
        (["-v"], Output(verbosity=1)),
        (["--verbose", "-v"], Output(verbosity=2)),
        (["-q"], Output(quiet=True)),
        (["--quiet"], Output(quiet=True)),
    ],
    ids=["default", "json", "verbose", "verbose-twice", "quiet-short", "quiet-long"],
)
@pytest.mark.parametrize("command", ["pack", "unpack"], ids=["pack", "unpack"])
def test_output_flags(command: str, argv: list[str], expected: Output) -> None:
    assert Output.from_args(build_parser().parse_args([command, *argv])) == expected


def test_yes_is_accepted(tmp_path: Path) -> None:
    assert build_parser().parse_args(["unpack", "-y"]).yes is True


# -- usage errors (exit 2) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pack", "a", "-m", "b"], "either as an argument or with -m, not both"),
        (["pack", "-m", "b", "a"], "either as an argument or with -m, not both"),
        (["pack", "--directory-only", "-o", "-"], "--directory-only writes a folder"),
        (["pack", "--json", "-o", "-"], "would both write to stdout"),
        (["pack", "--create-executable", "-o", "-"], "--create-executable writes a script file"),
        (["pack", "--create-executable", "--directory-only"], "cannot be combined with --directory-only"),
        (["pack", "--unpacker-source", "mm.conda"], "--unpacker-source only applies to --create-executable"),
        (["pack", "--create-executable", "--unpacker-sha256", "a"], "needs --unpacker-source"),
        (["pack", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["unpack", "-n", "a", "-p", "b"], "not allowed with argument"),
        (["unpack", "-e", "x", "-n", "a"], "cannot be combined with -n/--name or -p/--prefix"),
        (["unpack", "-s", "tcsh"], "invalid choice: 'tcsh'"),
        (["unpack", "--installer", "pip"], "invalid choice: 'pip'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["unpack", "-e", ""], "-e/--env-name is empty"),
        (["unpack", "-n", " "], "-n/--name is empty"),
        (["unpack", "-p", ""], "-p/--prefix is empty"),
        (["unpack", "-o", "-"], "unpack writes an environment, not a stream"),
        (["unpack", "a.tar", "-n", "x", "-p", "y", "--json"], "not allowed with argument"),
        (["unpack", "-s", "tcsh", "--json"], "invalid choice: 'tcsh'"),
        (["pack", "--no-such-flag", "--json"], "unrecognized arguments: --no-such-flag"),
        (["pack", "a", "-m", "b", "--json"], "either as an argument or with -m, not both"),
    ],
    ids=[
        "manifest-twice",
        "manifest-twice-reversed",
        "directory-only-to-stdout",
        "json-and-stdout",
        "executable-to-stdout",
        "executable-and-folder",
        "unpacker-without-executable",
        "sha256-without-unpacker",
        "unknown-flag",
        "name-and-prefix",
        "env-name-and-name",
        "bad-shell",
        "bad-installer",
        "bad-command",
        "empty-env-name",
        "blank-name",
        "empty-prefix",
        "unpack-to-stdout",
        "name-and-prefix-json",
        "bad-shell-json",
        "unknown-flag-json",
        "manifest-twice-json",
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    done = run(argv, tmp_path)
    assert done.returncode == 2
    # with --json the error is the JSON object on stdout, otherwise one line on stderr
    assert message in text(done.stdout if "--json" in argv else done.stderr)
    assert "Traceback" not in text(done.stderr)
    if "--json" not in argv:
        assert done.stdout == b""


@pytest.mark.parametrize(
    ("argv", "command"),
    [(["unpack", "--bogus"], "unpack"), (["unpack", "-s", "tcsh"], "unpack"), (["pack", "--bogus"], "pack"),
     (["inspect", "x.tar", "--bogus"], "inspect")],
    ids=["unpack-unknown-flag", "unpack-bad-choice", "pack-unknown-flag", "inspect-unknown-flag"],
)  # fmt: skip
def test_a_subcommands_usage_errors_show_its_own_usage(argv: list[str], command: str, tmp_path: Path) -> None:
    """An unknown flag is reported like any other usage error of the subcommand it was given to."""
    done = run(argv, tmp_path)
    assert done.returncode == 2
    assert text(done.stderr).startswith(f"usage: conda-pixi-pack {command} ")


def test_unpack_to_stdout_is_one_usage_line(tmp_path: Path) -> None:
    """``-o -`` means stdout for pack; for unpack it is refused instead of making a folder '-'."""
    done = run(["unpack", "environment.tar", "-o", "-"], tmp_path)
    assert done.returncode == 2
    line = (
        "error: -o/--output-directory cannot be '-': unpack writes an environment, not a stream "
        "(give a folder, such as -o .)"
    )
    assert text(done.stderr).splitlines() == [line]
    assert done.stdout == b""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["unpack", "a.tar", "-n", "x", "-p", "y", "--json"],
        ["unpack", "--json", "-s", "tcsh"],
        ["pack", "--json", "--no-such-flag"],
        ["--json"],
    ],
    ids=["name-and-prefix", "bad-shell", "unknown-flag", "json-at-top-level"],
)
def test_argparse_errors_with_json_are_a_json_object(argv: list[str], tmp_path: Path) -> None:
    """Scripts reading --json get the same error object for every usage error, not a usage text."""
    done = run(argv, tmp_path)
    assert done.returncode == 2
    error = json.loads(done.stdout)
    assert error["exception_name"] == "UsageError"
    assert error["return_code"] == 2
    assert error["error"] == f"UsageError: {error['message']}"
    assert "--help" in error["hint"]
    assert done.stderr == b""


def test_argparse_errors_without_json_keep_the_usage_text(tmp_path: Path) -> None:
    done = run(["unpack", "-s", "tcsh"], tmp_path)
    assert done.returncode == 2
    lines = text(done.stderr).splitlines()
    assert lines[0].startswith("usage: conda-pixi-pack unpack ")
    assert lines[-1].startswith("conda-pixi-pack unpack: error: argument -s/--shell: invalid choice: 'tcsh'")
    assert done.stdout == b""


# -- errors (exit 1), rendered as one line -------------------------------------------------------


@pytest.mark.parametrize("launch", list(LAUNCHERS), ids=list(LAUNCHERS))
def test_missing_manifest_is_one_line(launch: str, tmp_path: Path) -> None:
    done = run(["pack", "missing-project"], tmp_path, launch=launch)
    assert done.returncode == 1
    lines = text(done.stderr).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "missing-project" in lines[0]
    assert done.stdout == b""
    assert not (tmp_path / "environment.tar").exists()


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    done = run(["pack", "missing-project", "-v"], tmp_path)
    assert done.returncode == 1
    stderr = text(done.stderr)
    assert "Traceback (most recent call last)" in stderr
    assert stderr.splitlines()[-1].startswith("error: ")


def test_json_error_object_on_stdout(tmp_path: Path) -> None:
    done = run(["pack", "missing-project", "--json"], tmp_path)
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["exception_name"] == "PackError"
    assert "missing-project" in error["message"]
    assert error["error"] == f"PackError: {error['message']}"
    assert error["hint"]
    assert error["hint"] not in error["message"]  # each says its own part
    assert "Traceback" not in text(done.stderr)


def test_unpack_missing_pack_is_one_line(tmp_path: Path) -> None:
    done = run(["unpack", "nowhere.tar", "--installer", "rattler"], tmp_path)
    assert done.returncode == 1
    lines = text(done.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere.tar" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def fake_pack(behaviour: Callable[[Reporter], PackResult]) -> Callable[..., PackResult]:
    def pack(options: object, reporter: Reporter) -> PackResult:
        return behaviour(reporter)

    return pack


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (PackError("the lock is broken", "run pixi lock"), 1, "error: the lock is broken (run pixi lock)"),
        (UserCancelled(), 130, "error: interrupted; nothing was written"),
        (KeyboardInterrupt(), 130, "error: interrupted"),
        (
            RuntimeError("boom"),
            1,
            "error: unexpected RuntimeError: boom (run with -v for the traceback; please report it)",
        ),
    ],
    ids=["pack-error", "user-cancelled", "keyboard-interrupt", "unexpected"],
)
@pytest.mark.parametrize("verbose", [False, True], ids=["quiet-traceback", "verbose"])
def test_error_rendering(
    raised: BaseException,
    code: int,
    line: str,
    verbose: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    def behaviour(reporter: Reporter) -> PackResult:
        raise raised

    monkeypatch.setattr("conda_pixi_pack.pack.pipeline.pack", fake_pack(behaviour))
    assert main(["pack", str(tmp_path), *(["-v"] if verbose else [])]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == line
    assert ("Traceback" in captured.err) is verbose


#: A pack core that waits to be interrupted, cleaning up as the real one does, run by the real entry.
INTERRUPTIBLE: Final = """
import sys, time
from pathlib import Path
import conda_pixi_pack.pack.pipeline
from conda_pixi_pack.cli.main import run
from conda_pixi_pack.errors import UserCancelled

def pack(options, reporter):
    partial = Path("partial.tar")
    partial.write_bytes(b"half")
    try:
        print("ready", file=sys.stderr, flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        raise UserCancelled() from None
    finally:
        partial.unlink()

conda_pixi_pack.pack.pipeline.pack = pack
run()
"""


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["ctrl-c-130", "sigterm-143"],
)
@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_interrupted_exit_codes(signum: int, code: int, json_output: bool, tmp_path: Path) -> None:
    """Ctrl-C exits 130 and SIGTERM 143 (128 + the signal, as a shell reports), both cleaned up."""
    argv = ["pack", str(tmp_path), *(["--json"] if json_output else [])]
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTIBLE, *argv],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline() == b"ready\n"
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == code, text(stderr)
    if json_output:
        error = json.loads(stdout)
        assert (error["message"], error["return_code"]) == ("interrupted; nothing was written", code)
    else:
        assert text(stderr).splitlines() == ["error: interrupted; nothing was written"]
    assert list(tmp_path.iterdir()) == []  # the partial file was removed


#: The console script's entry, with a signal sent while a module is imported (the first
#: argument: the signal, the second: the module).
SIGNALLED_EARLY: Final = """
import os, sys
from conda_pixi_pack.cli.entry import run

SIGNUM, MODULE = int(sys.argv.pop(1)), sys.argv.pop(1)

class SignalOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            os.kill(os.getpid(), SIGNUM)
        return None

sys.meta_path.insert(0, SignalOnImport())
run()
"""


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["ctrl-c-130", "sigterm-143"],
)
@pytest.mark.parametrize(
    "module",
    ["conda_pixi_pack.cli.options", "conda_pixi_pack.cli.inspect"],
    ids=["while-the-cli-is-imported", "while-the-parser-is-built"],
)
def test_a_signal_before_the_command_runs_ends_the_run(
    signum: int, code: int, module: str, tmp_path: Path
) -> None:
    """Ctrl-C or SIGTERM while the program starts stops it before the command begins, with the
    one line and the exit code of any later interruption. (While the parser was built, it was
    ignored: the command ran, here to its error for a folder without a lock. While the CLI was
    imported, Ctrl-C printed Python's traceback of the import.)"""
    done = subprocess.run(
        [sys.executable, "-c", SIGNALLED_EARLY, str(int(signum)), module, "pack", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert (done.returncode, text(done.stderr).splitlines()) == (code, ["error: interrupted"])
    assert list(tmp_path.iterdir()) == []


def test_sigterm_without_the_core_catching_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bare KeyboardInterrupt from SIGTERM is 143 too; the previous handler is back afterwards."""

    def behaviour(reporter: Reporter) -> PackResult:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr("conda_pixi_pack.pack.pipeline.pack", fake_pack(behaviour))
    assert main(["pack", str(tmp_path)]) == 143
    assert capsys.readouterr().err.splitlines()[-1] == "error: interrupted"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("later", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_only_the_first_interrupt_counts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, later: int
) -> None:
    """More Ctrl-C (a key held down) or a SIGTERM while the first one's cleanup runs do not cut it
    short; the first signal decides the exit code; the handlers are back afterwards."""
    cleaned: list[str] = []

    def behaviour(reporter: Reporter) -> PackResult:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("SIGINT did not interrupt")
        finally:
            for _ in range(20):
                os.kill(os.getpid(), later)
            cleaned.append("cleanup ran to its end")

    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    monkeypatch.setattr("conda_pixi_pack.pack.pipeline.pack", fake_pack(behaviour))
    assert main(["pack", str(tmp_path)]) == 130
    assert cleaned == ["cleanup ran to its end"]
    assert capsys.readouterr().err.splitlines()[-1] == "error: interrupted"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


@pytest.mark.parametrize("output", ["-", "/dev/stdout"])
def test_refuses_to_write_a_tar_to_a_terminal(output: str) -> None:
    """stdout on a real terminal (a pty): nothing is written to it, one line on stderr."""
    import pty
    import select

    demo = Path(__file__).resolve().parents[2] / "examples" / "demo"
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "conda_pixi_pack", "pack", str(demo), "-o", output],
            stdout=secondary,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
        written = os.read(primary, 65536) if select.select([primary], [], [], 0.5)[0] else b""
    finally:
        os.close(secondary)
        os.close(primary)
    assert done.returncode == 1
    refusal = "error: refusing to write the pack (a tar) to a terminal"
    assert done.stderr.strip().splitlines() == [
        f"{refusal} (redirect stdout to a file or a pipe, or give -o FILE)"
    ]
    assert written == b""


def test_json_with_stdout_closed(tmp_path: Path) -> None:
    """``--json`` with stdout closed must not crash looking at where stdout goes."""
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo"
    output = tmp_path / "environment.tar"
    done = subprocess.run(
        [sys.executable, "-m", "conda_pixi_pack", "pack", str(demo), "--json", "-o", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        close_fds=True,
        preexec_fn=lambda: os.close(1),
    )
    assert "Traceback" not in done.stderr and "AttributeError" not in done.stderr
    assert output.is_file()


def test_wiring_with_a_fake_core(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Progress, warnings and the final line on stderr; stdout untouched."""

    def behaviour(reporter: Reporter) -> PackResult:
        task = reporter.task("Downloading 2 packages", 2_000, unit="B")
        task.advance(2_000)
        task.done()
        reporter.warn("wheels cannot be checked")
        reporter.debug("hidden without -v")
        return PackResult(
            output=Path("/o/environment.tar"), conda_packages=2, wheels=1, size=3_000, platform="x"
        )

    monkeypatch.setattr("conda_pixi_pack.pack.pipeline.pack", fake_pack(behaviour))
    assert main(["pack"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "Downloading 2 packages (2.0 kB)…",
        captured.err.splitlines()[1],
        "warning: wheels cannot be checked",
        "Packed 2 conda packages and 1 wheel for x into /o/environment.tar (3.0 kB)",
    ]
    assert captured.err.splitlines()[1].startswith("Downloading 2 packages: done (2.0 kB in")

    assert main(["pack", "-q"]) == 0
    assert capsys.readouterr().err == "warning: wheels cannot be checked\n"


# -- end to end: real pack and unpack ------------------------------------------------------------

PACKED_LINE: Final = re.compile(
    r"^Packed (\d+) conda packages? and (\d+) wheels? for linux-64 into (.+) "
    r"\((\d[\d.]* [kMG]?B|\d+ bytes?)(?:; \d+ downloaded)?\)$"
)


@pytest.fixture
def project(make_project: Callable[..., Path]) -> Path:
    return make_project(["alpha", "beta"])


@pytest.mark.slow
def test_pack_then_unpack_with_rattler(project: Path, tmp_path: Path) -> None:
    if not ON_LINUX_64:
        pytest.skip("the fixture lock is for linux-64 and unpacking needs that platform")
    archive = tmp_path / "out" / "env.tar"
    archive.parent.mkdir()
    done = run(["pack", str(project), "-p", "linux-64", "-o", str(archive)], tmp_path)
    assert done.returncode == 0, text(done.stderr)
    assert done.stdout == b""
    match = PACKED_LINE.match(text(done.stderr).splitlines()[-1])
    assert match, text(done.stderr)
    assert match.group(1, 2, 3) == ("2", "0", str(archive))
    assert archive.is_file()

    target = tmp_path / "target"
    done = run(["unpack", str(archive), "-o", str(target), "--installer", "rattler"], tmp_path)
    assert done.returncode == 0, text(done.stderr)
    assert done.stdout == b""
    lines = text(done.stderr).splitlines()
    assert lines[-2] == f"Unpacked 2 conda packages and 0 wheels into {target / 'env'} with rattler"
    assert lines[-1] == f"Activate it with: source {target / 'activate.sh'}"
    assert (target / "activate.sh").is_file()
    assert (target / "env" / "conda-meta").is_dir()


@pytest.mark.slow
def test_json_results_only_on_stdout(project: Path, tmp_path: Path) -> None:
    if not ON_LINUX_64:
        pytest.skip("the fixture lock is for linux-64 and unpacking needs that platform")
    archive = tmp_path / "env.tar"
    done = run(["pack", str(project), "-p", "linux-64", "-o", str(archive), "--json"], tmp_path)
    assert done.returncode == 0, text(done.stderr)
    packed = json.loads(done.stdout)
    assert packed["output"] == str(archive)
    assert (packed["conda_packages"], packed["wheels"], packed["platform"]) == (2, 0, "linux-64")
    assert packed["size"] == archive.stat().st_size
    assert "Packed" not in text(done.stderr)

    done = run(
        ["unpack", str(archive), "-p", str(tmp_path / "env"), "--installer", "rattler", "--json"], tmp_path
    )
    assert done.returncode == 0, text(done.stderr)
    unpacked = json.loads(done.stdout)
    assert unpacked["prefix"] == str(tmp_path / "env")
    assert unpacked["installer"] == "rattler"
    assert sorted(unpacked["conda_packages"]) == ["alpha=1.0=h0_0", "beta=1.2=h0_0"]
    assert unpacked["wheels"] == []


@pytest.mark.slow
def test_pack_to_stdout_and_unpack_from_stdin(project: Path, tmp_path: Path) -> None:
    if not ON_LINUX_64:
        pytest.skip("the fixture lock is for linux-64 and unpacking needs that platform")
    done = run(["pack", str(project), "-p", "linux-64", "-o", "-"], tmp_path)
    assert done.returncode == 0, text(done.stderr)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:  # stdout is the tar and nothing else
        names = tar.getnames()
    assert "pixi-pack.json" in names
    assert "channel/linux-64/repodata.json" in names
    match = PACKED_LINE.match(text(done.stderr).splitlines()[-1])
    assert match and match.group(3) == "stdout", text(done.stderr)

    done = run(["unpack", "-", "-o", str(tmp_path), "--installer", "rattler"], tmp_path, stdin=done.stdout)
    assert done.returncode == 0, text(done.stderr)
    assert (tmp_path / "env" / "conda-meta").is_dir()


@pytest.mark.slow
def test_unpack_dry_run_lists_packages(project: Path, tmp_path: Path) -> None:
    if not ON_LINUX_64:
        pytest.skip("the fixture lock is for linux-64 and unpacking needs that platform")
    done = run(["pack", str(project), "-p", "linux-64", "--directory-only", "-o", "packdir"], tmp_path)
    assert done.returncode == 0, text(done.stderr)
    assert (tmp_path / "packdir" / "pixi-pack.json").is_file()
    done = run(["unpack", "packdir", "--dry-run", "--installer", "rattler"], tmp_path)
    assert done.returncode == 0, text(done.stderr)
    assert sorted(text(done.stdout).split()) == ["alpha=1.0=h0_0", "beta=1.2=h0_0"]
    assert "Dry run: would install 2 conda packages" in text(done.stderr)
    assert not (tmp_path / "env").exists()


def run_in_pty(args: Sequence[str], cwd: Path) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pseudo-terminal, as in an interactive shell."""
    main_fd, child_fd = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen(
        [*launcher("console-script"), *args],
        cwd=cwd,
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        env=env,
    )
    os.close(child_fd)
    chunks = []
    try:
        while True:
            try:
                data = os.read(main_fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(main_fd)
        code = proc.wait(timeout=300)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_terminal_shows_rich_bars(project: Path, tmp_path: Path) -> None:
    code, output = run_in_pty(["pack", str(project), "-p", "linux-64", "-o", "env.tar"], tmp_path)
    assert code == 0, output
    assert "━" in output
    assert "%" in output
    assert "Packed 2 conda packages" in ANSI.sub("", output)


@pytest.mark.slow
def test_no_terminal_plain_lines(project: Path, tmp_path: Path) -> None:
    done = run(["pack", str(project), "-p", "linux-64", "-o", "env.tar"], tmp_path)
    assert done.returncode == 0, text(done.stderr)
    stderr = text(done.stderr)
    assert "━" not in stderr
    assert "\x1b[" not in stderr
    assert re.search(r"^.+: done \(.+ in \d+\.\ds\)$", stderr, re.MULTILINE), stderr


ZIP_CAUSE: Final = "Caused by: invalid Zip archive: Could not find EOCD"


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (
            "cannot inject x.conda: invalid Zip archive: Could not find EOCD\n" + ZIP_CAUSE,
            "cannot inject x.conda: invalid Zip archive: Could not find EOCD",
        ),
        (
            "unpacking failed: No writeable pkgs directories configured.\n  - /tmp/a.tar",
            "unpacking failed: No writeable pkgs directories configured.; /tmp/a.tar",
        ),
        (
            "failed to link x\n\nCaused by:\n    0: cannot write y\n    1: Permission denied (os error 13)",
            "failed to link x; cannot write y; Permission denied (os error 13)",
        ),
    ],
    ids=["repeated-cause", "conda-list", "numbered-causes"],
)
def test_library_causes_become_one_line(message: str, shown: str) -> None:
    assert PackError(message).message == shown


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("missing:\n  - numpy-base\n  - numpy", "missing: numpy-base; numpy"),  # no item is lost
        ("404: not found", "404: not found"),  # the first line keeps its start
        ("- odd first line\n- second", "- odd first line; second"),
        # rattler quotes raw tar headers; a hostile pack could hold terminal escape sequences
        (
            "hard link for lib/x\x00\x00\x000000666\x00ustar  \x00 but no name",
            "hard link for lib/x 0000666 ustar    but no name",
        ),
        ("name \x1b[2Jcleared\tscreen", "name  [2Jcleared screen"),
    ],
    ids=["list-of-substrings", "number-first", "dash-first", "nul-bytes", "escape-sequence"],
)
def test_library_messages_become_one_line(message: str, shown: str) -> None:
    """rattler and conda spread causes over several lines; our errors are one line, causes kept."""
    assert PackError(message).message == shown


def test_the_pack_is_not_written_into_standard_error() -> None:
    """Progress and errors go to stderr: a pack there would be mixed with them."""
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "conda_pixi_pack", "pack", str(demo), "-o", "/dev/stderr"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: -o /dev/stderr is standard error, where progress and errors go")
    assert len(done.stderr.strip().splitlines()) == 1
