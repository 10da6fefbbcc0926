"""``inspect``: what a pack holds and how to unpack it, from every kind of pack, without unpacking.

Packs come from our own ``pack`` (run as the user runs it) and from the hand-made pixi-pack layouts
of ``tests/support/packs.py``; each damaged case changes one precise thing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from typing import TYPE_CHECKING, Any, Final

import pytest

from conda_pixi_pack import __version__
from tests.support.packages import PackageSpec
from tests.support.packs import damage, make_pack, make_pack_dir, self_extracting, tar_dir

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import Channel
    from tests.support.server import ChannelServer

#: This tool, as a subprocess.
CLI: Final = [sys.executable, "-m", "conda_pixi_pack"]


def cli(
    *args: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, cwd=cwd, timeout=300, check=False)


def inspect_json(*args: str, stdin: bytes | None = None) -> dict[str, Any]:
    done = cli("inspect", *args, "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def packed(make_project: Callable[..., Path], channel_server: ChannelServer, tmp_path: Path) -> Path:
    """Our pack (a tar) of three packages and a wheel, fetched over HTTP (so with provenance)."""
    project = make_project(["alpha", "beta", "noarch-data"], wheels=["fixture-wheel"])
    out = tmp_path / "environment.tar"
    done = cli("pack", str(project), "-p", "linux-64", "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    return out


def test_a_tar_is_described_in_full(packed: Path, channel_server: ChannelServer) -> None:
    report = inspect_json(str(packed))
    assert report["kind"] == "tar" and report["pack"] == str(packed)
    assert (report["format_version"], report["platform"]) == ("1", "linux-64")
    assert report["written_by"] == f"conda-pixi-pack {__version__}"
    names = [(p["name"], p["version"], p["build"], p["subdir"], p["channel"]) for p in report["packages"]]
    channel = f"{channel_server.url}/"
    assert sorted(names) == [
        ("alpha", "1.0", "h0_0", "linux-64", channel),
        ("beta", "1.2", "h0_0", "linux-64", channel),
        ("noarch-data", "0.5", "0", "noarch", channel),
    ]
    with tarfile.open(packed) as tar:
        sizes = {m.name: m.size for m in tar.getmembers() if m.isfile()}
    assert report["size"] == sum(sizes.values())
    assert all(p["size"] == sizes[f"channel/{p['subdir']}/{p['file']}"] for p in report["packages"])
    wheel = "fixture_wheel-1.0-py3-none-any.whl"
    assert report["wheels"] == [{"file": wheel, "size": sizes[f"pypi/{wheel}"]}]
    commands = [path["command"] for path in report["unpack_paths"]]
    assert commands == [
        f"conda-pixi-pack unpack {packed}",
        f"pixi-unpack {packed}",
        f"conda env create --file {packed} -n NAME",
        "conda create -p ./env --offline --file explicit.txt",
        "micromamba create -p ./env --offline -f explicit.txt",
        "conda env create -p ./env --offline --file environment.yml",
    ]
    assert report["verified"] is None and report["extra_files"] == []


def test_the_text_report_lists_what_a_user_looks_for(packed: Path) -> None:
    done = cli("inspect", str(packed))
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert f"Format:     pixi-pack format 1, for linux-64, written by conda-pixi-pack {__version__}" in text
    assert "Contents:   3 conda packages" in text and "1 wheel" in text
    assert any(line.split()[:3] == ["alpha", "1.0", "h0_0"] for line in text.splitlines())
    assert "fixture_wheel-1.0-py3-none-any.whl" in text
    assert f"conda-pixi-pack unpack {packed}" in text


def test_every_kind_of_pack_gives_the_same_contents(packed: Path, tmp_path: Path) -> None:
    reference = inspect_json(str(packed))
    folder = tmp_path / "folder"
    folder.mkdir()
    with tarfile.open(packed) as tar:
        tar.extractall(folder, filter="data") if sys.version_info >= (3, 12) else tar.extractall(folder)
    kinds = {
        "folder": inspect_json(str(folder)),
        "stdin": inspect_json("-", stdin=packed.read_bytes()),
        "pixi-pack script": inspect_json(str(self_extracting(packed, tmp_path / "pixi.sh"))),
    }
    for kind, report in kinds.items():
        assert report["packages"] == reference["packages"], kind
        assert report["wheels"] == reference["wheels"], kind
    assert kinds["folder"]["kind"] == "folder"
    assert kinds["pixi-pack script"]["kind"] == "pixi-pack script"
    assert kinds["pixi-pack script"]["unpack_paths"][0]["command"].startswith("sh ")


def test_our_script_is_read_in_place_and_says_what_it_embeds(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    from tests.conftest import Channel

    installer = Channel(tmp_path / "mm").add(
        PackageSpec(
            "micromamba",
            "2.0.0",
            "0",
            files={"bin/micromamba": "#!/bin/sh\n"},
            executables=["bin/micromamba"],
        )
    )
    script = tmp_path / "environment.sh"
    project = make_project(["alpha", "beta"])
    done = cli(
        "pack",
        str(project),
        "-p",
        "linux-64",
        "--create-executable",
        "--unpacker-source",
        str(installer),
        "-o",
        str(script),
    )
    assert done.returncode == 0, done.stderr
    report = inspect_json(str(script), "--verify")
    assert report["kind"] == "conda-pixi-pack script"
    assert report["unpack_paths"][0] == {"command": f"sh {script}", "needs": "nothing: it embeds micromamba"}
    assert sorted(p["name"] for p in report["packages"]) == ["alpha", "beta"]
    assert inspect_json("-", stdin=script.read_bytes())["packages"] == report["packages"]


def test_a_pixi_pack_pack_names_its_writer(packages: Callable[..., list[Path]], tmp_path: Path) -> None:
    pack = make_pack(tmp_path, packages("alpha", "beta"), platform="linux-64")
    report = inspect_json(str(pack), "--verify")
    assert report["written_by"].startswith("pixi-pack ")
    assert all(p["channel"] is None for p in report["packages"])
    assert report["verified"].startswith("every package matches")
    # pixi-pack writes no explicit list: no path that needs one is offered
    assert not any("explicit.txt" in path["command"] for path in report["unpack_paths"])


# -- --verify --------------------------------------------------------------------------------------


def test_verify_accepts_a_good_pack(packed: Path) -> None:
    done = cli("inspect", str(packed), "--verify")
    assert done.returncode == 0, done.stderr
    assert (
        "Verified:   every package matches its size and checksum, every wheel its RECORD"
        in done.stdout.decode()
    )


def _one_error(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr.decode()
    return lines[-1]


@pytest.mark.parametrize("how", ["tar", "stdin", "folder"])
def test_verify_names_a_package_that_does_not_match(
    packages: Callable[..., list[Path]], tmp_path: Path, how: str
) -> None:
    source = make_pack_dir(tmp_path / "src", packages("alpha", "beta"), platform="linux-64")
    damage(next((source / "channel" / "linux-64").glob("beta-*")))
    pack = tar_dir(source, tmp_path / "environment.tar")
    target, stdin = {
        "tar": (str(pack), None),
        "stdin": ("-", pack.read_bytes()),
        "folder": (str(source), None),
    }[how]
    done = cli("inspect", target, "--verify", stdin=stdin)
    assert ": done" not in done.stderr.decode()  # no stage says "done" before its last check failed
    line = _one_error(done)
    assert line == (
        "error: broken pack: channel/linux-64/beta-1.2-h0_0.tar.bz2 does not match its sha256 in "
        "repodata.json (the pack is damaged or incomplete; copy or build it again)"
    )
    assert cli("inspect", target, stdin=stdin).returncode == 0  # without --verify, bytes are not read


def test_verify_names_a_missing_package(packages: Callable[..., list[Path]], tmp_path: Path) -> None:
    source = make_pack_dir(tmp_path / "src", packages("alpha", "beta"), platform="linux-64")
    next((source / "channel" / "linux-64").glob("alpha-*")).unlink()
    pack = tar_dir(source, tmp_path / "environment.tar")
    assert "channel/linux-64/alpha-1.0-h0_0.conda is listed in repodata.json but missing" in _one_error(
        cli("inspect", str(pack), "--verify")
    )


def _retype_records(source: Path, field: str, value: object) -> None:
    path = source / "channel" / "linux-64" / "repodata.json"
    repodata = json.loads(path.read_text())
    for record in repodata["packages.conda"].values():
        record[field] = value
    path.write_text(json.dumps(repodata))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda src: (src / "channel" / "linux-64" / "repodata.json").unlink(),
            "broken pack: channel/linux-64/ holds packages but no repodata.json",
            id="no-repodata",
        ),
        pytest.param(
            lambda src: _retype_records(src, "size", "big"),
            "the record of channel/linux-64/alpha-1.0-h0_0.conda has a size that is not a number: 'big'",
            id="size-a-string",
        ),
        pytest.param(
            lambda src: _retype_records(src, "sha256", "abc"),
            "the record of channel/linux-64/alpha-1.0-h0_0.conda has a sha256 that is not 64 hex "
            "digits: 'abc'",
            id="sha256-too-short",
        ),
    ],
)
def test_broken_records_are_named_without_verify(
    packages: Callable[..., list[Path]], tmp_path: Path, change: Callable[[Path], object], message: str
) -> None:
    """What a record says is checked by every reading, not only by ``--verify``: inspect must not
    describe a pack that no unpacker would install as it is."""
    source = make_pack_dir(tmp_path / "src", packages("alpha", "beta"), platform="linux-64")
    change(source)
    pack = tar_dir(source, tmp_path / "environment.tar")
    for args in (("inspect", str(pack)), ("inspect", str(source)), ("unpack", str(pack), "--dry-run")):
        assert message in _one_error(cli(*args)), args


def test_verify_names_a_tampered_wheel(
    python_channel: Channel, packages: Callable[..., list[Path]], tmp_path: Path
) -> None:
    wheel = tmp_path / python_channel.wheels["fixture-wheel"].name
    with zipfile.ZipFile(python_channel.wheels["fixture-wheel"]) as src, zipfile.ZipFile(wheel, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"# tampered\n" if item.filename.endswith("__init__.py") else data)
    pack = make_pack(tmp_path, [python_channel.packages["python"]], wheels=[wheel], platform="linux-64")
    line = _one_error(cli("inspect", str(pack), "--verify"))
    assert "broken wheel fixture_wheel-1.0-py3-none-any.whl" in line and "didn't match RECORD" in line


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.tar", "pack {} does not exist"),
        (lambda tmp: _write(tmp / "notes.txt", b"hello"), "is not a pack: it is not a tar archive"),
        (
            lambda tmp: tar_dir(_mkdir(tmp / "empty"), tmp / "empty.tar"),
            "not a pack: {} has no pixi-pack.json",
        ),
    ],
    ids=["missing", "not-a-tar", "no-metadata"],
)
def test_what_is_not_a_pack_is_one_line(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    target = make(tmp_path)
    assert message.format(target) in _one_error(cli("inspect", str(target)))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    (path / "x").mkdir(parents=True)
    return path


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read with getrusage (Linux units)")
def test_verifying_a_large_pack_keeps_memory_flat(tmp_path: Path) -> None:
    """A 200 MB package read from a pipe and hashed: memory stays far below the pack's size."""
    from tests.conftest import Channel

    payload = tmp_path / "payload.bin"
    with payload.open("wb") as handle:
        for _ in range(200):
            handle.write(os.urandom(1024 * 1024))
    channel = Channel(tmp_path / "big")
    package = channel.add(
        PackageSpec("big", "1.0", "0", files={"share/big.bin": payload}, compression_level=1)
    )
    payload.unlink()
    pack = make_pack(tmp_path, [package], platform="linux-64")
    package.unlink()
    measure = (
        "import resource, subprocess, sys\n"
        "with open(sys.argv[1], 'rb') as stdin:\n"
        "    done = subprocess.run(sys.argv[2:], stdin=stdin, stdout=subprocess.DEVNULL)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, str(pack), *CLI, "inspect", "-", "--verify", "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    code, peak_kib = map(int, done.stdout.split())
    assert code == 0, done.stderr
    assert peak_kib / 1024 < 120, f"peak RSS {peak_kib / 1024:.0f} MiB for a 200 MiB pack"
