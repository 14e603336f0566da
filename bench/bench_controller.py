"""The lifecycle controller's pass at scale: CPU per pass over a fleet that renews.

The pass runs on the server's event loop every ``controller.period_seconds`` (5 s): what it
costs is a stall of every heartbeat, and CPU that the HTTP benchmark charges to renewals.
Per size, a fleet is registered in process on a fake clock, then every node renews, and
three passes are timed (process CPU, the least of three):

- ``bench settings``: 600 s of silence before NotReady, as bench/fleet_server.py runs;
- ``defaults``: the default thresholds (20 s), 26 s after start-up: every node heard from
  since not_ready_after, none under the start-up floor.

    python bench/bench_controller.py --sizes 10000,100000
    PYTHONPATH=../main/src python bench/bench_controller.py   # another checkout's
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from loadgen import passport
from node_registry import AsyncRegistry, FakeClock, load_settings

CASES: dict[str, dict[str, Any]] = {
    "bench settings (600 s)": {"not_ready_after_seconds": 600, "ttl_seconds": 900},
    "defaults, 26 s after start-up": {},
}


async def pass_ms(nodes: int, heartbeat: dict[str, Any]) -> float:
    clock = FakeClock()
    registry = AsyncRegistry(settings=load_settings(heartbeat=heartbeat), clock=clock)
    for i in range(nodes):
        registry.sync.register(passport(f"bench-node-{i:06d}", i))
    clock.advance(25)
    for i in range(nodes):
        registry.sync.heartbeat(registry.sync.id_of(f"bench-node-{i:06d}"))
    clock.advance(1)
    took = []
    for _ in range(3):
        start = time.process_time()
        await registry.controller_pass()
        took.append(time.process_time() - start)
    return min(took) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="fleet sizes")
    args = parser.parse_args()
    for nodes in (int(s) for s in args.sizes.split(",")):
        for label, heartbeat in CASES.items():
            took = asyncio.run(pass_ms(nodes, heartbeat))
            print(f"{nodes:>7} nodes, {label}: {took:.1f} ms per pass", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
