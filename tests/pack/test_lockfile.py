"""lockfile.load: real pixi locks (ours and pixi's own) -> records, wheels, artifacts, or a clear error."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
from rattler import LockFile, Subdir

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.pack.sources.lockfile import load
from conda_pixi_pack.progress import Reporter

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import Channel

#: Real lock files written by pixi and others (read-only; see ../shared/fixtures/README.md).
REAL_LOCKS: Final = Path(__file__).resolve().parents[2] / "../shared/fixtures/real-lockfiles"
#: Reason for skipping where the shared fixtures are not checked out.
NO_REAL_LOCKS: Final = f"real lock fixtures not found at {REAL_LOCKS}"


class Recorder(Reporter):
    """Keeps warnings so that tests can assert what a user would be told."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def _real_cases() -> list[tuple[Path, str, str]]:
    if not REAL_LOCKS.is_dir():
        return []
    cases = []
    locks = [*REAL_LOCKS.rglob("pixi.lock"), *REAL_LOCKS.rglob("conda-lock.yml")]
    for lock_path in sorted(p for p in locks if "invalid-lockfiles" not in p.parts):
        lock = LockFile.from_path(lock_path)
        for env_name, env in sorted(lock.environments()):
            for platform in sorted(p.name for p in env.platforms()):
                cases.append((lock_path, env_name, platform))
    return cases


REAL_CASES: Final = _real_cases()


@pytest.mark.skipif(not REAL_CASES, reason=NO_REAL_LOCKS)
@pytest.mark.parametrize(
    ("lock_path", "environment", "platform"),
    REAL_CASES,
    ids=[f"{p.relative_to(REAL_LOCKS)}:{e}:{pl}" for p, e, pl in REAL_CASES],
)
def test_every_real_lock_is_read_or_refused_clearly(lock_path: Path, environment: str, platform: str) -> None:
    lock = LockFile.from_path(lock_path)
    packages = lock.environment(environment).packages(
        next(p for p in lock.environment(environment).platforms() if p.name == platform)
    )
    kinds = {type(p).__name__ for p in packages or []}
    try:
        env = load(lock_path, environment, platform, ignore_pypi_non_wheel=True)
    except PackError as exc:
        # Only source packages (pixi build) may stop a lock that rattler reads.
        assert "CondaLockedSourcePackage" in kinds
        assert "\n" not in str(exc)
        assert "--inject" in exc.hint
        return
    conda_names = [p.name for p in packages or [] if type(p).__name__ == "CondaLockedBinaryPackage"]
    assert [c.record["name"] for c in env.conda] == conda_names  # lock order kept
    for conda in env.conda:
        assert conda.artifact.relative_path == f"{conda.subdir}/{conda.file_name}"
        assert conda.record["subdir"] == conda.subdir
        assert conda.record["fn"] == conda.file_name
        assert conda.artifact.sha256 or conda.artifact.md5
        assert conda.artifact.url.startswith(("https://", "http://", "file://"))
    for wheel in env.wheels:
        assert wheel.artifact.relative_path == f"pypi/{wheel.file_name}"
        assert wheel.file_name.endswith(".whl")
    assert env.platform == platform


@pytest.mark.skipif(not REAL_LOCKS.is_dir(), reason=NO_REAL_LOCKS)
@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in (REAL_LOCKS / "conda-lockfiles-tests/invalid-lockfiles").glob("*"))
    if REAL_LOCKS.is_dir()
    else [],
)
def test_invalid_lock_is_one_clear_line(name: str, tmp_path: Path) -> None:
    shutil.copy(REAL_LOCKS / "conda-lockfiles-tests/invalid-lockfiles" / name, tmp_path / "pixi.lock")
    with pytest.raises(PackError) as raised:
        load(tmp_path, "default", "linux-64")
    message = str(raised.value.message)
    assert message.startswith(f"{tmp_path / 'pixi.lock'} is not a valid lock file: ")
    # what is wrong, in the format's terms; rattler's own text only as the cause, at the end
    assert re.search(r": (it has no `\w+` section|its `\w+` is a plain value .*) \(rattler: .*\)$", message)
    assert "\n" not in str(raised.value)
    assert "pixi lock" in raised.value.hint


