"""``pack`` against servers as users run them: a tiny listen backlog, self-signed HTTPS, a server
that never answers, redirects, proxies, netrc and several mirrors (real servers on 127.0.0.1)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from conda_pixi_pack.errors import PackError
from conda_pixi_pack.pack.download import NetworkSettings, fetch_all
from conda_pixi_pack.pack.pipeline import PackOptions, pack
from conda_pixi_pack.pack.sources.lockfile import LockSource
from tests.conftest import Channel
from tests.support.packages import PackageSpec
from tests.support.reporting import Recorder
from tests.support.server import TLS_CERT, ChannelServer
from tests.support.slow_server import artifact_for
from tests.support.stdlib_server import ForwardProxy, FullListener, SilentListener, StdlibServer

if TYPE_CHECKING:
    from collections.abc import Callable

#: Project root, for subprocesses that import the package from source.
ROOT: Final = Path(__file__).resolve().parents[2]
#: Packages in the backlog test: four times the listen backlog of ``python -m http.server``'s
#: default of 5 would already overflow it if they were asked for at once.
MANY: Final = 200


def packed(tar: Path) -> dict[str, bytes]:
    """``channel/<subdir>/<file>`` -> bytes of every package in a pack."""
    with tarfile.open(tar) as archive:
        return {
            m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile() and m.name.startswith("channel/") and not m.name.endswith("repodata.json")
        }


def fetch_alpha(url: str, channel: Channel, out: Path, config: Path | None = None) -> None:
    """Fetch the sample channel's ``alpha`` from ``url`` with default settings and check its bytes."""
    data = channel.packages["alpha"].read_bytes()
    paths = fetch_all([artifact_for(data, url)], out, network=NetworkSettings(config_file=config))
    assert paths["linux-64/blob-1.0-0.conda"].read_bytes() == data


def run_pack(project: Path, output: Path, config: Path | None = None) -> None:
    pack(PackOptions(source=LockSource(project), platform="linux-64", output=output, config_file=config))


def test_backlog_of_one_and_200_files_pack_with_the_defaults(
    tmp_path: Path, make_project: Callable[..., Path]
) -> None:
    """50 connections opened at once overflowed such a server: the kernel drops the SYNs it has
    no room for and the client resends them after 1 s, 3 s, 7 s... A ramp that grows while
    connections open and a connect hedged after a moment pack it in seconds."""
    channel = Channel(tmp_path / "channel")
    for index in range(MANY):
        channel.add(PackageSpec(f"p{index:03d}", files={f"share/p{index:03d}/data.txt": f"{index}\n" * 500}))
    with StdlibServer(channel.root, backlog=1) as server:
        project = make_project(sorted(channel.packages), channel=channel, server=server)
        started = time.monotonic()
        run_pack(project, tmp_path / "environment.tar")
        elapsed = time.monotonic() - started
    contents = packed(tmp_path / "environment.tar")
    assert len(contents) == MANY
    for path in channel.packages.values():
        assert contents[f"channel/linux-64/{path.name}"] == path.read_bytes()
    assert elapsed < 10, elapsed


