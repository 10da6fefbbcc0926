"""The lock file source: pixi.lock (or a conda-lock file) -> one environment and platform.

Everything here reads the lock through py-rattler, so every lock format pixi has written (v1-v7)
and conda-lock files are understood the same way pixi does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from conda_pixi_pack.artifacts import Artifact
from conda_pixi_pack.errors import PackError, first_line
from conda_pixi_pack.format import NOARCH, PYPI_DIR, WHEEL_SUFFIX
from conda_pixi_pack.pack.sources import LockedConda, LockedEnvironment, LockedWheel, conda_lock
from conda_pixi_pack.progress import Reporter, plural

if TYPE_CHECKING:
    from rattler import LockFile
    from rattler.lock import Environment, LockPlatform
    from rattler.lock.package import CondaLockedBinaryPackage, PypiLockedPackage

#: File name of the lock that pixi writes beside its manifest.
LOCK_NAME: Final = "pixi.lock"
#: Manifest names looked for in a directory, in pixi's order of preference.
MANIFEST_NAMES: Final = ("pixi.toml", "pyproject.toml")
#: Suffixes of a lock file given directly instead of a manifest: ``*.lock`` and conda-lock's
#: ``*.yml``/``*.yaml`` under any name (``myenv.conda-lock.yml``; py-rattler reads that format too).
LOCK_SUFFIXES: Final = (".lock", ".yml", ".yaml")
#: Top-level sections every lock of each kind has.
REQUIRED_KEYS: Final = {
    "pixi": ("version", "environments", "packages"),
    "conda-lock": ("version", "metadata", "package"),
}
#: URL schemes handed to rattler's client as they are (everything else is a local path).
REMOTE_SCHEMES: Final = ("http", "https", "s3", "oci", "gcs")
#: pixi marks direct URL requirements (``pkg @ https://…``) with this prefix in the lock.
DIRECT_PREFIX: Final = "direct+"


@dataclass(frozen=True)
class LockSource:
    """A pixi lock (found beside ``manifest``, or ``manifest`` itself) or a conda-lock file."""

    #: ``pixi.toml``, ``pyproject.toml``, a folder holding one, or a lock file itself.
    manifest: Path = field(default_factory=Path.cwd)
    environment: str = "default"
    #: Skip PyPI entries that are not wheels (with a warning) instead of refusing them.
    ignore_pypi_non_wheel: bool = False
    #: conda-lock categories to take (``main``, ``dev``, extras); empty: ``main``, as
    #: ``conda-lock install`` does. Refused for pixi locks, which have environments instead.
    categories: tuple[str, ...] = ()

    def load(self, platform: str | None, reporter: Reporter) -> LockedEnvironment:
        """The lock's environment for ``platform``; source packages are listed, for ``--inject``."""
        env = load(
            self.manifest,
            self.environment,
            platform,
            ignore_pypi_non_wheel=self.ignore_pypi_non_wheel,
            reporter=reporter,
            allow_source_packages=True,
        )
        return self._in_categories(env, reporter)

    def _in_categories(self, env: LockedEnvironment, reporter: Reporter) -> LockedEnvironment:
        """Only the packages of the chosen conda-lock categories."""
        lock_path = env.inputs[0][0]
        text = lock_path.read_text(encoding="utf-8", errors="replace")
        if not conda_lock.is_conda_lock(text):
            if self.categories:
                raise PackError(
                    f"--category applies to conda-lock files; {lock_path} is a pixi lock",
                    "choose one of its environments with -e/--environment",
                )
            return env
        wanted = self.categories or conda_lock.DEFAULT_CATEGORIES
        conda_names = conda_lock.selected_names(lock_path, text, "conda", env.platform, wanted)
        pip_names = conda_lock.selected_names(lock_path, text, "pip", env.platform, wanted)
        conda = [c for c in env.conda if c.record["name"] in conda_names]
        wheels = [w for w in env.wheels if w.name in pip_names]
        left = len(env.conda) + len(env.wheels) - len(conda) - len(wheels)
        if left:
            others = f"other categories than {', '.join(wanted)}"
            reporter.info(f"Leaving out {plural(left, 'package')} of {others}")
        return replace(env, conda=conda, wheels=wheels)


def load(
    manifest: Path,
    environment: str,
    platform: str | None,
    *,
    ignore_pypi_non_wheel: bool = False,
    reporter: Reporter | None = None,
    allow_source_packages: bool = False,
) -> LockedEnvironment:
    """Find the lock beside ``manifest`` and select one environment/platform; raises PackError.

    ``allow_source_packages`` lets the caller replace source packages by ``--inject``-ed builds:
    they are then listed in ``source_packages`` instead of stopping the pack.
    """
    reporter = reporter or Reporter()
    lock_path = find_lock(manifest)
    lock = _read_lock(lock_path)
    env = _environment(lock, environment, lock_path)
    lock_platform = _platform(env, environment, platform)
    conda, wheels, sources, non_wheels = _split(env.packages(lock_platform) or [], lock_path.parent)
    if sources and not allow_source_packages:
        raise PackError(
            f"the lock has source packages that must be built first: {', '.join(sources)}",
            "build each into a .conda file (for example with `pixi build`) and add it with `--inject FILE`",
        )
    if non_wheels:
        if not ignore_pypi_non_wheel:
            raise PackError(
                f"the lock has PyPI packages that are not wheels: {', '.join(non_wheels)}",
                "build wheels for them, or leave them out with `--ignore-pypi-non-wheel`",
            )
        for entry in non_wheels:
            reporter.warn(f"skipping PyPI package that is not a wheel: {entry}")
    return LockedEnvironment(
        platform=lock_platform.name,
        conda=conda,
        wheels=wheels,
        source_packages=tuple(s.split(" ", 1)[0] for s in sources),
        inputs=_inputs(Path(manifest), lock_path),
    )


