"""``examples/docker/Dockerfile``, run without a container engine, so the example cannot rot.

The Dockerfile is parsed (``ARG``, ``FROM … AS``, ``WORKDIR``, ``ENV``, ``COPY``, ``RUN``,
``ENTRYPOINT``, ``CMD``, line continuations; any other instruction fails the test, so nothing is
skipped silently), and its stages are carried out in folders that stand for each image's root:

- **Paths.** An image's ``/`` is a temporary folder. Every absolute path under :data:`MAPPED` in
  the stages' ``RUN``, ``ENV``, ``WORKDIR``, ``COPY``, ``ENTRYPOINT`` and ``CMD``, and in the
  scripts copied from ``examples/docker/``, is prefixed with that folder; nothing else in a command
  is changed. A path that is neither mapped nor one of the system's (:data:`SYSTEM_PATHS`) fails
  the test instead of touching this machine's ``/``.
- **Programs.** ``RUN`` commands run with ``sh -c`` as Docker's shell form does, with this
  machine's ``/usr/bin:/bin`` (where no installer is) as ``PATH``, and ``HOME`` and ``TMPDIR`` (the
  script's default, ``/tmp``) in the image's root; ``docker run`` is the exec-form ``ENTRYPOINT``
  with ``CMD`` (or another command) appended, with the same ``PATH``. The build stage's
  ``pip install /src`` is not run: ``/src`` is this checkout, which the test's interpreter already
  has, so its ``conda-pixi-pack`` is put in the stage's ``/usr/local/bin`` instead (with
  ``PYTHONPATH`` passed on, so it is this checkout's code).
- **The network.** The build args ``MICROMAMBA_URL`` and ``MICROMAMBA_SHA256`` are given, as
  ``docker build --build-arg`` would, as the ``file://`` URL and checksum of a ``micromamba``
  package built here (``tests/support/unpacker.py``), whose program records its arguments and
  installs the pack with this tool; conda-forge's is not reachable from tests.

The final stage then runs exactly as written: the self-extracting script installs the
environment with the embedded installer, and the entrypoint runs ``demo-greet`` from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from tests.support.unpacker import fake_micromamba

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

#: The repository: the Dockerfile's build context (``docker build -f examples/docker/Dockerfile .``).
ROOT: Final = Path(__file__).resolve().parents[1]
DOCKERFILE: Final = ROOT / "examples" / "docker" / "Dockerfile"
DOCKERIGNORE: Final = ROOT / "examples" / "docker" / "Dockerfile.dockerignore"
#: Container paths that live in the temporary root (top-level names of the image's file system).
MAPPED: Final = ("/opt", "/tmp", "/work", "/src", "/root", "/usr/local", "/entrypoint.sh")
#: Container paths that are this machine's own (the programs a bare image has too).
SYSTEM_PATHS: Final = ("/bin/", "/usr/bin/", "/dev/null")
#: The system's programs: no installer of conda packages among them (checked below).
SYSTEM_PATH: Final = "/usr/bin:/bin"
#: The instructions this test knows how to carry out.
KNOWN: Final = {"ARG", "FROM", "WORKDIR", "ENV", "COPY", "RUN", "ENTRYPOINT", "CMD"}
#: The console script under test (installed beside this interpreter).
TOOL: Final = shutil.which("conda-pixi-pack", path=str(Path(sys.executable).parent))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (sys.platform == "linux" and os.uname().machine == "x86_64"),
        reason="the demo and the fixture micromamba are linux-64",
    ),
]


# -- the Dockerfile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> Iterator[Instruction]:
    """Docker's reading of a Dockerfile: comments dropped, ``\\`` continuations joined."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, value = " ".join(part for part in pending if part).partition(" ")
        pending = []
        assert keyword.upper() in KNOWN, f"line {start}: this test cannot carry out {keyword}; teach it"
        yield Instruction(keyword.upper(), value.strip(), start)
    assert not pending, "the Dockerfile ends in a continuation"


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ``ARG`` defaults (before the first ``FROM``) and the stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"line {instruction.line}: FROM IMAGE [AS NAME]"
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {instruction.line}: only ARG may precede FROM"
            key, _, default = instruction.value.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


# -- an image's root, in a folder -----------------------------------------------------------------


#: An absolute path in a command: a `/` that does not continue a word, a URL or a variable.
ABSOLUTE: Final = re.compile(r"""(?<![\w.$}:/-])/[\w.@%+-][\w.@%+/-]*""")