def test_self_signed_https_is_refused_with_a_hint_then_packs_with_the_option(
    tmp_path: Path,
    sample_channel: Channel,
    make_project: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with ChannelServer(sample_channel.root, tls=True) as server:
        project = make_project(["alpha", "beta"], server=server)
        output = tmp_path / "environment.tar"
        with pytest.raises(PackError) as refused:
            run_pack(project, output)
        assert f"the TLS certificate of 127.0.0.1:{server.port} is not trusted" in refused.value.message
        assert "self-signed" in refused.value.message
        assert "`tls-no-verify = true`" in refused.value.hint
        assert "`--config`" in refused.value.hint
        assert "SSL_CERT_FILE" in refused.value.hint
        assert not output.exists()

        config = tmp_path / "config.toml"
        config.write_text("tls-no-verify = true\n")
        run_pack(project, output, config)
        assert packed(output)[f"channel/{sample_channel.relpath('alpha')}"] == (
            sample_channel.packages["alpha"].read_bytes()
        )

        # trusting its certificate works too, and verification is really on: see above
        output.unlink()
        monkeypatch.setenv("SSL_CERT_FILE", str(TLS_CERT))
        run_pack(project, output)
        assert len(packed(output)) == 2


def test_a_server_that_never_answers_is_said_and_given_up_in_seconds(
    tmp_path: Path, make_project: Callable[..., Path]
) -> None:
    """Without -v: one warning at the first stall on the host, then one error line naming the
    host and the setting, after the read timeout (lowered in --config as a user would) x 4."""
    listener = SilentListener()
    try:
        project = make_project(["alpha", "beta"], server=listener)
        config = tmp_path / "config.toml"
        config.write_text("remote-read-timeout-secs = 0.5\n")
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "conda_pixi_pack", "pack", str(project), "-o", str(tmp_path / "out.tar"),
             "--config", str(config)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    host = listener.url.removeprefix("http://")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    warning = f"warning: no data from {host} for 0.5 s, retrying (1/3)"
    assert lines.count(warning) == 1, result.stderr  # the first stall only, for both files
    assert lines[-1].startswith("error: timed out downloading "), lines[-1]
    assert f"no data from {host} for 0.5 s (4 attempts)" in lines[-1]
    assert "remote-read-timeout-secs" in lines[-1] and "`--config`" in lines[-1]
    assert elapsed < 20, elapsed
    assert not (tmp_path / "out.tar").exists()


def test_a_server_that_takes_no_connection_times_out_as_configured(tmp_path: Path) -> None:
    listener = FullListener()
    recorder = Recorder()
    try:
        config = tmp_path / "config.toml"
        config.write_text(
            "remote_connect_timeout_secs = 0.3\nremote-max-retries = 1\n"
        )  # conda's spelling too
        started = time.monotonic()
        with pytest.raises(PackError) as raised:
            fetch_all(
                [artifact_for(b"x", f"{listener.url}/linux-64/blob-1.0-0.conda")],
                tmp_path / "out",
                network=NetworkSettings(config_file=config),
                reporter=recorder,
            )
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    host = listener.url.removeprefix("http://")
    assert raised.value.message == f"cannot download blob-1.0-0.conda: {host} did not answer within 0.3 s"
    assert "remote-connect-timeout-secs" in raised.value.hint
    assert recorder.warnings == [f"{host} did not answer within 0.3 s, retrying (1/1)"]
    assert elapsed < 5, elapsed  # two attempts of 0.3 s, not the kernel's two minutes


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (
            'remote-read-timeout-secs = "soon"',
            "remote-read-timeout-secs must be a number of seconds, more than 0, not 'soon'",
        ),
        (
            "remote-connect-timeout-secs = 0",
            "remote-connect-timeout-secs must be a number of seconds, more than 0, not 0",
        ),
        ("remote-max-retries = 1.5", "remote-max-retries must be a whole number, 0 or more, not 1.5"),
    ],
    ids=["text", "zero", "fraction"],
)
def test_bad_timeout_keys_are_refused_before_any_download(tmp_path: Path, line: str, complaint: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(line + "\n")
    with pytest.raises(PackError) as raised:
        fetch_all(
            [artifact_for(b"x", "http://127.0.0.1:9/linux-64/blob-1.0-0.conda")],
            tmp_path / "out",
            network=NetworkSettings(config_file=config),
        )
    assert raised.value.message == f"config file {config}: {complaint}"


def test_redirects_are_followed_within_and_across_servers(
    tmp_path: Path, sample_channel: Channel, make_server: Callable[[Path], ChannelServer]
) -> None:
    first, second = make_server(sample_channel.root), make_server(sample_channel.root)
    rel = sample_channel.relpath("alpha")
    data = sample_channel.packages["alpha"].read_bytes()
    first.redirect("linux-64/moved.conda", f"/{rel}", status=301)
    first.redirect("linux-64/elsewhere.conda", second.url_for(rel), status=307)
    artifacts = [
        artifact_for(data, first.url_for("linux-64/moved.conda"), name="moved.conda"),
        artifact_for(data, first.url_for("linux-64/elsewhere.conda"), name="elsewhere.conda"),
    ]
    paths = fetch_all(artifacts, tmp_path / "out", network=NetworkSettings())
    assert [paths[a.relative_path].read_bytes() for a in artifacts] == [data, data]
    assert second.requests == [rel]


def test_a_proxy_from_the_environment_is_used(
    tmp_path: Path,
    sample_channel: Channel,
    make_server: Callable[[Path], ChannelServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = make_server(sample_channel.root)
    proxy = ForwardProxy()
    try:
        for name in ("no_proxy", "NO_PROXY", "http_proxy", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        url = server.url_for(sample_channel.relpath("alpha"))
        fetch_alpha(url, sample_channel, tmp_path / "out")
    finally:
        proxy.close()
    assert proxy.requested == [url]


def test_credentials_from_netrc_are_sent(
    tmp_path: Path,
    sample_channel: Channel,
    make_server: Callable[[Path], ChannelServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = make_server(sample_channel.root)
    server.require_auth("user", "n3trc")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login user password n3trc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.delenv("RATTLER_AUTH_FILE", raising=False)
    fetch_alpha(server.url_for(sample_channel.relpath("alpha")), sample_channel, tmp_path / "out")
    assert [status for _, _, status in server.log] == [200]  # sent with the first request


def test_several_mirrors_go_through_rattlers_client(
    tmp_path: Path, sample_channel: Channel, make_server: Callable[[Path], ChannelServer]
) -> None:
    """rattler picks among several mirrors (and fails over between them): such URLs are its own."""
    server = make_server(sample_channel.root)
    dead = SilentListener()
    dead.close()  # a port nobody listens on any more
    channel = "https://conda.example.invalid/fixtures"
    config = tmp_path / "config.toml"
    config.write_text(f'[mirrors]\n"{channel}/" = ["{server.url}/", "{dead.url}/"]\n')
    rel = sample_channel.relpath("alpha")
    fetch_alpha(f"{channel}/{rel}", sample_channel, tmp_path / "out", config)
    assert server.requests == [rel]