def _split(
    packages: list[Any], lock_dir: Path
) -> tuple[list[LockedConda], list[LockedWheel], list[str], list[str]]:
    """The lock's packages by kind: conda packages, wheels, and labels of source packages and of
    PyPI entries that are not wheels."""
    conda: list[LockedConda] = []
    wheels: list[LockedWheel] = []
    sources: list[str] = []
    non_wheels: list[str] = []
    for package in packages:
        kind = type(package).__name__
        if kind == "CondaLockedSourcePackage":
            sources.append(f"{package.name} ({package.location})")
        elif kind == "CondaLockedBinaryPackage":
            conda.append(_conda(package, lock_dir))
        else:
            wheel = _wheel(package, lock_dir)
            if wheel is None:
                non_wheels.append(f"{package.name} ({package.location})")
            else:
                wheels.append(wheel)
    return conda, wheels, sources, non_wheels


def _inputs(manifest: Path, lock_path: Path) -> tuple[tuple[Path, str], ...]:
    """The lock and the manifest(s) it was found by: a pack must never be written over them."""
    inputs = [(lock_path, "the lock file")]
    if manifest.is_dir():
        found = [manifest / name for name in MANIFEST_NAMES]
        inputs += [(path, "the manifest") for path in found if path.is_file()]
    else:
        inputs.append((manifest, "the manifest"))
    return tuple(inputs)


def find_lock(manifest: Path) -> Path:
    """The lock that belongs to ``manifest``: the ``pixi.lock`` beside a manifest or in a folder,
    or a lock file given directly (``*.lock``, ``*.yml``, ``*.yaml``)."""
    manifest = Path(manifest)
    if not manifest.exists():
        raise PackError(
            f"manifest {manifest} does not exist",
            "give a pixi.toml, a pyproject.toml, the folder holding one, or a lock file",
        )
    if manifest.is_dir():
        lock_path = manifest / LOCK_NAME
        described = next(
            (str(manifest / name) for name in MANIFEST_NAMES if (manifest / name).is_file()), str(manifest)
        )
    elif manifest.suffix.lower() in LOCK_SUFFIXES:
        lock_path, described = manifest, str(manifest)
    else:
        lock_path, described = manifest.parent / LOCK_NAME, str(manifest)
    if not lock_path.is_file():
        raise PackError(f"no {LOCK_NAME} beside {described}", "run `pixi lock` to create it")
    return lock_path


def _read_lock(lock_path: Path) -> LockFile:
    from rattler import LockFile

    try:
        return LockFile.from_path(lock_path)
    except Exception as exc:  # rattler raises ParseCondaLockError, IoError, ValueError…
        if _looks_like_environment_file(lock_path):
            raise PackError(
                f"{lock_path} is a conda environment file, not a lock file",
                "give the project folder, whose pixi.lock is packed, or a pixi or conda-lock lock file",
            ) from exc
        pixi = lock_path.suffix.lower() == ".lock"
        tool = "pixi lock" if pixi else "conda-lock"
        problem = _diagnosis(lock_path, pixi) or "it cannot be parsed"
        raise PackError(
            f"{lock_path} is not a valid lock file: {problem} (rattler: {first_line(exc)})",
            f"regenerate it with `{tool}`",
        ) from exc


def _diagnosis(path: Path, pixi: bool) -> str | None:
    """What is wrong with a lock at the top, in the lock format's own terms, where its text shows
    it: a required section missing, or given as a plain value instead of a list or mapping."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    keys = [line.split(":", 1) for line in lines if re.match(r"[A-Za-z_]+:", line)]
    top = {key: value.strip() for key, value in keys}
    # pixi's locks before version 4 had conda-lock's sections
    modern = pixi and not re.fullmatch(r"[123]", top.get("version", "").strip("'\""))
    required = REQUIRED_KEYS["pixi" if modern else "conda-lock"]
    missing = [key for key in required if key not in top]
    if missing:
        return f"it has no `{missing[0]}` section"
    plain = [key for key in required if key != "version" and top[key] and top[key][0] not in "[{"]
    if plain:
        return f"its `{plain[0]}` is a plain value ({top[plain[0]][:40]}), not a list or mapping"
    return None


def _looks_like_environment_file(path: Path) -> bool:
    """An ``environment.yml`` (a top-level ``dependencies:`` and no lock keys), read as text: it
    lists specs, not locked packages, and rattler's "missing field" message would not say so."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    keys = {line.split(":", 1)[0] for line in lines if line[:1].isalpha() and ":" in line}
    return "dependencies" in keys and not keys & {"version", "metadata", "package", "environments"}


