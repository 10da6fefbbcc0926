"""Packs built to attack the machine that unpacks them, fed to the real command line.

Each is a good pack (tests/support/packs.py, pixi-pack's own layout) with one hostile change. The
user must see one ``error:`` line saying what is wrong, no traceback, and find nothing written
outside the private temporary folder: no environment, no activation script, no temporary folder
left, no file of the pack anywhere else.

Already covered elsewhere, and not repeated here: each unsafe member fed to the tar reader itself
(tests/unpack/test_reader.py ``test_unsafe_member_refused``), a pack cut short
(``test_truncated_tar``, ``test_member_cut_short_on_the_file_path``,
``test_a_pack_cut_between_members_is_damaged``), a damaged self-extracting script
(tests/unpack/test_self_extracting.py ``test_a_damaged_script_is_refused``), and each broken
``pixi-pack.json`` or repodata fed to ``unpack`` in-process (tests/unpack/test_unpack.py
``test_validation_errors_leave_nothing``: version 1 as a number, version "2", another platform,
a sha256 or size that does not match, a missing package, an unsafe file name, no ``channel/``).
"""

from __future__ import annotations

import io
import json
import re
import resource
import subprocess
import sys
import tarfile
from typing import TYPE_CHECKING, Any, Final

import pytest

from tests.faults.helpers import CLI, cli_env, error_line, lost_bytes, snapshot, split_created
from tests.faults.hostile import ESCAPES, escaped_files, escaping_package
from tests.support.packs import damage, make_pack_dir, tar_dir

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import Channel
    from tests.faults.conftest import Ledger

#: Largest file a child may write in these tests (``RLIMIT_FSIZE``): a hostile pack that makes
#: the reader write gigabytes is stopped at this size instead of filling the disk.
FILE_LIMIT: Final = 64 * 1024 * 1024
#: Seconds a command may take on a hostile pack of a few kilobytes.
TIME_LIMIT: Final = 6


def _member(name: str, data: bytes = b"x", **fields: Any) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    if info.isreg():
        info.size = len(data)
        return info, data
    return info, None


