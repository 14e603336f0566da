"""The informer: the cache alone, then ``Informer`` and ``AsyncInformer`` against real servers.

Servers run on a FakeClock with the lifecycle controller's timer out of reach (transitions
come from ``reconcile()`` called by the test). Each runs in a thread with its own event loop
on a port the test may choose, so a test can kill one (every connection dropped, as in a
crash) and start another on the same port. Every wait polls a condition with a deadline;
nothing sleeps for a TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from conftest import passport
from live_server import free_port, make_app
from node_registry import (
    EventType,
    FakeClock,
    HealthState,
    NodeList,
    Registry,
    RegistryEntry,
    RevisionCompactedError,
    SelectorError,
    ValidationError,
    WatchEvent,
)
from node_registry.client import AsyncRegistryClient, RegistryClient, objects
from node_registry.client.backoff import backoff
from node_registry.client.informer import AsyncInformer, Informer, NodeCache
from node_registry.errors import RegistryUnreachableError
from node_registry.kube.objects import entry_to_object

WAIT = 5.0  # seconds any condition below may take to come true

# -- helpers -------------------------------------------------------------------------------


def until(check: Callable[[], object], what: Callable[[], object], timeout: float = WAIT) -> None:
    """Poll ``check`` until true; on timeout, fail showing ``what()``."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s; now: {what()!r}"
        time.sleep(0.01)


async def async_until(
    check: Callable[[], object], what: Callable[[], object], timeout: float = WAIT
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s; now: {what()!r}"
        await asyncio.sleep(0.01)


def names(entries: list[Any]) -> list[str]:
    return [e.name for e in entries]


def wired(entries: list[RegistryEntry]) -> list[objects.RegistryEntry]:
    """Registry entries as a client reads them: the server's NodePassport objects, parsed."""
    return [objects.entry_of(json.loads(json.dumps(entry_to_object(e)))) for e in entries]


def wired_event(event: WatchEvent) -> objects.WatchEvent:
    """A registry event as a watch streams it: a health transition is a MODIFIED."""
    kind = "MODIFIED" if event.type is EventType.HEALTH_CHANGED else event.type.value
    [entry] = wired([event.entry])
    return objects.WatchEvent(objects.EventType(kind), entry, event.resource_version)


class Server:
    """A uvicorn server on ``port`` in a thread running its own event loop.

    ``kill()`` drops every open connection, then exits: clients see what a crash shows them.
    ``on_loop(fn)`` runs ``fn`` on the server's loop, where no request can interleave with it.
    """

    def __init__(self, app: FastAPI, clock: FakeClock, port: int) -> None:
        self.app = app
        self.clock = clock
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{port}", daemon=True)

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.registry.sync
        return registry

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._server.serve()

    def start(self) -> Server:
        self._thread.start()
        until(lambda: self._server.started, lambda: "the test server did not start", 10)
        return self

    def on_loop(self, fn: Callable[[], None]) -> None:
        async def call() -> None:
            fn()

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(call(), self._loop).result(WAIT)

    def kill(self) -> None:
        def drop() -> None:
            # Listening stops first, so the dropped clients cannot come straight back.
            for listener in self._server.servers:
                listener.close()
            for connection in list(self._server.server_state.connections):
                connection.transport.close()

        if self._thread.is_alive():
            self.on_loop(drop)
        self.stop()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the test server did not stop"


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


ServerFactory = Callable[..., Server]


@pytest.fixture
def start_server(stack: contextlib.ExitStack) -> ServerFactory:
    def start(*, port: int | None = None, nodes: tuple[str, ...] = (), **overrides: Any) -> Server:
        overrides.setdefault("controller", {"period_seconds": 3600})
        clock = FakeClock()
        app = make_app(clock=clock, **overrides)
        for name in nodes:  # before the server starts, so nothing races the writes
            app.state.registry.sync.register(passport(name))
        server = Server(app, clock, port or free_port())
        stack.callback(server.stop)
        return server.start()

    return start


@pytest.fixture
def informer_clock() -> FakeClock:
    """The informer's own clock (staleness is measured with it), apart from the server's."""
    return FakeClock()


# -- the cache alone -------------------------------------------------------------------------


def _fleet(clock: FakeClock) -> Registry:
    """Nodes that every selector below tells apart, with every kind of health on record."""
    registry = Registry(clock=clock)
    for doc in (
        passport("coder-01", resources={"memory": "8Gi", "cpu": "4"}),
        passport("coder-02", resources={"memory": "16Gi", "cpu": "8"}),
        passport(
            "coder-03",
            capabilities=("code_generation",),
            labels={"zone": "us-east-1"},
            resources={"memory": "2Gi", "cpu": "1"},
        ),
        passport("writer-01", capabilities=("text_generation",), resources={"memory": "4Gi"}),
        passport("starting-01", phase="Pending"),
        passport("silent-01", labels={"zone": "eu-west-1", "tier": "gold"}),
        passport("postgres-01", kind="storage", capabilities=("sql",), labels={"tier": "gold"}),
    ):
        registry.register(doc)
    registry.update_status(
        registry.id_of("coder-02"),
        conditions=[{"type": "Ready", "status": "False", "reason": "Overloaded"}],
    )
    clock.advance(21)
    for name in ("coder-01", "coder-02", "coder-03", "writer-01", "starting-01", "postgres-01"):
        registry.heartbeat(registry.id_of(name))
    registry.reconcile()  # silent-01: NOT_READY, recorded (and HEALTH_CHANGED emitted)
    return registry


SELECTORS: list[Any] = [
    None,
    # Seed 2.5, verbatim.
    {
        "matchLabels": {
            "capability.code_generation": "true",
            "capability.python": "true"
        }
    },
    {
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["eu-west-1"]},
            {"key": "memory", "operator": "Gt", "values": ["4Gi"]}
        ]
    },
    "tier=gold",
    "zone notin (eu-west-1)",
    "!tier,memory<8Gi",
    "capability.sql",
]  # fmt: skip


