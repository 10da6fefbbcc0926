"""Packing what conda users have: an installed environment (``--prefix``, ``-n``), an ``@EXPLICIT``
list (``--from-explicit``), a conda-lock file's categories (``--category``), and ``--dry-run``.

Environments are made for real (by this tool's unpack, and by real conda where it imports), packed
with ``--prefix``, unpacked elsewhere and compared record for record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from typing import TYPE_CHECKING, Any, Final

import pytest

from tests.support.channel import record_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import Channel
    from tests.support.server import ChannelServer

CLI: Final = [sys.executable, "-m", "conda_pixi_pack"]
#: Real lock files written by other projects (../shared/fixtures/README.md).
REAL_LOCKS: Final = (
    __import__("pathlib").Path(__file__).resolve().parents[2] / "../shared/fixtures/real-lockfiles"
)
NO_REAL_LOCKS: Final = "the shared fixtures (../shared/fixtures/real-lockfiles) are not here"
CONDA_LOCK: Final = REAL_LOCKS / "conda-lockfiles-tests/conda-lock-metadata/conda-lock.yml"
ON_LINUX_64: Final = sys.platform == "linux" and os.uname().machine == "x86_64"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=300, env=environment, check=False
    )


def records(prefix: Path) -> dict[str, tuple[Any, ...]]:
    """What a user compares between two environments: name -> (version, build, channel, sha256)."""
    found = {}
    for path in (prefix / "conda-meta").glob("*.json"):
        meta = json.loads(path.read_text())
        found[meta["name"]] = (meta["version"], meta["build"], meta.get("channel"), meta.get("sha256"))
    return found


def unpack(pack: Path, prefix: Path) -> None:
    done = cli(
        "unpack", str(pack), "-p", str(prefix), "-o", str(prefix.parent), "--installer", "rattler", "-q"
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def installed(make_project: Callable[..., Path], tmp_path: Path) -> Path:
    """An environment made by this tool's unpack from a lock served over HTTP."""
    if not ON_LINUX_64:
        pytest.skip("the fixture packages are built for linux-64")
    project = make_project(["alpha", "beta", "prefixed", "activated"])
    first = tmp_path / "first.tar"
    done = cli("pack", str(project), "-p", "linux-64", "-o", str(first), "-q")
    assert done.returncode == 0, done.stderr
    prefix = tmp_path / "installed" / "env"
    unpack(first, prefix)
    return prefix


# -- an installed environment ---------------------------------------------------------------------


def test_an_installed_environment_packs_record_for_record(installed: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.tar"
    done = cli("pack", "--prefix", str(installed), "-o", str(second))
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1].endswith("; 4 downloaded)")
    again = tmp_path / "again" / "env"
    unpack(second, again)
    assert records(again) == records(installed)
    assert len(records(installed)) == 4
    # the records are the installed ones (dependencies kept), not rebuilt from the archives
    with tarfile.open(second) as tar:
        repodata = json.loads(tar.extractfile("channel/linux-64/repodata.json").read())  # type: ignore[union-attr]
    assert repodata["packages.conda"]["alpha-1.0-h0_0.conda"]["depends"] == ["beta >=1"]
    assert "files" not in repodata["packages.conda"]["alpha-1.0-h0_0.conda"]


