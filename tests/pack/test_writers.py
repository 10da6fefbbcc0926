"""The deterministic archive writer: order, headers, byte identity, atomicity, folder packs."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.format import TAR_MTIME
from conda_pixi_pack.pack.writers import folder as folder_writer
from conda_pixi_pack.pack.writers import tar as archive
from conda_pixi_pack.pack.writers import tree

if TYPE_CHECKING:
    from collections.abc import Mapping

#: A name longer than the 100 bytes a tar header holds: needs a GNU long-name record.
LONG_NAME = "channel/linux-64/" + "a-very-long-package-name-" * 4 + "1.0-h0123456_0.conda"

TREE: dict[str, bytes] = {
    "pixi-pack.json": b'{"version": "1"}\n',
    "environment.yml": b"channels:\n",
    "channel/noarch/repodata.json": b"{}\n",
    "channel/noarch/z-1.0-0.tar.bz2": b"z" * 3000,
    "channel/linux-64/repodata.json": b"{}\n",
    "channel/linux-64/b-1.0-0.conda": b"b" * 1000,
    LONG_NAME: b"long",
    "pypi/w-1.0-py3-none-any.whl": b"wheel",
}

#: Depth-first, siblings sorted by name, directories as their own entries (pixi-pack's order).
EXPECTED_ORDER = [
    "channel/",
    "channel/linux-64/",
    LONG_NAME,
    "channel/linux-64/b-1.0-0.conda",
    "channel/linux-64/repodata.json",
    "channel/noarch/",
    "channel/noarch/repodata.json",
    "channel/noarch/z-1.0-0.tar.bz2",
    "environment.yml",
    "pixi-pack.json",
    "pypi/",
    "pypi/w-1.0-py3-none-any.whl",
]


def make_tree(root: Path, files: Mapping[str, bytes], *, reverse: bool = False, mtime: int = 0) -> Path:
    """Write ``files`` below ``root`` (optionally in reverse order, with a given mtime)."""
    for name in sorted(files, reverse=reverse):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
        if mtime:
            os.utime(path, (mtime, mtime))
    return root


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return [m.name + ("/" if m.isdir() else "") for m in tar]


def test_entries_depth_first_with_directories(tmp_path: Path) -> None:
    make_tree(tmp_path, TREE, reverse=True)
    names = [e.name + ("/" if e.is_dir else "") for e in tree.entries(tmp_path)]
    assert names == EXPECTED_ORDER


def test_tar_members_order_and_content(tmp_path: Path) -> None:
    make_tree(tmp_path / "tree", TREE)
    sink = io.BytesIO()
    size = archive.write_tar(tmp_path / "tree", sink)
    data = sink.getvalue()
    assert size == len(data)
    assert tar_names(data) == EXPECTED_ORDER
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for name, content in TREE.items():
            extracted = tar.extractfile(name)
            assert extracted is not None
            assert extracted.read() == content


def test_tar_headers_are_normalised(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree", TREE, mtime=1_600_000_000)
    os.chmod(root / "pixi-pack.json", 0o600)
    os.chmod(root / "environment.yml", 0o755)  # an executable bit on disk does not leak into the pack
    sink = io.BytesIO()
    archive.write_tar(root, sink)
    data = sink.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        for member in members:
            assert member.mtime == TAR_MTIME, member.name
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", ""), member.name
            assert member.mode == (0o755 if member.isdir() else 0o644), member.name
            assert member.isdir() or member.isfile(), member.name
            assert not member.pax_headers, member.name
    # every header block is GNU ("ustar  \0") and none is a PAX record (type "x"/"g")
    offset = 0
    blocks = 0
    while offset < len(data) and data[offset : offset + 512] != b"\0" * 512:
        header = data[offset : offset + 512]
        assert header[257:265] == b"ustar  \0"
        assert header[156:157] in (b"0", b"5", b"L"), header[156:157]
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        offset += 512 + (size + 511) // 512 * 512
        blocks += 1
    assert blocks == len(EXPECTED_ORDER) + 1  # + the GNU long-name record of LONG_NAME


def test_byte_identical_whatever_the_disk_metadata(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "one" / "staging", TREE, mtime=1_000_000_000)
    second = make_tree(tmp_path / "elsewhere" / "deeper" / "x", TREE, reverse=True, mtime=1_700_000_000)
    for path in second.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    a = archive.write_archive(first, tmp_path / "a.tar")
    b = archive.write_archive(second, tmp_path / "b.tar")
    assert a == b
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_write_archive_replaces_an_existing_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree", TREE)
    target = tmp_path / "out" / "environment.tar"
    target.parent.mkdir()
    target.write_bytes(b"old pack")
    size = archive.write_archive(root, target)
    assert target.stat().st_size == size
    assert tar_names(target.read_bytes()) == EXPECTED_ORDER
    assert sorted(p.name for p in target.parent.iterdir()) == ["environment.tar"]
    # the umask decides the mode, as for any file the user creates (not mkstemp's 0o600)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"])
def test_write_archive_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    root = make_tree(tmp_path / "tree", TREE)
    target = tmp_path / "out" / "environment.tar"
    target.parent.mkdir()
    target.write_bytes(b"old pack")
    real_open = Path.open

    def failing_open(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if self.name == "z-1.0-0.tar.bz2":  # half-way through the archive
            raise error
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", failing_open)
    with pytest.raises(type(error)):
        archive.write_archive(root, target)
    assert target.read_bytes() == b"old pack"
    assert sorted(p.name for p in target.parent.iterdir()) == ["environment.tar"]


def test_refuses_a_symlink_in_the_tree(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree", TREE)
    (root / "channel" / "noarch" / "link.conda").symlink_to("/etc/passwd")
    with pytest.raises(PackError, match="link.conda: not a regular file"):
        archive.write_tar(root, io.BytesIO())


def test_write_tree_matches_the_tar(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / ".staging", TREE, mtime=1_600_000_000)
    os.chmod(staging / "pixi-pack.json", 0o600)
    sink = io.BytesIO()
    archive.write_tar(staging, sink)
    target = tmp_path / "pack"
    size = folder_writer.write_tree(staging, target)
    assert not staging.exists()
    assert size == sum(len(v) for v in TREE.values())
    listed = [e.name + ("/" if e.is_dir else "") for e in tree.entries(target)]
    assert listed == tar_names(sink.getvalue())
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue()), mode="r:") as tar:
        for member in tar:
            path = target / member.name
            st = path.stat()
            assert st.st_mode & 0o777 == member.mode, member.name
            assert int(st.st_mtime) == member.mtime, member.name
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                assert path.read_bytes() == extracted.read()
    assert target.stat().st_mode & 0o777 == 0o755


def test_write_tree_never_replaces_a_non_empty_folder(tmp_path: Path) -> None:
    staging = make_tree(tmp_path / ".staging", TREE)
    target = tmp_path / "pack"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(PackError, match="already exists and is not empty"):
        folder_writer.write_tree(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["precious.txt"]


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc/self/status")
def test_streaming_a_large_file_keeps_memory_flat(tmp_path: Path) -> None:
    """A 200 MB package is copied in chunks: peak RSS stays far below its size."""
    root = tmp_path / "tree" / "channel" / "linux-64"
    root.mkdir(parents=True)
    big = root / "big-1.0-0.conda"
    with big.open("wb") as handle:
        block = os.urandom(1024 * 1024)
        for _ in range(200):
            handle.write(block)
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from conda_pixi_pack.pack.writers import tar as archive
        archive.write_archive(Path({str(tmp_path / "tree")!r}), Path({str(tmp_path / "out.tar")!r}))
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest)
        print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    peak_mib = int(result.stdout.strip()) / 1024  # kB
    assert (tmp_path / "out.tar").stat().st_size > 200 * 1024 * 1024
    assert peak_mib < 100, f"peak RSS {peak_mib:.0f} MiB while archiving a 200 MiB file"


# -- the tar writer: tarfile's bytes, written by the kernel -------------------------------------

#: A tree with what trips tar writers: a GNU long name (> 100 bytes) deep in nested folders, a
#: long folder name, empty files and folders, bodies that do and do not end on a 512-byte block.
ODD_TREE: dict[str, bytes] = {
    "a/" + "n" * 120 + "/" + "deep-name-" * 12 + ".conda": os.urandom(70_000),
    "a/b/c/d/e/empty.json": b"",
    "a/b/exactly-one-block.bin": b"x" * 512,
    "a/b/big.tar.bz2": os.urandom(3 * 1024 * 1024 + 7),
    "z-empty.txt": b"",
}


def tarfile_reference(root: Path) -> bytes:
    """What ``tarfile.open(mode="w|", format=GNU_FORMAT)`` writes for the tree (the old writer)."""
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT, encoding="utf-8") as tar:
        for entry in tree.entries(root):
            info = tarfile.TarInfo(entry.name)
            info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
            info.mode = 0o755 if entry.is_dir else 0o644
            info.size = entry.size
            info.mtime = TAR_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.is_dir:
                tar.addfile(info)
            else:
                with entry.path.open("rb") as handle:
                    tar.addfile(info, handle)
    return sink.getvalue()


def write_to_pipe(root: Path) -> bytes:
    """``write_tar`` into a pipe, as ``pack -o -`` does (a child process writes its stdout)."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from conda_pixi_pack.pack.writers import tar as archive
        archive.write_tar(Path({str(root)!r}), sys.stdout.buffer)
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout


