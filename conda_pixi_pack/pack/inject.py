"""``--inject``: add local packages to a pack and prove they still fit the locked environment.

pixi-pack reads an injected package's record from its ``info/index.json``, appends it to the
locked records and runs rattler's ``PackageRecord::validate`` over the whole set. We do the
same check (every dependency satisfied, every ``constrains`` respected, virtual packages
skipped) with two differences, both reported in the README:

* a conda package with the **same name** as a locked one *replaces* it (pixi-pack keeps both,
  which makes pixi-unpack install two packages of one name over each other); same for wheels;
* a failure names the injected package it is about, and a problem that is already in the lock
  (not caused by an injection) is not blamed on the injection.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from conda_pixi_pack.artifacts import file_digests
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.format import CONDA_SUFFIX, NOARCH, TAR_BZ2_SUFFIX, WHEEL_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

    from rattler import PackageRecord

    from conda_pixi_pack.pack.sources import LockedConda, LockedWheel
    from conda_pixi_pack.progress import Reporter

#: Dependencies on these are provided by the system (``__glibc``, ``__unix``…), not by packages.
VIRTUAL_PREFIX: Final = "__"


@dataclass(frozen=True)
class InjectedConda:
    """A local conda package to add under ``channel/<subdir>/<file_name>``."""

    source: Path
    subdir: str
    file_name: str
    #: Repodata record read from the archive (``info/index.json`` plus size and hashes).
    record: dict[str, Any]


@dataclass(frozen=True)
class InjectedWheel:
    """A local wheel to add under ``pypi/<file_name>`` (not checked: wheels carry no solver data)."""

    source: Path
    file_name: str
    name: str
    version: str


@dataclass
class Injection:
    """Everything ``--inject`` adds, and which locked entries it replaces."""

    conda: list[InjectedConda] = field(default_factory=list)
    wheels: list[InjectedWheel] = field(default_factory=list)

    @property
    def conda_names(self) -> set[str]:
        return {str(c.record["name"]) for c in self.conda}

    @property
    def wheel_names(self) -> set[str]:
        return {normalise_wheel_name(w.name) for w in self.wheels}


def normalise_wheel_name(name: str) -> str:
    """PEP 503 name normalisation (``My_Webserver`` and ``my-webserver`` are one project)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _label(record: Mapping[str, Any]) -> str:
    return f"{record['name']}={record['version']}={record['build']}"


def archive_record(path: Path, hint: str) -> dict[str, Any]:
    """The repodata record of a local ``.conda``/``.tar.bz2`` (its ``info/index.json``, with its
    size, md5 and sha256); raises PackError, with ``hint``, if it is not a package."""
    import asyncio  # here, not at the top: ~20 ms that a pack without --inject need not pay

    from rattler import RepoDataRecord

    try:
        record_obj = asyncio.run(RepoDataRecord.from_package_archive(path))
    except Exception as exc:  # rattler raises its own exception types for every archive error
        raise PackError(f"{path.name}: not a readable conda package ({exc})", hint) from None
    record: dict[str, Any] = json.loads(record_obj.to_json())
    md5, sha256 = file_digests(path)  # rattler's reader gives sha256 but no md5
    record["md5"] = md5
    record["sha256"] = sha256
    record["size"] = path.stat().st_size
    for key in ("url", "channel"):
        record.pop(key, None)
    return record


def read_conda(path: Path) -> InjectedConda:
    """Read the record of a local ``.conda``/``.tar.bz2``; raises PackError if it is not one."""
    try:
        record = archive_record(
            path, "give a .conda or .tar.bz2 file built by conda-build, rattler-build or pixi"
        )
    except PackError as exc:
        raise PackError(f"cannot inject {exc.message}", exc.hint) from None
    suffix = CONDA_SUFFIX if path.name.endswith(CONDA_SUFFIX) else TAR_BZ2_SUFFIX
    # Stored under its canonical name whatever the local file is called: conda and
    # pixi-unpack key packages by ``name-version-build``.
    file_name = f"{record['name']}-{record['version']}-{record['build']}{suffix}"
    record["fn"] = file_name
    return InjectedConda(path, str(record["subdir"]), file_name, record)


