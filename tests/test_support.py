"""The shared fixtures are real: rattler and conda read and install the packages, the lock
round-trips through py-rattler, the server misbehaves exactly as asked."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from typing import TYPE_CHECKING

import pytest
import rattler
from rattler import LockFile
from rattler.package_streaming import extract

from tests.conftest import ACTIVATE_VARIABLE, POST_LINK_MARKER, sample_specs
from tests.support.channel import rattler_install, record_for, write_lock
from tests.support.packages import PLACEHOLDER, PackageSpec, binary_with_prefix, build_package
from tests.support.wheels import build_wheel, sha256_of

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import Channel
    from tests.support.server import ChannelServer

SAMPLE_NAMES = [spec.name for spec in sample_specs()]
#: Everything in the sample channel that installs without python.
NO_PYTHON = [name for name in SAMPLE_NAMES if name != "pyapp"]


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# -- packages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES, ids=SAMPLE_NAMES)
def test_rattler_reads_package_metadata(sample_channel: Channel, name: str) -> None:
    spec = sample_channel.specs[name]
    path = sample_channel.packages[name]
    record = asyncio.run(rattler.RepoDataRecord.from_package_archive(path))
    assert record.name.normalized == name
    assert str(record.version) == spec.version
    assert str(record.build) == spec.build
    assert record.subdir == spec.subdir
    assert record.depends == spec.depends
    assert record.constrains == spec.constrains
    assert record.sha256 is not None and record.sha256.hex() == sha256_of(path)
    assert record.size == path.stat().st_size
    assert path.parent.name == spec.subdir and path.name == spec.file_name


def test_index_json_matches_package_record(sample_channel: Channel, tmp_path: Path) -> None:
    extract(sample_channel.packages["alpha"], tmp_path)
    record = rattler.PackageRecord.from_index_json(tmp_path / "info" / "index.json")
    assert (record.name.normalized, str(record.version), record.depends) == ("alpha", "1.0", ["beta >=1"])


def test_paths_json_declares_prefix_files(sample_channel: Channel) -> None:
    paths = rattler.PathsJson.from_package_archive(sample_channel.packages["prefixed"])
    by_path = {entry.relative_path.as_posix(): entry for entry in paths.paths}
    text = by_path["bin/prefixed"].prefix_placeholder
    binary = by_path["lib/libprefixed.so.2.0"].prefix_placeholder
    assert text is not None and text.placeholder == PLACEHOLDER and text.file_mode.text
    assert binary is not None and binary.placeholder == PLACEHOLDER and binary.file_mode.binary
    assert by_path["share/prefixed/data.bin"].prefix_placeholder is None
    assert by_path["lib/libprefixed.so"].path_type.softlink


def test_noarch_python_has_entry_points(sample_channel: Channel, tmp_path: Path) -> None:
    extract(sample_channel.packages["pyapp"], tmp_path)
    link = json.loads((tmp_path / "info" / "link.json").read_text())
    assert link["noarch"] == {"type": "python", "entry_points": ["pyapp = pyapp.cli:main"]}
    index = json.loads((tmp_path / "info" / "index.json").read_text())
    assert (index["noarch"], index["subdir"]) == ("python", "noarch")
    assert (tmp_path / "site-packages" / "pyapp" / "cli.py").is_file()


@pytest.mark.parametrize("fmt", ["conda", "tar.bz2"], ids=["conda", "tar.bz2"])
def test_build_is_deterministic(tmp_path: Path, fmt: str) -> None:
    spec = PackageSpec(
        "same",
        fmt=fmt,  # type: ignore[arg-type]
        files={"lib/x.so": binary_with_prefix(), "a.txt": PLACEHOLDER},
        binary_prefix_files=["lib/x.so"],
        text_prefix_files=["a.txt"],
        symlinks={"b.txt": "a.txt"},
    )
    first = build_package(spec, tmp_path / "one").read_bytes()
    second = build_package(spec, tmp_path / "two").read_bytes()
    assert first == second


BAD_SPECS = {
    "no-placeholder": (
        PackageSpec("bad", files={"a.txt": "no prefix"}, text_prefix_files=["a.txt"]),
        "placeholder",
    ),
    "unknown-prefix-file": (PackageSpec("bad", binary_prefix_files=["lib/x.so"]), "not in files"),
    "escaping-path": (PackageSpec("bad", files={"../x": "x"}), "bad package path"),
    "entry-points-not-python": (PackageSpec("bad", entry_points=["x = y:z"]), "noarch='python'"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS), ids=list(BAD_SPECS))
def test_inconsistent_spec_is_refused(tmp_path: Path, case: str) -> None:
    spec, message = BAD_SPECS[case]
    with pytest.raises(ValueError, match=message):
        build_package(spec, tmp_path)
    assert not any(tmp_path.rglob("*.conda*")), "nothing half-written"


def test_channel_is_indexed(sample_channel: Channel) -> None:
    for name, path in sample_channel.packages.items():
        repodata = json.loads((path.parent / "repodata.json").read_text())
        key = "packages.conda" if path.name.endswith(".conda") else "packages"
        assert repodata[key][path.name]["name"] == name
        assert repodata[key][path.name]["sha256"] == sha256_of(path)
    assert (sample_channel.root / "noarch" / "repodata.json").is_file()


def _check_installed(prefix: Path) -> None:
    """What a user sees after installing the no-python part of the sample channel."""
    script = (prefix / "bin" / "prefixed").read_text()
    assert str(prefix) in script and PLACEHOLDER not in script
    assert f"prefix={prefix}\n" in (prefix / "etc" / "prefixed.conf").read_text()
    run = subprocess.run([prefix / "bin" / "prefixed"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == str(prefix)
    lib = (prefix / "lib" / "libprefixed.so.2.0").read_bytes()
    assert PLACEHOLDER.encode() not in lib
    assert (str(prefix) + "/lib").encode() + b"\0" in lib
    assert len(lib) == len(binary_with_prefix("/lib"))
    assert os.readlink(prefix / "lib" / "libprefixed.so") == "libprefixed.so.2"
    assert os.readlink(prefix / "lib" / "libprefixed.so.2") == "libprefixed.so.2.0"
    assert (prefix / "share" / "prefixed" / "data.bin").read_bytes() == bytes(range(256))
    activate = prefix / "etc" / "conda" / "activate.d" / "activated.sh"
    shell = subprocess.run(
        ["bash", "-c", f'source "{activate}" && echo "${ACTIVATE_VARIABLE}"'], capture_output=True, text=True
    )
    assert shell.stdout.strip() == "yes", shell.stderr
    assert (prefix / "share" / "noarch-data" / "data.txt").read_text() == "data\n"
    assert (prefix / "conda-meta" / "alpha-1.0-h0_0.json").is_file()


def test_rattler_installs_sample_channel(sample_channel: Channel, tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    paths = [sample_channel.packages[name] for name in NO_PYTHON]
    rattler_install(paths, prefix, cache_dir=tmp_path / "cache", execute_link_scripts=True)
    _check_installed(prefix)
    assert (prefix / POST_LINK_MARKER).read_text().strip() == "postlink"


@pytest.mark.conda
@pytest.mark.slow
def test_conda_installs_sample_channel(
    sample_channel: Channel, conda_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = tmp_path / "conda-env"
    command = [sys.executable, "-m", "conda", "create", "-p", str(prefix), "--offline", "--override-channels"]
    command += ["-c", sample_channel.root.as_uri(), "--yes", *NO_PYTHON]
    run = subprocess.run(command, env=conda_env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    _check_installed(prefix)
    assert (prefix / POST_LINK_MARKER).read_text().strip() == "postlink"


# -- wheels --------------------------------------------------------------------------------------


def test_wheel_is_valid(sample_channel: Channel) -> None:
    from installer.sources import WheelFile

    wheel = sample_channel.wheels["fixture-wheel"]
    assert wheel.name == "fixture_wheel-1.0-py3-none-any.whl"
    with WheelFile.open(wheel) as source:
        source.validate_record()
        assert "[console_scripts]" in source.read_dist_info("entry_points.txt")
        assert "Version: 1.0" in source.read_dist_info("METADATA")


def test_wheel_is_deterministic(tmp_path: Path) -> None:
    one = build_wheel(tmp_path / "a", "x", "1", {"x.py": "y = 1\n"})
    two = build_wheel(tmp_path / "b", "x", "1", {"x.py": "y = 1\n"})
    assert one.read_bytes() == two.read_bytes()
    assert zipfile.ZipFile(one).testzip() is None


# -- locks ---------------------------------------------------------------------------------------


def test_lock_round_trips(
    make_project: Callable[..., Path], sample_channel: Channel, channel_server: ChannelServer
) -> None:
    project = make_project(
        ["alpha", "beta", "pyapp"], wheels=["fixture-wheel", "fixture-sdist"], extra={"test": ["alpha"]}
    )
    assert (project / "pixi.toml").is_file()
    lock = LockFile.from_path(project / "pixi.lock")
    assert sorted(name for name, _ in lock.environments()) == ["default", "test"]
    env = lock.environment("default")
    assert env is not None
    platform = next(p for p in lock.platforms() if p.name == "linux-64")
    records = {r.name.normalized: r for r in env.conda_repodata_records_for_platform(platform) or []}
    assert set(records) == {"alpha", "beta", "pyapp"}
    alpha = records["alpha"]
    assert alpha.url == channel_server.url_for(sample_channel.relpath("alpha"))
    assert alpha.sha256 is not None and alpha.sha256.hex() == sha256_of(sample_channel.packages["alpha"])
    assert [str(c) for c in env.channels()] != []
    pypi = {p.name: p for p in env.pypi_packages_for_platform(platform) or []}
    assert set(pypi) == {"fixture-wheel", "fixture-sdist"}
    wheel = pypi["fixture-wheel"]
    assert wheel.location == channel_server.url_for("pypi/fixture_wheel-1.0-py3-none-any.whl")
    assert wheel.hashes is not None and wheel.hashes.sha256 is not None
    assert wheel.hashes.sha256.hex() == sha256_of(sample_channel.wheels["fixture-wheel"])
    assert pypi["fixture-sdist"].location.endswith(".tar.gz")


def test_lock_with_file_urls(make_project: Callable[..., Path], sample_channel: Channel) -> None:
    project = make_project(["alpha"], urls="file")
    lock = LockFile.from_path(project / "pixi.lock")
    env = lock.environment("default")
    assert env is not None
    (record,) = env.conda_repodata_records_for_platform(lock.platforms()[0]) or []
    assert record.url == sample_channel.packages["alpha"].resolve().as_uri()


def test_lock_with_relative_paths(make_project: Callable[..., Path], sample_channel: Channel) -> None:
    """pixi writes local packages as paths relative to the manifest; py-rattler parses them but
    cannot turn them into RepoDataRecords (ConversionError), so readers must use ``packages()``."""
    project = make_project(["alpha"], urls="relative")
    assert "- conda: ../" in (project / "pixi.lock").read_text()
    lock = LockFile.from_path(project / "pixi.lock")
    env = lock.environment("default")
    assert env is not None
    (package,) = env.packages(lock.platforms()[0]) or []
    assert package.location.startswith("../")
    assert (project / package.location).resolve() == sample_channel.packages["alpha"].resolve()
    with pytest.raises(Exception, match="not an absolute path"):
        env.conda_repodata_records_for_platform(lock.platforms()[0])


def test_lock_for_other_platform(tmp_path: Path, sample_channel: Channel) -> None:
    record = record_for(
        sample_channel.packages["alpha"], "https://example.invalid/c/linux-64/alpha-1.0-h0_0.conda"
    )
    assert record.channel == "https://example.invalid/c"
    path = write_lock(
        tmp_path / "pixi.lock",
        [record],
        channel="https://example.invalid/c",
        extra_platforms={"osx-arm64": [record]},
    )
    lock = LockFile.from_path(path)
    assert sorted(p.name for p in lock.platforms()) == ["linux-64", "osx-arm64"]


# -- server --------------------------------------------------------------------------------------


def test_server_serves_channel(channel_server: ChannelServer, sample_channel: Channel) -> None:
    rel = sample_channel.relpath("beta")
    status, body = _get(channel_server.url_for(rel))
    assert status == 200 and body == sample_channel.packages["beta"].read_bytes()
    assert rel in channel_server.requests
    assert _get(channel_server.url_for("linux-64/missing-1-0.conda"))[0] == 404
    assert _get(channel_server.url + "/../../etc/passwd")[0] == 404


def test_server_auth(make_server: Callable[[Path], ChannelServer], sample_channel: Channel) -> None:
    server = make_server(sample_channel.root)
    server.require_auth("user", "secret")
    url = server.url_for("linux-64/repodata.json")
    assert _get(url)[0] == 401
    assert _get(url, ("user", "wrong"))[0] == 401
    status, body = _get(url, ("user", "secret"))
    assert status == 200 and json.loads(body)["info"]["subdir"] == "linux-64"


def test_auth_file_works_with_rattler_client(
    make_server: Callable[[Path], ChannelServer], sample_channel: Channel, tmp_path: Path
) -> None:
    from rattler import Config
    from rattler.networking import Client
    from rattler.package_streaming import download_bytes

    server = make_server(sample_channel.root)
    server.require_auth("user", "secret")
    url = server.url_for("linux-64/repodata.json")
    with pytest.raises(Exception, match="401"):
        asyncio.run(download_bytes(Client.default_client(max_retries=0), url))
    auth = server.write_auth_file(tmp_path / "auth.json", "user", "secret")
    client = Client.from_config(Config.from_toml(f'authentication-override-file = "{auth}"'))
    assert json.loads(asyncio.run(download_bytes(client, url)))["info"]["subdir"] == "linux-64"


def test_server_faults(make_server: Callable[[Path], ChannelServer], sample_channel: Channel) -> None:
    server = make_server(sample_channel.root)
    rel = sample_channel.relpath("alpha")
    good = sample_channel.packages["alpha"].read_bytes()
    server.forbid("linux-64/repodata.json")
    assert _get(server.url_for("linux-64/repodata.json"))[0] == 403
    server.fail_once(rel)
    assert _get(server.url_for(rel))[0] == 503
    assert _get(server.url_for(rel)) == (200, good)
    server.corrupt(rel)
    status, body = _get(server.url_for(rel))
    assert status == 200 and len(body) == len(good) and body != good
    assert server.count(rel) == 3
    server.reset()
    assert server.requests == []
    assert _get(server.url_for("linux-64/repodata.json"))[0] == 200


def test_server_drop(make_server: Callable[[Path], ChannelServer], sample_channel: Channel) -> None:
    server = make_server(sample_channel.root)
    rel = sample_channel.relpath("prefixed")
    server.drop(rel)
    with pytest.raises(http.client.IncompleteRead):
        _get(server.url_for(rel))
    assert _get(server.url_for(rel)) == (200, sample_channel.packages["prefixed"].read_bytes())


def test_rattler_client_sees_faults(
    make_server: Callable[[Path], ChannelServer], sample_channel: Channel, tmp_path: Path
) -> None:
    """py-rattler's own client (what download.py uses) gets the 401 and the short body."""
    from rattler.networking import Client
    from rattler.package_streaming import download_to_path

    server = make_server(sample_channel.root)
    rel = sample_channel.relpath("alpha")
    server.drop(rel)
    with pytest.raises(Exception):
        asyncio.run(download_to_path(Client(), server.url_for(rel), tmp_path / "a.conda"))
    asyncio.run(download_to_path(Client(), server.url_for(rel), tmp_path / "b.conda"))
    assert (tmp_path / "b.conda").read_bytes() == sample_channel.packages["alpha"].read_bytes()


