"""An agent storm: 5,000 real ``NodeAgent``s start at once against one server, and live.

One `node-registry serve` (in-memory, pinned to CPU 0, lifecycle timings shortened so a
stall shows as verdicts within the run) and this process (pinned to CPU 1) running every
agent on one event loop, all of them over one ``AsyncRegistryClient`` (one httpx pool):
the runtime's ``client`` takes a shared one. Two phases, each with a fresh server and fresh
agents: every agent renewing with its own ``PUT``, then the same agents on one
``SharedClient``, their renewals batched into ``LeaseRenewal``s.

Each agent starts as a fleet powered on together does: within its start jitter (1 s),
registering (POST nodepassports, then its status), backing off with full jitter on a 429.
Reported per phase: how long until every agent is registered and Running, the requests
shed meanwhile, heartbeat latency as the agents see it (p50/p99/max, over the steady
``--seconds``), false NotReady verdicts (every agent kept renewing), the server's CPU per
renewal in the steady state, the client's own loop lag, and how long the agents take to
deregister.

    python bench/bench_storm.py --agents 5000 --seconds 30 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from loadgen import Serve, metric, passport, pin_self
from node_registry.agent import AgentClient, NodeAgent, SharedClient
from node_registry.agent.batching import Relay
from node_registry.client import AsyncRegistryClient
from node_registry.errors import RegistryError
from sections import write_section

#: The default timings (an agent renews every 10 s, NotReady after 20 s of silence), with
#: a controller pass every second so that a stall shows as verdicts within the run. Load
#: shedding keeps its defaults: what it sheds during the storm is reported.
SETTINGS = {
    "heartbeat": {
        "interval_seconds": 10,
        "not_ready_after_seconds": 20,
        "ttl_seconds": 30,
        "grace_period_seconds": 60,
    },
    "controller": {"period_seconds": 1},
}
NOT_READY = 'node_registry_health_transitions_total{from_state="ALIVE",to_state="NOT_READY"}'
SHED = "node_registry_requests_shed_total"


class Timed(Relay):
    """An ``AgentClient`` that times each agent's renewals, as the agent waits for them."""

    def __init__(self, inner: AgentClient) -> None:
        super().__init__(inner)
        self.latencies: list[float] = []
        self.measuring = False
        self.failed = 0

    async def heartbeat(self, name: str) -> datetime:
        start = time.perf_counter()
        try:
            return await self.inner.heartbeat(name)
        except Exception:
            if self.measuring:
                self.failed += 1
            raise
        finally:
            if self.measuring:
                self.latencies.append(time.perf_counter() - start)


