"""--use-cache: channel-shaped, tagged, verified hits without HTTP, atomic entries shared by packs."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rattler import Subdir

from conda_pixi_pack.artifacts import Artifact, file_mismatch
from conda_pixi_pack.cli.main import main
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.pack import cache as cache_module
from conda_pixi_pack.pack.cache import CACHEDIR_TAG, STAMP_SUFFIX, Cache, stamp_path
from conda_pixi_pack.pack.destination import SlotDestination
from conda_pixi_pack.pack.download import NetworkSettings, fetch_all
from conda_pixi_pack.pack.sources.lockfile import load
from conda_pixi_pack.pack.writers.tar import Slot
from tests.support.slow_server import SlowServer, artifact_for, leftovers

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.conftest import Channel
    from tests.support.server import ChannelServer


def artifacts_of(project: Path) -> list[Artifact]:
    env = load(project, "default", "linux-64")
    return [c.artifact for c in env.conda] + [w.artifact for w in env.wheels]


@pytest.fixture
def project_server(
    sample_channel: Channel, make_server: Callable[[Path], ChannelServer], make_project: Callable[..., Path]
) -> tuple[Path, ChannelServer]:
    server = make_server(sample_channel.root)
    return make_project(["alpha", "beta", "noarch-data"], server=server, wheels=["fixture-wheel"]), server


def test_cold_then_warm_makes_no_request(
    project_server: tuple[Path, ChannelServer], sample_channel: Channel, tmp_path: Path
) -> None:
    project, server = project_server
    artifacts = artifacts_of(project)
    cache = tmp_path / "cache"
    fetch_all(artifacts, tmp_path / "cold", network=NetworkSettings(), cache_dir=cache)
    assert len(server.requests) == 4
    tag = (cache / CACHEDIR_TAG).read_text()
    assert tag.startswith("Signature: 8a477f597d28d172789f06886806bc55")
    for name in ("alpha", "beta", "noarch-data"):
        rel = sample_channel.relpath(name)
        assert (cache / rel).read_bytes() == sample_channel.packages[name].read_bytes()  # channel-shaped
    assert (cache / "pypi/fixture_wheel-1.0-py3-none-any.whl").is_file()

    server.reset()
    paths = fetch_all(artifacts, tmp_path / "warm", network=NetworkSettings(), cache_dir=cache)
    assert server.requests == []
    for rel, path in paths.items():
        assert path == tmp_path / "warm" / rel
        assert path.stat().st_ino == (cache / rel).stat().st_ino  # hard-linked, not copied
    assert leftovers(cache) == []


def test_corrupt_entry_is_fetched_again(
    project_server: tuple[Path, ChannelServer], sample_channel: Channel, tmp_path: Path
) -> None:
    project, server = project_server
    artifacts = artifacts_of(project)
    cache = tmp_path / "cache"
    fetch_all(artifacts, tmp_path / "one", network=NetworkSettings(), cache_dir=cache)
    rel = sample_channel.relpath("alpha")
    good = (cache / rel).read_bytes()
    (cache / rel).unlink()  # not in place: the first pack's hard link must keep its content
    (cache / rel).write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # same size, wrong bytes
    server.reset()
    paths = fetch_all(artifacts, tmp_path / "two", network=NetworkSettings(), cache_dir=cache)
    assert server.requests == [rel]
    assert paths[rel].read_bytes() == good
    assert (cache / rel).read_bytes() == good
    assert (tmp_path / "one" / rel).read_bytes() == good


def test_copy_when_hard_links_fail(
    project_server: tuple[Path, ChannelServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, server = project_server
    artifacts = artifacts_of(project)

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(cache_module.os, "link", cross_device)
    cache = tmp_path / "cache"
    fetch_all(artifacts, tmp_path / "one", network=NetworkSettings(), cache_dir=cache)
    server.reset()
    paths = fetch_all(artifacts, tmp_path / "two", network=NetworkSettings(), cache_dir=cache)
    assert server.requests == []
    for rel, path in paths.items():
        assert path.read_bytes() == (cache / rel).read_bytes()
        assert path.stat().st_ino != (cache / rel).stat().st_ino


def test_unusable_cache_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(PackError, match="cannot use .* as a cache"):
        Cache(tmp_path / "file" / "cache")


def test_a_file_is_not_a_cache(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(PackError) as info:
        Cache(path)
    assert info.value.message == f"cannot use {path} as a cache: it is a file"
    assert path.read_text() == "mine"


@pytest.mark.parametrize(
    ("contents", "named"),
    [
        (["notes.txt"], "notes.txt"),
        (["photos/", "linux-64/"], "photos"),
        (["my-docs/"], "my-docs"),
        (["pypi/", "todo.md", "b.txt", "c.txt", "d.txt"], "b.txt, c.txt, d.txt, …"),
        (["photos-2024/a.jpg"], "photos-2024"),
        (["linux-64/a-1-0.conda", "linux-64/thesis.tex"], "linux-64"),
    ],
    ids=[
        "a-file",
        "a-foreign-folder",
        "a-folder-named-like-a-subdir",
        "files-beside-pypi",
        "dash-and-digits",
        "a-subdir-with-other-files",
    ],
)
def test_a_folder_of_other_things_is_not_taken_as_a_cache(
    project_server: tuple[Path, ChannelServer], tmp_path: Path, contents: list[str], named: str
) -> None:
    """Tagging it would make backup tools skip the user's files; nothing is written into it."""
    project, server = project_server
    folder = tmp_path / "Documents"
    for name in contents:
        path = folder / name.rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if name.endswith("/") else path.write_text("mine")
    before = sorted(folder.rglob("*"))
    with pytest.raises(PackError) as info:
        fetch_all(artifacts_of(project), tmp_path / "out", network=NetworkSettings(), cache_dir=folder)
    refusal = f"cannot use {folder} as a cache: it is not a package cache (it holds {named})"
    assert info.value.message == refusal
    assert info.value.hint == "give an empty or new folder, or one used as a cache before"
    assert sorted(folder.rglob("*")) == before
    assert server.requests == []


