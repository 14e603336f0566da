"""``node-registry example``: a node's whole life in the embedded registry, in a few lines.

It runs on a FakeClock so a newcomer sees NotReady, Offline and removal at once instead of
waiting 90 seconds; everything else is the real registry with its default settings.
"""

from __future__ import annotations

import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from node_registry.clock import FakeClock
from node_registry.orchestrator import scheduler
from node_registry.registry import EventType, Registry, RegistryEntry

_FLEET: list[tuple[str, str, tuple[str, ...], str, str]] = [
    # name, kind, capabilities, zone, memory
    ("ai-agent-coder-01", "agent", ("code_generation", "python"), "eu-west-1", "8Gi"),
    ("ai-agent-coder-02", "agent", ("code_generation", "python", "go"), "eu-west-1", "16Gi"),
    ("ai-agent-coder-03", "agent", ("code_generation",), "us-east-1", "4Gi"),
    ("ai-agent-writer-01", "agent", ("text_generation",), "eu-west-1", "8Gi"),
    ("orchestrator-01", "orchestrator", ("task_orchestration",), "eu-west-1", "2Gi"),
    ("postgres-01", "storage", ("sql",), "eu-west-1", "32Gi"),
]


def _passport(name: str, kind: str, caps: tuple[str, ...], zone: str, memory: str) -> Any:
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.ai-team.example")),
            "name": name,
            "nodeType": kind,
            "labels": {"zone": zone},
        },
        "spec": {
            "capabilities": [{"name": c} for c in caps],
            "resources": {"cpu": "4", "memory": memory},
            "endpoint": {"protocol": "mindbus", "address": "amqp://mindbus:5672", "queue": name},
            "maxConcurrentTasks": 4,
        },
        "status": {"phase": "Pending"},
    }


def _table(title: str, entries: list[RegistryEntry]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("NAME", "KIND", "HEALTH", "PHASE", "CAPABILITIES", "LAST SEEN"):
        table.add_column(column, no_wrap=column != "CAPABILITIES", overflow="fold")
    for e in entries:
        caps = ",".join(c.name for c in e.passport.spec.capabilities)
        table.add_row(
            e.name,
            str(e.node_kind),
            e.health_state.value,
            e.passport.status.phase.value,
            caps,
            e.last_seen.strftime("%H:%M:%S"),
        )
    return table


def run_example(out: Console) -> None:
    def say(text: str) -> None:
        out.print(text, soft_wrap=True, highlight=False)

    clock = FakeClock()
    start = clock.now()
    registry = Registry(clock=clock)
    watch = registry.watch()
    ids = {}
    for row in _FLEET:
        entry = registry.register(_passport(*row))
        registry.update_status(entry.node_id, phase="Running")
        ids[entry.name] = entry.node_id
    say(f"registered {len(ids)} nodes (resource version {registry.resource_version})")
    out.print(_table("all nodes", registry.list_nodes().items))

    selector = {"matchLabels": {"capability.code_generation": "true", "capability.python": "true"}}
    found = registry.find_nodes(selector=selector)
    say(f"find_nodes(selector={selector}) -> {[e.name for e in found]}")
    constraints = {
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["eu-west-1"]},
            {"key": "memory", "operator": "Gt", "values": ["4Gi"]},
        ]
    }
    found = registry.find_nodes(selector=constraints)
    say(f"find_nodes(selector={constraints}) -> {[e.name for e in found]}")
    found = registry.find_nodes(selector="capability.code_generation,zone!=us-east-1")
    say(
        f"find_nodes(selector='capability.code_generation,zone!=us-east-1') -> "
        f"{[e.name for e in found]}"
    )

    silent = "ai-agent-coder-01"
    say(f"\n{silent} stops heartbeating; the others go on every 10 s (simulated time):")
    for _ in range(10):
        clock.advance(10)
        for name, node_id in ids.items():
            if name != silent:
                registry.heartbeat(node_id)
        registry.reconcile()
        for event in iter(lambda: watch.next(0), None):
            if event.type in (EventType.HEALTH_CHANGED, EventType.DELETED):
                detail = event.entry.health_state.value
                if event.previous_health and event.type is EventType.HEALTH_CHANGED:
                    detail = f"{event.previous_health.value} -> {detail}"
                elapsed = (clock.now() - start).total_seconds()
                say(
                    f"  t+{elapsed:>3.0f}s  {event.type.value:<14} {event.entry.name:<18} "
                    f"{detail}  (resourceVersion {event.resource_version})"
                )
    candidates = registry.find_nodes(
        kind="agent",
        selector={"matchLabels": {"capability.code_generation": "true"}},
        only_healthy=True,
    )
    best = scheduler.select_best(candidates)
    say(
        f"\norchestrator: find_nodes(kind='agent', capability.code_generation, "
        f"only_healthy=True) -> {[c.name for c in candidates]}; "
        f"scheduler.select_best -> {best.name if best else None}"
    )
    out.print(_table("after 100 s", registry.list_nodes().items))
