"""The rattler backend's first step (install/seed.py): packages extracted straight out of the pack
into rattler's cache by worker processes, verified before anything is linked, and the ways back
to installing from package files when that cannot run."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conda_pixi_pack.errors import PackError, UserCancelled
from conda_pixi_pack.unpack.install import seed
from conda_pixi_pack.unpack.pipeline import UnpackOptions, unpack
from tests.support.packages import PackageSpec, build_package
from tests.support.packs import damage, make_pack_dir, tar_dir
from tests.support.reporting import Recorder

if TYPE_CHECKING:
    from collections.abc import Callable

FORGE = "https://conda.anaconda.org/conda-forge"


def _workers() -> list[int]:
    """Our seed_worker processes still running (children of this test process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
        if parent == str(os.getpid()) and b"seed_worker" in command:
            found.append(int(entry.name))
    return found


def _pack(tmp_path: Path, packages: list[Path], *, origins: bool = True) -> Path:
    where = {
        f"linux-64/{p.name}": {"url": f"{FORGE}/linux-64/{p.name}", "channel": f"{FORGE}/"} for p in packages
    }
    src = make_pack_dir(tmp_path / "src", packages, origins=where if origins else None)
    return tar_dir(src, tmp_path / "environment.tar")


def _options(pack: Path, out: Path, **kwargs: object) -> UnpackOptions:
    return UnpackOptions(source=pack, output_directory=out, installer="rattler", **kwargs)  # type: ignore[arg-type]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _refused(
    pack: Path, tmp_path: Path, error: type[Exception], match: str | None
) -> pytest.ExceptionInfo[Exception]:
    """Unpack ``pack`` into a new folder with ``tmp_path/pkgs`` as --pkgs-dir, expecting ``error``;
    then nothing is left behind: no environment, no new cache entry, no worker process."""
    out, cache = tmp_path / "out", tmp_path / "pkgs"
    out.mkdir()
    cached = _leftovers(cache)
    with pytest.raises(error, match=match) as caught:
        unpack(_options(pack, out, pkgs_dir=cache))
    assert _leftovers(out) == []
    assert _leftovers(cache) == cached
    assert _workers() == []
    return caught


pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here (Windows)")


