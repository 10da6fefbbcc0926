"""``conda env create --file environment.tar``: a pack as a conda environment specification.

conda (26.3 and later) asks its ``conda_environment_specifiers`` plugins for an ``Environment``;
ours gives the pack's exact packages as ``explicit_packages``, which conda links without a solver.
Before that the pack is read as ``unpack`` reads it (every kind of pack, the same checks and
checksums), and its packages are put into conda's package cache, extracted, with their original
URLs and channels: the environment has the same provenance as one made by ``unpack``. conda links
them itself; the pack's wheels are installed by the post-command hook once conda has created the
prefix (conda installs no wheels for explicit packages). The extracted pack lives in a temporary
folder until the command ends.

This module imports conda: only the plugin hooks import it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

from conda.base.context import context
from conda.exceptions import CondaError
from conda.models.environment import Environment
from conda.plugins.types import EnvironmentSpecBase

from conda_pixi_pack import format as layout
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.progress import Reporter
from conda_pixi_pack.unpack.reader import open_pack
from conda_pixi_pack.unpack.validate import validate_pack

if TYPE_CHECKING:
    from conda_pixi_pack.unpack.validate import ValidatedPack

#: The plugin's name (``conda env create --format conda-pixi-pack`` picks it explicitly).
NAME: Final = "conda-pixi-pack"
#: File names conda hands to this plugin first (it then asks :meth:`PackSpec.can_handle`).
DEFAULT_FILENAMES: Final = ("*.tar",)
#: Shown by ``conda env create --help``.
DESCRIPTION: Final = "a pack written by conda-pixi-pack or pixi-pack (tar, folder or self-extracting script)"


class PackSpecError(CondaError):
    """A :class:`PackError` in conda's clothes, so conda reports it as one line with its hint."""

    def __init__(self, error: PackError) -> None:
        super().__init__(str(error))


class _Extracted:
    """Packs extracted for this command, their wheels waiting for the prefix conda creates."""

    def __init__(self) -> None:
        self.folders: list[Path] = []
        self.wheels: list[Path] = []
        atexit.register(self.remove)

    def remove(self) -> None:
        while self.folders:
            shutil.rmtree(self.folders.pop(), ignore_errors=True)


#: What this process extracted (conda runs one command per process).
EXTRACTED: Final = _Extracted()


class PackSpec(EnvironmentSpecBase):
    """A pack given to ``conda env create --file`` (or ``conda create --file``)."""

    def __init__(self, filename: str | None = None, **kwargs: object) -> None:
        self.filename = filename
        self._metadata: layout.PackMetadata | None = None

    def can_handle(self) -> bool:
        """A pack has ``pixi-pack.json``; anything else is refused with the reason (conda shows it
        when the file name chose this plugin)."""
        self._metadata = _metadata(self._path())
        return True

    @property
    def available_platforms(self) -> tuple[str, ...]:
        """The pack's one platform: conda refuses it on another machine, naming both."""
        if self._metadata is None:
            self._metadata = _metadata(self._path())
        return (self._metadata.platform,)

    @property
    def env(self) -> Environment:
        """The pack's packages, verified and in conda's package cache, as explicit packages."""
        from conda_pixi_pack.unpack.install.conda import CondaInstaller

        try:
            pack = _extract(self._path())
            records = CondaInstaller().cache(pack.packages, reporter=Reporter())
        except PackError as exc:
            raise PackSpecError(exc) from exc
        EXTRACTED.wheels += pack.wheels
        return Environment(platform=context.subdir, explicit_packages=records)

    def _path(self) -> Path:
        if not self.filename:
            raise PackSpecError(PackError("no pack given", "give it with --file"))
        return Path(self.filename)


def _metadata(path: Path) -> layout.PackMetadata:
    """``pixi-pack.json`` of the pack at ``path``, read without extracting anything else."""
    try:
        with open_pack(path) as opened:
            if opened.root is not None:
                return layout.read_metadata(opened.root)
            for member, stream in opened.members():
                if member.name == layout.METADATA_FILE and stream is not None:
                    return layout.parse_metadata(stream.read())
        raise PackError(f"not a pack: {path} has no {layout.METADATA_FILE}")
    except PackError as exc:
        raise PackSpecError(exc) from exc


def _extract(path: Path) -> ValidatedPack:
    """The pack extracted into a temporary folder (removed when the command ends) and checked."""
    with open_pack(path) as opened:
        if opened.root is not None:
            return validate_pack(opened.root, Reporter(), platform=context.subdir)
        work = Path(tempfile.mkdtemp(prefix="conda-pixi-pack-"))
        EXTRACTED.folders.append(work)
        opened.extract(work, Reporter())
    return validate_pack(work, Reporter(), platform=context.subdir)


def install_wheels_after_create(command: str) -> None:
    """Post-command hook: install the wheels of the packs this command created an environment
    from, into that environment (``context.target_prefix``), then remove the extracted packs."""
    try:
        if EXTRACTED.wheels:
            from conda_pixi_pack.unpack.install.wheels import install_wheels

            wheels, EXTRACTED.wheels = EXTRACTED.wheels, []
            try:
                install_wheels(Path(context.target_prefix), wheels, reporter=Reporter(), checked=True)
            except PackError as exc:
                raise PackSpecError(exc) from exc
    finally:
        EXTRACTED.remove()
