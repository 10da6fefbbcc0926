"""``recipe/recipe.yaml`` against ``pyproject.toml``, so the conda package and the PyPI package
cannot drift apart: the recipe is rendered with py-rattler-build (as rattler-build does before a
build) and what the rendered recipe says is compared with the project's metadata. Its script test,
which no channel here lets rattler-build run, is run as rattler-build would run it.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest
import rattler
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from rattler_build import Stage0Recipe

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT: Final = Path(__file__).resolve().parents[1]
RECIPE: Final = ROOT / "recipe" / "recipe.yaml"
#: PyPI name -> conda-forge name, where they differ.
CONDA_NAMES: Final = {"installer": "python-installer"}
#: The run requirements that are not PyPI dependencies of the project.
CONDA_ONLY: Final = {"python", "conda"}
#: The console script under test (installed beside this interpreter).
TOOL: Final = shutil.which("conda-pixi-pack", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def written() -> dict[str, Any]:
    """The recipe as written (before its templates are rendered)."""
    return Stage0Recipe.from_file(RECIPE).to_dict()


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """The recipe as rattler-build sees it: one variant (noarch), templates rendered."""
    [variant] = Stage0Recipe.from_file(RECIPE).render()
    assert variant.variant == {"target_platform": "noarch"}
    return variant.recipe.to_dict()


def run_requirements(rendered: dict[str, Any]) -> dict[str, str | None]:
    """Package name -> version spec of the rendered run requirements, read as conda reads them."""
    specs = [rattler.MatchSpec(text) for text in rendered["requirements"]["run"]]
    return {spec.name.normalized: spec.version for spec in specs if spec.name is not None}


def bounds(spec: str) -> tuple[Version | None, Version | None]:
    """(lowest allowed, first excluded) of a ``>=A,<B`` spec, which PEP 440 and conda read alike;
    any other form fails, so that a new one is compared deliberately."""
    low = high = None
    for clause in filter(None, (part.strip() for part in spec.split(","))):
        match = re.fullmatch(r"(>=|<)\s*(\d[\w.]*)", clause)
        assert match, f"{spec!r}: only >= and < bounds are compared here"
        if match.group(1) == ">=":
            low = Version(match.group(2))
        else:
            high = Version(match.group(2))
    return low, high


def within(inner: str, outer: str) -> bool:
    """Whether every version ``inner`` allows, ``outer`` allows too."""
    (inner_low, inner_high), (outer_low, outer_high) = bounds(inner), bounds(outer)
    low_ok = outer_low is None or (inner_low is not None and inner_low >= outer_low)
    high_ok = outer_high is None or (inner_high is not None and inner_high <= outer_high)
    return low_ok and high_ok


def allows(spec: str, version: str) -> bool:
    low, high = bounds(spec)
    return (low is None or Version(version) >= low) and (high is None or Version(version) < high)


def test_name_version_and_entry_points_are_the_projects(
    rendered: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    project = pyproject["project"]
    assert rendered["package"]["name"] == project["name"]
    assert "version" not in project.get("dynamic", []), "the recipe repeats a static version"
    assert rendered["package"]["version"] == project["version"]
    assert rendered["build"]["noarch"] == "python"
    assert rendered["build"]["python"]["entry_points"] == [
        f"{name} = {target}" for name, target in project["scripts"].items()
    ]
    # conda finds the plugin through the wheel's entry point: the package must be a pip install
    assert re.search(r"-m pip install \. .*--no-deps", rendered["build"]["script"])
    assert project["entry-points"]["conda"] == {"conda-pixi-pack": "conda_pixi_pack.plugin"}
    # the sdist a feedstock builds from, in the comment: this project's file name
    sdist = f"/{project['name'].replace('-', '_')}-${{{{ version }}}}.tar.gz"
    assert sdist in RECIPE.read_text()


def test_run_requirements_are_the_projects_with_compatible_bounds(
    rendered: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    """Every runtime dependency, under its conda-forge name, with a range inside the project's,
    that admits the version the tests run with; nothing else but python and conda."""
    run = run_requirements(rendered)
    dependencies = [Requirement(text) for text in pyproject["project"]["dependencies"]]
    conda_names = {
        canonicalize_name(d.name): CONDA_NAMES.get(canonicalize_name(d.name), d.name) for d in dependencies
    }
    assert set(run) == set(conda_names.values()) | CONDA_ONLY
    for dependency in dependencies:
        name = conda_names[canonicalize_name(dependency.name)]
        spec = run[name]
        assert spec is not None, f"{name} has no bound in the recipe"
        assert within(spec, str(dependency.specifier)), f"{name} {spec} allows what {dependency} does not"
        if dependency.marker is not None and not dependency.marker.evaluate():
            continue  # e.g. tomli, needed below Python 3.11 only: not installed here
        installed = importlib.metadata.version(dependency.name)
        assert allows(spec, installed), f"the tests run with {dependency.name} {installed}, outside {spec}"
    python_min = rendered["context"]["python_min"]
    assert run["python"] == f">={python_min}"
    assert pyproject["project"]["requires-python"] == f">={python_min}"


def test_the_build_backend_is_the_projects(rendered: dict[str, Any], pyproject: dict[str, Any]) -> None:
    host = {
        spec.name.normalized: spec.version
        for spec in map(rattler.MatchSpec, rendered["requirements"]["host"])
        if spec.name is not None
    }
    [backend] = [Requirement(text) for text in pyproject["build-system"]["requires"]]
    assert host["python"] == f"{rendered['context']['python_min']}.*"
    assert "pip" in host
    assert within(host[backend.name] or "", str(backend.specifier))


def test_the_recipe_states_its_tests(written: dict[str, Any], rendered: dict[str, Any]) -> None:
    python_test, script_test = rendered["tests"]
    assert {"conda_pixi_pack.plugin", "conda_pixi_pack.cli.main"} <= set(python_test["python"]["imports"])
    assert written["tests"][0]["python"]["pip_check"] is True  # rendering drops it, being the default
    assert python_test["python"].get("pip_check", True) is True
    assert python_test["python"]["python_version"] == f"{rendered['context']['python_min']}.*"
    script = script_test["script"]
    for command in ("conda-pixi-pack --help", "conda pixi-pack --help"):
        assert command in script
    assert any(line.endswith("bash scripts/demo.sh") for line in script), "the README's first command"
    assert any("unpack" in line and "--installer conda" in line for line in script)
    assert any("unpack" in line and "--installer rattler" in line for line in script)
    for listed in script_test["files"]["source"]:
        assert (ROOT / listed).exists(), listed
    for listed in script_test["files"]["recipe"]:
        assert (RECIPE.parent / listed).is_file(), listed


def test_the_pixi_workspace_uses_the_recipes_bounds(
    rendered: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    """The contributors' workspace installs what the conda package depends on, and tests every
    supported Python from ``python_min`` on."""
    pixi = pyproject["tool"]["pixi"]
    assert pixi["workspace"]["channels"] == ["conda-forge"]
    run = run_requirements(rendered)
    assert {name: pixi["dependencies"][name] for name in pixi["dependencies"]} == {
        name: run[name] for name in pixi["dependencies"]
    }
    assert "conda" in pixi["dependencies"]
    assert pixi["pypi-dependencies"][pyproject["project"]["name"]] == {"path": ".", "editable": True}
    lowest = Version(rendered["context"]["python_min"])
    pythons = [f"3.{minor}" for minor in range(lowest.minor, 14)]
    for python in pythons:
        name = f"py{python.replace('.', '')}"
        assert pixi["feature"][name]["dependencies"] == {"python": f"{python}.*"}
        assert pixi["environments"][name] == [name, "test"]
    assert set(pixi["environments"]) == {"default"} | {f"py{p.replace('.', '')}" for p in pythons}
    tasks = pixi["feature"]["test"]["tasks"]
    assert tasks["test"] == "python -m pytest"  # what `make test` runs
    assert tasks["lint"] == " && ".join(_make_recipe("lint"))  # what `make lint` runs


def _make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target, without the venv's ``$(BIN)/`` and ``python -m``."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        commands.append(line.strip().removeprefix("$(BIN)/").removeprefix("python -m "))
    return commands


@pytest.mark.conda
def test_the_tests_run_with_a_conda_the_recipe_allows(rendered: dict[str, Any]) -> None:
    spec = run_requirements(rendered)["conda"]
    assert spec is not None
    installed = importlib.metadata.version("conda")
    assert allows(spec, installed), f"the tests run with conda {installed}, outside the recipe's {spec}"


@pytest.mark.conda
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the demo is locked for linux-64")
def test_the_script_test_passes(rendered: dict[str, Any], tmp_path: Path, conda_env: dict[str, str]) -> None:
    """The recipe's script test, run as rattler-build runs it: its lines with ``bash -e`` in a
    folder holding the files it lists, with the package's commands (``python``, ``conda``,
    ``conda-pixi-pack``: this checkout) first on PATH."""
    assert TOOL is not None, "the conda-pixi-pack console script is not installed beside this interpreter"
    [script_test] = [test for test in rendered["tests"] if "script" in test]
    work = tmp_path / "test"
    for listed in script_test["files"]["source"]:
        source, target = ROOT / listed, work / listed
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for listed in script_test["files"]["recipe"]:
        shutil.copy2(RECIPE.parent / listed, work / listed)
    commands = tmp_path / "bin"
    commands.mkdir()
    for name, line in {"python": f'exec "{sys.executable}" "$@"',
                       "conda": f'exec "{sys.executable}" -m conda "$@"'}.items():  # fmt: skip
        (commands / name).write_text(f"#!/bin/sh\n{line}\n")
        (commands / name).chmod(0o755)
    (commands / "conda-pixi-pack").symlink_to(TOOL)
    env = {**conda_env, "PATH": f"{commands}:/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        ["bash", "-e", "-c", "\n".join(script_test["script"])], cwd=work, env=env, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("ok: program on PATH, prefix placeholder replaced, activate.d script ran") == 2
    assert "(conda backend)" in done.stdout and "(rattler backend)" in done.stdout
