"""``--inject``: reading injected files and proving they fit the locked environment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conda_pixi_pack.artifacts import Artifact
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.pack import inject
from conda_pixi_pack.pack.sources.lockfile import LockedConda, LockedWheel
from conda_pixi_pack.progress import Reporter
from tests.support.packages import PackageSpec, build_package
from tests.support.reporting import Recorder
from tests.support.wheels import build_wheel

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Real packages from Quantco/pixi-pack's examples (see ../shared/fixtures/README.md).
REAL = Path(__file__).resolve().parents[2] / "../shared/fixtures/real-packages/pixi-pack-examples"
WEBSERVER = "my-webserver-0.1.0-pyh4616a5c_0"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real fixtures absent: {REAL}")


def rec(
    name: str,
    version: str,
    build: str = "0",
    *,
    depends: Sequence[str] = (),
    constrains: Sequence[str] = (),
    subdir: str = "linux-64",
) -> dict[str, Any]:
    """A repodata record as a lock holds it."""
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "subdir": subdir,
        "depends": list(depends),
        "constrains": list(constrains),
    }


def locked(record: dict[str, Any]) -> LockedConda:
    file_name = f"{record['name']}-{record['version']}-{record['build']}.conda"
    url = f"https://example.invalid/{record['subdir']}/{file_name}"
    artifact = Artifact(url, file_name, None, None, None, f"{record['subdir']}/{file_name}", record["name"])
    return LockedConda(record, record["subdir"], file_name, url, "https://example.invalid", artifact)


#: A lock in which my-webserver (python >=3.12, fastapi; constrains pydantic >=2,<3) fits.
WEB_LOCK = [
    rec("python", "3.12.4", "h0_0_cpython", depends=["__glibc >=2.17"]),
    rec("fastapi", "0.111.1", "pyhd8ed1ab_0", depends=["python >=3.8", "pydantic >=1.7.4"], subdir="noarch"),
    rec("pydantic", "2.8.2", "pyhd8ed1ab_0", depends=["python >=3.7"], subdir="noarch"),
]


@needs_real
@pytest.mark.parametrize("suffix", [".conda", ".tar.bz2"], ids=["conda", "tar-bz2"])
def test_reads_the_record_from_the_archive(suffix: str) -> None:
    path = REAL / f"{WEBSERVER}{suffix}"
    injected = inject.read_conda(path)
    assert injected.subdir == "noarch"
    assert injected.file_name == path.name
    record = injected.record
    assert (record["name"], record["version"], record["build"]) == ("my-webserver", "0.1.0", "pyh4616a5c_0")
    assert record["depends"] == ["python >=3.12", "fastapi", "python"]
    assert record["constrains"] == ["pydantic >=2,<3"]
    assert record["size"] == path.stat().st_size
    assert len(record["md5"]) == 32 and len(record["sha256"]) == 64
    assert "url" not in record and "channel" not in record


@needs_real
def test_fits() -> None:
    injected = inject.read_conda(REAL / f"{WEBSERVER}.conda")
    inject.check_fits(WEB_LOCK, [injected.record], Reporter())


@needs_real
def test_unmet_dependency_names_package_and_dependency() -> None:
    injected = inject.read_conda(REAL / "my-webserver-broken-0.1.0-pyh4616a5c_0.conda")
    with pytest.raises(PackError) as info:
        inject.check_fits(WEB_LOCK, [injected.record], Reporter())
    assert info.value.message == (
        "injected package my-webserver-broken=0.1.0=pyh4616a5c_0 does not fit the locked environment: "
        "it depends on 'fastapi >=0.112', which the environment's fastapi 0.111.1 does not satisfy"
    )


@needs_real
def test_violated_constraint_of_the_injected_package() -> None:
    lock = [*WEB_LOCK[:2], rec("pydantic", "1.10.17", "pyhd8ed1ab_0", subdir="noarch")]
    injected = inject.read_conda(REAL / f"{WEBSERVER}.conda")
    with pytest.raises(PackError, match=r"my-webserver=0.1.0=pyh4616a5c_0 does not fit") as info:
        inject.check_fits(lock, [injected.record], Reporter())
    assert "constrains 'pydantic >=2,<3', violated by pydantic=1.10.17=pyhd8ed1ab_0" in info.value.message


def test_violated_constraint_of_a_locked_package() -> None:
    lock = [rec("alpha", "1.0", depends=["beta >=1"]), rec("constrained", "1.0", constrains=["beta <2"])]
    with pytest.raises(PackError) as info:
        inject.check_fits(lock, [rec("beta", "2.0")], Reporter())
    assert info.value.message == (
        "injected package beta=2.0=0 does not fit the locked environment: "
        "constrained=1.0=0 constrains 'beta <2', violated by beta=2.0=0"
    )


def test_replacement_must_still_satisfy_locked_dependents() -> None:
    lock = [rec("alpha", "1.0", depends=["beta >=1"])]
    with pytest.raises(PackError) as info:
        inject.check_fits(lock, [rec("beta", "0.5")], Reporter())
    assert info.value.message == (
        "injected package beta=0.5=0 does not fit the locked environment: "
        "locked package alpha=1.0=0 depends on 'beta >=1'"
    )


def test_virtual_packages_and_problems_already_in_the_lock_are_not_blamed() -> None:
    # ``gamma`` is missing from the lock itself: not the injected package's fault
    lock = [rec("alpha", "1.0", depends=["beta >=1", "gamma"]), rec("beta", "1.2")]
    inject.check_fits(
        lock, [rec("extra", "1.0", depends=["__glibc >=2.17", "__unix", "beta 1.2.*"])], Reporter()
    )


def test_dependencies_between_injected_packages() -> None:
    inject.check_fits([], [rec("a", "1.0", depends=["b >=1"]), rec("b", "1.5")], Reporter())


def test_wrong_subdir_is_refused(tmp_path: Path) -> None:
    path = build_package(PackageSpec("osxonly", "1.0", "0", subdir="osx-arm64"), tmp_path)
    with pytest.raises(PackError) as info:
        inject.read_injections([path], "linux-64")
    assert info.value.message == (
        "cannot inject osxonly-1.0-0.conda: it is built for osx-arm64, the pack is for linux-64"
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "broken-1.0-0.conda",
            b"not a zip",
            "cannot inject broken-1.0-0.conda: not a readable conda package",
        ),
        (
            "broken-1.0-0.tar.bz2",
            b"not bz2",
            "cannot inject broken-1.0-0.tar.bz2: not a readable conda package",
        ),
        ("thing-1.0.tar.gz", b"sdist", "cannot inject thing-1.0.tar.gz: only .conda, .tar.bz2 and .whl"),
        ("notes.txt", b"x", "cannot inject notes.txt: only .conda, .tar.bz2 and .whl"),
        ("bad.whl", b"x", "cannot inject bad.whl: not a valid wheel file name"),
    ],
    ids=["bad-conda", "bad-tar-bz2", "sdist", "text", "bad-wheel-name"],
)
def test_bad_files_are_refused(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PackError) as info:
        inject.read_injections([path], "linux-64")
    assert info.value.message.startswith(message)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="no such file"):
        inject.read_injections([tmp_path / "nope.conda"], "linux-64")


def test_two_injected_packages_of_one_name_are_refused(tmp_path: Path) -> None:
    a = build_package(PackageSpec("twice", "1.0", "0"), tmp_path / "a")
    b = build_package(PackageSpec("twice", "2.0", "0", fmt="tar.bz2"), tmp_path / "b")
    with pytest.raises(PackError, match="another injected package is also named 'twice'"):
        inject.read_injections([a, b], "linux-64")


def test_same_name_replaces_the_locked_package(tmp_path: Path) -> None:
    path = build_package(PackageSpec("beta", "1.5", "1"), tmp_path)
    injection = inject.read_injections([path], "linux-64")
    reporter = Recorder()
    alpha, beta = locked(rec("alpha", "1.0", depends=["beta >=1"])), locked(rec("beta", "1.2"))
    kept, wheels = inject.without_replaced([alpha, beta], [], injection, reporter)
    assert kept == [alpha]
    assert wheels == []
    assert reporter.warnings == ["injected beta=1.5=1 replaces locked beta=1.2=0"]


def test_wheels_are_injected_with_a_warning(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "My_Tool", "2.0", {"my_tool/__init__.py": ""})
    injection = inject.read_injections([wheel], "linux-64")
    assert [(w.name, w.version, w.file_name) for w in injection.wheels] == [
        ("my-tool", "2.0", "my_tool-2.0-py3-none-any.whl")
    ]
    old = LockedWheel("my-tool", "1.0", "my_tool-1.0-py3-none-any.whl", locked(rec("x", "1")).artifact)
    reporter = Recorder()
    kept, wheels = inject.without_replaced([locked(rec("python", "3.12.4"))], [old], injection, reporter)
    assert len(kept) == 1 and wheels == []
    assert reporter.warnings == [
        "injected wheel replaces locked my-tool==1.0",
        "injected wheels cannot be checked against the environment: my_tool-2.0-py3-none-any.whl",
    ]


def test_wheels_need_python(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "tool", "1.0", {"tool/__init__.py": ""})
    injection = inject.read_injections([wheel], "linux-64")
    with pytest.raises(
        PackError, match="cannot inject tool-1.0-py3-none-any.whl: the environment has no python"
    ):
        inject.without_replaced([locked(rec("alpha", "1.0"))], [], injection, Reporter())


def test_copy_into_uses_the_canonical_name(tmp_path: Path) -> None:
    built = build_package(PackageSpec("renamed", "1.0", "0", subdir="noarch"), tmp_path / "src")
    odd = built.with_name("whatever.conda")
    built.rename(odd)
    injection = inject.read_injections([odd], "linux-64")
    inject.copy_into(tmp_path / "pack", "channel", "pypi", injection)
    assert (tmp_path / "pack/channel/noarch/renamed-1.0-0.conda").read_bytes() == odd.read_bytes()
