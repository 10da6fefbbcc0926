"""The conda backend: real packages linked by conda's own machinery, checked as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from conda_pixi_pack.artifacts import PackedPackage
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.format import Origin
from conda_pixi_pack.progress import Reporter, Task
from tests.conftest import POST_LINK_MARKER
from tests.support.packages import PLACEHOLDER, PackageSpec, build_package
from tests.support.packs import record_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import Channel
    from tests.support.server import ChannelServer

pytestmark = pytest.mark.conda

#: Where the original packages "came from" in most tests.
CONDA_FORGE: Final = "https://conda.anaconda.org/conda-forge"

#: The conda test recipes shipped with the shared fixtures.
TEST_RECIPES: Final = (
    Path(__file__).resolve().parents[2]
    / "../shared/fixtures/real-packages/conda-test-data/test-recipes/noarch"
)


class RecordingReporter(Reporter):
    """Keeps what the backend reported, to check the progress contract and the warnings."""

    def __init__(self) -> None:
        self.tasks: list[RecordingTask] = []
        self.warnings: list[str] = []

    def task(self, description: str, total: float | None, unit: str = "pkg") -> Task:
        task = RecordingTask(description, total)
        self.tasks.append(task)
        return task

    def warn(self, message: str) -> None:
        self.warnings.append(message)


class RecordingTask(Task):
    def __init__(self, description: str, total: float | None) -> None:
        self.description, self.total, self.progress, self.finished = description, total, 0.0, False

    def advance(self, amount: float = 1) -> None:
        self.progress += amount

    def done(self) -> None:
        self.finished = True


def packed(path: Path, origin: str | None = CONDA_FORGE, channel: str | None = None) -> PackedPackage:
    """A package as unpack hands it over: its record from the archive, origin ``<origin>/<subdir>/<fn>``."""
    record = record_of(path)
    subdir = record["subdir"]
    where = None if origin is None else Origin(f"{origin}/{subdir}/{path.name}", channel or origin)
    return PackedPackage(subdir, path.name, path.resolve(), record, where)


@pytest.fixture(autouse=True)
def conda_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private HOME, condarc and caches, and conda's context back to its import-time state.

    The pristine context is what the standalone CLI hands over, so the backend's own
    initialisation runs; nothing is written to the real ~/.conda.
    """
    from conda.base.context import context, reset_context

    home = tmp_path / "home"
    home.mkdir()
    (home / "condarc").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CONDARC", str(home / "condarc"))
    monkeypatch.setenv("CONDA_PKGS_DIRS", str(home / "default-pkgs"))
    monkeypatch.setenv("CONDA_ENVS_DIRS", str(home / "envs"))
    monkeypatch.setenv("CONDA_ADD_PIP_AS_PYTHON_DEPENDENCY", "false")
    for name in [n for n in os.environ if n.startswith("CONDA_PATH_CONFLICT")]:
        monkeypatch.delenv(name)
    context.__init__((), None)
    yield home
    monkeypatch.undo()
    reset_context()


def install(packages: list[PackedPackage], prefix: Path, pkgs_dir: Path | None = None) -> RecordingReporter:
    from conda_pixi_pack.unpack.install.conda import CondaInstaller

    reporter = RecordingReporter()
    CondaInstaller().install(packages, prefix, pkgs_dir=pkgs_dir, reporter=reporter)
    return reporter