def test_only_the_environments_own_platform(installed: Path, tmp_path: Path) -> None:
    done = cli("pack", "--prefix", str(installed), "-p", "osx-arm64", "-o", str(tmp_path / "x.tar"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: the environment {installed} is for linux-64; only its own platform can be packed from it "
        "(drop --platform osx-arm64, or pack a lock file for osx-arm64)"
    )
    assert not (tmp_path / "x.tar").exists()


def test_not_an_environment_is_one_line(tmp_path: Path) -> None:
    done = cli("pack", "--prefix", str(tmp_path), "-o", str(tmp_path / "x.tar"))
    assert done.returncode == 1
    assert f"{tmp_path} is not a conda environment: it has no conda-meta folder" in done.stderr


def test_what_cannot_be_packed_exactly_is_named_or_left_out(installed: Path, tmp_path: Path) -> None:
    meta = next((installed / "conda-meta").glob("activated-*.json"))
    record = json.loads(meta.read_text())
    record["url"] = ""  # as a local build or `conda develop` leaves it
    meta.write_text(json.dumps(record))
    beta = next((installed / "conda-meta").glob("beta-*.json"))
    record = json.loads(beta.read_text())
    record.pop("sha256")
    record.pop("md5", None)
    beta.write_text(json.dumps(record))
    out = tmp_path / "out.tar"
    done = cli("pack", "--prefix", str(installed), "-o", str(out))
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: 2 packages cannot be packed exactly: ")
    assert (
        "activated 1.0 0: installed without a URL" in line
        and "beta 1.2 h0_0: no checksum was recorded" in line
    )
    assert "--ignore-missing" in line and not out.exists()
    done = cli("pack", "--prefix", str(installed), "-o", str(out), "--ignore-missing", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["conda_packages"] == 2
    assert [s.split(":")[0] for s in result["skipped"]] == ["activated 1.0 0", "beta 1.2 h0_0"]
    assert "warning: left out activated 1.0 0" in done.stderr


@pytest.mark.conda
@pytest.mark.slow
def test_a_conda_environment_packs_from_the_package_cache_with_the_server_gone(
    make_server: Callable[[Path], ChannelServer],
    sample_channel: Channel,
    tmp_path: Path,
    conda_env: dict[str, str],
) -> None:
    """Made by real conda from the channel's URLs; the server then stops: every file comes from
    conda's package cache, checked, and the environment is packed as it was."""
    if not ON_LINUX_64:
        pytest.skip("the fixture packages are built for linux-64")
    server = make_server(sample_channel.root)
    names = ["alpha", "beta", "prefixed", "activated"]
    lines = ["@EXPLICIT"]
    for name in names:
        path = sample_channel.packages[name]
        record = record_for(path, f"{server.url}/{sample_channel.relpath(name)}")
        lines.append(f"{record.url}#{record.sha256.hex()}")  # type: ignore[union-attr]
    (tmp_path / "explicit.txt").write_text("\n".join(lines) + "\n")
    prefix = tmp_path / "conda-env"
    env = {**conda_env, "CONDA_OFFLINE": "false"}
    command = ["create", "--yes", "-p", str(prefix), "--file", str(tmp_path / "explicit.txt")]
    created = subprocess.run(
        [sys.executable, "-m", "conda", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert created.returncode == 0, created.stderr + created.stdout
    server.close()
    out = tmp_path / "packed.tar"
    done = cli(
        "pack", "--prefix", str(prefix), "-o", str(out), env={"CONDA_PKGS_DIRS": conda_env["CONDA_PKGS_DIRS"]}
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1].endswith("; 4 from conda's package cache)")
    again = tmp_path / "again" / "env"
    unpack(out, again)
    assert records(again) == records(prefix)


def test_a_pip_installed_wheel_is_packed_from_pips_cache(
    python_channel: Channel, make_server: Callable[[Path], ChannelServer], make_project: Callable[..., Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    server = make_server(python_channel.root)
    first = tmp_path / "first.tar"
    done = cli("pack", str(make_project(["python"], channel=python_channel, server=server)), "-p", "linux-64",
               "-o", str(first), "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr
    prefix = tmp_path / "installed" / "env"
    unpack(first, prefix)
    wheel = python_channel.wheels["fixture-wheel"]
    pip = ["install", "--quiet", "--no-deps", "--no-index", "--prefix", str(prefix), str(wheel)]
    done = subprocess.run([sys.executable, "-m", "pip", *pip], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cache = tmp_path / "pip-cache"
    out = tmp_path / "second.tar"
    # installed from a wheel file: pip recorded its URL and hash (direct_url.json), which is packed
    done = cli("pack", "--prefix", str(prefix), "-o", str(out), env={"PIP_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1].endswith("1 from local files)")
    # pip before 23.1 records no hash for a local file: the file is taken when its RECORD matches
    direct_url = (
        next(prefix.glob("lib/python*/site-packages/fixture_wheel-1.0.dist-info")) / "direct_url.json"
    )
    direct_url.write_text(json.dumps({"url": wheel.resolve().as_uri(), "archive_info": {}}))
    done = cli("pack", "--prefix", str(prefix), "-o", str(out), env={"PIP_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1].endswith("1 from local files)")
    # as from an index: no URL recorded; only pip's cache can tell which wheel it was
    direct_url.unlink()
    done = cli("pack", "--prefix", str(prefix), "-o", str(out), env={"PIP_CACHE_DIR": str(cache)})
    assert done.returncode == 1
    assert "fixture-wheel 1.0 (installed by pip, not conda): its wheel is not in pip's cache" in done.stderr
    (cache / "wheels" / "ab" / "cd").mkdir(parents=True)
    shutil.copy(wheel, cache / "wheels" / "ab" / "cd" / wheel.name)
    done = cli("pack", "--prefix", str(prefix), "-o", str(out), "--json", env={"PIP_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["wheels"] == 1
    with tarfile.open(out) as tar:
        assert tar.extractfile(f"pypi/{wheel.name}").read() == wheel.read_bytes()  # type: ignore[union-attr]


# -- an @EXPLICIT list ----------------------------------------------------------------------------


def explicit_list(
    sample_channel: Channel, server: ChannelServer, names: list[str], *, checksum: str = "sha256"
) -> str:
    lines = ["# platform: linux-64", "@EXPLICIT"]
    for name in names:
        record = record_for(sample_channel.packages[name], f"{server.url}/{sample_channel.relpath(name)}")
        digest = record.sha256.hex() if checksum == "sha256" else record.md5.hex()  # type: ignore[union-attr]
        lines.append(f"{record.url}#{digest}")
    return "\n".join(lines) + "\n"


def test_an_explicit_list_is_packed_with_the_archives_records(
    sample_channel: Channel, channel_server: ChannelServer, tmp_path: Path
) -> None:
    if not ON_LINUX_64:
        pytest.skip("the fixture packages are built for linux-64")
    listed = tmp_path / "explicit.txt"
    listed.write_text(explicit_list(sample_channel, channel_server, ["alpha", "beta", "noarch-data"]))
    out = tmp_path / "explicit.tar"
    done = cli("pack", "--from-explicit", str(listed), "-o", str(out))
    assert done.returncode == 0, done.stderr
    with tarfile.open(out) as tar:
        repodata = json.loads(tar.extractfile("channel/linux-64/repodata.json").read())  # type: ignore[union-attr]
        metadata = json.loads(tar.extractfile("pixi-pack.json").read())  # type: ignore[union-attr]
    alpha = repodata["packages.conda"]["alpha-1.0-h0_0.conda"]
    assert alpha["depends"] == ["beta >=1"]  # read from the archive's info/index.json
    assert (
        alpha["sha256"] and alpha["md5"] and alpha["size"] == sample_channel.packages["alpha"].stat().st_size
    )
    assert metadata["conda-pixi-pack"]["origins"]["linux-64/alpha-1.0-h0_0.conda"]["url"].startswith(
        channel_server.url
    )
    prefix = tmp_path / "env"
    unpack(out, prefix)
    assert sorted(records(prefix)) == ["alpha", "beta", "noarch-data"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://x.org/linux-64/a-1-0.conda\n", "is not an @EXPLICIT list: it has no line @EXPLICIT"),
        ("@EXPLICIT\nhttps://x.org/linux-64/a-1-0.conda#123\n", "line 2: #123 is not an md5 or sha256"),
        ("@EXPLICIT\nhttps://x.org/linux-64/\n", "names no package file (.conda or .tar.bz2)"),
        ("@EXPLICIT\nhttps://x.org/linux-64/a-1-0.conda\nhttps://x.org/osx-64/b-1-0.conda\n",
         "mixes packages of linux-64, osx-64: a pack is for one platform"),
        ("@EXPLICIT\nhttps://x.org/linux-64/nodash.conda\n", "is not named <name>-<version>-<build>"),
    ],
    ids=["no-marker", "bad-hash", "no-file-name", "mixed-platforms", "bad-file-name"],
)  # fmt: skip
def test_a_malformed_explicit_list_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    listed = tmp_path / "bad.txt"
    listed.write_text(text)
    done = cli("pack", "--from-explicit", str(listed), "-o", str(tmp_path / "x.tar"), "--dry-run")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert not (tmp_path / "x.tar").exists()


def test_a_binary_file_given_as_explicit_list_is_named_plainly(tmp_path: Path) -> None:
    listed = tmp_path / "not-a-list.txt"
    listed.write_bytes(b"@EXPLICIT\n\xff\xfe\x00binary")
    done = cli("pack", "--from-explicit", str(listed), "--dry-run")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: cannot read {listed}: it is not UTF-8 text (byte 10) (make one with "
        "`conda list --explicit --sha256 -n ENV` or `conda-lock render --kind explicit`)"
    )


@pytest.mark.skipif(not CONDA_LOCK.is_file(), reason=NO_REAL_LOCKS)
def test_real_lock_urls_are_planned_as_an_explicit_list(tmp_path: Path) -> None:
    """conda-lock's own URLs and md5/sha256s, written as `conda-lock render --kind explicit`
    would: planned with --dry-run (they cannot be downloaded here)."""
    from rattler import LockFile

    lock = LockFile.from_path(CONDA_LOCK)
    environment = lock.environment("default")
    assert environment is not None
    platform = next(p for p in environment.platforms() if p.name == "linux-64")
    lines = ["# Generated by conda-lock.", "# platform: linux-64", "@EXPLICIT"]
    for package in environment.packages(platform) or []:
        if type(package).__name__ != "CondaLockedBinaryPackage":
            continue
        record = package.repo_data_record()
        lines.append(f"{record.url}#{record.md5.hex()}")  # type: ignore[union-attr]
    listed = tmp_path / "conda-linux-64.lock"
    listed.write_text("\n".join(lines) + "\n")
    done = cli("pack", "--from-explicit", str(listed), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["dry_run"] is True and plan["platform"] == "linux-64"
    assert plan["conda_packages"] == len(lines) - 3
    assert {f["origin"] for f in plan["files"]} == {"download"}
    assert all(f["location"].startswith("https://conda.anaconda.org/conda-forge/") for f in plan["files"])
    assert list(tmp_path.iterdir()) == [listed]


# -- conda-lock categories ------------------------------------------------------------------------


@pytest.mark.skipif(not CONDA_LOCK.is_file(), reason=NO_REAL_LOCKS)
def test_conda_lock_categories_choose_the_packages(tmp_path: Path) -> None:
    text = CONDA_LOCK.read_text()
    edited = text.replace("- name: libgcc\n", "- name: libgcc\n", 1)
    start = edited.index("- name: libgcc\n")
    end = edited.index("  category: main", start)
    edited = edited[:end] + "  category: dev" + edited[end + len("  category: main") :]
    lock = tmp_path / "conda-lock.yml"
    lock.write_text(edited)

    def planned(*extra: str) -> set[str]:
        done = cli("pack", str(lock), "-p", "linux-64", "--dry-run", "--json", *extra)
        assert done.returncode == 0, done.stderr
        return {f["label"].split()[0] for f in json.loads(done.stdout)["files"]}

    main = planned()
    assert "libgcc" not in main and "_libgcc_mutex" in main  # default: main, as conda-lock install
    assert planned("--category", "dev") == {"libgcc"}
    assert planned("--category", "main", "--category", "dev") == main | {"libgcc"}
    done = cli("pack", str(lock), "-p", "linux-64", "--dry-run")
    assert "Leaving out 1 package of other categories than main" in done.stderr
    # conda-lock v1 records carry no size: the total says so instead of "0 bytes"
    assert f"(size unknown until fetched; {len(main)} to download)" in done.stderr, done.stderr
    done = cli("pack", str(lock), "-p", "linux-64", "--dry-run", "--category", "docs")
    assert done.returncode == 1
    assert "has no category docs (it has: dev, main)" in done.stderr


def test_category_is_refused_for_a_pixi_lock(make_project: Callable[..., Path]) -> None:
    done = cli("pack", str(make_project(["alpha"])), "-p", "linux-64", "--dry-run", "--category", "dev")
    assert done.returncode == 1
    assert "--category applies to conda-lock files" in done.stderr


# -- --dry-run -------------------------------------------------------------------------------------


def test_a_dry_run_says_where_each_file_would_come_from_and_writes_nothing(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = make_project(["alpha", "beta"])
    cache = tmp_path / "cache"
    assert (
        cli(
            "pack",
            str(project),
            "-p",
            "linux-64",
            "-o",
            str(tmp_path / "warm.tar"),
            "--use-cache",
            str(cache),
        ).returncode
        == 0
    )
    (tmp_path / "warm.tar").unlink()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    done = cli("pack", str(project), "-p", "linux-64", "-o", str(tmp_path / "out.tar"), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "linux-64/alpha-1.0-h0_0.conda" in done.stdout and "download: http://127.0.0.1:" in done.stdout
    assert done.stderr.splitlines()[-1].startswith(
        "Dry run: would pack 2 conda packages and 0 wheels for linux-64 ("
    )
    cached = cli("pack", str(project), "-p", "linux-64", "--use-cache", str(cache), "--dry-run", "--json")
    assert cached.returncode == 0, cached.stderr
    plan = json.loads(cached.stdout)
    assert {f["origin"] for f in plan["files"]} == {"cache"} and plan["sources"] == {"cache": 2}
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.conda
def test_a_named_environment_is_found_by_conda(
    installed: Path, tmp_path: Path, conda_env: dict[str, str]
) -> None:
    envs = tmp_path / "envs-dir"
    envs.mkdir()
    shutil.move(installed, envs / "myenv")
    out = tmp_path / "named.tar"
    env = {key: conda_env[key] for key in ("HOME", "CONDARC", "CONDA_PKGS_DIRS")} | {
        "CONDA_ENVS_DIRS": str(envs)
    }
    done = cli("pack", "-n", "myenv", "-o", str(out), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["conda_packages"] == 4
    done = cli("pack", "-n", "nosuchenv", "-o", str(out), env=env)
    assert done.returncode == 1
    assert "conda knows no environment named 'nosuchenv'" in done.stderr
