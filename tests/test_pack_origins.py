"""Provenance recorded in ``pixi-pack.json`` for packages the lock names by a local path."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from conda_pixi_pack.pack import PackOptions, pack

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import Channel


def test_relative_lock_paths_become_absolute_file_urls(
    make_project: Callable[..., Path], sample_channel: Channel, tmp_path: Path
) -> None:
    """A path relative to the lock means nothing where the pack is unpacked: the origin (what
    `conda list --explicit` prints later) is the absolute file:// URL of the file that was packed."""
    project = make_project(["alpha", "noarch-data"], urls="relative")
    lock_text = (project / "pixi.lock").read_text()
    assert "conda: ../" in lock_text or "conda: ./" in lock_text  # the lock really is relative
    out = tmp_path / "pack"
    pack(PackOptions(manifest=project, platform="linux-64", output=out, directory_only=True))
    origins = json.loads((out / "pixi-pack.json").read_text())["conda-pixi-pack"]["origins"]
    assert (
        origins["linux-64/alpha-1.0-h0_0.conda"]["url"] == sample_channel.packages["alpha"].resolve().as_uri()
    )
    assert origins["noarch/noarch-data-0.5-0.conda"]["url"] == (
        sample_channel.packages["noarch-data"].resolve().as_uri()
    )