def test_cache_answers_find_nodes_as_the_embedded_registry(clock: FakeClock) -> None:
    registry = _fleet(clock)
    listed = NodeCache()
    node_list = registry.list_nodes()
    listed.replace(wired(node_list.items), node_list.resource_version)
    followed = NodeCache()
    followed.replace([], 0)
    with registry.watch(0) as watch:
        while (event := watch.next(timeout=0)) is not None:
            assert followed.apply(wired_event(event))
    assert followed.resource_version == listed.resource_version == registry.resource_version

    for kind in (None, "agent", "storage"):
        for selector in SELECTORS:
            for only_healthy in (False, True):
                expected = names(registry.find_nodes(kind, selector, only_healthy))
                case = (kind, selector, only_healthy)
                assert names(listed.find_nodes(kind, selector, only_healthy)) == expected, case
                assert names(followed.find_nodes(kind, selector, only_healthy)) == expected, case
    # The seed's answers, to be sure the comparison above compared something.
    assert names(listed.find_nodes(selector=SELECTORS[1])) == [
        "coder-01",
        "coder-02",
        "silent-01",
        "starting-01",
    ]
    assert names(listed.find_nodes(selector=SELECTORS[2], only_healthy=True)) == ["coder-01"]
    assert names(followed.find_nodes(only_healthy=True)) == [
        "coder-01",
        "coder-03",
        "postgres-01",
        "writer-01",
    ]
    # The same refusals as the registry's.
    with pytest.raises(ValidationError, match="unknown node kind"):
        listed.find_nodes(kind="Robot_1")
    with pytest.raises(SelectorError):
        listed.find_nodes(selector="zone in (")


