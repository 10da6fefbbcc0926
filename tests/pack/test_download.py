"""download.fetch_all: real HTTP on 127.0.0.1 through py-rattler's client, verified and streamed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.pack.download import AUTH_FILE_ENV, NetworkSettings, fetch_all
from conda_pixi_pack.pack.sources.lockfile import load
from conda_pixi_pack.progress import Reporter, Task
from tests.support.server import write_auth_file
from tests.support.slow_server import SlowServer, artifact_for, leftovers

if TYPE_CHECKING:
    from collections.abc import Callable

    from conda_pixi_pack.artifacts import Artifact
    from tests.conftest import Channel
    from tests.support.server import ChannelServer

#: Project root, for subprocesses that import the package from source.
ROOT: Final = Path(__file__).resolve().parents[2]
#: Size of the file that proves streaming (memory must stay far below it).
BIG_SIZE: Final = 200 * 1024 * 1024


class ByteTask(Task):
    def __init__(self, total: float | None) -> None:
        self.total = total
        self.advanced = 0.0
        self.finished = False
        self._lock = threading.Lock()

    def advance(self, amount: float = 1) -> None:
        with self._lock:
            self.advanced += amount

    def done(self) -> None:
        self.finished = True


class Recorder(Reporter):
    """Records bars and messages as a user would see them."""

    def __init__(self) -> None:
        self.tasks: list[ByteTask] = []
        self.messages: list[str] = []

    def task(self, description: str, total: float | None, unit: str = "pkg") -> Task:
        assert (description, unit) == ("Fetching packages", "B")
        self.tasks.append(ByteTask(total))
        return self.tasks[-1]

    def debug(self, message: str) -> None:
        self.messages.append(message)


def artifacts_of(project: Path) -> list[Artifact]:
    env = load(project, "default", "linux-64")
    return [c.artifact for c in env.conda] + [w.artifact for w in env.wheels]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["direct", "rattler"])
def transport(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which client fetches from 127.0.0.1: the direct one, or rattler's, which the router picks
    when a credentials file names the host (the test servers ignore the credentials sent)."""
    if request.param == "rattler":
        auth = write_auth_file(tmp_path / "any-credentials.json")
        monkeypatch.setenv(AUTH_FILE_ENV, str(auth))
    else:
        monkeypatch.delenv(AUTH_FILE_ENV, raising=False)
    return str(request.param)


# -- the happy path ------------------------------------------------------------------------------


def test_fetches_conda_packages_and_wheels_verified(
    make_project: Callable[..., Path], sample_channel: Channel, tmp_path: Path
) -> None:
    project = make_project(["alpha", "beta", "noarch-data"], wheels=["fixture-wheel"])
    artifacts = artifacts_of(project)
    recorder = Recorder()
    paths = fetch_all(artifacts, tmp_path / "out", network=NetworkSettings(), reporter=recorder)
    assert sorted(paths) == sorted(a.relative_path for a in artifacts)
    for name in ("alpha", "beta", "noarch-data"):
        rel = sample_channel.relpath(name)
        assert paths[rel] == tmp_path / "out" / rel
        assert paths[rel].read_bytes() == sample_channel.packages[name].read_bytes()
    wheel = paths["pypi/fixture_wheel-1.0-py3-none-any.whl"]
    assert wheel.read_bytes() == sample_channel.wheels["fixture-wheel"].read_bytes()
    (task,) = recorder.tasks
    expected = sum(p.stat().st_size for p in paths.values())
    assert task.total is None  # the wheel's size is not in the lock
    assert task.advanced == expected
    assert task.finished
    assert sum(m.startswith("fetched ") for m in recorder.messages) == 4
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("urls", ["file", "relative"], ids=["file-url", "relative-path"])
def test_local_files_are_copied_and_verified(
    make_project: Callable[..., Path], sample_channel: Channel, tmp_path: Path, urls: str
) -> None:
    project = make_project(["alpha", "noarch-data"], urls=urls, wheels=["fixture-wheel"])
    artifacts = artifacts_of(project)
    recorder = Recorder()
    paths = fetch_all(artifacts, tmp_path / "out", network=NetworkSettings(), reporter=recorder)
    assert paths["noarch/noarch-data-0.5-0.conda"].read_bytes() == (
        sample_channel.packages["noarch-data"].read_bytes()
    )
    assert recorder.tasks[0].advanced == sum(p.stat().st_size for p in paths.values())


