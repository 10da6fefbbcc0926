"""``unpack()`` with the rattler backend on packs laid out exactly as pixi-pack 0.7 writes them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conda_pixi_pack import __version__
from conda_pixi_pack.errors import PackError, UserCancelled
from conda_pixi_pack.progress import Reporter
from conda_pixi_pack.unpack import install as install_module
from conda_pixi_pack.unpack import pipeline as unpack_module
from conda_pixi_pack.unpack.install import choose_installer
from conda_pixi_pack.unpack.pipeline import UnpackOptions, unpack
from conda_pixi_pack.unpack.reader import extract_tar
from conda_pixi_pack.unpack.validate import PackageDigests
from tests.conftest import ACTIVATE_VARIABLE, POST_LINK_MARKER
from tests.support.packages import PLACEHOLDER, PackageSpec, build_package
from tests.support.packs import damage, make_pack, make_pack_dir, record_of, tar_dir
from tests.support.reporting import Recorder

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import Channel

#: The sample packages a typical environment of these tests holds.
BASIC = ["alpha", "beta", "prefixed", "postlink", "activated", "noarch-data"]
#: What the channel of a pack made from a lock on conda-forge carries as provenance.
FORGE = "https://conda.anaconda.org/conda-forge"


def rattler_options(pack: Path, out: Path, **kwargs: Any) -> UnpackOptions:
    return UnpackOptions(source=pack, output_directory=out, installer="rattler", **kwargs)


def leftovers(folder: Path) -> list[str]:
    """Everything in ``folder`` (which the failed unpack must have left as it found it)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def basic_pack(tmp_path: Path, packages: Callable[..., list[Path]]) -> Path:
    return make_pack(tmp_path, packages(*BASIC))


# -- the happy path ------------------------------------------------------------------------------


def test_unpacks_a_pixi_pack_pack(tmp_path: Path, basic_pack: Path) -> None:
    out = tmp_path / "out"
    reporter = Recorder()
    result = unpack(rattler_options(basic_pack, out), reporter)

    env = out / "env"
    assert result.prefix == env
    assert result.installer == "rattler"
    assert result.activation_script == out / "activate.sh"
    assert result.conda_packages == sorted(
        [
            "alpha=1.0=h0_0",
            "beta=1.2=h0_0",
            "prefixed=2.0=h1_0",
            "postlink=1.0=0",
            "activated=1.0=0",
            "noarch-data=0.5=0",
        ]
    )
    assert result.pack_tool_version == "0.7.10"
    # A pixi-pack pack is from another tool: a warning, not an error.
    assert any("written by pixi-pack (version 0.7.10)" in w for w in reporter.warnings), reporter.warnings
    # Only the environment and its activation script: no temporary folder left.
    assert leftovers(out) == ["activate.sh", "env"]
    assert leftovers(tmp_path) == ["environment.tar", "out", "pack-src"]
    # py-rattler's CACHEDIR.TAG would make backup tools skip the environment
    assert not (env / "CACHEDIR.TAG").exists()

    # Text prefix replacement, in an executable that keeps its mode.
    program = env / "bin" / "prefixed"
    assert program.read_text() == f'#!/bin/sh\necho "{env}"\n'
    assert program.stat().st_mode & stat.S_IXUSR
    assert (env / "etc" / "prefixed.conf").read_text() == f"prefix={env}\ndata={env}/share/prefixed\n"
    # Binary replacement: same length, NUL padded, the new prefix in place of the placeholder.
    library = (env / "lib" / "libprefixed.so.2.0").read_bytes()
    assert PLACEHOLDER.encode() not in library
    assert (str(env) + "/lib").encode() + b"\0" in library
    assert (env / "share" / "prefixed" / "data.bin").read_bytes() == bytes(range(256))
    # Symlinks stay symlinks.
    assert os.readlink(env / "lib" / "libprefixed.so") == "libprefixed.so.2"
    assert os.readlink(env / "lib" / "libprefixed.so.2") == "libprefixed.so.2.0"
    # Post-link scripts run (as conda runs them).
    assert (env / POST_LINK_MARKER).read_text().strip() == "postlink"
    # conda-meta: one record per package and a conda-style history revision.
    metas = sorted(p.name for p in (env / "conda-meta").glob("*.json"))
    assert "prefixed-2.0-h1_0.json" in metas and len(metas) == len(BASIC)
    history = (env / "conda-meta" / "history").read_text().splitlines()
    assert history[0].startswith("==> ") and history[0].endswith(" <==")
    assert sum(line.startswith("+") for line in history) == len(BASIC)


