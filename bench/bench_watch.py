"""Watch fan-out under load: heartbeats and registrations with and without 1,000 watchers.

One `node-registry serve` (in-memory, pinned to CPU 0, lifecycle timings shortened so a
stall shows up as verdicts within the run) and this load generator (pinned to CPU 1, raw
asyncio sockets, loopback only). Every node renews its lease every interval, open loop,
with a 5 s client timeout; registrations (re-registrations that change a label, so every
watcher gets an event) are spread over the same window. The same load runs twice in one
process lifetime: first with no watch stream open, then with `--watchers` streams reading
everything. Reported: heartbeat latency, timeouts, false NotReady verdicts (every node kept
heartbeating), events delivered, the server's RSS before/during/after the watchers, and how
long SIGTERM takes with every stream open.

    python bench/bench_watch.py --watchers 1000 --nodes 1400 --registrations 300 \\
        --seconds 20 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loadgen import (
    API,
    Connection,
    Serve,
    Tally,
    lease,
    metric,
    open_loop,
    passport,
    pin_self,
    request,
    timed,
)
from sections import write_section

SETTINGS = {
    "heartbeat": {
        "interval_seconds": 2,
        "not_ready_after_seconds": 4,
        "ttl_seconds": 6,
        "grace_period_seconds": 60,
    },
    "controller": {"period_seconds": 1},
}
NOT_READY = 'node_registry_health_transitions_total{from_state="ALIVE",to_state="NOT_READY"}'


@dataclass
class Phase:
    name: str
    heartbeats: Tally
    registrations: Tally
    false_not_ready: float
    events_per_watcher: float | None = None
    rss_peak: float | None = None
    client_lag_p99: float = 0.0


class Watchers:
    """``count`` NDJSON watch streams, each reading and counting lines until closed."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.lines = [0] * count
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.started = 0
        self.ended_cleanly = 0
        self.retried = 0

    async def open(self) -> None:
        ready = asyncio.Event()
        # From the current version, as an informer watches after its list: no resourceVersion
        # would send every node as ADDED to every watcher first.
        conn = Connection(self.port)
        _, body = await conn.call(request("GET", f"{API}/nodepassports?limit=1"))
        conn.close()
        since = json.loads(body)["metadata"]["resourceVersion"]

        async def one(index: int) -> None:
            path = f"{API}/nodepassports?watch=true&resourceVersion={since}"
            while True:  # as a Kubernetes client does: a 429 is retried after Retry-After
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(request("GET", path))
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"HTTP/1.1 200"):
                    break
                assert head.startswith(b"HTTP/1.1 429"), head
                self.retried += 1
                writer.close()
                await asyncio.sleep(1)
            self.writers.append(writer)
            self.started += 1
            if self.started == self.count:
                ready.set()
            tail = b""
            while chunk := await reader.read(1 << 18):
                # One event per NDJSON line; a line split across reads is rare enough.
                self.lines[index] += chunk.count(b'{"type":')
                tail = (tail + chunk)[-16:]
            self.ended_cleanly += tail.endswith(b"0\r\n\r\n")

        for i in range(self.count):
            self.tasks.append(asyncio.create_task(one(i)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # no SYN flood of the listen backlog
        await asyncio.wait_for(ready.wait(), 60)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def ended(self, timeout: float) -> None:
        await asyncio.wait(self.tasks, timeout=timeout)


async def register_all(port: int, names: list[str]) -> None:
    tally = Tally()
    queue = list(enumerate(names))

    async def worker() -> None:
        conn = Connection(port)
        while queue:
            i, name = queue.pop()
            await timed(conn, request("POST", f"{API}/nodepassports", passport(name, i)), tally, 30)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(16)))
    assert tally.ok() == len(names), tally


async def transitions(port: int) -> float:
    conn = Connection(port)
    _, body = await conn.call(request("GET", "/metrics"))
    conn.close()
    return metric(body.decode(), NOT_READY)


