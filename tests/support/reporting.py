"""A Reporter that keeps what it is told, for tests that assert on warnings and debug lines."""

from __future__ import annotations

from conda_pixi_pack.progress import Reporter


class Recorder(Reporter):
    """Keeps warnings and debug lines (progress and info go nowhere, as with ``Reporter``)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.debug_lines: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def debug(self, message: str) -> None:
        self.debug_lines.append(message)
