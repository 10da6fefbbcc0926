"""``python -m conda_pixi_pack``: the standalone CLI, same parser as the console script."""

from __future__ import annotations

from conda_pixi_pack.cli.entry import run

if __name__ == "__main__":
    run(prog="python -m conda_pixi_pack")
