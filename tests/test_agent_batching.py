"""Many agents of one host on one ``SharedClient``: their renewals go out as one request.

A real server (uvicorn on loopback, FakeClock); the agents' pauses are a gate the test opens
(``Ticks``), so each tick is one round of renewals and nothing waits for an interval.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import passport
from live_server import make_app, serve
from node_registry import FakeClock
from node_registry.agent import NodeAgent, SharedClient
from node_registry.client import AsyncRegistryClient
from node_registry.client.aio import MAX_IN_FLIGHT
from node_registry.errors import ConfigError, ForbiddenError, NotFoundError, UnauthorizedError

ADMIN = "admin-token-0123456789abcdef"
HOST = "node-h-token-0123456789abcdef"
TOKENS = {
    "tokens": [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": HOST, "role": "node", "node": "host-agent-0"},
    ]
}
WAIT = 10.0


class Ticks:
    """The agents' sleep: every pause lasts until the test's next ``tick()``."""

    def __init__(self) -> None:
        self.generation = 0
        self.changed = asyncio.Condition()
        self.waiting = 0

    async def __call__(self, delay: float) -> None:
        async with self.changed:
            seen = self.generation
            self.waiting += 1
            try:
                await self.changed.wait_for(lambda: self.generation > seen)
            finally:
                self.waiting -= 1

    async def tick(self) -> None:
        async with self.changed:
            self.generation += 1
            self.changed.notify_all()


@pytest.fixture
def url(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[str, Any]]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    tokens.chmod(0o600)
    app = make_app(clock=clock, server={"tokens_file": str(tokens)})
    app.state.test_clock = clock
    with serve(app) as base:
        yield base, app


async def until(check: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def test_the_agents_of_a_host_renew_in_one_request(url: tuple[str, Any]) -> None:
    base, app = url
    registry = app.state.registry.sync
    names = [f"agent-{uuid.uuid4().hex[:8]}" for _ in range(5)]

    async def main() -> int:
        ticks = Ticks()
        async with AsyncRegistryClient(base, token=ADMIN, retries=0) as client:
            shared = SharedClient(client, window=0.02)
            agents = [
                NodeAgent(
                    passport(n),
                    detect=False,
                    start_jitter=0,
                    interval=10,
                    client=shared,
                    sleep=ticks,
                )
                for n in names
            ]
            for agent in agents:
                await agent.start()
            # Registered (and their status written) one by one: nothing is batched there.
            await until(lambda: ticks.waiting == len(agents), "the agents never registered")
            assert all(a.registered for a in agents)
            assert shared.requests == 0
            before = {n: registry.get_by_name(n).last_seen for n in names}
            app.state.test_clock.advance(5)
            await ticks.tick()
            await until(lambda: shared.requests == 1 and ticks.waiting == len(agents), "no round")
            after = {n: registry.get_by_name(n).last_seen for n in names}
            assert all(after[n] > before[n] for n in names), (before, after)
            assert all(a.last_renewal is not None and a.failures == 0 for a in agents)
            for agent in agents:
                await agent.aclose()  # deregisters: one by one, straight through
            return shared.requests

    assert asyncio.run(main()) == 1
    for name in names:
        with pytest.raises(NotFoundError):
            registry.id_of(name)


def test_each_renewal_gets_its_own_result(url: tuple[str, Any]) -> None:
    base, app = url
    name = "host-agent-0"
    app.state.registry.sync.register(passport(name))

    async def main() -> list[Any]:
        async with AsyncRegistryClient(base, token=HOST, retries=0) as client:
            shared = SharedClient(client, window=0.02)
            outcomes = await asyncio.gather(
                shared.heartbeat(name),
                shared.heartbeat("someone-else"),
                shared.heartbeat(name),  # the same agent twice: one lease, one answer
                return_exceptions=True,
            )
            assert shared.requests == 1
            return outcomes

    mine, other, again = asyncio.run(main())
    assert mine == again == app.state.registry.sync.get_by_name(name).last_seen
    assert isinstance(other, ForbiddenError)


def test_a_refused_request_fails_every_renewal_in_it(url: tuple[str, Any]) -> None:
    base, _ = url

    async def main() -> list[Any]:
        async with AsyncRegistryClient(base, token="x" * 30, retries=0) as client:
            shared = SharedClient(client, window=0.01)
            return await asyncio.gather(
                shared.heartbeat("a"), shared.heartbeat("b"), return_exceptions=True
            )

    assert all(isinstance(o, UnauthorizedError) for o in asyncio.run(main()))


def test_a_full_batch_goes_at_once_and_an_unknown_node_is_told_to_register(
    url: tuple[str, Any],
) -> None:
    base, _ = url

    async def main() -> tuple[list[Any], int]:
        async with AsyncRegistryClient(base, token=ADMIN, retries=0) as client:
            # A window no test would wait for: only the batch's size can send it.
            shared = SharedClient(client, window=3600, per_request=3)
            outcomes = await asyncio.wait_for(
                asyncio.gather(
                    *(shared.heartbeat(f"ghost-{i}") for i in range(3)), return_exceptions=True
                ),
                WAIT,
            )
            return outcomes, shared.requests

    outcomes, requests = asyncio.run(main())
    assert requests == 1
    assert all(isinstance(o, NotFoundError) for o in outcomes)


def test_bad_batching_settings_fail_before_any_io() -> None:
    client = AsyncRegistryClient("http://127.0.0.1:9", retries=0)
    with pytest.raises(ConfigError, match="window"):
        SharedClient(client, window=-1)
    with pytest.raises(ConfigError, match="per_request"):
        SharedClient(client, per_request=0)


class Counting(httpx.AsyncBaseTransport):
    """A real transport that notes how many requests it carries at once."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.now = self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            response = await self.inner.handle_async_request(request)
            await response.aread()
            return response
        finally:
            self.now -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_client_shared_by_many_agents_bounds_its_calls_in_flight(
    url: tuple[str, Any],
) -> None:
    # Thousands of calls at once (a host's agents starting together) queue in the client
    # rather than in httpcore's pool, which scans every waiting request per free connection.
    base, _ = url
    transport = Counting()

    async def main() -> list[Any]:
        async with AsyncRegistryClient(base, token=ADMIN, retries=0, transport=transport) as client:
            return await asyncio.gather(
                *(client.register(passport(f"crowd-{i:03d}")) for i in range(3 * MAX_IN_FLIGHT))
            )

    assert len(asyncio.run(main())) == 3 * MAX_IN_FLIGHT
    assert transport.most == MAX_IN_FLIGHT


