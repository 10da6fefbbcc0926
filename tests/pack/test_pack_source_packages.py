"""Source packages (``pixi build``) in a lock: refused with a hint, packed once a build is injected."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.pack.output import OutputMode
from conda_pixi_pack.pack.pipeline import PackOptions, pack
from conda_pixi_pack.pack.sources.lockfile import LockSource
from tests.support.packages import PackageSpec, build_package

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

#: A source entry as pixi 0.5x writes it (see the real lock in local-build/): name, hash, path.
SOURCE_ENTRY = "conda_source: srcpkg[abcd1234] @ ./srcpkg"


def with_source_package(project: Path) -> Path:
    """Add a source package ``srcpkg`` (depending on alpha) to the lock of ``project``."""
    lock = project / "pixi.lock"
    text = lock.read_text()
    head, packages = text.split("\npackages:\n", 1)
    head = head.replace("      linux-64:\n", f"      linux-64:\n      - {SOURCE_ENTRY}\n", 1)
    source = f"- {SOURCE_ENTRY}\n  variants:\n    target_platform: linux-64\n  depends:\n  - alpha\n"
    lock.write_text(f"{head}\npackages:\n{packages}{source}")
    return project


def test_source_package_is_refused_with_the_inject_hint(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    project = with_source_package(make_project(["alpha", "beta"]))
    output = tmp_path / "environment.tar"
    with pytest.raises(PackError, match="source packages that must be built first: srcpkg") as info:
        pack(PackOptions(source=LockSource(project), platform="linux-64", output=output))
    assert "--inject" in (info.value.hint or "")
    assert not output.exists()


def test_injecting_a_build_of_the_source_package_packs_it(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    """The hint works: a built srcpkg passed with --inject takes the source package's place."""
    project = with_source_package(make_project(["alpha", "beta"]))
    built = build_package(PackageSpec(name="srcpkg", depends=["alpha"]), tmp_path / "built")
    out = tmp_path / "pack"
    result = pack(
        PackOptions(
            source=LockSource(project),
            platform="linux-64",
            output=out,
            mode=OutputMode.FOLDER,
            inject=[built],
        )
    )
    assert result.conda_packages == 3
    repodata = json.loads((out / "channel" / "linux-64" / "repodata.json").read_text())
    assert built.name in repodata["packages.conda"]
    assert (out / "environment.yml").read_text().splitlines()[-1] == "  - srcpkg=1.0=0"