def no_ranged_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse ``copy_file_range`` at an explicit target offset (the parallel writer's), as a
    kernel or file system might; the sequential writer's plain calls still work."""
    real_copy = getattr(os, "copy_file_range", None)

    def refuse_ranged(source: int, target: int, count: int, *offsets: Any) -> int:
        if len(offsets) > 1 or real_copy is None:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_copy(source, target, count, *offsets)

    monkeypatch.setattr(os, "copy_file_range", refuse_ranged, raising=False)


def no_kernel_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make both kernel copies refuse (as on a file system or platform without them)."""

    def refuse(*args: object, **kwargs: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    monkeypatch.setattr(os, "sendfile", refuse, raising=False)


@pytest.mark.parametrize(
    "sink",
    ["memory", "file", "file-sequential", "file-without-ranged-copy", "pipe", "file-without-kernel-copy"],
    ids=["bytesio", "regular-file", "one-thread", "no-ranged-copy", "pipe", "read-write-fallback"],
)
def test_bytes_identical_to_tarfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sink: str) -> None:
    """Every way of writing gives exactly the bytes tarfile's stream writer gave before."""
    root = make_tree(tmp_path / "tree", {**TREE, **ODD_TREE})
    (root / "empty-folder").mkdir()
    reference = tarfile_reference(root)
    if sink == "memory":
        buffer = io.BytesIO()
        size = archive.write_tar(root, buffer)
        data = buffer.getvalue()
    elif sink == "pipe":
        data = write_to_pipe(root)
        size = len(data)
    else:
        if sink == "file-without-kernel-copy":
            no_kernel_copy(monkeypatch)
        elif sink == "file-sequential":
            monkeypatch.setattr(archive, "COPY_WORKERS", 1)
        elif sink == "file-without-ranged-copy":
            no_ranged_copy(monkeypatch)
        size = archive.write_archive(root, tmp_path / "out.tar")
        data = (tmp_path / "out.tar").read_bytes()
    assert data == reference
    assert size == len(reference)
    assert len(data) % tarfile.RECORDSIZE == 0


def test_python_and_gnu_tar_read_it(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree", ODD_TREE)
    target = tmp_path / "out.tar"
    archive.write_archive(root, target)
    with tarfile.open(target, mode="r:") as tar:
        for name, content in ODD_TREE.items():
            member = tar.getmember(name)
            assert (member.size, member.mode, member.mtime) == (len(content), 0o644, TAR_MTIME)
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == content
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    listed = subprocess.run(["tar", "tvf", str(target)], capture_output=True, text=True, check=True)
    assert listed.stderr == ""
    for name, content in ODD_TREE.items():
        (line,) = [line for line in listed.stdout.splitlines() if line.endswith(" " + name)]
        assert line.startswith("-rw-r--r-- 0/0") and f" {len(content)} " in line, line
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "xf", str(target), "-C", str(out)], check=True)
    for name, content in ODD_TREE.items():
        assert (out / name).read_bytes() == content


