"""Mutated packs fed to ``inspect`` and ``unpack`` in-process: only a PackError may come out, and
nothing may be written outside the target folder, ever.

Mutations of a small real pack (pixi-pack's layout, two packages): bytes flipped anywhere, the
file cut short, a tar header field rewritten with its checksum fixed (so the reader goes past it),
a member renamed to something hostile, a JSON file of the pack given values of the wrong type.
Hypothesis runs a fixed number of examples, derandomized (the same ones on every CI run), and
shrinks a failure to the smallest mutation that shows it.
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

hypothesis = pytest.importorskip(
    "hypothesis", reason="hypothesis is in the test extras: pip install -e '.[test]'"
)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conda_pixi_pack.errors import PackError  # noqa: E402
from conda_pixi_pack.unpack.inspect import inspect_pack  # noqa: E402
from conda_pixi_pack.unpack.pipeline import UnpackOptions, unpack  # noqa: E402
from tests.faults.helpers import snapshot, split_created  # noqa: E402
from tests.support.packs import make_pack_dir, tar_dir  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import Channel
    from tests.faults.conftest import Ledger

#: Examples per run: bounded so that the whole suite stays within minutes on 2 cores.
EXAMPLES: Final = 300
#: A mutation may make a reader write much (a huge declared size): no file beyond this.
FILE_LIMIT: Final = 256 * 1024 * 1024

#: Names a renamed member takes: each would land outside, clash, or confuse a reader.
HOSTILE_NAMES: Final = [
    "../evil",
    "/tmp/evil",
    "channel/../../evil",
    "pixi-pack.json",
    "channel/linux-64",
    "channel/linux-64/repodata.json",
    "./pixi-pack.json",
    "channel\\..\\..\\evil",
    "C:evil",
    "a" * 99,
    "channel/linux-64/x.conda",
    "pypi/evil.whl",
    "",
]
#: Header fields (offset, length) of a ustar/GNU header, and values worth writing there.
FIELDS: Final = {
    "name": (0, 100),
    "mode": (100, 8),
    "size": (124, 12),
    "type": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 8),
    "prefix": (345, 155),
}
FIELD_VALUES: Final = [
    b"",
    b"0",
    b"7777777",
    b"77777777777",
    b"\x80\x00\x00\x00\x00\x00\x00\x02\x80\x00\x00\x00",  # base-256: 10 GB
    b"1",
    b"2",
    b"3",
    b"5",
    b"6",
    b"L",
    b"K",
    b"x",
    b"g",
    b"../../evil",
    b"/etc/passwd",
    b"ustar\x0000",
    b"ustar  \x00",
    b"\xff" * 12,
]
#: JSON values of every type, for the pack's JSON files.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _fix_checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])


def _headers(data: bytes) -> list[int]:
    """Offsets of the member headers of the tar ``data`` (a good one: the original pack)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [member.offset for member in tar.getmembers()]


def flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for where, mask in flips:
        out[where % len(out)] ^= mask or 1
    return bytes(out)


def edit_header(data: bytes, member: int, field: str, value: bytes) -> bytes:
    out = bytearray(data)
    offsets = _headers(data)
    start = offsets[member % len(offsets)]
    header = bytearray(out[start : start + 512])
    at, length = FIELDS[field]
    header[at : at + length] = value[:length].ljust(length, b"\0")
    _fix_checksum(header)
    out[start : start + 512] = header
    return bytes(out)


def rename(data: bytes, member: int, name: str) -> bytes:
    return edit_header(data, member, "name", name.encode())


@st.composite
def mutations(draw: st.DrawFn, pack: bytes, source: Path) -> tuple[str, bytes]:
    """One mutation of ``pack`` (whose folder is ``source``): its description and the bytes."""
    kind = draw(st.sampled_from(["flip", "truncate", "header", "rename", "json", "combined"]))
    if kind == "flip":
        flips = draw(
            st.lists(st.tuples(st.integers(0, len(pack) - 1), st.integers(0, 255)), min_size=1, max_size=8)
        )
        return f"flip {flips}", flip(pack, flips)
    if kind == "truncate":
        size = draw(st.integers(0, len(pack) - 1))
        return f"truncate to {size}", pack[:size]
    if kind == "header":
        member, field = draw(st.integers(0, 64)), draw(st.sampled_from(sorted(FIELDS)))
        value = draw(st.sampled_from(FIELD_VALUES) | st.binary(max_size=12))
        return f"header {member} {field}={value!r}", edit_header(pack, member, field, value)
    if kind == "rename":
        member, name = draw(st.integers(0, 64)), draw(st.sampled_from(HOSTILE_NAMES))
        return f"rename {member} to {name!r}", rename(pack, member, name)
    if kind == "json":
        return _json_mutation(draw, source)
    first = draw(mutations(pack, source))
    flips = draw(st.lists(st.tuples(st.integers(0, len(pack) - 1), st.integers(1, 255)), max_size=3))
    return f"{first[0]} then flip {flips}", flip(first[1], flips) if first[1] else first[1]


