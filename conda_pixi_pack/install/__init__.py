"""Installers that turn the extracted pack into an environment.

:class:`PackedPackage` is what ``unpack`` hands to each backend (``conda.py``, ``rattler.py``);
``wheels.py`` installs the pack's wheels into the result. Backends import their engine lazily, so
this package imports where conda is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from conda_pixi_pack.extract import Extent
    from conda_pixi_pack.layout import Origin


@dataclass(frozen=True)
class PackedPackage:
    """One conda package inside an extracted, validated pack."""

    subdir: str
    file_name: str
    #: Absolute path of the package file inside the extracted pack (an empty placeholder when
    #: ``extent`` is set).
    path: Path
    #: Its record from ``channel/<subdir>/repodata.json``.
    record: dict[str, Any]
    #: Original URL/channel when the pack carries them (ours do; pixi-pack's do not).
    origin: Origin | None
    #: Where its bytes are when extraction left them inside the pack file (see extract.py).
    extent: Extent | None = None
    #: Its checksum is not verified yet: the installer must, before linking anything.
    checksum_deferred: bool = False

    @property
    def size(self) -> int:
        """The package file's size in bytes, wherever its bytes are."""
        return self.extent.size if self.extent is not None else self.path.stat().st_size