@pytest.mark.parametrize("writer", ["parallel", "sequential"])
@pytest.mark.parametrize("when", ["before-copy", "during-copy"], ids=["size-at-open", "end-of-file-early"])
def test_a_file_that_changes_while_packing_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str, writer: str
) -> None:
    """The header already says the size: a file that shrank would shift every later member."""
    if writer == "sequential":
        monkeypatch.setattr(archive, "COPY_WORKERS", 1)
    root = make_tree(tmp_path / "tree", ODD_TREE)
    victim = root / "a/b/big.tar.bz2"
    if when == "before-copy":
        real_entries = archive.entries

        def entries_then_shrink(path: Path, absent: Mapping[str, int] | None = None) -> list[tree.Entry]:
            listed = real_entries(path, absent)
            victim.write_bytes(b"shorter")
            return listed

        monkeypatch.setattr(archive, "entries", entries_then_shrink)
    else:  # after the size was checked, before the first byte is copied
        real_copy = os.copy_file_range
        victim_size = victim.stat().st_size

        def shrink_then_copy(source: int, *args: Any) -> int:
            if os.fstat(source).st_size == victim_size:
                os.truncate(victim, victim_size // 2)
            return real_copy(source, *args)

        monkeypatch.setattr(os, "copy_file_range", shrink_then_copy)
    target = tmp_path / "out" / "environment.tar"
    target.parent.mkdir()
    with pytest.raises(PackError, match=r"a/b/big\.tar\.bz2 changed while the pack was written"):
        archive.write_archive(root, target)
    assert list(target.parent.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="os.copy_file_range is Linux-only")
def test_bodies_are_copied_by_several_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Into a regular file, file bodies are copied in parallel (a warm pack is this copy)."""
    real_copy = os.copy_file_range
    threads: set[str] = set()

    def recording_copy(*args: Any) -> int:
        threads.add(threading.current_thread().name)
        return real_copy(*args)

    monkeypatch.setattr(os, "copy_file_range", recording_copy)
    monkeypatch.setattr(archive, "COPY_CHUNK", 64 * 1024)  # many jobs from the small tree
    root = make_tree(tmp_path / "tree", {**TREE, **ODD_TREE})
    archive.write_archive(root, tmp_path / "out.tar")
    assert (tmp_path / "out.tar").read_bytes() == tarfile_reference(root)
    assert any(name.startswith("conda-pixi-pack-copy") for name in threads), threads


def test_full_disk_is_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "tree", TREE)
    copied: list[int] = []
    real_copy = archive._TarWriter.copy

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def count(self: archive._TarWriter, name: str, source: Any, size: int) -> None:
        copied.append(size)
        real_copy(self, name, source, size)

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    monkeypatch.setattr(archive._TarWriter, "copy", count)
    target = tmp_path / "out" / "environment.tar"
    target.parent.mkdir()
    with pytest.raises(PackError, match=r"No space left on device \(the pack needs \d+ MB\)") as caught:
        archive.write_archive(root, target)
    assert caught.value.hint and "-o" in caught.value.hint
    assert copied == []  # refused before writing anything
    assert list(target.parent.iterdir()) == []


def test_no_preallocation_where_unsupported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    root = make_tree(tmp_path / "tree", TREE)
    archive.write_archive(root, tmp_path / "out.tar")
    assert (tmp_path / "out.tar").read_bytes() == tarfile_reference(root)


def test_folder_pack_never_touches_hard_linked_files(tmp_path: Path) -> None:
    """A cache entry linked into the staging folder keeps its own mode and mtime."""
    staging = make_tree(tmp_path / ".staging", TREE)
    outside = tmp_path / "cache" / "b-1.0-0.conda"
    outside.parent.mkdir()
    outside.write_bytes(b"b" * 1000)
    os.chmod(outside, 0o640)
    os.utime(outside, ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    linked = staging / "channel/linux-64/b-1.0-0.conda"
    linked.unlink()
    os.link(outside, linked)
    before = outside.stat()
    target = tmp_path / "pack"
    folder_writer.write_tree(staging, target)
    after = outside.stat()
    assert (after.st_mode, after.st_mtime_ns, after.st_nlink) == (before.st_mode, before.st_mtime_ns, 1)
    packed = (target / "channel/linux-64/b-1.0-0.conda").stat()
    assert packed.st_ino != after.st_ino
    assert (packed.st_mode & 0o777, int(packed.st_mtime)) == (0o644, TAR_MTIME)
    assert (target / "channel/linux-64/b-1.0-0.conda").read_bytes() == b"b" * 1000
    assert [p.name for p in (target / "channel/linux-64").iterdir() if p.name.startswith(".")] == []
    for entry in tree.entries(target):  # folders too: the copy must not bump their mtime
        assert int(entry.path.stat().st_mtime) == TAR_MTIME, entry.name


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="os.copy_file_range is Linux-only")
def test_bodies_are_copied_by_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Into a regular file no body byte passes through Python (the speed of a warm pack)."""

    def through_python(*args: object) -> int:
        raise AssertionError("a body was copied through Python")

    monkeypatch.setattr(archive._TarWriter, "_user_copy", through_python)
    root = make_tree(tmp_path / "tree", ODD_TREE)
    archive.write_archive(root, tmp_path / "out.tar")
    assert (tmp_path / "out.tar").read_bytes() == tarfile_reference(root)


#: The members left for the caller in the tests of ``archive_around``: packages of two folders,
#: one of them needing a GNU long-name record.
HOLES = ["channel/linux-64/b-1.0-0.conda", LONG_NAME, "channel/noarch/z-1.0-0.tar.bz2"]


@pytest.mark.parametrize("copy", ["kernel", "read-write-fallback"])
def test_an_archive_written_around_its_packages_is_the_same_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: str
) -> None:
    """The headers and small files first, the packages filled into their slots afterwards (in
    any order, as downloads finish): the very bytes of the archive of the whole tree, whether
    the kernel copies the small files to their offsets or Python does."""
    full = make_tree(tmp_path / "full", TREE)
    archive.write_archive(full, tmp_path / "whole.tar")
    if copy == "read-write-fallback":
        no_kernel_copy(monkeypatch)
    bare = make_tree(tmp_path / "bare", {k: v for k, v in TREE.items() if k not in HOLES})
    target = tmp_path / "around.tar"
    with archive.archive_around(bare, target, {name: len(TREE[name]) for name in HOLES}) as holes:
        assert sorted(holes.slots) == sorted(HOLES)
        for name in reversed(HOLES):
            slot = holes.slots[name]
            assert slot.size == len(TREE[name])
            os.pwrite(slot.fd, TREE[name], slot.offset)
        assert not target.exists()  # nothing at the target before the block ends
    assert target.read_bytes() == (tmp_path / "whole.tar").read_bytes()
    assert holes.size == target.stat().st_size
    assert tar_names(target.read_bytes()) == EXPECTED_ORDER


