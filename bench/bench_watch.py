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
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

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


# -- delivery: how late and how many events reach N watchers (--delivery) -----------------

DELIVERY_SETTINGS: dict[str, Any] = {"controller": {"period_seconds": 5}}
SEQ = b'"seq":"'


def _patch(name: str, seq: int) -> bytes:
    body = json.dumps({"metadata": {"labels": {"seq": str(seq)}}}).encode()
    head = (
        f"PATCH {API}/nodepassports/{name} HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/merge-patch+json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Receiver(asyncio.Protocol):
    """One watch stream: counts events and notes, per read, the range of writes it carried.

    Writes are numbered in the label ``seq``; a read's first and last number are found with
    two searches (no JSON parsing, so the reader stays cheaper than the server).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tail = b""
        self.events = 0
        self.errors = 0
        self.reads: list[tuple[float, int, int]] = []
        self.started = asyncio.Event()
        self.closed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        if not self.started.is_set():
            self.started.set()
        data = self.tail + data
        end = data.rfind(b"\n") + 1
        self.tail = data[end:]
        data = data[:end]
        count = data.count(b'{"type":"MODIFIED"')
        if count:
            self.events += count
            first = data.find(SEQ) + len(SEQ)
            last = data.rfind(SEQ) + len(SEQ)
            self.reads.append(
                (now, int(data[first : data.index(b'"', first)]),
                 int(data[last : data.index(b'"', last)]))
            )  # fmt: skip
        self.errors += data.count(b'{"type":"ERROR"')

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def _open_receivers(port: int, count: int, since: int) -> list[Receiver]:
    loop = asyncio.get_running_loop()
    path = f"{API}/nodepassports?watch=true&resourceVersion={since}&allowWatchBookmarks=true"
    receivers = []
    for i in range(count):
        _, receiver = await loop.create_connection(
            lambda: Receiver(loop), "127.0.0.1", port
        )  # fmt: skip
        assert receiver.transport is not None
        receiver.transport.write(request("GET", path))
        receivers.append(receiver)
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    # Streams answer their head at once and a BOOKMARK within the interval: all are open.
    await asyncio.wait_for(asyncio.gather(*(r.started.wait() for r in receivers)), 60)
    return receivers


def _cpu_seconds(server: Serve) -> float:
    assert server.process is not None
    times = psutil.Process(server.process.pid).cpu_times()
    return float(times.user + times.system)


async def delivery(server: Serve, args: argparse.Namespace, watchers: int) -> dict[str, Any]:
    port = server.port
    names = [f"bench-node-{i:05d}" for i in range(args.delivery_nodes)]
    await register_all(port, names)
    conn = Connection(port)
    _, body = await conn.call(request("GET", f"{API}/nodepassports?limit=1"))
    conn.close()
    since = int(json.loads(body)["metadata"]["resourceVersion"])
    receivers = await _open_receivers(port, watchers, since)
    rate = args.writes_per_second
    count = int(args.seconds * rate)
    writes = [(k / rate, _patch(names[k % len(names)], k)) for k in range(count)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = [start + due for due, _ in writes]
    tally = Tally()
    cpu = _cpu_seconds(server)
    await open_loop(port, writes, tally, connections=8, timeout=30)
    # Let what is queued arrive (or the slow watchers be dropped), bounded.
    deadline = loop.time() + args.drain
    while loop.time() < deadline and sum(r.events for r in receivers) < count * watchers:
        await asyncio.sleep(0.2)
    cpu = _cpu_seconds(server) - cpu
    latencies: list[float] = []
    for receiver in receivers:
        for now, first, last in receiver.reads:
            latencies.extend(now - sent[k] for k in range(first, min(last, count - 1) + 1))
        if receiver.transport is not None:
            receiver.transport.close()
    latencies.sort()
    delivered = sum(r.events for r in receivers)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "watchers": watchers,
        "writes": count,
        "writes_ok": tally.ok(),
        "write_p99": tally.pct(0.99),
        "delivered": delivered / (count * watchers),
        "p50": pct(0.5) if latencies else float("nan"),
        "p99": pct(0.99) if latencies else float("nan"),
        "max": pct(1.0) if latencies else float("nan"),
        "dropped": sum(1 for r in receivers if r.errors),
        "server_cpu": cpu,
    }


async def _measured(server: Serve, args: argparse.Namespace, watchers: int) -> dict[str, Any]:
    peak = [server.rss_mib()]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server, peak, stop))
    try:
        result = await delivery(server, args, watchers)
    finally:
        stop.set()
        await sampler
    result["rss_peak"] = peak[0]
    return result


def run_delivery(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    results: list[tuple[str, dict[str, Any]]] = []
    variants = [("before", str(args.before)), ("after", None)] if args.before else [
        ("after", None)
    ]  # fmt: skip
    for watchers in (int(w) for w in args.delivery.split(",")):
        for name, src in variants:
            saved = os.environ.get("PYTHONPATH")
            if src is not None:
                os.environ["PYTHONPATH"] = src
            with tempfile.TemporaryDirectory() as tmp:
                server = Serve(DELIVERY_SETTINGS, Path(tmp)).start()
                try:
                    result = asyncio.run(_measured(server, args, watchers))
                finally:
                    server.stop()
                    if saved is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = saved
            results.append((name, result))
            print(name, json.dumps(result), file=sys.stderr)
    return results


def render_delivery(results: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    command = (
        f"python bench/bench_watch.py --delivery {args.delivery} --writes-per-second "
        f"{args.writes_per_second:g} --seconds {args.seconds:g}"
    )
    if args.before:
        command += " --before BEFORE/src"
    lines = [
        "## Watch delivery: how late and how many events reach 100 and 500 watchers",
        "",
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python "
        f"{platform.python_version()}, 2 CPUs.",
        "",
        f"`node-registry serve` (memory://) pinned to CPU 0; {args.delivery_nodes} nodes; "
        f"every watcher watches `nodepassports` from the same version; "
        f"{args.writes_per_second:g} label PATCHes/s (open loop, 8 connections) for "
        f"{args.seconds:g} s, each a MODIFIED event for every watcher. The reader (CPU 1, "
        "asyncio protocols, no JSON parsing) times each event from when its write was due "
        f"to when its bytes arrived; then up to {args.drain:g} s for what is queued. "
        "*before* is the tree given with `--before`, *after* this branch, in one run.",
        "",
        "| watchers | code | events due | delivered | delivery p50 | p99 | max "
        "| watchers dropped (410) | write p99 | server CPU per event delivered (writes included) "
        "| server RSS peak |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results:
        per_event = r["server_cpu"] * 1e6 / max(1, r["delivered"] * r["writes"] * r["watchers"])
        lines.append(
            f"| {r['watchers']} | {name} | {r['writes'] * r['watchers']:,} "
            f"| {r['delivered'] * 100:.1f} % | {r['p50']:,.0f} ms | {r['p99']:,.0f} ms "
            f"| {r['max']:,.0f} ms | {r['dropped']} | {r['write_p99']:,.0f} ms "
            f"| {per_event:.1f} µs "
            f"| {r['rss_peak']:,.0f} MiB |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=1400)
    parser.add_argument("--registrations", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    parser.add_argument(
        "--delivery", help="watcher counts (e.g. 100,500): measure event delivery instead"
    )
    parser.add_argument("--writes-per-second", type=float, default=130)
    parser.add_argument("--delivery-nodes", type=int, default=200)
    parser.add_argument("--drain", type=float, default=10)
    parser.add_argument("--before", type=Path, help="another tree's src/ to compare with")
    args = parser.parse_args()
    pin_self(1)
    if args.delivery:
        section = render_delivery(run_delivery(args), args)
        print(section)
        if args.write:
            write_section(args.write, "bench_watch_delivery", section)
        return 0
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