def test_local_file_missing_or_wrong(tmp_path: Path) -> None:
    data = b"package bytes" * 100
    (tmp_path / "blob.conda").write_bytes(data[:-1] + b"X")
    wrong = artifact_for(data, (tmp_path / "blob.conda").as_uri())
    with pytest.raises(PackError, match="checksum mismatch for blob-1.0-0.conda") as raised:
        fetch_all([wrong], tmp_path / "out", network=NetworkSettings())
    assert hashlib.sha256(data).hexdigest() in raised.value.message
    missing = artifact_for(data, (tmp_path / "gone.conda").as_uri())
    with pytest.raises(PackError, match="gone.conda does not exist"):
        fetch_all([missing], tmp_path / "out", network=NetworkSettings())
    assert not (tmp_path / "out/linux-64/blob-1.0-0.conda").exists()
    assert leftovers(tmp_path / "out") == []


def test_md5_only_and_size_are_verified(slow_server: Callable[..., SlowServer], tmp_path: Path) -> None:
    data = os.urandom(5000)
    server = slow_server({"a.conda": data})
    good = artifact_for(data, server.url("a.conda"), sha256=None, md5=hashlib.md5(data).hexdigest())
    assert fetch_all([good], tmp_path / "a", network=NetworkSettings())
    bad = artifact_for(data, server.url("a.conda"), sha256=None, md5="0" * 32)
    with pytest.raises(PackError, match=f"md5 {'0' * 32} expected, got {hashlib.md5(data).hexdigest()}"):
        fetch_all([bad], tmp_path / "b", network=NetworkSettings())
    short = artifact_for(data, server.url("a.conda"), size=4999)
    with pytest.raises(PackError, match="size 4999 expected, got 5000"):
        fetch_all([short], tmp_path / "c", network=NetworkSettings())


# -- parallelism and streaming -------------------------------------------------------------------


def test_downloads_run_in_parallel(slow_server: Callable[..., SlowServer], tmp_path: Path) -> None:
    files = {f"p{i}.conda": os.urandom(1000) for i in range(12)}
    server = slow_server(files, delay=0.4)
    artifacts = [artifact_for(d, server.url(n), name=n) for n, d in files.items()]
    start = time.monotonic()
    fetch_all(artifacts, tmp_path / "out", network=NetworkSettings())
    elapsed = time.monotonic() - start
    assert server.peak >= 6, server.peak
    assert elapsed < 12 * 0.4 / 3, elapsed


def test_config_concurrency_downloads_is_honoured(
    slow_server: Callable[..., SlowServer], tmp_path: Path
) -> None:
    files = {f"p{i}.conda": os.urandom(1000) for i in range(8)}
    server = slow_server(files, delay=0.15)
    config = tmp_path / "config.toml"
    config.write_text("[concurrency]\ndownloads = 2\n")
    artifacts = [artifact_for(d, server.url(n), name=n) for n, d in files.items()]
    fetch_all(artifacts, tmp_path / "out", network=NetworkSettings(config_file=config))
    assert server.peak == 2