def test_cache_applies_each_event_type_and_ignores_stale_ones(clock: FakeClock) -> None:
    registry = Registry(clock=clock)
    cache = NodeCache()
    seen: list[tuple[EventType, str]] = []
    with registry.watch(0) as watch:

        def follow() -> None:
            while (event := watch.next(timeout=0)) is not None:
                assert cache.apply(wired_event(event))
                seen.append((event.type, event.entry.name))

        a = registry.register(passport("node-a")).node_id
        registry.register(passport("node-b"))
        follow()
        assert names(cache.list()) == ["node-a", "node-b"]

        registry.update_status(a, current_tasks=2)
        follow()
        entry = cache.get("node-a")
        assert entry is not None
        assert entry.passport.status.current_tasks == 2

        clock.advance(21)
        registry.heartbeat(registry.id_of("node-b"))
        registry.reconcile()
        follow()
        entry = cache.get("node-a")
        assert entry is not None
        assert entry.health_state is HealthState.NOT_READY
        assert names(cache.find_nodes(only_healthy=True)) == ["node-b"]

        registry.deregister(a)
        follow()
        assert cache.get("node-a") is None
        assert names(cache.list()) == ["node-b"]
        assert len(cache) == 1

    assert seen == [
        (EventType.ADDED, "node-a"),
        (EventType.ADDED, "node-b"),
        (EventType.MODIFIED, "node-a"),
        (EventType.HEALTH_CHANGED, "node-a"),
        (EventType.DELETED, "node-a"),
    ]
    current = cache.resource_version
    assert current == registry.resource_version

    # Not newer than the cache: ignored, whatever it says.
    stale = registry.watch(0)
    first = stale.next(timeout=0)
    stale.close()
    assert first is not None
    assert first.type is EventType.ADDED
    assert not cache.apply(wired_event(first))
    same = WatchEvent(EventType.DELETED, cache.list()[0], current)
    assert not cache.apply(same)
    assert names(cache.list()) == ["node-b"]
    assert cache.resource_version == current


def test_cache_replace_reports_what_changed(clock: FakeClock) -> None:
    registry = Registry(clock=clock)
    for name in ("keep", "change", "sicken", "drop"):
        registry.register(passport(name))
    cache = NodeCache()
    first = registry.list_nodes()
    assert [(e.type, e.entry.name) for e in cache.replace(wired(first.items), 4)] == [
        (EventType.ADDED, "change"),
        (EventType.ADDED, "drop"),
        (EventType.ADDED, "keep"),
        (EventType.ADDED, "sicken"),
    ]

    registry.update_status(registry.id_of("change"), current_tasks=1)
    registry.deregister(registry.id_of("drop"))
    registry.register(passport("new"))
    clock.advance(21)
    for name in ("keep", "change", "new"):
        registry.heartbeat(registry.id_of(name))
    registry.reconcile()
    second = registry.list_nodes()
    events = cache.replace(wired(second.items), second.resource_version)

    assert [(e.type, e.entry.name, e.previous_health) for e in events] == [
        (EventType.MODIFIED, "change", HealthState.ALIVE),
        (EventType.DELETED, "drop", HealthState.ALIVE),
        (EventType.ADDED, "new", None),
        (EventType.HEALTH_CHANGED, "sicken", HealthState.ALIVE),
    ]
    assert events[1].resource_version == second.resource_version
    assert cache.resource_version == second.resource_version
    assert names(cache.list()) == ["change", "keep", "new", "sicken"]
    # A lower version is taken too: a restarted registry's list is the truth.
    assert cache.replace([], 1) != []
    assert cache.resource_version == 1
    assert len(cache) == 0


def test_cache_hands_out_copies(clock: FakeClock) -> None:
    registry = Registry(clock=clock)
    registry.register(passport("node-a"))
    cache = NodeCache()
    cache.replace(wired(registry.list_nodes().items), registry.resource_version)
    found = cache.find_nodes()[0]
    found.health_state = HealthState.OFFLINE
    entry = cache.get("node-a")
    assert entry is not None
    assert entry.health_state is HealthState.ALIVE
    assert entry is not cache.get("node-a")


# -- the loop, with a fake client ----------------------------------------------------------------


