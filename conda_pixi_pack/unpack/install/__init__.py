"""Installers that turn a validated pack into an environment: one interface, two backends.

``unpack`` (and every other consumer) talks to an :class:`Installer`: :func:`choose_installer`
picks conda's machinery (``conda.py``) where conda imports, else py-rattler's (``rattler.py``).
``wheels.py`` installs the pack's wheels into the result with either. Backends import their
engine lazily, so this package imports where conda is absent; it imports nothing heavy itself
(the seed workers start through it).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Literal, Protocol

from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from conda_pixi_pack.artifacts import PackedPackage
    from conda_pixi_pack.progress import Reporter

#: The backends' names, as ``--installer`` takes them.
InstallerName = Literal["conda", "rattler"]


class Installer(Protocol):
    """What ``unpack`` needs from a backend."""

    @property
    def name(self) -> InstallerName:
        """``conda`` or ``rattler``: shown to the user and in ``--json``."""

    @property
    def takes_extents(self) -> bool:
        """Whether it takes packages left inside a pack file (``PackedPackage.extent``) and
        verifies them itself; otherwise every package is a file of its own, already verified."""

    def install(
        self,
        packages: list[PackedPackage],
        prefix: Path,
        *,
        pkgs_dir: Path | None,
        reporter: Reporter,
        on_linked: Callable[[], None] | None = None,
    ) -> None:
        """Create the environment at the new ``prefix`` from ``packages`` (verified, or marked
        ``checksum_deferred`` for the backend to verify before it links); raises PackError.
        ``on_linked`` is called once the package files are no longer needed."""

    def registration_undo(self, prefix: Path) -> Callable[[], None] | None:
        """What takes back the registration ``install`` will make for ``prefix`` (conda lists
        environments in ``environments.txt``), or None when there is nothing to take back."""


def conda_importable() -> bool:
    """True when conda can be imported (found *and* importable: a broken install counts as absent)."""
    if importlib.util.find_spec("conda") is None:
        return False
    try:
        import conda.core.link  # noqa: F401
    except Exception:  # any import-time failure means the conda backend cannot work
        return False
    return True


def choose_installer(requested: InstallerName | None) -> Installer:
    """The ``requested`` backend, or conda when importable, else rattler."""
    if requested == "rattler" or not conda_importable():
        if requested == "conda":
            raise PackError(
                "the conda installer needs conda, which is not importable here",
                "use --installer rattler",
            )
        from conda_pixi_pack.unpack.install.rattler import RattlerInstaller

        return RattlerInstaller()
    from conda_pixi_pack.unpack.install.conda import CondaInstaller

    return CondaInstaller()