def test_unpacks_without_positioned_io_as_on_windows(
    tmp_path: Path, basic_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows has no ``os.pread``/``os.pwrite``, kernel copies or named pipes: the packages are
    read out of the pack with a seek and a read (the descriptor's position kept), and the
    environment is the same."""
    for name in ("pread", "pwrite", "copy_file_range", "sendfile", "splice", "mkfifo"):
        monkeypatch.delattr(os, name, raising=False)
    env = unpack(rattler_options(basic_pack, tmp_path / "out")).prefix
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'
    assert (env / "share" / "prefixed" / "data.bin").read_bytes() == bytes(range(256))
    assert len(list((env / "conda-meta").glob("*.json"))) == len(BASIC)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_activation_script_in_a_real_bash(tmp_path: Path, basic_pack: Path) -> None:
    out = tmp_path / "out"
    result = unpack(rattler_options(basic_pack, out))
    assert result.activation_script is not None
    done = subprocess.run(
        ["bash", "-c", f'source "{result.activation_script}" && echo "${ACTIVATE_VARIABLE}" && prefixed'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.stdout.splitlines() == ["yes", str(out / "env")]


def test_provenance_from_the_pack_origins(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    alpha, beta = packages("alpha", "beta")
    origins = {
        f"linux-64/{alpha.name}": {"url": f"{FORGE}/linux-64/{alpha.name}", "channel": f"{FORGE}/"},
        # No channel given: derived from the URL.
        f"linux-64/{beta.name}": {"url": f"{FORGE}/linux-64/{beta.name}"},
    }
    pack = make_pack(tmp_path, [alpha, beta], origins=origins)
    env = unpack(rattler_options(pack, tmp_path / "out")).prefix
    alpha_meta = json.loads((env / "conda-meta" / "alpha-1.0-h0_0.json").read_text())
    beta_meta = json.loads((env / "conda-meta" / "beta-1.2-h0_0.json").read_text())
    assert alpha_meta["url"] == f"{FORGE}/linux-64/{alpha.name}"
    assert alpha_meta["channel"] == f"{FORGE}/"
    assert beta_meta["url"] == f"{FORGE}/linux-64/{beta.name}"
    assert beta_meta["channel"] == f"{FORGE}/"
    history = (env / "conda-meta" / "history").read_text()
    assert "+conda-forge::alpha-1.0-h0_0\n" in history
    assert "+conda-forge::beta-1.2-h0_0\n" in history


@pytest.mark.conda
def test_conda_reads_the_rattler_environment(
    tmp_path: Path, packages: Callable[..., list[Path]], conda_env: dict[str, str]
) -> None:
    """`conda list` shows the original channel, `--explicit` the original URLs, `--revisions` works."""
    alpha, beta = packages("alpha", "beta")
    origins = {
        f"linux-64/{p.name}": {"url": f"{FORGE}/linux-64/{p.name}", "channel": f"{FORGE}/"}
        for p in (alpha, beta)
    }
    env = unpack(rattler_options(make_pack(tmp_path, [alpha, beta], origins=origins), tmp_path)).prefix

    def conda(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "conda", "list", "-p", str(env), *args],
            capture_output=True,
            text=True,
            env=conda_env,
            check=True,
        )
        return done.stdout

    listing = [line.split() for line in conda().splitlines() if not line.startswith("#")]
    assert ["alpha", "1.0", "h0_0", "conda-forge"] in listing
    assert ["beta", "1.2", "h0_0", "conda-forge"] in listing
    explicit = conda("--explicit").splitlines()
    assert f"{FORGE}/linux-64/{alpha.name}" in explicit
    assert f"{FORGE}/linux-64/{beta.name}" in explicit
    assert "+alpha-1.0 (conda-forge)" in conda("--revisions")


def test_from_stdin_through_a_pipe(tmp_path: Path, basic_pack: Path) -> None:
    """A real pipe (not seekable), as in `cat environment.tar | conda pixi-pack unpack -`."""
    code = (
        "import sys; from pathlib import Path;"
        "from conda_pixi_pack.unpack.pipeline import UnpackOptions, unpack;"
        "r = unpack(UnpackOptions(from_stdin=True, output_directory=Path(sys.argv[1]), installer='rattler'));"
        "print(r.prefix, flush=True);"
        "import os; os._exit(0)"  # as cli.run does: py-rattler's threads may abort the teardown
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "out")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = proc.communicate(basic_pack.read_bytes(), timeout=120)
    assert proc.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == str(tmp_path / "out" / "env")
    assert (tmp_path / "out" / "env" / "bin" / "prefixed").is_file()
    assert leftovers(tmp_path / "out") == ["activate.sh", "env"]


def test_folder_pack_is_used_as_it_is(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    folder = make_pack_dir(tmp_path / "pack", packages("alpha", "beta"))
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    result = unpack(rattler_options(folder, tmp_path / "out"))
    assert (result.prefix / "share" / "alpha" / "README").read_text() == "alpha\n"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before
    assert leftovers(tmp_path / "out") == ["activate.sh", "env"]


def test_prefix_and_shell_options(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    pack = make_pack(tmp_path, packages("alpha", "beta"))
    result = unpack(
        rattler_options(pack, tmp_path / "scripts", prefix=tmp_path / "somewhere" / "myenv", shell="fish")
    )
    assert result.prefix == tmp_path / "somewhere" / "myenv"
    assert (result.prefix / "conda-meta" / "alpha-1.0-h0_0.json").is_file()
    assert result.activation_script == tmp_path / "scripts" / "activate.fish"
    assert str(result.prefix) in result.activation_script.read_text()


def test_dry_run_installs_nothing(tmp_path: Path, basic_pack: Path) -> None:
    result = unpack(rattler_options(basic_pack, tmp_path / "out", dry_run=True))
    assert result.dry_run and result.activation_script is None
    assert "prefixed=2.0=h1_0" in result.conda_packages
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == ["environment.tar", "pack-src"]


def test_dry_run_still_validates(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    src = make_pack_dir(tmp_path / "pack", packages("alpha"))
    (src / "channel" / "linux-64" / packages("alpha")[0].name).write_bytes(b"not the package")
    with pytest.raises(PackError, match="has 15 bytes"):
        unpack(rattler_options(src, tmp_path / "out", dry_run=True))


# -- targets -------------------------------------------------------------------------------------


def test_existing_prefix_is_refused(tmp_path: Path, basic_pack: Path) -> None:
    env = tmp_path / "out" / "env"
    env.mkdir(parents=True)
    (env / "keep.txt").write_text("mine")
    with pytest.raises(PackError, match="already exists and is not empty") as excinfo:
        unpack(rattler_options(basic_pack, tmp_path / "out"))
    assert "--force" in (excinfo.value.hint or "")
    assert leftovers(env) == ["keep.txt"]
    assert leftovers(tmp_path / "out") == ["env"]


def test_an_empty_folder_is_used(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    (tmp_path / "out" / "env").mkdir(parents=True)
    result = unpack(rattler_options(make_pack(tmp_path, packages("alpha", "beta")), tmp_path / "out"))
    assert (result.prefix / "share" / "alpha" / "README").is_file()


def test_force_replaces_an_environment(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    out = tmp_path / "out"
    unpack(rattler_options(make_pack(tmp_path / "one", packages("alpha", "beta")), out))
    result = unpack(rattler_options(make_pack(tmp_path / "two", packages("noarch-data")), out, force=True))
    assert result.replaced
    assert not (out / "env" / "share" / "alpha").exists()
    assert (out / "env" / "share" / "noarch-data" / "data.txt").is_file()
    assert leftovers(out) == ["activate.sh", "env"]


def test_force_never_replaces_a_folder_that_is_not_an_environment(tmp_path: Path, basic_pack: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(PackError, match="is not a conda environment"):
        unpack(rattler_options(basic_pack, tmp_path, prefix=home, force=True))
    assert (home / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize(
    ("extension", "warning"),
    [
        ({"version": __version__}, None),
        ({"version": "0.0.1"}, f"written by conda-pixi-pack 0.0.1, this is {__version__}"),
        ({"origins": {}}, f"written by an earlier conda-pixi-pack, this is {__version__}"),
        ({"version": 5}, f"written by an earlier conda-pixi-pack, this is {__version__}"),
        ({"version": ""}, f"written by an earlier conda-pixi-pack, this is {__version__}"),
    ],
    ids=["same-version", "other-version", "no-version", "version-not-a-string", "empty-version"],
)
def test_version_warning_names_the_tool(
    tmp_path: Path, packages: Callable[..., list[Path]], extension: dict[str, Any], warning: str | None
) -> None:
    metadata = {
        "version": "1",
        "pixi-pack-version": "0.1.0",
        "platform": unpack_module.current_platform(),
        "conda-pixi-pack": extension,
    }
    reporter = Recorder()
    unpack(
        rattler_options(make_pack(tmp_path, packages("alpha"), metadata=metadata), tmp_path / "out"), reporter
    )
    found = [w for w in reporter.warnings if "written by" in w]
    if warning is None:
        assert found == []
    else:
        assert len(found) == 1 and warning in found[0], found


def test_a_cache_tag_installed_by_a_package_stays(tmp_path: Path) -> None:
    tagged = build_package(
        PackageSpec("tagged", files={"CACHEDIR.TAG": "Signature: 8a477f597d28d172789f06886806bc55\n"}),
        tmp_path / "ch",
    )
    result = unpack(rattler_options(make_pack(tmp_path, [tagged]), tmp_path / "out"))
    assert (result.prefix / "CACHEDIR.TAG").read_text().startswith("Signature:")


def test_force_restores_the_old_environment_on_failure(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    out = tmp_path / "out"
    unpack(rattler_options(make_pack(tmp_path / "one", packages("alpha", "beta")), out))
    old_script = (out / "activate.sh").read_text()
    failing = build_package(
        PackageSpec("failing", files={"share/failing/README": "x\n"}, post_link="exit 3\n"), tmp_path / "ch"
    )
    with pytest.raises(PackError, match="post-link script of failing failed"):
        unpack(rattler_options(make_pack(tmp_path / "two", [failing]), out, force=True))
    assert (out / "env" / "share" / "alpha" / "README").read_text() == "alpha\n"
    assert not (out / "env" / "share" / "failing").exists()
    assert (out / "activate.sh").read_text() == old_script
    assert leftovers(out) == ["activate.sh", "env"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"env_name": "../escape"}, "invalid environment name '../escape'"),
        ({"env_name": ".."}, "invalid environment name '..'"),
        ({"name": "x", "prefix": Path("/tmp/x")}, "either -n/--name or -p/--prefix"),
        ({"shell": "tcsh"}, "unknown shell 'tcsh'"),
    ],
    ids=["env-name-path", "env-name-dotdot", "name-and-prefix", "unknown-shell"],
)
def test_bad_target_options(tmp_path: Path, basic_pack: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PackError, match=message):
        unpack(rattler_options(basic_pack, tmp_path / "out", **kwargs))
    assert not (tmp_path / "out").exists()


def test_name_needs_conda(tmp_path: Path, basic_pack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "conda.core.prefix_data", None)  # import fails as without conda
    with pytest.raises(PackError, match="-n/--name needs conda") as excinfo:
        unpack(rattler_options(basic_pack, tmp_path / "out", name="myenv"))
    assert "-o/--output-directory" in (excinfo.value.hint or "")


@pytest.mark.conda
def test_name_goes_to_condas_envs_dir(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from conda.base.context import reset_context

    monkeypatch.setenv("CONDA_ENVS_DIRS", str(tmp_path / "envs"))
    reset_context()
    try:
        pack = make_pack(tmp_path, packages("alpha", "beta"))
        result = unpack(rattler_options(pack, tmp_path / "scripts", name="packed"))
    finally:
        monkeypatch.undo()
        reset_context()
    assert result.prefix == tmp_path / "envs" / "packed"
    assert (result.prefix / "conda-meta" / "alpha-1.0-h0_0.json").is_file()


def test_installer_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install_module, "conda_importable", lambda: False)
    assert choose_installer(None).name == "rattler"
    assert choose_installer("rattler").name == "rattler"
    with pytest.raises(PackError, match="the conda installer needs conda") as excinfo:
        choose_installer("conda")
    assert excinfo.value.hint == "use --installer rattler"


# -- validation ----------------------------------------------------------------------------------


def _break(kind: str, src: Path) -> None:
    """Damage the pack folder ``src`` in one precise way."""
    subdir = src / "channel" / "linux-64"
    package = next(subdir.glob("alpha-*"))
    repodata_path = subdir / "repodata.json"
    repodata = json.loads(repodata_path.read_text())
    meta_path = src / "pixi-pack.json"
    meta = json.loads(meta_path.read_text())
    if kind == "missing-metadata":
        meta_path.unlink()
    elif kind == "version-number":
        meta["version"] = 1
        meta_path.write_text(json.dumps(meta))
    elif kind == "version-2":
        meta["version"] = "2"
        meta_path.write_text(json.dumps(meta))
    elif kind == "metadata-not-json":
        meta_path.write_text("{")
    elif kind == "wrong-platform":
        meta["platform"] = "win-64"
        meta_path.write_text(json.dumps(meta))
    elif kind == "checksum":
        damage(package)
    elif kind == "size":
        repodata["packages.conda"][package.name]["size"] += 1
        repodata_path.write_text(json.dumps(repodata))
    elif kind == "md5-only":
        del repodata["packages.conda"][package.name]["sha256"]
        repodata["packages.conda"][package.name]["md5"] = "0" * 32
        repodata_path.write_text(json.dumps(repodata))
    elif kind == "missing-package":
        package.unlink()
    elif kind == "unsafe-file-name":
        repodata["packages.conda"]["../../evil.conda"] = repodata["packages.conda"].pop(package.name)
        repodata_path.write_text(json.dumps(repodata))
    elif kind == "no-channel":
        shutil.rmtree(src / "channel")
    else:  # pragma: no cover
        raise AssertionError(kind)


VALIDATION = {
    "missing-metadata": "not a pack: pixi-pack.json is missing",
    "metadata-not-json": "broken pack: pixi-pack.json is damaged: it is not valid JSON",
    "version-number": "has version 1, which must be the string",
    "version-2": "unsupported pack format version '2'",
    "wrong-platform": f"the pack is for win-64 but this machine is {unpack_module.current_platform()}",
    "checksum": "channel/linux-64/alpha-1.0-h0_0.conda does not match its sha256",
    "size": "channel/linux-64/alpha-1.0-h0_0.conda has",
    "md5-only": "does not match its md5",
    "missing-package": "channel/linux-64/alpha-1.0-h0_0.conda is listed in repodata.json but missing",
    "unsafe-file-name": "lists '../../evil.conda', which is not a package file name",
    "no-channel": "the channel/ folder is missing",
}


@pytest.mark.parametrize(("kind", "message"), VALIDATION.items(), ids=list(VALIDATION))
@pytest.mark.parametrize("as_tar", [True, False], ids=["tar", "folder"])
def test_validation_errors_leave_nothing(
    tmp_path: Path, packages: Callable[..., list[Path]], kind: str, message: str, as_tar: bool
) -> None:
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta"))
    _break(kind, src)
    pack = tar_dir(src, tmp_path / "environment.tar") if as_tar else src
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PackError) as excinfo:
        unpack(rattler_options(pack, out))
    assert message in excinfo.value.message
    assert leftovers(out) == []


def test_wheels_need_python(
    tmp_path: Path, sample_channel: Channel, packages: Callable[..., list[Path]]
) -> None:
    pack = make_pack(tmp_path, packages("alpha", "beta"), wheels=[sample_channel.wheels["fixture-wheel"]])
    with pytest.raises(PackError, match="1 wheel.* but no python package"):
        unpack(rattler_options(pack, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("installer", ["rattler", "conda"])
def test_a_pkgs_dir_that_is_a_file_is_refused_first(tmp_path: Path, basic_pack: Path, installer: str) -> None:
    """Checked before anything is done: conda and rattler would fail half-way, in several lines."""
    not_a_folder = tmp_path / "pkgs"
    not_a_folder.write_text("a file")
    options = rattler_options(basic_pack, tmp_path / "out", pkgs_dir=not_a_folder)
    options.installer = installer  # type: ignore[assignment]
    if installer == "conda" and not install_module.conda_importable():
        pytest.skip("conda is not importable")
    with pytest.raises(PackError, match=r"--pkgs-dir .*pkgs is not a folder"):
        unpack(options)
    assert not (tmp_path / "out").exists()


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="nowhere.tar does not exist"):
        unpack(rattler_options(tmp_path / "nowhere.tar", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_files_not_listed_are_ignored(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    """As pixi-unpack: the packages installed are exactly those repodata.json lists."""
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta"))
    shutil.copy(packages("noarch-data")[0], src / "channel" / "linux-64" / "stray-1.0-0.conda")
    (src / "channel" / "linux-64" / "notes.txt").write_text("ignored")
    result = unpack(rattler_options(src, tmp_path / "out"))
    assert result.conda_packages == ["alpha=1.0=h0_0", "beta=1.2=h0_0"]
    assert not (result.prefix / "share" / "noarch-data").exists()


def test_tar_bz2_records_under_packages_conda(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    """pixi-pack puts .tar.bz2 records under packages.conda too; conda's layout has them under packages."""
    src = make_pack_dir(tmp_path / "src", packages("beta", "alpha"))
    repodata_path = src / "channel" / "linux-64" / "repodata.json"
    repodata = json.loads(repodata_path.read_text())
    assert "beta-1.2-h0_0.tar.bz2" in repodata["packages.conda"]
    result = unpack(rattler_options(src, tmp_path / "out1"))
    assert (result.prefix / "share" / "beta" / "README").is_file()
    # And the conda-style layout reads the same.
    repodata["packages"] = {"beta-1.2-h0_0.tar.bz2": repodata["packages.conda"].pop("beta-1.2-h0_0.tar.bz2")}
    repodata_path.write_text(json.dumps(repodata))
    result = unpack(rattler_options(src, tmp_path / "out2"))
    assert (result.prefix / "share" / "beta" / "README").is_file()


def _hashing_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("conda-pixi-pack-hash")]


@pytest.mark.parametrize(
    "how", ["checksum", "unsafe-member-after-packages"], ids=["checksum", "unsafe-member"]
)
def test_failed_unpack_leaves_no_hashing_thread(
    tmp_path: Path, packages: Callable[..., list[Path]], how: str
) -> None:
    """Packages are hashed in threads while the tar is extracted: a failure stops and joins them."""
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta", "noarch-data"))
    if how == "checksum":
        _break("checksum", src)
    pack = tar_dir(src, tmp_path / "environment.tar")
    if how != "checksum":
        # Valid packages first (their hashing is under way), then a member escaping the pack.
        with tarfile.open(pack, "a") as tar:
            info = tarfile.TarInfo("../evil")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PackError, match="does not match its sha256|points outside"):
        unpack(rattler_options(pack, out))
    assert _hashing_threads() == []
    assert leftovers(out) == []
    assert not (tmp_path / "evil").exists()


