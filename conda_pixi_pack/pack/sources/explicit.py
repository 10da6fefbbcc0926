"""The ``@EXPLICIT`` list source: ``conda list --explicit --sha256`` or ``conda-lock --kind
explicit`` output -> the packages it names, exactly.

Each line after ``@EXPLICIT`` is a package URL (or a path, relative to the list), optionally
followed by ``#<md5>``, ``#<sha256>`` or ``#sha256:<sha256>``, as conda reads them. A URL says
the package's name, version, build and subdir but not its dependencies: the rest of its record
is read from the archive's own ``info/index.json`` once it is fetched (``record_from_archive``),
as conda does when it installs such a list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

from conda_pixi_pack.artifacts import Artifact
from conda_pixi_pack.errors import PackError, plain_reason
from conda_pixi_pack.format import CONDA_SUFFIX, EXPLICIT_MARKER, NOARCH, TAR_BZ2_SUFFIX, current_platform
from conda_pixi_pack.pack.sources import LockedConda, LockedEnvironment

if TYPE_CHECKING:
    from conda_pixi_pack.progress import Reporter

#: A package line: the location, its file name, and an optional checksum after ``#``.
LINE: Final = re.compile(r"(?P<location>.*?(?P<file>[^/\\#]+))(?:#(?P<checksum>.*))?")
#: The platform conda and conda-lock write into the list's header.
PLATFORM_LINE: Final = re.compile(r"#\s*platform:\s*(\S+)")
#: How to make a list.
HINT: Final = "make one with `conda list --explicit --sha256 -n ENV` or `conda-lock render --kind explicit`"


@dataclass(frozen=True)
class ExplicitSource:
    """An ``@EXPLICIT`` list file."""

    path: Path

    def load(self, platform: str | None, reporter: Reporter) -> LockedEnvironment:
        """Every package of the list, for the one platform it is for."""
        lines = self._lines()
        declared = next((m.group(1) for line in lines if (m := PLATFORM_LINE.fullmatch(line))), None)
        try:
            start = lines.index(EXPLICIT_MARKER) + 1
        except ValueError:
            raise PackError(
                f"{self.path} is not an @EXPLICIT list: it has no line {EXPLICIT_MARKER}", HINT
            ) from None
        conda = [
            self._package(number, line)
            for number, line in enumerate(lines[start:], start + 1)
            if line and not line.startswith("#")
        ]
        own = _platform(self.path, conda, declared)
        if platform is not None and platform != own:
            raise PackError(
                f"{self.path} lists packages for {own}, not {platform}",
                f"drop --platform, or give a list for {platform}",
            )
        for item in conda:
            if not (item.artifact.sha256 or item.artifact.md5):
                reporter.warn(
                    f"{item.file_name} has no checksum in {self.path.name}: it is packed as downloaded"
                )
        return LockedEnvironment(
            platform=own, conda=conda, wheels=[], inputs=((self.path, "the explicit list"),)
        )

    def _lines(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PackError(f"explicit list {self.path} does not exist", HINT) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PackError(f"cannot read {self.path}: {plain_reason(exc)}", HINT) from None
        return [line.strip() for line in text.splitlines()]

    def _package(self, number: int, line: str) -> LockedConda:
        where = f"{self.path.name}, line {number}"
        match = LINE.fullmatch(line)
        file_name = unquote(match.group("file")) if match is not None else ""
        if match is None or not file_name.endswith((CONDA_SUFFIX, TAR_BZ2_SUFFIX)):
            raise PackError(f"{where}: {line!r} names no package file (.conda or .tar.bz2)", HINT)
        location, checksum = match.group("location"), match.group("checksum")
        sha256, md5 = _checksum(checksum, where)
        url = location if "://" in location else (self.path.parent / location).resolve().as_uri()
        subdir = PurePosixPath(urlsplit(url).path).parent.name or NOARCH
        name, version, build = _name_version_build(file_name, where)
        record = {"name": name, "version": version, "build": build, "subdir": subdir}
        record |= {k: v for k, v in (("sha256", sha256), ("md5", md5)) if v}
        artifact = Artifact(
            url=url, file_name=file_name, sha256=sha256, md5=md5, size=None,
            relative_path=f"{subdir}/{file_name}", label=f"{name} {version} {build}",
        )  # fmt: skip
        channel = url.rsplit("/", 2)[0] if url.count("/") > 3 else None
        return LockedConda(
            record=record, subdir=subdir, file_name=file_name, url=url, channel=channel, artifact=artifact,
            record_from_archive=True,
        )  # fmt: skip


def _checksum(text: str | None, where: str) -> tuple[str | None, str | None]:
    """(sha256, md5) of a line's ``#...`` part; anything but a checksum is an error."""
    if text is None or text == "":
        return None, None
    value = text.lower().removeprefix("sha256:")
    if re.fullmatch(r"[0-9a-f]{64}", value):
        return value, None
    if re.fullmatch(r"[0-9a-f]{32}", value) and not text.lower().startswith("sha256:"):
        return None, value
    raise PackError(f"{where}: #{text} is not an md5 or sha256 checksum", HINT)


def _name_version_build(file_name: str, where: str) -> tuple[str, str, str]:
    stem = file_name.removesuffix(CONDA_SUFFIX).removesuffix(TAR_BZ2_SUFFIX)
    parts = stem.rsplit("-", 2)
    if len(parts) != 3 or not all(parts):
        raise PackError(f"{where}: {file_name} is not named <name>-<version>-<build>", HINT)
    return parts[0], parts[1], parts[2]


def _platform(path: Path, conda: list[LockedConda], declared: str | None) -> str:
    """The one platform of the list: its non-noarch packages', or its header's."""
    subdirs = {item.subdir for item in conda if item.subdir != NOARCH}
    if len(subdirs) > 1:
        raise PackError(
            f"{path} mixes packages of {', '.join(sorted(subdirs))}: a pack is for one platform",
            "give one list per platform",
        )
    found = subdirs.pop() if subdirs else None
    if found and declared and found != declared:
        raise PackError(f"{path} says it is for {declared} but lists packages of {found}", HINT)
    return found or declared or current_platform()