def test_large_file_is_streamed_not_buffered(
    tmp_path: Path, make_server: Callable[[Path], ChannelServer]
) -> None:
    """A 200 MB package: the downloading process's peak memory grows far less than the file."""
    root = tmp_path / "channel"
    (root / "linux-64").mkdir(parents=True)
    big = root / "linux-64/big-1.0-0.conda"
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with big.open("wb") as stream:
        for i in range(BIG_SIZE >> 20):
            chunk = bytes([i % 256]) + block[1:]
            stream.write(chunk)
            digest.update(chunk)
    server = make_server(root)
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        from pathlib import Path
        from conda_pixi_pack.artifacts import Artifact
        from conda_pixi_pack.pack.download import NetworkSettings, fetch_all
        import rattler.package_streaming  # imports count as baseline, not as download memory
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        art = Artifact(url={server.url_for("linux-64/big-1.0-0.conda")!r}, file_name="big-1.0-0.conda",
                       sha256={digest.hexdigest()!r}, md5=None, size={BIG_SIZE}, label="big",
                       relative_path="linux-64/big-1.0-0.conda")
        paths = fetch_all([art], Path({str(tmp_path / "out")!r}), network=NetworkSettings())
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"delta_kib": after - before, "size": paths[art.relative_path].stat().st_size}}))
        sys.stdout.flush()
        import os; os._exit(0)  # as cli.run does: py-rattler's threads may abort the teardown
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300, check=True
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["size"] == BIG_SIZE
    assert measured["delta_kib"] * 1024 < 40 * 1024 * 1024, measured  # far below 200 MB


# -- retries -------------------------------------------------------------------------------------


def test_503_once_is_retried(
    make_project: Callable[..., Path],
    channel_server: ChannelServer,
    sample_channel: Channel,
    tmp_path: Path,
    transport: str,
) -> None:
    project = make_project(["alpha"])
    server = channel_server
    rel = sample_channel.relpath("alpha")
    server.reset()
    server.fail_once(rel, 503)
    try:
        paths = fetch_all(artifacts_of(project), tmp_path / "out", network=NetworkSettings())
        assert paths[rel].read_bytes() == sample_channel.packages["alpha"].read_bytes()
        assert server.count(rel) == 2
    finally:
        server.reset()


def test_dropped_connection_is_retried(
    sample_channel: Channel, make_server: Callable[[Path], ChannelServer], tmp_path: Path, transport: str
) -> None:
    server = make_server(sample_channel.root)
    big = sample_channel.packages["prefixed"]
    rel = sample_channel.relpath("prefixed")
    server.drop(rel)
    data = big.read_bytes()
    artifact = artifact_for(data, server.url_for(rel), name=big.name, relative_path=rel)
    recorder = Recorder()
    paths = fetch_all([artifact], tmp_path / "out", network=NetworkSettings(), reporter=recorder)
    assert paths[rel].read_bytes() == data
    assert server.count(rel) == 2
    assert recorder.tasks[0].advanced == len(data)  # the cut attempt's bytes were taken back
    assert any(m.startswith("retrying prefixed") for m in recorder.messages)


def test_stalled_transfer_is_abandoned_and_retried(
    slow_server: Callable[..., SlowServer], tmp_path: Path, transport: str
) -> None:
    data = os.urandom(200_000)
    server = slow_server({"s.conda": data})
    server.hang["s.conda"] = 1
    artifact = artifact_for(data, server.url("s.conda"))
    network = NetworkSettings(stall_timeout=0.5)
    paths = fetch_all([artifact], tmp_path / "out", network=network)
    assert paths[artifact.relative_path].read_bytes() == data
    server.hang["s.conda"] = 5
    with pytest.raises(
        PackError, match=r"timed out downloading blob-1.0-0.conda: no data from 127.0.0.1:\d+"
    ):
        fetch_all([artifact], tmp_path / "out2", network=NetworkSettings(stall_timeout=0.5, attempts=2))
    assert leftovers(tmp_path / "out2") == []


def test_checksum_mismatch_retried_once_then_fails(
    sample_channel: Channel, make_server: Callable[[Path], ChannelServer], tmp_path: Path, transport: str
) -> None:
    server = make_server(sample_channel.root)
    rel = sample_channel.relpath("alpha")
    data = sample_channel.packages["alpha"].read_bytes()
    server.corrupt(rel)
    artifact = artifact_for(data, server.url_for(rel), name="alpha-1.0-h0_0.conda", label="alpha 1.0 h0_0")
    with pytest.raises(PackError) as raised:
        fetch_all([artifact], tmp_path / "out", network=NetworkSettings())
    actual = hashlib.sha256(bytes(255 - b for b in data)).hexdigest()
    assert raised.value.message == (
        f"checksum mismatch for alpha 1.0 h0_0 ({artifact.url}): "
        f"sha256 {artifact.sha256} expected, got {actual}"
    )
    assert server.count(rel) == 2
    assert not (tmp_path / "out" / rel).exists()
    assert leftovers(tmp_path / "out") == []