@pytest.mark.skipif(not REAL_LOCKS.is_dir(), reason=NO_REAL_LOCKS)
def test_repodata_patches_come_from_the_lock() -> None:
    """The record is the lock's (patched) one, not the archive's index.json."""
    lock_dir = REAL_LOCKS / "pixi-pack-examples/repodata-patches"
    env = load(lock_dir / "pixi.toml", "default", "linux-64")
    packages = (lock_dir / "pixi.lock").read_text().split("\npackages:\n", 1)[1].split("\n- ")
    for conda in env.conda:
        (block,) = [b for b in packages if f"url: {conda.url}\n" in b or f"conda: {conda.url}\n" in b]
        for dep in conda.record.get("depends", []):
            assert f"  - {dep}" in block
    assert json.loads(json.dumps(env.conda[0].record)) == env.conda[0].record


@pytest.mark.skipif(not REAL_LOCKS.is_dir(), reason=NO_REAL_LOCKS)
def test_pypi_direct_and_path_wheels() -> None:
    env = load(REAL_LOCKS / "pixi-pack-examples/pypi-wheel-packages", "default", "linux-64")
    by_name = {w.name: w for w in env.wheels}
    assert by_name["numpy"].artifact.url.startswith("https://files.pythonhosted.org/")  # "direct+" dropped
    local = by_name["my-webserver"].artifact
    expected = (REAL_LOCKS / "pixi-pack-examples/webserver/my_webserver-0.1.0-py3-none-any.whl").resolve()
    assert local.url == expected.as_uri()
    assert by_name["ordered-enum"].artifact.sha256 == (
        "9382e88309b56dcbe06be43c4a586984d036b630863b53dbec5039655bab3e83"
    )


@pytest.mark.skipif(not REAL_LOCKS.is_dir(), reason=NO_REAL_LOCKS)
def test_sdists_refused_or_skipped_with_the_flag() -> None:
    lock_dir = REAL_LOCKS / "pixi-pack-examples/pypi-non-wheel-packages"
    with pytest.raises(PackError) as raised:
        load(lock_dir, "default", "linux-64")
    assert "pysdl2" in raised.value.message
    assert "PySDL2-0.9.16.tar.gz" in raised.value.message
    assert "--ignore-pypi-non-wheel" in raised.value.hint
    recorder = Recorder()
    env = load(lock_dir, "default", "linux-64", ignore_pypi_non_wheel=True, reporter=recorder)
    assert "pysdl2" not in {w.name for w in env.wheels}
    assert {"numpy", "pyboy"} <= {w.name for w in env.wheels}
    assert len(recorder.warnings) == 1
    assert "pysdl2" in recorder.warnings[0]


@pytest.mark.skipif(not REAL_LOCKS.is_dir(), reason=NO_REAL_LOCKS)
def test_source_packages_name_the_inject_way() -> None:
    lock_dir = REAL_LOCKS / "pixi-pack-examples/local-build"
    with pytest.raises(PackError) as raised:
        load(lock_dir, "default", "linux-64")
    assert "local-build-main-pkg" in raised.value.message
    assert "--inject" in raised.value.hint
    env = load(lock_dir, "default", "linux-64", allow_source_packages=True)
    assert set(env.source_packages) == {
        "local-build-main-pkg",
        "local-build-local-pkg",
        "local-build-local-pkg-2",
    }
    assert len(env.conda) == 20


def test_manifest_forms(make_project: Callable[..., Path]) -> None:
    project = make_project(["alpha"])
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for manifest in (project, project / "pixi.toml", project / "pyproject.toml", project / "pixi.lock"):
        env = load(manifest, "default", "linux-64")
        assert env.inputs[0] == (project / "pixi.lock", "the lock file")
        assert [c.record["name"] for c in env.conda] == ["alpha"]
    (project / "pixi.toml").unlink()
    (project / "pyproject.toml").unlink()
    assert load(project, "default", "linux-64").conda  # a bare pixi.lock in a folder


@pytest.mark.skipif(not REAL_LOCKS.is_dir(), reason=NO_REAL_LOCKS)
@pytest.mark.parametrize("name", ["myenv.conda-lock.yml", "env.YAML"], ids=["conda-lock-yml", "yaml"])
def test_conda_lock_file_under_another_name(tmp_path: Path, name: str) -> None:
    """conda-lock's ``--lockfile`` takes any name: a .yml/.yaml given directly is the lock."""
    lock_path = tmp_path / "cl" / name
    lock_path.parent.mkdir()
    shutil.copy(REAL_LOCKS / "conda-lockfiles-tests/conda-lock-metadata/conda-lock.yml", lock_path)
    env = load(lock_path, "default", "linux-64")
    assert env.inputs[0] == (lock_path, "the lock file")
    assert env.conda
    assert {c.subdir for c in env.conda} <= {"linux-64", "noarch"}


