"""One contract suite (``store.base``) over every store the registry runs on, etcd a real one.

- The sync contract (``Storage``) over ``MemoryStore`` and ``EtcdReplica``: what
  ``Registry`` drives.
- The async contract over ``EtcdStore``, which the replica drives, each test in its own
  event loop (``asyncio.run``).

Each test builds fresh stores (on etcd: a fresh key prefix); every wait is bounded by ``WAIT``.
"""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import passport
from etcd_server import EtcdServer
from node_registry.config import load_settings
from node_registry.errors import (
    ConflictError,
    NotFoundError,
    RevisionCompactedError,
    RevisionConflictError,
    StoreUnavailableError,
)
from node_registry.passport import NodePassport
from node_registry.store import (
    Binding,
    ChangeType,
    MemoryStore,
    NodeRecord,
    Store,
    StoreEvent,
    open_store,
)
from node_registry.store.etcd import EtcdStore

WAIT = 5.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def etcd(shared_etcd: EtcdServer) -> EtcdServer:
    # The session's etcd: every test here keeps to a fresh prefix (one compacts it all,
    # one stops and restarts it, each leaving it running).
    return shared_etcd


MakeAsync = Callable[..., EtcdStore]


@pytest.fixture
def make_async(etcd: EtcdServer) -> MakeAsync:
    """Async stores on the real etcd, each under a fresh prefix (closed by each test)."""

    def make(*, lease_ttl: int = 90) -> EtcdStore:
        return etcd_store(etcd, lease_ttl=lease_ttl)

    return make


def node(name: str, *, uid: str | None = None, phase: str = "Running") -> NodeRecord:
    doc = passport(name, uid=uid, phase=phase)
    return NodeRecord(NodePassport.model_validate(doc), registered_at=T0)


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), 30)

    asyncio.run(bounded())


async def take(events: AsyncGenerator[StoreEvent, None], count: int) -> list[StoreEvent]:
    return [await asyncio.wait_for(anext(events), WAIT) for _ in range(count)]


def test_revisions_rise_and_reads_report_them(make_async: MakeAsync) -> None:
    async def body() -> None:
        store = make_async()
        try:
            base = await store.revision()
            a, b = node("alpha"), node("beta")
            ra = await store.create(a, renewed_at=T0)
            rb = await store.create(b, renewed_at=T0)
            assert base < ra < rb
            assert await store.revision() == rb
            got = await store.get(a.node_id)
            assert got is not None
            assert (got.record, got.revision) == (a, ra)
            assert await store.get(str(uuid.uuid4())) is None
            records, at = await store.list()
            assert at == rb
            assert {k: (v.record, v.revision) for k, v in records.items()} == {
                a.node_id: (a, ra),
                b.node_id: (b, rb),
            }
            await store.ping()
        finally:
            await store.close()

    run(body)


def test_compare_and_swap_conflicts_change_nothing(make_async: MakeAsync) -> None:
    async def body() -> None:
        store = make_async()
        try:
            a = node("alpha")
            r1 = await store.create(a, renewed_at=T0)
            changed = node("alpha", phase="NotReady")
            r2 = await store.update(changed, expected_revision=r1)
            assert r2 > r1
            with pytest.raises(RevisionConflictError):
                await store.update(node("alpha"), expected_revision=r1)
            with pytest.raises(RevisionConflictError):
                await store.delete(a.node_id, expected_revision=r1)
            with pytest.raises(RevisionConflictError):
                await store.create(node("alpha"), renewed_at=T0)
            with pytest.raises(NotFoundError):
                await store.update(node("ghost"), expected_revision=r2)
            got = await store.get(a.node_id)
            assert got is not None
            assert (got.record, got.revision) == (changed, r2)
            assert await store.revision() == r2
        finally:
            await store.close()

    run(body)


def test_names_are_unique_including_renames(make_async: MakeAsync) -> None:
    async def body() -> None:
        store = make_async()
        try:
            await store.create(node("alpha"), renewed_at=T0)
            rb = await store.create(node("beta"), renewed_at=T0)
            with pytest.raises(ConflictError) as caught:
                await store.create(node("alpha", uid=str(uuid.uuid4())), renewed_at=T0)
            assert not isinstance(caught.value, RevisionConflictError)
            beta_uid = node("beta").node_id
            with pytest.raises(ConflictError):
                await store.update(node("alpha", uid=beta_uid), expected_revision=rb)
            before = await store.revision()
            assert before == rb
            renamed = node("gamma", uid=beta_uid)
            rg = await store.update(renamed, expected_revision=rb)
            got = await store.get(beta_uid)
            assert got is not None
            assert (got.record.name, got.revision) == ("gamma", rg)
            # The old name is free again; the new one is held.
            await store.create(node("beta", uid=str(uuid.uuid4())), renewed_at=T0)
            with pytest.raises(ConflictError):
                await store.create(node("gamma", uid=str(uuid.uuid4())), renewed_at=T0)
        finally:
            await store.close()

    run(body)