def test_cli_refuses_a_foreign_folder_in_one_line(
    project_server: tuple[Path, ChannelServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project, _ = project_server
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    output = tmp_path / "environment.tar"
    code = main(["pack", str(project), "-p", "linux-64", "-o", str(output), "--use-cache", str(folder)])
    assert code == 1
    refusal = f"cannot use {folder} as a cache: it is not a package cache (it holds notes.txt)"
    hint = "give an empty or new folder, or one used as a cache before"
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {refusal} ({hint})"]
    assert not output.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_tag_written_by_another_pack_during_the_check_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two packs starting on one new cache: the other's tag can land just before this one lists
    the folder; it marks a cache, not a foreign file (CI saw this race refuse a pack)."""
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "noarch").mkdir()  # the other pack has begun filling it too
    listing = os.scandir

    def tag_lands_first(path: str | os.PathLike[str]) -> Iterator[os.DirEntry[str]]:
        if Path(path) == folder and not (folder / CACHEDIR_TAG).exists():
            (folder / CACHEDIR_TAG).write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
        return listing(path)

    monkeypatch.setattr(cache_module.os, "scandir", tag_lands_first)
    Cache(folder)  # no PackError
    assert sorted(p.name for p in folder.iterdir()) == [CACHEDIR_TAG, "noarch"]


def test_an_untagged_pixi_pack_cache_is_used(
    project_server: tuple[Path, ChannelServer], tmp_path: Path
) -> None:
    """pixi-pack's ``--use-cache`` writes ``<subdir>/<file>`` without a tag: its hits are used."""
    project, server = project_server
    artifacts = artifacts_of(project)
    cache = tmp_path / "pixi-pack-cache"
    fetch_all(artifacts, tmp_path / "one", network=NetworkSettings(), cache_dir=cache)
    (cache / CACHEDIR_TAG).unlink()
    for stamp in cache.rglob(f"*{STAMP_SUFFIX}"):
        stamp.unlink()
    for subdir in Subdir.all():  # every subdir name rattler knows counts as cache content
        (cache / str(subdir)).mkdir(exist_ok=True)
    server.reset()
    paths = fetch_all(artifacts, tmp_path / "two", network=NetworkSettings(), cache_dir=cache)
    assert server.requests == []
    assert sorted(paths) == sorted(a.relative_path for a in artifacts)
    assert (cache / CACHEDIR_TAG).is_file()


def test_entries_appear_only_complete(slow_server: Callable[..., SlowServer], tmp_path: Path) -> None:
    """While a slow download runs, the cache entry is either absent or whole (never half a file)."""
    data = os.urandom(3_000_000)
    server = slow_server({"slow.conda": data}, chunk_delay=0.01)
    artifact = artifact_for(data, server.url("slow.conda"), name="slow.conda")
    cache = tmp_path / "cache"
    entry = cache / artifact.relative_path
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                seen.append("whole" if file_mismatch(entry, artifact) is None else "HALF")
            except FileNotFoundError:
                seen.append("absent")
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        fetch_all([artifact], tmp_path / "out", network=NetworkSettings(), cache_dir=cache)
    finally:
        done.set()
        watcher.join()
    assert "HALF" not in seen
    assert seen.count("absent") > 5  # the watcher really looked during the download
    assert entry.read_bytes() == data


# -- verification stamps: trusted hits are not read, anything else is hashed ---------------------


def forbid_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any cache entry is hashed (read) from now on."""

    def no_read(path: Path, artifact: Artifact) -> str | None:
        raise AssertionError(f"{path} was hashed although its stamp vouches for it")

    monkeypatch.setattr(cache_module, "file_mismatch", no_read)


def count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the entries that get hashed (by name), still hashing them."""
    hashed: list[str] = []
    real = cache_module.file_mismatch

    def counting(path: Path, artifact: Artifact) -> str | None:
        hashed.append(path.name)
        return real(path, artifact)

    monkeypatch.setattr(cache_module, "file_mismatch", counting)
    return hashed


def test_stamped_hit_is_used_without_reading_it(
    project_server: tuple[Path, ChannelServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, server = project_server
    artifacts = artifacts_of(project)
    cache = tmp_path / "cache"
    fetch_all(artifacts, tmp_path / "cold", network=NetworkSettings(), cache_dir=cache)
    for artifact in artifacts:
        assert stamp_path(cache / artifact.relative_path).is_file()
    server.reset()
    forbid_hashing(monkeypatch)
    paths = fetch_all(artifacts, tmp_path / "warm", network=NetworkSettings(), cache_dir=cache)
    assert server.requests == []
    for artifact in artifacts:
        data = paths[artifact.relative_path].read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact.sha256


def test_entry_written_in_place_is_detected_and_fetched_again(
    project_server: tuple[Path, ChannelServer], sample_channel: Channel, tmp_path: Path
) -> None:
    """Same size, other bytes, written in place: the new mtime voids the stamp."""
    project, server = project_server
    artifacts = artifacts_of(project)
    cache = tmp_path / "cache"
    fetch_all(artifacts, tmp_path / "one", network=NetworkSettings(), cache_dir=cache)
    rel = sample_channel.relpath("alpha")
    entry = cache / rel
    good = entry.read_bytes()
    stamped = entry.stat()
    time.sleep(0.05)  # past any coarse file-system clock tick
    with entry.open("r+b") as stream:  # the same inode: only mtime (and content) change
        stream.write(bytes([good[0] ^ 0xFF]))
    changed = entry.stat()
    assert (changed.st_ino, changed.st_size) == (stamped.st_ino, stamped.st_size)
    assert changed.st_mtime_ns != stamped.st_mtime_ns
    server.reset()
    paths = fetch_all(artifacts, tmp_path / "two", network=NetworkSettings(), cache_dir=cache)
    assert server.requests == [rel]
    assert paths[rel].read_bytes() == good
    assert entry.read_bytes() == good


def test_unstamped_entry_is_hashed_then_stamped(
    project_server: tuple[Path, ChannelServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older cache (or one another tool filled) is verified once, then trusted."""
    project, server = project_server
    artifacts = artifacts_of(project)
    cache = tmp_path / "cache"
    fetch_all(artifacts, tmp_path / "one", network=NetworkSettings(), cache_dir=cache)
    stamps = sorted(cache.rglob(f"*{STAMP_SUFFIX}"))
    assert len(stamps) == len(artifacts)
    for stamp in stamps:
        stamp.unlink()
    server.reset()
    with monkeypatch.context() as patch:
        hashed = count_hashing(patch)
        fetch_all(artifacts, tmp_path / "two", network=NetworkSettings(), cache_dir=cache)
    assert sorted(hashed) == sorted(a.file_name for a in artifacts)
    assert server.requests == []
    assert sorted(cache.rglob(f"*{STAMP_SUFFIX}")) == stamps
    forbid_hashing(monkeypatch)
    fetch_all(artifacts, tmp_path / "three", network=NetworkSettings(), cache_dir=cache)
    assert server.requests == []


def test_stamp_for_other_bytes_is_not_trusted(slow_server: Callable[..., SlowServer], tmp_path: Path) -> None:
    """The same file name locked with another checksum (a rebuilt package) is fetched again."""
    old, new = os.urandom(50_000), os.urandom(50_000)
    server = slow_server({"pkg.conda": old})
    cache = tmp_path / "cache"
    fetch_all([artifact_for(old, server.url("pkg.conda"), name="pkg.conda")], tmp_path / "one",
              network=NetworkSettings(), cache_dir=cache)  # fmt: skip
    server.files["pkg.conda"] = new
    paths = fetch_all([artifact_for(new, server.url("pkg.conda"), name="pkg.conda")], tmp_path / "two",
                      network=NetworkSettings(), cache_dir=cache)  # fmt: skip
    (path,) = paths.values()
    assert path.read_bytes() == new
    (entry,) = [p for p in cache.rglob("pkg.conda")]
    assert entry.read_bytes() == new


def test_concurrent_packs_leave_a_trusted_cache(
    slow_server: Callable[..., SlowServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two packs racing to fill and stamp one cache: every hit stays correct, stamps converge."""
    files = {f"p{i}.conda": os.urandom(200_000 + i) for i in range(8)}
    server = slow_server(files, chunk_delay=0.002)
    artifacts = [artifact_for(d, server.url(n), name=n) for n, d in files.items()]
    cache = tmp_path / "cache"

    def race(label: str) -> None:
        errors: list[BaseException] = []

        def one(index: int) -> None:
            try:
                paths = fetch_all(
                    artifacts, tmp_path / f"{label}{index}", network=NetworkSettings(), cache_dir=cache
                )
                for art in artifacts:
                    assert hashlib.sha256(paths[art.relative_path].read_bytes()).hexdigest() == art.sha256
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

    race("cold")  # both download and stamp the same entries
    for stamp in cache.rglob(f"*{STAMP_SUFFIX}"):
        stamp.unlink()
    race("rehash")  # both hash and stamp the same unstamped entries
    fetch_all(artifacts, tmp_path / "settle", network=NetworkSettings(), cache_dir=cache)
    for art in artifacts:
        assert file_mismatch(cache / art.relative_path, art) is None
    assert leftovers(cache) == []
    server.close()  # a request now would fail the fetch
    forbid_hashing(monkeypatch)
    paths = fetch_all(artifacts, tmp_path / "warm", network=NetworkSettings(), cache_dir=cache)
    assert sorted(paths) == sorted(a.relative_path for a in artifacts)


def test_artifacts_without_checksum_or_local_never_use_the_cache(
    slow_server: Callable[..., SlowServer], tmp_path: Path
) -> None:
    """A name alone proves nothing: an unpinned download, or a local file, is fetched every time."""
    old, new = os.urandom(5000), os.urandom(5000)
    server = slow_server({"w.whl": old})
    unpinned = artifact_for(old, server.url("w.whl"), name="w.whl", sha256=None, relative_path="pypi/w.whl")
    local_file = tmp_path / "local-1.0-0.conda"
    local_file.write_bytes(old)
    local = artifact_for(old, local_file.as_uri(), name=local_file.name)
    cache = tmp_path / "cache"
    fetch_all([unpinned, local], tmp_path / "a", network=NetworkSettings(), cache_dir=cache)
    assert not any(p.is_file() and p.name != CACHEDIR_TAG for p in cache.rglob("*"))
    server.files["w.whl"] = new  # the same name, other bytes
    paths = fetch_all(
        [artifact_for(new, server.url("w.whl"), name="w.whl", sha256=None, relative_path="pypi/w.whl")],
        tmp_path / "b",
        network=NetworkSettings(),
        cache_dir=cache,
    )
    assert paths["pypi/w.whl"].read_bytes() == new


def test_unwritable_cache_is_one_clear_error(
    slow_server: Callable[..., SlowServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only shared cache (simulated: root ignores permission bits) stops with a PackError."""
    data = os.urandom(3000)
    server = slow_server({"a.conda": data})
    cache = tmp_path / "cache"
    Cache(cache)  # exists, tagged

    def read_only(path: Path) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("conda_pixi_pack.pack.destination.create_new", read_only)
    with pytest.raises(PackError, match=f"cannot write into the cache {cache}: Permission denied") as info:
        fetch_all(
            [artifact_for(data, server.url("a.conda"))],
            tmp_path / "out",
            network=NetworkSettings(),
            cache_dir=cache,
        )
    assert "without --use-cache" in (info.value.hint or "")


def _stamped_entry(
    slow_server: Callable[..., SlowServer], tmp_path: Path
) -> tuple[bytes, Artifact, Path, Path]:
    """A package served, fetched once into ``tmp_path/cache`` (stamped): its bytes, its artifact,
    the cache and the entry."""
    data = os.urandom(4000)
    server = slow_server({"a.conda": data})
    artifact = artifact_for(data, server.url("a.conda"), name="a.conda")
    cache = tmp_path / "cache"
    fetch_all([artifact], tmp_path / "first", network=NetworkSettings(), cache_dir=cache)
    return data, artifact, cache, cache / artifact.relative_path


def test_an_entry_swapped_between_check_and_link_is_not_packed(
    slow_server: Callable[..., SlowServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another pack may replace an entry after it was found good: the linked inode is checked."""
    data, artifact, cache, entry = _stamped_entry(slow_server, tmp_path)
    real_link = os.link

    def swap_then_link(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        if os.fspath(source) == os.fspath(entry):
            other = entry.with_name("other")
            other.write_bytes(os.urandom(len(data)))
            os.replace(other, entry)  # what a concurrent writer of a foreign file would do
        real_link(source, target)

    monkeypatch.setattr("conda_pixi_pack.pack.destination.os.link", swap_then_link)
    paths = fetch_all([artifact], tmp_path / "second", network=NetworkSettings(), cache_dir=cache)
    assert paths[artifact.relative_path].read_bytes() == data


@pytest.mark.parametrize("stamp", ["stamped", "unstamped"])
def test_an_entry_swapped_after_its_check_is_not_copied_into_the_archive(
    slow_server: Callable[..., SlowServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stamp: str
) -> None:
    """Packages go straight into their slots of the archive: an entry another pack replaced
    after it was found good (stamped or hashed) is not what gets copied there."""
    data, artifact, cache, entry = _stamped_entry(slow_server, tmp_path)
    if stamp == "unstamped":
        stamp_path(entry).unlink()
    real_trusted, real_lookup = Cache.trusted, Cache.lookup

    def swap() -> None:
        other = entry.with_name("other")
        other.write_bytes(os.urandom(len(data)))
        os.replace(other, entry)  # what a concurrent writer of a foreign file would do

    def trusted_then_swapped(self: Cache, wanted: Artifact) -> object:
        found = real_trusted(self, wanted)
        if found is not None:
            swap()
        return found

    looked: list[Path | None] = []

    def lookup_then_swapped(self: Cache, wanted: Artifact) -> Path | None:
        found = real_lookup(self, wanted)
        if not looked and found is not None:
            swap()
        looked.append(found)
        return found

    monkeypatch.setattr(Cache, "trusted", trusted_then_swapped)
    monkeypatch.setattr(Cache, "lookup", lookup_then_swapped)
    archive = tmp_path / "archive"
    with archive.open("w+b") as handle:
        handle.truncate(512 + len(data))
        slots = {f"channel/{artifact.relative_path}": Slot(handle.fileno(), 512, len(data))}
        destination = SlotDestination(slots, "channel/", archive)
        fetch_all([artifact], destination, network=NetworkSettings(), cache_dir=cache)
    assert archive.read_bytes() == bytes(512) + data
