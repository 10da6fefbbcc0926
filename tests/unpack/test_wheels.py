"""Wheels installed into an environment's own Python with pypa ``installer`` (no conda needed)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
import zipfile
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.progress import Reporter
from conda_pixi_pack.unpack.install.wheels import INSTALLER_NAME, check_wheel, install_wheels
from tests.support.channel import record_for
from tests.support.wheels import build_wheel

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Channel


def make_env(prefix: Path, cache: Path, packages: list[Path]) -> Path:
    """An environment made by rattler (pixi-unpack's engine) from local package files."""
    import rattler

    records = [record_for(p, p.resolve().as_uri()) for p in packages]
    asyncio.run(rattler.install(records, prefix, cache_dir=cache, show_progress=False))
    return prefix


@pytest.fixture
def python_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, python_channel: Channel) -> Path:
    cache = tmp_path_factory.getbasetemp() / "wheel-tests-rattler-cache"
    return make_env(tmp_path / "env", cache, [python_channel.packages["python"]])


def env_python(prefix: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prefix / "bin" / "python", "-I", "-c", code], capture_output=True, text=True, check=False, timeout=60
    )


def site_packages(prefix: Path) -> Path:
    return next((prefix / "lib").glob("python3.*/site-packages"))


def test_wheel_installs_into_the_environment_python(python_env: Path, python_channel: Channel) -> None:
    wheel = python_channel.wheels["fixture-wheel"]
    names = install_wheels(python_env, [wheel], reporter=Reporter())

    assert names == ["fixture-wheel"]
    result = env_python(python_env, "import fixture_wheel, sys; print(fixture_wheel.VALUE, sys.prefix)")
    assert result.stdout.split() == ["42", str(python_env)], result.stderr
    script = python_env / "bin" / "fixture-wheel"
    assert script.read_text().startswith(f"#!{python_env}/bin/python")
    run = subprocess.run([script], capture_output=True, text=True, check=True, timeout=60)
    assert run.stdout == "fixture-wheel says hi\n"

    dist_info = site_packages(python_env) / "fixture_wheel-1.0.dist-info"
    assert (dist_info / "INSTALLER").read_text() == f"{INSTALLER_NAME}\n"
    record = (dist_info / "RECORD").read_text()
    assert "fixture_wheel/__init__.py,sha256=" in record
    assert "../../../bin/fixture-wheel,sha256=" in record  # console script recorded, relative to site


def test_bytecode_is_compiled_by_the_environment_python(python_env: Path, python_channel: Channel) -> None:
    install_wheels(python_env, [python_channel.wheels["fixture-wheel"]], reporter=Reporter())

    tag = env_python(python_env, "import sys; print(sys.implementation.cache_tag)").stdout.strip()
    pyc = site_packages(python_env) / "fixture_wheel" / "__pycache__" / f"cli.{tag}.pyc"
    assert pyc.is_file()
    # the header's magic number is the environment interpreter's own
    magic = env_python(python_env, "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())").stdout
    assert pyc.read_bytes()[:4].hex() == magic.strip()


def test_several_wheels_with_data_and_progress(python_env: Path, tmp_path: Path) -> None:
    first = build_wheel(tmp_path / "w", "first-dist", "2.0", {"first/__init__.py": "A = 1\n"})
    second = build_wheel(
        tmp_path / "w", "second.dist", "0.1", {"second_mod.py": "from first import A\nB = A + 1\n"}
    )

    class Counting(Reporter):
        def __init__(self) -> None:
            self.totals: list[float | None] = []

        def task(self, description: str, total: float | None, unit: str = "pkg"):  # type: ignore[no-untyped-def]
            self.totals.append(total)
            return super().task(description, total, unit)

    reporter = Counting()
    assert install_wheels(python_env, [first, second], reporter=reporter) == ["first-dist", "second.dist"]
    assert reporter.totals == [2]
    assert env_python(python_env, "import second_mod; print(second_mod.B)").stdout == "2\n"


def test_no_python_in_the_environment(tmp_path: Path, sample_channel: Channel) -> None:
    prefix = make_env(tmp_path / "env", tmp_path / "cache", [sample_channel.packages["noarch-data"]])
    with pytest.raises(PackError, match="the pack has wheels but the environment has no Python") as info:
        install_wheels(prefix, [sample_channel.wheels["fixture-wheel"]], reporter=Reporter())
    assert info.value.hint


def test_no_wheels_needs_no_python(tmp_path: Path) -> None:
    assert install_wheels(tmp_path, [], reporter=Reporter()) == []