def test_renew_is_a_lease_and_never_bumps_the_revision(make_async: MakeAsync) -> None:
    async def body() -> None:
        store = make_async()
        try:
            a = node("alpha")
            ra = await store.create(a, renewed_at=datetime.now(UTC))
            now = datetime.now(UTC)
            await store.renew(a.node_id, now)
            seen = await store.renewed_at(a.node_id)
            assert seen is not None
            assert abs(seen - now) <= timedelta(seconds=2)
            assert await store.revision() == ra
            got = await store.get(a.node_id)
            assert got is not None
            assert got.revision == ra
            with pytest.raises(NotFoundError):
                await store.renew(str(uuid.uuid4()), now)
            assert await store.renewed_at(str(uuid.uuid4())) is None
        finally:
            await store.close()

    run(body)


def test_watch_replays_exactly_the_later_events_then_live_ones(make_async: MakeAsync) -> None:
    async def body() -> None:
        store = make_async()
        try:
            base = await store.revision()
            a, b = node("alpha"), node("beta")
            r1 = await store.create(a, renewed_at=T0)
            r2 = await store.create(b, renewed_at=T0)
            a2 = node("alpha", phase="NotReady")
            r3 = await store.update(a2, expected_revision=r1)
            r4 = await store.delete(b.node_id)
            async with aclosing(store.watch(base)) as events:
                got = await take(events, 4)
            assert [(e.type, e.record, e.prev, e.revision) for e in got] == [
                (ChangeType.ADDED, a, None, r1),
                (ChangeType.ADDED, b, None, r2),
                (ChangeType.MODIFIED, a2, a, r3),
                (ChangeType.DELETED, b, b, r4),
            ]
            async with aclosing(store.watch(r2)) as events:
                got = await take(events, 2)
                assert [(e.type, e.revision) for e in got] == [
                    (ChangeType.MODIFIED, r3),
                    (ChangeType.DELETED, r4),
                ]
                c = node("gamma")
                r5 = await store.create(c, renewed_at=T0)
                [live] = await take(events, 1)
                assert (live.type, live.record, live.revision) == (ChangeType.ADDED, c, r5)
        finally:
            await store.close()

    run(body)


def test_watch_from_compacted_or_future_revision_is_refused(make_async: MakeAsync) -> None:
    async def body() -> None:
        store = make_async()
        try:
            base = await store.revision()
            r1 = await store.create(node("alpha"), renewed_at=T0)
            await store.create(node("beta"), renewed_at=T0)
            r3 = await store.create(node("gamma"), renewed_at=T0)
            r4 = await store.create(node("delta"), renewed_at=T0)
            await store.compact(r3)
            for since in (base, r1):
                with pytest.raises(RevisionCompactedError):
                    async with aclosing(store.watch(since)) as events:
                        await take(events, 1)
            with pytest.raises(RevisionCompactedError):
                async with aclosing(store.watch(r4 + 5)) as events:
                    await take(events, 1)
            # From inside the kept history it works.
            async with aclosing(store.watch(r3)) as events:
                [event] = await take(events, 1)
            assert event.revision == r4
        finally:
            await store.close()

    run(body)


def test_delete_removes_record_name_and_lease(make_async: MakeAsync) -> None:
    async def body() -> None:
        store = make_async()
        try:
            a = node("alpha")
            ra = await store.create(a, renewed_at=T0)
            rd = await store.delete(a.node_id, expected_revision=ra)
            assert rd > ra
            assert await store.get(a.node_id) is None
            assert (await store.list())[0] == {}
            assert await store.renewed_at(a.node_id) is None
            with pytest.raises(NotFoundError):
                await store.delete(a.node_id)
            with pytest.raises(NotFoundError):
                await store.renew(a.node_id, T0)
            await store.create(node("alpha", uid=str(uuid.uuid4())), renewed_at=T0)
        finally:
            await store.close()

    run(body)