class FlakyClient:
    """Lists ``items`` once, then its watch breaks and every list fails: the registry is gone."""

    def __init__(self, items: list[RegistryEntry]) -> None:
        self.items = items
        self.lists = 0

    def list_nodes(self) -> NodeList:
        self.lists += 1
        if self.lists > 1:
            raise RegistryUnreachableError("no registry endpoint answered")
        return NodeList(self.items, 7)

    def watch(self, since: int) -> Iterator[WatchEvent]:
        assert since == 7
        raise RegistryUnreachableError("the watch lost every registry endpoint")


SEED = 11
CEILINGS = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 7.0, 7.0, 7.0]
#: The informer's full-jitter schedule, replayed from the seed it is given (client.backoff).
_replay = random.Random(SEED)
EXPECTED_DELAYS = [backoff(n, rng=_replay) for n in range(1, len(CEILINGS) + 1)]
assert all(0 <= d <= c for d, c in zip(EXPECTED_DELAYS, CEILINGS, strict=True))


def test_unreachable_registry_backoff_and_last_state(
    clock: FakeClock, informer_clock: FakeClock
) -> None:
    registry = Registry(clock=clock)
    registry.register(passport("node-a"))
    client = FlakyClient(wired(registry.list_nodes().items))
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        informer_clock.advance(seconds)
        time.sleep(0.001)

    informer = Informer(client=client, clock=informer_clock, sleep=sleep, rng=random.Random(SEED))
    assert informer.staleness == float("inf")
    assert informer.last_synced_at is None
    with informer:
        assert informer.wait_synced(WAIT)
        until(lambda: len(delays) >= len(EXPECTED_DELAYS), lambda: delays)
    assert delays[: len(EXPECTED_DELAYS)] == EXPECTED_DELAYS
    assert not informer.connected
    assert informer.staleness >= sum(EXPECTED_DELAYS) - 1e-3  # the clock keeps microseconds
    synced = informer_clock.now() - timedelta(seconds=sum(delays))
    assert informer.last_synced_at is not None
    assert abs(informer.last_synced_at - synced) <= timedelta(microseconds=len(delays))
    assert informer.relists == 0
    assert names(informer.find_nodes()) == ["node-a"]


def test_async_unreachable_registry_backoff_and_last_state(
    clock: FakeClock, informer_clock: FakeClock
) -> None:
    registry = Registry(clock=clock)
    registry.register(passport("node-a"))
    items = wired(registry.list_nodes().items)

    class AsyncFlakyClient:
        lists = 0

        async def list_nodes(self) -> NodeList:
            self.lists += 1
            if self.lists > 1:
                raise RegistryUnreachableError("no registry endpoint answered")
            return NodeList(items, 7)

        async def watch(self, since: int) -> AsyncIterator[WatchEvent]:
            raise RegistryUnreachableError("the watch lost every registry endpoint")
            yield  # an async generator, like AsyncRegistryClient.watch

    async def main() -> None:
        delays: list[float] = []

        async def sleep(seconds: float) -> None:
            delays.append(seconds)
            informer_clock.advance(seconds)
            await asyncio.sleep(0.001)

        informer = AsyncInformer(
            client=AsyncFlakyClient(), clock=informer_clock, sleep=sleep, rng=random.Random(SEED)
        )
        async with informer:
            assert await informer.wait_synced(WAIT)
            await async_until(lambda: len(delays) >= len(EXPECTED_DELAYS), lambda: delays)
        assert delays[: len(EXPECTED_DELAYS)] == EXPECTED_DELAYS
        assert not informer.connected
        assert informer.staleness >= sum(EXPECTED_DELAYS) - 1e-3  # the clock keeps microseconds
        assert names(await informer.find_nodes()) == ["node-a"]

    asyncio.run(main())


def test_a_failing_handler_does_not_stop_the_informer(clock: FakeClock) -> None:
    registry = Registry(clock=clock)
    registry.register(passport("node-a"))
    good: list[WatchEvent] = []

    def bad(event: WatchEvent) -> None:
        raise RuntimeError("a consumer's bug")

    informer = Informer(
        client=FlakyClient(wired(registry.list_nodes().items)),
        on_event=[bad, good.append],
        sleep=lambda seconds: time.sleep(0.001),
    )
    with informer:
        assert informer.wait_synced(WAIT)
        until(lambda: good, lambda: good)
    assert [(e.type, e.entry.name) for e in good] == [(EventType.ADDED, "node-a")]