class Image:
    """The file system and settings of one stage; container paths map into ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.workdir = "/"
        self.env: dict[str, str] = {}

    def host(self, path: str) -> Path:
        """Where the container path ``path`` (absolute, or relative to WORKDIR) lies here."""
        absolute = path if path.startswith("/") else f"{self.workdir.rstrip('/')}/{path}"
        if absolute == "/":
            return self.root
        assert mapped(absolute), f"{absolute} is not under {MAPPED}"
        return self.root / absolute.lstrip("/")

    def rewrite(self, text: str) -> str:
        """``text`` with every mapped absolute path moved under the root (see the module doc)."""

        def one(match: re.Match[str]) -> str:
            path = match.group(0)
            if path.startswith(SYSTEM_PATHS):
                return path
            assert mapped(path), f"{path} in {text!r} is neither mapped ({MAPPED}) nor a system path"
            return str(self.root) + path

        return ABSOLUTE.sub(one, text)

    def run(self, command: str, path: str, extra: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        """``RUN command`` (shell form): ``sh -c`` in WORKDIR with the image's settings."""
        cwd = self.host(self.workdir)
        cwd.mkdir(parents=True, exist_ok=True)
        environment = {"PATH": path, "HOME": str(self.host("/root")), "TMPDIR": str(self.host("/tmp")),
                       **self.env, **extra}  # fmt: skip
        return subprocess.run(
            ["sh", "-c", self.rewrite(command)], cwd=cwd, env=environment, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip


def mapped(path: str) -> bool:
    return any(path == top or path.startswith(f"{top}/") for top in MAPPED)


def copy(instruction: Instruction, image: Image, images: Mapping[str, Image]) -> None:
    """``COPY [--from=STAGE] [--chmod=MODE] SRC... DEST`` into ``image``.

    Sources come from the build context (this repository) or from the root of stage STAGE; text
    files from ``examples/docker/`` (the example's own scripts) get their paths mapped as well.
    """
    words = shlex.split(instruction.value)
    options = dict(word[2:].split("=", 1) for word in words if word.startswith("--"))
    assert set(options) <= {"from", "chmod"}, f"line {instruction.line}: unknown COPY option"
    *sources, destination = [word for word in words if not word.startswith("--")]
    source_image = images[options["from"]] if "from" in options else None
    for source in sources:
        origin = source_image.host(source) if source_image else ROOT / source
        assert origin.exists(), f"line {instruction.line}: {source} does not exist"
        target = image.host(destination)
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            continue
        if destination.endswith("/"):
            target = target / origin.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source_image is None and source.startswith("examples/docker/"):
            target.write_text(image.rewrite(origin.read_text()))
        else:
            shutil.copyfile(origin, target)
        if "chmod" in options:
            target.chmod(int(options["chmod"], 8))


def declare(instruction: Instruction, image: Image, global_args: Mapping[str, str]) -> None:
    """``ARG NAME[=DEFAULT]`` in a stage: the build arg, else the global default, else DEFAULT."""
    key, _, default = instruction.value.partition("=")
    image.env[key] = global_args.get(key) or default


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.value)
    assert isinstance(value, list), f"line {instruction.line}: use the exec form, a JSON list"
    return [str(item) for item in value]


def carry_out(
    instruction: Instruction,
    image: Image,
    images: Mapping[str, Image],
    args: Mapping[str, str],
    path: str,
    passed_on: Mapping[str, str],
) -> subprocess.CompletedProcess[str] | None:
    """One instruction of a stage (``path`` is its PATH); a failing ``RUN`` fails the test with its
    output."""
    if instruction.keyword == "ARG":
        declare(instruction, image, args)
    elif instruction.keyword == "ENV":
        key, _, value = instruction.value.partition("=")
        image.env[key] = image.rewrite(value.strip('"'))
    elif instruction.keyword == "WORKDIR":
        image.workdir = instruction.value
        image.host(image.workdir).mkdir(parents=True, exist_ok=True)
    elif instruction.keyword == "COPY":
        copy(instruction, image, images)
    elif instruction.keyword == "RUN":
        done = image.run(instruction.value, path, passed_on)
        assert done.returncode == 0, f"line {instruction.line}: RUN failed\n{done.stdout}\n{done.stderr}"
        return done
    return None


# -- the test -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