def read_wheel(path: Path) -> InjectedWheel:
    """Name and version of a local wheel from its file name (PEP 427)."""
    from installer.utils import parse_wheel_filename

    try:
        parsed = parse_wheel_filename(path.name)
    except ValueError:
        raise PackError(
            f"cannot inject {path.name}: not a valid wheel file name",
            "wheel names look like name-version-pytag-abitag-platform.whl",
        ) from None
    return InjectedWheel(path, path.name, normalise_wheel_name(parsed.distribution), parsed.version)


def read_injections(paths: Iterable[Path], platform: str) -> Injection:
    """Classify and read every ``--inject`` file; refuses wrong subdirs, duplicates and other files."""
    injection = Injection()
    for path in paths:
        if not path.is_file():
            raise PackError(f"cannot inject {path}: no such file")
        name = path.name
        if name.endswith((CONDA_SUFFIX, TAR_BZ2_SUFFIX)):
            conda = read_conda(path)
            if conda.subdir not in (platform, NOARCH):
                raise PackError(
                    f"cannot inject {name}: it is built for {conda.subdir}, the pack is for {platform}",
                    f"inject a package built for {platform} or noarch",
                )
            if conda.record["name"] in injection.conda_names:
                raise PackError(
                    f"cannot inject {name}: another injected package is also named {conda.record['name']!r}"
                )
            injection.conda.append(conda)
        elif name.endswith(WHEEL_SUFFIX):
            wheel = read_wheel(path)
            if wheel.name in injection.wheel_names:
                raise PackError(f"cannot inject {name}: another injected wheel is also named {wheel.name!r}")
            injection.wheels.append(wheel)
        else:
            raise PackError(
                f"cannot inject {name}: only .conda, .tar.bz2 and .whl files can be injected",
                "build a conda package or a wheel from it first (source distributions are not packed)",
            )
    return injection


def _package_record(record: Mapping[str, Any]) -> PackageRecord:
    """A rattler record from a repodata dict, with every field a match spec can test.

    py-rattler builds records only from files (``from_index_json``) or fields, not from a
    repodata dict, hence this small mapping.
    """
    from rattler import BuildString, PackageRecord

    def digest(key: str) -> bytes | None:
        value = record.get(key)
        return bytes.fromhex(value) if isinstance(value, str) and value else None

    result = PackageRecord(
        name=str(record["name"]),
        version=str(record["version"]),
        build=BuildString(str(record["build"])),
        build_number=int(record.get("build_number") or 0),
        subdir=str(record.get("subdir") or NOARCH),
        depends=list(record.get("depends") or []),
        constrains=list(record.get("constrains") or []),
        md5=digest("md5"),
        sha256=digest("sha256"),
        license=record.get("license"),
    )
    return result


