"""Scheduling on the registry's candidates, the Orchestrator's side (the registry does not).

``scheduler.select_best(candidates)`` is seed 2.5's call; ``schedule`` explains its choice.
Policies (seed 3.5) follow Kubernetes: taints and tolerations, node affinity, resource
requests, topology spread, task anti-affinity, least loaded first; ``evictions`` answers
NoExecute. Everything here is pure: no I/O, time passed in.
"""

from node_registry.orchestrator import scheduler
from node_registry.orchestrator.eviction import Eviction, evictions
from node_registry.orchestrator.scheduler import (
    DEFAULT_WEIGHTS,
    Decision,
    NodeScore,
    Scheduler,
    schedule,
    select_best,
)
from node_registry.orchestrator.taints import Toleration, TolerationOperator, node_taints
from node_registry.orchestrator.task import (
    Placement,
    TaskRequirements,
    TopologySpreadConstraint,
    load_requirements,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "Decision",
    "Eviction",
    "NodeScore",
    "Placement",
    "Scheduler",
    "TaskRequirements",
    "Toleration",
    "TolerationOperator",
    "TopologySpreadConstraint",
    "evictions",
    "load_requirements",
    "node_taints",
    "schedule",
    "scheduler",
    "select_best",
]
