"""Scheduling policies on an embedded registry: a walk-through (docs/scheduling.md).

Five nodes register with labels, resources, limits and taints; the orchestrator schedules
tasks on what ``find_nodes`` returns and prints each decision and why the other nodes were
refused; then a NoExecute taint and a node going silent evict running tasks. Simulated time
(``FakeClock``), so the output is the same on every run:

    python examples/scheduling.py
"""

from __future__ import annotations

import uuid
from typing import Any

from node_registry import FakeClock, Registry
from node_registry.orchestrator import Decision, Placement, evictions, schedule


def passport(
    name: str,
    zone: str,
    resources: dict[str, str],
    max_tasks: int,
    *,
    current: int = 0,
    taints: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capabilities": [{"name": "code_generation"}],
        "resources": resources,
        "maxConcurrentTasks": max_tasks,
    }
    if taints:
        spec["taints"] = taints
    return {
        "metadata": {
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "name": name,
            "nodeType": "agent",
            "labels": {"zone": zone},
        },
        "spec": spec,
        "status": {"phase": "Running", "currentTasks": current},
    }


FLEET = [
    passport(
        "gpu-01",
        "eu-west-1",
        {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "2"},
        4,
        taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
    ),
    passport("coder-01", "eu-west-1", {"cpu": "4", "memory": "8Gi"}, 4, current=1),
    passport("coder-02", "us-east-1", {"cpu": "8", "memory": "16Gi"}, 4),
    passport(
        "coder-03",
        "us-east-1",
        {"cpu": "2", "memory": "4Gi"},
        2,
        taints=[{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}],
    ),
    passport("writer-01", "eu-central-1", {"cpu": "2", "memory": "4Gi"}, 2, current=2),
]


def show(task: str, decision: Decision) -> None:
    print(f"{task}: -> {decision.node.name if decision.node else 'pending'}")
    print(f"  {decision.message()}")
    for score in decision.ranking:
        parts = ", ".join(f"{k} {v}" for k, v in score.scores.items())
        print(f"  {score.name:<9} {score.total:>4}  ({parts})")
    for name, reasons in decision.rejected.items():
        print(f"  {name:<9} refused: {'; '.join(reasons)}")


class Orchestrator:
    """What an orchestrator keeps: the registry, its clock, and where its tasks run."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.start = self.clock.now()
        self.registry = Registry(clock=self.clock)
        for doc in FLEET:
            self.registry.register(doc)
        self.placements: list[Placement] = []

    def run(self, task: str, requirements: dict[str, Any], *, only_healthy: bool = True) -> None:
        candidates = self.registry.find_nodes(kind="agent", only_healthy=only_healthy)
        decision = schedule(candidates, requirements, placements=self.placements)
        show(task, decision)
        if decision.node is not None:
            self.placements.append(Placement(task, decision.node.name, requirements))
            # The node takes the task and reports its new count, as a node runtime would.
            tasks = decision.node.passport.status.current_tasks + 1
            self.registry.update_status(decision.node.node_id, current_tasks=tasks)

    def tick(self, seconds: int, *, silent: str = "") -> None:
        """Every node but ``silent`` heartbeats every 10 s; the lifecycle controller runs."""
        for _ in range(seconds // 10):
            self.clock.advance(10)
            for node in self.registry.find_nodes():
                if node.name != silent:
                    self.registry.heartbeat(node.node_id)
            self.registry.reconcile()

    def evict(self, node_name: str) -> None:
        now = self.clock.now()
        print(f"t+{(now - self.start).total_seconds():.0f}s, {node_name}:")
        node = self.registry.get_by_name(node_name)
        for eviction in evictions(node, self.placements, now=now):
            if eviction.due(now):
                print(f"  evict {eviction.task} now ({eviction.taint})")
                self.placements = [p for p in self.placements if p.task != eviction.task]
            else:
                due = (eviction.at - self.start).total_seconds()
                print(f"  evict {eviction.task} at t+{due:.0f}s ({eviction.taint})")


def schedule_tasks(orch: Orchestrator) -> None:
    print("== 1. resources and load: 6Gi of memory")
    orch.run("review-1", {"resources": {"requests": {"memory": "6Gi"}}})

    print("\n== 2. a dedicated node: tolerate its taint and ask for its GPU")
    orch.run(
        "train-1",
        {
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}],
            "resources": {"requests": {"nvidia.com/gpu": "1"}},
        },
    )

    print("\n== 3. spread a group over two zones (maxSkew 1)")
    group = {
        "labels": {"group": "lint"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "zone",
                                    "operator": "In",
                                    "values": ["eu-west-1", "us-east-1"],
                                }
                            ]
                        }
                    ]
                }
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"group": "lint"}},
            }
        ],
        # Ride out a short outage of the node rather than be moved at once.
        "tolerations": [
            {
                "key": "node.ai-team.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 60,
            }
        ],
    }
    for index in (1, 2, 3):
        orch.run(f"lint-{index}", group)

    print("\n== 4. nothing fits: 32Gi, and never in a zone running a lint task")
    orch.run(
        "index-1",
        {
            "resources": {"requests": {"memory": "32Gi"}},
            "affinity": {
                "taskAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": "group=lint", "topologyKey": "zone"}
                    ]
                }
            },
        },
    )


def evict_tasks(orch: Orchestrator) -> None:
    print("\n== 5. NoExecute: coder-02 is tainted for maintenance")
    coder_02 = next(doc for doc in FLEET if doc["metadata"]["name"] == "coder-02")
    coder_02["spec"]["taints"] = [
        {"key": "maintenance", "effect": "NoExecute", "timeAdded": orch.clock.now().isoformat()}
    ]
    orch.registry.register(coder_02)
    batch = {
        "tolerations": [
            {
                "key": "maintenance",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        ]
    }
    orch.placements.append(Placement("batch-1", "coder-02", batch))
    orch.evict("coder-02")
    orch.tick(300)
    orch.evict("coder-02")

    print("\n== 6. coder-01 goes silent; the others heartbeat every 10 s")
    orch.tick(40, silent="coder-01")
    print(f"coder-01 is {orch.registry.get_by_name('coder-01').health_state.value}")
    orch.evict("coder-01")
    orch.tick(40, silent="coder-01")
    orch.evict("coder-01")
    orch.run("review-2", {"resources": {"requests": {"memory": "6Gi"}}}, only_healthy=False)


def main() -> None:
    orchestrator = Orchestrator()
    schedule_tasks(orchestrator)
    evict_tasks(orchestrator)


if __name__ == "__main__":
    main()