async def load(port: int, names: list[str], args: argparse.Namespace, label: str) -> Phase:
    interval = SETTINGS["heartbeat"]["interval_seconds"]
    beats = [
        (round_ * interval + interval * i / len(names), lease(name))
        for round_ in range(int(args.seconds / interval))
        for i, name in enumerate(names)
    ]
    changed = [
        (
            args.seconds * k / args.registrations,
            request(
                "POST",
                f"{API}/nodepassports",
                {
                    **passport(names[k % len(names)], k),
                    "metadata": {
                        **passport(names[k % len(names)], k)["metadata"],
                        "labels": {"zone": f"zone-{k % 4}", "round": f"{label}-{k}"},
                    },
                },
            ),
        )
        for k in range(args.registrations)
    ]
    before = await transitions(port)
    heartbeats, registrations = Tally(), Tally()
    lags: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(client_lag(lags, stop))
    await asyncio.gather(
        open_loop(port, beats, heartbeats, connections=64),
        open_loop(port, changed, registrations, connections=4, timeout=30),
    )
    stop.set()
    await probe
    async with kept_alive(port, names):
        await asyncio.sleep(2)  # controller passes after the last measured heartbeat
    phase = Phase(label, heartbeats, registrations, await transitions(port) - before)
    phase.client_lag_p99 = sorted(lags)[int(0.99 * len(lags))] * 1000 if lags else 0.0
    return phase


