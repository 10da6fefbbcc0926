"""Every shell example of README.md, run for real where it can run offline, so the README cannot rot.

The README's fenced ``bash`` blocks are read when the tests are collected; each non-empty line,
without its trailing ``# comment``, is one example (other blocks are not commands). :data:`EXAMPLES`
classifies every example by its exact text: :class:`Run` (how its sandbox is prepared and what a
user would check afterwards) or :class:`Skip` (why it cannot run here). An example added to the
README without a classification, or a classified one gone from it, fails
``test_every_example_is_classified``; there is one test case per example, skips with their reason.

How an example runs:

- **As written**, with ``bash -c`` (``set -o pipefail``, so ``cat … |`` fails if either side does),
  in the test's ``work`` folder (its cwd) with nothing on stdin. The one change to the text is
  :data:`MAPPED`: the absolute target ``/opt`` becomes ``<tmp>/opt``, so nothing is written to this
  machine's ``/opt``; any other absolute path fails the test instead. ``HOME`` is ``<tmp>/home``
  (``~/.cache/packs``) and ``TMPDIR`` ``<tmp>/tmp``.
- **Programs.** PATH starts with ``<tmp>/bin``, which holds ``conda-pixi-pack`` (``exec python -m
  conda_pixi_pack "$@"``, this checkout first on PYTHONPATH) and ``conda``. Where conda is
  importable, that ``conda`` is real conda (``python -m conda "$@"``), so ``conda pixi-pack …`` goes
  through the plugin and conda's own parser and error handler, and every example gets the
  ``conda_env`` fixture's settings (own package cache, envs dir and condarc, offline). Elsewhere it
  is a stand-in that takes only ``conda pixi-pack …`` and runs ``python -m conda_pixi_pack …``, the
  parser the plugin builds; examples that need conda itself (``-n myenv``) are marked ``conda``.
- **The network** is the sample channel served by ``channel_server``; the example with
  ``--auth-file creds.json`` packs from a ``make_server`` that demands the credentials the file
  holds. ``micromamba-2.3.0-0.conda`` is ``tests/support/unpacker.py``'s stand-in micromamba package
  (conda-forge is not reachable) under the README's file name; only its name and subdir matter to
  ``--unpacker-source``, and the test runs the script it makes.
- ``environment.tar`` and ``environment.sh`` (``--create-executable``), where an example reads them,
  are made once per module by this tool's ``pack`` and copied into each test's folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import pytest

from tests.conftest import conda_importable
from tests.support.channel import record_for, write_lock, write_project
from tests.support.unpacker import CHECKOUT, fake_micromamba

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.conftest import Channel
    from tests.support.server import ChannelServer

README: Final = CHECKOUT / "README.md"
#: The standalone command, with this checkout's code.
CLI: Final = [sys.executable, "-m", "conda_pixi_pack"]
#: Absolute paths of the examples that are moved under the test's folder (see the module doc).
MAPPED: Final = ("/opt",)
#: An absolute path in a command: a ``/`` that does not continue a word, a URL, ``~`` or a variable.
ABSOLUTE: Final = re.compile(r"""(?<![\w.$}:/~-])/[\w.@%+-][\w.@%+/-]*""")
#: A fence line of a Markdown code block, with its language (empty for a bare fence).
FENCE: Final = re.compile(r"^\s*```(\S*)\s*$")
#: The packages of ``./pixi.lock``, of ``environment.tar`` and of every pack made from them.
PACKAGES: Final = ("activated", "alpha", "beta", "prefixed")
#: The ``prod`` environment of ``path/to/project`` (its ``default`` has only alpha and beta).
PROD: Final = ("alpha", "beta", "noarch-data", "prefixed")
#: ``myenv.conda-lock.yml``: package -> category (``docs`` must stay out of the dry run).
CATEGORIES: Final = {"alpha": "main", "beta": "main", "activated": "dev", "prefixed": "docs"}
#: The credentials of ``creds.json``.
USER, PASSWORD = "me", "secret"
ON_LINUX_64: Final = sys.platform == "linux" and os.uname().machine == "x86_64"


# -- the README's examples ------------------------------------------------------------------------


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` that starts a word, outside quotes)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def readme_examples(text: str) -> list[str]:
    """Every command of the ``bash`` blocks, in order, once each."""
    found: list[str] = []
    language: str | None = None
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence:
            language = fence.group(1) if language is None else None
        elif language == "bash":
            command = strip_comment(line).strip()
            if command and command not in found:
                found.append(command)
    return found


# -- a test's folders -----------------------------------------------------------------------------


def rewrite(command: str, machine: Path) -> str:
    """``command`` with every :data:`MAPPED` path moved under ``machine``; any other absolute path
    fails the test before anything runs."""

    def one(match: re.Match[str]) -> str:
        path = match.group(0)
        assert any(path == top or path.startswith(f"{top}/") for top in MAPPED), (
            f"{path} in {command!r} would be written on this machine: add it to MAPPED"
        )
        return shlex.quote(f"{machine}{path}")

    return ABSOLUTE.sub(one, command)


@dataclass(frozen=True)
class Made:
    """Packs made once per module by this tool, copied into the tests that read them."""

    tar: Path
    sh: Path


@dataclass
class Sandbox:
    """A test's folders (``machine`` stands for this machine's ``/``, ``work`` is the cwd), the
    environment the example runs with, and the fixtures its setup uses."""

    machine: Path
    env: dict[str, str]
    made: Made
    channel: Channel
    make_project: Callable[..., Path]
    make_server: Callable[[Path], ChannelServer]
    #: The sample channel's server (``channel_server``).
    server_url: str
    #: What the tree held just before the example ran (for "wrote nothing").
    before: list[str] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.machine / "work"

    @property
    def home(self) -> Path:
        return self.machine / "home"

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """The example through bash, as a user types it (see the module doc)."""
        return subprocess.run(
            ["bash", "-c", f"set -o pipefail\n{rewrite(command, self.machine)}"],
            cwd=self.work, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip

    def tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        """This tool run directly (setup and checks), in ``work`` with the example's environment."""
        done = subprocess.run(
            [*CLI, *args], cwd=self.work, env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return done

    def inspect(self, pack: str | Path) -> dict[str, Any]:
        """What ``inspect --json`` says about a pack."""
        report: dict[str, Any] = json.loads(self.tool("inspect", str(pack), "--json").stdout)
        return report

    def tree(self) -> list[str]:
        """Every path below ``machine`` but the temporary folder (its processes' scratch space)."""
        return sorted(
            p.relative_to(self.machine).as_posix()
            for p in self.machine.rglob("*")
            if p.relative_to(self.machine).parts[0] != "tmp"
        )


def package_names(report: dict[str, Any]) -> list[str]:
    return sorted(p["name"] for p in report["packages"])


# -- setups: what an example finds in its folder --------------------------------------------------


def pixi_project(box: Sandbox) -> None:
    """``./pixi.toml`` + ``./pixi.lock`` (environment ``default``, linux-64)."""
    box.make_project(list(PACKAGES), directory=box.work)


def prod_project(box: Sandbox) -> None:
    """``path/to/project`` with environments ``default`` and ``prod``."""
    project = box.work / "path" / "to" / "project"
    project.mkdir(parents=True)
    box.make_project(["alpha", "beta"], extra={"prod": list(PROD)}, directory=project)


def authenticated_project(box: Sandbox) -> None:
    """``./pixi.toml`` + ``./pixi.lock`` served only with the credentials in ``creds.json``, and
    ``pixi-config.toml``; ``~/.cache/packs`` does not exist yet (``--use-cache`` makes it)."""
    server = box.make_server(box.channel.root)
    server.require_auth(USER, PASSWORD)
    box.make_project(list(PACKAGES), server=server, directory=box.work)
    server.write_auth_file(box.work / "creds.json", USER, PASSWORD)
    (box.work / "pixi-config.toml").write_text("[concurrency]\ndownloads = 2\n")


def micromamba_package(box: Sandbox) -> None:
    """``./pixi.toml`` + ``./pixi.lock`` and ``micromamba-2.3.0-0.conda`` (the stand-in)."""
    pixi_project(box)
    package, _ = fake_micromamba(box.machine / "unpacker")
    shutil.copyfile(package, box.work / "micromamba-2.3.0-0.conda")


def installed_myenv(box: Sandbox) -> None:
    """The conda environment ``myenv``: ``environment.tar`` unpacked into conda's envs dir."""
    prefix = Path(box.env["CONDA_ENVS_DIRS"]) / "myenv"
    box.tool("unpack", str(box.made.tar), "-p", str(prefix), "-o", str(box.machine / "setup"),
             "--installer", "rattler", "-q")  # fmt: skip


def spec_file(box: Sandbox) -> None:
    """``spec-file.txt`` as conda 26's ``conda list --explicit --sha256`` writes it (``<url>#<sha256>``
    lines after its header), with the server's URLs."""
    lines = [
        "# This file may be used to create an environment using:",
        "# $ conda create --name <env> --file <this file>",
        "# platform: linux-64",
        "@EXPLICIT",
    ]
    for name in PACKAGES:
        record = record_for(box.channel.packages[name], package_url(box, name))
        lines.append(f"{record.url}#{record.sha256.hex()}")  # type: ignore[union-attr]
    (box.work / "spec-file.txt").write_text("\n".join(lines) + "\n")


def conda_lock_file(box: Sandbox) -> None:
    """``myenv.conda-lock.yml``: a conda-lock (format 1) file with categories main, dev and docs."""
    base = box.server_url
    lines = [
        "version: 1",
        "metadata:",
        "  content_hash:",
        f"    linux-64: {'0' * 64}",
        "  channels:",
        f"  - url: {base}",
        "    used_env_vars: []",
        "  platforms:",
        "  - linux-64",
        "  sources:",
        "  - environment.yml",
        "package:",
    ]
    for name, category in CATEGORIES.items():
        record = record_for(box.channel.packages[name], package_url(box, name))
        depends = [spec.partition(" ") for spec in record.depends]
        lines += [
            f"- name: {name}",
            f"  version: '{record.version}'",
            "  manager: conda",
            "  platform: linux-64",
            "  dependencies:" + ("" if depends else " {}"),
            *(f"    {dep}: '{constraint}'" for dep, _, constraint in depends),
            f"  url: {record.url}",
            "  hash:",
            f"    md5: {record.md5.hex()}",  # type: ignore[union-attr]
            f"    sha256: {record.sha256.hex()}",  # type: ignore[union-attr]
            f"  category: {category}",
            "  optional: false",
        ]
    (box.work / "myenv.conda-lock.yml").write_text("\n".join(lines) + "\n")


def package_url(box: Sandbox, name: str) -> str:
    return f"{box.server_url}/{box.channel.relpath(name)}"


def environment_tar(box: Sandbox) -> None:
    """``./environment.tar`` (made by ``pack`` from ``./pixi.lock``)."""
    shutil.copyfile(box.made.tar, box.work / "environment.tar")


def environment_sh(box: Sandbox) -> None:
    """``./environment.sh`` (made by ``pack --create-executable``)."""
    shutil.copy2(box.made.sh, box.work / "environment.sh")


# -- checks: what a user looks at afterwards ------------------------------------------------------

#: A check: the sandbox after the example ran, and how it ran.
Check: TypeAlias = "Callable[[Sandbox, subprocess.CompletedProcess[str]], None]"


def packed(file: str, names: tuple[str, ...] = PACKAGES) -> Check:
    """Check that the pack ``file`` is for linux-64 (the lock's, and this machine's) and holds
    ``names``."""

    def check(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
        report = box.inspect(box.work / file)
        assert report["platform"] == "linux-64" and package_names(report) == list(names)

    return check


def packed_prod(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    packed("prod-linux.tar", PROD)(box, done)
    assert not (box.work / "environment.tar").exists()


def packed_with_cache_and_credentials(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    packed("environment.tar")(box, done)  # every download needed the credentials of creds.json
    cache = box.home / ".cache" / "packs"
    assert (cache / "CACHEDIR.TAG").is_file()
    assert sorted(p.name for p in (cache / "linux-64").iterdir() if not p.name.startswith(".")) == sorted(
        box.channel.packages[name].name for name in PACKAGES
    )


def packed_executable(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    script = box.work / "environment.sh"
    assert script.stat().st_mode & 0o777 == 0o755
    assert script.read_bytes().startswith(b"#!/bin/sh\n")
    assert package_names(box.inspect(script)) == list(PACKAGES)
    # and it installs itself with the embedded installer, nothing else on PATH
    installed = subprocess.run(
        ["sh", "environment.sh", "-o", "installed"], cwd=box.work, env={**box.env, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert "micromamba (embedded)" in installed.stderr
    assert (box.work / "installed" / "env" / "conda-meta").is_dir()
    assert (box.work / "installed" / "activate.sh").is_file()


def planned_categories(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    for name, category in CATEGORIES.items():
        file = box.channel.relpath(name)
        assert (file in done.stdout) == (category in ("main", "dev")), (name, done.stdout)
    assert "Dry run: would pack 3 conda packages" in done.stderr
    assert box.tree() == box.before, "a dry run writes nothing"


def unpacked_here(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    prefix = box.work / "env"
    assert (prefix / "conda-meta").is_dir()
    assert (box.work / "activate.sh").is_file()
    activated = subprocess.run(
        ["bash", "-c", 'source ./activate.sh && echo "$FIXTURE_ACTIVATED" && prefixed'], cwd=box.work,
        env=box.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert activated.returncode == 0, activated.stderr
    assert activated.stdout.split() == ["yes", str(prefix)]  # activate.d ran, prefix replaced


def unpacked_named(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    prefix = Path(box.env["CONDA_ENVS_DIRS"]) / "myenv"
    assert sorted(p.name.split("-")[0] for p in (prefix / "conda-meta").glob("*.json")) == list(PACKAGES)
    listed = subprocess.run(
        [sys.executable, "-m", "conda", "env", "list", "--json"], cwd=box.work, env=box.env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert str(prefix) in json.loads(listed.stdout)["envs"]  # so `conda activate myenv` finds it


def unpacked_fish(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    prefix = box.machine / "opt" / "envs" / "app"
    assert (prefix / "conda-meta").is_dir()
    assert f"into {prefix} with rattler" in done.stderr
    script = box.work / "activate.fish"
    assert str(prefix) in script.read_text()
    assert not (box.work / "activate.sh").exists() and not (box.work / "env").exists()


def unpacked_from_stdin(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    opt = box.machine / "opt"
    assert (opt / "env" / "conda-meta").is_dir()
    assert str(opt / "env") in (opt / "activate.sh").read_text()


def inspected(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    assert "for linux-64" in done.stdout
    for name in PACKAGES:
        spec = box.channel.specs[name]
        assert re.search(rf"^{name}\s+{re.escape(spec.version)}\s+{spec.build}\s", done.stdout, re.M), name
    assert "Unpack with:" in done.stdout


def verified(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    inspected(box, done)
    assert "Verified:   every package matches its size and checksum" in done.stdout


def inspected_json(box: Sandbox, done: subprocess.CompletedProcess[str]) -> None:
    report = json.loads(done.stdout)
    assert report["platform"] == "linux-64" and package_names(report) == list(PACKAGES)


# -- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Run the example in a folder prepared by ``setup``, then ``check`` what it did."""

    id: str
    setup: tuple[Callable[[Sandbox], None], ...]
    check: Check
    #: Needs conda itself (not only the parser the plugin builds).
    conda: bool = False
    #: Why it does not work as written (a strict xfail: fix the README or the code, then drop it).
    broken: str | None = None


@dataclass(frozen=True)
class Skip:
    """Cannot run here, and why."""

    id: str
    reason: str


MAKE: Final = (
    "a make target CI runs itself (.ci/run runs `make test` and `make demo`); here it would pip-install "
    "a fresh venv and, for `make test`, run this suite inside itself"
)
DOCKER: Final = "needs docker (no container engine here); tests/test_docker_example.py runs the Dockerfile"
PIXI: Final = "needs pixi and the conda-forge channel (not reachable here)"

#: Every example of the README, by its exact text (see the module doc).
EXAMPLES: Final[dict[str, Run | Skip]] = {
    "make demo": Skip("make-demo", MAKE),
    "make test": Skip("make-test", MAKE),
    "conda pixi-pack pack": Run("pack", (pixi_project,), packed("environment.tar")),
    "conda pixi-pack pack path/to/project -e prod -p linux-64 -o prod-linux.tar": Run(
        "pack-prod", (prod_project,), packed_prod
    ),
    "conda pixi-pack pack --use-cache ~/.cache/packs --auth-file creds.json --config pixi-config.toml": Run(
        "pack-cache-auth-config", (authenticated_project,), packed_with_cache_and_credentials
    ),
    "conda pixi-pack pack -o - | ssh airgapped 'conda pixi-pack unpack - -o /opt'": Skip(
        "pack-stdout-ssh", "needs ssh and a real remote host (`airgapped`)"
    ),
    "conda pixi-pack pack --create-executable --unpacker-source micromamba-2.3.0-0.conda": Run(
        "pack-executable", (micromamba_package,), packed_executable
    ),
    "conda pixi-pack pack -n myenv -o myenv.tar": Run(
        "pack-named-env", (installed_myenv,), packed("myenv.tar"), conda=True
    ),
    "conda pixi-pack pack --from-explicit spec-file.txt": Run(
        "pack-explicit", (spec_file,), packed("environment.tar")
    ),
    "conda pixi-pack pack myenv.conda-lock.yml --category main --category dev --dry-run": Run(
        "pack-conda-lock-dry-run", (conda_lock_file,), planned_categories
    ),
    "conda pixi-pack unpack": Run("unpack", (environment_tar,), unpacked_here),
    "conda pixi-pack unpack environment.tar -n myenv": Run(
        "unpack-named-env", (environment_tar,), unpacked_named, conda=True
    ),
    "conda pixi-pack unpack environment.tar -p /opt/envs/app --installer rattler -s fish": Run(
        "unpack-prefix-fish", (environment_tar,), unpacked_fish
    ),
    "cat environment.tar | conda-pixi-pack unpack - -o /opt": Run(
        "unpack-stdin", (environment_tar,), unpacked_from_stdin
    ),
    "conda pixi-pack inspect environment.tar": Run("inspect", (environment_tar,), inspected),
    "conda-pixi-pack inspect environment.sh --verify": Run("inspect-verify-sh", (environment_sh,), verified),
    "cat environment.tar | conda-pixi-pack inspect - --json": Run(
        "inspect-stdin-json", (environment_tar,), inspected_json
    ),
    "docker build -f examples/docker/Dockerfile -t conda-pixi-pack-demo .": Skip("docker-build", DOCKER),
    "docker run --rm conda-pixi-pack-demo": Skip("docker-run", DOCKER),
    "rattler-build build --recipe recipe/recipe.yaml -c conda-forge": Skip(
        "rattler-build",
        "needs rattler-build and the conda-forge channel (not reachable here); "
        "tests/test_recipe.py checks the recipe",
    ),
    "pixi run test": Skip("pixi-run-test", PIXI),
    "pixi run lint": Skip("pixi-run-lint", PIXI),
    "pixi run -e py310 test": Skip("pixi-run-py310-test", PIXI),
}


def cases() -> list[Any]:
    """One test case per README example, skips and expected failures marked with their reason."""
    return list(_cases())


def _cases() -> Iterator[Any]:
    for command in readme_examples(README.read_text()):
        example = EXAMPLES.get(command)
        if example is None:
            yield pytest.param(command, id=re.sub(r"\W+", "-", command).strip("-"))
        elif isinstance(example, Skip):
            yield pytest.param(command, id=example.id, marks=pytest.mark.skip(reason=example.reason))
        else:
            marks = [
                pytest.mark.skipif(not ON_LINUX_64, reason="the fixture packages are built for linux-64")
            ]
            if example.conda:
                marks.append(pytest.mark.conda)
            if example.broken:
                marks.append(pytest.mark.xfail(strict=True, reason=example.broken))
            yield pytest.param(command, id=example.id, marks=marks)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(
    tmp_path_factory: pytest.TempPathFactory, sample_channel: Channel, channel_server: ChannelServer
) -> Made:
    """``environment.tar`` and ``environment.sh`` of :data:`PACKAGES`, packed from the server."""
    folder = tmp_path_factory.mktemp("readme-packs")
    records = [
        record_for(path, f"{channel_server.url}/{sample_channel.relpath(name)}", channel=channel_server.url)
        for name, path in sample_channel.packages.items()
        if name in PACKAGES
    ]
    write_lock(folder / "pixi.lock", records, channel=channel_server.url)
    write_project(folder, channels=[channel_server.url])
    env = {**os.environ, "PYTHONPATH": python_path(), "CONDA_PKGS_DIRS": str(folder / "pkgs")}
    for extra in ([], ["--create-executable"]):
        done = subprocess.run(
            [*CLI, "pack", str(folder), "-p", "linux-64", "-q", *extra], cwd=folder, env=env,
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return Made(folder / "environment.tar", folder / "environment.sh")


def python_path() -> str:
    """PYTHONPATH with this checkout first, so that every process runs the code under test."""
    return os.pathsep.join([str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])])


def programs(folder: Path) -> Path:
    """``<folder>/bin`` with ``conda-pixi-pack`` and ``conda`` (see the module doc)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    python, path = shlex.quote(sys.executable), shlex.quote(python_path())
    head = f'#!/bin/sh\nexport PYTHONPATH={path}"${{PYTHONPATH:+:$PYTHONPATH}}"\n'
    if conda_importable():
        conda = f'{head}exec {python} -m conda "$@"\n'
    else:
        conda = (
            f"{head}# conda is not importable here: a stand-in that knows only `conda pixi-pack ...`\n"
            '[ "$1" = pixi-pack ] || { echo "stand-in conda: only conda pixi-pack" >&2; exit 127; }\n'
            f'shift\nexec {python} -m conda_pixi_pack "$@"\n'
        )
    tool = f'{head}exec {python} -m conda_pixi_pack "$@"\n'
    for name, text in (("conda-pixi-pack", tool), ("conda", conda)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.fixture
def sandbox(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    made: Made,
    sample_channel: Channel,
    channel_server: ChannelServer,
    make_project: Callable[..., Path],
    make_server: Callable[[Path], ChannelServer],
) -> Sandbox:
    """Empty ``work``, ``home`` and ``tmp`` folders, the programs, and the example's environment."""
    for name in ("work", "home", "tmp"):
        (tmp_path / name).mkdir()
    env = dict(request.getfixturevalue("conda_env") if conda_importable() else os.environ)
    env.update(
        PATH=f"{programs(tmp_path)}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=python_path(),
        HOME=str(tmp_path / "home"),
        TMPDIR=str(tmp_path / "tmp"),
        NO_PROXY="127.0.0.1,localhost",
    )
    return Sandbox(tmp_path, env, made, sample_channel, make_project, make_server, channel_server.url)


# -- the tests ------------------------------------------------------------------------------------


def test_every_example_is_classified() -> None:
    """The table and the README name the same examples, so none runs unchecked or rots unseen."""
    found = readme_examples(README.read_text())
    unclassified = [c for c in found if c not in EXAMPLES]
    gone = [c for c in EXAMPLES if c not in found]
    assert not unclassified, (
        f"README examples without a classification: {unclassified}; add each to EXAMPLES in "
        "tests/test_readme.py, as Run (with the setup it needs and a check) or Skip (with the reason)"
    )
    assert not gone, (
        f"classified examples no longer in the README: {gone}; remove them from EXAMPLES in "
        "tests/test_readme.py (or fix the README if they were dropped by mistake)"
    )


def test_the_parser_reads_commands_only() -> None:
    """Trailing comments go, quoted ``#`` and pipes stay, and only ``bash`` blocks count."""
    text = "\n".join([
        "```bash", "a --x 'b # c' | d   # comment", "# whole-line comment", "", "```",
        "```", "not a command", "```", "   ```json", "   {}", "   ```", "```bash", "e#f", "```",
    ])  # fmt: skip
    assert readme_examples(text) == ["a --x 'b # c' | d", "e#f"]


@pytest.mark.parametrize("command", cases())
def test_example(command: str, sandbox: Sandbox) -> None:
    """The example runs as written in its prepared folder, exits 0 and does what it says."""
    example = EXAMPLES.get(command)
    assert example is not None, f"{command!r} is not classified: see test_every_example_is_classified"
    assert isinstance(example, Run)
    for setup in example.setup:
        setup(sandbox)
    sandbox.before = sandbox.tree()
    done = sandbox.run(command)
    assert done.returncode == 0, f"{command} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    example.check(sandbox, done)


def test_absolute_paths_never_reach_this_machine(tmp_path: Path) -> None:
    """``/opt`` moves under the test's folder; any other absolute path is refused before it runs."""
    assert rewrite("unpack - -o /opt", tmp_path) == f"unpack - -o {tmp_path}/opt"
    assert rewrite("x ~/.cache/packs path/to/y /opt/envs/app", tmp_path) == (
        f"x ~/.cache/packs path/to/y {tmp_path}/opt/envs/app"
    )
    with pytest.raises(AssertionError, match="/etc/x .* would be written on this machine"):
        rewrite("unpack -p /etc/x", tmp_path)
