"""``pack`` end to end: real packages served over HTTP on 127.0.0.1, real locks, real archives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conda_pixi_pack import __version__
from conda_pixi_pack import format as layout
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.pack import download
from conda_pixi_pack.pack.output import OutputMode
from conda_pixi_pack.pack.pipeline import PackOptions, PackResult, pack
from conda_pixi_pack.pack.sources.lockfile import LockSource
from conda_pixi_pack.pack.writers import tar as archive
from tests.support.channel import record_for, write_lock, write_project
from tests.support.packages import PackageSpec, build_package
from tests.support.reporting import Recorder
from tests.support.wheels import build_wheel, sha256_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conda_pixi_pack.progress import Reporter
    from tests.conftest import Channel
    from tests.support.server import ChannelServer

#: Real packages from Quantco/pixi-pack's examples (see ../shared/fixtures/README.md).
REAL = Path(__file__).resolve().parents[2] / "../shared/fixtures/real-packages/pixi-pack-examples"
WEBSERVER = "my-webserver-0.1.0-pyh4616a5c_0"
WEBSERVER_WHEEL = "my_webserver-0.1.0-py3-none-any.whl"

#: The packs below are all for linux-64 (the platform of the fixture locks).
PLATFORM = "linux-64"


def run_pack(
    project: Path,
    output: Path,
    reporter: Reporter | None = None,
    *,
    directory_only: bool = False,
    ignore_pypi_non_wheel: bool = False,
    **kwargs: Any,
) -> PackResult:
    options = PackOptions(
        source=LockSource(project, ignore_pypi_non_wheel=ignore_pypi_non_wheel),
        platform=PLATFORM,
        output=output,
        mode=OutputMode.FOLDER if directory_only else OutputMode.ARCHIVE,
        **kwargs,
    )
    return pack(options, reporter)


def members(pack_file: Path) -> list[str]:
    """Tar member names in order, directories with a trailing slash."""
    with tarfile.open(pack_file, mode="r:") as tar:
        return [m.name + ("/" if m.isdir() else "") for m in tar]


def extract(pack_file: Path, target: Path) -> Path:
    with tarfile.open(pack_file, mode="r:") as tar:
        tar.extractall(target, filter="data")
    return target


def listing(pack_dir: Path) -> list[str]:
    return [e.name + ("/" if e.is_dir else "") for e in archive.entries(pack_dir)]


def check_format(root: Path, platform: str = PLATFORM) -> dict[str, dict[str, dict[str, Any]]]:
    """Assert what pixi-unpack and conda rely on in an extracted pack; returns its repodata."""
    metadata = json.loads((root / "pixi-pack.json").read_text())
    assert metadata["version"] == "1"
    assert metadata["platform"] == platform
    assert metadata["pixi-pack-version"] == __version__
    repodata = layout.read_repodata(root)
    channel = root / "channel"
    # every subdir folder has a repodata.json (pixi-unpack reads each); noarch always exists (conda)
    assert sorted(p.name for p in channel.iterdir()) == sorted(repodata)
    assert "noarch" in repodata
    origins = metadata.get("conda-pixi-pack", {}).get("origins", {})
    specs = []
    for subdir, records in repodata.items():
        assert subdir in ("noarch", platform)
        document = json.loads((channel / subdir / "repodata.json").read_text())
        assert document["info"] == {"subdir": subdir}
        assert document["repodata_version"] == 2
        assert all(name.endswith(".conda") for name in document["packages.conda"])
        assert all(name.endswith(".tar.bz2") for name in document["packages"])
        files = sorted(p.name for p in (channel / subdir).iterdir() if p.name != "repodata.json")
        assert files == sorted(records), f"{subdir}: files and repodata differ"
        for file_name, record in records.items():
            data = (channel / subdir / file_name).read_bytes()
            assert record["size"] == len(data)
            assert record["sha256"] == hashlib.sha256(data).hexdigest()
            assert record["subdir"] == subdir
            origin = origins.get(f"{subdir}/{file_name}")
            # every package downloaded by URL keeps its provenance (local files and injections have none)
            assert origin is None or origin["url"].endswith(f"/{file_name}")
            specs.append(f"{record['name']}={record['version']}={record['build']}")
    env_lines = (root / "environment.yml").read_text().splitlines()
    assert env_lines[:4] == ["channels:", "  - ./channel", "  - nodefaults", "dependencies:"]
    listed = [line[4:] for line in env_lines[4:] if line.startswith("  - ") and line != "  - pip:"]
    assert sorted(listed) == sorted(specs)
    wheels = sorted(p.name for p in (root / "pypi").iterdir()) if (root / "pypi").is_dir() else []
    pip_lines = [
        line[6:] for line in env_lines if line.startswith("    - ") and not line.startswith("    - --")
    ]
    assert len(pip_lines) == len(wheels)
    return repodata


# -- what is in a pack ---------------------------------------------------------------------------


def test_pack_contents(
    make_project: Callable[..., Path], sample_channel: Channel, channel_server: ChannelServer, tmp_path: Path
) -> None:
    project = make_project(["alpha", "beta", "noarch-data"], wheels=["fixture-wheel"])
    output = tmp_path / "environment.tar"
    result = run_pack(project, output)

    assert result == PackResult(output, 3, 1, output.stat().st_size, PLATFORM, sources={"download": 4})
    assert members(output) == [
        "channel/",
        "channel/linux-64/",
        "channel/linux-64/alpha-1.0-h0_0.conda",
        "channel/linux-64/beta-1.2-h0_0.tar.bz2",
        "channel/linux-64/repodata.json",
        "channel/noarch/",
        "channel/noarch/noarch-data-0.5-0.conda",
        "channel/noarch/repodata.json",
        "environment.yml",
        "explicit.txt",
        "pixi-pack.json",
        "pypi/",
        "pypi/fixture_wheel-1.0-py3-none-any.whl",
    ]
    root = extract(output, tmp_path / "x")
    check_format(root)
    url = channel_server.url
    assert json.loads((root / "pixi-pack.json").read_text()) == {
        "version": "1",
        "pixi-pack-version": __version__,
        "platform": "linux-64",
        "conda-pixi-pack": {
            "version": __version__,
            "origins": {
                "linux-64/alpha-1.0-h0_0.conda": {
                    "url": f"{url}/linux-64/alpha-1.0-h0_0.conda",
                    "channel": f"{url}/",
                },
                "linux-64/beta-1.2-h0_0.tar.bz2": {
                    "url": f"{url}/linux-64/beta-1.2-h0_0.tar.bz2",
                    "channel": f"{url}/",
                },
                "noarch/noarch-data-0.5-0.conda": {
                    "url": f"{url}/noarch/noarch-data-0.5-0.conda",
                    "channel": f"{url}/",
                },
            },
        },
    }
    assert (root / "environment.yml").read_text() == textwrap.dedent(
        """\
        channels:
          - ./channel
          - nodefaults
        dependencies:
          - alpha=1.0=h0_0
          - beta=1.2=h0_0
          - noarch-data=0.5=0
          - pip:
            - --no-index
            - --find-links ./pypi
            - fixture-wheel==1.0
        """
    )
    digest = {
        name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in sample_channel.packages.items()
    }
    explicit = (root / "explicit.txt").read_text().splitlines()
    assert explicit[-4:] == [
        "@EXPLICIT",
        f"channel/linux-64/alpha-1.0-h0_0.conda#{digest['alpha']}",
        f"channel/linux-64/beta-1.2-h0_0.tar.bz2#{digest['beta']}",
        f"channel/noarch/noarch-data-0.5-0.conda#{digest['noarch-data']}",
    ]
    assert all(line.startswith("#") for line in explicit[:-4])
    linux = json.loads((root / "channel/linux-64/repodata.json").read_text())
    assert list(linux["packages"]) == ["beta-1.2-h0_0.tar.bz2"]
    assert list(linux["packages.conda"]) == ["alpha-1.0-h0_0.conda"]
    alpha = linux["packages.conda"]["alpha-1.0-h0_0.conda"]
    assert alpha["depends"] == ["beta >=1"]
    assert not {"url", "channel", "fn"} & set(alpha)
    assert (root / "pypi/fixture_wheel-1.0-py3-none-any.whl").read_bytes() == sample_channel.wheels[
        "fixture-wheel"
    ].read_bytes()
    for name in ("alpha", "beta", "noarch-data"):
        path = sample_channel.packages[name]
        assert (root / "channel" / sample_channel.relpath(name)).read_bytes() == path.read_bytes()


def test_noarch_only_pack_has_no_platform_folder(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["noarch-data"])
    output = tmp_path / "environment.tar"
    run_pack(project, output)
    assert members(output) == [
        "channel/",
        "channel/noarch/",
        "channel/noarch/noarch-data-0.5-0.conda",
        "channel/noarch/repodata.json",
        "environment.yml",
        "explicit.txt",
        "pixi-pack.json",
    ]


def test_empty_noarch_repodata_is_written(make_project: Callable[..., Path], tmp_path: Path) -> None:
    """pixi-pack omits an empty noarch; conda then refuses ``./channel`` (no noarch/repodata.json)."""
    project = make_project(["beta"])
    output = tmp_path / "environment.tar"
    run_pack(project, output)
    root = extract(output, tmp_path / "x")
    assert json.loads((root / "channel/noarch/repodata.json").read_text()) == {
        "info": {"subdir": "noarch"},
        "packages": {},
        "packages.conda": {},
        "removed": [],
        "repodata_version": 2,
    }


def test_the_lock_record_wins_over_index_json(
    sample_channel: Channel, channel_server: ChannelServer, tmp_path: Path
) -> None:
    """A repodata patch (here: an extra dependency) in the lock survives into the pack."""
    path = sample_channel.packages["alpha"]
    record = record_for(
        path, channel_server.url_for(sample_channel.relpath("alpha")), channel=channel_server.url
    )
    record.depends = [*record.depends, "patched-in >=2"]
    record.license = "patched-license"
    project = tmp_path / "project"
    write_lock(project / "pixi.lock", [record], channel=channel_server.url)
    write_project(project, channels=[channel_server.url])
    output = tmp_path / "environment.tar"
    run_pack(project, output)
    repodata = layout.read_repodata(extract(output, tmp_path / "x"))
    alpha = repodata["linux-64"]["alpha-1.0-h0_0.conda"]
    assert alpha["depends"] == ["beta >=1", "patched-in >=2"]
    assert alpha["license"] == "patched-license"


# -- determinism ---------------------------------------------------------------------------------


def test_two_packs_are_byte_identical(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["alpha", "beta", "noarch-data"], wheels=["fixture-wheel"])
    first = tmp_path / "one" / "environment.tar"
    first.parent.mkdir()
    run_pack(project, first)
    # a second pack through a cache whose files have other mtimes and modes, at another path
    cache = tmp_path / "cache"
    warm = tmp_path / "warm.tar"
    run_pack(project, warm, cache_dir=cache)
    for path in cache.rglob("*"):
        if path.is_file():
            os.utime(path, (1_000_000_000, 1_000_000_000))
    time.sleep(1.1)  # new downloads would get another mtime second
    second = tmp_path / "elsewhere" / "deeper" / "other-name.tar"
    second.parent.mkdir(parents=True)
    run_pack(project, second, cache_dir=cache)
    assert first.read_bytes() == second.read_bytes() == warm.read_bytes()
    with tarfile.open(first, mode="r:") as tar:
        for member in tar:
            assert member.mtime == layout.TAR_MTIME
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mode == (0o755 if member.isdir() else 0o644)


def test_an_archive_filled_in_place_is_the_one_gathered_first(
    make_project: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock's packages go from the network straight into their places in the archive (nothing
    is gathered beside it); where that cannot be (no ``os.pwrite`` or kernel copies, as on
    Windows), they are gathered in a staging folder first. Both give the same bytes."""
    project = make_project(["alpha", "beta", "noarch-data"])
    direct = tmp_path / "direct" / "environment.tar"
    direct.parent.mkdir()
    beside: list[list[str]] = []
    real_fetch_all = download.fetch_all

    def watched(*args: Any, **kwargs: Any) -> dict[str, Path]:
        result = real_fetch_all(*args, **kwargs)
        beside.append([p.name for p in direct.parent.rglob("*") if p.name.endswith((".conda", ".tar.bz2"))])
        return result

    monkeypatch.setattr(download, "fetch_all", watched)
    run_pack(project, direct)
    assert beside == [[]]  # every package fetched, none of them as a file beside the archive
    for name in ("pwrite", "copy_file_range", "sendfile"):
        monkeypatch.delattr(os, name, raising=False)
    gathered = tmp_path / "gathered.tar"
    run_pack(project, gathered)
    assert direct.read_bytes() == gathered.read_bytes()


