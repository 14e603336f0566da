"""Registry writes and reads: register, re-register, heartbeat, status, deregister, find."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import BACKENDS, MakeRegistry, PassportFactory, passport
from node_registry import (
    ConditionStatus,
    ConflictError,
    FakeClock,
    HealthState,
    NodeType,
    NotFoundError,
    Phase,
    Registry,
    SelectorError,
    ValidationError,
)
from node_registry.store import MemoryStore, NodeRecord


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every registry test here runs on memory and on a real etcd."""
    return str(request.param)


def test_register_returns_entry_with_seed_fields(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    doc = make_passport("coder-01")
    before = registry.resource_version  # 0 on memory; etcd's revisions are cluster-wide
    entry = registry.register(doc)
    assert entry.node_id == doc["metadata"]["uid"]
    assert entry.node_kind is NodeType.AGENT
    assert entry.health_state is HealthState.ALIVE
    assert entry.registered_at == clock.now()
    assert entry.last_seen == clock.now()
    assert entry.resource_version == registry.resource_version > before
    assert entry.passport.to_dict()["spec"]["capabilities"][0]["name"] == "code_generation"


def test_reregister_replaces_passport_and_keeps_registered_at(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    first = registry.register(make_passport("coder-01", capabilities=("python",)))
    clock.advance(5)
    second = registry.register(make_passport("coder-01", capabilities=("go",)))
    assert second.registered_at == first.registered_at
    assert second.last_seen == clock.now()
    assert second.resource_version > first.resource_version
    assert [c.name for c in registry.get(first.node_id).passport.spec.capabilities] == ["go"]
    assert registry.find_nodes(selector="capability.python") == []


def test_new_uid_with_taken_name_is_conflict_and_changes_nothing(
    registry: Registry, make_passport: PassportFactory
) -> None:
    registry.register(make_passport("coder-01"))
    before = registry.list_nodes()
    other = make_passport("coder-01", uid="00000000-0000-4000-8000-000000000001")
    with pytest.raises(ConflictError, match="already registered"):
        registry.register(other)
    after = registry.list_nodes()
    assert after.resource_version == before.resource_version
    assert [e.to_dict() for e in after.items] == [e.to_dict() for e in before.items]


def test_rename_to_a_taken_name_is_conflict(
    registry: Registry, make_passport: PassportFactory
) -> None:
    registry.register(make_passport("coder-01"))
    second = registry.register(make_passport("coder-02"))
    with pytest.raises(ConflictError):
        registry.register(make_passport("coder-01", uid=second.node_id))
    assert registry.get(second.node_id).name == "coder-02"


def test_rename_frees_the_old_name(registry: Registry, make_passport: PassportFactory) -> None:
    first = registry.register(make_passport("coder-01"))
    registry.register(make_passport("coder-renamed", uid=first.node_id))
    # A new uid takes the freed name.
    registry.register(make_passport("coder-01", uid="00000000-0000-4000-8000-000000000002"))
    assert sorted(e.name for e in registry.list_nodes().items) == ["coder-01", "coder-renamed"]


def test_heartbeat_unknown_node_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFoundError, match="not registered"):
        registry.heartbeat("00000000-0000-4000-8000-00000000dead")


def test_heartbeat_renews_without_new_revision(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    entry = registry.register(make_passport("coder-01"))
    clock.advance(7)
    with registry.watch(entry.resource_version) as watch:
        registry.heartbeat(entry.node_id)
        again = registry.get(entry.node_id)
        assert again.last_seen == clock.now()
        assert again.resource_version == entry.resource_version
        assert watch.next(0.05) is None  # no change of any node was recorded


def test_update_status_merges_conditions_and_counts_as_heartbeat(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    node = registry.register(make_passport("coder-01", phase="Pending")).node_id
    clock.advance(3)
    entry = registry.update_status(
        node,
        phase="Running",
        current_tasks=2,
        conditions=[{"type": "Ready", "status": "True", "reason": "AgentStarted"}],
    )
    status = entry.passport.status
    assert status.phase is Phase.RUNNING
    assert status.current_tasks == 2
    ready = status.condition("Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE
    assert ready.last_transition_time == clock.now()
    assert entry.last_seen == clock.now()

    clock.advance(3)
    entry = registry.update_status(
        node, conditions=[{"type": "GPUHealthy", "status": "False", "reason": "XidError"}]
    )
    types = {c.type: c for c in entry.passport.status.conditions}
    assert set(types) == {"Ready", "GPUHealthy"}
    # Ready did not change, so its transition time stays where it was.
    assert types["Ready"].last_transition_time == ready.last_transition_time
    assert entry.passport.status.current_tasks == 2

    clock.advance(3)
    entry = registry.update_status(node, conditions=[{"type": "Ready", "status": "False"}])
    flipped = entry.passport.status.condition("Ready")
    assert flipped is not None
    assert flipped.last_transition_time == clock.now()


def test_update_status_unknown_node(registry: Registry) -> None:
    with pytest.raises(NotFoundError):
        registry.update_status("00000000-0000-4000-8000-00000000dead", current_tasks=1)


def test_deregister(registry: Registry, make_passport: PassportFactory) -> None:
    node = registry.register(make_passport("coder-01")).node_id
    registry.deregister(node)
    with pytest.raises(NotFoundError):
        registry.get(node)
    with pytest.raises(NotFoundError):
        registry.deregister(node)
    with pytest.raises(NotFoundError):
        registry.heartbeat(node)


PROTECTED = "registry.ai-team.io/quarantined"


def test_a_node_leaving_by_itself_keeps_its_name_bound(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    doc = make_passport("coder-01", labels={"zone": "a", PROTECTED: "true"})
    node = registry.register(doc).node_id
    registry.deregister(node, keep_binding=True)
    binding = registry.binding("coder-01")
    assert binding is not None
    assert (binding.node_id, binding.labels, binding.released_at) == (
        node,
        {PROTECTED: "true"},
        clock.now(),
    )
    # Kept for the retention, then as good as gone (the store may drop it later).
    retention = registry.settings.store.binding_retention_seconds
    clock.advance(retention)
    assert registry.binding("coder-01") is not None
    clock.advance(1)
    assert registry.binding("coder-01") is None
    assert registry.release("coder-01")
    assert not registry.release("coder-01")
    # An operator's delete keeps nothing.
    node = registry.register(doc).node_id
    registry.deregister(node)
    assert registry.binding("coder-01") is None


def test_a_node_removed_for_silence_keeps_its_name_bound(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    node = registry.register(make_passport("coder-01", labels={PROTECTED: "true"})).node_id
    policy = registry.settings.heartbeat
    clock.advance(policy.ttl_seconds + policy.grace_period_seconds + 1)
    registry.reconcile()  # recorded Offline
    registry.reconcile()  # and removed
    with pytest.raises(NotFoundError):
        registry.get(node)
    binding = registry.binding("coder-01")
    assert binding is not None
    assert (binding.node_id, binding.labels) == (node, {PROTECTED: "true"})


def test_a_registration_that_may_not_rename_refuses_to(
    registry: Registry, make_passport: PassportFactory
) -> None:
    first = registry.register(make_passport("coder-01"))
    before = registry.list_nodes()
    with pytest.raises(ConflictError, match="registered as node 'coder-01'"):
        registry.register(make_passport("coder-02", uid=first.node_id), rename=False)
    assert [e.to_dict() for e in registry.list_nodes().items] == [e.to_dict() for e in before.items]
    registry.register(make_passport("coder-01", uid=first.node_id), rename=False)  # same name


def test_find_by_kind_selector_and_health(
    registry: Registry, clock: FakeClock, make_passport: PassportFactory
) -> None:
    registry.register(make_passport("coder-01"))
    registry.register(make_passport("coder-02", capabilities=("code_generation",)))
    registry.register(make_passport("writer-01", capabilities=("text_generation",)))
    registry.register(make_passport("db-01", kind="storage", capabilities=("sql",)))
    pending = registry.register(make_passport("coder-03", phase="Pending"))
    assert [e.name for e in registry.find_nodes(kind="storage")] == ["db-01"]
    assert [e.name for e in registry.find_nodes(kind=NodeType.AGENT)] == [
        "coder-01",
        "coder-02",
        "coder-03",
        "writer-01",
    ]
    assert [e.name for e in registry.find_nodes(selector="capability.code_generation")] == [
        "coder-01",
        "coder-02",
        "coder-03",
    ]
    healthy = registry.find_nodes(selector="capability.code_generation", only_healthy=True)
    assert pending.name not in [e.name for e in healthy]
    # A node that reports itself not ready is not offered either.
    registry.update_status(healthy[0].node_id, conditions=[{"type": "Ready", "status": "False"}])
    assert [e.name for e in registry.find_nodes(kind="agent", only_healthy=True)] == [
        "coder-02",
        "writer-01",
    ]
    clock.advance(25)
    assert registry.find_nodes(only_healthy=True) == []


def test_find_nodes_string_and_structured_selectors_agree(
    registry: Registry, make_passport: PassportFactory
) -> None:
    registry.register(make_passport("a-1", resources={"memory": "8Gi", "cpu": "2"}))
    registry.register(make_passport("a-2", resources={"memory": "2Gi", "cpu": "16"}))
    registry.register(make_passport("a-3", labels={"zone": "us-east-1"}))
    structured = registry.find_nodes(
        selector={
            "matchLabels": {"zone": "eu-west-1"},
            "matchExpressions": [{"key": "cpu", "operator": "Gt", "values": ["3"]}],
        }
    )
    text = registry.find_nodes(selector="zone=eu-west-1,cpu>3")
    assert [e.name for e in structured] == [e.name for e in text] == ["a-2"]
    assert [e.name for e in registry.find_nodes(selector="zone notin (eu-west-1)")] == ["a-3"]
    assert [e.name for e in registry.find_nodes(selector="memory<4Gi")] == ["a-2"]


def test_find_nodes_bad_arguments(registry: Registry) -> None:
    with pytest.raises(ValidationError, match="'robot' is not a node type \\(registered: agent"):
        registry.find_nodes(kind="robot")
    with pytest.raises(SelectorError, match="matchExpressions"):
        registry.find_nodes(selector={"matchExpressions": [{"key": "a", "operator": "Near"}]})
    with pytest.raises(SelectorError):
        registry.find_nodes(selector="zone in (a")


def test_get_by_name(registry: Registry, make_passport: PassportFactory) -> None:
    node = registry.register(make_passport("coder-01"))
    assert registry.get_by_name("coder-01").node_id == node.node_id
    with pytest.raises(NotFoundError):
        registry.get_by_name("nobody")


def test_v1alpha1_passport_is_converted_and_found(registry: Registry) -> None:
    entry = registry.register(
        {
            "apiVersion": "ai_team.io/v1alpha1",
            "kind": "NodePassport",
            "uid": "7d0b6c1e-0000-4000-8000-000000000001",
            "name": "legacy-agent",
            "nodeType": "agent",
            "capabilities": ["code_generation"],
            "resources": {"memory": "4Gi"},
            "endpoint": "amqp://bus:5672/legacy",
        }
    )
    assert entry.passport.api_version == "ai_team.io/v1"
    assert entry.passport.spec.endpoint is not None
    assert entry.passport.spec.endpoint.protocol == "amqp"
    assert [e.name for e in registry.find_nodes(selector="capability.code_generation")] == [
        "legacy-agent"
    ]


def test_the_label_and_quantity_indexes_agree_with_a_full_scan(
    make_registry: MakeRegistry,
) -> None:
    # The index narrows candidates (sets per label, sorted quantities per key for Gt/Lt);
    # whatever it does, the answer must be exactly that of matching every node.
    import random

    from node_registry import effective_labels
    from node_registry.selectors import as_selector

    registry = make_registry()
    rng = random.Random(7)
    memories = ["512Mi", "1Gi", "2Gi", "4Gi", "4096Mi", "8Gi", "16Gi", "0.5Ti", "64Gi"]
    names = [f"node-{i:03d}" for i in range(120)]
    for step in range(400):  # registrations, re-registrations that move values, removals
        name = rng.choice(names)
        if step % 9 == 8 and registry.find_nodes(selector=f"node={name}"):
            registry.deregister(registry.id_of(name))
            continue
        registry.register(
            passport(
                name,
                labels={
                    "zone": rng.choice(["a", "b", "c"]),
                    "node": name,
                    "gen": str(rng.randrange(5)),
                },
                resources={"memory": rng.choice(memories), "cpu": str(rng.randrange(1, 9))},
            )
        )
    selectors = [
        "memory>4Gi",
        "memory<4Gi",
        "memory>4096Mi,cpu<5",
        "gen>2,zone notin (a)",
        "gen<0",
        "cpu>8",
        "memory>511Mi,memory<0.5Ti",
        "zone in (b,c),memory>1Gi",
    ]
    everything = registry.list_nodes().items
    for text in selectors:
        selector = as_selector(text)
        expected = [e.name for e in everything if selector.matches(effective_labels(e.passport))]
        assert [e.name for e in registry.find_nodes(selector=text)] == expected, text


class _DeregisteredUnderfoot(MemoryStore):
    """A store where another caller deregisters the node just before the next update."""

    armed = False

    def update(self, record: NodeRecord, **kwargs: Any) -> int:
        if self.armed:
            self.armed = False
            self.delete(record.node_id)
        return super().update(record, **kwargs)


def test_re_registering_a_node_deregistered_meanwhile_registers_it_again() -> None:
    # Memory only: the race is staged by a MemoryStore subclass (an update's write hook).
    store = _DeregisteredUnderfoot()
    registry = Registry(store)
    first = registry.register(passport("alpha"))
    store.armed = True
    again = registry.register(passport("alpha", labels={"zone": "b"}))
    assert again.node_id == first.node_id
    assert registry.get(first.node_id).passport.metadata.labels["zone"] == "b"
