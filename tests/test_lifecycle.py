"""The lifecycle table of DESIGN.md on a fake clock: health, phase, Ready, removal, protection."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import BACKENDS, MakeRegistry, PassportFactory, passport
from node_registry import (
    AsyncRegistry,
    ConditionStatus,
    EventType,
    FakeClock,
    HealthState,
    MemoryStore,
    NotFoundError,
    Phase,
    Registry,
    load_settings,
)
from node_registry.clock import steady
from node_registry.passport import load_passport
from node_registry.registry.entry import RegistryCondition
from node_registry.registry.health import HealthPolicy
from node_registry.registry.lifecycle import (
    MASS_FAILURE_PROTECTION,
    Lifecycle,
    Verdict,
    judge,
    unsettled,
)
from node_registry.store import NodeRecord, Versioned

ALIVE, NOT_READY, OFFLINE = HealthState.ALIVE, HealthState.NOT_READY, HealthState.OFFLINE


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every lifecycle test here runs on memory and on a real etcd."""
    return str(request.param)


@pytest.mark.parametrize(
    ("silent", "expected"),
    [
        (0, ALIVE),
        (19.999, ALIVE),
        (20, NOT_READY),
        (29.999, NOT_READY),
        (30, OFFLINE),
        (89.999, OFFLINE),
    ],
)
def test_health_is_computed_on_read_without_a_controller(
    registry: Registry,
    clock: FakeClock,
    make_passport: PassportFactory,
    silent: float,
    expected: HealthState,
) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    clock.advance(silent)
    assert registry.get(node).health_state is expected
    assert [e.health_state for e in registry.find_nodes()] == [expected]


def _phase_and_ready(registry: Registry, node: str) -> tuple[Phase, ConditionStatus | None]:
    status = registry.get(node).passport.status
    ready = status.condition("Ready")
    return status.phase, ready.status if ready else None


