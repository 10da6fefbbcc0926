"""Self-extracting packs (``pixi-pack --create-executable``): the tar inside is unpacked as it is."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.progress import Reporter
from conda_pixi_pack.unpack.pipeline import UnpackOptions, unpack
from conda_pixi_pack.unpack.reader import extract_tar
from conda_pixi_pack.unpack.reader import self_extracting as embedded
from tests.support.packs import SH_HEADER, make_pack, raw_tar, self_extracting
from tests.unpack.test_reader import _file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import IO


CONTENT = {"pixi-pack.json": b"{}", "channel/noarch/a-1-0.conda": bytes(range(256)) * 999, "odd": b"x" * 7}


def _tar(tmp_path: Path) -> Path:
    return raw_tar(tmp_path / "inner.tar", [_file(name, data) for name, data in CONTENT.items()])


def _extracted(target: Path) -> dict[str, bytes]:
    return {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}


def _extract(source: Path | IO[bytes], tmp_path: Path) -> dict[str, bytes]:
    """What ``extract_tar`` makes of ``source`` in a new folder: each file's bytes by name."""
    target = tmp_path / "out"
    target.mkdir()
    extract_tar(source, target, Reporter())
    return _extracted(target)


@pytest.mark.parametrize("kind", ["sh", "ps1"])
def test_the_tar_inside_is_extracted(tmp_path: Path, kind: str) -> None:
    script = self_extracting(_tar(tmp_path), tmp_path / f"environment.{kind}", kind)
    assert _extract(script, tmp_path) == CONTENT


def test_decoded_piece_by_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding in steps that split base64 groups gives the same bytes (memory stays flat)."""
    monkeypatch.setattr(embedded, "ENCODED_CHUNK", 4097)
    script = self_extracting(_tar(tmp_path), tmp_path / "environment.sh")
    assert _extract(script, tmp_path) == CONTENT


def test_from_standard_input(tmp_path: Path) -> None:
    script = self_extracting(_tar(tmp_path), tmp_path / "environment.sh")
    assert _extract(io.BufferedReader(io.BytesIO(script.read_bytes())), tmp_path) == CONTENT  # type: ignore[arg-type]


def _damaged(script: Path, how: str) -> None:
    data = script.read_bytes()
    start = data.index(b"@@END_HEADER@@\n") + len(b"@@END_HEADER@@\n\n")
    end = data.index(b"\n@@END_ARCHIVE@@")
    if how == "cut-in-archive":
        script.write_bytes(data[: start + (end - start) // 2])
    elif how == "cut-in-padding":  # the tar's end blocks are all there, the rest of the file is not
        script.write_bytes(data[:end])
    elif how == "no-end-marker":
        script.write_bytes(data[: end + 1] + b"something else\n")
    elif how == "not-base64":
        script.write_bytes(data[: start + 100] + b"!" + data[start + 101 :])
    elif how == "no-archive":
        script.write_bytes(data[:start])
    elif how == "wrapped":  # as `base64` writes by default: 76 columns
        line = data[start:end]
        wrapped = b"\n".join(line[i : i + 76] for i in range(0, len(line), 76))
        script.write_bytes(data[:start] + wrapped + data[end:])
    elif how == "garbled-header":  # the second member's header, in the decoded tar
        tar = bytearray(base64.b64decode(data[start:end]))
        tar[1024:1036] = b"not a header"
        script.write_bytes(data[:start] + base64.b64encode(bytes(tar)) + data[end:])


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("cut-in-archive", "ends inside its embedded archive"),
        ("cut-in-padding", "ends inside its embedded archive"),
        ("no-end-marker", "not one line of base64 followed by @@END_ARCHIVE@@"),
        ("wrapped", "not one line of base64 followed by @@END_ARCHIVE@@"),
        ("garbled-header", "ends without tar's end-of-archive marker"),
        pytest.param(
            "not-base64",
            "not valid base64",
            marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="strict base64 needs Python 3.11"),
        ),
        ("no-archive", "ends before its embedded archive"),
    ],
)
def test_a_damaged_script_is_refused(tmp_path: Path, how: str, message: str) -> None:
    script = self_extracting(_tar(tmp_path), tmp_path / "environment.sh")
    _damaged(script, how)
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(PackError, match=rf"pack .*environment\.sh is damaged: .*{message}"):
        extract_tar(script, target, Reporter())


def test_a_script_without_an_archive_marker_is_not_a_pack(tmp_path: Path) -> None:
    """The marker inside the header's code (``grep "^@@END_HEADER@@"``) does not count."""
    script = tmp_path / "install.sh"
    script.write_text(SH_HEADER.replace("\n@@END_HEADER@@\n", "\n"))
    with pytest.raises(PackError, match="is not a pack: it is not a tar archive") as refused:
        extract_tar(script, tmp_path, Reporter())
    assert "self-extracting" in (refused.value.hint or "")


