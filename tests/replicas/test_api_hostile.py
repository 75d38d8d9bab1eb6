"""The HTTP API against hostile input, on a real uvicorn server: a 100 MB body is
refused (413) before it is read, with or without a declared length; query parameters
are bounded (422, never 500). Fuzzing every operation is in test_api_fuzz.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.replicas.server_kit import TillServer

HUNDRED_MB = 100 * 1024 * 1024
CHUNK = b"x" * (1 << 20)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TillServer]:
    till = TillServer(tmp_path / "till.db")
    till.start()
    yield till
    till.stop()


def _raw_post(url: str, headers: dict[str, str], chunked: bool) -> bytes:
    """Send up to 100 MB as fast as the server takes it; return its answer. A server that
    answers early and closes makes the rest of the send fail: that is the point."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST /sales HTTP/1.1\r\nHost: till\r\n{head}\r\n".encode())
        try:
            for _ in range(HUNDRED_MB // len(CHUNK)):
                if chunked:
                    sock.sendall(f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n")
                else:
                    sock.sendall(CHUNK)
        except OSError:
            pass  # closed under us once answered
        sock.settimeout(10)
        try:
            return sock.recv(65536)
        except OSError:
            return b""


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_body_is_refused_before_it_is_read(server: TillServer, chunked: bool) -> None:
    me = psutil.Process()
    before = me.memory_info().rss
    headers = {"Content-Type": "application/json"}
    headers |= {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(HUNDRED_MB)}
    answer = _raw_post(server.url, headers, chunked)
    grew = me.memory_info().rss - before
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert grew < 10 * 1024 * 1024, f"RSS grew {grew / 1e6:.1f} MB"  # the server runs in-process


@pytest.mark.parametrize(
    "query",
    [
        "/reports/stock?below=" + str(2**70),
        "/reports/stock?below=-" + str(2**70),
        "/reports/sales?utc_offset=1440",
        "/reports/sales?utc_offset=-1440",
        "/reports/items?top=0",
        "/reports/sales?store=" + "s" * 500,
        "/reports/stock?store=a%00b",
    ],
)
def test_report_parameters_are_bounded(server: TillServer, query: str) -> None:
    r = httpx.get(server.url + query, timeout=10)
    assert r.status_code == 422, (r.status_code, r.text[:300])