def _sparse_member(name: str, declared: int) -> bytes:
    """A GNU sparse member (old format, type ``S``): one 512-byte block of data at the end of a
    ``declared``-byte file, the rest a hole that a reader expands into zeros."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = 512
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    header[386:398] = tarfile.itn(declared - 512, 12, tarfile.GNU_FORMAT)  # the chunk's offset
    header[398:410] = tarfile.itn(512, 12, tarfile.GNU_FORMAT)  # its length
    header[483:495] = tarfile.itn(declared, 12, tarfile.GNU_FORMAT)  # the file's real size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + b"s" * 512


def _declared_member(name: str, declared: int) -> bytes:
    """A regular member whose header says ``declared`` bytes, with only one block behind it."""
    info = tarfile.TarInfo(name)
    info.size = declared
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + b"d" * 512


def hostile_tar(src: Path, target: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]] | bytes) -> Path:
    """The pack folder ``src`` as pixi-pack tars it, with ``extra`` members (or raw header and data
    blocks) after its own, then the end-of-archive blocks."""
    plain = tar_dir(src, target.with_suffix(".plain"))
    body = plain.read_bytes()
    plain.unlink()
    end = len(body)
    while end >= 1024 and body[end - 512 : end] == bytes(512):  # strip the zero blocks and padding
        end -= 512
    with open(target, "wb") as out:
        out.write(body[:end])
        if isinstance(extra, bytes):
            out.write(extra)
        else:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for info, data in extra:
                    tar.addfile(info, io.BytesIO(data) if data is not None else None)
            raw = buffer.getvalue()
            while raw[-512:] == bytes(512):
                raw = raw[:-512]
            out.write(raw)
        out.write(bytes(1024))
    return target


#: Hostile members: a builder (given the folder a file must never reach) and the expected line.
MEMBERS: dict[str, tuple[Callable[[Path], Any], str]] = {
    "absolute-path": (
        lambda outside: [_member(f"{outside}/evil-escaped.txt")],
        r"unsafe pack: member '/\S+/evil-escaped\.txt' has an absolute path",
    ),
    "dotdot": (
        lambda outside: [_member("channel/../../evil-escaped.txt")],
        r"unsafe pack: member 'channel/\.\./\.\./evil-escaped\.txt' points outside the pack",
    ),
    "symlink-then-file-through-it": (
        lambda outside: [
            _member("channel/link", type=tarfile.SYMTYPE, linkname=str(outside)),
            _member("channel/link/evil-escaped.txt"),
        ],
        r"unsafe pack: member 'channel/link' is a symbolic link",
    ),
    "hard-link-to-outside": (
        lambda outside: [_member("channel/hard", type=tarfile.LNKTYPE, linkname=f"{outside}/target")],
        r"unsafe pack: member 'channel/hard' is a hard link",
    ),
    "device-node": (
        lambda outside: [_member("channel/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)],
        r"unsafe pack: member 'channel/null' is a device, fifo or other special file",
    ),
    "member-repeated": (
        lambda outside: [_member("pixi-pack.json", b'{"version": "1", "platform": "linux-64"}')],
        r"unsafe pack: member 'pixi-pack\.json' appears twice",
    ),
    "10GB-declared-size": (
        lambda outside: _declared_member("channel/linux-64/huge-1.0-0.conda", 10 * 1024**3),
        r"is damaged",
    ),
    "10GB-sparse-member": (
        lambda outside: _sparse_member("channel/linux-64/sparse-1.0-0.conda", 10 * 1024**3),
        r"unsafe pack: member 'channel/linux-64/sparse-1\.0-0\.conda' is a sparse file",
    ),
}

#: How the pack reaches the command: a file (random-access reader) or standard input (stream reader).
MODES: Final = ("unpack-file", "unpack-stdin", "inspect-file", "inspect-stdin")


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def run_on(pack: Path, mode: str, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command a user would run on ``pack``, bounded in file size and time."""
    verb, how = mode.split("-")
    source = "-" if how == "stdin" else str(pack)
    args = (
        [verb, source, "--verify"]
        if verb == "inspect"
        else [verb, source, "-o", str(out), "--installer", "rattler"]
    )
    with open(pack, "rb") as stdin:
        return subprocess.run(
            [*CLI, *args],
            stdin=stdin if how == "stdin" else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=TIME_LIMIT,
            preexec_fn=_limit_files if sys.platform == "linux" else None,
        )


def _cases() -> list[Any]:
    cases = []
    for kind in MEMBERS:
        for mode in MODES:
            cases.append(pytest.param(kind, mode, id=f"{kind}-{mode}"))
    return cases


@pytest.mark.parametrize(("kind", "mode"), _cases())
def test_a_hostile_member_is_refused_and_nothing_escapes(
    tmp_path: Path, packages: Callable[..., list[Path]], ledger: Ledger, kind: str, mode: str
) -> None:
    build, message = MEMBERS[kind]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("a file the pack must not reach\n")
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta"), platform="linux-64")
    pack = hostile_tar(src, tmp_path / "environment.tar", build(outside))
    out = tmp_path / "out"
    out.mkdir()
    env = cli_env(tmp_path / "tmp")
    before = snapshot(tmp_path)
    done = run_on(pack, mode, out, env)
    after = snapshot(tmp_path)
    left, escaped = split_created(before, after)
    ledger.escape(len(escaped) + len(escaped_files(tmp_path)))
    ledger.lose(lost_bytes(before, after))
    assert done.returncode == 1, done.stderr
    line = error_line(done.stderr)
    assert "File too large" not in line and "No space left" not in line, line
    assert re.search(message, line), line
    assert (left, escaped) == ([], [])
    assert escaped_files(tmp_path) == []
    assert list((tmp_path / "tmp").iterdir()) == []


# -- broken metadata ---------------------------------------------------------------------------------