@pytest.mark.skipif(not REAL_LOCKS.is_dir(), reason=NO_REAL_LOCKS)
def test_invalid_conda_lock_given_beside_a_pixi_lock_is_read_itself(
    make_project: Callable[..., Path],
) -> None:
    """The file given is the lock, even with a (valid) pixi.lock in the same folder."""
    project = make_project(["alpha"])
    invalid = project / "conda-lock-v1-missing-metadata.yml"
    shutil.copy(REAL_LOCKS / "conda-lockfiles-tests/invalid-lockfiles" / invalid.name, invalid)
    with pytest.raises(PackError) as raised:
        load(invalid, "default", "linux-64")
    assert raised.value.message == (
        f"{invalid} is not a valid lock file: it has no `metadata` section "
        "(rattler: missing field `metadata`)"
    )
    assert raised.value.hint == "regenerate it with `conda-lock`"


def test_missing_manifest_and_lock(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="does not exist"):
        load(tmp_path / "nope" / "pixi.toml", "default", None)
    (tmp_path / "pixi.toml").write_text("[workspace]\n")
    with pytest.raises(PackError) as raised:
        load(tmp_path / "pixi.toml", "default", None)
    assert raised.value.message == f"no pixi.lock beside {tmp_path / 'pixi.toml'}"
    assert "pixi lock" in raised.value.hint


def test_unknown_environment_and_platform(make_project: Callable[..., Path]) -> None:
    project = make_project(["alpha"], extra={"test": ["beta"]})
    with pytest.raises(PackError) as raised:
        load(project, "prod", "linux-64")
    assert "'prod'" in raised.value.message
    assert "default, test" in raised.value.message
    with pytest.raises(PackError) as raised:
        load(project, "default", "osx-arm64")
    assert "osx-arm64" in raised.value.message
    assert "locked: linux-64" in raised.value.message
    assert "-p/--platform" in raised.value.hint


def test_platform_defaults_to_the_current_one(make_project: Callable[..., Path]) -> None:
    current = str(Subdir.current())
    project = make_project(["noarch-data"], platform=current)
    assert load(project, "default", None).platform == current


@pytest.mark.parametrize("urls", ["file", "relative"], ids=["file-url", "relative-path"])
def test_local_locations_become_file_urls(
    make_project: Callable[..., Path], sample_channel: Channel, urls: str
) -> None:
    project = make_project(["alpha", "noarch-data"], urls=urls, wheels=["fixture-wheel"])
    env = load(project, "default", "linux-64")
    for conda in env.conda:
        package = sample_channel.packages[conda.record["name"]]
        assert conda.artifact.url == package.resolve().as_uri()
        assert conda.record["url"] == conda.artifact.url
        assert conda.artifact.sha256 == hashlib.sha256(package.read_bytes()).hexdigest()
        assert conda.artifact.size == package.stat().st_size
    assert env.conda[1].subdir == "noarch"
    assert env.wheels[0].artifact.url == sample_channel.wheels["fixture-wheel"].resolve().as_uri()


def test_wheel_file_name_is_percent_decoded(make_project: Callable[..., Path], channel_server) -> None:
    url = f"{channel_server.url}/pypi/local_pkg-1.0%2Bcpu-py3-none-any.whl"
    project = make_project(["alpha"], wheels=[("local-pkg", "1.0+cpu", url, "ab" * 32)])
    (wheel,) = load(project, "default", "linux-64").wheels
    assert wheel.file_name == "local_pkg-1.0+cpu-py3-none-any.whl"
    assert wheel.artifact.relative_path == "pypi/local_pkg-1.0+cpu-py3-none-any.whl"
    assert wheel.artifact.url == url
    assert wheel.artifact.sha256 == "ab" * 32


def test_an_environment_file_is_named_as_such(tmp_path: Path) -> None:
    """A pack's (or conda's) environment.yml lists specs, not locked packages."""
    env_file = tmp_path / "environment.yml"
    env_file.write_text("channels:\n  - ./channel\n  - nodefaults\ndependencies:\n  - python=3.11=h0\n")
    with pytest.raises(PackError) as refused:
        load(env_file, "default", "linux-64")
    assert refused.value.message == f"{env_file} is a conda environment file, not a lock file"
    assert "pixi.lock" in (refused.value.hint or "")