# -- Informer against a live server ------------------------------------------------------


def test_informer_syncs_and_follows_writes(start_server: ServerFactory) -> None:
    server = start_server(nodes=("node-a", "node-b"))
    events: list[tuple[EventType, str]] = []
    with (
        RegistryClient(server.url) as client,
        Informer(server.url, on_event=lambda e: events.append((e.type, e.entry.name))) as inf,
    ):
        assert inf.wait_synced(WAIT)
        assert inf.connected
        assert inf.staleness == 0
        assert inf.last_synced_at is not None
        for selector in SELECTORS:
            assert names(inf.find_nodes(selector=selector)) == names(
                client.find_nodes(selector=selector)
            )

        client.register(passport("node-c", labels={"zone": "us-east-1"}))
        client.update_status("node-a", current_tasks=3)
        client.deregister("node-b")
        until(
            lambda: (
                names(inf.find_nodes()) == ["node-a", "node-c"]
                and inf.cache.resource_version == server.registry.resource_version
            ),
            lambda: (names(inf.find_nodes()), inf.cache.resource_version),
        )
        entry = inf.cache.get("node-a")
        assert entry is not None
        assert entry.passport.status.current_tasks == 3
        assert names(inf.find_nodes(selector="zone=us-east-1")) == ["node-c"]
        assert inf.relists == 0
    assert events == [
        (EventType.ADDED, "node-a"),
        (EventType.ADDED, "node-b"),
        (EventType.ADDED, "node-c"),
        (EventType.MODIFIED, "node-a"),
        (EventType.DELETED, "node-b"),
    ]
    assert not inf.connected  # stopped: the cache is no longer kept current


def test_informer_follows_recorded_health(start_server: ServerFactory) -> None:
    server = start_server(nodes=("node-a", "node-b"))
    with RegistryClient(server.url) as client, Informer(server.url) as inf:
        assert inf.wait_synced(WAIT)
        # node-a falls silent; a heartbeat alone changes nothing the informer can see.
        server.clock.advance(21)
        client.heartbeat("node-b")
        server.on_loop(server.registry.reconcile)

        def health() -> dict[str, HealthState]:
            return {e.name: e.health_state for e in inf.find_nodes()}

        until(lambda: health()["node-a"] is HealthState.NOT_READY, health)
        assert names(inf.find_nodes(only_healthy=True)) == ["node-b"]
        assert names(client.find_nodes(only_healthy=True)) == ["node-b"]

        client.heartbeat("node-a")  # the revival is recorded once: HEALTH_CHANGED
        until(lambda: health()["node-a"] is HealthState.ALIVE, health)
        assert names(inf.find_nodes(only_healthy=True)) == ["node-a", "node-b"]


def test_informer_relists_when_the_watch_starts_too_old(start_server: ServerFactory) -> None:
    server = start_server(nodes=("node-a",), watch={"history_size": 3})
    handled: list[WatchEvent] = []

    def slow_consumer(event: WatchEvent) -> None:
        # Handlers run in the informer's thread, the first ones between the list and the
        # watch: while this one works, five writes push the list's version (1) out of the
        # server's three-event history, so the watch from it gets a 410.
        if not handled:
            with RegistryClient(server.url) as writer:
                for i in range(5):
                    writer.register(passport(f"late-{i}"))
                with pytest.raises(RevisionCompactedError):
                    next(iter(writer.watch(1)))
        handled.append(event)

    with Informer(server.url, on_event=slow_consumer) as inf:
        assert inf.wait_synced(WAIT)
        until(lambda: len(inf.find_nodes()) == 6 and inf.connected, inf.find_nodes)
        assert inf.relists == 1
        assert sorted((e.type, e.entry.name) for e in handled) == [
            (EventType.ADDED, "late-0"),
            (EventType.ADDED, "late-1"),
            (EventType.ADDED, "late-2"),
            (EventType.ADDED, "late-3"),
            (EventType.ADDED, "late-4"),
            (EventType.ADDED, "node-a"),
        ]


