"""``python -m conda_pixi_pack``: the standalone CLI, same parser as the console script."""

from __future__ import annotations

import sys

from conda_pixi_pack.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m conda_pixi_pack"))
