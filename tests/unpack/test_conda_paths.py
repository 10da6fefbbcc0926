"""Unpacking with conda alone: ``conda env create --file environment.tar`` (our environment-spec
plugin), and, after ``tar -xf``, ``conda create --file explicit.txt`` and ``conda env create --file
environment.yml`` (no plugin at all). Real conda, as a subprocess, in a home and caches of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from typing import TYPE_CHECKING, Final

import pytest

from tests.support.packs import damage, make_pack_dir, tar_dir

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import Channel
    from tests.support.server import ChannelServer

pytestmark = [
    pytest.mark.conda,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (sys.platform == "linux" and os.uname().machine == "x86_64"),
        reason="the fixture packages are built for linux-64",
    ),
]

CLI: Final = [sys.executable, "-m", "conda_pixi_pack"]


def conda(
    args: list[str], cwd: Path, env: dict[str, str], *, plugins: bool = True
) -> subprocess.CompletedProcess[str]:
    environment = dict(env)
    if not plugins:  # what a user without this tool has: conda alone
        environment["CONDA_NO_PLUGINS"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "conda", *args], cwd=cwd, env=environment, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip


def pack(project: Path, out: Path) -> Path:
    done = subprocess.run([*CLI, "pack", str(project), "-p", "linux-64", "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def untar(pack: Path, folder: Path) -> Path:
    """``tar -xf`` the pack into ``folder``, as a user without this tool does first."""
    folder.mkdir()
    subprocess.run(["tar", "-xf", str(pack), "-C", str(folder)], check=True)
    return folder


def installed(prefix: Path) -> dict[str, dict[str, object]]:
    return {
        (meta := json.loads(path.read_text()))["name"]: meta
        for path in (prefix / "conda-meta").glob("*.json")
    }


@pytest.fixture
def python_pack(
    python_channel: Channel, make_server: Callable[[Path], ChannelServer], make_project: Callable[..., Path],
    tmp_path: Path,
) -> Path:  # fmt: skip
    server = make_server(python_channel.root)
    project = make_project(
        ["python", "pyapp"], channel=python_channel, server=server, wheels=["fixture-wheel"]
    )
    return pack(project, tmp_path / "environment.tar")


def test_conda_env_create_installs_a_pack_exactly_with_its_wheels(
    python_pack: Path, tmp_path: Path, conda_env: dict[str, str]
) -> None:
    prefix = tmp_path / "created"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**conda_env, "TMPDIR": str(temp)}
    done = conda(["env", "create", "--file", str(python_pack), "-p", str(prefix)], tmp_path, env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert list(temp.iterdir()) == []  # the extracted pack is gone
    records = installed(prefix)
    assert sorted(records) == ["pyapp", "python"]
    origin = json.loads(tarfile.open(python_pack).extractfile("pixi-pack.json").read())  # type: ignore[union-attr]
    for meta in records.values():  # the same provenance as unpack: the lock's URLs and channels
        key = f"{meta['subdir']}/{meta['fn']}"
        assert meta["url"] == origin["conda-pixi-pack"]["origins"][key]["url"]
    python = prefix / "bin" / "python"
    checked = subprocess.run([str(python), "-c", "import fixture_wheel, pyapp; print(fixture_wheel.VALUE)"],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert checked.stdout.strip() == "42", checked.stderr
    assert (prefix / "bin" / "fixture-wheel").is_file() and (prefix / "bin" / "pyapp").is_file()


def test_conda_create_file_takes_a_pack_too(
    make_project: Callable[..., Path], tmp_path: Path, conda_env: dict[str, str]
) -> None:
    packed = pack(make_project(["alpha", "beta", "prefixed"]), tmp_path / "environment.tar")
    prefix = tmp_path / "created"
    done = conda(["create", "--yes", "--file", str(packed), "-p", str(prefix)], tmp_path, conda_env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert sorted(installed(prefix)) == ["alpha", "beta", "prefixed"]
    assert str(prefix) in (prefix / "etc" / "prefixed.conf").read_text()


def test_a_damaged_pack_is_refused_by_conda_env_create(
    packages: Callable[..., list[Path]], tmp_path: Path, conda_env: dict[str, str]
) -> None:
    source = make_pack_dir(tmp_path / "src", packages("alpha", "beta"), platform="linux-64")
    damage(next((source / "channel" / "linux-64").glob("alpha-*")))
    packed = tar_dir(source, tmp_path / "environment.tar")
    prefix = tmp_path / "created"
    done = conda(["env", "create", "--file", str(packed), "-p", str(prefix)], tmp_path, conda_env)
    assert done.returncode != 0
    assert "channel/linux-64/alpha-1.0-h0_0.conda does not match its sha256" in done.stderr
    assert not prefix.exists()


def test_a_pack_for_another_platform_is_refused_by_conda(
    make_project: Callable[..., Path], tmp_path: Path, conda_env: dict[str, str]
) -> None:
    project = make_project(["noarch-data"], platform="osx-arm64")
    done = subprocess.run([*CLI, "pack", str(project), "-p", "osx-arm64", "-o", str(tmp_path / "osx.tar")],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = conda(
        ["env", "create", "--file", str(tmp_path / "osx.tar"), "-p", str(tmp_path / "x")], tmp_path, conda_env
    )
    assert done.returncode != 0
    assert "osx-arm64" in done.stderr and not (tmp_path / "x").exists()


def test_the_explicit_list_installs_with_plain_conda_after_tar_x(
    make_project: Callable[..., Path], tmp_path: Path, conda_env: dict[str, str]
) -> None:
    packed = pack(make_project(["alpha", "beta", "prefixed", "activated"]), tmp_path / "environment.tar")
    extracted = untar(packed, tmp_path / "extracted")
    done = conda(
        ["create", "-p", "./env", "--offline", "--yes", "--file", "explicit.txt"],
        extracted,
        conda_env,
        plugins=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    records = installed(extracted / "env")
    assert sorted(records) == ["activated", "alpha", "beta", "prefixed"]
    lock_sha256 = {
        line.split("#")[0].rsplit("/", 1)[-1]: line.split("#")[1]
        for line in (extracted / "explicit.txt").read_text().splitlines()
        if line and not line.startswith(("#", "@"))
    }
    assert {meta["fn"]: meta["sha256"] for meta in records.values()} == lock_sha256


def test_environment_yml_installs_with_conda_env_create_offline(
    make_project: Callable[..., Path], tmp_path: Path, conda_env: dict[str, str]
) -> None:
    """The seed's no-tool path, as pixi-pack documents it, with `--offline` (conda 26 asks the
    network for the `nodefaults` channel without it)."""
    packed = pack(make_project(["alpha", "beta"]), tmp_path / "environment.tar")
    extracted = untar(packed, tmp_path / "extracted")
    done = conda(
        ["env", "create", "-p", "./env", "--offline", "--file", "environment.yml"],
        extracted,
        conda_env,
        plugins=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert sorted(installed(extracted / "env")) == ["alpha", "beta"]
