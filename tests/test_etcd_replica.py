"""One replica (``EtcdReplica``) on a real etcd: what its watch decodes, when its view is up.

The registry-level behaviour on etcd is in test_etcd_registry.py; these look at the
replica's own parts (``store.etcd.cache``, ``store.etcd.view``) from outside.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from conftest import passport
from etcd_server import EtcdServer
from node_registry.errors import RevisionCompactedError, StoreUnavailableError
from node_registry.passport import NodePassport
from node_registry.store import NodeRecord, StoreEvent
from node_registry.store.etcd import EtcdReplica, EtcdStore
from node_registry.store.etcd import nodes as etcd_nodes
from node_registry.store.etcd.nodes import Held

WAIT = 5.0


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


def record(name: str) -> NodeRecord:
    return NodeRecord(
        passport=NodePassport.model_validate(passport(name)), registered_at=datetime.now(UTC)
    )


def view_current(replica: EtcdReplica) -> bool:
    try:
        replica.check_view()
    except StoreUnavailableError:
        return False
    return True


@pytest.fixture
def feed_decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The record values the replicas' node feeds decode (not their reads from etcd)."""
    decoded: list[bytes] = []
    real = etcd_nodes._try_decode

    def counting(value: bytes) -> tuple[NodeRecord | None, str]:
        task = asyncio.current_task()
        if task is not None and task.get_name() == "etcd-feed":
            decoded.append(bytes(value))
        return real(value)

    monkeypatch.setattr(etcd_nodes, "_try_decode", counting)
    return decoded


@pytest.fixture
def prefix() -> str:
    return f"/test/{uuid.uuid4().hex}"


@pytest.fixture
def replica(shared_etcd: EtcdServer, prefix: str) -> Iterator[EtcdReplica]:
    store = EtcdStore(shared_etcd.endpoint, prefix=prefix, timeout=2)
    replica = EtcdReplica(store, history_size=100, seat_ttl=5, period=0.05)
    yield replica
    replica.close()


def test_own_writes_come_back_on_the_watch_without_a_decode(
    replica: EtcdReplica, feed_decodes: list[bytes]
) -> None:
    written = [record(f"own-{i}") for i in range(20)]
    for each in written:
        replica.create(each, renewed_at=datetime.now(UTC))
    held = replica.list()[0]
    # A write returns once the feed applied it: the feed took the record as written.
    assert all(held[each.node_id].record is each for each in written)
    for each in written:
        current = held[each.node_id]
        changed = replace(each, generation=2)
        replica.update(changed, expected_revision=current.revision)
    held = replica.list()[0]
    assert all(held[each.node_id].record.generation == 2 for each in written)
    # Neither the new values nor the previous ones (the cache holds them) were decoded.
    assert feed_decodes == []


def test_writes_of_another_replica_are_decoded_once(
    replica: EtcdReplica, feed_decodes: list[bytes], shared_etcd: EtcdServer, prefix: str
) -> None:
    ours = record("ours")
    replica.create(ours, renewed_at=datetime.now(UTC))

    async def elsewhere() -> tuple[NodeRecord, NodeRecord]:
        other = EtcdStore(shared_etcd.endpoint, prefix=prefix, timeout=2)
        try:
            theirs = record("theirs")
            await other.create(theirs, renewed_at=datetime.now(UTC))
            current = await other.get(ours.node_id)
            assert current is not None
            changed = replace(ours, generation=5)
            await other.update(changed, expected_revision=current.revision)
            return theirs, changed
        finally:
            await other.close()

    theirs, changed = asyncio.run(elsewhere())

    def applied() -> bool:
        held = replica.list()[0]
        return theirs.node_id in held and held[ours.node_id].record.generation == 5

    eventually(applied, "the other replica's writes reached this one")
    held = replica.list()[0]
    assert held[theirs.node_id].record == theirs
    assert held[ours.node_id].record == changed
    # One decode per write of the other's: its new value (the previous one is held here).
    assert len(feed_decodes) == 2