def _edit_metadata(src: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    path = src / "pixi-pack.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _edit_repodata(src: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    path = src / "channel" / "linux-64" / "repodata.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "metadata-a-list": (
        lambda src: _edit_metadata(src, lambda m: [m]),
        r"pixi-pack\.json is not a JSON object",
    ),
    "platform-a-number": (
        lambda src: _edit_metadata(src, lambda m: {**m, "platform": 64}),
        r"pixi-pack\.json names no platform",
    ),
    "version-null": (
        lambda src: _edit_metadata(src, lambda m: {**m, "version": None}),
        r"unsupported pack format version None",
    ),
    "origins-a-string": (
        lambda src: _edit_metadata(src, lambda m: {**m, "conda-pixi-pack": {"origins": "x"}}),
        None,  # unknown keys and shapes of our extension are ignored, as pixi-unpack does: unpacks
    ),
    "repodata-missing": (
        lambda src: (src / "channel" / "linux-64" / "repodata.json").unlink(),
        r"broken pack: channel/linux-64/ holds packages but no repodata\.json",
    ),
    "repodata-not-json": (
        lambda src: (src / "channel" / "linux-64" / "repodata.json").write_text("{"),
        r"repodata\.json is damaged: it is not valid JSON",
    ),
    "repodata-packages-a-list": (
        lambda src: _edit_repodata(src, lambda r: {**r, "packages.conda": [1, 2]}),
        r"repodata\.json",
    ),
    "record-size-a-string": (
        lambda src: _edit_repodata(
            src,
            lambda r: {
                **r,
                "packages.conda": {k: {**v, "size": "big"} for k, v in r["packages.conda"].items()},
            },
        ),
        r"the record of channel/linux-64/alpha-1\.0-h0_0\.conda has a size that is not a number: 'big'",
    ),
    "record-sha256-a-number": (
        lambda src: _edit_repodata(
            src,
            lambda r: {
                **r,
                "packages.conda": {k: {**v, "sha256": 7} for k, v in r["packages.conda"].items()},
            },
        ),
        r"the record of channel/linux-64/alpha-1\.0-h0_0\.conda has a sha256 that is not 64 hex digits: 7",
    ),
    "sha256-does-not-match-conda-backend": (
        lambda src: damage(next((src / "channel" / "linux-64").glob("alpha-*"))),
        r"channel/linux-64/alpha-1\.0-h0_0\.conda does not match its sha256",
    ),
}


