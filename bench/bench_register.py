"""Server CPU per HTTP registration (``POST nodepassports``), small and large passports (#14).

One `node-registry serve` per tree (in-memory, pinned to CPU 0), all up at once; this process
(pinned to CPU 1, raw asyncio sockets, no httpx) registers distinct passports over
``--connections`` keep-alive connections, each waiting for its answer before sending the
next: ``--warmup`` unmeasured, then ``--chunks`` chunks of ``--chunk`` per tree, the trees
taking turns chunk by chunk (on a shared machine the noise then falls on each alike).
Reported: the server process's user + system CPU per registration (over all chunks, and the
median of the chunks'), and registrations/s, for a passport of ~500 bytes (an agent's) and
one padded past the 16 KiB line with an annotation (parsed and validated off the loop).
``--before SRC`` serves another tree's ``src/`` beside this one (e.g.
``git archive main src | tar -x -C /tmp/before``).

    python bench/bench_register.py --before /tmp/before/src --chunks 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from loadgen import API, Connection, Serve, passport, pin_self, request

#: Long lifecycle timings: nothing registered turns NotReady during a round.
SETTINGS = {"heartbeat": {"not_ready_after_seconds": 600, "ttl_seconds": 900}}
LARGE_PADDING = 20 * 1024


def bodies(prefix: str, count: int, padding: int) -> list[bytes]:
    out = []
    for i in range(count):
        doc: dict[str, Any] = passport(f"{prefix}-{i:05d}", i)
        if padding:
            doc["metadata"]["annotations"] = {"note": "x" * padding}
        out.append(request("POST", f"{API}/nodepassports", doc))
    return out


async def send_all(port: int, raws: list[bytes], connections: int) -> None:
    queue = list(reversed(raws))

    async def worker() -> None:
        conn = Connection(port)
        try:
            while queue:
                status, body = await conn.call(queue.pop())
                if status not in (200, 201):
                    raise RuntimeError(f"{status}: {body[:300]!r}")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


@dataclass
class Variant:
    """One tree's server and what its chunks cost."""

    name: str
    server: Serve
    cpu: float = 0.0  # seconds, user + system, over the measured chunks
    wall: float = 0.0
    count: int = 0
    chunks: list[float] = field(default_factory=list)  # µs per registration, per chunk
    rates: list[float] = field(default_factory=list)  # registrations/s, per chunk

    def cpu_seconds(self) -> float:
        assert self.server.process is not None
        times = psutil.Process(self.server.process.pid).cpu_times()
        return float(times.user + times.system)

    def run(self, raws: list[bytes], connections: int) -> None:
        before = self.cpu_seconds()
        start = time.perf_counter()
        asyncio.run(send_all(self.server.port, raws, connections))
        wall = time.perf_counter() - start
        self.wall += wall
        self.rates.append(len(raws) / wall)
        spent = self.cpu_seconds() - before
        self.cpu += spent
        self.count += len(raws)
        self.chunks.append(spent / len(raws) * 1e6)


def measure(
    trees: list[tuple[str, Path | None]], tmp: Path, args: argparse.Namespace, padding: int
) -> list[Variant]:
    """Every tree's server up at once, fed chunk by chunk in turn (the order flipping each
    time), so that the machine's noise falls on each alike."""
    variants = [Variant(name, Serve(SETTINGS, tmp, src=src).start()) for name, src in trees]
    try:
        for v in variants:
            v.run(bodies(f"warm-{v.name}", args.warmup, padding), args.connections)
            v.cpu = v.wall = v.count = 0
            v.chunks.clear()
            v.rates.clear()
        for chunk in range(args.chunks):
            order = variants if chunk % 2 == 0 else variants[::-1]
            for v in order:
                v.run(bodies(f"c{chunk}-{v.name}", args.chunk, padding), args.connections)
    finally:
        for v in variants:
            v.server.stop()
    return variants


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk", type=int, default=200, help="registrations per chunk")
    parser.add_argument("--chunks", type=int, default=10, help="chunks per tree and size")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--before", type=Path, help="another tree's src/ to compare with")
    parser.add_argument("--verbose", action="store_true", help="print every chunk's figures")
    args = parser.parse_args()
    pin_self(1)
    trees: list[tuple[str, Path | None]] = [("before", args.before)] if args.before else []
    trees.append(("after", None))
    sizes = {"~500 B": 0, f"~{LARGE_PADDING // 1024 + 1} KiB": LARGE_PADDING}
    print(f"`python bench/bench_register.py {' '.join(sys.argv[1:])}`")
    print()
    print(
        "| passport | tree | server CPU per registration (all chunks) | median of chunks "
        "| registrations/s (all chunks) | median of chunks |"
    )
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size, padding in sizes.items():
            for v in measure(trees, Path(tmp), args, padding):
                if args.verbose:
                    print(v.name, [f"{c:.0f}" for c in v.chunks], [f"{r:.0f}" for r in v.rates])
                print(
                    f"| {size} | {v.name} | {v.cpu / v.count * 1e3:.2f} ms | "
                    f"{statistics.median(v.chunks) / 1000:.2f} ms | {v.count / v.wall:,.0f} | "
                    f"{statistics.median(v.rates):,.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