# -- output modes --------------------------------------------------------------------------------


def test_directory_only_writes_the_same_tree(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["alpha", "beta", "noarch-data"], wheels=["fixture-wheel"])
    tar_file = tmp_path / "environment.tar"
    run_pack(project, tar_file)
    folder = tmp_path / "pack"
    result = run_pack(project, folder, directory_only=True)
    assert members(tar_file) == listing(folder)
    assert result.output == folder
    extracted = extract(tar_file, tmp_path / "x")
    for entry in archive.entries(extracted):
        if not entry.is_dir:
            assert (folder / entry.name).read_bytes() == entry.path.read_bytes(), entry.name
    assert result.size == sum(e.size for e in archive.entries(folder))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    check_format(folder)


def test_directory_only_refuses_a_non_empty_folder(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["beta"])
    folder = tmp_path / "pack"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(PackError, match="exists and is not empty"):
        run_pack(project, folder, directory_only=True)
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


PACK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from conda_pixi_pack.errors import PackError
    from conda_pixi_pack.pack.output import OutputMode
    from conda_pixi_pack.pack.pipeline import PackOptions, pack
    from conda_pixi_pack.pack.sources.lockfile import LockSource
    args = json.loads(sys.argv[1])
    options = PackOptions(
        source=LockSource(Path(args["manifest"])),
        platform="linux-64",
        output=Path(args.get("output", "environment.tar")),
        mode=OutputMode.STREAM if args.get("stdout", False) else OutputMode.ARCHIVE,
    )
    code = 0
    try:
        pack(options)
    except PackError as exc:
        print("error:", exc.message, file=sys.stderr)
        code = exc.exit_code
    if args.get("rss") and not code:
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest)
        print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")), file=sys.stderr)
    # as the CLI does (cli.run): no interpreter teardown, where py-rattler's threads may abort it
    sys.stdout.flush(); sys.stderr.flush()
    import os; os._exit(code)
    """
)


def pack_process(**args: Any) -> list[str]:
    return [sys.executable, "-c", PACK_SCRIPT, json.dumps(args)]


def test_stdout_gets_the_archive_and_nothing_else(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["alpha", "beta", "noarch-data"], wheels=["fixture-wheel"])
    output = tmp_path / "environment.tar"
    run_pack(project, output)
    result = subprocess.run(
        pack_process(manifest=str(project), stdout=True), capture_output=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == output.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.tar"]


# -- failures leave nothing behind ---------------------------------------------------------------


def test_failed_pack_leaves_no_file_and_keeps_an_old_one(
    sample_channel: Channel,
    make_server: Callable[[Path], ChannelServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> None:
    server = make_server(sample_channel.root)
    project = make_project(["alpha", "beta", "noarch-data"], server=server)
    server.corrupt(sample_channel.relpath("noarch-data"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(PackError):
        run_pack(project, out_dir / "environment.tar")
    assert list(out_dir.iterdir()) == []
    (out_dir / "environment.tar").write_bytes(b"previous pack")
    with pytest.raises(PackError):
        run_pack(project, out_dir / "environment.tar")
    assert [p.name for p in out_dir.iterdir()] == ["environment.tar"]
    assert (out_dir / "environment.tar").read_bytes() == b"previous pack"


def test_existing_output_is_replaced(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["beta"])
    output = tmp_path / "environment.tar"
    output.write_bytes(b"previous pack")
    run_pack(project, output)
    assert members(output)[0] == "channel/"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["environment.tar"]


def test_missing_output_folder_is_refused(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["beta"])
    target = tmp_path / "nope" / "environment.tar"
    with pytest.raises(PackError) as info:
        run_pack(project, target)
    assert info.value.message == f"cannot write {target}: the folder {target.parent} does not exist"


def test_output_that_is_a_folder_is_refused(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["beta"])
    with pytest.raises(PackError, match="it is a folder"):
        run_pack(project, tmp_path)


def test_read_only_output_folder_is_refused(
    make_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = make_project(["beta"])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):
        # root ignores permission bits: let access() answer as it would for anyone else
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == locked else real_access(p, m))
    try:
        with pytest.raises(PackError) as info:
            run_pack(project, locked / "environment.tar")
        target = locked / "environment.tar"
        assert info.value.message == f"cannot write {target}: the folder {locked} is not writable"
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


class SlowHandler(BaseHTTPRequestHandler):
    """Serves a file's headers and first bytes, then trickles (for Ctrl-C mid-download)."""

    root: Path
    started: threading.Event

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        data = path.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:10])
        self.wfile.flush()
        self.started.set()
        try:
            for i in range(10, len(data)):
                time.sleep(0.5)
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
        except OSError:
            pass


