"""Pack a pixi-locked environment for a machine without a channel, and unpack it there."""

from __future__ import annotations

from typing import Final

#: The tool version written into ``pixi-pack.json`` as ``pixi-pack-version``.
__version__: Final = "0.1.0"