def test_a_watch_that_fails_to_open_never_shows_the_view_current(
    shared_etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After a broken feed, a watch whose opening fails (etcd back for a ping, not yet for
    a watch) keeps the view down: it comes up once, when a watch really is open."""
    store = EtcdStore(shared_etcd.endpoint, prefix=prefix, timeout=2)
    real_watch = store.watch
    opens: list[int] = []
    started: list[EtcdReplica] = []

    async def flaky_watch(
        since: int, opened: Callable[[], None] | None = None, held: Held | None = None
    ) -> AsyncGenerator[StoreEvent, None]:
        opens.append(since)
        if len(opens) == 1:  # the first stream opens, and breaks once the view is current
            if opened is not None:
                opened()
            while not (started and view_current(started[0])):
                await asyncio.sleep(0.01)
            raise StoreUnavailableError("injected: the watch broke")
        if len(opens) <= 4:  # the next three fail while the stream opens
            raise StoreUnavailableError("injected: the watch did not open")
        async for event in real_watch(since, opened, held):
            yield event

    store.watch = flaky_watch  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="node_registry"):
        replica = EtcdReplica(store, history_size=100, seat_ttl=5, period=0.05)
        started.append(replica)
        try:
            eventually(lambda: len(opens) >= 5 and view_current(replica), "the view is back")
        finally:
            replica.close()
    recoveries = [r for r in caplog.records if "view current" in r.getMessage()]
    assert len(recoveries) == 1, [r.getMessage() for r in caplog.records]
    feed_lines = [r.getMessage() for r in caplog.records if "etcd feed" in r.getMessage()]
    assert feed_lines[0].endswith("etcd feed down (injected: the watch broke)"), feed_lines
    assert feed_lines[-1].endswith("etcd feed up"), feed_lines


def test_a_keepalive_on_a_stream_that_ended_is_etcd_unreachable_then_works_again(
    shared_etcd: EtcdServer, prefix: str
) -> None:
    """grpc refuses a write on a stream that ended before its reader noticed (etcd went
    away): that must be ``StoreUnavailableError``, which the ticks and the lease keepalives
    handle (a tick's part down, a keepalive due again next period), not a bare asyncio
    error that they log as a bug; and the next renewal opens a new stream."""

    async def scenario() -> None:
        store = EtcdStore(shared_etcd.endpoint, prefix=prefix, timeout=2)
        try:
            lease = await store.grant(5)
            assert await store.keep(lease)
            # The stream ends now; its reader has not run since, so nothing noticed yet.
            store._keepalives._call.cancel()
            with pytest.raises(StoreUnavailableError, match="keepalive stream ended"):
                await store.keep(lease)
            assert await store.keep(lease)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_digest_of_more_renewals_than_one_etcd_request_holds_is_published(
    shared_etcd: EtcdServer, prefix: str
) -> None:
    # 60,000 renewals in one period (a batched burst; a replica catching up after an
    # outage) are ~3 MiB of digest: twice etcd's default request limit (1.5 MiB).
    at = datetime.now(UTC).replace(microsecond=0)
    renewed = {str(uuid.UUID(int=i + 1)): at for i in range(60_000)}

    async def scenario() -> tuple[dict[str, datetime], int]:
        store = EtcdStore(shared_etcd.endpoint, prefix=prefix, timeout=5)
        try:
            lease = await store.grant(30)
            await store.publish_renewals("replica-a", renewed, lease)
            return await store.renewals()
        finally:
            await store.close()

    got, _ = asyncio.run(scenario())
    assert got == renewed


def test_a_watch_from_a_compacted_revision_is_refused_before_a_stream_opens(
    shared_etcd: EtcdServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # etcd's own notice for such a watch now and then never came through aetcd (the store
    # contract's test waited for it in CI), so the store asks etcd before it watches.
    opened: list[str] = []

    async def scenario() -> None:
        store = EtcdStore(shared_etcd.endpoint, prefix=prefix, timeout=5)
        real = store._stream

        def counting(action: str, *args: Any, **kwargs: Any) -> Any:
            opened.append(action)
            return real(action, *args, **kwargs)

        monkeypatch.setattr(store, "_stream", counting)
        try:
            first = await store.create(record("alpha"), renewed_at=datetime.now(UTC))
            last = await store.create(record("beta"), renewed_at=datetime.now(UTC))
            await store.compact(last)
            with pytest.raises(RevisionCompactedError, match="compacted"):
                async with aclosing(store.watch(first - 1)) as events:
                    await asyncio.wait_for(anext(events), WAIT)
            assert opened == []
            await store.create(record("gamma"), renewed_at=datetime.now(UTC))
            async with aclosing(store.watch(last)) as events:  # inside the kept history
                event = await asyncio.wait_for(anext(events), WAIT)
            assert event.record is not None
            assert event.record.name == "gamma"
            assert opened == ["watch"]
        finally:
            await store.close()

    asyncio.run(scenario())