def test_informer_relists_when_it_falls_behind_mid_stream(start_server: ServerFactory) -> None:
    server = start_server(watch={"history_size": 3})
    with RegistryClient(server.url) as client, Informer(server.url) as inf:
        assert inf.wait_synced(WAIT)
        client.register(passport("first"))
        until(lambda: inf.cache.get("first") is not None, lambda: names(inf.find_nodes()))

        def burst() -> None:
            # On the server's loop, so its watch stream cannot drain in between: the stream
            # falls more than 3 events behind and ends with a 410 ERROR event.
            for i in range(10):
                server.registry.register(passport(f"burst-{i}"))

        server.on_loop(burst)
        until(
            lambda: len(inf.find_nodes()) == 11 and inf.connected,
            lambda: (names(inf.find_nodes()), inf.connected),
        )
        assert inf.relists == 1
        assert inf.cache.resource_version == server.registry.resource_version


def test_informer_outlives_a_dead_server_and_follows_its_successor(
    start_server: ServerFactory, informer_clock: FakeClock
) -> None:
    old = start_server(nodes=("old-a", "old-b"))
    with RegistryClient(old.url) as client:
        for tasks in range(1, 6):
            client.update_status("old-a", current_tasks=tasks)
    old_version = old.registry.resource_version
    events: list[tuple[EventType, str]] = []
    inf = Informer(
        old.url, clock=informer_clock, on_event=lambda e: events.append((e.type, e.entry.name))
    )
    with inf:
        assert inf.wait_synced(WAIT)
        assert inf.cache.resource_version == old_version == 7

        old.kill()
        until(lambda: not inf.connected, lambda: inf.connected)
        informer_clock.advance(3)
        assert inf.staleness == 3
        informer_clock.advance(2)
        assert inf.staleness == 5
        assert names(inf.find_nodes()) == ["old-a", "old-b"]  # the last state, still served
        assert names(inf.find_nodes(only_healthy=True)) == ["old-a", "old-b"]

        # A new in-memory server on the same port: other nodes, a history restarted at 1.
        new = start_server(port=old.port, nodes=("new-c",))
        assert new.registry.resource_version == 1 < old_version
        until(
            lambda: inf.connected and names(inf.find_nodes()) == ["new-c"],
            lambda: (inf.connected, names(inf.find_nodes())),
            timeout=10,
        )
        assert inf.staleness == 0
        assert inf.relists == 1
        assert inf.cache.resource_version == 1

        with RegistryClient(new.url) as client:
            client.register(passport("new-d"))  # version 2: older than anything old had
        until(
            lambda: names(inf.find_nodes()) == ["new-c", "new-d"], lambda: names(inf.find_nodes())
        )
    assert events == [
        (EventType.ADDED, "old-a"),
        (EventType.ADDED, "old-b"),
        (EventType.ADDED, "new-c"),
        (EventType.DELETED, "old-a"),
        (EventType.DELETED, "old-b"),
        (EventType.ADDED, "new-d"),
    ]


def test_informer_stops_promptly_with_a_quiet_watch_open(start_server: ServerFactory) -> None:
    server = start_server(nodes=("node-a",))  # bookmarks every 30 s: nothing to read
    inf = Informer(server.url)
    inf.start()
    assert inf.wait_synced(WAIT)
    with RegistryClient(server.url) as client:
        client.register(passport("node-b"))
    until(lambda: len(inf.find_nodes()) == 2, lambda: names(inf.find_nodes()))  # watch is open
    began = time.monotonic()
    inf.stop()
    assert time.monotonic() - began < 1
    assert not inf.connected
    assert names(inf.find_nodes()) == ["node-a", "node-b"]
    with pytest.raises(RuntimeError, match="started again"):
        inf.start()
    began = time.monotonic()
    server.stop()  # graceful: it would wait for a watch connection left open
    assert time.monotonic() - began < 2