PROTECTED = {"registry.ai-team.io/quarantined": "true"}


def binding_of(record: NodeRecord, at: datetime = T0) -> Binding:
    return Binding(record.name, record.node_id, PROTECTED, at, PROTECTED)


def test_a_deletion_keeps_a_binding_until_the_name_is_registered_again(
    make_async: MakeAsync,
) -> None:
    async def body() -> None:
        store = make_async()
        try:
            a = node("alpha")
            ra = await store.create(a, renewed_at=T0)
            keep = binding_of(a)
            with pytest.raises(RevisionConflictError):  # a delete that loses keeps nothing
                await store.delete(a.node_id, expected_revision=ra + 1, keep=keep)
            assert await store.binding("alpha") is None
            await store.delete(a.node_id, expected_revision=ra, keep=keep)
            assert await store.binding("alpha") == keep
            assert await store.binding("beta") is None
            # Any uid registering the name again makes the binding moot: it goes.
            other = node("alpha", uid=str(uuid.uuid4()))
            await store.create(other, renewed_at=T0)
            assert await store.binding("alpha") is None
            # A delete without a binding to keep (an operator's) forgets the old one too.
            await store.delete(other.node_id, keep=binding_of(other))
            again = await store.create(other, renewed_at=T0)
            await store.delete(other.node_id, expected_revision=again)
            assert await store.binding("alpha") is None
            # Renaming a node to a bound name frees that name's binding.
            b = node("beta")
            rb = await store.create(b, renewed_at=T0)
            await store.delete(b.node_id, expected_revision=rb, keep=binding_of(b))
            c = node("gamma")
            rc = await store.create(c, renewed_at=T0)
            renamed = NodeRecord(
                NodePassport.model_validate(passport("beta", uid=c.node_id)), registered_at=T0
            )
            await store.update(renamed, expected_revision=rc)
            assert await store.binding("beta") is None
            # forget(): an operator frees a bound name.
            await store.delete(c.node_id, keep=binding_of(renamed))
            assert await store.forget("beta")
            assert not await store.forget("beta")
            assert await store.binding("beta") is None
        finally:
            await store.close()

    run(body)


def test_memory_drops_bindings_past_their_ttl() -> None:
    store = MemoryStore(binding_ttl=60)
    old, new = node("old"), node("new")
    store.create(old, renewed_at=T0)
    store.create(new, renewed_at=T0)
    store.delete(old.node_id, keep=binding_of(old, T0))
    assert store.binding("old") is not None
    store.delete(new.node_id, keep=binding_of(new, T0 + timedelta(seconds=61)))
    assert store.binding("old") is None  # released more than a TTL before the newest
    assert store.binding("new") is not None


# -- the sync contract: MemoryStore and EtcdReplica ------------------------------------------

MakeSync = Callable[..., Store]


@pytest.fixture(params=["memory", "etcd"])
def make_sync(request: pytest.FixtureRequest) -> Iterator[MakeSync]:
    """Sync stores of one kind; on etcd each a replica under a fresh prefix."""
    opened: list[Store] = []

    def make(*, history_size: int = 1_000) -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore(history_size=history_size)
        else:
            server: EtcdServer = request.getfixturevalue("etcd")
            settings = load_settings(
                store={
                    "url": f"etcd://{server.endpoint}/test/{uuid.uuid4().hex}",
                    "etcd_period_seconds": 0.05,
                    "etcd_timeout_seconds": 1,
                },
                watch={"history_size": history_size},
            )
            store = open_store(settings)
        opened.append(store)
        return store

    yield make
    for store in reversed(opened):
        store.close()


class Events:
    """A watch's sink: the events it was handed, taken in order within ``WAIT``."""

    def __init__(self) -> None:
        self._queue: queue.Queue[StoreEvent | RevisionCompactedError] = queue.Queue()

    def __call__(self, item: StoreEvent | RevisionCompactedError) -> None:
        self._queue.put(item)

    def take(self, count: int) -> list[StoreEvent]:
        taken = []
        for _ in range(count):
            item = self._queue.get(timeout=WAIT)
            if isinstance(item, RevisionCompactedError):
                raise item
            taken.append(item)
        return taken


