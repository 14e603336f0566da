"""Overload at twice the read capacity: load shedding and self-preservation against neither.

Two `node-registry serve` processes (in-memory, pinned to CPU 0 one after the other, the
lifecycle timings shortened so missed heartbeats show up as verdicts within the run): one
with the default admission limits and self-preservation, one with both out of reach
(limits of a million, a saturation threshold of a million seconds). Against each, from
this load generator (pinned to CPU 1, raw asyncio sockets, loopback only): `--nodes`
nodes renew every 2 s, open loop, 5 s timeout; the read capacity left beside them is
measured closed loop (label-selector lists), then reads are offered open loop at
`--factor` times that capacity from `--clients` connections for `--seconds`. Reported per
server: renewals answered, their latency and timeouts, reads answered and shed, and the
NotReady verdicts recorded (every node kept renewing, so each one is false).

    python bench/bench_overload.py --nodes 1000 --factor 2 --seconds 20 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_watch import keep_alive, register_all, transitions
from loadgen import API, Connection, Serve, Tally, lease, open_loop, pin_self, request, timed
from sections import write_section

TIMINGS: dict[str, Any] = {
    "heartbeat": {
        "interval_seconds": 2,
        "not_ready_after_seconds": 4,
        "ttl_seconds": 6,
        "grace_period_seconds": 60,
    },
    "controller": {"period_seconds": 1},
}
OFF = 1_000_000
SERVERS: dict[str, dict[str, Any]] = {
    "shedding + self-preservation (defaults)": TIMINGS,
    "neither": {
        **TIMINGS,
        "controller": {"period_seconds": 1, "saturation_lag_seconds": OFF},
        "server": {
            "max_node_writes_inflight": OFF,
            "max_reads_inflight": OFF,
            "max_other_inflight": OFF,
            "shed_reads_lag_seconds": OFF,
        },
    },
}
#: A read that costs the server a pass over every node (the first page of a full list is
#: a snapshot of all of it) but the client one small answer: the generator stays light.
READ = request("GET", f"{API}/nodepassports?limit=1")


@dataclass
class Result:
    server: str
    capacity: float
    renewals: Tally
    reads: Tally
    seconds: float
    false_not_ready: float

    def rate(self, tally: Tally) -> float:
        return tally.ok() / self.seconds


async def read_capacity(port: int, seconds: float) -> float:
    """Reads/s answered closed loop by 16 connections (beside the renewals)."""
    tally = Tally()
    end = time.monotonic() + seconds

    async def worker() -> None:
        conn = Connection(port)
        while time.monotonic() < end:
            await timed(conn, READ, tally, 30)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(16)))
    return tally.ok() / seconds


async def measure(name: str, server: Serve, args: argparse.Namespace) -> Result:
    port = server.port
    names = [f"bench-node-{i:05d}" for i in range(args.nodes)]
    await register_all(port, names)
    stop = asyncio.Event()
    alive = asyncio.create_task(keep_alive(port, names, stop))
    capacity = await read_capacity(port, 5)
    stop.set()
    await alive
    interval = TIMINGS["heartbeat"]["interval_seconds"]
    beats = [
        (r * interval + interval * i / len(names), lease(n))
        for r in range(int(args.seconds / interval))
        for i, n in enumerate(names)
    ]
    offered = capacity * args.factor
    reads = [(k / offered, READ) for k in range(int(offered * args.seconds))]
    before = await transitions(port)
    renewals, answered = Tally(), Tally()
    await asyncio.gather(
        open_loop(port, beats, renewals, connections=64),
        open_loop(port, reads, answered, connections=args.clients),
    )
    stop = asyncio.Event()
    alive = asyncio.create_task(keep_alive(port, names, stop))
    await asyncio.sleep(2)  # controller passes after the last measured renewal
    false = await transitions(port) - before
    stop.set()
    await alive
    return Result(name, capacity, renewals, answered, args.seconds, false)


def render(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        f"## Overload: reads at {args.factor:g}x capacity beside the renewals",
        "",
        f"`python bench/bench_overload.py --nodes {args.nodes} --factor {args.factor:g} "
        f"--clients {args.clients} --seconds {args.seconds:g}` — {datetime.now(UTC):%Y-%m-%d}, "
        f"Python {platform.python_version()}, 2 CPUs.",
        "",
        f"Each server in turn pinned to CPU 0, the load generator to CPU 1. {args.nodes} nodes "
        "renew every 2 s (not ready after 4 s, a controller pass every 1 s), open loop, 5 s "
        "timeout. The reads the server answers closed loop beside them (the first page, "
        "one item, of a list of every node) are its capacity; then reads are offered at "
        f"{args.factor:g}x that rate, open loop, from {args.clients} connections, for "
        f"{args.seconds:g} s. Every node keeps renewing, so every NotReady verdict is false.",
        "",
        "Latencies count from when a request was due (open loop: a request waits for a "
        "free connection of its pool when the server is slow).",
        "",
        "| server | read capacity | renewals answered | renewal p50 | p99 | renewal timeouts "
        "| renewals shed | reads answered | reads shed (429) | read timeouts | false NotReady |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.server} | {r.capacity:,.0f}/s | {r.rate(r.renewals):,.0f}/s | "
            f"{r.renewals.p50():.1f} ms | {r.renewals.pct(0.99):.0f} ms | {r.renewals.timeouts:,} "
            f"| {r.renewals.statuses.get(429, 0):,} | {r.rate(r.reads):,.0f}/s | "
            f"{r.reads.statuses.get(429, 0):,} | {r.reads.timeouts:,} | {r.false_not_ready:.0f} |"
        )
    on, off = results
    renewal_ratio = on.rate(on.renewals) / max(off.rate(off.renewals), 1e-9)
    read_ratio = on.rate(on.reads) / max(off.rate(off.reads), 1e-9)
    lines += [
        "",
        f"Same run, shedding / neither: renewals answered **{renewal_ratio:.2f}x**, reads "
        f"answered **{read_ratio:.2f}x**; false NotReady verdicts {on.false_not_ready:.0f} "
        f"against {off.false_not_ready:.0f}.",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace, tmp: Path) -> list[Result]:
    results = []
    for name, settings in SERVERS.items():
        server = Serve(settings, tmp).start()
        try:
            result = await measure(name, server, args)
            results.append(result)
            print(f"{name}: {render([result, result], args).splitlines()[-3]}", flush=True)
        finally:
            server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    pin_self(1)
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    section = render(results, args)
    print(section)
    if args.write:
        write_section(args.write, "bench_overload", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