def conda(*args: str) -> str:
    """Run the real conda command line (in the test's HOME/condarc) and return its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "conda", *args], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def environments_txt(home: Path) -> list[str]:
    path = home / ".conda" / "environments.txt"
    return path.read_text().split() if path.exists() else []


def test_files_prefixes_symlinks_and_modes(tmp_path: Path, sample_channel: Channel) -> None:
    names = ["alpha", "beta", "prefixed", "noarch-data"]
    prefix = tmp_path / "env"
    reporter = install([packed(sample_channel.packages[n]) for n in names], prefix, tmp_path / "pkgs")

    assert (prefix / "share/alpha/README").read_text() == "alpha\n"
    assert (prefix / "share/beta/README").read_text() == "beta\n"  # the .tar.bz2 one
    assert (prefix / "share/noarch-data/data.txt").read_text() == "data\n"
    conf = (prefix / "etc/prefixed.conf").read_text()
    assert conf == f"prefix={prefix}\ndata={prefix}/share/prefixed\n"
    script = prefix / "bin/prefixed"
    assert subprocess.run([script], capture_output=True, text=True, check=True).stdout == f"{prefix}\n"
    assert script.stat().st_mode & 0o777 == 0o755
    original = sample_channel.specs["prefixed"].files["lib/libprefixed.so.2.0"]
    assert isinstance(original, bytes)
    binary = (prefix / "lib/libprefixed.so.2.0").read_bytes()
    assert len(binary) == len(original)  # binary replacement keeps the size: NUL padded
    assert f"{prefix}/lib\0".encode() in binary
    assert PLACEHOLDER.encode() not in binary
    assert (prefix / "share/prefixed/data.bin").read_bytes() == bytes(range(256))
    assert os.readlink(prefix / "lib/libprefixed.so") == "libprefixed.so.2"
    assert os.readlink(prefix / "lib/libprefixed.so.2") == "libprefixed.so.2.0"
    assert (prefix / "lib/libprefixed.so").resolve() == (prefix / "lib/libprefixed.so.2.0")
    history = (prefix / "conda-meta/history").read_text()
    assert "+conda-forge/linux-64::prefixed-2.0-h1_0" in history
    assert "+conda-forge/noarch::noarch-data-0.5-0" in history
    [task] = reporter.tasks
    assert (task.description, task.total, task.progress, task.finished) == ("Installing", 4, 4, True)


def test_post_link_script_runs(tmp_path: Path, sample_channel: Channel) -> None:
    prefix = tmp_path / "env"
    install([packed(sample_channel.packages["postlink"])], prefix, tmp_path / "pkgs")
    assert (prefix / POST_LINK_MARKER).read_text() == "postlink\n"


def test_conda_list_shows_original_channel_and_urls(tmp_path: Path, sample_channel: Channel) -> None:
    prefix = tmp_path / "env"
    install([packed(sample_channel.packages[n]) for n in ("alpha", "beta")], prefix, tmp_path / "pkgs")

    listing = conda("list", "-p", str(prefix))
    rows = {line.split()[0]: line.split() for line in listing.splitlines() if not line.startswith("#")}
    assert rows["alpha"] == ["alpha", "1.0", "h0_0", "conda-forge"]
    assert rows["beta"] == ["beta", "1.2", "h0_0", "conda-forge"]
    explicit = conda("list", "--explicit", "-p", str(prefix)).splitlines()
    assert f"{CONDA_FORGE}/linux-64/alpha-1.0-h0_0.conda" in explicit
    assert f"{CONDA_FORGE}/linux-64/beta-1.2-h0_0.tar.bz2" in explicit
    meta = json.loads((prefix / "conda-meta/alpha-1.0-h0_0.json").read_text())
    assert meta["depends"] == ["beta >=1"]  # the pack's record, not a guess
    assert meta["sha256"] == record_of(sample_channel.packages["alpha"])["sha256"]


def test_nothing_is_downloaded(tmp_path: Path, sample_channel: Channel, make_server: object) -> None:
    """Origins point at a live server holding the same files: the backend must never ask it."""
    server: ChannelServer = make_server(sample_channel.root)  # type: ignore[operator]
    pkgs = tmp_path / "pkgs"
    prefix = tmp_path / "env"
    install([packed(sample_channel.packages[n], server.url) for n in ("alpha", "beta")], prefix, pkgs)

    assert server.requests == []
    assert (prefix / "share/alpha/README").is_file()
    urls = (pkgs / "urls.txt").read_text().split()
    assert f"{server.url}/linux-64/alpha-1.0-h0_0.conda" in urls  # the cache looks downloaded
    listing = conda("list", "-p", str(prefix))
    assert server.url in listing  # a channel with no name is shown by its URL


def test_pack_without_provenance_shows_the_pack_channel(tmp_path: Path, sample_channel: Channel) -> None:
    """A pixi-pack pack has no origins: the records point at the pack's own channel folder."""
    prefix = tmp_path / "env"
    install([packed(sample_channel.packages["alpha"], origin=None)], prefix, tmp_path / "pkgs")

    explicit = conda("list", "--explicit", "-p", str(prefix)).splitlines()
    assert sample_channel.packages["alpha"].resolve().as_uri() in explicit
    listing = conda("list", "-p", str(prefix))
    assert sample_channel.root.resolve().as_uri() in listing