def test_a_zstd_pack_gets_its_own_message(tmp_path: Path) -> None:
    """pixi-pack 0.1 wrote zstd-compressed tars."""
    path = tmp_path / "environment.tar.zstd"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 600)
    with pytest.raises(PackError, match="is a zstd-compressed pack") as refused:
        extract_tar(path, tmp_path, Reporter())
    assert "zstd -d" in (refused.value.hint or "")


def test_unpack_a_self_extracting_pack(tmp_path: Path, packages: Callable[..., list[Path]]) -> None:
    pack = make_pack(tmp_path / "pack", packages("alpha", "beta"))
    script = self_extracting(pack, tmp_path / "environment.sh")
    result = unpack(UnpackOptions(source=script, output_directory=tmp_path / "out", installer="rattler"))
    assert (result.prefix / "share" / "alpha" / "README").read_text() == "alpha\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["activate.sh", "env"]


def test_unpack_cli_reads_a_self_extracting_pack_from_stdin(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    pack = make_pack(tmp_path / "pack", packages("alpha"))
    script = self_extracting(pack, tmp_path / "environment.sh")
    out = tmp_path / "out"
    with open(script, "rb") as stdin:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "conda_pixi_pack",
                "unpack",
                "-",
                "-o",
                str(out),
                "--installer",
                "rattler",
                "-q",
            ],
            stdin=stdin,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stderr
    assert (out / "env" / "share" / "alpha" / "README").read_text() == "alpha\n"


def test_the_fake_executable_is_never_decoded(tmp_path: Path) -> None:
    """Only the archive's line is read as base64; what follows the end marker is ignored."""
    script = self_extracting(_tar(tmp_path), tmp_path / "environment.sh")
    script.write_bytes(script.read_bytes() + b"\n!!! not base64 at all !!!\n")
    assert _extract(script, tmp_path) == CONTENT


def test_a_marker_line_with_trailing_blanks(tmp_path: Path) -> None:
    """The script's own ``grep "^@@END_HEADER@@"`` accepts it, so do we."""
    script = self_extracting(_tar(tmp_path), tmp_path / "environment.sh")
    script.write_bytes(script.read_bytes().replace(b"\n@@END_HEADER@@\n", b"\n@@END_HEADER@@  \n", 1))
    assert _extract(script, tmp_path) == CONTENT


def test_a_tar_holding_a_marker_line_is_still_a_tar(tmp_path: Path) -> None:
    """On stdin a tar is recognised by its header, not taken for a script."""
    members = [_file("notes.txt", b"x\n@@END_HEADER@@\ny\n"), _file("pixi-pack.json", b"{}")]
    archive = raw_tar(tmp_path / "p.tar", members)
    target = tmp_path / "out"
    target.mkdir()
    extract_tar(io.BufferedReader(io.BytesIO(archive.read_bytes())), target, Reporter())  # type: ignore[arg-type]
    assert (target / "notes.txt").read_bytes() == b"x\n@@END_HEADER@@\ny\n"


def test_a_stream_cut_between_members_is_damaged(tmp_path: Path) -> None:
    """tarfile stops quietly at a header boundary: a pack on stdin must not lose its last files."""
    archive = raw_tar(tmp_path / "p.tar", [_file("pixi-pack.json", b"{}"), _file("pypi/w.whl", b"w" * 600)])
    cut = archive.read_bytes()[:1024]  # the first member only
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(
        PackError, match="standard input is damaged: it ends without tar's end-of-archive marker"
    ):
        extract_tar(io.BufferedReader(io.BytesIO(cut)), target, Reporter())  # type: ignore[arg-type]