# -- AsyncInformer against a live server -------------------------------------------------


def test_async_informer_syncs_and_follows_writes_and_health(start_server: ServerFactory) -> None:
    server = start_server(nodes=("node-a", "node-b"))

    async def main() -> None:
        events: list[tuple[EventType, str]] = []
        async with (
            AsyncRegistryClient(server.url) as client,
            AsyncInformer(
                server.url, on_event=lambda e: events.append((e.type, e.entry.name))
            ) as inf,
        ):
            assert await inf.wait_synced(WAIT)
            assert inf.connected
            for selector in SELECTORS:
                assert names(await inf.find_nodes(selector=selector)) == names(
                    await client.find_nodes(selector=selector)
                )

            await client.register(passport("node-c"))
            await client.update_status("node-a", current_tasks=2)
            await client.deregister("node-b")
            await async_until(
                lambda: (
                    names(inf.cache.list()) == ["node-a", "node-c"]
                    and inf.cache.resource_version == server.registry.resource_version
                ),
                lambda: names(inf.cache.list()),
            )

            server.clock.advance(21)
            await client.heartbeat("node-c")
            server.on_loop(server.registry.reconcile)

            def health() -> dict[str, HealthState]:
                return {e.name: e.health_state for e in inf.cache.list()}

            await async_until(lambda: health()["node-a"] is HealthState.NOT_READY, health)
            assert names(await inf.find_nodes(only_healthy=True)) == ["node-c"]
            assert inf.relists == 0
        assert events == [
            (EventType.ADDED, "node-a"),
            (EventType.ADDED, "node-b"),
            (EventType.ADDED, "node-c"),
            (EventType.MODIFIED, "node-a"),
            (EventType.DELETED, "node-b"),
            (EventType.HEALTH_CHANGED, "node-a"),
        ]
        assert not inf.connected

    asyncio.run(main())


def test_async_informer_relists_when_it_falls_behind(start_server: ServerFactory) -> None:
    server = start_server(nodes=("first",), watch={"history_size": 3})

    def burst() -> None:
        for i in range(10):
            server.registry.register(passport(f"burst-{i}"))

    async def main() -> None:
        async with AsyncInformer(server.url) as inf:
            assert await inf.wait_synced(WAIT)
            async with AsyncRegistryClient(server.url) as client:
                await client.register(passport("second"))
            await async_until(lambda: len(inf.cache) == 2, lambda: names(inf.cache.list()))
            server.on_loop(burst)
            await async_until(
                lambda: len(inf.cache) == 12 and inf.connected, lambda: names(inf.cache.list())
            )
            assert inf.relists == 1

    asyncio.run(main())


def test_async_informer_outlives_a_dead_server_and_follows_its_successor(
    start_server: ServerFactory,
) -> None:
    old = start_server(nodes=("old-a", "old-b", "old-c"))

    async def main() -> None:
        async with AsyncInformer(old.url) as inf:
            assert await inf.wait_synced(WAIT)
            old.kill()
            await async_until(lambda: not inf.connected, lambda: inf.connected)
            first = inf.staleness
            await async_until(lambda: inf.staleness > first, lambda: inf.staleness)
            assert names(await inf.find_nodes()) == ["old-a", "old-b", "old-c"]

            new = start_server(port=old.port, nodes=("new-d",))
            await async_until(
                lambda: inf.connected and names(inf.cache.list()) == ["new-d"],
                lambda: (inf.connected, names(inf.cache.list())),
                timeout=10,
            )
            assert inf.relists == 1
            assert inf.staleness == 0
            async with AsyncRegistryClient(new.url) as client:
                await client.register(passport("new-e"))
            await async_until(
                lambda: names(inf.cache.list()) == ["new-d", "new-e"],
                lambda: names(inf.cache.list()),
            )

    asyncio.run(main())