def _environment(lock: LockFile, name: str, lock_path: Path) -> Environment:
    env = lock.environment(name)
    if env is None:
        known = ", ".join(sorted(n for n, _ in lock.environments())) or "none"
        raise PackError(
            f"environment {name!r} is not in {lock_path} (it has: {known})",
            "choose one with `-e/--environment`",
        )
    return env


def _platform(env: Environment, environment: str, platform: str | None) -> LockPlatform:
    if platform is None:
        from rattler import Subdir

        platform = str(Subdir.current())
    platforms = env.platforms()
    for candidate in platforms:
        if candidate.name == platform:
            return candidate
    known = ", ".join(sorted(p.name for p in platforms)) or "none"
    raise PackError(
        f"platform {platform} is not locked for environment {environment!r} (locked: {known})",
        "choose one with `-p/--platform`, or add it to the manifest and run `pixi lock`",
    )


def _conda(package: CondaLockedBinaryPackage, lock_dir: Path) -> LockedConda:
    location = package.location
    url = _artifact_url(location, lock_dir)
    if _is_url(location):
        record = package.repo_data_record()
        channel: str | None = record.channel
    else:
        # rattler cannot build a RepoDataRecord from a relative path ("The path is not an absolute
        # path"): rebuild it from the package record and the resolved file URL.
        from rattler import RepoDataRecord

        file_name = _plain_name(PurePosixPath(location.replace("\\", "/")).name, location)
        folder = url.rsplit("/", 1)[0]
        package_record = package.package_record
        if package_record is None:  # only source packages lack one
            raise PackError(f"the lock has no record for {package.name} ({location})", "run `pixi lock`")
        channel_url = folder.rsplit("/", 1)[0] if folder.endswith("/" + package_record.subdir) else folder
        record = RepoDataRecord(package_record, file_name, url, channel_url + "/")
        channel = None
    data = json.loads(record.to_json())
    file_name = _plain_name(record.file_name, location)
    subdir = record.subdir or (NOARCH if not record.noarch.none else _url_subdir(location))
    sha256 = record.sha256.hex() if record.sha256 else None
    md5 = record.md5.hex() if record.md5 else None
    label = f"{record.name.source} {record.version} {record.build}"
    artifact = Artifact(
        url=url,
        file_name=file_name,
        sha256=sha256,
        md5=md5,
        size=record.size,
        relative_path=f"{subdir}/{file_name}",
        label=label,
    )
    return LockedConda(
        record=data, subdir=subdir, file_name=file_name, url=location, channel=channel, artifact=artifact
    )


def _wheel(package: PypiLockedPackage, lock_dir: Path) -> LockedWheel | None:
    """The wheel of a PyPI entry, or None when it is an sdist, a git URL or a source folder."""
    location = package.location
    if location.startswith(DIRECT_PREFIX):
        location = location[len(DIRECT_PREFIX) :]
    if _is_url(location):
        parts = urlsplit(location)
        if "+" in parts.scheme:  # git+https://…, hg+…: a checkout, never a wheel
            return None
        name = unquote(PurePosixPath(parts.path).name)
    else:
        name = PurePosixPath(location.replace("\\", "/")).name
    if not name.endswith(WHEEL_SUFFIX):
        return None
    file_name = _plain_name(name, location)
    sha256, md5 = _pypi_hashes(package)
    artifact = Artifact(
        url=_artifact_url(location, lock_dir),
        file_name=file_name,
        sha256=sha256,
        md5=md5,
        size=None,
        relative_path=f"{PYPI_DIR}/{file_name}",
        label=f"{package.name} {package.version} (wheel)",
    )
    return LockedWheel(name=package.name, version=package.version, file_name=file_name, artifact=artifact)


def _pypi_hashes(package: PypiLockedPackage) -> tuple[str | None, str | None]:
    # py-rattler wraps a missing hash (path and direct-URL wheels) in a PackageHashes around None,
    # whose properties then raise AttributeError instead of returning None.
    try:
        hashes = package.hashes
        sha256, md5 = hashes.sha256, hashes.md5
    except AttributeError:
        return None, None
    return (sha256.hex() if sha256 else None, md5.hex() if md5 else None)


def _is_url(location: str) -> bool:
    scheme = urlsplit(location).scheme.lower()
    return scheme in REMOTE_SCHEMES or scheme == "file" or "+" in scheme


def _artifact_url(location: str, lock_dir: Path) -> str:
    """A URL rattler's client or our local copier understands; paths are relative to the lock."""
    if _is_url(location):
        return location
    path = Path(location)
    if not path.is_absolute():
        path = lock_dir / path
    return path.resolve().as_uri()


def _url_subdir(location: str) -> str:
    return PurePosixPath(urlsplit(location).path).parent.name or NOARCH


def _plain_name(name: str, location: str) -> str:
    """A file name that cannot escape the pack's folders, whatever the lock says."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise PackError(f"the lock names an unusable file {name!r} for {location}", "run `pixi lock` again")
    return name
