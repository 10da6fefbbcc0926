"""What a failed unpack must not leave behind or destroy: found by reviewing the rollback paths."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.unpack import pipeline as unpack_module
from conda_pixi_pack.unpack.pipeline import UnpackOptions, unpack
from tests.conftest import CONDA_SKIP_REASON, conda_importable
from tests.support.packages import PackageSpec, build_package
from tests.support.packs import make_pack, make_pack_dir, tar_dir

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Channel


@pytest.fixture
def small_pack(tmp_path: Path, sample_channel: Channel) -> Path:
    return make_pack(tmp_path / "p", [sample_channel.packages["alpha"], sample_channel.packages["beta"]])


def _fail_activation(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(unpack_module, "write_activation_script", broken)


def test_a_failed_unpack_keeps_the_activation_script_already_there(
    tmp_path: Path, small_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    unpack(UnpackOptions(source=small_pack, output_directory=out, installer="rattler"))
    before = (out / "activate.sh").read_text()
    _fail_activation(monkeypatch)
    with pytest.raises(PackError, match="No space left on device"):
        unpack(UnpackOptions(source=small_pack, output_directory=out, env_name="other", installer="rattler"))
    assert (out / "activate.sh").read_text() == before  # the first environment's script survives
    assert sorted(p.name for p in out.iterdir()) == ["activate.sh", "env"]


def test_output_folder_inside_a_new_prefix_leaves_nothing(
    tmp_path: Path, sample_channel: Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-p NEW -o NEW/scripts: the prefix folder is made for the script; a failure removes it."""
    pack = make_pack(tmp_path / "p", [sample_channel.packages["alpha"], sample_channel.packages["beta"]])
    _fail_activation(monkeypatch)
    prefix = tmp_path / "newenv"
    scripts = prefix / "scripts"
    options = UnpackOptions(source=pack, prefix=prefix, output_directory=scripts, installer="rattler")
    with pytest.raises(PackError):
        unpack(options)
    assert not prefix.exists()


@pytest.mark.parametrize("force", [True, False], ids=["with-force", "without-force"])
def test_force_never_replaces_the_environment_it_runs_in(
    tmp_path: Path, small_pack: Path, monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    active = tmp_path / "active"
    (active / "conda-meta").mkdir(parents=True)
    (active / "conda-meta" / "history").write_text("")
    monkeypatch.setenv("CONDA_PREFIX", str(active))
    with pytest.raises(PackError, match="is the environment this command runs in") as refused:
        unpack(
            UnpackOptions(
                source=small_pack, prefix=active, output_directory=tmp_path, force=force, installer="rattler"
            )
        )
    assert "--force" not in (refused.value.hint or "")  # it would not help
    assert (active / "conda-meta" / "history").is_file()


def test_an_output_folder_below_a_file_is_named(tmp_path: Path, small_pack: Path) -> None:
    a_file = tmp_path / "a.tar"
    a_file.write_text("not a folder")
    with pytest.raises(PackError, match=r"a\.tar is a file, not a folder"):
        unpack(UnpackOptions(source=small_pack, output_directory=a_file, installer="rattler"))
    assert a_file.read_text() == "not a folder"


@pytest.mark.conda
@pytest.mark.skipif(not conda_importable(), reason=CONDA_SKIP_REASON)
def test_conda_registration_is_taken_back_when_a_later_step_fails(
    tmp_path: Path, small_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    _fail_activation(monkeypatch)
    out = tmp_path / "out"
    pkgs = tmp_path / "p2"
    options = UnpackOptions(source=small_pack, output_directory=out, installer="conda", pkgs_dir=pkgs)
    with pytest.raises(PackError):
        unpack(options)
    registry = home / ".conda" / "environments.txt"
    registered = registry.read_text().split() if registry.exists() else []
    assert str(out / "env") not in registered
    assert not (out / "env").exists()


def test_a_record_without_checksums_is_refused(tmp_path: Path) -> None:
    """Every package must match a checksum of its record before anything is written."""
    package = build_package(PackageSpec(name="bare"), tmp_path / "channel")
    src = make_pack_dir(tmp_path / "src", [package])
    repodata_path = src / "channel" / "linux-64" / "repodata.json"
    repodata = json.loads(repodata_path.read_text())
    for record in repodata["packages.conda"].values():
        record.pop("sha256", None)
        record.pop("md5", None)
    repodata_path.write_text(json.dumps(repodata))
    pack = tar_dir(src, tmp_path / "environment.tar")
    with pytest.raises(PackError, match="has no sha256 or md5"):
        unpack(UnpackOptions(source=pack, output_directory=tmp_path / "out", installer="rattler"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field", ["name", "version", "build"])
def test_a_record_whose_fields_are_paths_is_refused(tmp_path: Path, field: str) -> None:
    """name-version-build names files (conda-meta/<dist>.json): no separators, no `..`."""
    package = build_package(PackageSpec(name="bare"), tmp_path / "channel")
    src = make_pack_dir(tmp_path / "src", [package])
    repodata_path = src / "channel" / "linux-64" / "repodata.json"
    repodata = json.loads(repodata_path.read_text())
    for record in repodata["packages.conda"].values():
        record[field] = "../../evil"
    repodata_path.write_text(json.dumps(repodata))
    pack = tar_dir(src, tmp_path / "environment.tar")
    with pytest.raises(PackError, match=f"its {field} '../../evil' is not valid"):
        unpack(UnpackOptions(source=pack, output_directory=tmp_path / "out", installer="rattler"))
    assert not (tmp_path / "out").exists()


def test_a_second_interrupt_during_the_rollback_does_not_leave_half_an_environment(
    tmp_path: Path, small_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conda_pixi_pack.errors import UserCancelled
    from conda_pixi_pack.unpack import target as targets
    from conda_pixi_pack.unpack.install import rattler as rattler_backend

    def interrupted_after_linking(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the first Ctrl-C: after the packages were linked

    real_rmtree = targets.shutil.rmtree
    calls: list[str] = []

    def rmtree_interrupted_once(path: str, *args: object, **kwargs: object) -> None:
        if threading.current_thread() is threading.main_thread():  # signals land there
            calls.append(str(path))
            if len(calls) == 1:
                raise KeyboardInterrupt  # the second Ctrl-C, in the middle of the rollback
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rattler_backend, "_write_history", interrupted_after_linking)
    monkeypatch.setattr(targets.shutil, "rmtree", rmtree_interrupted_once)
    out = tmp_path / "out"
    with pytest.raises(UserCancelled):
        unpack(UnpackOptions(source=small_pack, output_directory=out, installer="rattler"))
    monkeypatch.undo()
    assert not out.exists()
    assert len(calls) >= 2
