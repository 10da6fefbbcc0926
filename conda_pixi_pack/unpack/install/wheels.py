"""Wheels from the pack's ``pypi/`` folder, installed into the environment's own Python.

The pypa ``installer`` library does the installing (the environment needs no pip, nothing goes to
the network): the install scheme comes from the environment's interpreter, console scripts point at
it, ``INSTALLER`` says ``conda-pixi-pack`` and ``RECORD`` is written. Bytecode is compiled by the
environment's interpreter too (see :func:`_compile`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from email.parser import HeaderParser
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.records import RecordEntry
from installer.sources import WheelFile

from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from installer.scripts import LauncherKind
    from installer.utils import Scheme

    from conda_pixi_pack.progress import Reporter

#: Content of each installed distribution's ``INSTALLER`` file (PEP 376: the tool that did it).
INSTALLER_NAME: Final = "conda-pixi-pack"

#: Asks the environment's interpreter for its install scheme and version tag.
_SCHEME_SCRIPT: Final = (
    "import json, sys, sysconfig; "
    "print(json.dumps({'paths': sysconfig.get_paths(), 'tag': sys.implementation.cache_tag}))"
)

#: Seconds allowed for the environment's interpreter to report its scheme / compile a wheel.
_TIMEOUT: Final = 600


#: PEP 508 project names: the name also names folders (headers, dist-info), so nothing else goes.
_VALID_NAME: Final = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


def check_wheel(wheel: Path | IO[bytes], label: str | None = None) -> str:
    """Open ``wheel`` (a path, or a seekable file object named ``label``), check every file
    against its RECORD and its project name; returns the name.

    A wheel comes from someone else's pack: a tampered file, or a ``Name:`` that is a path
    (``/etc/x`` would put the headers outside the environment), is refused before anything is
    installed.
    """
    name_shown = label or getattr(wheel, "name", str(wheel))
    try:
        with _open_wheel(wheel, name_shown) as source:
            source.validate_record(validate_contents=False)  # names listed, RECORD well-formed
            _check_contents(source)
            name = _distribution_name(source.read_dist_info("METADATA")) or source.distribution
    except (zipfile.BadZipFile, ValueError, KeyError, OSError) as exc:
        # installer raises ValueError subclasses for a malformed or tampered wheel
        raise PackError(f"broken wheel {name_shown}: {_problem(exc)}", "re-create the pack") from None
    if not _VALID_NAME.match(name):
        raise PackError(
            f"broken wheel {name_shown}: its project name {name!r} is not valid", "re-create the pack"
        )
    return name


@contextmanager
def _open_wheel(wheel: Path | IO[bytes], name: str) -> Iterator[WheelFile]:
    """installer's reader over a path, or over a file object (installer takes the distribution's
    name and version from the zip's file name, so it gets ``name``)."""
    if isinstance(wheel, Path):
        with WheelFile.open(wheel) as source:
            yield source
        return
    with zipfile.ZipFile(wheel) as archive:
        archive.filename = name
        yield WheelFile(archive)


def _check_contents(source: WheelFile) -> None:
    """Check every file's size and digest against RECORD, accepting hex digests too.

    installer's ``validate_record()`` only compares urlsafe base64 digests (the standard), but
    uv_build before 0.8.13 wrote hex ones (astral-sh/uv#15398, e.g. bidict 0.24.0 on PyPI), which
    pip, uv and pixi-unpack install: such a wheel is not broken, a digest matching neither form is.
    """
    for elements, stream, _ in source.get_contents():
        record = RecordEntry.from_elements(*elements)
        if record.hash_ is None:  # RECORD itself and signatures: validate_record() checked them
            continue
        hasher = hashlib.new(record.hash_.name)
        size = 0
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
        digest = hasher.digest()
        urlsafe = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
        if size != record.size or record.hash_.value not in (urlsafe, digest.hex(), digest.hex().upper()):
            raise ValueError(f"hash / size of {record.path} didn't match RECORD")


def install_wheels(
    prefix: Path, wheels: list[Path], *, reporter: Reporter, checked: bool = False
) -> list[str]:
    """Install ``wheels`` into the environment at ``prefix``; returns the distribution names.

    ``checked`` says :func:`check_wheel` already passed for every wheel (unpack validates the
    whole pack before writing anything), so large wheels are not hashed twice.

    Raises PackError when there is no Python in the environment, a wheel is broken, or a wheel
    would overwrite a file that is already there: the environment is fresh, so such a file belongs
    to a conda package (or an earlier wheel) providing the same distribution, and letting either
    win would leave a package manager with a wrong picture of the environment.
    """
    if not wheels:
        return []
    prefix = Path(prefix).absolute()
    python = environment_python(prefix)
    if python is None:
        raise PackError(
            f"the pack has wheels but the environment has no Python ({len(wheels)} wheel(s) in pypi/)",
            "add python to the locked environment, or pack without the PyPI packages",
        )
    paths = _scheme(python)
    installed: list[str] = []
    task = reporter.task("Installing wheels", total=len(wheels))
    try:
        for wheel in wheels:
            installed.append(_install_one(wheel, python, paths, checked=checked))
            reporter.debug(f"installed wheel {wheel.name}")
            task.advance()
    finally:
        task.done()
    return installed