def test_packages_go_from_the_pack_into_the_cache(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """Every package ends up extracted in the cache under rattler's own name, rattler links them
    from there and writes the original URLs itself; nothing of the staging is left."""
    pack = _pack(tmp_path, packages("alpha", "beta", "prefixed", "noarch-data"))
    cache = tmp_path / "pkgs"
    reporter = Recorder()
    env = unpack(_options(pack, tmp_path / "out", pkgs_dir=cache), reporter).prefix
    entries = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert entries == ["alpha-1.0-h0_0", "beta-1.2-h0_0", "noarch-data-0.5-0", "prefixed-2.0-h1_0"]
    assert json.loads((cache / "alpha-1.0-h0_0" / "info" / "index.json").read_text())["name"] == "alpha"
    assert not [p for p in cache.iterdir() if p.name.startswith(seed.STAGING_PREFIX)]
    assert not any("installing from" in line for line in reporter.debug_lines), reporter.debug_lines
    meta = json.loads((env / "conda-meta" / "prefixed-2.0-h1_0.json").read_text())
    assert meta["url"] == f"{FORGE}/linux-64/{packages('prefixed')[0].name}"
    assert meta["channel"] == f"{FORGE}/"
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'
    assert _workers() == []


def test_an_origin_url_rattler_cannot_parse_is_kept_in_conda_meta(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """A pack from elsewhere may name an origin rattler does not take as a URL: the install
    still runs from the seeded cache, and conda-meta shows the origin as the pack names it."""
    built = packages("alpha", "beta")
    odd = "https://exa mple.invalid/linux-64/alpha-1.0-h0_0.conda"
    where = {
        f"linux-64/{p.name}": {"url": f"{FORGE}/linux-64/{p.name}", "channel": f"{FORGE}/"} for p in built
    }
    where[f"linux-64/{built[0].name}"] = {"url": odd, "channel": "https://exa mple.invalid/"}
    pack = tar_dir(make_pack_dir(tmp_path / "src", built, origins=where), tmp_path / "environment.tar")
    reporter = Recorder()
    env = unpack(_options(pack, tmp_path / "out", pkgs_dir=tmp_path / "pkgs"), reporter).prefix
    assert not any("installing from" in line for line in reporter.debug_lines), reporter.debug_lines
    assert json.loads((env / "conda-meta" / "alpha-1.0-h0_0.json").read_text())["url"] == odd
    assert json.loads((env / "conda-meta" / "beta-1.2-h0_0.json").read_text())["channel"] == f"{FORGE}/"
    assert _workers() == []


def test_a_package_rattler_cannot_extract_is_refused_before_linking(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """Bytes that match their record but are no archive: refused by name, nothing linked, nothing
    added to the cache (not even the good packages: all are checked before any is placed)."""
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta"))
    garbage = b"this is not a conda package\n" * 100
    (src / "channel" / "linux-64" / "broken-1.0-0.conda").write_bytes(garbage)
    repodata_path = src / "channel" / "linux-64" / "repodata.json"
    repodata = json.loads(repodata_path.read_text())
    repodata["packages.conda"]["broken-1.0-0.conda"] = {
        "name": "broken",
        "version": "1.0",
        "build": "0",
        "build_number": 0,
        "depends": [],
        "subdir": "linux-64",
        "size": len(garbage),
        "sha256": hashlib.sha256(garbage).hexdigest(),
        "md5": hashlib.md5(garbage).hexdigest(),
    }
    repodata_path.write_text(json.dumps(repodata))
    pack = tar_dir(src, tmp_path / "environment.tar")
    expected = r"extracting channel/linux-64/broken-1\.0-0\.conda failed: "
    caught = _refused(pack, tmp_path, PackError, expected)
    assert isinstance(caught.value, PackError) and caught.value.message.isprintable()


def test_a_checksum_mismatch_adds_nothing_to_the_cache(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta"))
    damage(next((src / "channel" / "linux-64").glob("alpha-*.conda")))
    pack = tar_dir(src, tmp_path / "environment.tar")
    _refused(pack, tmp_path, PackError, r"alpha-1\.0-h0_0\.conda does not match its sha256")


def test_a_package_already_in_the_cache_is_still_verified(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """With --pkgs-dir a package already extracted there is not extracted again, but the pack's
    copy of it is checked all the same: a damaged pack is refused."""
    cache = tmp_path / "pkgs"
    unpack(_options(_pack(tmp_path / "good", packages("alpha", "beta")), tmp_path / "first", pkgs_dir=cache))
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta"))
    damage(next((src / "channel" / "linux-64").glob("alpha-*.conda")))
    pack = tar_dir(src, tmp_path / "environment.tar")
    _refused(pack, tmp_path, PackError, r"alpha-1\.0-h0_0\.conda does not match its sha256")


def test_a_relative_pkgs_dir_is_seeded_too(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--pkgs-dir pkgs`` (relative to where the command runs): the packages are extracted into
    it by the worker processes, not installed a second time from copied-out files."""
    pack = _pack(tmp_path, packages("alpha", "prefixed"))
    monkeypatch.chdir(tmp_path)
    reporter = Recorder()
    unpack(_options(pack, tmp_path / "out", pkgs_dir=Path("pkgs")), reporter)
    assert not any("installing from package files" in line for line in reporter.debug_lines), (
        reporter.debug_lines
    )
    assert (tmp_path / "pkgs" / "alpha-1.0-h0_0" / "info" / "index.json").is_file()


def test_without_worker_processes_the_packages_come_from_files(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No interpreter to run workers in (an embedded Python): copied out, verified, installed, with
    the same provenance."""
    pack = _pack(tmp_path, packages("alpha", "prefixed"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    reporter = Recorder()
    env = unpack(_options(pack, tmp_path / "out"), reporter).prefix
    said = "installing from package files: cannot start an extraction process"
    assert any(said in line for line in reporter.debug_lines), reporter.debug_lines
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'
    meta = json.loads((env / "conda-meta" / "alpha-1.0-h0_0.json").read_text())
    assert meta["url"] == f"{FORGE}/linux-64/{packages('alpha')[0].name}"
    assert _leftovers(tmp_path / "out") == ["activate.sh", "env"]


def test_a_worker_that_dies_falls_back_to_files(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process killed while it works: the other one is stopped, nothing is left of the
    staging, and the packages are installed from files (and verified there)."""
    pack = _pack(tmp_path, packages("alpha", "beta", "prefixed"))
    real_pump = seed._pump

    def pump_after_killing(pack: int, offset: int, size: int, fifo: Path, worker: seed._Worker) -> None:
        worker.process.kill()
        worker.process.wait()
        real_pump(pack, offset, size, fifo, worker)

    monkeypatch.setattr(seed, "_pump", pump_after_killing)
    cache = tmp_path / "pkgs"
    reporter = Recorder()
    env = unpack(_options(pack, tmp_path / "out", pkgs_dir=cache), reporter).prefix
    said = "an extraction process stopped unexpectedly"
    assert any(said in line for line in reporter.debug_lines), reporter.debug_lines
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'
    assert not [p for p in cache.iterdir() if p.name.startswith(seed.STAGING_PREFIX)]
    assert _workers() == []


def test_entries_rattler_does_not_see_fall_back_to_files(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should rattler ever name its cache folders differently, its own index says so before the
    install, and the packages are installed from files: never fetched from their original URLs."""
    monkeypatch.setattr(seed, "cache_entry_name", lambda record: f"renamed-{record['name']}")
    pack = _pack(tmp_path, packages("alpha", "prefixed"))
    reporter = Recorder()
    env = unpack(_options(pack, tmp_path / "out"), reporter).prefix
    assert any("does not see the extracted packages" in line for line in reporter.debug_lines), (
        reporter.debug_lines
    )
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'
    meta = json.loads((env / "conda-meta" / "prefixed-2.0-h1_0.json").read_text())
    assert meta["url"] == f"{FORGE}/linux-64/{packages('prefixed')[0].name}"
    assert meta["channel"] == f"{FORGE}/"


def test_ctrl_c_while_extracting_stops_the_workers(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = _pack(tmp_path, packages("alpha", "beta", "prefixed", "noarch-data"))
    real_pump = seed._pump
    calls: list[Path] = []

    def interrupted_second_time(pack: int, offset: int, size: int, fifo: Path, worker: seed._Worker) -> None:
        calls.append(fifo)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_pump(pack, offset, size, fifo, worker)

    monkeypatch.setattr(seed, "_pump", interrupted_second_time)
    _refused(pack, tmp_path, UserCancelled, None)


def test_dry_run_checks_the_packages_inside_the_pack(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """A dry run extracts nothing but still verifies each package's checksum in the pack."""
    src = make_pack_dir(tmp_path / "src", packages("alpha"))
    damage(next((src / "channel" / "linux-64").glob("alpha-*.conda")))
    with pytest.raises(PackError, match="does not match its sha256"):
        unpack(_options(tar_dir(src, tmp_path / "environment.tar"), tmp_path / "out", dry_run=True))


def test_a_cache_path_unfit_for_a_request_line_falls_back_to_files(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """Paths travel to the workers on text lines: a tab in one means the other way, not a failure."""
    pack = _pack(tmp_path, packages("alpha", "prefixed"))
    reporter = Recorder()
    env = unpack(_options(pack, tmp_path / "out", pkgs_dir=tmp_path / "pk\tgs"), reporter).prefix
    said = "installing from package files: a path cannot be passed to an extraction process"
    assert any(said in line for line in reporter.debug_lines), reporter.debug_lines
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'
    assert (tmp_path / "pk\tgs" / "alpha-1.0-h0_0" / "info" / "index.json").is_file()


def test_cache_entries_record_their_sha256_for_rattler(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """Each entry placed in the cache gets rattler's metadata file (revision, then sha256), so that
    rattler and pixi, using the same cache later, tell it from another build of the same name."""
    (alpha,) = packages("alpha")
    cache = tmp_path / "pkgs"
    unpack(_options(_pack(tmp_path, [alpha, *packages("beta")]), tmp_path / "out", pkgs_dir=cache))
    metadata = (cache / "alpha-1.0-h0_0.lock").read_bytes()
    assert int.from_bytes(metadata[:8], "big") == 1
    assert metadata[8:].hex() == hashlib.sha256(alpha.read_bytes()).hexdigest()


def test_another_build_of_the_same_name_in_the_cache_is_not_linked(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """A --pkgs-dir holding alpha-1.0-h0_0 from another pack, with other contents: this pack's
    alpha is what gets installed (rattler sees the sha256 differ and extracts it again)."""
    other = build_package(
        PackageSpec("alpha", "1.0", "h0_0", depends=["beta >=1"], files={"share/alpha/README": "EVIL\n"}),
        tmp_path / "other-channel",
    )
    cache = tmp_path / "pkgs"
    unpack(_options(_pack(tmp_path / "first", [other, *packages("beta")]), tmp_path / "o1", pkgs_dir=cache))
    assert (tmp_path / "o1" / "env" / "share" / "alpha" / "README").read_text() == "EVIL\n"
    env = unpack(_options(_pack(tmp_path, packages("alpha", "beta")), tmp_path / "o2", pkgs_dir=cache)).prefix
    assert (env / "share" / "alpha" / "README").read_text() == "alpha\n"


def test_a_rattler_folder_in_the_working_directory_is_not_imported(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers are Python processes: the folder unpack runs in must not feed them modules."""
    evil = tmp_path / "downloads"
    (evil / "rattler" / "package_streaming").mkdir(parents=True)
    marker = tmp_path / "imported"
    (evil / "rattler" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (evil / "rattler" / "package_streaming" / "__init__.py").write_text("")
    monkeypatch.chdir(evil)
    reporter = Recorder()
    env = unpack(_options(_pack(tmp_path, packages("alpha", "prefixed")), tmp_path / "out"), reporter).prefix
    assert not marker.exists()
    assert not any("installing from" in line for line in reporter.debug_lines), reporter.debug_lines
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'


def test_paths_reach_the_workers_whatever_the_locale(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONIOENCODING", "latin-1")
    cache = tmp_path / "pkgs-É"
    reporter = Recorder()
    unpack(_options(_pack(tmp_path, packages("alpha", "beta")), tmp_path / "out", pkgs_dir=cache), reporter)
    assert not any("installing from" in line for line in reporter.debug_lines), reporter.debug_lines
    assert (cache / "alpha-1.0-h0_0" / "info" / "index.json").is_file()
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == [".cache.lock"]


def test_no_named_pipes_falls_back_to_files(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses named pipes (FAT, SMB) is no failure: the other way is taken."""

    def refused(path: object, mode: int = 0o666) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "mkfifo", refused)
    reporter = Recorder()
    env = unpack(_options(_pack(tmp_path, packages("alpha", "prefixed")), tmp_path / "out"), reporter).prefix
    assert any("installing from package files: cannot use" in line for line in reporter.debug_lines), (
        reporter.debug_lines
    )
    assert (env / "bin" / "prefixed").read_text() == f'#!/bin/sh\necho "{env}"\n'
    assert _leftovers(tmp_path / "out") == ["activate.sh", "env"]


def _cut_before_seeding(monkeypatch: pytest.MonkeyPatch, pack: Path) -> None:
    """Cut the pack file to its first 512 bytes once extraction (which left the packages in it) is
    over: someone else's write while the unpack runs."""
    from conda_pixi_pack.unpack.install import rattler as backend

    real = backend.seed_cache

    def cut_then_seed(*args: object, **kwargs: object) -> set[Path]:
        with open(pack, "r+b") as f:
            f.truncate(512)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "seed_cache", cut_then_seed)


def test_a_pack_cut_while_its_packages_are_extracted(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = _pack(tmp_path, packages("alpha", "beta", "prefixed"))
    _cut_before_seeding(monkeypatch, pack)
    _refused(pack, tmp_path, PackError, "broken pack: it was cut short while being unpacked")


def test_a_pack_cut_while_its_packages_in_the_cache_are_verified(
    tmp_path: Path, packages: Callable[..., list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packages already in --pkgs-dir are not extracted, but their bytes in the pack are still
    read to verify them: a pack cut meanwhile is refused all the same."""
    pack = _pack(tmp_path, packages("alpha", "beta"))
    cache = tmp_path / "pkgs"
    unpack(_options(pack, tmp_path / "first", pkgs_dir=cache))
    _cut_before_seeding(monkeypatch, pack)
    _refused(pack, tmp_path, PackError, "broken pack: it was cut short while being unpacked")


def test_a_package_damaged_inside_is_named_as_damaged_after_no_stage_said_done(
    tmp_path: Path, packages: Callable[..., list[Path]]
) -> None:
    """Zeros in the middle of a package make its extraction fail before its hash is complete: the
    user is told the file does not match its record (what to do about it), and no stage claimed
    the packages verified before that."""
    src = make_pack_dir(tmp_path / "src", packages("alpha", "beta"), platform="linux-64")
    package = next((src / "channel" / "linux-64").glob("alpha-*.conda"))
    data = bytearray(package.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    package.write_bytes(bytes(data))
    pack = tar_dir(src, tmp_path / "environment.tar")
    done = subprocess.run(
        [sys.executable, "-m", "conda_pixi_pack", "unpack", str(pack), "-o", str(tmp_path / "out"),
         "--installer", "rattler"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == (
        "error: broken pack: channel/linux-64/alpha-1.0-h0_0.conda does not match its sha256 in "
        "repodata.json (the pack is damaged or incomplete; copy or build it again (if pixi-pack wrote "
        "it with --use-cache, clear that cache first))"
    )
    assert not any("Verifying packages: done" in line for line in lines), done.stderr


def test_an_answer_that_came_with_the_previous_one_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a request ahead, a worker's answers may arrive in one read (a request refused at once,
    without the pipe being opened, right after the previous answer). The second is then waiting in
    the worker's own buffer, where ``select`` on the pipe cannot see it: it must still count as
    answered, or the feeder would wait for the pipe to be opened for ever."""
    two_at_once = (
        "import sys\n"
        "for line in sys.stdin.buffer:\n"
        "    sys.stdout.buffer.write(b'error\\tfirst\\nerror\\tsecond\\n')\n"
        "    sys.stdout.buffer.flush()\n"
    )
    monkeypatch.setattr(seed, "WORKER_CODE", two_at_once)
    worker = seed._Worker(tmp_path)
    try:
        worker.request(tmp_path / "a.conda", tmp_path / "a")
        assert worker.answer() == "first"
        assert worker.answered(0.0)  # the pipe is empty by now: the line is in hand
        assert worker.answer() == "second"
        assert not worker.answered(0.2)
    finally:
        worker.stop(kill=True)


def test_a_rattler_call_interrupted_in_flight_prints_no_traceback(tmp_path: Path) -> None:
    """A Ctrl-C can end a rattler call while one of py-rattler's futures is in flight and nothing
    awaits it (seen on Python 3.10 in the fault suite's interrupted unpacks). py-rattler hands the
    result back through the event loop later: with ``asyncio.run`` the loop is closed by then, and
    "RuntimeError: Event loop is closed" was printed with a traceback; the rattler backend's
    runner leaves an interrupted loop open."""
    script = (
        "import sys, time\n"
        "from rattler.package_cache import PackageCache\n"
        "from conda_pixi_pack.unpack.install.rattler import _run\n"
        "async def interrupted():\n"
        "    PackageCache(sys.argv[1])._inner.index()  # a future in flight, never awaited\n"
        "    raise KeyboardInterrupt\n"
        "try:\n"
        "    _run(interrupted())\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "time.sleep(0.5)  # the future's result arrives meanwhile\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],  # this checkout's package first (-c puts the folder first)
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "interrupted\n"
    assert "Traceback" not in done.stderr, done.stderr