def test_sync_revisions_rise_and_reads_report_them(make_sync: MakeSync) -> None:
    store = make_sync()
    base = store.revision
    a, b = node("alpha"), node("beta")
    ra = store.create(a, renewed_at=T0)
    rb = store.create(b, renewed_at=T0)
    assert base < ra < rb
    assert store.revision == rb
    got = store.get(a.node_id)
    assert got is not None
    assert (got.record, got.revision) == (a, ra)
    assert store.get(str(uuid.uuid4())) is None
    records, at = store.list()
    assert at == rb
    assert {k: (v.record, v.revision) for k, v in records.items()} == {
        a.node_id: (a, ra),
        b.node_id: (b, rb),
    }
    store.ping()


def test_sync_compare_and_swap_conflicts_change_nothing(make_sync: MakeSync) -> None:
    store = make_sync()
    a = node("alpha")
    r1 = store.create(a, renewed_at=T0)
    changed = node("alpha", phase="NotReady")
    r2 = store.update(changed, expected_revision=r1)
    assert r2 > r1
    with pytest.raises(RevisionConflictError):
        store.update(node("alpha"), expected_revision=r1)
    with pytest.raises(RevisionConflictError):
        store.delete(a.node_id, expected_revision=r1)
    with pytest.raises(RevisionConflictError):
        store.create(node("alpha"), renewed_at=T0)
    with pytest.raises(NotFoundError):
        store.update(node("ghost"), expected_revision=r2)
    got = store.get(a.node_id)
    assert got is not None
    assert (got.record, got.revision) == (changed, r2)
    assert store.revision == r2


def test_sync_names_are_unique_including_renames(make_sync: MakeSync) -> None:
    store = make_sync()
    store.create(node("alpha"), renewed_at=T0)
    rb = store.create(node("beta"), renewed_at=T0)
    with pytest.raises(ConflictError) as caught:
        store.create(node("alpha", uid=str(uuid.uuid4())), renewed_at=T0)
    assert not isinstance(caught.value, RevisionConflictError)
    beta_uid = node("beta").node_id
    with pytest.raises(ConflictError):
        store.update(node("alpha", uid=beta_uid), expected_revision=rb)
    assert store.revision == rb
    rg = store.update(node("gamma", uid=beta_uid), expected_revision=rb)
    got = store.get(beta_uid)
    assert got is not None
    assert (got.record.name, got.revision) == ("gamma", rg)
    store.create(node("beta", uid=str(uuid.uuid4())), renewed_at=T0)  # the old name is free
    with pytest.raises(ConflictError):
        store.create(node("gamma", uid=str(uuid.uuid4())), renewed_at=T0)


def test_sync_renew_is_a_lease_and_never_bumps_the_revision(make_sync: MakeSync) -> None:
    store = make_sync()
    a = node("alpha")
    ra = store.create(a, renewed_at=T0)
    later = T0 + timedelta(seconds=7)
    store.renew(a.node_id, later)
    assert store.renewed_at(a.node_id) == later
    assert store.revision == ra
    got = store.get(a.node_id)
    assert got is not None
    assert got.revision == ra
    with pytest.raises(NotFoundError):
        store.renew(str(uuid.uuid4()), later)
    assert store.renewed_at(str(uuid.uuid4())) is None


def test_sync_watch_replays_exactly_the_later_events_then_live_ones(make_sync: MakeSync) -> None:
    store = make_sync()
    base = store.revision
    a, b = node("alpha"), node("beta")
    r1 = store.create(a, renewed_at=T0)
    r2 = store.create(b, renewed_at=T0)
    a2 = node("alpha", phase="NotReady")
    r3 = store.update(a2, expected_revision=r1)
    r4 = store.delete(b.node_id)
    replay = Events()
    cancel = store.watch(base, replay, replay)
    try:
        assert [(e.type, e.record, e.prev, e.revision) for e in replay.take(4)] == [
            (ChangeType.ADDED, a, None, r1),
            (ChangeType.ADDED, b, None, r2),
            (ChangeType.MODIFIED, a2, a, r3),
            (ChangeType.DELETED, b, b, r4),
        ]
    finally:
        cancel()
    later = Events()
    cancel = store.watch(r2, later, later)
    try:
        assert [(e.type, e.revision) for e in later.take(2)] == [
            (ChangeType.MODIFIED, r3),
            (ChangeType.DELETED, r4),
        ]
        c = node("gamma")
        r5 = store.create(c, renewed_at=T0)
        [live] = later.take(1)
        assert (live.type, live.record, live.revision) == (ChangeType.ADDED, c, r5)
    finally:
        cancel()