#: Known bugs among the broken metadata cases (strict xfail: the mark goes once they are fixed).
BROKEN_BUGS: Final[dict[str, str]] = {}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        pytest.param(
            *case,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=BROKEN_BUGS[name])] if name in BROKEN_BUGS else [],
        )
        for name, case in BROKEN.items()
    ],
)
def test_broken_metadata_is_one_clear_line(
    tmp_path: Path,
    packages: Callable[..., list[Path]],
    ledger: Ledger,
    request: pytest.FixtureRequest,
    kind: Callable[[Path], None],
    message: str | None,
) -> None:
    installer = "conda" if request.node.callspec.id.endswith("conda-backend") else "rattler"
    env = cli_env(tmp_path / "tmp")
    if installer == "conda":
        env = {**request.getfixturevalue("conda_env"), **env}
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta"), platform="linux-64")
    kind(src)
    pack = tar_dir(src, tmp_path / "environment.tar")
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    done = subprocess.run(
        [*CLI, "unpack", str(pack), "-o", str(out), "--installer", installer],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    after = snapshot(tmp_path)
    if message is None:  # ignored: the pack unpacks
        assert done.returncode == 0, done.stderr
        assert (out / "env" / "conda-meta").is_dir()
        return
    left, escaped = split_created(before, after)
    ledger.escape(len(escaped))
    ledger.lose(lost_bytes(before, after))
    assert done.returncode == 1, done.stderr
    line = error_line(done.stderr)
    assert re.search(message, line), line
    assert (left, escaped) == ([], [])
    assert list((tmp_path / "tmp").iterdir()) == []


# -- a package whose own tar escapes -----------------------------------------------------------------


def _package_cases() -> list[Any]:
    cases = []
    for how in ESCAPES:
        for fmt in ("conda", "tar.bz2"):
            for installer in ("rattler", "rattler-from-files", "conda"):
                marks: list[Any] = [pytest.mark.conda] if installer == "conda" else []
                cases.append(pytest.param(how, fmt, installer, marks=marks, id=f"{how}-{fmt}-{installer}"))
    return cases


#: What each backend says, by how the package escapes (rattler's extractor refuses a file through
#: a link; the paths a package lists are checked before rattler links them; conda refuses all
#: three itself). "rattler-from-files" is the rattler backend where packages cannot be extracted
#: beforehand (a tab in the --pkgs-dir path): rattler reads the package files itself.
_LISTED_OUTSIDE: Final = r"unsafe pack: channel/linux-64/evil-1\.0-0\.\S+ would write outside the environment"
PACKAGE_MESSAGES: Final = {
    ("rattler", "dotdot"): rf"{_LISTED_OUTSIDE} \('(\.\./)+evil-escaped\.txt'\)",
    ("rattler", "absolute"): rf"{_LISTED_OUTSIDE} \('/\S+/evil-escaped\.txt'\)",
    (
        "rattler",
        "symlink-then-file",
    ): r"extracting channel/linux-64/evil-1\.0-0\.\S+ failed: .*outside of destination",
    ("rattler-from-files", "dotdot"): rf"{_LISTED_OUTSIDE} \('(\.\./)+evil-escaped\.txt'\)",
    ("rattler-from-files", "absolute"): rf"{_LISTED_OUTSIDE} \('/\S+/evil-escaped\.txt'\)",
    ("rattler-from-files", "symlink-then-file"): r"evil-1\.0-0\.\S+.*outside of destination",
    ("conda", "dotdot"): r"evil-1\.0-0\.\S+.* contains unsafe path: (\.\./)+evil-escaped\.txt",
    ("conda", "absolute"): r"evil-1\.0-0\.\S+.* contains unsafe path: /\S+/evil-escaped\.txt",
    ("conda", "symlink-then-file"): r"evil-1\.0-0\.\S+.* contains unsafe path: lib/evil/evil-escaped\.txt",
}


@pytest.mark.parametrize(("how", "fmt", "installer"), _package_cases())
def test_a_package_escaping_its_folder_is_refused(
    tmp_path: Path,
    sample_channel: Channel,
    ledger: Ledger,
    request: pytest.FixtureRequest,
    how: str,
    fmt: str,
    installer: str,
) -> None:
    """A package whose own tar has a member with ``..``, an absolute path, or a file through a
    link: refused naming it, no environment, and no file of it outside its cache folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    package = escaping_package(tmp_path / "channel", how, outside, fmt)
    src = make_pack_dir(tmp_path / "src", [package, sample_channel.packages["beta"]], platform="linux-64")
    pack = tar_dir(src, tmp_path / "environment.tar")
    out, pkgs = tmp_path / "out", tmp_path / ("pk\tgs" if installer == "rattler-from-files" else "pkgs")
    env = cli_env(tmp_path / "tmp")
    if installer == "conda":
        env = {**request.getfixturevalue("conda_env"), **env}
    backend = installer.partition("-")[0]
    before = snapshot(tmp_path)
    done = subprocess.run(
        [*CLI, "unpack", str(pack), "-o", str(out), "--installer", backend, "--pkgs-dir", str(pkgs)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    after = snapshot(tmp_path, skip=[pkgs])
    left, escaped = split_created(before, after)
    outside_cache = [p for p in escaped_files(tmp_path) if not p.startswith(str(pkgs) + "/")]
    ledger.escape(len(escaped) + len(outside_cache))
    assert done.returncode == 1, done.stderr
    line = error_line(done.stderr)
    assert re.search(PACKAGE_MESSAGES[installer, how], line), line
    assert (left, escaped) == ([], [])
    assert outside_cache == []
    assert list((tmp_path / "tmp").iterdir()) == []
