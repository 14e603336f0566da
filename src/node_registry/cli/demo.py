"""``node-registry demo``: a live registry, a fleet of simulated agents, failures, transitions.

What a newcomer runs to see the system work in twenty seconds. Everything is real except the
agents' work: a registry server (uvicorn in a thread, in-memory store, short lifecycle timings)
on 127.0.0.1, agents that register, report Running, heartbeat and vary their task count over
HTTP through ``AsyncRegistryClient``, and the watch stream printing what happens when some of
them die abruptly and one leaves gracefully. No traffic leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn

from node_registry.cli import output
from node_registry.client import AsyncRegistryClient
from node_registry.client.objects import EventType, HealthTracker
from node_registry.config import Settings, load_settings
from node_registry.errors import ConfigError, NotFoundError, RegistryError
from node_registry.passport import Phase
from node_registry.registry import AsyncRegistry, HealthState
from node_registry.server import create_app

HOST = "127.0.0.1"
INTERVAL = 1.0
NOT_READY_AFTER = 3.0
TTL = 5.0
GRACE = 5.0
CONTROLLER_PERIOD = 0.5
#: Share of the fleet stopped abruptly: well below mass-failure protection's 55 %, so the
#: registry rightly believes these nodes died (rather than suspecting itself).
ABRUPT_SHARE = 0.2
SERVER_START_TIMEOUT = 10.0
#: How long a stopping agent may take to finish its request in flight.
STOP_TIMEOUT = 5.0

Write = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    kind: str
    capabilities: tuple[str, ...]
    cpu: str
    memory: str
    max_tasks: int
    gpu: str | None = None


ROLES: tuple[Role, ...] = (
    Role("coder", "agent", ("code_generation", "python"), "4", "8Gi", 4, gpu="1"),
    Role("reviewer", "agent", ("code_review",), "2", "4Gi", 2),
    Role("writer", "agent", ("text_generation",), "2", "4Gi", 3),
    Role("translator", "agent", ("translation", "text_generation"), "2", "4Gi", 3),
    Role("search", "tool", ("web_search",), "1", "1Gi", 8),
    Role("sandbox", "tool", ("code_execution",), "4", "16Gi", 2),
    Role("vectordb", "storage", ("vector_search",), "8", "32Gi", 16),
    Role("monitor", "monitoring", ("metrics",), "1", "512Mi", 1),
)
ZONES = ("eu-west-1", "us-east-1", "ap-south-1")


def demo_settings() -> Settings:
    """Lifecycle timings short enough to watch: NotReady after 3 s, Offline 5 s, gone 5 s on."""
    return load_settings(
        heartbeat={
            "interval_seconds": INTERVAL,
            "not_ready_after_seconds": NOT_READY_AFTER,
            "ttl_seconds": TTL,
            "grace_period_seconds": GRACE,
        },
        controller={"period_seconds": CONTROLLER_PERIOD},
        store={"url": "memory://"},
        server={"host": HOST, "tokens_file": None},
    )


def fleet_passports(count: int) -> list[dict[str, Any]]:
    """``count`` passports, the roles taken in turn: several kinds, capabilities and zones."""
    seen: Counter[str] = Counter()
    passports: list[dict[str, Any]] = []
    for index in range(count):
        role = ROLES[index % len(ROLES)]
        seen[role.name] += 1
        name = f"{role.name}-{seen[role.name]:02d}"
        resources = {"cpu": role.cpu, "memory": role.memory}
        if role.gpu:
            resources["gpu"] = role.gpu
        passports.append(
            {
                "apiVersion": "ai_team.io/v1",
                "kind": "NodePassport",
                "metadata": {
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.demo.ai-team.io")),
                    "name": name,
                    "nodeType": role.kind,
                    "labels": {"zone": ZONES[index % len(ZONES)], "role": role.name},
                },
                "spec": {
                    "capabilities": [{"name": c, "version": "1.0"} for c in role.capabilities],
                    "resources": resources,
                    "endpoint": {
                        "protocol": "mindbus",
                        "address": "amqp://127.0.0.1:5672",
                        "queue": f"{role.kind}.{name}",
                    },
                    "maxConcurrentTasks": role.max_tasks,
                },
                "status": {"phase": "Pending"},
            }
        )
    return passports


# -- the server --------------------------------------------------------------------------


@dataclass
class LocalServer:
    """The registry's HTTP service under uvicorn, in a daemon thread, on 127.0.0.1."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    @classmethod
    def start(cls, port: int, settings: Settings) -> LocalServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None
        bound: int = sock.getsockname()[1]
        app = create_app(AsyncRegistry(settings=settings), settings)
        config = uvicorn.Config(
            app,
            host=HOST,
            port=bound,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="demo-registry", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise ConfigError("the demo registry server did not start")
            time.sleep(0.01)
        return cls(f"http://{HOST}:{bound}", server, thread)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _client(url: str, **options: Any) -> AsyncRegistryClient:
    # An explicit transport: httpx then ignores HTTP_PROXY and friends, so the demo's
    # traffic stays on loopback whatever the environment says. Plain HTTP, so no CA bundle
    # to load either (70 ms per client otherwise: seconds of skew across a fleet's start).
    transport = httpx.AsyncHTTPTransport(verify=False)
    return AsyncRegistryClient(url, transport=transport, **options)


# -- the agents --------------------------------------------------------------------------


@dataclass
class SimulatedAgent:
    """A node runtime in miniature: register, report Running, heartbeat, vary its tasks."""

    passport: dict[str, Any]
    url: str
    rng: random.Random
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set to stop at the next wake-up (never in the middle of a request); ``deregister``
    #: says whether it leaves gracefully or simply falls silent.
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    deregister: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        name: str = self.passport["metadata"]["name"]
        return name

    @property
    def max_tasks(self) -> int:
        limit: int = self.passport["spec"]["maxConcurrentTasks"]
        return limit

    async def _join(self, client: AsyncRegistryClient) -> None:
        await client.register(self.passport)
        await client.update_status(self.name, phase=Phase.RUNNING, current_tasks=0)

    async def run(self) -> None:
        async with _client(self.url, retries=2, backoff=0.1) as client:
            await self._join(client)
            self.registered.set()
            # Heartbeats spread over the interval, as real nodes started at different times.
            delay = self.rng.uniform(0.1, INTERVAL)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
                if self.stop.is_set():
                    if self.deregister:
                        await client.deregister(self.name)
                    return
                delay = INTERVAL
                try:
                    await client.heartbeat(self.name)
                    if self.rng.random() < 0.3:
                        busy = self.rng.randint(0, self.max_tasks)
                        await client.update_status(self.name, current_tasks=busy)
                except NotFoundError:
                    await self._join(client)  # forgotten by the registry: register again
                except RegistryError:
                    pass  # the registry is unreachable for now: keep heartbeating

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"agent-{self.name}")

    async def halt(self, *, deregister: bool) -> None:
        """Stop: gracefully (deregister) or abruptly (the heartbeats just stop, no goodbye).

        Either way the request in flight is finished first: to the registry, a node that
        dies after its last heartbeat looks just like one killed during it, and the server
        is spared connections dropped halfway through a request.
        """
        self.deregister = deregister
        self.stop.set()
        if self.task is None or self.task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=STOP_TIMEOUT)
        except TimeoutError:
            self.task.cancel()
        except RegistryError:
            pass