def test_sync_watch_from_compacted_or_future_revision_is_refused(
    make_sync: MakeSync, request: pytest.FixtureRequest
) -> None:
    store = make_sync(history_size=2)  # past two events back: etcd's history, or none
    base = store.revision
    r1 = store.create(node("alpha"), renewed_at=T0)
    store.create(node("beta"), renewed_at=T0)
    r3 = store.create(node("gamma"), renewed_at=T0)
    r4 = store.create(node("delta"), renewed_at=T0)
    if not isinstance(store, MemoryStore):
        compact(request.getfixturevalue("etcd"), r3)
    for since in (base, r1, r4 + 5):
        with pytest.raises(RevisionCompactedError):
            store.check_watchable(since)
        with pytest.raises(RevisionCompactedError):
            store.watch(since, Events())  # without an error sink: raised right away
    events = Events()
    cancel = store.watch(r3, events, events)  # from inside the kept history it works
    try:
        [event] = events.take(1)
        assert event.revision == r4
    finally:
        cancel()


def compact(server: EtcdServer, revision: int) -> None:
    """Compact the whole etcd (every prefix) up to ``revision``."""
    store = etcd_store(server)

    async def body() -> None:
        try:
            await store.compact(revision)
        finally:
            await store.close()

    run(body)


def test_sync_delete_removes_record_name_and_lease(make_sync: MakeSync) -> None:
    store = make_sync()
    a = node("alpha")
    ra = store.create(a, renewed_at=T0)
    rd = store.delete(a.node_id, expected_revision=ra)
    assert rd > ra
    assert store.get(a.node_id) is None
    assert store.list()[0] == {}
    assert store.renewed_at(a.node_id) is None
    with pytest.raises(NotFoundError):
        store.delete(a.node_id)
    with pytest.raises(NotFoundError):
        store.renew(a.node_id, T0)
    store.create(node("alpha", uid=str(uuid.uuid4())), renewed_at=T0)


def test_sync_a_deletion_keeps_a_binding_until_the_name_is_registered_again(
    make_sync: MakeSync,
) -> None:
    store = make_sync()
    a = node("alpha")
    ra = store.create(a, renewed_at=T0)
    keep = binding_of(a)
    with pytest.raises(RevisionConflictError):  # a delete that loses keeps nothing
        store.delete(a.node_id, expected_revision=ra + 1, keep=keep)
    assert store.binding("alpha") is None
    store.delete(a.node_id, expected_revision=ra, keep=keep)
    assert store.binding("alpha") == keep
    assert store.binding("beta") is None
    other = node("alpha", uid=str(uuid.uuid4()))  # any uid taking the name again: it goes
    store.create(other, renewed_at=T0)
    assert store.binding("alpha") is None
    store.delete(other.node_id, keep=binding_of(other))
    again = store.create(other, renewed_at=T0)
    store.delete(other.node_id, expected_revision=again)  # a delete without keep forgets
    assert store.binding("alpha") is None
    b, c = node("beta"), node("gamma")
    rb = store.create(b, renewed_at=T0)
    store.delete(b.node_id, expected_revision=rb, keep=binding_of(b))
    rc = store.create(c, renewed_at=T0)
    renamed = NodeRecord(
        NodePassport.model_validate(passport("beta", uid=c.node_id)), registered_at=T0
    )
    store.update(renamed, expected_revision=rc)  # renaming to a bound name frees it
    assert store.binding("beta") is None
    store.delete(c.node_id, keep=binding_of(renamed))
    assert store.forget("beta")
    assert not store.forget("beta")
    assert store.binding("beta") is None


# -- etcd only ------------------------------------------------------------------------------


def etcd_store(server: EtcdServer, *, prefix: str | None = None, **kwargs: Any) -> EtcdStore:
    prefix = prefix or f"/test/{uuid.uuid4().hex}"
    return EtcdStore(server.endpoint, prefix=prefix, timeout=2.0, **kwargs)


