"""What a registration costs this process on etcd, through ``AsyncRegistry`` as ``serve`` runs it.

A benchmark, not a test: it starts a real etcd on loopback, registers ``--nodes`` passports
with 32 in flight and then ``--sequential`` more one at a time, and prints one JSON line:
registrations/s, and per registration the CPU time of this process (every thread of it)
and its context switches, from ``getrusage``. On a shared machine wall-clock rates swing
with the neighbours' load; the CPU a registration costs the registry's own process does
much less, so compare that first.

    python bench/bench_etcd_cost.py [--nodes 2000] [--sequential 300]

It runs on a checkout from before issue #13 too (``PYTHONPATH=that/src``): there the
store has no ``open_store_on_loop``, and the replica runs on a loop thread of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import node_registry.store as stores  # noqa: E402
from bench_registry import make_passports  # noqa: E402
from etcd_server import running_etcd  # noqa: E402
from node_registry import AsyncRegistry  # noqa: E402
from node_registry.config import load_settings  # noqa: E402

IN_FLIGHT = 32


def usage() -> tuple[float, int]:
    """CPU seconds and context switches of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_nvcsw + r.ru_nivcsw


async def measure(endpoint: str, nodes: int, sequential: int) -> dict[str, Any]:
    settings = load_settings(
        store={
            "url": f"etcd://{endpoint}/bench/{uuid.uuid4().hex[:8]}",
            "etcd_compaction_interval_seconds": 0,
        }
    )
    on_loop = getattr(stores, "open_store_on_loop", None)
    store = await on_loop(settings) if on_loop is not None else stores.open_store(settings)
    registry = AsyncRegistry(store, settings=settings)
    docs = make_passports(nodes + sequential, seed=7)
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def register(doc: dict[str, Any]) -> None:
        async with gate:
            await registry.register(doc)

    try:
        cpu0, switches0 = usage()
        began = time.perf_counter()
        await asyncio.gather(*(register(doc) for doc in docs[:nodes]))
        middle = time.perf_counter()
        cpu1, switches1 = usage()
        for doc in docs[nodes:]:
            await registry.register(doc)
        ended = time.perf_counter()
        cpu2, _ = usage()
    finally:
        await registry.close()
        if on_loop is not None:
            await store.aio.close()
        else:
            store.close()
    return {
        "on_caller_loop": on_loop is not None,
        "register_per_s": round(nodes / (middle - began), 1),
        "cpu_ms_per_register": round((cpu1 - cpu0) / nodes * 1e3, 3),
        "switches_per_register": round((switches1 - switches0) / nodes, 1),
        "sequential_ms_per_register": round((ended - middle) / sequential * 1e3, 3),
        "sequential_cpu_ms_per_register": round((cpu2 - cpu1) / sequential * 1e3, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=2000, help="registered 32 in flight")
    parser.add_argument("--sequential", type=int, default=300, help="then one at a time")
    args = parser.parse_args(argv)
    with running_etcd() as etcd:
        figures = asyncio.run(measure(etcd.endpoint, args.nodes, args.sequential))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