def _install_one(wheel: Path, python: Path, paths: dict[str, str], *, checked: bool) -> str:
    """Install one wheel with the environment's scheme and compile it; returns its project name."""
    name = check_wheel(wheel) if not checked else None
    try:
        with WheelFile.open(wheel) as source:
            if name is None:
                name = _distribution_name(source.read_dist_info("METADATA")) or source.distribution
                if not _VALID_NAME.match(name):
                    raise ValueError(f"its project name {name!r} is not valid")
            _refuse_installed(name, paths, wheel)
            destination = _Destination(
                scheme_dict={
                    "purelib": paths["purelib"],
                    "platlib": paths["platlib"],
                    "headers": os.path.join(paths["include"], _normalize(name)),
                    "scripts": paths["scripts"],
                    "data": paths["data"],
                },
                interpreter=str(python),
                script_kind=_script_kind(),
            )
            install(source, destination, {"INSTALLER": f"{INSTALLER_NAME}\n".encode()})
    except FileExistsError as exc:
        raise PackError(
            f"wheel {wheel.name} would overwrite {exc.filename or str(exc).split(': ', 1)[-1]}, "
            "which a conda package of the environment installed",
            "lock the distribution either as a conda package or as a PyPI package, not both",
        ) from None
    except (zipfile.BadZipFile, ValueError, KeyError, OSError) as exc:
        # installer raises ValueError subclasses for a malformed or tampered wheel
        raise PackError(f"broken wheel {wheel.name}: {_problem(exc)}", "re-create the pack") from None
    _compile(python, destination.modules, wheel)
    return name


class _Destination(SchemeDictionaryDestination):
    """installer's scheme destination, remembering the ``.py`` files it wrote (for compileall)."""

    modules: tuple[str, ...] = ()

    def finalize_installation(
        self, scheme: Scheme, record_file_path: str, records: Iterable[tuple[Scheme, RecordEntry]]
    ) -> None:
        records = list(records)
        self.modules = tuple(
            str(self._path_with_destdir(where, record.path))
            for where, record in records
            if record.path.endswith(".py") and where in ("purelib", "platlib")
        )
        super().finalize_installation(scheme, record_file_path, records)


def environment_python(prefix: Path) -> Path | None:
    """The interpreter of the environment at ``prefix`` (conda's layout), or None."""
    candidates = (
        [prefix / "python.exe"]
        if sys.platform == "win32"
        else [prefix / "bin" / "python", prefix / "bin" / "python3"]
    )
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def _run_python(
    python: Path, args: list[str], *, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the environment's interpreter isolated (``-I``): no PYTHONPATH, no user site of ours."""
    return subprocess.run(
        [str(python), "-I", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )


def _scheme(python: Path) -> dict[str, str]:
    """``sysconfig.get_paths()`` of the environment's interpreter (not of the one running us)."""
    try:
        result = _run_python(python, ["-c", _SCHEME_SCRIPT])
    except (OSError, subprocess.SubprocessError) as exc:
        raise PackError(f"the environment's Python ({python}) cannot run: {exc}") from None
    if result.returncode != 0:
        detail = _first_line(result.stderr) or f"exit code {result.returncode}"
        raise PackError(f"the environment's Python ({python}) cannot run: {detail}")
    return json.loads(result.stdout)["paths"]


def _compile(python: Path, files: Sequence[str], wheel: Path) -> None:
    """Byte-compile the wheel's modules with the environment's interpreter.

    installer's ``bytecode_optimization_levels`` would compile with the interpreter running this
    tool, whose magic number (and cache tag) may differ from the environment's Python: the files
    would be ignored at best, so the environment's own ``compileall`` does it.
    """
    if not files:
        return
    result = _run_python(python, ["-m", "compileall", "-q", "-i", "-"], stdin="\n".join(files) + "\n")
    if result.returncode != 0:
        detail = _first_line(result.stdout) or _first_line(result.stderr)
        raise PackError(
            f"wheel {wheel.name} contains modules the environment's Python cannot compile: {detail}"
        )


def _refuse_installed(name: str, paths: dict[str, str], wheel: Path) -> None:
    """Refuse a wheel whose distribution is already installed (by a conda package, usually)."""
    wanted = _normalize(name)
    for folder in {paths["purelib"], paths["platlib"]}:
        try:
            entries = os.listdir(folder)
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.endswith(".dist-info") and _normalize(entry.split("-", 1)[0]) == wanted:
                raise PackError(
                    f"wheel {wheel.name} installs {name}, which the environment already has ({entry})",
                    "lock the distribution either as a conda package or as a PyPI package, not both",
                )


def _distribution_name(metadata: str) -> str | None:
    return HeaderParser().parsestr(metadata).get("Name")


def _normalize(name: str) -> str:
    """PEP 503 normalised name, in the ``_`` form used by dist-info folders."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _script_kind() -> LauncherKind:
    """installer's launcher kind: shebang scripts on POSIX, the matching .exe launcher on Windows."""
    if sys.platform != "win32":
        return "posix"
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "win-arm64"
    return "win-amd64" if machine.endswith("64") else "win-ia32"


def _problem(exc: BaseException) -> str:
    """installer's message in one line, without the temporary path it was read from."""
    text = _first_line(exc).strip("[]'\"")
    return re.sub(r"In \S+?\.whl, ", "", text)


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""