# -- errors --------------------------------------------------------------------------------------


def test_404_names_the_url(channel_server: ChannelServer, tmp_path: Path, transport: str) -> None:
    url = channel_server.url_for("linux-64/missing-1.0-0.conda")
    with pytest.raises(PackError) as raised:
        fetch_all([artifact_for(b"x", url)], tmp_path / "out", network=NetworkSettings())
    assert raised.value.message == f"blob-1.0-0.conda not found (HTTP 404): {url}"
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("fault", ["auth", "forbid"], ids=["401", "403"])
def test_401_403_point_to_auth_file(
    sample_channel: Channel,
    make_server: Callable[[Path], ChannelServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    monkeypatch.delenv(AUTH_FILE_ENV, raising=False)
    server = make_server(sample_channel.root)
    rel = sample_channel.relpath("alpha")
    if fault == "auth":
        server.require_auth("user", "secret")
    else:
        server.forbid(rel)
    data = sample_channel.packages["alpha"].read_bytes()
    with pytest.raises(PackError) as raised:
        fetch_all([artifact_for(data, server.url_for(rel))], tmp_path / "out", network=NetworkSettings())
    code = "401" if fault == "auth" else "403"
    assert f"access denied (HTTP {code}) to {server.url_for(rel)}" in raised.value.message
    assert "--auth-file" in raised.value.hint
    assert AUTH_FILE_ENV in raised.value.hint
    assert not (tmp_path / "out" / rel).exists()


@pytest.mark.parametrize("how", ["flag", "env", "config"], ids=["auth-file-flag", "env-var", "config-key"])
def test_basic_auth_from_auth_file(
    sample_channel: Channel,
    make_server: Callable[[Path], ChannelServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    server = make_server(sample_channel.root)
    server.require_auth("user", "s3cret")
    rel = sample_channel.relpath("alpha")
    data = sample_channel.packages["alpha"].read_bytes()
    auth = write_auth_file(tmp_path / "auth.json", "user", "s3cret")
    monkeypatch.delenv(AUTH_FILE_ENV, raising=False)
    if how == "flag":
        network = NetworkSettings(auth_file=auth)
    elif how == "env":
        monkeypatch.setenv(AUTH_FILE_ENV, str(auth))
        network = NetworkSettings()
    else:
        config = tmp_path / "config.toml"
        config.write_text(f"authentication-override-file = {json.dumps(str(auth))}\n")
        network = NetworkSettings(config_file=config)
    paths = fetch_all([artifact_for(data, server.url_for(rel))], tmp_path / "out", network=network)
    assert paths["linux-64/blob-1.0-0.conda"].read_bytes() == data
    assert server.log[-1][2] == 200


def test_auth_flag_wins_over_env_var(
    sample_channel: Channel,
    make_server: Callable[[Path], ChannelServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = make_server(sample_channel.root)
    server.require_auth("user", "right")
    rel = sample_channel.relpath("alpha")
    data = sample_channel.packages["alpha"].read_bytes()
    monkeypatch.setenv(AUTH_FILE_ENV, str(write_auth_file(tmp_path / "wrong.json", "user", "wrong")))
    good = NetworkSettings(auth_file=write_auth_file(tmp_path / "right.json", "user", "right"))
    assert fetch_all([artifact_for(data, server.url_for(rel))], tmp_path / "a", network=good)
    with pytest.raises(PackError, match="HTTP 401") as refused:
        fetch_all([artifact_for(data, server.url_for(rel))], tmp_path / "b", network=NetworkSettings())
    # credentials were given and refused: the hint says which file to check, not to give some
    assert (
        refused.value.hint
        == f"check the credentials for 127.0.0.1 in {tmp_path / 'wrong.json'} (they were sent and refused)"
    )


def test_bad_auth_and_config_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_FILE_ENV, raising=False)
    art = artifact_for(b"x", "http://127.0.0.1:9/x.conda")
    with pytest.raises(PackError, match="authentication file .*nope.json does not exist"):
        fetch_all([art], tmp_path / "o", network=NetworkSettings(auth_file=tmp_path / "nope.json"))
    monkeypatch.setenv(AUTH_FILE_ENV, str(tmp_path / "gone.json"))
    with pytest.raises(PackError, match="gone.json does not exist"):
        fetch_all([art], tmp_path / "o", network=NetworkSettings())
    monkeypatch.delenv(AUTH_FILE_ENV)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(PackError, match="cannot .*broken.json"):
        fetch_all([art], tmp_path / "o", network=NetworkSettings(auth_file=tmp_path / "broken.json"))
    with pytest.raises(PackError, match="config file .*missing.toml does not exist"):
        fetch_all([art], tmp_path / "o", network=NetworkSettings(config_file=tmp_path / "missing.toml"))
    (tmp_path / "bad.toml").write_text("downloads = [oops\n")
    with pytest.raises(PackError, match=r"cannot read config file .*bad.toml: .*TOML parse error") as raised:
        fetch_all([art], tmp_path / "o", network=NetworkSettings(config_file=tmp_path / "bad.toml"))
    assert "\n" not in str(raised.value)


def test_connection_refused_names_the_host(tmp_path: Path) -> None:
    port = closed_port()
    art = artifact_for(b"x", f"http://127.0.0.1:{port}/linux-64/blob-1.0-0.conda")
    with pytest.raises(PackError) as raised:
        fetch_all([art], tmp_path / "out", network=NetworkSettings())
    assert (
        raised.value.message == f"cannot download blob-1.0-0.conda: 127.0.0.1:{port} refused the connection"
    )


def test_unresolvable_host_is_named(tmp_path: Path) -> None:
    art = artifact_for(b"x", "http://no-such-host.invalid/linux-64/blob-1.0-0.conda")
    with pytest.raises(PackError) as raised:
        fetch_all([art], tmp_path / "out", network=NetworkSettings())
    assert (
        raised.value.message
        == "cannot download blob-1.0-0.conda: host no-such-host.invalid cannot be resolved"
    )


def test_mirror_from_config_replaces_a_dead_channel(
    make_project: Callable[..., Path], channel_server: ChannelServer, sample_channel: Channel, tmp_path: Path
) -> None:
    project = make_project(["alpha", "noarch-data"])
    dead = "https://conda.example.invalid/fixtures"
    lock = project / "pixi.lock"
    lock.write_text(lock.read_text().replace(channel_server.url, dead))
    artifacts = artifacts_of(project)
    assert all(a.url.startswith(dead) for a in artifacts)
    with pytest.raises(PackError, match="conda.example.invalid cannot be resolved"):
        fetch_all(artifacts, tmp_path / "dead", network=NetworkSettings(retries=0))
    config = tmp_path / "config.toml"
    config.write_text(f'[mirrors]\n"{dead}/" = ["{channel_server.url}/"]\n')
    paths = fetch_all(artifacts, tmp_path / "out", network=NetworkSettings(config_file=config))
    assert paths["noarch/noarch-data-0.5-0.conda"].read_bytes() == (
        sample_channel.packages["noarch-data"].read_bytes()
    )


def test_unsafe_or_conflicting_artifacts_are_refused(tmp_path: Path) -> None:
    art = artifact_for(b"x", "http://127.0.0.1:9/x.conda")
    with pytest.raises(PackError, match="refusing to write"):
        fetch_all(
            [artifact_for(b"x", art.url, relative_path="../evil.conda")], tmp_path, network=NetworkSettings()
        )
    with pytest.raises(PackError, match="listed twice with different checksums"):
        fetch_all([art, artifact_for(b"y", art.url)], tmp_path, network=NetworkSettings())


# -- failure leaves nothing half-written ---------------------------------------------------------


def test_one_failure_cancels_the_rest_without_partial_files(
    slow_server: Callable[..., SlowServer], tmp_path: Path, transport: str
) -> None:
    # each slow transfer would take 31 chunks x 0.2 s = 6.2 s to its end; a 404 takes
    # milliseconds, and the cancellation one watch interval or so
    files = {f"big{i}.conda": os.urandom(2_000_000) for i in range(4)}
    server = slow_server(files, chunk_delay=0.2)
    artifacts = [artifact_for(d, server.url(n), name=n) for n, d in files.items()]
    artifacts.append(artifact_for(b"x", server.url("absent.conda"), name="absent.conda"))
    start = time.monotonic()
    with pytest.raises(PackError, match="absent.conda not found"):
        fetch_all(artifacts, tmp_path / "out", network=NetworkSettings())
    assert time.monotonic() - start < 4  # the slow transfers were cancelled, not awaited
    for art in artifacts:
        assert not (tmp_path / "out" / art.relative_path).exists()
    assert leftovers(tmp_path / "out") == []


def test_ctrl_c_leaves_no_partial_file(
    slow_server: Callable[..., SlowServer], tmp_path: Path, transport: str
) -> None:
    data = os.urandom(4_000_000)
    server = slow_server({"slow.conda": data}, chunk_delay=0.05)
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import signal, sys
        from pathlib import Path
        from conda_pixi_pack.artifacts import Artifact
        from conda_pixi_pack.pack.download import NetworkSettings, fetch_all
        # Python keeps SIGINT ignored when started so (a background job of a script): Ctrl-C as in a terminal
        signal.signal(signal.SIGINT, signal.default_int_handler)
        art = Artifact(url={server.url("slow.conda")!r}, file_name="slow.conda", sha256="0" * 64,
                       md5=None, size={len(data)}, relative_path="linux-64/slow.conda", label="slow")
        print("started", flush=True)
        try:
            fetch_all([art], Path({str(out)!r}), network=NetworkSettings())
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            import os; os._exit(130)  # as cli.run does: py-rattler's threads may abort the teardown
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 10
    while not leftovers(out) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert leftovers(out), "the download never started"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout
    assert leftovers(out) == []
    assert not (out / "linux-64/slow.conda").exists()


@pytest.mark.slow
def test_a_process_can_exit_right_after_downloading(
    tmp_path: Path, make_server: Callable[..., ChannelServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """py-rattler's threads used to abort CPython when the interpreter finalized right after many
    parallel downloads (about 1 process in 8 here); fetch_all now leaves them a moment first.
    Probabilistic by nature: ten processes, each exiting normally right after 40 downloads
    through rattler's client (credentials for the host send them there)."""
    auth = write_auth_file(tmp_path / "any-credentials.json")
    monkeypatch.setenv(AUTH_FILE_ENV, str(auth))
    root = tmp_path / "channel"
    (root / "linux-64").mkdir(parents=True)
    artifacts = []
    for index in range(40):
        data = os.urandom(1_000_000)
        (root / "linux-64" / f"p{index}-1.0-0.conda").write_bytes(data)
        artifacts.append((f"p{index}-1.0-0.conda", hashlib.sha256(data).hexdigest(), len(data)))
    server = make_server(root)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from conda_pixi_pack.artifacts import Artifact
        from conda_pixi_pack.pack.download import NetworkSettings, fetch_all
        arts = [Artifact(url={server.url!r} + "/linux-64/" + name, file_name=name, sha256=sha, md5=None,
                         size=size, label=name, relative_path="linux-64/" + name)
                for name, sha, size in {artifacts!r}]
        fetch_all(arts, Path(sys.argv[1]), network=NetworkSettings())
        """
    )
    for run in range(10):
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"out{run}")],
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, (run, done.returncode, done.stderr.decode()[-2000:])
