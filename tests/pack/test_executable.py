"""``pack --create-executable``: the self-extracting script, run for real with ``sh`` and ``bash``.

Each case runs the produced ``environment.sh`` in a clean folder with a PATH that holds only what
that case needs (a folder of its own, then the system's ``/usr/bin:/bin`` for ``tail``, ``tar``
and friends, which hold no conda): this tool for path 2, real conda for path 3, and, for path 1,
a ``micromamba`` conda package built here whose program records its arguments and installs the
pack with this tool, so the calling convention the README documents is asserted exactly.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from tests.conftest import ACTIVATE_VARIABLE, Channel
from tests.support.channel import index_channel
from tests.support.packages import PackageSpec
from tests.support.unpacker import fake_micromamba

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tests.support.server import ChannelServer

#: The console script of the project under test (it is installed for its tests).
TOOL: Final = shutil.which("conda-pixi-pack", path=str(Path(sys.executable).parent))
#: Where the system's tools are; none of them is an installer of conda packages.
SYSTEM_PATH: Final = "/usr/bin:/bin"
#: The scripts are written for linux-64 here (the fixture packages are linux-64).
ON_LINUX_64: Final = sys.platform == "linux" and os.uname().machine == "x86_64"

pytestmark = pytest.mark.skipif(not ON_LINUX_64, reason="the fixture packages are built for linux-64")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """This tool as a subprocess, as a user runs it."""
    command = [sys.executable, "-m", "conda_pixi_pack", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def pack_executable(
    project: Path, out: Path, *extra: str, platform: str = "linux-64"
) -> subprocess.CompletedProcess[str]:
    return cli("pack", str(project), "-p", platform, "--create-executable", "-o", str(out), *extra)


@pytest.fixture
def executable(make_project: Callable[..., Path], tmp_path: Path) -> Path:
    project = make_project(["alpha", "beta", "prefixed", "activated"])
    out = tmp_path / "dist" / "environment.sh"
    out.parent.mkdir()
    done = pack_executable(project, out)
    assert done.returncode == 0, done.stderr
    return out


def tool_bin(tmp_path: Path) -> Path:
    """A PATH folder with only this tool in it."""
    folder = tmp_path / "tool-bin"
    folder.mkdir(exist_ok=True)
    assert TOOL is not None, "the conda-pixi-pack console script is not installed beside this interpreter"
    (folder / "conda-pixi-pack").symlink_to(TOOL)
    return folder


def run_script(
    script: Path,
    cwd: Path,
    path: Sequence[Path],
    *args: str,
    shell: str = "sh",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    temp = cwd.parent / "tmp"
    temp.mkdir(exist_ok=True)
    environment = {"PATH": ":".join([*map(str, path), SYSTEM_PATH]), "HOME": str(cwd.parent / "home"),
                   "TMPDIR": str(temp), **(env or {})}  # fmt: skip
    return subprocess.run(
        [shell, str(script), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


def activated(script: Path, command: str) -> str:
    """What ``command`` prints after ``source``-ing the activation script in a clean bash."""
    done = subprocess.run(
        ["bash", "-c", f'. "{script}" && {command}'],
        env={"PATH": SYSTEM_PATH}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def leftovers(temp: Path) -> list[str]:
    return sorted(p.name for p in temp.iterdir()) if temp.is_dir() else []


# -- the file itself ------------------------------------------------------------------------------


def test_the_script_carries_the_same_tar_after_its_header(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = make_project(["alpha", "beta"])
    script, plain = tmp_path / "environment.sh", tmp_path / "environment.tar"
    assert pack_executable(project, script).returncode == 0
    done = cli("pack", str(project), "-p", "linux-64", "-o", str(plain))
    assert done.returncode == 0, done.stderr
    data = script.read_bytes()
    assert data.startswith(b"#!/bin/sh\n")
    assert script.stat().st_mode & 0o777 == 0o755
    lines = data[:20000].decode("ascii", "replace").splitlines()
    offset = int(next(line for line in lines if line.startswith("CPP_ARCHIVE_OFFSET=")).split("=")[1])
    size = int(next(line for line in lines if line.startswith("CPP_ARCHIVE_SIZE=")).split("=")[1])
    assert data[offset:] == plain.read_bytes()  # the very tar `pack` writes, raw, to the end
    assert offset + size == len(data)
    assert b"@@CONDA_PIXI_PACK_PAYLOAD@@\n" in data[:offset]


def test_the_same_inputs_give_the_same_bytes(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["alpha", "beta"])
    first, second = tmp_path / "a" / "environment.sh", tmp_path / "b" / "environment.sh"
    for out in (first, second):
        out.parent.mkdir()
        assert pack_executable(project, out).returncode == 0
    assert first.read_bytes() == second.read_bytes()


def test_the_default_name_follows_the_platform(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["noarch-data"], platform="win-64")
    done = cli("pack", str(project), "-p", "win-64", "--create-executable", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.ps1"]


def test_a_powershell_pack_has_pixi_packs_layout_and_the_same_tar(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    """No PowerShell here: the .ps1 is checked for its layout (CRLF script, markers, one line of
    base64 holding the same tar as a plain pack), its determinism, and that unpack reads it."""
    project = make_project(["noarch-data"], platform="win-64")
    outputs = []
    for name in ("a.ps1", "b.ps1", "plain.tar"):
        extra = [] if name.endswith(".tar") else ["--create-executable"]
        done = cli("pack", str(project), "-p", "win-64", *extra, "-o", name, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs.append((tmp_path / name).read_bytes())
    ps1, again, plain = outputs
    assert ps1 == again
    script, _, rest = ps1.partition(b"\r\n__END_HEADER__\r\n")
    assert script.startswith(b"# conda-pixi-pack self-extracting pack")
    assert b"\n" not in script.replace(b"\r\n", b"")  # every line ends in CRLF
    encoded, _, tail = rest.partition(b"\r\n")
    assert base64.b64decode(encoded, validate=True) == plain
    assert tail == b"__END_ARCHIVE__\r\n"
    assert b"$CppPlatform = 'win-64'" in script
    listed = tarfile.open(fileobj=io.BytesIO(plain)).getnames()
    assert "explicit.txt" in listed and "environment.yml" in listed


# -- path 2: this tool on PATH --------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_path_2_installs_with_this_tool_reading_the_file_in_place(
    executable: Path, tmp_path: Path, shell: str
) -> None:
    done = run_script(executable, tmp_path / "work", [tool_bin(tmp_path)], "-o", "out", shell=shell)
    assert done.returncode == 0, done.stderr
    assert "Installing with conda-pixi-pack" in done.stderr
    out = tmp_path / "work" / "out"
    assert sorted(p.name for p in out.iterdir()) == ["activate.sh", "env"]
    env = out / "env"
    assert (env / "conda-meta" / "alpha-1.0-h0_0.json").is_file()
    assert activated(out / "activate.sh", f'echo "$CONDA_PREFIX ${ACTIVATE_VARIABLE}"').split() == [
        str(env),
        "yes",
    ]
    assert str(env) in (env / "etc" / "prefixed.conf").read_text()  # prefix replaced
    assert leftovers(tmp_path / "tmp") == []


def test_path_2_takes_the_same_options_as_unpack(executable: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "elsewhere" / "myenv"
    done = run_script(executable, tmp_path / "work", [tool_bin(tmp_path)], "-p", str(prefix), "-s", "fish")
    assert done.returncode == 0, done.stderr
    assert (prefix / "conda-meta" / "beta-1.2-h0_0.json").is_file()
    assert (tmp_path / "work" / "activate.fish").is_file()
    assert str(prefix) in (tmp_path / "work" / "activate.fish").read_text()


def test_help_lists_the_options(executable: Path, tmp_path: Path) -> None:
    done = run_script(executable, tmp_path / "work", [], "-h")
    assert done.returncode == 0
    for option in ("-o DIR", "-e NAME", "-n NAME", "-p PATH", "-s SHELL"):
        assert option in done.stdout


# -- path 3: conda on PATH ------------------------------------------------------------------------


def conda_bin(tmp_path: Path) -> Path:
    """A PATH folder whose ``conda`` is the real conda importable here, without this plugin (so
    path 3, not path 2, is taken)."""
    folder = tmp_path / "conda-bin"
    folder.mkdir()
    wrapper = folder / "conda"
    wrapper.write_text(f'#!/bin/sh\nCONDA_NO_PLUGINS=true exec "{sys.executable}" -m conda "$@"\n')
    wrapper.chmod(0o755)
    return folder


@pytest.mark.conda
@pytest.mark.slow
def test_path_3_installs_the_explicit_list_with_conda(
    executable: Path, tmp_path: Path, conda_env: dict[str, str]
) -> None:
    conda_env.pop("PATH", None)
    done = run_script(executable, tmp_path / "work", [conda_bin(tmp_path)], "-o", "out", env=conda_env)
    assert done.returncode == 0, done.stderr
    assert "Installing 4 packages with conda" in done.stderr
    env = tmp_path / "work" / "out" / "env"
    installed = sorted(p.name for p in (env / "conda-meta").glob("*.json"))
    assert installed == [
        "activated-1.0-0.json", "alpha-1.0-h0_0.json", "beta-1.2-h0_0.json", "prefixed-2.0-h1_0.json"
    ]  # fmt: skip
    assert str(env) in (env / "etc" / "prefixed.conf").read_text()
    assert activated(tmp_path / "work" / "out" / "activate.sh", f"echo ${ACTIVATE_VARIABLE}").strip() == "yes"
    assert leftovers(tmp_path / "tmp") == []


# -- path 1: an installer embedded at pack time ---------------------------------------------------


def test_path_1_runs_the_embedded_installer_with_the_documented_arguments(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    package, record = fake_micromamba(tmp_path)
    project = make_project(["alpha", "beta", "activated"])
    script = tmp_path / "environment.sh"
    done = pack_executable(project, script, "--unpacker-source", str(package))
    assert done.returncode == 0, done.stderr
    done = run_script(script, tmp_path / "work", [], "-o", "out")  # nothing on PATH but the system's
    assert done.returncode == 0, done.stderr
    assert "Installing 3 packages with micromamba (embedded)" in done.stderr
    env = tmp_path / "work" / "out" / "env"
    arguments = record.read_text().splitlines()
    root = arguments[arguments.index("--root-prefix") + 1]
    assert arguments == [
        "create", "--yes", "--offline", "--no-rc", "--root-prefix", root, "--prefix", str(env),
        "--file", "explicit.txt",
    ]  # fmt: skip
    work = Path(root).parent
    assert work.parent == tmp_path / "tmp" and work.name.startswith("conda-pixi-pack.")
    assert Path(f"{record}.cwd").read_text().strip() == str(work / "pack")  # run in the extracted pack
    assert "explicit.txt" in Path(f"{record}.ls").read_text().split()
    assert (env / "conda-meta" / "alpha-1.0-h0_0.json").is_file()
    assert activated(tmp_path / "work" / "out" / "activate.sh", f"echo ${ACTIVATE_VARIABLE}").strip() == "yes"
    assert leftovers(tmp_path / "tmp") == []  # the extracted pack and the program are gone


@pytest.mark.parametrize(("shell", "ext"), [("bash", "sh"), ("fish", "fish"), ("xonsh", "xsh")])
def test_path_1_writes_the_activation_of_an_environment_without_activate_d_scripts(
    make_project: Callable[..., Path], tmp_path: Path, shell: str, ext: str
) -> None:
    """Most environments have no ``activate.d`` script: the activation script is still written."""
    package, _ = fake_micromamba(tmp_path)
    script = tmp_path / "environment.sh"
    done = pack_executable(make_project(["alpha", "beta"]), script, "--unpacker-source", str(package))
    assert done.returncode == 0, done.stderr
    done = run_script(script, tmp_path / "work", [], "-o", "out", "-s", shell)
    assert done.returncode == 0, done.stderr
    activation = (tmp_path / "work" / "out" / f"activate.{ext}").read_text()
    assert str(tmp_path / "work" / "out" / "env") in activation and "activate.d" not in activation


def test_path_1_refuses_n_before_writing_anything(make_project: Callable[..., Path], tmp_path: Path) -> None:
    package, record = fake_micromamba(tmp_path)
    script = tmp_path / "environment.sh"
    assert (
        pack_executable(make_project(["alpha", "beta"]), script, "--unpacker-source", str(package)).returncode
        == 0
    )
    done = run_script(script, tmp_path / "work", [], "-n", "myenv")
    assert done.returncode == 2
    assert "-n needs conda" in done.stderr
    assert not record.exists() and leftovers(tmp_path / "work") == [] and leftovers(tmp_path / "tmp") == []


def test_a_signal_during_the_install_removes_everything(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    package, record = fake_micromamba(tmp_path, delay=30)
    script = tmp_path / "environment.sh"
    assert (
        pack_executable(make_project(["alpha", "beta"]), script, "--unpacker-source", str(package)).returncode
        == 0
    )
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen(
        ["sh", str(script), "-o", "out"], cwd=work, stderr=subprocess.PIPE, text=True,
        env={"PATH": SYSTEM_PATH, "TMPDIR": str(tmp_path / "tmp"), "HOME": str(tmp_path)},
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert record.exists(), "the embedded installer never started"
    os.killpg(process.pid, signal.SIGTERM)  # as a CI runner or `kill` stops a job: the whole group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "interrupted; nothing was installed" in stderr
    assert leftovers(work / "out") == [] and leftovers(tmp_path / "tmp") == []


# -- refusals: one line, nothing written ----------------------------------------------------------


def test_no_installer_names_what_to_install(executable: Path, tmp_path: Path) -> None:
    done = run_script(executable, tmp_path / "work", [], "-o", "out")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        (
            "error: no installer found: install conda-pixi-pack (pip install conda-pixi-pack), micromamba, "
            "mamba or conda, or pack with --unpacker-source to embed one"
        )
    ]
    assert leftovers(tmp_path / "work") == [] and leftovers(tmp_path / "tmp") == []


def test_a_pack_for_another_platform_is_refused(make_project: Callable[..., Path], tmp_path: Path) -> None:
    script = tmp_path / "environment.sh"
    done = pack_executable(
        make_project(["noarch-data"], platform="linux-aarch64"), script, platform="linux-aarch64"
    )
    assert done.returncode == 0, done.stderr
    done = run_script(script, tmp_path / "work", [tool_bin(tmp_path)], "-o", "out")
    assert done.returncode == 1
    assert "this pack is for linux-aarch64 but this machine is linux-64" in done.stderr
    assert leftovers(tmp_path / "work") == []


def test_a_truncated_script_is_refused(executable: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.sh"
    cut.write_bytes(executable.read_bytes()[:-1000])
    done = run_script(cut, tmp_path / "work", [tool_bin(tmp_path)], "-o", "out")
    assert done.returncode == 1
    assert "is damaged: it has" in done.stderr and "(copy it again)" in done.stderr
    assert leftovers(tmp_path / "work") == []


def test_an_edited_pack_inside_the_script_is_refused(executable: Path, tmp_path: Path) -> None:
    data = bytearray(executable.read_bytes())
    package = b"alpha-1.0-h0_0.conda"
    at = data.index(package, data.index(b"@@CONDA_PIXI_PACK_PAYLOAD@@"))
    body = at + 512  # inside the package's bytes, after its tar header
    data[body : body + 16] = bytes(b ^ 0xFF for b in data[body : body + 16])
    edited = tmp_path / "edited.sh"
    edited.write_bytes(bytes(data))
    done = run_script(edited, tmp_path / "work", [tool_bin(tmp_path)], "-o", "out")
    assert done.returncode == 1
    assert "does not match its sha256" in done.stderr
    assert leftovers(tmp_path / "work" / "out") == []


def test_wheels_without_pip_are_refused_before_anything_is_written(
    python_channel: Channel, make_server: Callable[[Path], ChannelServer], make_project: Callable[..., Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    package, record = fake_micromamba(tmp_path)
    server = make_server(python_channel.root)
    project = make_project(["python"], channel=python_channel, server=server, wheels=["fixture-wheel"])
    script = tmp_path / "environment.sh"
    done = pack_executable(project, script, "--unpacker-source", str(package))
    assert done.returncode == 0, done.stderr
    done = run_script(script, tmp_path / "work", [], "-o", "out")
    assert done.returncode == 1
    assert "the pack has PyPI wheels (fixture-wheel==1.0) and its environment has no pip" in done.stderr
    assert not record.exists() and leftovers(tmp_path / "work") == [] and leftovers(tmp_path / "tmp") == []


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda tmp: str(tmp / "missing-micromamba.conda"), "does not exist"),
        (lambda tmp: "http://127.0.0.1:9/micromamba-2.0.0-0.conda", "127.0.0.1:9 refused the connection"),
        (
            lambda tmp: str(_package(tmp, "micromamba", "osx-arm64")),
            "is micromamba for osx-arm64, the pack is for linux-64",
        ),
        (lambda tmp: str(_package(tmp, "zlib", "linux-64")), "is neither micromamba nor conda-standalone"),
        (
            lambda tmp: str(_binary(tmp, b"\x7fELF\x02\x01" + bytes(12) + (183).to_bytes(2, "little"))),
            "is a program for linux-aarch64, the pack is for linux-64",
        ),
    ],
    ids=[
        "missing",
        "unreachable-url",
        "wrong-platform-package",
        "not-an-installer",
        "wrong-platform-program",
    ],
)
def test_a_bad_unpacker_source_is_refused(
    make_project: Callable[..., Path], tmp_path: Path, make_source: Callable[[Path], str], message: str
) -> None:
    script = tmp_path / "environment.sh"
    done = pack_executable(
        make_project(["alpha", "beta"]), script, "--unpacker-source", make_source(tmp_path)
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], done.stderr
    assert not script.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_unpacker_checksum_mismatch_is_refused(make_project: Callable[..., Path], tmp_path: Path) -> None:
    package, _ = fake_micromamba(tmp_path)
    wrong = hashlib.sha256(b"something else").hexdigest()
    script = tmp_path / "environment.sh"
    done = pack_executable(
        make_project(["alpha"]), script, "--unpacker-source", str(package), "--unpacker-sha256", wrong
    )
    assert done.returncode == 1
    assert "does not match --unpacker-sha256" in done.stderr
    assert not script.exists()


def _package(tmp_path: Path, name: str, subdir: str) -> Path:
    channel = Channel(tmp_path / f"channel-{name}-{subdir}")
    path = channel.add(PackageSpec(name, "1.0", "0", subdir=subdir, files={"bin/x": "x\n"}))
    index_channel(channel.root)
    return path


def _binary(tmp_path: Path, head: bytes) -> Path:
    path = tmp_path / "micromamba"
    path.write_bytes(head + bytes(64))
    return path
