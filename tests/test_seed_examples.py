"""The seed's code examples (NODE_REGISTRY_SPEC 2.2.1 and 2.5), run as written."""

from __future__ import annotations

import asyncio

from conftest import passport
from node_registry import AsyncRegistry, FakeClock, NodePassport, Registry, load_passport
from node_registry.orchestrator import scheduler


def _fleet() -> list[NodePassport]:
    """Agents with the seed's capabilities and constraints, plus a storage node."""
    coder = passport(
        "ai-agent-coder-01",
        capabilities=("code_generation", "python"),
        resources={"memory": "8Gi", "cpu": "4"},
    )
    busy = passport(
        "ai-agent-coder-02",
        capabilities=("code_generation", "python"),
        resources={"memory": "16Gi", "cpu": "8"},
    )
    busy["status"]["currentTasks"] = 3
    small = passport(
        "ai-agent-coder-03",
        capabilities=("code_generation",),
        labels={"zone": "us-east-1"},
        resources={"memory": "2Gi", "cpu": "1"},
    )
    writer = passport(
        "ai-agent-writer-01", capabilities=("text_generation",), resources={"memory": "4Gi"}
    )
    db = passport(
        "postgres-01", kind="storage", capabilities=("sql",), labels={"zone": "eu-central-1"}
    )
    return [load_passport(p) for p in (coder, busy, small, writer, db)]


def test_seed_2_2_1_mvp_calls(clock: FakeClock) -> None:
    registry = Registry(clock=clock)
    fleet = _fleet()
    # Seed 2.2.1, as written: register_node(passport), update_heartbeat(node_id), get_alive_nodes().
    for passport_ in fleet:
        registry.register_node(passport_)
    assert registry.ttl_seconds == 30
    clock.advance(25)
    registry.update_heartbeat(fleet[0].metadata.uid)
    alive = registry.get_alive_nodes()
    assert [p.metadata.name for p in alive] == ["ai-agent-coder-01"]


def test_seed_2_5_find_nodes_as_written(clock: FakeClock) -> None:
    registry = Registry(clock=clock)
    for passport_ in _fleet():
        registry.register(passport_)

    # 1. search by kind
    assert len(registry.find_nodes(kind="agent")) == 4

    # 2. filtering by capabilities (through labels) — the seed's text verbatim
    selector = {
        "matchLabels": {
            "capability.code_generation": "true",
            "capability.python": "true"
        }
    }  # fmt: skip
    found = registry.find_nodes(selector=selector)
    assert [e.name for e in found] == ["ai-agent-coder-01", "ai-agent-coder-02"]

    # 3. filtering by constraints (matchExpressions) — verbatim
    selector = {
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["eu-west-1"]},
            {"key": "memory", "operator": "Gt", "values": ["4Gi"]}
        ]
    }  # fmt: skip
    found = registry.find_nodes(selector=selector)
    assert [e.name for e in found] == ["ai-agent-coder-01", "ai-agent-coder-02"]

    # 4. excluding offline / unhealthy nodes
    clock.advance(21)
    registry.heartbeat(found[1].node_id)
    assert [e.name for e in registry.find_nodes(only_healthy=True)] == ["ai-agent-coder-02"]
    for entry in registry.find_nodes():
        registry.heartbeat(entry.node_id)

    # The orchestrator's call, verbatim.
    candidates = registry.find_nodes(
        kind="agent",
        selector={"matchLabels": {"capability.code_generation": "true"}},
        only_healthy=True
    )  # fmt: skip
    best_node = scheduler.select_best(candidates)  # by currentTasks, resources, etc.
    assert [c.name for c in candidates] == [
        "ai-agent-coder-01",
        "ai-agent-coder-02",
        "ai-agent-coder-03",
    ]
    assert best_node is not None
    assert best_node.name == "ai-agent-coder-01"  # 4 free slots; coder-02 has 1 left


def test_seed_2_5_in_an_async_program(clock: FakeClock) -> None:
    async def orchestrator() -> str | None:
        registry = AsyncRegistry(clock=clock)
        for passport_ in _fleet():
            await registry.register(passport_)
            await registry.update_heartbeat(passport_.metadata.uid)  # the UUID, as in 2.2.1
        candidates = await registry.find_nodes(
            kind="agent",
            selector={"matchLabels": {"capability.code_generation": "true"}},
            only_healthy=True,
        )
        best_node = scheduler.select_best(candidates)
        return best_node.name if best_node else None

    assert asyncio.run(orchestrator()) == "ai-agent-coder-01"


def test_select_best_skips_full_nodes(clock: FakeClock) -> None:
    registry = Registry(clock=clock)
    full = passport("full-01")
    full["status"]["currentTasks"] = 4
    registry.register(full)
    assert scheduler.select_best(registry.find_nodes(only_healthy=True)) is None