def _tampered(source: Path, target: Path) -> Path:
    """The same wheel with one module changed after RECORD was written."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            if item.filename.endswith("__init__.py"):
                data = b"VALUE = 666\n"
            copy.writestr(item, data)
    return target


@pytest.mark.parametrize("damage", ["not-a-zip", "tampered"], ids=["not-a-zip", "tampered"])
def test_broken_wheel_is_named(
    python_env: Path, python_channel: Channel, tmp_path: Path, damage: str
) -> None:
    name = "fixture_wheel-1.0-py3-none-any.whl"
    if damage == "not-a-zip":
        wheel = tmp_path / name
        wheel.write_bytes(b"<html>401 Unauthorized</html>")
    else:
        wheel = _tampered(python_channel.wheels["fixture-wheel"], tmp_path / name)
    with pytest.raises(PackError, match=f"broken wheel {name}"):
        install_wheels(python_env, [wheel], reporter=Reporter())
    assert not (site_packages(python_env) / "fixture_wheel").exists()


def _hex_record(source: Path, target: Path, *, change: bytes | None = None) -> Path:
    """``source`` with RECORD digests in hex, as uv_build < 0.8.13 wrote them (astral-sh/uv#15398).

    ``change`` replaces the package's ``__init__.py`` after RECORD was written (a tampered file).
    """
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                rows = [row.split(",") for row in data.decode().splitlines()]
                for row in rows:
                    if row[1]:
                        raw = base64.urlsafe_b64decode(row[1].removeprefix("sha256=") + "=")
                        row[1] = f"sha256={raw.hex()}"
                data = "".join(",".join(row) + "\n" for row in rows).encode()
            elif change is not None and item.filename.endswith("__init__.py"):
                data = change
            copy.writestr(item, data)
    return target


def test_wheel_with_hex_record_digests_installs(python_env: Path, tmp_path: Path) -> None:
    """pip, uv and pixi-unpack install such wheels (real ones on PyPI: bidict 0.24.0, vrplib 2.0.0)."""
    built = build_wheel(tmp_path / "w", "hexdist", "1.0", {"hexdist/__init__.py": "VALUE = 7\n"})
    wheel = _hex_record(built, tmp_path / built.name)
    assert ",sha256=" + hashlib.sha256(b"VALUE = 7\n").hexdigest() + "," in (
        zipfile.ZipFile(wheel).read("hexdist-1.0.dist-info/RECORD").decode()
    )

    assert check_wheel(wheel) == "hexdist"
    assert install_wheels(python_env, [wheel], reporter=Reporter()) == ["hexdist"]
    assert env_python(python_env, "import hexdist; print(hexdist.VALUE)").stdout == "7\n"


def test_wheel_with_a_wrong_hex_record_digest_is_refused(python_env: Path, tmp_path: Path) -> None:
    built = build_wheel(tmp_path / "w", "hexdist", "1.0", {"hexdist/__init__.py": "VALUE = 7\n"})
    wheel = _hex_record(built, tmp_path / built.name, change=b"VALUE = 8\n")  # same size, other bytes
    message = (
        r"broken wheel hexdist-1\.0-py3-none-any\.whl: "
        r"hash / size of hexdist/__init__\.py didn't match RECORD"
    )
    with pytest.raises(PackError, match=message):
        check_wheel(wheel)
    with pytest.raises(PackError, match=message):
        install_wheels(python_env, [wheel], reporter=Reporter())
    assert not (site_packages(python_env) / "hexdist").exists()


def test_wheel_of_a_distribution_the_environment_has(python_env: Path, tmp_path: Path) -> None:
    """The same distribution from conda and PyPI is refused instead of silently mixed."""
    original = build_wheel(tmp_path / "a", "dup-dist", "1.0", {"dup/__init__.py": "X = 1\n"})
    newer = build_wheel(tmp_path / "b", "dup_dist", "2.0", {"dup/__init__.py": "X = 2\n"})
    install_wheels(python_env, [original], reporter=Reporter())
    with pytest.raises(PackError, match="installs dup_dist, which the environment already has"):
        install_wheels(python_env, [newer], reporter=Reporter())
    assert env_python(python_env, "import dup; print(dup.X)").stdout == "1\n"


def test_wheel_overwriting_a_conda_file(python_env: Path, tmp_path: Path) -> None:
    """A file a conda package put in site-packages is never overwritten by a wheel."""
    (site_packages(python_env) / "owned.py").write_text("OWNER = 'conda'\n")
    wheel = build_wheel(tmp_path / "w", "intruder", "1.0", {"owned.py": "OWNER = 'wheel'\n"})
    with pytest.raises(PackError, match=r"wheel intruder-1\.0-py3-none-any\.whl would overwrite .*owned\.py"):
        install_wheels(python_env, [wheel], reporter=Reporter())
    assert env_python(python_env, "import owned; print(owned.OWNER)").stdout == "conda\n"


def _wheel_named(target: Path, project_name: str) -> Path:
    """A well-formed wheel (RECORD right) whose METADATA Name is ``project_name``, with a header."""
    files = {
        "evil-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {project_name}\nVersion: 1.0\n",
        "evil-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        "evil-1.0.data/headers/pwned.h": "/* outside */\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("evil-1.0.dist-info/RECORD,,")
    files["evil-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(target, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return target


def test_a_wheel_named_like_a_path_is_refused(python_env: Path, tmp_path: Path) -> None:
    """Name: /abs/path would put the wheel's headers outside the environment (os.path.join)."""
    outside = tmp_path / "outside"
    wheel = _wheel_named(tmp_path / "evil-1.0-py3-none-any.whl", str(outside))
    with pytest.raises(
        PackError, match=r"broken wheel evil-1.0-py3-none-any.whl: its project name .* is not valid"
    ):
        check_wheel(wheel)
    with pytest.raises(PackError, match="is not valid"):
        install_wheels(python_env, [wheel], reporter=Reporter())
    assert not outside.exists()
