"""Limits and overload against real ``node-registry serve`` processes on loopback.

Every connection count is bounded (a few hundred at most) and every wait has a timeout;
each server is killed in ``finally`` whatever the test did.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from live_server import free_port
from test_serve import Server, serving, wait_healthy

WATCH = b"GET /apis/ai_team.io/v1/nodes?watch=true HTTP/1.1\r\nHost: x\r\n\r\n"


@contextlib.contextmanager
def sockets(count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def connect(port: int, timeout: float = 5) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@contextlib.contextmanager
def server(tmp_path: Path, *args: str) -> Iterator[tuple[Server, int]]:
    port = free_port()
    with serving(tmp_path, "--port", str(port), "--log-level", "info", *args) as proc:
        wait_healthy(proc, f"http://127.0.0.1:{port}")
        yield proc, port


# -- item 5: watch streams ------------------------------------------------------------------


def test_sigterm_stops_the_server_promptly_with_hundreds_of_open_watch_streams(
    tmp_path: Path,
) -> None:
    streams = 300
    with server(tmp_path) as (proc, port), sockets(streams) as opened:
        for _ in range(streams):
            sock = connect(port)
            sock.sendall(WATCH)
            opened.append(sock)
        for sock in opened:
            head = read_until(sock, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
        start = time.monotonic()
        proc.process.send_signal(signal.SIGTERM)
        code = proc.process.wait(timeout=15)
        took = time.monotonic() - start
        assert code == -signal.SIGTERM, proc.output()
        # Well inside uvicorn's graceful-shutdown bound (5 s): the watches were ended, not
        # waited for and then cancelled.
        assert took < 3, f"SIGTERM took {took:.1f} s:\n{proc.output()[-2000:]}"
        # Every stream ended cleanly: the chunked body's last chunk, then the close; a
        # Kubernetes client takes that as "watch again from the last version".
        for sock in opened:
            assert read_to_eof(sock).endswith(b"0\r\n\r\n")
        assert "Traceback" not in proc.output()