def test_the_final_image_is_bare_and_runs_the_environment(
    dockerfile: tuple[dict[str, str], list[Stage]], tmp_path: Path
) -> None:
    for program in ("conda", "mamba", "micromamba", "pixi", "conda-pixi-pack", "pixi-unpack"):
        if shutil.which(program, path=SYSTEM_PATH):
            pytest.skip(f"{program} is in {SYSTEM_PATH}: the final stage could use it instead of its own")
    defaults, stages = dockerfile
    build, final = stages
    assert build.name == "build" and final.image in ("debian:bookworm-slim", "ubuntu:24.04")
    package, record = fake_micromamba(tmp_path, fmt="tar.bz2")
    build_args = {
        "MICROMAMBA_URL": package.as_uri(),
        "MICROMAMBA_SHA256": hashlib.sha256(package.read_bytes()).hexdigest(),
    }
    assert set(build_args) <= set(defaults), "the build args are the Dockerfile's global ARGs"
    images = {"build": run_build_stage(build, {**defaults, **build_args}, tmp_path / "build-root")}

    # the final stage, as written
    image = images["production"] = Image(tmp_path / "final-root")
    done = [carry_out(step, image, images, defaults, SYSTEM_PATH, {}) for step in final.instructions]
    assert "Installing 2 packages with micromamba (embedded)" in "".join(d.stderr for d in done if d)
    arguments = record.read_text().splitlines()
    assert arguments[arguments.index("--prefix") + 1] == str(image.host("/opt/env"))
    assert sorted(p.name for p in image.root.iterdir()) == ["entrypoint.sh", "opt", "tmp"]
    assert sorted(p.name for p in image.host("/opt").iterdir()) == ["activate.sh", "env"]
    assert list(image.host("/tmp").iterdir()) == []  # the script and its temporary files are gone

    # `docker run IMAGE`: ENTRYPOINT + CMD
    [entrypoint], [cmd] = final.of("ENTRYPOINT"), final.of("CMD")
    output = docker_run(image, [*map(image.rewrite, exec_form(entrypoint)), *exec_form(cmd)])
    assert f"Hello! This environment lives in {image.host('/opt/env')}" in output  # prefix replaced
    assert "activate.d says: hello from etc/conda/activate.d/demo-greet.sh" in output
    # `docker run IMAGE sh -c 'command -v demo-greet'`: any command runs in the environment
    output = docker_run(
        image, [*map(image.rewrite, exec_form(entrypoint)), "sh", "-c", "command -v demo-greet"]
    )
    assert output.strip() == str(image.host("/opt/env/bin/demo-greet"))


def run_build_stage(stage: Stage, args: Mapping[str, str], root: Path) -> Image:
    """The build stage, but for the install of this checkout, whose console script is put in
    ``/usr/local/bin`` instead (see the module doc)."""
    assert TOOL is not None, "the conda-pixi-pack console script is not installed beside this interpreter"
    image = Image(root)
    local_bin = image.host("/usr/local/bin")
    local_bin.mkdir(parents=True)
    (local_bin / "conda-pixi-pack").symlink_to(TOOL)
    passed_on = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    installs = []
    for step in stage.instructions:
        if step.keyword == "RUN" and step.value.startswith("pip install"):
            installs.append(step.value)
        else:
            carry_out(step, image, {}, args, f"{local_bin}:{SYSTEM_PATH}", passed_on)
    assert installs == ["pip install --no-cache-dir /src"], "the image installs this checkout, as tested here"
    assert image.host("/work/environment.sh").read_bytes().startswith(b"#!/bin/sh\n")
    return image


def docker_run(image: Image, command: list[str]) -> str:
    """What the container prints: its command run with the image's bare environment."""
    environment = {"PATH": SYSTEM_PATH, "HOME": str(image.host("/root"))}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_build_context_sends_what_the_dockerfile_copies(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """The ``.dockerignore`` beside the Dockerfile is an allow-list: everything the stages copy
    from the context must be on it, or ``docker build`` fails where this test cannot see it."""
    lines = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "an allow-list starts by ignoring everything"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    _, stages = dockerfile
    sources = [
        word
        for stage in stages
        for instruction in stage.of("COPY")
        if "--from=" not in instruction.value
        for word in shlex.split(instruction.value)[:-1]
        if not word.startswith("--")
    ]
    assert sources, "the Dockerfile copies from its context"
    for source in sources:
        assert any(source == entry or source.startswith(f"{entry}/") for entry in allowed), source
        assert (ROOT / source).exists(), source
