"""The installed-environment source: a conda prefix -> its exact packages, from ``conda-meta``.

Any environment conda, mamba, micromamba, pixi or our own ``unpack`` made keeps one JSON record per
package in ``<prefix>/conda-meta``: the package's repodata record as it was installed (dependencies,
constraints, track_features...), plus its URL, channel, checksums and size, plus what the
installation added (its files, the link it made, where the archive was cached). The pack gets the
repodata record and fetches the very archive by its URL, checked by its checksum, or takes it from
the package cache the install left it in. What cannot be packed exactly (no URL, no checksum, a
local file that is gone, a distribution pip installed whose wheel cannot be found) is listed in
:attr:`LockedEnvironment.missing`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from conda_pixi_pack.artifacts import Artifact
from conda_pixi_pack.errors import PackError, plain_reason
from conda_pixi_pack.format import NOARCH, current_platform
from conda_pixi_pack.pack.sources import LockedConda, LockedEnvironment, Missing
from conda_pixi_pack.pack.sources.pypi_installed import find_pip_installed

if TYPE_CHECKING:
    from conda_pixi_pack.progress import Reporter

#: The folder of package records in every conda environment.
CONDA_META: Final = "conda-meta"
#: What an installation adds to a package's record; the rest is the repodata record.
INSTALL_KEYS: Final = frozenset({
    "files", "paths_data", "link", "requested_spec", "requested_specs", "extracted_package_dir",
    "package_tarball_full_path", "auth", "preferred_env", "installed_by",
})  # fmt: skip
#: URLs conda writes for packages it cannot name a source of.
UNKNOWN_URLS: Final = ("", "<unknown>")


@dataclass(frozen=True)
class PrefixSource:
    """An installed conda environment, by ``prefix`` (a path) or ``name`` (resolved by conda)."""

    prefix: Path | None = None
    name: str | None = None

    def load(self, platform: str | None, reporter: Reporter) -> LockedEnvironment:
        """Every package of the environment, for its own platform only."""
        prefix = self._resolve()
        records = _records(prefix)
        own = _platform(prefix, records)
        if platform is not None and platform != own:
            raise PackError(
                f"the environment {prefix} is for {own}; only its own platform can be packed from it",
                f"drop --platform {platform}, or pack a lock file for {platform}",
            )
        conda: list[LockedConda] = []
        missing: list[Missing] = []
        for record in records:
            item = _locked(record)
            if isinstance(item, Missing):
                missing.append(item)
            else:
                conda.append(item)
        wheels, pip_missing = find_pip_installed(prefix, records, reporter)
        reporter.debug(f"{prefix}: {len(conda)} conda packages, {len(wheels)} pip-installed wheels found")
        return LockedEnvironment(
            platform=own,
            conda=conda,
            wheels=wheels,
            missing=(*missing, *pip_missing),
        )

    def _resolve(self) -> Path:
        if self.prefix is not None:
            prefix = Path(os.path.abspath(self.prefix.expanduser()))
            if not (prefix / CONDA_META).is_dir():
                what = "does not exist" if not prefix.exists() else f"has no {CONDA_META} folder"
                raise PackError(
                    f"{prefix} is not a conda environment: it {what}",
                    "give the folder of an environment (the one holding conda-meta) with --prefix",
                )
            return prefix
        assert self.name is not None
        return _prefix_of(self.name)


def _prefix_of(name: str) -> Path:
    """The prefix conda knows by ``name`` (conda is needed to look names up)."""
    try:
        from conda.base.context import context, locate_prefix_by_name
        from conda.exceptions import EnvironmentNameNotFound
    except ImportError:
        raise PackError(
            "-n/--name needs conda, which is not importable here",
            "give the environment's folder with --prefix",
        ) from None
    if not context._argparse_args:  # standalone (not under conda's CLI): read condarc as conda does
        from conda.base.context import reset_context

        reset_context()
    try:
        return Path(locate_prefix_by_name(name))
    except EnvironmentNameNotFound:
        raise PackError(
            f"conda knows no environment named {name!r}",
            "see `conda env list`, or give the folder with --prefix",
        ) from None


def _records(prefix: Path) -> list[dict[str, Any]]:
    """Every ``conda-meta/*.json`` record, by package name."""
    records = []
    for path in sorted((prefix / CONDA_META).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PackError(
                f"cannot read {path}: {plain_reason(exc)}",
                "the environment is damaged; repair it with conda first",
            ) from None
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), str) for k in ("name", "version", "build")
        ):
            raise PackError(
                f"{path} is not a package record", "the environment is damaged; repair it with conda first"
            )
        records.append(record)
    if not records:
        raise PackError(f"the environment {prefix} has no packages", "install something into it first")
    return sorted(records, key=lambda r: r["name"])


def _platform(prefix: Path, records: list[dict[str, Any]]) -> str:
    """The environment's platform: the one subdir its non-noarch packages share (this machine's
    when every package is noarch)."""
    subdirs = {str(r.get("subdir")) for r in records if r.get("subdir") and r.get("subdir") != NOARCH}
    if len(subdirs) > 1:
        raise PackError(
            f"the environment {prefix} mixes packages of {', '.join(sorted(subdirs))}",
            "repair it with conda, or pack the lock it was made from",
        )
    return subdirs.pop() if subdirs else current_platform()


def _locked(record: dict[str, Any]) -> LockedConda | Missing:
    """The package to fetch for one installed record, or why it cannot be packed exactly."""
    label = f"{record['name']} {record['version']} {record['build']}"
    url = str(record.get("url") or "")
    sha256, md5 = record.get("sha256") or None, record.get("md5") or None
    tarball = record.get("package_tarball_full_path")
    copies = (Path(tarball),) if isinstance(tarball, str) and tarball else ()
    if url in UNKNOWN_URLS or "://" not in url:
        return Missing(label, "installed without a URL (a local build or `conda develop`)")
    if not (sha256 or md5):
        return Missing(label, "no checksum was recorded when it was installed")
    parts = urlsplit(url)
    file_name = str(record.get("fn") or unquote(PurePosixPath(parts.path).name))
    if (
        parts.scheme == "file"
        and not Path(unquote(parts.path)).is_file()
        and not any(p.is_file() for p in copies)
    ):
        return Missing(label, f"installed from the local file {unquote(parts.path)}, which is gone")
    subdir = str(record.get("subdir") or NOARCH)
    artifact = Artifact(
        url=url,
        file_name=file_name,
        sha256=str(sha256) if sha256 else None,
        md5=str(md5) if md5 else None,
        size=record.get("size") if isinstance(record.get("size"), int) else None,
        relative_path=f"{subdir}/{file_name}",
        label=label,
    )
    repodata_record = {k: v for k, v in record.items() if k not in INSTALL_KEYS}
    channel = record.get("channel")
    return LockedConda(
        record=repodata_record,
        subdir=subdir,
        file_name=file_name,
        url=url,
        channel=str(channel) if channel else None,
        artifact=artifact,
        local_copies=copies,
    )
