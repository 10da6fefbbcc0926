"""``unpack()`` (rattler backend) on packages that other projects built: conda's test packages and
pixi-pack's example webserver, plus the Python interpreter fixture for noarch: python and wheels."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.unpack.pipeline import UnpackOptions, UnpackResult, unpack
from tests.support.packs import make_pack, make_pack_dir, tar_dir

if TYPE_CHECKING:
    from tests.conftest import Channel

#: Shared real packages (see /work/shared/fixtures/README.md); tests skip where they are absent.
REAL: Final = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "real-packages"
RECIPES: Final = REAL / "conda-test-data" / "test-recipes" / "noarch"
EXAMPLES: Final = REAL / "pixi-pack-examples"
ZLIB: Final = REAL / "conda-test-data" / "conda_format_repo" / "linux-64"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real package fixtures not found at {REAL}")


def recipe(name: str) -> Path:
    return next(RECIPES.glob(f"{name}-*.conda"))


def install(tmp_path: Path, packages: list[Path], **kwargs: object) -> UnpackResult:
    pack = make_pack(tmp_path, packages, **kwargs)  # type: ignore[arg-type]
    return unpack(UnpackOptions(source=pack, output_directory=tmp_path / "out", installer="rattler"))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def bash(script: Path, command: str, home: Path) -> list[str]:
    done = subprocess.run(
        ["bash", "-c", f'source "{script}" && {command}'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
    )
    return done.stdout.splitlines()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_activate_deactivate_package(tmp_path: Path) -> None:
    result = install(tmp_path, [recipe("activate_deactivate_package"), recipe("small-executable")])
    env = result.prefix
    activate_sh = (env / "etc" / "conda" / "activate.d" / "activate.sh").read_text()
    assert result.activation_script is not None
    assert f". {env}/etc/conda/activate.d/activate.sh" in result.activation_script.read_text()
    # The package's activate.d script runs when the generated script is sourced.
    variable = next(
        line.split("=", 1)[0].removeprefix("export ").strip()
        for line in activate_sh.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    values = bash(result.activation_script, f'echo "${{{variable}}}"; echo "$CONDA_PREFIX"', tmp_path)
    assert values[0] != ""
    assert values[1] == str(env)


def test_failing_post_link_leaves_nothing(tmp_path: Path) -> None:
    pack = make_pack(tmp_path, [recipe("activate_deactivate_package"), recipe("failing_post_link")])
    out = tmp_path / "out"
    with pytest.raises(PackError, match="post-link script of failing_post_link failed") as failed:
        unpack(UnpackOptions(source=pack, output_directory=out, installer="rattler"))
    # rattler keeps the script's output to itself: the hint says where to see it
    assert "--installer conda" in (failed.value.hint or "")
    assert not out.exists()
    assert leftovers(tmp_path) == ["environment.tar", "pack-src"]


@pytest.mark.parametrize("suffix", [".tar.bz2", ".conda"], ids=["tar.bz2", "conda"])
def test_zlib_hard_link_is_refused_cleanly(tmp_path: Path, suffix: str) -> None:
    """The package's lib/libz.so.1 is a hard link without a link name: rattler refuses it (its
    extractor already for the .conda, its linker for the .tar.bz2), and the half-installed
    environment must go. The message quotes raw tar bytes: no control character reaches the
    terminal."""
    zlib = next(ZLIB.glob(f"zlib-1.2.11-*{suffix}"))
    pack = make_pack(tmp_path, [recipe("activate_deactivate_package"), zlib])
    out = tmp_path / "out"
    out.mkdir()
    expected = (
        r"extracting channel/linux-64/zlib-1\.2\.11-\S+ failed: .*hard link"
        if suffix == ".conda"
        else r"installing the packages .* failed to (fetch|link) zlib-1\.2\.11"
    )
    with pytest.raises(PackError, match=expected) as caught:
        unpack(UnpackOptions(source=pack, output_directory=out, installer="rattler"))
    assert caught.value.message.isprintable()
    # No prefix, no activation script, no temporary folder (rattler's own workers included).
    assert leftovers(out) == []
    assert leftovers(tmp_path) == ["environment.tar", "out", "pack-src"]


def test_clobbering_packages(tmp_path: Path) -> None:
    """Two packages with the same file: both install, one copy wins (rattler keeps the other aside)."""
    result = install(tmp_path, [recipe("clobber-a"), recipe("clobber-b")])
    env = result.prefix
    assert (env / "bin" / "clobber-test-file").is_file()
    metas = sorted(p.name for p in (env / "conda-meta").glob("*.json"))
    assert metas == ["clobber-a-1.0-0.json", "clobber-b-1.0-0.json"]


def test_sample_noarch_python(tmp_path: Path, python_channel: Channel) -> None:
    result = install(tmp_path, [python_channel.packages["python"], recipe("sample_noarch_python")])
    env = result.prefix
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sample, sys; print(sample.__file__); print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert site[1] == str(env)
    assert Path(site[0]).is_relative_to(env / "lib")
    assert "site-packages" in site[0]


def test_my_webserver_and_its_wheel(tmp_path: Path, python_channel: Channel) -> None:
    """pixi-pack's example: the noarch: python conda package installs into site-packages; the
    broken variant (unsatisfiable `fastapi >=0.112`) installs too, as no solver runs on unpack."""
    packages = [python_channel.packages["python"], EXAMPLES / "my-webserver-0.1.0-pyh4616a5c_0.conda"]
    result = install(tmp_path / "ok", packages)
    env = result.prefix
    version = subprocess.run(
        [
            str(env / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('my_webserver'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == "0.1.0"
    broken = install(
        tmp_path / "broken",
        [python_channel.packages["python"], EXAMPLES / "my-webserver-broken-0.1.0-pyh4616a5c_0.conda"],
    )
    assert "my-webserver-broken=0.1.0=pyh4616a5c_0" in broken.conda_packages
    assert list((broken.prefix / "lib").glob("python3.*/site-packages/my_webserver/__init__.py"))


def test_broken_webserver_posing_as_the_real_one_is_refused(tmp_path: Path) -> None:
    """A pack whose record says my-webserver but whose file is the broken variant: checksum error."""
    good = EXAMPLES / "my-webserver-0.1.0-pyh4616a5c_0.conda"
    src = make_pack_dir(tmp_path / "src", [good])
    shutil.copyfile(
        EXAMPLES / "my-webserver-broken-0.1.0-pyh4616a5c_0.conda", src / "channel" / "noarch" / good.name
    )
    pack = tar_dir(src, tmp_path / "environment.tar")
    repodata = json.loads((src / "channel" / "noarch" / "repodata.json").read_text())
    expected = repodata["packages.conda"][good.name]["size"]
    with pytest.raises(PackError, match=r"noarch/my-webserver-0.1.0-pyh4616a5c_0.conda (has|does not match)"):
        unpack(UnpackOptions(source=pack, output_directory=tmp_path / "out", installer="rattler"))
    assert expected > 0
    assert not (tmp_path / "out").exists()


def test_webserver_wheel_into_the_env_python(tmp_path: Path, python_channel: Channel) -> None:
    result = install(
        tmp_path,
        [python_channel.packages["python"]],
        wheels=[EXAMPLES / "my_webserver-0.1.0-py3-none-any.whl"],
    )
    assert result.wheels == ["my_webserver-0.1.0-py3-none-any.whl"]
    installer = subprocess.run(
        [
            str(result.prefix / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.distribution('my_webserver').read_text('INSTALLER'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert installer == "conda-pixi-pack"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_noarch_python_entry_point_and_wheel_script(tmp_path: Path, python_channel: Channel) -> None:
    """The fixture's pyapp (noarch: python, entry point) and fixture-wheel (console script), both
    run from the activated environment, both through the environment's own Python."""
    result = install(
        tmp_path,
        [python_channel.packages["python"], python_channel.packages["pyapp"]],
        wheels=[python_channel.wheels["fixture-wheel"]],
    )
    assert result.activation_script is not None
    lines = bash(
        result.activation_script,
        "pyapp && fixture-wheel && "
        "python -c 'import fixture_wheel, sys; print(fixture_wheel.VALUE, sys.prefix)'",
        tmp_path,
    )
    assert lines == ["pyapp says hi", "fixture-wheel says hi", f"42 {result.prefix}"]
    # Bytecode was compiled for the noarch: python package.
    assert list((result.prefix / "lib").glob("python3.*/site-packages/pyapp/__pycache__/*.pyc"))


@pytest.mark.conda
@pytest.mark.parametrize("suffix", [".tar.bz2", ".conda"], ids=["tar.bz2", "conda"])
def test_zlib_is_refused_cleanly_by_the_conda_backend(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same broken zlib through conda: refused, and nothing is left (prefix, script, temp)."""
    pytest.importorskip("conda", reason="conda is not importable")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # conda registers environments under HOME
    zlib = next(ZLIB.glob(f"zlib-1.2.11-*{suffix}"))
    pack = make_pack(tmp_path, [recipe("activate_deactivate_package"), zlib])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PackError, match=r"zlib-1.2.11"):
        unpack(
            UnpackOptions(source=pack, output_directory=out, installer="conda", pkgs_dir=tmp_path / "pkgs")
        )
    assert leftovers(out) == []
