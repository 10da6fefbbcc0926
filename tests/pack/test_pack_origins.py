"""Provenance recorded in ``pixi-pack.json``: kept for URLs, without credentials; none for files
named relative to the lock, so that the same lock gives the same pack wherever it is checked out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from conda_pixi_pack import __version__
from conda_pixi_pack.pack.output import OutputMode
from conda_pixi_pack.pack.pipeline import PackOptions, pack
from conda_pixi_pack.pack.sources.lockfile import LockSource

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import Channel
    from tests.support.server import ChannelServer

#: The bundled example: a lock naming its packages by paths relative to itself.
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


def test_relative_lock_paths_have_no_origin(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["alpha", "noarch-data"], urls="relative")
    assert "conda: ../" in (project / "pixi.lock").read_text()  # the lock really is relative
    out = tmp_path / "pack"
    pack(PackOptions(source=LockSource(project), platform="linux-64", output=out, mode=OutputMode.FOLDER))
    metadata = json.loads((out / "pixi-pack.json").read_text())
    assert metadata["conda-pixi-pack"] == {"version": __version__}  # nothing machine-specific recorded


def test_same_relative_lock_in_two_places_gives_the_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "demo", tmp_path / "elsewhere" / "deeper" / "demo"
    for copy in (first, second):
        shutil.copytree(DEMO, copy)
        pack(
            PackOptions(source=LockSource(copy), platform="linux-64", output=copy.parent / "environment.tar")
        )
    assert (first.parent / "environment.tar").read_bytes() == (second.parent / "environment.tar").read_bytes()


def test_credentials_in_lock_urls_stay_out_of_the_pack(
    make_project: Callable[..., Path], channel_server: ChannelServer, sample_channel: Channel, tmp_path: Path
) -> None:
    """A URL with user:password (the server ignores it) is downloaded, but recorded without it."""
    project = make_project(["alpha", "beta"])
    lock = project / "pixi.lock"
    host = channel_server.url.split("://", 1)[1]
    lock.write_text(lock.read_text().replace(f"http://{host}", f"http://user:s3cret@{host}"))
    assert "s3cret" in lock.read_text()
    out = tmp_path / "pack"
    pack(PackOptions(source=LockSource(project), platform="linux-64", output=out, mode=OutputMode.FOLDER))
    text = (out / "pixi-pack.json").read_text()
    assert "s3cret" not in text and "user@" not in text
    origins = json.loads(text)["conda-pixi-pack"]["origins"]
    expected = f"{channel_server.url}/linux-64/alpha-1.0-h0_0.conda"
    assert origins["linux-64/alpha-1.0-h0_0.conda"]["url"] == expected