# -- the scenario ------------------------------------------------------------------------


@dataclass
class Tally:
    """What the watch showed, for the closing summary."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, event_type: EventType, health: HealthState) -> None:
        self.counts[event_type.value] += 1
        if event_type == EventType.HEALTH_CHANGED:
            self.counts[health.value] += 1


class Clock:
    """Seconds since the demo started, as the time column of every line."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def label(self) -> str:
        return f"{self.elapsed():7.1f}s"

    async def sleep_until(self, moment: float) -> None:
        await asyncio.sleep(max(0.0, moment - self.elapsed()))


async def _print_watch(url: str, clock: Clock, tally: Tally, write: Write) -> None:
    async with _client(url) as client:
        named = HealthTracker()
        async for raw in client.watch(0):
            event = named(raw)
            tally.add(event.type, event.entry.health_state)
            if event.type != EventType.MODIFIED:  # status and task-count updates
                write(output.event_line(event, clock.label()))


async def _scenario(url: str, agents: int, seconds: float, write: Write) -> None:
    clock = Clock()
    rng = random.Random(2024)

    def say(message: str) -> None:
        write(f"{clock.label()}  --- {message}")

    say(
        f"registry serving on {url} (in-memory): heartbeat every {INTERVAL:g}s, NotReady "
        f"after {NOT_READY_AFTER:g}s of silence, Offline after {TTL:g}s, removed {GRACE:g}s later"
    )
    say(f"look for yourself meanwhile: node-registry get nodes -o wide --server {url}")
    write(output.event_header())
    tally = Tally()
    watcher = asyncio.create_task(_print_watch(url, clock, tally, write), name="demo-watch")
    fleet = [SimulatedAgent(p, url, random.Random(rng.random())) for p in fleet_passports(agents)]
    try:
        for agent in fleet:
            agent.start()
            await asyncio.sleep(0.02)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(a.registered.wait() for a in fleet)), timeout=max(10.0, seconds)
            )
        joined = sum(a.registered.is_set() for a in fleet)
        kinds = sorted({a.passport["metadata"]["nodeType"] for a in fleet})
        say(f"{joined} of {agents} nodes registered ({', '.join(kinds)}), Running, heartbeating")

        await clock.sleep_until(clock.elapsed() + min(3.0, max(1.0, seconds * 0.12)))
        order = rng.sample(range(agents), agents)
        abrupt = [fleet[i] for i in order[: max(1, round(agents * ABRUPT_SHARE))]]
        graceful = fleet[order[len(abrupt)]]
        say(
            f"killing {', '.join(a.name for a in abrupt)}: no more heartbeats, no goodbye "
            f"-> NOT_READY in {NOT_READY_AFTER:g}s, OFFLINE in {TTL:g}s, removed in "
            f"{TTL + GRACE:g}s"
        )
        await asyncio.gather(*(a.halt(deregister=False) for a in abrupt))
        say(f"{graceful.name} leaves gracefully: it deregisters itself -> DELETED now")
        await graceful.halt(deregister=True)

        await clock.sleep_until(seconds)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, RegistryError):
            await watcher
        async with _client(url) as client:
            entries = await client.find_nodes()
            healthy = await client.find_nodes(only_healthy=True)
            coders = await client.find_nodes(
                kind="agent", selector="capability.code_generation", only_healthy=True
            )
        say(
            "find_nodes(kind='agent', selector='capability.code_generation', "
            f"only_healthy=True) -> {', '.join(e.name for e in coders) or 'none'}"
        )
        say(f"after {seconds:g}s: node-registry get nodes")
        write(output.nodes_table(entries, datetime.now(UTC)))
        counts = tally.counts
        say(
            f"{counts['ADDED']} registered, {counts['NOT_READY']} went NOT_READY, "
            f"{counts['OFFLINE']} went OFFLINE, {counts['DELETED']} deleted; "
            f"{len(healthy)} of {len(entries)} schedulable now; "
            f"{counts['MODIFIED']} MODIFIED events (status and task updates) not shown"
        )
    finally:
        watcher.cancel()
        await asyncio.gather(*(a.halt(deregister=False) for a in fleet))
        await asyncio.gather(
            watcher, *(a.task for a in fleet if a.task is not None), return_exceptions=True
        )


def _print(line: str) -> None:
    print(line, flush=True)


def run_demo(*, agents: int = 30, seconds: float = 20, port: int = 0, write: Write = _print) -> int:
    """Run the whole demo; returns the exit code. ``port`` 0 takes any free port."""
    server = LocalServer.start(port, demo_settings())
    try:
        asyncio.run(_scenario(server.url, agents, seconds, write))
    finally:
        server.stop()
    write("demo finished; the registry and its agents are stopped")
    return 0
