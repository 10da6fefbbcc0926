"""The fault server does what the fault cases claim, seen from a plain HTTP client: a case whose
fault was never injected would pass for the wrong reason. (Not fault cases: counted as none.)"""

from __future__ import annotations

import http.client
import threading
from typing import TYPE_CHECKING
from urllib.request import urlopen

import pytest

from tests.support.fault_server import HTML_PAGE, FaultServer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.faults.conftest import Ledger

DATA = bytes(range(256)) * 1024  # 256 KiB: several chunks, half of it is more than one


@pytest.fixture
def server(tmp_path: Path, ledger: Ledger) -> Iterator[FaultServer]:
    ledger.cases = 0
    (tmp_path / "linux-64").mkdir()
    (tmp_path / "linux-64" / "a.conda").write_bytes(DATA)
    with FaultServer(tmp_path) as served:
        yield served


def get(server: FaultServer) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=10)
    try:
        connection.request("GET", "/linux-64/a.conda")
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def test_a_script_is_played_in_order_then_the_file_is_served(server: FaultServer) -> None:
    server.script("linux-64/a.conda", "503", "html", "corrupt")
    assert get(server)[0] == 503
    assert get(server) == (200, "text/html; charset=utf-8", HTML_PAGE)
    status, _, body = get(server)
    assert status == 200 and len(body) == len(DATA) and body != DATA
    assert get(server) == (200, "application/octet-stream", DATA)
    assert server.count("/linux-64/a.conda") == 4


@pytest.mark.parametrize(
    ("fault", "error"),
    [("short", http.client.IncompleteRead), ("reset", (ConnectionResetError, http.client.IncompleteRead))],
    ids=["short", "reset"],
)
def test_a_body_is_cut_after_full_headers(server: FaultServer, fault: str, error: type[Exception]) -> None:
    server.always("linux-64/a.conda", fault)
    with pytest.raises(error):
        get(server)
    assert server.count("linux-64/a.conda") == 1


@pytest.mark.parametrize(
    ("framing", "header", "value"),
    [("chunked", "Transfer-Encoding", "chunked"), ("until-close", "Connection", "close")],
)
def test_a_body_framed_without_a_length_is_whole(
    server: FaultServer, framing: str, header: str, value: str
) -> None:
    server.always("linux-64/a.conda", framing)
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=10)
    try:
        connection.request("GET", "/linux-64/a.conda")
        response = connection.getresponse()
        assert response.getheader("Content-Length") is None
        assert (response.getheader(header) or "").lower() == value
        assert response.read() == DATA
    finally:
        connection.close()


def test_a_stall_sends_half_the_body_then_nothing(server: FaultServer) -> None:
    server.always("linux-64/a.conda", "stall")
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=0.5)
    try:
        connection.request("GET", "/linux-64/a.conda")
        response = connection.getresponse()
        assert response.read(len(DATA) // 2) == DATA[: len(DATA) // 2]
        with pytest.raises(TimeoutError):
            response.read(1)
    finally:
        connection.close()


def test_requests_in_flight_are_counted(tmp_path: Path, ledger: Ledger) -> None:
    ledger.cases = 0
    (tmp_path / "f").write_bytes(b"x")
    with FaultServer(tmp_path, delay=0.3) as server:
        threads = [threading.Thread(target=lambda: http_get(server.url + "/f")) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert server.peak == 5


def http_get(url: str) -> bytes:
    with urlopen(url, timeout=10) as response:
        return response.read()