# -- python --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_python_package_runs_after_rattler_install(python_channel: Channel, tmp_path: Path) -> None:
    prefix = tmp_path / "py-env"
    paths = [python_channel.packages["python"], python_channel.packages["pyapp"]]
    rattler_install(paths, prefix, cache_dir=tmp_path / "cache")
    code = "import sys, json, sqlite3, sysconfig as s; "
    code += "print(sys.prefix, json.dumps(1), s.get_config_var('prefix'))"
    run = subprocess.run([prefix / "bin" / "python", "-c", code], capture_output=True, text=True, env={})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(prefix), "1", str(prefix)]
    run = subprocess.run([prefix / "bin" / "pyapp"], capture_output=True, text=True, env={})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "pyapp says hi"
    if shutil.which("ldd"):
        ldd = subprocess.run(["ldd", prefix / "bin" / "python"], capture_output=True, text=True).stdout
        libpython = [line for line in ldd.splitlines() if "libpython" in line]
        assert all(str(prefix) in line for line in libpython), ldd


@pytest.mark.conda
@pytest.mark.slow
def test_conda_installs_python_and_noarch_python(
    python_channel: Channel, conda_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = tmp_path / "conda-py"
    command = [sys.executable, "-m", "conda", "create", "-p", str(prefix), "--offline", "--override-channels"]
    command += ["-c", python_channel.root.as_uri(), "--yes", "python", "pyapp"]
    run = subprocess.run(command, env=conda_env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run([prefix / "bin" / "pyapp"], capture_output=True, text=True, env={})
    assert run.stdout.strip() == "pyapp says hi", run.stderr
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert (site / "pyapp" / "cli.py").is_file()


# -- conda skip ----------------------------------------------------------------------------------


@pytest.mark.conda
def test_conda_marker_skips_without_conda(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Where conda cannot be imported (CI), ``@pytest.mark.conda`` tests skip with the reason."""
    import tests.conftest as conftest

    assert conftest.conda_importable()
    monkeypatch.setitem(sys.modules, "conda", None)
    assert not conftest.conda_importable()
    with pytest.raises(pytest.skip.Exception, match=conftest.CONDA_SKIP_REASON):
        conftest.pytest_runtest_setup(request.node)


@pytest.mark.slow
def test_wheel_installs_into_python_package(python_channel: Channel, tmp_path: Path) -> None:
    """The python fixture is good enough for wheel tests: a wheel installed with ``installer``
    imports and its console script runs with the environment's interpreter."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    prefix = tmp_path / "py-env"
    rattler_install([python_channel.packages["python"]], prefix, cache_dir=tmp_path / "cache")
    python = prefix / "bin" / "python"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    scheme = {"purelib": site, "platlib": site, "scripts": prefix / "bin", "data": prefix, "headers": prefix}
    destination = SchemeDictionaryDestination(
        {key: str(value) for key, value in scheme.items()}, interpreter=str(python), script_kind="posix"
    )
    with WheelFile.open(python_channel.wheels["fixture-wheel"]) as source:
        install(source, destination, {"INSTALLER": b"test"})
    run = subprocess.run([prefix / "bin" / "fixture-wheel"], capture_output=True, text=True, env={})
    assert run.stdout.strip() == "fixture-wheel says hi", run.stderr
    run = subprocess.run(
        [python, "-c", "import fixture_wheel; print(fixture_wheel.VALUE)"], capture_output=True, text=True
    )
    assert run.stdout.strip() == "42", run.stderr