def test_pkgs_dir_is_the_only_cache(tmp_path: Path, sample_channel: Channel, conda_home: Path) -> None:
    from conda.base.context import context

    pkgs = tmp_path / "pkgs"
    install([packed(sample_channel.packages["alpha"])], tmp_path / "env", pkgs)

    assert (pkgs / "alpha-1.0-h0_0" / "info" / "repodata_record.json").is_file()
    assert not (conda_home / "default-pkgs").exists()
    assert str(pkgs) not in context.pkgs_dirs  # the override ended with the call


def test_default_cache_and_reuse(tmp_path: Path, sample_channel: Channel, conda_home: Path) -> None:
    """Without pkgs_dir conda's configured cache is used; a second env reuses its extraction."""
    alpha = packed(sample_channel.packages["alpha"])
    install([alpha], tmp_path / "one")
    extracted = conda_home / "default-pkgs" / "alpha-1.0-h0_0"
    assert (extracted / "info" / "repodata_record.json").is_file()
    before = extracted.stat().st_ino
    reporter = install([alpha], tmp_path / "two")
    assert extracted.stat().st_ino == before  # not extracted again
    assert (tmp_path / "two/share/alpha/README").is_file()
    assert reporter.tasks[0].progress == 1


def test_environment_is_registered(tmp_path: Path, sample_channel: Channel, conda_home: Path) -> None:
    prefix = conda_home / "envs" / "packed"
    install([packed(sample_channel.packages["alpha"])], prefix, tmp_path / "pkgs")

    assert str(prefix) in environments_txt(conda_home)
    # `conda env list` as root reads every user's registry from the password database, not $HOME;
    # an environment in CONDA_ENVS_DIRS (what `-n NAME` creates) is listed either way.
    assert str(prefix) in conda("env", "list").split()


@pytest.mark.parametrize("fmt", ["conda", "tar.bz2"], ids=["conda", "tar-bz2"])
def test_failing_post_link_fails_and_unregisters(
    tmp_path: Path, sample_channel: Channel, conda_home: Path, fmt: str
) -> None:
    spec = PackageSpec("breaks", post_link="echo 'cannot configure breaks' >&2\nexit 3\n", fmt=fmt)  # type: ignore[arg-type]
    broken = build_package(spec, tmp_path / "channel")
    prefix = tmp_path / "env"
    with pytest.raises(PackError) as info:
        install([packed(sample_channel.packages["alpha"]), packed(broken)], prefix, tmp_path / "pkgs")

    message = str(info.value)
    assert "post-link script of breaks-1.0-0 failed (exit code 3)" in message
    assert "cannot configure breaks" in message
    assert "\n" not in info.value.message
    assert str(prefix) not in environments_txt(conda_home)
    assert not (prefix / "conda-meta" / "breaks-1.0-0.json").exists()


def test_real_failing_post_link_package(tmp_path: Path, conda_home: Path) -> None:
    package = TEST_RECIPES / "failing_post_link-1.0-0.conda"
    if not package.is_file():
        pytest.skip("shared fixtures (../shared/fixtures/real-packages) are absent")
    prefix = tmp_path / "env"
    with pytest.raises(
        PackError, match=r"post-link script of failing_post_link-1\.0-0 failed \(exit code 1\)"
    ):
        install([packed(package)], prefix, tmp_path / "pkgs")
    assert str(prefix) not in environments_txt(conda_home)


@pytest.mark.parametrize("setting", [None, "prevent"], ids=["default-clobber", "prevent"])
def test_clobbering_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None) -> None:
    """Follows conda's ``path_conflict``: by default the later package wins, ``prevent`` refuses."""
    a, b = TEST_RECIPES / "clobber-a-1.0-0.conda", TEST_RECIPES / "clobber-b-1.0-0.conda"
    if not (a.is_file() and b.is_file()):
        pytest.skip("shared fixtures (../shared/fixtures/real-packages) are absent")
    if setting:
        monkeypatch.setenv("CONDA_PATH_CONFLICT", setting)
    prefix = tmp_path / "env"
    if setting == "prevent":
        with pytest.raises(PackError, match="two packages of the pack install the same file"):
            install([packed(a), packed(b)], prefix, tmp_path / "pkgs")
        return
    install([packed(a), packed(b)], prefix, tmp_path / "pkgs")
    clobbered = prefix / "bin" / "clobber-test-file"
    assert clobbered.is_file()
    assert {"clobber-a", "clobber-b"} <= {
        json.loads(p.read_text())["name"] for p in prefix.glob("conda-meta/*.json")
    }