@dataclass
class Result:
    name: str
    agents: int
    registered_s: float = float("nan")
    registered: int = 0
    shed_during_start: float = 0
    latencies: list[float] = field(default_factory=list)
    failed_renewals: int = 0
    false_not_ready: float = 0
    not_alive_at_end: int = 0
    renewal_requests: int = 0
    server_cpu_us_per_renewal: float = float("nan")
    client_lag_p99_ms: float = float("nan")
    deregistered_s: float = float("nan")

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def lag_probe(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + 0.05
        await asyncio.sleep(0.05)
        lags.append(loop.time() - due)


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text


async def phase(args: argparse.Namespace, tmp: Path, batched: bool) -> Result:
    result = Result("one PUT per agent" if not batched else "batched (SharedClient)", args.agents)
    server = Serve(SETTINGS, tmp).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        # The agents' calls queue in their one client while it registers them all: the
        # timeout covers that wait, so it is the storm's length, not a request's.
        async with (
            AsyncRegistryClient(base, retries=0, timeout=args.timeout) as client,
            AsyncRegistryClient(base, retries=0, timeout=60) as observer,
        ):
            inner: AgentClient = SharedClient(client) if batched else client
            timed = Timed(inner)
            agents = [
                NodeAgent(
                    passport(f"storm-{i:05d}", i),
                    detect=False,
                    interval=SETTINGS["heartbeat"]["interval_seconds"],
                    client=timed,
                )
                for i in range(args.agents)
            ]
            shed_before = metric(scrape(server.port), SHED)
            start = time.perf_counter()
            for agent in agents:
                await agent.start()
            deadline = start + args.start_timeout
            while time.perf_counter() < deadline:
                result.registered = sum(1 for a in agents if a.registered and a.last_renewal)
                if result.registered == len(agents):
                    result.registered_s = time.perf_counter() - start
                    break
                await asyncio.sleep(0.1)
            result.shed_during_start = metric(scrape(server.port), SHED) - shed_before
            await asyncio.sleep(SETTINGS["heartbeat"]["interval_seconds"])  # settle
            text = scrape(server.port)
            not_ready_before = metric(text, NOT_READY)
            beats_before = metric(text, "node_registry_heartbeats_total")
            requests_before = getattr(inner, "requests", 0)
            process = psutil.Process(server.process.pid)  # type: ignore[union-attr]
            cpu = process.cpu_times()
            lags: list[float] = []
            stop = asyncio.Event()
            probe = asyncio.create_task(lag_probe(lags, stop))
            timed.measuring = True
            await asyncio.sleep(args.seconds)
            timed.measuring = False
            stop.set()
            await probe
            after = process.cpu_times()
            await asyncio.sleep(2)  # controller passes after the last measured renewal
            text = scrape(server.port)
            renewals = metric(text, "node_registry_heartbeats_total") - beats_before
            spent = (after.user + after.system) - (cpu.user + cpu.system)
            result.server_cpu_us_per_renewal = spent / renewals * 1e6 if renewals else 0.0
            result.false_not_ready = metric(text, NOT_READY) - not_ready_before
            result.renewal_requests = (
                getattr(inner, "requests", 0) - requests_before if batched else int(renewals)
            )
            result.latencies = timed.latencies
            result.failed_renewals = timed.failed
            result.client_lag_p99_ms = sorted(lags)[int(0.99 * len(lags))] * 1000
            try:
                listed = await observer.list_nodes()
                result.not_alive_at_end = sum(1 for e in listed.items if e.health_state != "ALIVE")
            except RegistryError:
                result.not_alive_at_end = -1  # the list was refused (shed): not known
            start = time.perf_counter()
            await asyncio.gather(*(a.aclose() for a in agents))
            result.deregistered_s = time.perf_counter() - start
    finally:
        server.stop()
    return result


def render(results: list[Result], args: argparse.Namespace) -> str:
    hb = SETTINGS["heartbeat"]
    lines = [
        f"## Agent storm: {args.agents:,} real NodeAgents start at once (`bench/bench_storm.py`)",
        "",
        f"`python bench/bench_storm.py --agents {args.agents} --seconds {args.seconds:g} "
        f"--timeout {args.timeout:g}` — "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}.",
        "",
        "`node-registry serve` (in-memory, pinned to CPU 0, heartbeat every "
        f"{hb['interval_seconds']} s, NotReady after {hb['not_ready_after_seconds']} s, a "
        "controller pass every second, default load shedding) and every agent in one process "
        "pinned to CPU 1, on one event loop and one `AsyncRegistryClient` (one httpx pool, "
        "at most 32 calls in flight, renewals and status reports taking the next free turn "
        f"before registrations, a {args.timeout:g} s timeout that covers the wait for a turn). "
        "Each agent starts within its 1 s start jitter, registers (POST nodepassports, then "
        "its status), and renews every interval ± 10 %; a 429 or a failure backs off with "
        "full jitter. A fresh server and fresh agents per phase. Heartbeat latency is what "
        f"the agents waited, over {args.seconds:g} s of steady state; a batched renewal "
        "includes its 50 ms window.",
        "",
        "| phase | all registered and Running | shed (429) while starting | heartbeat p50 | "
        "p99 | max | failed renewals | false NotReady | not ALIVE at end | renewal requests | "
        "server CPU per renewal | client loop lag p99 | deregistration |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        registered = (
            f"{r.registered_s:.1f} s"
            if r.registered == r.agents
            else f"{r.registered:,} of {r.agents:,} in {args.start_timeout:g} s"
        )
        lat = r.latencies
        lines.append(
            f"| {r.name} | {registered} | {r.shed_during_start:,.0f} | "
            f"{statistics.median(lat) * 1000 if lat else 0:.1f} ms | {r.pct(0.99):.1f} ms | "
            f"{max(lat) * 1000 if lat else 0:.1f} ms | {r.failed_renewals} | "
            f"{r.false_not_ready:.0f} | {r.not_alive_at_end} | {r.renewal_requests:,} | "
            f"{r.server_cpu_us_per_renewal:.0f} µs | {r.client_lag_p99_ms:.0f} ms | "
            f"{r.deregistered_s:.1f} s |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=30.0, help="steady state measured")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="the agents' call timeout")
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    pin_self(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for batched in (False, True):
            result = asyncio.run(phase(args, Path(tmp), batched))
            results.append(result)
            print(render([result], args).splitlines()[-1], flush=True)
    section = render(results, args)
    print(section)
    if args.write:
        write_section(args.write, "bench_storm", section)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
