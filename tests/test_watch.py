"""Watch: every change in order with rising versions, resume, compaction, slow watchers, asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import PassportFactory, passport
from node_registry import (
    AsyncRegistry,
    EventType,
    FakeClock,
    Registry,
    RevisionCompactedError,
    load_settings,
)
from node_registry.registry import AsyncWatch, WatchEvent
from node_registry.selectors import as_selector
from node_registry.server.routes.nodepassports import OBJECT_ENCODING
from node_registry.server.streams import ndjson_frame, stream_events
from node_registry.store import MemoryStore, StoreEvent
from node_registry.store.base import Cancel, ErrorSink, Sink


def _drain(watch: object) -> list[tuple[EventType, str, int]]:
    from node_registry.registry import Watch

    assert isinstance(watch, Watch)
    return [(e.type, e.entry.name, e.resource_version) for e in iter(lambda: watch.next(0), None)]


def test_events_cover_every_write_in_order(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    watch = registry.watch(0)
    a = registry.register(make_passport("a-1")).node_id
    registry.register(make_passport("a-2"))
    registry.update_status(a, current_tasks=3)
    registry.heartbeat(a)  # a lease renewal is not a node event
    registry.register(make_passport("a-1", capabilities=("go",)))
    registry.deregister(a)
    assert _drain(watch) == [
        (EventType.ADDED, "a-1", 1),
        (EventType.ADDED, "a-2", 2),
        (EventType.MODIFIED, "a-1", 3),
        (EventType.MODIFIED, "a-1", 4),
        (EventType.DELETED, "a-1", 5),
    ]


def test_resume_from_a_version_replays_only_later_events(
    registry: Registry, make_passport: PassportFactory
) -> None:
    for i in range(5):
        registry.register(make_passport(f"a-{i}"))
    listed = registry.list_nodes()
    assert listed.resource_version == 5
    registry.register(make_passport("late"))
    with registry.watch(3) as watch:
        assert [v for _, _, v in _drain(watch)] == [4, 5, 6]
    with registry.watch(listed.resource_version) as watch:
        assert _drain(watch) == [(EventType.ADDED, "late", 6)]


def test_watch_from_now_sees_only_new_events(
    registry: Registry, make_passport: PassportFactory
) -> None:
    registry.register(make_passport("old"))
    watch = registry.watch()
    assert watch.next(0) is None
    registry.register(make_passport("new"))
    assert _drain(watch) == [(EventType.ADDED, "new", 2)]


def test_version_older_than_history_is_compacted(clock: FakeClock) -> None:
    registry = Registry(clock=clock, settings=load_settings(watch={"history_size": 3}))
    for i in range(6):
        registry.register(passport(f"a-{i}"))
    with pytest.raises(RevisionCompactedError, match="list again"):
        registry.watch(1)
    with registry.watch(3) as watch:  # events 4..6 are still kept
        assert [v for _, _, v in _drain(watch)] == [4, 5, 6]
    listed = registry.list_nodes()  # the documented recovery: list, then watch
    with registry.watch(listed.resource_version) as watch:
        registry.register(passport("a-6"))
        assert [v for _, _, v in _drain(watch)] == [7]


def test_a_watcher_that_falls_too_far_behind_is_closed(clock: FakeClock) -> None:
    registry = Registry(clock=clock, settings=load_settings(watch={"history_size": 4}))
    watch = registry.watch(0)
    for i in range(6):
        registry.register(passport(f"a-{i}"))
    got = []
    for _ in range(4):
        event = watch.next(0)
        assert event is not None
        got.append(event.resource_version)
    assert got == [1, 2, 3, 4]
    with pytest.raises(RevisionCompactedError, match="fell more than 4 events behind"):
        watch.next(0)


def test_blocking_watch_wakes_on_a_write_from_another_thread(
    registry: Registry, make_passport: PassportFactory
) -> None:
    watch = registry.watch()
    writer = threading.Timer(0.05, lambda: registry.register(make_passport("late")))
    writer.start()
    event = watch.next(timeout=5)
    writer.join()
    assert event is not None
    assert event.entry.name == "late"
    watch.close()
    assert watch.next(0) is None


def test_async_watch_and_async_registry(clock: FakeClock) -> None:
    async def scenario() -> list[tuple[EventType, str, int]]:
        registry = AsyncRegistry(clock=clock, settings=load_settings())
        first = await registry.register(passport("a-1"))
        seen: list[tuple[EventType, str, int]] = []
        async with registry.watch(0) as watch:
            await registry.register(passport("a-2"))
            clock.advance(21)
            await registry.heartbeat((await registry.find_nodes(selector="!missing"))[1].node_id)
            await registry.reconcile()
            await registry.deregister(first.node_id)
            for _ in range(4):
                event = await watch.next(timeout=1)
                assert event is not None
                seen.append((event.type, event.entry.name, event.resource_version))
            assert await watch.next(timeout=0.01) is None
        return seen

    assert asyncio.run(scenario()) == [
        (EventType.ADDED, "a-1", 1),
        (EventType.ADDED, "a-2", 2),
        (EventType.HEALTH_CHANGED, "a-1", 3),
        (EventType.DELETED, "a-1", 4),
    ]


def test_async_watch_from_another_thread_writer(clock: FakeClock) -> None:
    async def scenario() -> str:
        registry = AsyncRegistry(clock=clock, settings=load_settings())
        watch = registry.watch()
        thread = threading.Thread(target=registry.sync.register, args=(passport("threaded"),))
        thread.start()
        event = await watch.next(timeout=5)
        thread.join()
        watch.close()
        assert event is not None
        return event.entry.name

    assert asyncio.run(scenario()) == "threaded"


def test_async_watch_overflow_raises_compacted(clock: FakeClock) -> None:
    # A watcher that fell out of the kept history is dropped at once, not fed what was
    # left: the list it must do next supersedes those events.
    async def scenario() -> None:
        registry = AsyncRegistry(clock=clock, settings=load_settings(watch={"history_size": 2}))
        watch = registry.watch(0)
        for i in range(4):
            await registry.register(passport(f"a-{i}"))
        with pytest.raises(RevisionCompactedError):
            await watch.next(1)
        assert await watch.next(0) is None  # dropped once, then over

    asyncio.run(scenario())


def test_a_version_newer_than_any_issued_is_refused(
    registry: Registry, make_passport: PassportFactory
) -> None:
    # A watcher holding a version of a previous registry's history (memory:// restarted)
    # must list again, not silently follow a different history.
    registry.register(make_passport("a-1"))
    with pytest.raises(RevisionCompactedError, match="newer than the registry's current"):
        registry.watch(5)
    with registry.watch(1) as watch:  # the current version itself is fine
        assert watch.next(0) is None


def test_select_reports_the_version_its_answer_was_taken_at(
    registry: Registry, make_passport: PassportFactory
) -> None:
    registry.register(make_passport("a-1"))
    registry.register(make_passport("a-2", capabilities=("go",)))
    found = registry.select(selector="capability.python")
    assert [e.name for e in found.items] == ["a-1"]
    assert found.resource_version == 2
    with registry.watch(found.resource_version) as watch:
        registry.register(make_passport("a-3"))
        event = watch.next(0)
        assert event is not None
        assert event.entry.name == "a-3"


# -- fan-out: many watchers over one loop ------------------------------------------------------


class CountingStore(MemoryStore):
    """The in-memory store, counting how many sink calls each write costs its writer."""

    def __init__(self) -> None:
        super().__init__()
        self.deliveries = 0

    def watch(self, since: int, sink: Sink, on_error: ErrorSink | None = None) -> Cancel:
        def counted(event: StoreEvent) -> None:
            self.deliveries += 1
            sink(event)

        return super().watch(since, counted, on_error)


def test_the_store_writer_delivers_each_event_once_however_many_watch(clock: FakeClock) -> None:
    async def scenario() -> tuple[int, list[int]]:
        store = CountingStore()
        registry = AsyncRegistry(store, clock=clock, settings=load_settings())
        watches = [registry.watch() for _ in range(200)]
        store.deliveries = 0
        for i in range(3):
            await registry.register(passport(f"a-{i}"))
        got = [len([e async for e in _take(w, 3)]) for w in watches]
        for watch in watches:
            watch.close()
        return store.deliveries, got

    deliveries, got = asyncio.run(scenario())
    assert got == [3] * 200  # every watcher saw every event...
    assert deliveries == 3 * 2  # ...while the writer handed each to two sinks: index, hub


async def _take(watch: AsyncWatch, count: int) -> AsyncIterator[WatchEvent]:
    for _ in range(count):
        event = await watch.next(timeout=1)
        assert event is not None
        yield event


def test_a_slow_watcher_is_dropped_at_its_backlog_while_the_others_carry_on(
    clock: FakeClock,
) -> None:
    async def scenario() -> None:
        settings = load_settings(watch={"backlog_events": 5})
        registry = AsyncRegistry(clock=clock, settings=settings)
        fast, slow = registry.watch(), registry.watch()
        seen = []
        for i in range(10):
            await registry.register(passport(f"a-{i}"))
            await asyncio.sleep(0)  # the hub delivers on the loop
            event = await fast.next(timeout=1)
            assert event is not None
            seen.append(event.entry.name)
        assert seen == [f"a-{i}" for i in range(10)]
        with pytest.raises(RevisionCompactedError, match="more than 5 events behind"):
            await slow.next(timeout=1)
        assert slow.ended
        fast.close()

    asyncio.run(scenario())


def test_watchers_of_one_shape_share_one_encode_of_each_event(clock: FakeClock) -> None:
    encodes: list[int] = []

    def frame(doc: dict[str, Any], resource_version: int) -> bytes:
        encodes.append(resource_version)
        return ndjson_frame(doc, resource_version)

    async def scenario() -> list[int]:
        registry = AsyncRegistry(clock=clock, settings=load_settings())
        streams = [
            stream_events(
                registry.watch(),
                0,
                kind=None,
                selector=as_selector("zone"),
                frame=frame,
                bookmarks=False,
                bookmark_interval=60,
                timeout=None,
                on_open=lambda: None,
                on_close=lambda: None,
                encoding=OBJECT_ENCODING,
            )
            for _ in range(50)
        ]

        async def both_events(stream: AsyncIterator[bytes]) -> int:
            # A frame carries what had arrived; read until both events came.
            seen = 0
            while seen < 2:
                seen += (await anext(stream)).count(b"\n")
            return seen

        reads = [asyncio.ensure_future(both_events(s)) for s in streams]
        await registry.register(passport("a-1", labels={"zone": "z1"}))
        await registry.register(passport("a-2", labels={"zone": "z2"}))
        lines = [await asyncio.wait_for(r, 5) for r in reads]
        for s in streams:
            await s.aclose()
        return lines

    lines = asyncio.run(scenario())
    assert lines == [2] * 50  # each of the 50 streams sent both events
    assert sorted(encodes) == [1, 2]  # and each event was encoded once for all of them
