"""A small open-loop load generator over raw asyncio sockets, shared by the load benchmarks.

httpx costs ~0.5 ms of client CPU per request, which would make the client the bottleneck
of a two-core machine; this speaks just enough HTTP/1.1 (keep-alive, Content-Length and
chunked responses) to send pre-built requests and time them. Everything targets loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
API = "/apis/ai_team.io/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: int, command: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    if taskset and (os.cpu_count() or 1) > 1:
        return [taskset, "-c", str(cpu), *command]
    return command


def pin_self(cpu: int) -> None:
    if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


@dataclass
class Serve:
    """``node-registry serve`` pinned to CPU 0 with ``settings`` (a config file)."""

    settings: dict[str, Any]
    tmp: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: Another tree's ``src/`` to serve instead of this one's (a before/after in one run).
    src: Path | None = None

    def start(self) -> Serve:
        config = self.tmp / f"config-{self.port}.yaml"
        config.write_text(yaml.safe_dump(self.settings), encoding="utf-8")
        log = (self.tmp / f"serve-{self.port}.log").open("wb")
        command = [sys.executable, "-m", "node_registry", "serve", "--port", str(self.port)]
        command += ["--config", str(config), "--log-level", "warning"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_REGISTRY_")}
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        self.process = subprocess.Popen(
            pinned(0, command), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(self.log()) from None
                time.sleep(0.05)
        raise RuntimeError(f"serve on {self.port} did not start:\n{self.log()}")

    def log(self) -> str:
        return (self.tmp / f"serve-{self.port}.log").read_text(errors="replace")

    def rss_mib(self) -> float:
        assert self.process is not None
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def stop(self) -> float:
        """SIGTERM; seconds until the process is gone (killed after 30 s)."""
        assert self.process is not None
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - start


def passport(name: str, zone: int) -> dict[str, Any]:
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "name": name,
            "nodeType": "agent",
            "labels": {"zone": f"zone-{zone % 4}", "team": f"team-{zone % 7}"},
        },
        "spec": {
            "capabilities": [{"name": "code_generation"}, {"name": "python"}],
            "resources": {"cpu": "4", "memory": "8Gi"},
        },
        "status": {"phase": "Running"},
    }


def request(method: str, path: str, body: Any = None) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(payload)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return (head + "\r\n").encode() + payload


def lease(name: str) -> bytes:
    return request("PUT", f"{API}/leases/{name}", {"spec": {"holderIdentity": name}})


class Connection:
    """One keep-alive connection: ``call`` sends a request and returns (status, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        chunked = keep = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep = b"close" in value.lower()
        if chunked:
            # Joined once at the end: adding each chunk to the body copied a streamed list
            # of 100 MB over and over, and stalled this loop (and its timings) for seconds.
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunks.append((await self.reader.readexactly(size + 2))[:size])
                if size == 0:
                    break
            body = b"".join(chunks)
        else:
            body = await self.reader.readexactly(length)
        if keep:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Tally:
    """What one kind of request got: latencies of answers, and the other outcomes."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    timeouts: int = 0
    errors: int = 0

    def ok(self) -> int:
        return self.statuses.get(200, 0) + self.statuses.get(201, 0)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")


async def timed(
    conn: Connection, raw: bytes, tally: Tally, timeout: float, since: float | None = None
) -> int | None:
    """Send ``raw``; its latency counts from ``since`` (loop time; None: from now)."""
    loop = asyncio.get_running_loop()
    start = loop.time() if since is None else since
    try:
        async with asyncio.timeout(timeout):
            status, _ = await conn.call(raw)
    except TimeoutError:
        tally.timeouts += 1
        conn.close()  # the answer may still come: never read it as the next one's
        return None
    except (OSError, asyncio.IncompleteReadError, ValueError):
        tally.errors += 1
        conn.close()
        return None
    tally.latencies.append(loop.time() - start)
    tally.statuses[status] = tally.statuses.get(status, 0) + 1
    return status


async def open_loop(
    port: int,
    requests: Iterable[tuple[float, bytes]],
    tally: Tally,
    *,
    connections: int,
    timeout: float = 5.0,
) -> None:
    """Send each request at its time (seconds from now) over a pool of connections.

    Open loop: a request due while every connection is busy waits for one, and its wait
    counts in its latency, as a node's heartbeat would see it.
    """
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection(port))
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float, raw: bytes) -> None:
        conn = await pool.get()
        try:
            await timed(conn, raw, tally, timeout, since=start + due)
        finally:
            pool.put_nowait(conn)

    for due, raw in requests:
        delay = start + due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due, raw))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()


def metric(text: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total