async def client_lag(lags: list[float], stop: asyncio.Event) -> None:
    """This generator's own event-loop lag: part of every latency it measures."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + 0.01
        await asyncio.sleep(0.01)
        lags.append(loop.time() - due)


async def keep_alive(port: int, names: list[str], stop: asyncio.Event) -> None:
    """Renew every lease each interval between the measured phases (not measured)."""
    interval = SETTINGS["heartbeat"]["interval_seconds"]
    conns = [Connection(port) for _ in range(64)]
    tally = Tally()
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + interval

        async def share(k: int) -> None:
            for name in names[k :: len(conns)]:
                await timed(conns[k], lease(name), tally, 5)

        await asyncio.gather(*(share(k) for k in range(len(conns))))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, due - loop.time()))
    for conn in conns:
        conn.close()


@contextlib.asynccontextmanager
async def kept_alive(port: int, names: list[str]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(keep_alive(port, names, stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def sample_rss(server: Serve, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], server.rss_mib())
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, server: Serve) -> dict[str, object]:
    port = server.port
    names = [f"bench-node-{i:05d}" for i in range(args.nodes)]
    await register_all(port, names)
    quiet = await load(port, names, args, "none")
    rss_before = server.rss_mib()
    watchers = Watchers(port, args.watchers)
    async with kept_alive(port, names):
        await watchers.open()
    opened_429 = watchers.retried
    rss_idle = server.rss_mib()
    peak = [rss_idle]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server, peak, stop))
    busy = await load(port, names, args, f"{args.watchers}")
    stop.set()
    await sampler
    busy.events_per_watcher = sum(watchers.lines) / args.watchers
    busy.rss_peak = peak[0]
    async with kept_alive(port, names):
        await watchers.close()
        await asyncio.sleep(5)
        rss_after = server.rss_mib()
        # SIGTERM with every stream open again.
        again = Watchers(port, args.watchers)
        await again.open()
        rss_again = server.rss_mib()
    loop = asyncio.get_running_loop()
    stopped = await loop.run_in_executor(None, server.stop)
    await again.ended(10)
    return {
        "phases": [quiet, busy],
        "rss": (rss_before, rss_idle, peak[0], rss_after, rss_again),
        "sigterm": stopped,
        "clean_ends": again.ended_cleanly,
        "opened_429": opened_429,
    }


def render(result: dict[str, object], args: argparse.Namespace) -> str:
    phases = result["phases"]
    assert isinstance(phases, list)
    quiet, busy = phases
    before, idle, peak, after, again = result["rss"]  # type: ignore[misc]
    lines = [
        "## Watch fan-out: heartbeats with and without 1,000 watch streams",
        "",
        f"`python bench/bench_watch.py --watchers {args.watchers} --nodes {args.nodes} "
        f"--registrations {args.registrations} --seconds {args.seconds:g}` — "
        f"{datetime.now(UTC):%Y-%m-%d}, Python {platform.python_version()}, 2 CPUs.",
        "",
        f"`node-registry serve` (memory://) pinned to CPU 0; the load generator (raw asyncio "
        f"sockets) pinned to CPU 1. {args.nodes} nodes renew every 2 s (not ready after 4 s, "
        f"controller pass every 1 s), open loop over 64 connections with a 5 s timeout, for "
        f"{args.seconds:g} s, while {args.registrations} re-registrations (each a watch event "
        "for every watcher) are spread over the same window. Same server, same load, "
        f"first with no watch stream, then with {args.watchers} streams reading every event.",
        "",
        "Latencies are measured by the load generator, whose own event loop also reads "
        "every watch stream: its lag (last column) is part of every figure.",
        "",
        "| watch streams | heartbeats | p50 | p99 | max | timeouts | non-200 | "
        "registration p50 | p99 | false NotReady | events per stream | client's own lag p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in (quiet, busy):
        hb, reg = phase.heartbeats, phase.registrations
        lines.append(
            f"| {0 if phase is quiet else args.watchers} | {len(hb.latencies) + hb.timeouts:,} | "
            f"{hb.p50():.1f} ms | {hb.pct(0.99):.1f} ms | {hb.pct(1.0):.1f} ms | "
            f"{hb.timeouts} | {len(hb.latencies) - hb.ok() + hb.errors} | "
            f"{reg.p50():.1f} ms | {reg.pct(0.99):.1f} ms | {phase.false_not_ready:.0f} | "
            + (f"{phase.events_per_watcher:.0f} |" if phase.events_per_watcher else "— |")
            + f" {phase.client_lag_p99:.1f} ms |"
        )
    ratio = busy.heartbeats.pct(0.99) / quiet.heartbeats.pct(0.99)
    lines += [
        "",
        f"Heartbeat p99 with {args.watchers} watchers / without: **{ratio:.2f}x**.",
        "",
        "| server RSS | MiB |",
        "|---|---:|",
        f"| before any watcher | {before:.0f} |",
        f"| {args.watchers} watchers open, idle | {idle:.0f} |",
        f"| peak during the load with watchers | {peak:.0f} |",
        f"| 5 s after every watcher left | {after:.0f} |",
        f"| {args.watchers} watchers open again | {again:.0f} |",
        "",
        "Nothing of a watcher outlives it (its objects are freed when it leaves); the "
        "allocator keeps the freed memory for the next watchers rather than handing it back "
        "to the system, so RSS stays at its peak and does not grow from one round of "
        "watchers to the next.",
        "",
        f"SIGTERM with {args.watchers} streams open: the process was gone after "
        f"**{result['sigterm']:.2f} s**; {result['clean_ends']} of {args.watchers} streams "
        "ended with the chunked body's last chunk (a clean end: the client watches again). "
        f"Opening the streams in bursts of 100, {result['opened_429']} watch requests were "
        "answered 429 (more than `max_reads_inflight` starting at once) and retried after 1 s.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=1400)
    parser.add_argument("--registrations", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    pin_self(1)
    with tempfile.TemporaryDirectory() as tmp:
        server = Serve(SETTINGS, Path(tmp)).start()
        try:
            result = asyncio.run(run(args, server))
        finally:
            if server.process is not None and server.process.poll() is None:
                server.process.kill()
                server.process.wait()
    section = render(result, args)
    print(section)
    if args.write:
        write_section(args.write, "bench_watch", section)
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    sys.exit(code)