def _json_mutation(draw: st.DrawFn, source: Path) -> tuple[str, bytes]:
    """A JSON file of the pack with one key set to a value of any type, re-tarred as pixi-pack does."""
    import shutil

    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.json"))
    chosen = draw(st.sampled_from(files))
    document = json.loads((source / chosen).read_text())
    path = draw(st.sampled_from(_paths(document)))
    value = draw(JSON_VALUES)
    document = _set(document, path, value)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "pack"
        shutil.copytree(source, copy)
        (copy / chosen).write_text(json.dumps(document))
        data = tar_dir(copy, Path(scratch) / "pack.tar").read_bytes()
    return f"json {chosen} {path}={value!r}", data


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a JSON document (the document itself included)."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    return found


def _set(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(document)
    copy[path[0]] = _set(copy[path[0]], path[1:], value)
    return copy


@contextmanager
def bounded_files(limit: int) -> Iterator[None]:
    """No file of this process grows past ``limit`` meanwhile (Python ignores SIGXFSZ: EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(
        resource.RLIMIT_FSIZE, (min(limit, hard) if hard != resource.RLIM_INFINITY else limit, hard)
    )
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, sample_channel: Channel) -> tuple[bytes, Path]:
    """The pack every example mutates, and its folder."""
    root = tmp_path_factory.mktemp("fuzz")
    source = make_pack_dir(
        root / "src",
        [sample_channel.packages["alpha"], sample_channel.packages["beta"]],
        platform="linux-64",
        origins={"linux-64/alpha-1.0-h0_0.conda": {"url": "https://example.invalid/a.conda", "channel": "x"}},
    )
    return tar_dir(source, root / "environment.tar").read_bytes(), source


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="bounded with RLIMIT_FSIZE, as on Linux")
def test_mutated_packs_raise_only_pack_errors_and_write_nothing_outside(
    original: tuple[bytes, Path],
    tmp_path_factory: pytest.TempPathFactory,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pack, source = original
    outcomes: dict[str, int] = {}
    private = tmp_path_factory.mktemp("fuzz-tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    monkeypatch.setenv("TMPDIR", str(private))

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=timedelta(seconds=30),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )
    @given(mutation=mutations(pack, source))
    def check(mutation: tuple[str, bytes]) -> None:
        description, data = mutation
        work = Path(tempfile.mkdtemp(prefix="case-", dir=tmp_path_factory.getbasetemp()))
        target = work / "pack.tar"
        target.write_bytes(data)
        before = snapshot(work)
        outcome = []
        with bounded_files(FILE_LIMIT):
            for name, run in (
                ("inspect", lambda: inspect_pack(target, verify=True)),
                ("inspect-stream", lambda: _inspect_stream(target)),
                (
                    "unpack",
                    lambda: unpack(
                        UnpackOptions(source=target, output_directory=work / "out", installer="rattler")
                    ),
                ),
            ):
                try:
                    run()
                    outcome.append(f"{name} ok")
                except PackError as exc:
                    assert exc.message.isprintable() and "Traceback" not in exc.message, (
                        description,
                        exc.message,
                    )
                    outcome.append(f"{name} refused")
        left, escaped = split_created(before, snapshot(work))
        ledger.escape(len(escaped))
        assert escaped == [], (description, escaped)
        if outcome[-1] == "unpack refused":
            assert left == [], (description, left)  # no prefix, no script, no temporary folder
        assert os.listdir(private) == [], (description, os.listdir(private))
        key = ", ".join(outcome)
        outcomes[key] = outcomes.get(key, 0) + 1
        import shutil

        shutil.rmtree(work)

    check()
    ledger.cases = sum(outcomes.values())
    print(f"fuzz: {ledger.cases} mutated packs: {outcomes}")
    assert ledger.cases >= EXAMPLES
    assert len(outcomes) >= 2, outcomes  # the mutations reach more than one outcome


class _Pipe(io.RawIOBase):
    """A file read as a pipe is (no seek), so that the stream reader is the one fuzzed."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


def _inspect_stream(target: Path) -> None:
    with io.BufferedReader(_Pipe(target)) as stream:
        inspect_pack(stream, verify=True)