def test_etcd_data_is_json_under_the_seed_layout(etcd: EtcdServer) -> None:
    store = etcd_store(etcd)
    a = node("alpha")

    async def body() -> None:
        try:
            await store.create(a, renewed_at=T0)
        finally:
            await store.close()

    run(body)
    prefix = store._prefix
    etcdctl = str(Path(etcd.binary).with_name("etcdctl"))
    out = subprocess.run(
        [etcdctl, f"--endpoints={etcd.endpoint}", "get", "--prefix", prefix],
        capture_output=True,
        check=True,
        timeout=WAIT,
        text=True,
    ).stdout.splitlines()
    pairs = dict(zip(out[::2], out[1::2], strict=True))
    assert set(pairs) == {
        f"{prefix}/nodes/{a.node_id}",
        f"{prefix}/names/alpha",
        f"{prefix}/leases/{a.node_id}",
    }
    assert NodeRecord.from_dict(json.loads(pairs[f"{prefix}/nodes/{a.node_id}"])) == a
    assert pairs[f"{prefix}/names/alpha"] == a.node_id
    assert json.loads(pairs[f"{prefix}/leases/{a.node_id}"])["ttlSeconds"] == 90


def test_etcd_bindings_are_shared_and_live_on_a_lease_of_their_own(etcd: EtcdServer) -> None:
    prefix = f"/test/{uuid.uuid4().hex}"
    one = etcd_store(etcd, prefix=prefix, binding_ttl=3600)
    two = etcd_store(etcd, prefix=prefix)

    async def lease_left(name: str) -> int:
        kv = await one._client.get(f"{prefix}/bindings/{name}".encode())
        if kv is None:
            return -1
        return int((await one._client.get_lease_info(int(kv.lease))).TTL)

    async def body() -> None:
        try:
            a, b = node("alpha"), node("beta")
            ra = await one.create(a, renewed_at=T0)
            await one.delete(a.node_id, expected_revision=ra, keep=binding_of(a))
            assert await two.binding("alpha") == binding_of(a)  # another replica sees it
            assert 3500 < await lease_left("alpha") <= 3600
            kv = await one._client.get(f"{prefix}/bindings/alpha".encode())
            await two.create(a, renewed_at=T0)
            assert await one.binding("alpha") is None
            # The binding's lease went with it, rather than run out in an hour.
            assert (await one._client.get_lease_info(int(kv.lease))).TTL == -1
            rb = await one.create(b, renewed_at=T0)
            await one.delete(b.node_id, expected_revision=rb, keep=binding_of(b))
            assert await two.forget("beta")
            assert await one.binding("beta") is None
        finally:
            await one.close()
            await two.close()

    run(body)


def test_etcd_renewed_at_follows_the_lease_and_regrants_after_expiry(etcd: EtcdServer) -> None:
    async def body() -> None:
        store = etcd_store(etcd, lease_ttl=2)
        try:
            a = node("alpha")
            ra = await store.create(a, renewed_at=datetime.now(UTC))
            await asyncio.sleep(3.2)  # the 2 s lease runs out
            seen = await store.renewed_at(a.node_id)
            assert seen is not None
            assert datetime.now(UTC) - seen >= timedelta(seconds=2)
            await store.renew(a.node_id, datetime.now(UTC))  # grants a new lease
            seen = await store.renewed_at(a.node_id)
            assert seen is not None
            assert datetime.now(UTC) - seen <= timedelta(seconds=1.5)
            got = await store.get(a.node_id)
            assert got is not None
            assert got.revision == ra  # the record was not rewritten
        finally:
            await store.close()

    run(body)


def test_etcd_down_is_unavailable_quickly_and_restart_loses_nothing(etcd: EtcdServer) -> None:
    store = etcd_store(etcd)
    a = node("alpha")
    state: dict[str, Any] = {}

    async def before() -> None:
        state["ra"] = await store.create(a, renewed_at=T0)
        state["events"] = store.watch(state["ra"])
        etcd.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=etcd.endpoint):
            await store.get(a.node_id)
        with pytest.raises(StoreUnavailableError):
            await store.ping()
        with pytest.raises(StoreUnavailableError):
            await store.create(node("beta"), renewed_at=T0)
        assert time.monotonic() - started < 3 * 2.0 + 1
        events = state["events"]
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(anext(events), WAIT)
        await events.aclose()

        etcd.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                await store.ping()
                break
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        got = await store.get(a.node_id)
        assert got is not None
        assert (got.record, got.revision) == (a, state["ra"])
        assert await store.renewed_at(a.node_id) is not None
        rb = await store.create(node("beta"), renewed_at=T0)
        assert rb > state["ra"]
        async with aclosing(store.watch(state["ra"])) as events:
            [event] = await take(events, 1)
        assert event.revision == rb
        await store.close()

    try:
        run(before)
    finally:
        if etcd.process is None:
            etcd.start()