def test_noarch_python_entry_point_and_bytecode(tmp_path: Path, python_channel: Channel) -> None:
    prefix = tmp_path / "env"
    packages = [packed(python_channel.packages[n]) for n in ("pyapp", "python")]  # unordered on purpose
    install(packages, prefix, tmp_path / "pkgs")

    result = subprocess.run(
        [prefix / "bin" / "pyapp"], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "pyapp says hi\n"
    assert (prefix / "bin" / "pyapp").read_text().startswith(f"#!{prefix}/bin/python")
    tag = subprocess.run(
        [prefix / "bin" / "python", "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    site = next((prefix / "lib").glob("python3.*/site-packages"))
    assert (site / "pyapp" / "__pycache__" / f"cli.{tag}.pyc").is_file()


def test_context_is_restored_under_the_conda_cli(tmp_path: Path, sample_channel: Channel) -> None:
    """Inside ``conda pixi-pack`` the CLI's settings survive the install."""
    from argparse import Namespace

    from conda.base.context import context, reset_context

    reset_context(argparse_args=Namespace(json=False, quiet=False, offline=False))
    pkgs_dirs = context.pkgs_dirs
    install([packed(sample_channel.packages["alpha"])], tmp_path / "env", tmp_path / "pkgs")
    assert (context.offline, context.quiet, context.json, context.pkgs_dirs) == (
        False,
        False,
        False,
        pkgs_dirs,
    )


def test_module_imports_without_conda() -> None:
    code = "import sys; sys.modules['conda'] = None; import conda_pixi_pack.unpack.install.conda"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unextractable_package_leaves_no_partial_cache_entry(tmp_path: Path, conda_home: Path) -> None:
    """zlib's .conda from conda's test data cannot be extracted (a backwards seek in its zip)."""
    package = TEST_RECIPES.parent.parent / "conda_format_repo/linux-64/zlib-1.2.11-h7b6447c_3.conda"
    if not package.is_file():
        pytest.skip("shared fixtures (../shared/fixtures/real-packages) are absent")
    pkgs, prefix = tmp_path / "pkgs", tmp_path / "env"
    with pytest.raises(PackError, match="extracting the packages into the package cache failed") as info:
        install([packed(package)], prefix, pkgs)
    assert "\n" not in info.value.message
    assert sorted(p.name for p in pkgs.iterdir() if p.name not in ("urls", "urls.txt")) == []
    assert not prefix.exists()
    assert str(prefix) not in environments_txt(conda_home)


def test_package_extracted_unfaithfully_is_refused(tmp_path: Path, conda_home: Path) -> None:
    """zlib's .tar.bz2 holds lib/libz.so.1 as a hard link without a link name: conda extracts an
    empty regular file where paths.json promises a symlink; it must be refused before linking."""
    package = TEST_RECIPES.parent.parent / "conda_format_repo/linux-64/zlib-1.2.11-h7b6447c_3.tar.bz2"
    if not package.is_file():
        pytest.skip("shared fixtures (../shared/fixtures/real-packages) are absent")
    pkgs, prefix = tmp_path / "pkgs", tmp_path / "env"
    with pytest.raises(PackError, match="package zlib-1.2.11-h7b6447c_3.tar.bz2 is broken") as info:
        install([packed(package)], prefix, pkgs)
    assert "should be a symbolic link but the archive holds a regular file" in info.value.message
    assert not prefix.exists()
    assert str(prefix) not in environments_txt(conda_home)


def test_interrupt_becomes_user_cancelled() -> None:
    """Ctrl-C inside conda arrives as CondaSignalInterrupt, wrapped like any other conda error."""
    import signal

    from conda import CondaMultiError
    from conda.exceptions import CondaSignalInterrupt

    from conda_pixi_pack.errors import UserCancelled
    from conda_pixi_pack.unpack.install.conda import _run_conda

    def interrupted() -> None:
        raise CondaMultiError([CondaSignalInterrupt(signal.SIGINT)])

    with pytest.raises(UserCancelled):
        _run_conda(interrupted, "linking the packages into the environment failed")