class Ordered(Counting):
    """``Counting``, noting each request's method and path in the order they are sent, and
    holding every request until the test opens ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []
        self.gate = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        await self.gate.wait()
        return await super().handle_async_request(request)


@pytest.mark.parametrize(
    ("call", "first"),
    [
        ("heartbeat", True),
        ("heartbeat_many", True),
        ("update_status", True),
        ("get", False),  # a read waits its turn behind the registrations, as before
    ],
)
def test_a_registered_node_is_not_kept_waiting_behind_a_storm_of_registrations(
    url: tuple[str, Any], call: str, first: bool
) -> None:
    # The storm: every agent of a host registering at once holds every turn of the shared
    # client and fills its queue; a renewal or status report of a node already registered
    # takes the next free turn, or it may wait past its timeout while its lease runs out.
    base, _ = url
    transport = Ordered()
    crowd = 3 * MAX_IN_FLIGHT

    async def main() -> None:
        async with AsyncRegistryClient(base, token=ADMIN, retries=0, transport=transport) as client:
            transport.gate.set()
            await client.register(passport("host-agent-0"))
            transport.gate.clear()
            transport.sent.clear()
            storm = [
                asyncio.create_task(client.register(passport(f"crowd-{i:03d}")))
                for i in range(crowd)
            ]
            await until(lambda: len(transport.sent) == MAX_IN_FLIGHT, "every turn taken")
            calls = {
                "heartbeat": lambda: client.heartbeat("host-agent-0"),
                "heartbeat_many": lambda: client.heartbeat_many(["host-agent-0"]),
                "update_status": lambda: client.update_status("host-agent-0", phase="Running"),
                "get": lambda: client.get("host-agent-0"),
            }
            node = asyncio.create_task(calls[call]())
            await asyncio.sleep(0)  # its first step: up to its wait for a turn
            transport.gate.set()
            await asyncio.gather(node, *storm)

    asyncio.run(main())
    assert len(transport.sent) == crowd + 1
    assert transport.most == MAX_IN_FLIGHT  # the bound holds for either kind
    node = [i for i, sent in enumerate(transport.sent) if "host-agent-0" in sent]
    if call == "heartbeat_many":
        node = [i for i, sent in enumerate(transport.sent) if "leaserenewals" in sent]
    assert node == ([MAX_IN_FLIGHT] if first else [crowd])


def test_httpcore_finds_what_it_looks_for_on_every_request() -> None:
    # Without sniffio httpcore still works, but its failed import on every request searches
    # sys.path each time: a quarter of the CPU of a client many agents share (#14).
    import importlib.util

    assert importlib.util.find_spec("sniffio") is not None