def test_digests_from_extraction_are_the_files_sha256(tmp_path: Path, basic_pack: Path) -> None:
    """What validation trusts from the background hashing is exactly hashlib's sha256 of each file."""
    target = tmp_path / "x"
    target.mkdir()
    with PackageDigests() as digests:
        extract_tar(basic_pack, target, Reporter(), on_file=digests.submit)
        files = sorted((target / "channel").glob("*/*.conda")) + sorted(
            (target / "channel").glob("*/*.tar.bz2")
        )
        assert files
        for path in files:
            assert digests.sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
        assert digests.sha256(target / "pixi-pack.json") is None  # not a package: never hashed
    assert _hashing_threads() == []


# -- all or nothing ------------------------------------------------------------------------------


def test_failing_post_link_leaves_nothing(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    failing = build_package(
        PackageSpec("failing", files={"share/failing/README": "x\n"}, post_link="exit 3\n"), tmp_path / "ch"
    )
    pack = make_pack(tmp_path, [*packages("alpha", "beta"), failing])
    out = tmp_path / "deep" / "out"
    with pytest.raises(PackError, match="post-link script of failing failed"):
        unpack(rattler_options(pack, out))
    # Not even the output folders this run created.
    assert not (tmp_path / "deep").exists()


def test_ctrl_c_rolls_back(tmp_path: Path, basic_pack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(unpack_module, "write_activation_script", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserCancelled):
        unpack(rattler_options(basic_pack, out))
    assert leftovers(out) == []


def test_unexpected_backend_error_is_a_pack_error(
    tmp_path: Path, basic_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import conda_pixi_pack.unpack.install.rattler as backend

    def broken(*args: object, **kwargs: object) -> None:
        kwargs_prefix = args[2]  # (self, packages, prefix)
        assert isinstance(kwargs_prefix, Path)
        kwargs_prefix.mkdir()
        (kwargs_prefix / "half-written").write_text("x")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(backend.RattlerInstaller, "install", broken)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PackError, match="unpacking failed: disk on fire"):
        unpack(rattler_options(basic_pack, out))
    assert leftovers(out) == []


# -- roundtrip through our own pack() -------------------------------------------------------------


def test_roundtrip_pack_then_unpack(tmp_path: Path, make_project: Callable[..., Path]) -> None:
    from conda_pixi_pack.pack.pipeline import PackOptions, pack
    from conda_pixi_pack.pack.sources.lockfile import LockSource

    project = make_project(["alpha", "beta", "prefixed", "activated"], urls="file")
    packed = pack(
        PackOptions(source=LockSource(project), output=tmp_path / "environment.tar", platform="linux-64")
    )
    assert packed.output is not None
    result = unpack(rattler_options(packed.output, tmp_path / "out"))
    env = result.prefix
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'
    assert sorted(result.conda_packages) == [
        "activated=1.0=0",
        "alpha=1.0=h0_0",
        "beta=1.2=h0_0",
        "prefixed=2.0=h1_0",
    ]
    # Our packs carry the lock's URLs: conda-meta points back at the channel, not at the pack.
    alpha_meta = json.loads((env / "conda-meta" / "alpha-1.0-h0_0.json").read_text())
    assert alpha_meta["url"].endswith("/linux-64/alpha-1.0-h0_0.conda")
    assert ".conda-pixi-pack-" not in alpha_meta["url"]


def test_record_helper_matches_the_sample_index(sample_channel: Channel) -> None:
    """The hand-made packs carry the same records rattler's indexer writes (a sanity check)."""
    indexed = json.loads((sample_channel.root / "linux-64" / "repodata.json").read_text())
    path = sample_channel.packages["alpha"]
    mine = record_of(path)
    theirs = indexed["packages.conda"][path.name]
    for key in ("name", "version", "build", "depends", "sha256", "md5", "size"):
        assert mine[key] == theirs[key]


# -- the conda backend through unpack() ------------------------------------------------------------

_UNPACK_SCRIPT = """
import sys
from pathlib import Path
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.unpack.pipeline import UnpackOptions, unpack
try:
    r = unpack(UnpackOptions(source=Path(sys.argv[1]), output_directory=Path(sys.argv[2]), installer="conda"))
except PackError as e:
    print(e.message, flush=True)
    import os; os._exit(1)
print(r.prefix, flush=True)
import os; os._exit(0)  # as cli.run does: py-rattler's threads may abort the teardown
"""


@pytest.mark.conda
@pytest.mark.slow
def test_conda_backend_through_unpack(
    tmp_path: Path, packages: Callable[..., list[Path]], conda_env: dict[str, str]
) -> None:
    """The default backend where conda is importable: a registered env with its provenance, and a
    failing post-link script that leaves nothing (not even a registration) behind."""
    conda_env = {**conda_env, "HOME": str(tmp_path / "home")}
    alpha, beta, prefixed = packages("alpha", "beta", "prefixed")
    origins = {
        f"linux-64/{p.name}": {"url": f"{FORGE}/linux-64/{p.name}", "channel": f"{FORGE}/"}
        for p in (alpha, beta, prefixed)
    }
    pack = make_pack(tmp_path / "good", [alpha, beta, prefixed], origins=origins)
    out = tmp_path / "out"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=conda_env)

    done = run("-c", _UNPACK_SCRIPT, str(pack), str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    env = out / "env"
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'
    listing = run("-m", "conda", "list", "-p", str(env)).stdout.splitlines()
    assert ["prefixed", "2.0", "h1_0", "conda-forge"] in [line.split() for line in listing]
    # Registered for `conda env list` (read from the file: as root, conda lists every user's file
    # found through the password database, not through $HOME).
    environments = tmp_path / "home" / ".conda" / "environments.txt"
    assert str(env) in environments.read_text().splitlines()

    failing = build_package(
        PackageSpec("failing", files={"share/failing/README": "x\n"}, post_link="exit 3\n"), tmp_path / "ch"
    )
    bad = make_pack(tmp_path / "bad", [alpha, beta, failing])
    bad_out = tmp_path / "bad-out"
    done = run("-c", _UNPACK_SCRIPT, str(bad), str(bad_out))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failing" in done.stdout
    assert leftovers(bad_out) == []
    assert not any(line.startswith(str(bad_out)) for line in environments.read_text().splitlines())


def test_replacing_another_environments_script_is_said(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """Two environments unpacked into one output folder: the second activate.sh replaces the first."""
    pack = make_pack(tmp_path, packages("alpha"))
    out = tmp_path / "out"
    first = Recorder()
    unpack(rattler_options(pack, out, env_name="one"), first)
    assert not any("activate.sh" in w for w in first.warnings)
    second = Recorder()
    result = unpack(rattler_options(pack, out, env_name="two"), second)
    assert any(f"replaced the existing {out / 'activate.sh'}" in w for w in second.warnings), second.warnings
    assert str(result.prefix) in (out / "activate.sh").read_text()


def test_two_packages_of_one_name_are_refused(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    """A lock never holds two packages of one name; a pack that does would install both over each
    other (the same conda-meta entry, the same files)."""
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta"))
    subdir = src / "channel" / "linux-64"
    alpha = next(subdir.glob("alpha-*.conda"))
    shutil.copy(alpha, subdir / "alpha-1.0-h0_1.conda")
    repodata = json.loads((subdir / "repodata.json").read_text())
    repodata["packages.conda"]["alpha-1.0-h0_1.conda"] = dict(repodata["packages.conda"][alpha.name])
    (subdir / "repodata.json").write_text(json.dumps(repodata))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(
        PackError, match=r"alpha-1\.0-h0_1\.conda and channel/linux-64/alpha-1\.0-h0_0\.conda"
    ):
        unpack(rattler_options(tar_dir(src, tmp_path / "environment.tar"), out))
    assert leftovers(out) == []
