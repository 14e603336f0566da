"""Limits and overload against real ``node-registry serve`` processes on loopback.

Every connection count is bounded (a few hundred at most) and every wait has a timeout;
each server is killed in ``finally`` whatever the test did.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from conftest import passport
from live_server import free_port
from test_serve import COMMAND, Server, _env, serving, wait_healthy

API = "/apis/ai_team.io/v1"

WATCH = b"GET /apis/ai_team.io/v1/nodepassports?watch=true HTTP/1.1\r\nHost: x\r\n\r\n"


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
def server(
    tmp_path: Path, *, fds: int | None = None, **settings: Any
) -> Iterator[tuple[Server, int]]:
    """``serve`` on a free port with ``server:`` settings; ``fds`` caps its descriptors."""
    port = free_port()
    config = tmp_path / f"config-{port}.yaml"
    config.write_text(yaml.safe_dump({"server": settings}), encoding="utf-8")
    args = ["--port", str(port), "--log-level", "info", "--config", str(config)]
    if fds is None:
        with serving(tmp_path, *args) as proc:
            wait_healthy(proc, f"http://127.0.0.1:{port}")
            yield proc, port
        return
    log = tmp_path / f"serve-{port}.log"
    # Soft and hard limit, so serve cannot raise it.
    capped = ["sh", "-c", f'ulimit -n {fds} && exec "$@"', "serve", *COMMAND, *args]
    with log.open("wb") as out:
        process = subprocess.Popen(
            capped, stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path
        )
    proc = Server(process, log)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}")
        yield proc, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def status_of(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def register(port: int, name: str) -> None:
    url = f"http://127.0.0.1:{port}{API}/nodepassports"
    assert httpx.post(url, json=passport(name), timeout=5).status_code == 201


def heartbeat(port: int, name: str) -> httpx.Response:
    return httpx.put(f"http://127.0.0.1:{port}{API}/leases/{name}", json={}, timeout=5)


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


# -- item 7: connections ----------------------------------------------------------------------


def test_a_huge_request_header_is_refused_after_the_limit_not_read_to_the_end(
    tmp_path: Path,
) -> None:
    with server(tmp_path) as (proc, port):
        cpu = psutil.Process(proc.process.pid)
        before = sum(cpu.cpu_times()[:2])
        sock = connect(port, timeout=10)
        start = time.monotonic()
        chunk = b"a" * (1 << 20)
        sent = 0
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < 100 * (1 << 20):  # a 100 MB header, unless the server hangs up
                sock.sendall(chunk)
                sent += len(chunk)
        answer = read_to_eof(sock)
        took = time.monotonic() - start
        sock.close()
        spent = sum(cpu.cpu_times()[:2]) - before
        code, body = status_of(answer)
        assert code == 431, answer[:300]
        assert body["reason"] == "RequestHeaderFieldsTooLarge"
        assert "65536 bytes" in body["message"]
        assert sent < 10 * (1 << 20), f"the server read {sent} bytes of one header"
        assert took < 2, took
        assert spent < 1, f"the header cost the server {spent:.1f} s of CPU"
        assert heartbeat_ok_after_register(port)


def test_a_header_over_the_limit_that_arrives_in_one_read_is_refused(tmp_path: Path) -> None:
    with server(tmp_path) as (_, port):
        sock = connect(port)
        # 70 KB: over the 64 KiB limit, yet small enough for the server to read at once.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        code, body = status_of(read_to_eof(sock))
        sock.close()
        assert code == 431
        assert "over the limit of 65536 bytes" in body["message"]
        # Just under the limit is served.
        ok = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Big": "a" * 60_000})
        assert ok.status_code == 200


def heartbeat_ok_after_register(port: int) -> bool:
    register(port, "after-1")
    return heartbeat(port, "after-1").status_code == 200


def test_a_request_head_that_never_completes_is_timed_out(tmp_path: Path) -> None:
    with server(tmp_path, header_timeout_seconds=1) as (_, port):
        silent, partial = connect(port), connect(port)
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...and stalls
        start = time.monotonic()
        for sock in (silent, partial):
            code, body = status_of(read_to_eof(sock))
            assert code == 408
            assert body["reason"] == "Timeout"
            assert "within 1 s" in body["message"]
            sock.close()
        assert time.monotonic() - start < 3
        # A prompt client on a kept-alive connection is never timed out between requests.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(3):
                assert http.get("/healthz").status_code == 200
                time.sleep(0.6)


def test_a_later_head_on_a_kept_alive_connection_is_timed_from_its_own_start(
    tmp_path: Path,
) -> None:
    # One head timer per connection (not one per request): the timer armed for the first
    # request fires during the second's head, and must give that head its own full second.
    with server(tmp_path, header_timeout_seconds=1) as (_, port):
        sock = connect(port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        time.sleep(0.6)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...and stalls
        started = time.monotonic()
        rest = read_to_eof(sock)
        took = time.monotonic() - started
        sock.close()
        assert b"HTTP/1.1 408" in rest
        assert 0.9 < took < 3, took


def test_heartbeats_get_through_a_slowloris_flood_larger_than_the_descriptor_limit(
    tmp_path: Path,
) -> None:
    # 256 descriptors for the whole process and 300 connections that send half a request
    # head and stall: without a connection limit the server runs out of descriptors and
    # accepts nothing more; with it, each newcomer takes the place of the longest-idle
    # connection, so the heartbeat's connection is served.
    with server(tmp_path, fds=256, header_timeout_seconds=60) as (proc, port):
        register(port, "steady-1")
        with sockets(300) as flood:
            for _ in range(300):
                sock = connect(port)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                flood.append(sock)
            start = time.monotonic()
            for _ in range(5):
                response = heartbeat(port, "steady-1")
                assert response.status_code == 200, response.text
            assert time.monotonic() - start < 5
        assert "holding at most 192 connections" in proc.output()


def test_a_newcomer_is_refused_with_a_status_when_every_connection_is_busy(
    tmp_path: Path,
) -> None:
    with server(tmp_path, max_connections=8) as (_, port), sockets(8) as busy:
        for _ in range(8):  # watch streams: each connection busy with its request
            sock = connect(port)
            sock.sendall(WATCH)
            assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200")
            busy.append(sock)
        refused = connect(port)
        refused.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_to_eof(refused)
        refused.close()
        code, body = status_of(answer)
        assert code == 503
        assert b"retry-after: 1" in answer.lower()
        assert body["reason"] == "ServiceUnavailable"
        assert "limit of 8 connections" in body["message"]
        busy.pop().close()  # one stream leaves: room again
        deadline = time.monotonic() + 5
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_watcher_that_stops_reading_is_cut_off_and_frees_its_connection(
    tmp_path: Path,
) -> None:
    with server(tmp_path, write_timeout_seconds=1) as (proc, port):
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(WATCH)
        stop = threading.Event()

        def write() -> None:
            # 60 KB per event: a few hundred fill every buffer between server and client.
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                for i in range(300):
                    if stop.is_set():
                        return
                    doc = passport(f"n-{i}")
                    doc["metadata"]["annotations"] = {"note": "x" * 60_000}
                    http.post(f"{API}/nodepassports", json=doc).raise_for_status()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            deadline = time.monotonic() + 20
            while "read nothing for 1 s" not in proc.output():
                assert time.monotonic() < deadline, proc.output()[-2000:]
                time.sleep(0.1)
        finally:
            stop.set()
            writer.join(timeout=30)
            stuck.close()
