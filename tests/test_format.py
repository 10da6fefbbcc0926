"""layout.py: the pack format's files, exactly as pixi-pack writes and reads them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack import format as layout
from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from pathlib import Path


def test_environment_yml_without_and_with_wheels() -> None:
    assert layout.environment_yml(["a=1=0"], []) == (
        "channels:\n  - ./channel\n  - nodefaults\ndependencies:\n  - a=1=0\n"
    )
    assert layout.environment_yml(["a=1=0", "python=3.11.7=0"], ["b==2"]).endswith(
        "  - python=3.11.7=0\n  - pip:\n    - --no-index\n    - --find-links ./pypi\n    - b==2\n"
    )


def test_repodata_puts_each_format_where_conda_looks_and_drops_locations() -> None:
    document = layout.repodata(
        "linux-64",
        {
            "a-1-0.conda": {"name": "a", "url": "https://x/a-1-0.conda", "channel": "https://x", "fn": "f"},
            "b-1-0.tar.bz2": {"name": "b", "depends": ["a >=1"]},
        },
    )
    assert document["info"] == {"subdir": "linux-64"}
    assert document["repodata_version"] == 2
    assert document["packages.conda"] == {"a-1-0.conda": {"name": "a"}}
    assert document["packages"] == {"b-1-0.tar.bz2": {"name": "b", "depends": ["a >=1"]}}


@pytest.mark.parametrize(
    "records",
    [{}, {"a-1-0.conda": {"name": "a", "depends": ["b"]}, "b-1-0.tar.bz2": {"name": "b", "size": 3}}],
    ids=["empty", "both-formats"],
)
def test_dump_repodata_is_json_with_a_line_per_record(records: dict[str, dict[str, object]]) -> None:
    document = layout.repodata("noarch", records)
    text = layout.dump_repodata(document)
    assert json.loads(text) == document
    assert text.endswith("}\n")
    for file_name in records:
        assert sum(file_name in line for line in text.splitlines()) == 1


def test_metadata_round_trip_keeps_origins(tmp_path: Path) -> None:
    metadata = layout.PackMetadata(
        "1",
        "0.1.0",
        "linux-64",
        {"linux-64/a-1-0.conda": layout.Origin("https://x/a", "https://x")},
        writer_version="0.1.0",
    )
    (tmp_path / layout.METADATA_FILE).write_text(metadata.to_json())
    data = json.loads((tmp_path / layout.METADATA_FILE).read_text())
    assert data["version"] == "1" and data["pixi-pack-version"] == "0.1.0"
    assert data["conda-pixi-pack"]["version"] == "0.1.0"
    assert layout.read_metadata(tmp_path) == metadata


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "pixi-pack.json is missing"),
        ("{not json", r"broken pack: pixi-pack.json is damaged: it is not valid JSON \(line 1, column 2"),
        ("[]", "not a JSON object"),
        ('{"version": 1, "platform": "linux-64"}', 'has version 1, which must be the string "1"'),
        ('{"version": "2", "platform": "linux-64"}', "unsupported pack format version '2'"),
        ('{"version": "1"}', "names no platform"),
    ],
    ids=["missing", "bad-json", "not-object", "number-version", "version-2", "no-platform"],
)
def test_bad_metadata_is_one_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / layout.METADATA_FILE).write_text(content)
    with pytest.raises(PackError, match=message) as info:
        layout.read_metadata(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name", ["pixi-pack.json", "channel/linux-64/repodata.json"], ids=["metadata", "repodata"]
)
def test_undecodable_bytes_are_a_damaged_pack_not_a_codec_error(tmp_path: Path, name: str) -> None:
    """A flipped byte in a pack's JSON is damage: the message says so and gives a hint, with no
    Python codec text in it."""
    (tmp_path / layout.METADATA_FILE).write_text('{"version": "1", "platform": "linux-64"}')
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"version": "1", "platform": "linux-\xdd64"}')
    with pytest.raises(PackError) as info:
        layout.read_metadata(tmp_path) if name == layout.METADATA_FILE else layout.read_repodata(tmp_path)
    assert info.value.message == f"broken pack: {name} is damaged: it is not UTF-8 text (byte 36)"
    assert info.value.hint == "the pack is damaged or incomplete; copy or build it again"
    assert "codec" not in str(info.value) and "utf-8" not in str(info.value)


def test_origins_with_odd_types_are_tolerated(tmp_path: Path) -> None:
    """Our key comes from an untrusted file: a channel that is not a string is dropped, not used."""
    (tmp_path / layout.METADATA_FILE).write_text(
        json.dumps(
            {
                "version": "1",
                "platform": "linux-64",
                "conda-pixi-pack": {
                    "version": "0.1.0",
                    "origins": {"linux-64/a-1-0.conda": {"url": "https://x/a", "channel": 5}, "b": "nope"},
                },
            }
        )
    )
    metadata = layout.read_metadata(tmp_path)
    assert metadata.origins == {"linux-64/a-1-0.conda": layout.Origin("https://x/a", None)}
    assert metadata.writer_version == "0.1.0"


def test_the_current_platform_is_the_one_rattler_names() -> None:
    """The table's answer (no rattler import) is rattler's, on whatever machine runs this."""
    from rattler import Subdir

    assert layout.current_platform() == str(Subdir.current())