def test_controller_records_each_transition_and_emits_events(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    watch = registry.watch(registry.resource_version)

    clock.advance(20)
    registry.reconcile()
    assert _phase_and_ready(registry, node) == (Phase.NOT_READY, ConditionStatus.UNKNOWN)
    event = watch.next(0)
    assert event is not None
    assert event.type is EventType.HEALTH_CHANGED
    assert event.previous_health is ALIVE
    assert event.entry.health_state is NOT_READY
    ready = event.entry.passport.status.condition("Ready")
    assert ready is not None
    assert ready.reason == "NodeStatusUnknown"
    assert ready.last_transition_time == clock.now()

    clock.advance(10)
    registry.reconcile()
    assert _phase_and_ready(registry, node) == (Phase.OFFLINE, ConditionStatus.UNKNOWN)
    event = watch.next(0)
    assert event is not None
    assert (event.type, event.previous_health, event.entry.health_state) == (
        EventType.HEALTH_CHANGED,
        NOT_READY,
        OFFLINE,
    )
    # Ready stayed Unknown, so its transition time is the NotReady one.
    offline_ready = event.entry.passport.status.condition("Ready")
    assert offline_ready is not None
    assert offline_ready.last_transition_time == ready.last_transition_time

    registry.reconcile()  # nothing changed: no write, no event
    assert watch.next(0) is None

    clock.advance(59.9)
    registry.reconcile()
    assert registry.get(node).health_state is OFFLINE
    clock.advance(0.1)  # ttl + grace_period since the last heartbeat
    registry.reconcile()
    with pytest.raises(NotFoundError):
        registry.get(node)
    event = watch.next(0)
    assert event is not None
    assert event.type is EventType.DELETED


def test_a_heartbeat_is_local_only_for_a_node_recorded_alive(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    clock.advance(5)
    assert registry.heartbeat_if_local(node) == clock.now()  # renewed, in memory
    assert registry.get(node).last_seen == clock.now()
    clock.advance(21)
    registry.reconcile()  # recorded NotReady: its recovery is a store write
    assert registry.heartbeat_if_local(node) is None
    assert registry.get(node).health_state is NOT_READY  # nothing renewed
    assert registry.heartbeat_if_local("no-such-node") is None


@pytest.mark.parametrize("silent", [21, 31, 85])
def test_heartbeat_at_any_point_restores_alive_running(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory, silent: float
) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    for _ in range(int(silent)):
        clock.advance(1)
        registry.reconcile()
    assert registry.get(node).health_state is not ALIVE
    watch = registry.watch(registry.resource_version)
    registry.heartbeat(node)
    entry = registry.get(node)
    assert entry.health_state is ALIVE
    # The node's own status shows again: it reported Running and no Ready condition.
    assert _phase_and_ready(registry, node) == (Phase.RUNNING, None)
    assert registry.find_nodes(only_healthy=True) == [entry]
    event = watch.next(0)
    assert event is not None
    assert event.type is EventType.HEALTH_CHANGED
    assert event.entry.health_state is ALIVE
    registry.heartbeat(node)  # already recorded alive: no second write
    assert watch.next(0) is None


def test_a_controller_jump_records_offline_before_removal(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    registry.register(make_passport("coder-01"))
    watch = registry.watch(registry.resource_version)
    clock.advance(1000)
    registry.reconcile()
    kinds = [(e.type, e.entry.health_state) for e in iter(lambda: watch.next(0), None)]
    assert kinds == [(EventType.HEALTH_CHANGED, OFFLINE), (EventType.DELETED, OFFLINE)]


def _fleet(registry: Registry, count: int) -> list[str]:
    return [registry.register(passport(f"agent-{i:03d}")).node_id for i in range(count)]


def test_mass_failure_protection_keeps_nodes_and_releases(
    registry: Registry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = _fleet(registry, 10)
    clock.advance(15)
    for node in nodes[:3]:  # 3 of 10 keep heartbeating: 70 % silent at once
        registry.heartbeat(node)
    clock.advance(16)  # the silent 7 are past the TTL
    with caplog.at_level(logging.WARNING, logger="node_registry"):
        registry.reconcile()
    assert registry.protection_active
    assert "mass-failure protection engaged" in caplog.text
    (condition,) = registry.conditions()
    assert condition.type == "MassFailureProtection"
    assert condition.status is True
    assert condition.reason == "MassHeartbeatLoss"
    assert "7 of 10" in condition.message
    silent = [registry.get(n) for n in nodes[3:]]
    assert {e.health_state for e in silent} == {NOT_READY}
    assert {e.passport.status.phase for e in silent} == {Phase.NOT_READY}

    clock.advance(500)  # far past ttl + grace: still nothing removed or marked Offline
    for node in nodes[:3]:
        registry.heartbeat(node)
    registry.reconcile()
    assert len(registry.list_nodes().items) == 10
    assert {registry.get(n).health_state for n in nodes[3:]} == {NOT_READY}

    for node in nodes[3:8]:  # heartbeats return for most: 2 of 10 silent
        registry.heartbeat(node)
    with caplog.at_level(logging.WARNING, logger="node_registry"):
        registry.reconcile()
    assert not registry.protection_active
    assert "released" in caplog.text
    # Normal rules again: the two still silent are long past ttl + grace, so they go.
    assert sorted(e.node_id for e in registry.list_nodes().items) == sorted(nodes[:8])


def test_few_failures_are_not_mass_failures(registry: Registry, clock: FakeClock) -> None:
    nodes = _fleet(registry, 4)
    clock.advance(25)
    for node in nodes[2:]:
        registry.heartbeat(node)
    clock.advance(6)
    registry.reconcile()  # 2 of 4 silent: below min_unhealthy_nodes (3)
    assert not registry.protection_active
    assert {registry.get(n).health_state for n in nodes[:2]} == {OFFLINE}


def test_nodes_already_offline_do_not_count_toward_protection(
    registry: Registry, clock: FakeClock
) -> None:
    dead = _fleet(registry, 2)
    clock.advance(31)
    registry.reconcile()
    assert {registry.get(n).health_state for n in dead} == {OFFLINE}
    alive = [registry.register(passport(f"fresh-{i}")).node_id for i in range(4)]
    clock.advance(10)
    for node in alive:
        registry.heartbeat(node)
    registry.reconcile()
    assert not registry.protection_active


def test_protection_can_be_disabled(make_registry: MakeRegistry, clock: FakeClock) -> None:
    registry = make_registry(protection={"enabled": False})
    nodes = _fleet(registry, 5)
    clock.advance(31)
    registry.reconcile()
    assert not registry.protection_active
    assert {registry.get(n).health_state for n in nodes} == {OFFLINE}


def test_entries_restored_from_a_store_count_as_just_seen(clock: FakeClock) -> None:
    # Memory only: one MemoryStore outlives its registry here; etcd restarts are replicas.
    store = MemoryStore()
    first = Registry(store, clock=clock, settings=load_settings())
    node = first.register(passport("coder-01")).node_id
    first.close()
    clock.advance(3600)  # the registry was down for an hour
    second = Registry(store, clock=clock, settings=load_settings())
    assert second.get(node).health_state is ALIVE
    second.reconcile()
    assert second.get(node).passport.status.phase is Phase.RUNNING
    clock.advance(20)
    assert second.get(node).health_state is NOT_READY
    clock.advance(10)
    second.reconcile()
    assert second.get(node).health_state is OFFLINE


def test_pending_nodes_are_alive_but_not_schedulable(
    registry: Registry, make_passport: PassportFactory
) -> None:
    node = registry.register(make_passport("coder-01", phase="Pending")).node_id
    assert registry.get(node).health_state is ALIVE
    assert registry.find_nodes(only_healthy=True) == []
    registry.update_status(node, phase="Running")
    assert [e.node_id for e in registry.find_nodes(only_healthy=True)] == [node]


def test_controller_thread_runs_passes(make_registry: MakeRegistry, clock: FakeClock) -> None:
    with make_registry(controller={"period_seconds": 0.01}) as registry:
        node = registry.register(passport("coder-01")).node_id
        clock.advance(25)
        deadline = time.monotonic() + 5
        while registry.get(node).passport.status.phase is not Phase.NOT_READY:
            assert time.monotonic() < deadline, "the controller thread never recorded NotReady"
            time.sleep(0.01)
    assert not any(t.name == "node-registry-controller" for t in threading.enumerate())


def test_record_round_trips_as_json(registry: Registry, make_passport: PassportFactory) -> None:
    entry = registry.register(make_passport("coder-01", resources={"memory": ".5Gi"}))
    stored = NodeRecord(entry.passport, entry.registered_at)
    again = NodeRecord.from_dict(stored.to_dict())
    assert again == stored
    assert again.labels["memory"] == "0.5Gi"


def test_a_revived_node_keeps_its_own_ready_false(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    # Kubernetes' controller only ever sets Ready=Unknown; only the node says True or False.
    node = registry.register(make_passport("coder-01")).node_id
    registry.update_status(node, conditions=[{"type": "Ready", "status": "False"}])
    clock.advance(25)
    registry.reconcile()
    assert _phase_and_ready(registry, node) == (Phase.NOT_READY, ConditionStatus.UNKNOWN)
    registry.heartbeat(node)
    assert _phase_and_ready(registry, node) == (Phase.RUNNING, ConditionStatus.FALSE)
    assert registry.find_nodes(only_healthy=True) == []


def test_a_status_report_revives_a_node_with_its_own_phase(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    clock.advance(25)
    registry.reconcile()
    registry.update_status(node, current_tasks=1)  # no phase: the node's Running stands
    registry.reconcile()
    entry = registry.get(node)
    assert entry.health_state is ALIVE
    assert entry.passport.status.phase is Phase.RUNNING
    assert [e.node_id for e in registry.find_nodes(only_healthy=True)] == [node]


def test_the_stored_passport_is_never_rewritten_by_the_controller(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    doc = make_passport("coder-01")
    node = registry.register(doc).node_id
    clock.advance(31)
    registry.reconcile()
    store = registry._store  # the stored document, not the reader's view
    stored = store.get(node)
    assert stored is not None
    assert stored.record.health is OFFLINE
    assert stored.record.passport.status.phase is Phase.RUNNING
    assert registry.get(node).passport.status.phase is Phase.OFFLINE


# -- self-preservation: the registry's own saturation ------------------------------------------


@pytest.mark.parametrize("saturated", [True, False])
def test_no_node_is_marked_not_ready_for_silence_while_the_registry_was_saturated(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory, saturated: bool
) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    clock.advance(15)
    if saturated:
        registry.report_saturation()  # e.g. it shed this node's renewal with a 429
    clock.advance(10)  # 25 s since the last renewal the registry heard: past 20 s
    registry.reconcile()
    expected = ALIVE if saturated else NOT_READY
    assert registry.get(node).health_state is expected
    assert _phase_and_ready(registry, node)[0] is (Phase.RUNNING if saturated else Phase.NOT_READY)


def test_saturation_only_spares_the_time_it_lasted(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    clock.advance(15)
    registry.report_saturation()
    clock.advance(20)  # silent for a whole not-ready window after the saturation ended
    registry.reconcile()
    assert registry.get(node).health_state is NOT_READY


def test_a_node_recorded_silent_before_the_saturation_is_not_revived_by_it(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    clock.advance(25)
    registry.reconcile()
    assert registry.get(node).health_state is NOT_READY
    registry.report_saturation()
    registry.reconcile()
    assert registry.get(node).health_state is NOT_READY


def test_a_lagging_event_loop_counts_as_saturation(clock: FakeClock) -> None:
    # Memory only: it measures the event loop's lag, not anything the store does.
    async def scenario() -> bool:
        settings = load_settings(controller={"saturation_lag_seconds": 0.05})
        registry = AsyncRegistry(clock=clock, settings=settings)
        async with registry:
            await asyncio.sleep(0.1)
            assert registry.sync.saturated_at is None  # an idle loop is on time
            time.sleep(0.3)  # the loop held up, as by a flood of requests
            await asyncio.sleep(0.1)
            return registry.sync.saturated_at is not None

    assert asyncio.run(scenario())


# -- the wall clock stepped (issue #10, item 11) -----------------------------------------------


def test_a_forward_step_of_the_wall_clock_judges_no_node(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    clock.advance(5)
    registry.heartbeat(node)
    clock.step(3600)  # NTP steps the wall clock an hour ahead: no time passed for nodes
    assert registry.get(node).health_state is ALIVE
    registry.reconcile()
    assert registry.get(node).passport.status.phase is Phase.RUNNING
    clock.advance(20)  # real silence still counts, on monotonic time
    assert registry.get(node).health_state is NOT_READY


def test_a_backward_step_of_the_wall_clock_hides_no_silence_and_no_renewal(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    silent = registry.register(make_passport("coder-01")).node_id
    renewing = registry.register(make_passport("coder-02")).node_id
    clock.advance(5)
    clock.step(-3600)  # an hour back: the silent node must not look renewed for an hour
    clock.advance(16)
    registry.heartbeat(renewing)  # stamped an hour "earlier" by the wall clock
    assert registry.get(silent).health_state is NOT_READY  # 21 s of silence
    clock.advance(19)
    assert registry.get(renewing).health_state is ALIVE  # renewed 19 s ago
    registry.reconcile()
    assert registry.get(renewing).passport.status.phase is Phase.RUNNING
    assert registry.get(silent).passport.status.phase is Phase.OFFLINE  # 40 s of silence


# -- the lifecycle on coordination alone (issue #13, item 1) -----------------------------------


class _Follower:
    """A ``Coordination`` of a registry that does not hold the controller's seat."""

    leading = False
    resumed_at = None

    def __init__(self, shared: dict[str, dict[str, Any]]) -> None:
        self.shared = shared
        self.published: list[str] = []

    def check_view(self) -> None:
        """Current: nothing here is remote."""

    def publish_state(self, key: str, doc: dict[str, Any]) -> None:
        self.published.append(key)

    def shared_state(self, key: str) -> dict[str, Any] | None:
        return self.shared.get(key)


def test_the_lifecycle_takes_coordination_apart_from_storage(clock: FakeClock) -> None:
    settings = load_settings()
    storage = MemoryStore()  # only its renewals are read: the writes go through callbacks
    engaged = RegistryCondition(
        MASS_FAILURE_PROTECTION, True, "MassHeartbeatLoss", "7 of 10", clock.now()
    )
    follower = _Follower({MASS_FAILURE_PROTECTION: engaged.to_dict()})
    lifecycle = Lifecycle(
        follower,
        storage.renewed_at,
        settings,
        steady(clock),
        HealthPolicy.from_settings(settings.heartbeat),
    )
    assert lifecycle.protection_now() == engaged  # what the controller elsewhere decided
    lifecycle.reconcile([], record_health=_unused, remove=_unused)
    assert follower.published == []  # a pass run on a follower never overrules the leader


def _unused(*args: object) -> Any:
    raise AssertionError(f"no write expected: {args}")


class _CountingLifecycle(Lifecycle):
    """Counts the nodes judged in full (``judge``'s verdicts)."""

    judged = 0

    def judge(self, now: datetime, *, controller: bool = False) -> Callable[[NodeRecord], Verdict]:
        verdict = super().judge(now, controller=controller)

        def counted(record: NodeRecord) -> Verdict:
            self.judged += 1
            return verdict(record)

        return counted


def test_a_pass_judges_in_full_only_the_nodes_it_may_change(clock: FakeClock) -> None:
    # At 100,000 nodes a full verdict per node cost the event loop 150 ms every pass; the
    # pass skips the nodes recorded ALIVE and heard from since not_ready_after.
    settings = load_settings()
    store = MemoryStore()
    lifecycle = _CountingLifecycle(
        store,
        store.renewed_at,
        settings,
        steady(clock),
        HealthPolicy.from_settings(settings.heartbeat),
    )
    snapshot = []
    for i in range(20):
        record = NodeRecord(load_passport(passport(f"node-{i:02d}")), clock.now())
        snapshot.append(Versioned(record, store.create(record, renewed_at=clock.now())))
    clock.advance(25)  # past not_ready_after (20 s) since start-up and registration
    for versioned in snapshot[2:]:
        store.renew(versioned.record.node_id, clock.now())
    recorded: list[str] = []

    def record_health(node_id: str, fenced: bool) -> Versioned:
        recorded.append(node_id)
        return next(v for v in snapshot if v.record.node_id == node_id)

    lifecycle.reconcile(snapshot, record_health=record_health, remove=_unused)
    assert recorded == [v.record.node_id for v in snapshot[:2]]  # the two silent ones
    assert lifecycle.judged == 2


_RECORDS = [
    NodeRecord(load_passport(passport(f"node-{i}")), datetime(2026, 1, 1, tzinfo=UTC))
    for i in range(6)
]
#: Seconds from now around the table's edges (NotReady at -20, Offline at -30) and ahead.
_SECONDS = st.sampled_from([-31, -30, -29, -21, -20, -19, -1, 0, 5])


@given(
    nodes=st.lists(
        st.tuples(st.sampled_from([ALIVE, NOT_READY, OFFLINE]), _SECONDS, st.none() | _SECONDS),
        min_size=len(_RECORDS),
        max_size=len(_RECORDS),
    ),
    floor=_SECONDS,
    protected=st.booleans(),
)
def test_a_node_the_pass_skips_is_alive_by_the_full_rule(
    nodes: list[tuple[HealthState, int, int | None]], floor: int, protected: bool
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    thresholds = HealthPolicy.from_settings(load_settings().heartbeat).thresholds(now)
    snapshot = []
    renewals: dict[str, datetime] = {}
    for base, (health, registered, renewed) in zip(_RECORDS, nodes, strict=True):
        at = now + timedelta(seconds=registered)
        record = NodeRecord(base.passport, at, health)
        snapshot.append(Versioned(record, 1))
        if renewed is not None:
            renewals[record.node_id] = now + timedelta(seconds=renewed)
    floor_at = now + timedelta(seconds=floor)
    pending = unsettled(snapshot, thresholds.alive_after, floor=floor_at, renewed_at=renewals.get)
    verdict = judge(now, thresholds, floor=floor_at, protected=protected, renewed_at=renewals.get)
    for versioned in snapshot:
        record = versioned.record
        _, health, shown, _ = verdict(record)
        settled = record.health is ALIVE and health is ALIVE and shown is ALIVE
        assert (versioned not in pending) is settled
    assert pending == [v for v in snapshot if v in pending]  # in snapshot order