@pytest.fixture
def slow_server(sample_channel: Channel) -> Iterator[tuple[str, threading.Event]]:
    started = threading.Event()
    handler = type("Handler", (SlowHandler,), {"root": sample_channel.root, "started": started})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", started
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_mid_download_leaves_nothing(
    sample_channel: Channel, slow_server: tuple[str, threading.Event], tmp_path: Path, signum: int
) -> None:
    url, started = slow_server
    records = [
        record_for(sample_channel.packages[name], f"{url}/{sample_channel.relpath(name)}", channel=url)
        for name in ("alpha", "beta")
    ]
    project = tmp_path / "project"
    write_lock(project / "pixi.lock", records, channel=url)
    write_project(project, channels=[url])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # the real command line: it turns SIGTERM (a CI cancel) into the same clean-up as Ctrl-C
    command = [sys.executable, "-m", "conda_pixi_pack", "pack", str(project), "-p", "linux-64"]
    process = subprocess.Popen(
        [*command, "-o", str(out_dir / "environment.tar")], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert started.wait(60), "the pack never started downloading"
        time.sleep(0.5)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == (143 if signum == signal.SIGTERM else 130), stderr.decode()
    assert b"interrupted" in stderr
    assert list(out_dir.iterdir()) == []


# -- PyPI ------------------------------------------------------------------------------------------


def test_sdist_stops_the_pack(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["beta"], wheels=["fixture-wheel", "fixture-sdist"])
    with pytest.raises(PackError) as info:
        run_pack(project, tmp_path / "environment.tar")
    assert "fixture-sdist" in str(info.value)
    assert "--ignore-pypi-non-wheel" in str(info.value)
    assert not (tmp_path / "environment.tar").exists()


def test_sdist_skipped_with_the_flag(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["beta"], wheels=["fixture-wheel", "fixture-sdist"])
    output = tmp_path / "environment.tar"
    result = run_pack(project, output, ignore_pypi_non_wheel=True)
    assert result.wheels == 1
    assert [m for m in members(output) if m.startswith("pypi/")] == [
        "pypi/",
        "pypi/fixture_wheel-1.0-py3-none-any.whl",
    ]


# -- --inject ------------------------------------------------------------------------------------


def test_inject_a_fitting_package(make_project: Callable[..., Path], tmp_path: Path) -> None:
    injected = build_package(
        PackageSpec("addon", "1.0", "0", noarch="generic", depends=["beta >=1.2"], fmt="tar.bz2"),
        tmp_path / "local",
    )
    project = make_project(["alpha", "beta"])
    output = tmp_path / "environment.tar"
    result = run_pack(project, output, inject=[injected])
    assert result.conda_packages == 3
    root = extract(output, tmp_path / "x")
    repodata = check_format(root)
    record = repodata["noarch"]["addon-1.0-0.tar.bz2"]
    assert record["depends"] == ["beta >=1.2"]
    assert record["md5"] == hashlib.md5(injected.read_bytes()).hexdigest()
    document = json.loads((root / "channel/noarch/repodata.json").read_text())
    assert list(document["packages"]) == ["addon-1.0-0.tar.bz2"]
    lines = (root / "environment.yml").read_text().splitlines()
    assert lines[4:] == ["  - alpha=1.0=h0_0", "  - beta=1.2=h0_0", "  - addon=1.0=0"]
    origins = json.loads((root / "pixi-pack.json").read_text())["conda-pixi-pack"]["origins"]
    # a local path of this machine would make the pack depend on where the file sat
    assert "noarch/addon-1.0-0.tar.bz2" not in origins
    assert sorted(origins) == ["linux-64/alpha-1.0-h0_0.conda", "linux-64/beta-1.2-h0_0.tar.bz2"]


def test_inject_replaces_a_locked_package(make_project: Callable[..., Path], tmp_path: Path) -> None:
    newer = build_package(PackageSpec("beta", "1.3", "h0_0"), tmp_path / "local")
    project = make_project(["alpha", "beta"])
    output = tmp_path / "environment.tar"
    reporter = Recorder()
    result = run_pack(project, output, reporter, inject=[newer])
    assert result.conda_packages == 2
    linux = [m for m in members(output) if m.startswith("channel/linux-64/")]
    assert linux == [
        "channel/linux-64/",
        "channel/linux-64/alpha-1.0-h0_0.conda",
        "channel/linux-64/beta-1.3-h0_0.conda",
        "channel/linux-64/repodata.json",
    ]
    assert reporter.warnings == ["injected beta=1.3=h0_0 replaces locked beta=1.2=h0_0"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            PackageSpec("needy", "1.0", "0", depends=["gamma"]),
            (
                "injected package needy=1.0=0 does not fit the locked environment: "
                "it depends on 'gamma', which is not in the environment"
            ),
        ),
        (
            PackageSpec("strict", "1.0", "0", constrains=["beta >=2"]),
            (
                "injected package strict=1.0=0 does not fit the locked environment: "
                "strict=1.0=0 constrains 'beta >=2', violated by beta=1.2=h0_0"
            ),
        ),
        (
            PackageSpec("foreign", "1.0", "0", subdir="win-64"),
            "cannot inject foreign-1.0-0.conda: it is built for win-64, the pack is for linux-64",
        ),
    ],
    ids=["unmet-dependency", "violated-constraint", "wrong-subdir"],
)
def test_inject_that_does_not_fit_is_refused_before_downloading(
    sample_channel: Channel,
    make_server: Callable[[Path], ChannelServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
    spec: PackageSpec,
    message: str,
) -> None:
    server = make_server(sample_channel.root)
    project = make_project(["alpha", "beta"], server=server)
    injected = build_package(spec, tmp_path / "local")
    output = tmp_path / "environment.tar"
    with pytest.raises(PackError) as info:
        run_pack(project, output, inject=[injected])
    assert info.value.message == message
    assert not output.exists()
    assert not [r for r in server.requests if r.endswith((".conda", ".tar.bz2"))]


def test_inject_a_wheel(
    python_channel: Channel,
    make_server: Callable[[Path], ChannelServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
) -> None:
    server = make_server(python_channel.root)
    project = make_project(["python"], channel=python_channel, server=server)
    wheel = build_wheel(tmp_path / "local", "extra-tool", "0.2", {"extra_tool/__init__.py": ""})
    output = tmp_path / "environment.tar"
    reporter = Recorder()
    result = run_pack(project, output, reporter, inject=[wheel])
    assert result.wheels == 1
    assert "pypi/extra_tool-0.2-py3-none-any.whl" in members(output)
    root = extract(output, tmp_path / "x")
    assert (
        (root / "environment.yml")
        .read_text()
        .endswith("  - pip:\n    - --no-index\n    - --find-links ./pypi\n    - extra-tool==0.2\n")
    )
    assert reporter.warnings == [
        "injected wheels cannot be checked against the environment: extra_tool-0.2-py3-none-any.whl"
    ]


def test_inject_a_bad_file(make_project: Callable[..., Path], tmp_path: Path) -> None:
    project = make_project(["beta"])
    bad = tmp_path / "thing-1.0.tar.gz"
    bad.write_bytes(b"an sdist")
    with pytest.raises(PackError, match="only .conda, .tar.bz2 and .whl files can be injected"):
        run_pack(project, tmp_path / "environment.tar", inject=[bad])


# -- real packages and memory ----------------------------------------------------------------------


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real fixtures absent: {REAL}")
@pytest.mark.parametrize("suffix", [".conda", ".tar.bz2"], ids=["conda", "tar-bz2"])
def test_pack_real_packages(
    make_server: Callable[[Path], ChannelServer], tmp_path: Path, suffix: str
) -> None:
    """pixi-pack's own example package and wheel, served over HTTP, packed and checked.

    pixi-unpack itself cannot be built here (cargo has no registry access), so the pack is
    checked against the format's rules instead.
    """
    server = make_server(REAL.resolve())
    package = REAL / f"{WEBSERVER}{suffix}"
    record = record_for(package, server.url_for(package.name), channel=server.url)
    project = tmp_path / "project"
    wheel_url = server.url_for(WEBSERVER_WHEEL)
    write_lock(
        project / "pixi.lock",
        [record],
        channel=server.url,
        wheels=[("my-webserver", "0.1.0", wheel_url, sha256_of(REAL / WEBSERVER_WHEEL))],
    )
    write_project(project, channels=[server.url])
    output = tmp_path / "environment.tar"
    result = run_pack(project, output)
    assert (result.conda_packages, result.wheels) == (1, 1)
    assert members(output) == [
        "channel/",
        "channel/noarch/",
        f"channel/noarch/{package.name}",
        "channel/noarch/repodata.json",
        "environment.yml",
        "explicit.txt",
        "pixi-pack.json",
        "pypi/",
        f"pypi/{WEBSERVER_WHEEL}",
    ]
    root = extract(output, tmp_path / "x")
    repodata = check_format(root)
    packed = repodata["noarch"][package.name]
    assert packed["depends"] == ["python >=3.12", "fastapi", "python"]
    assert packed["constrains"] == ["pydantic >=2,<3"]
    assert packed["noarch"] == "python"
    assert (root / "environment.yml").read_text() == (
        "channels:\n  - ./channel\n  - nodefaults\ndependencies:\n  - my-webserver=0.1.0=pyh4616a5c_0\n"
        "  - pip:\n    - --no-index\n    - --find-links ./pypi\n    - my-webserver==0.1.0\n"
    )
    assert (root / "pypi" / WEBSERVER_WHEEL).read_bytes() == (REAL / WEBSERVER_WHEEL).read_bytes()
    meta = layout.read_metadata(root)
    origin = layout.Origin(server.url_for(package.name), f"{server.url}/")
    assert meta.origins[f"noarch/{package.name}"] == origin


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc/self/status")
def test_packing_a_200_mb_package_keeps_memory_low(
    make_server: Callable[[Path], ChannelServer],
    make_project: Callable[..., Path],
    tmp_path: Path,
    sample_channel: Channel,
) -> None:
    from tests.conftest import Channel as ChannelType

    payload = tmp_path / "payload.bin"
    with payload.open("wb") as handle:
        for _ in range(200):
            handle.write(os.urandom(1024 * 1024))
    channel = ChannelType(tmp_path / "big-channel")
    channel.add(PackageSpec("big", "1.0", "0", files={"share/big.bin": payload}, compression_level=1))
    assert channel.packages["big"].stat().st_size > 190 * 1024 * 1024
    server = make_server(channel.root)
    project = make_project(["big"], channel=channel, server=server)
    output = tmp_path / "environment.tar"
    result = subprocess.run(
        [*pack_process(manifest=str(project), output=str(output), rss=True)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    peak_mib = int(result.stderr.strip().splitlines()[-1]) / 1024
    assert output.stat().st_size > 190 * 1024 * 1024
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB for a 200 MiB package"


def test_result_counts_for_stdout_are_bytes_written(
    make_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = make_project(["beta"])
    sink = io.BytesIO()

    class FakeStdout:
        buffer = sink

    monkeypatch.setattr(sys, "stdout", FakeStdout())
    result = pack(PackOptions(source=LockSource(project), platform=PLATFORM, mode=OutputMode.STREAM))
    assert result.output is None
    assert result.size == len(sink.getvalue())
    assert tarfile.open(fileobj=io.BytesIO(sink.getvalue()), mode="r:").getnames()[0] == "channel"


def test_folder_packs_from_a_cache_leave_its_entries_alone(
    make_project: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder pack normalises its files; the cache entries linked into it keep their
    mtime and mode, so their verification stamps stay valid and the next pack reads none."""
    from conda_pixi_pack.pack import cache as cache_module

    project = make_project(["alpha", "beta", "noarch-data"], wheels=["fixture-wheel"])
    cache = tmp_path / "cache"
    run_pack(project, tmp_path / "cold", directory_only=True, cache_dir=cache)
    entries = {
        path: path.stat()
        for path in cache.rglob("*")
        if path.is_file() and not path.name.startswith(".") and path.name != "CACHEDIR.TAG"
    }
    assert len(entries) == 4
    assert all(int(st.st_mtime) != layout.TAR_MTIME for st in entries.values())
    run_pack(project, tmp_path / "warm", directory_only=True, cache_dir=cache)
    for path, before in entries.items():
        after = path.stat()
        assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (
            before.st_ino,
            before.st_mode,
            before.st_mtime_ns,
        )
        assert after.st_nlink == 1  # no file of either folder pack shares the entry's inode
    for folder in (tmp_path / "cold", tmp_path / "warm"):
        for entry in archive.entries(folder):
            st = entry.path.stat()
            assert (st.st_mode & 0o777, int(st.st_mtime)) == (
                0o755 if entry.is_dir else 0o644,
                layout.TAR_MTIME,
            )

    def no_read(path: Path, artifact: object) -> str | None:
        raise AssertionError(f"{path} was hashed: its stamp no longer matches")

    monkeypatch.setattr(cache_module, "file_mismatch", no_read)
    third = tmp_path / "third.tar"
    run_pack(project, third, cache_dir=cache)
    assert members(third) == listing(tmp_path / "warm")


@pytest.mark.parametrize("urls", ["relative", "file"], ids=["relative-path", "absolute-path"])
def test_a_missing_local_package_is_named_with_how_the_lock_names_it(
    make_project: Callable[..., Path], sample_channel: Channel, tmp_path: Path, urls: str
) -> None:
    """Said before anything is downloaded, with a hint that matches the lock: a path relative to
    it, or an absolute location."""
    from tests.conftest import Channel as ChannelType
    from tests.support.channel import index_channel

    channel = ChannelType(tmp_path / "own")
    package = channel.add(sample_channel.specs["beta"])
    index_channel(channel.root)
    project = make_project(["beta"], channel=channel, urls=urls)
    package.unlink()
    with pytest.raises(PackError) as raised:
        run_pack(project, tmp_path / "environment.tar")
    assert raised.value.message == f"beta 1.2 h0_0: {package.resolve()} does not exist"
    if urls == "relative":
        named = os.path.relpath(package.resolve(), project.resolve())
        assert (
            raised.value.hint
            == f"the lock names it by {named}, relative to the lock; put the file back, or lock again"
        )
    else:
        assert raised.value.hint == (
            f"it is named by the absolute path {package.resolve()}; put the file back, or lock again"
        )
    assert not (tmp_path / "environment.tar").exists()