def test_an_archive_whose_slots_were_not_all_filled_is_never_there(tmp_path: Path) -> None:
    """A failure inside the block (a download that failed): no archive, no temporary file, and
    the file that was at the target is untouched."""
    bare = make_tree(tmp_path / "bare", {k: v for k, v in TREE.items() if k not in HOLES})
    out = tmp_path / "out"
    out.mkdir()
    target = out / "environment.tar"
    target.write_bytes(b"an older pack")
    with (
        pytest.raises(PackError, match="a download failed"),
        archive.archive_around(bare, target, {name: len(TREE[name]) for name in HOLES}),
    ):
        raise PackError("a download failed")
    assert [p.name for p in out.iterdir()] == ["environment.tar"]
    assert target.read_bytes() == b"an older pack"


def test_a_file_left_for_the_caller_must_have_its_folder(tmp_path: Path) -> None:
    """A hole in a folder the tree does not have, or over a file it has, is a bug: refused."""
    bare = make_tree(tmp_path / "bare", {"channel/noarch/repodata.json": b"{}\n"})
    with pytest.raises(PackError, match="no such folder"):
        tree.entries(bare, {"channel/linux-64/a.conda": 1})
    with pytest.raises(PackError, match="there twice"):
        tree.entries(bare, {"channel/noarch/repodata.json": 1})