def check_fits(
    locked: Sequence[Mapping[str, Any]], injected: Sequence[Mapping[str, Any]], reporter: Reporter
) -> None:
    """Raise PackError unless ``locked + injected`` is a consistent environment.

    ``locked`` must already exclude the records that ``injected`` replaces. Only problems
    that involve an injected package are errors: a dependency of an injected package that
    nothing satisfies, a locked dependency no longer satisfied because its package was
    replaced, or a ``constrains`` violated by or against an injected package.
    """
    from rattler import MatchSpec

    entries = [(r, _package_record(r), False) for r in locked]
    entries += [(r, _package_record(r), True) for r in injected]
    by_name: dict[str, list[tuple[Mapping[str, Any], PackageRecord, bool]]] = {}
    for entry in entries:
        by_name.setdefault(entry[1].name.normalized, []).append(entry)
    injected_by_name = {entry[1].name.normalized: entry[0] for entry in entries if entry[2]}

    def spec_of(text: str, owner: Mapping[str, Any]) -> Any:
        try:
            return MatchSpec(text, strict=False)
        except Exception as exc:  # rattler's InvalidMatchSpecError
            raise PackError(f"package {_label(owner)} has an invalid requirement {text!r}: {exc}") from None

    for record, _, is_injected in entries:
        for dep in record.get("depends") or []:
            if dep.startswith(VIRTUAL_PREFIX):
                continue
            spec = spec_of(dep, record)
            name = spec.name.normalized if spec.name is not None else None
            if any(spec.matches(candidate) for _, candidate, _ in by_name.get(name, [])):
                continue
            if is_injected:
                raise PackError(
                    f"injected package {_label(record)} does not fit the locked environment: "
                    f"it depends on '{dep}', {_unmet(name, by_name)}",
                    "inject a build whose dependencies are in the lock, or inject them too",
                )
            if name in injected_by_name:
                raise PackError(
                    f"injected package {_label(injected_by_name[name])} does not fit the locked "
                    f"environment: locked package {_label(record)} depends on '{dep}'",
                    "inject a version that satisfies it",
                )
            reporter.debug(f"lock: {_label(record)} depends on '{dep}', not in the lock (not checked)")
        for constraint in record.get("constrains") or []:
            spec = spec_of(constraint, record)
            name = spec.name.normalized if spec.name is not None else None
            for other, candidate, other_injected in by_name.get(name, []):
                if spec.matches(candidate) or not (is_injected or other_injected):
                    continue
                culprit = record if is_injected else other
                raise PackError(
                    f"injected package {_label(culprit)} does not fit the locked environment: "
                    f"{_label(record)} constrains '{constraint}', violated by {_label(other)}",
                    "inject a version that satisfies the constraint",
                )


def _unmet(name: str | None, by_name: Mapping[str | None, Sequence[tuple[Any, Any, Any]]]) -> str:
    """Why a dependency is unmet: the package is absent, or present in another version."""
    present = [candidate for _, candidate, _ in by_name.get(name, [])]
    if not present:
        return "which is not in the environment"
    versions = ", ".join(sorted({f"{c.version}" for c in present}))
    return f"which the environment's {name} {versions} does not satisfy"


def without_replaced(
    locked: Sequence[LockedConda], wheels: Sequence[LockedWheel], injection: Injection, reporter: Reporter
) -> tuple[list[LockedConda], list[LockedWheel]]:
    """The locked packages that stay: those an injected package of the same name replaces go.

    Refuses wheels (locked or injected) without a ``python`` conda package: pixi-unpack
    needs one to install them.
    """
    replaced = injection.conda_names
    kept: list[LockedConda] = []
    for item in locked:
        name = str(item.record["name"])
        if name in replaced:
            new = next(c for c in injection.conda if c.record["name"] == name)
            reporter.warn(f"injected {_label(new.record)} replaces locked {_label(item.record)}")
        else:
            kept.append(item)
    kept_wheels: list[LockedWheel] = []
    for wheel in wheels:
        if normalise_wheel_name(wheel.name) in injection.wheel_names:
            reporter.warn(f"injected wheel replaces locked {wheel.name}=={wheel.version}")
        else:
            kept_wheels.append(wheel)
    if injection.wheels:
        names = {str(item.record["name"]) for item in kept} | replaced
        if "python" not in names:
            raise PackError(
                f"cannot inject {injection.wheels[0].file_name}: the environment has no python",
                "wheels need a python conda package in the lock",
            )
        reporter.warn(
            "injected wheels cannot be checked against the environment: "
            + ", ".join(w.file_name for w in injection.wheels)
        )
    return kept, kept_wheels


def copy_into(root: Path, channel_dir: str, pypi_dir: str, injection: Injection) -> None:
    """Copy the injected files into the staging tree ``root`` (the sources are left alone)."""
    for conda in injection.conda:
        destination = root / channel_dir / conda.subdir
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(conda.source, destination / conda.file_name)
    for wheel in injection.wheels:
        destination = root / pypi_dir
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel.source, destination / wheel.file_name)
