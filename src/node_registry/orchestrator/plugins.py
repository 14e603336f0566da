"""The scheduler's plugins, in the shape of the Kubernetes scheduling framework.

A *filter* says why a node cannot take the task (an empty list: it can); a *score* plugin
gives each feasible node a raw score and then normalises the scores of all of them to 0 to 100.
Each plugin is built once per scheduling cycle from the task and the nodes (upstream's
PreFilter/PreScore step), so counting work is done once, not once per node.

* TaintToleration: filters untolerated NoSchedule and NoExecute taints; scores fewer
  untolerated PreferNoSchedule taints higher.
* NodeAffinity: filters on ``nodeSelector`` and required node affinity; scores the sum of the
  matching preferred terms' weights.
* NodeResourcesFit: filters requests over the declared resources minus those allocated, and a
  node already running ``maxConcurrentTasks``.
* TopologySpread: filters on ``DoNotSchedule`` constraints, scores ``ScheduleAnyway`` ones.
* TaskAntiAffinity: filters on required anti-affinity (the task's, and the running tasks'
  towards it); scores the preferred terms the same way.
* LeastLoaded: scores ``1 - tasks / maxConcurrentTasks``.

Ported from ``pkg/scheduler/framework/plugins``: ``tainttoleration``, ``nodeaffinity``,
``noderesources`` (fit), ``podtopologyspread`` (filtering.go, scoring.go), ``interpodaffinity``
and ``helper.DefaultNormalizeScore``; the reasons are upstream's, with "pod" read as "task".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Protocol

from node_registry.orchestrator.taints import find_untolerated_taint, node_taints
from node_registry.orchestrator.task import (
    Placement,
    TaskRequirements,
    TopologySpreadConstraint,
)
from node_registry.passport import effective_labels
from node_registry.passport.models import Taint, TaintEffect
from node_registry.quantity import parse_quantity
from node_registry.registry import RegistryEntry

__all__ = [
    "MAX_NODE_SCORE",
    "FilterPlugin",
    "NodeInfo",
    "ScorePlugin",
    "default_normalize",
    "node_infos",
]

MAX_NODE_SCORE: Final = 100

REASON_AFFINITY: Final = "node(s) didn't match the task's node affinity/selector"
REASON_TOO_MANY_TASKS: Final = "Too many tasks"
REASON_SPREAD: Final = "node(s) didn't match task topology spread constraints"
REASON_SPREAD_LABEL: Final = f"{REASON_SPREAD} (missing required label)"
REASON_ANTI_AFFINITY: Final = "node(s) didn't match task anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY: Final = "node(s) didn't satisfy existing tasks anti-affinity rules"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One candidate as the plugins see it: what it offers and what already runs there."""

    entry: RegistryEntry
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    allocatable: Mapping[str, Fraction]
    requested: Mapping[str, Fraction]
    #: The larger of what the node reports (``status.currentTasks``) and what the orchestrator
    #: placed there: a node's report lags an assignment, and the orchestrator may not know
    #: every task a node runs.
    tasks: int
    max_tasks: int | None
    placements: tuple[Placement, ...]

    @property
    def name(self) -> str:
        return self.entry.name


def node_infos(
    candidates: Iterable[RegistryEntry], placements: Iterable[Placement] = ()
) -> list[NodeInfo]:
    """The candidates with the placements on each; placements on other nodes are dropped."""
    by_node: dict[str, list[Placement]] = {}
    for placement in placements:
        by_node.setdefault(placement.node, []).append(placement)
    infos: list[NodeInfo] = []
    for entry in candidates:
        spec = entry.passport.spec
        here = tuple(by_node.get(entry.name, ()))
        requested: dict[str, Fraction] = {}
        for placement in here:
            for resource, amount in placement.requirements.requests.items():
                requested[resource] = requested.get(resource, Fraction(0)) + amount
        infos.append(
            NodeInfo(
                entry=entry,
                labels=effective_labels(entry.passport),
                taints=tuple(node_taints(entry)),
                allocatable={k: parse_quantity(v) for k, v in spec.resources.items()},
                requested=requested,
                tasks=max(entry.passport.status.current_tasks, len(here)),
                max_tasks=spec.max_concurrent_tasks,
                placements=here,
            )
        )
    return infos


class FilterPlugin(Protocol):
    """Why ``node`` cannot take the task; an empty list when it can."""

    name: str

    def filter(self, node: NodeInfo) -> list[str]: ...


class ScorePlugin(Protocol):
    """A raw score per feasible node, then all of them normalised to 0 to MAX_NODE_SCORE."""

    name: str

    def score(self, node: NodeInfo) -> int: ...

    def normalize(self, nodes: Sequence[NodeInfo], scores: list[int]) -> list[int]: ...


def default_normalize(scores: list[int], *, reverse: bool) -> list[int]:
    """Upstream ``helper.DefaultNormalizeScore``: scale to the highest score (inverted if asked)."""
    highest = max(scores, default=0)
    if highest == 0:
        return [MAX_NODE_SCORE if reverse else score for score in scores]
    scaled = [MAX_NODE_SCORE * score // highest for score in scores]
    return [MAX_NODE_SCORE - score for score in scaled] if reverse else scaled


def _blocks_scheduling(taint: Taint) -> bool:
    return taint.effect in (TaintEffect.NO_SCHEDULE, TaintEffect.NO_EXECUTE)


def fits_node_affinity(task: TaskRequirements, node: NodeInfo) -> bool:
    """``nodeSelector`` (every label) and the required node affinity terms (any term)."""
    labels = node.labels
    if any(labels.get(key) != value for key, value in task.node_selector.items()):
        return False
    affinity = task.node_affinity
    if affinity is None or affinity.required is None:
        return True
    return affinity.required.matches(labels, node.name)


# --- TaintToleration ---------------------------------------------------------------------------


class TaintTolerationFilter:
    """Refuses a node with a NoSchedule or NoExecute taint the task does not tolerate."""

    name = "TaintToleration"

    def __init__(self, task: TaskRequirements, nodes: Sequence[NodeInfo]) -> None:
        self._tolerations = task.tolerations

    def filter(self, node: NodeInfo) -> list[str]:
        taint = find_untolerated_taint(node.taints, self._tolerations, _blocks_scheduling)
        if taint is None:
            return []
        return [f"node(s) had untolerated taint {{{taint.key}: {taint.value or ''}}}"]


class TaintTolerationScore:
    """Prefers nodes with fewer PreferNoSchedule taints the task does not tolerate."""

    name = "TaintToleration"

    def __init__(
        self, task: TaskRequirements, nodes: Sequence[NodeInfo], feasible: Sequence[NodeInfo]
    ) -> None:
        # Upstream getAllTolerationPreferNoSchedule: an empty effect counts as PreferNoSchedule.
        self._tolerations = [
            t for t in task.tolerations if t.effect in (None, TaintEffect.PREFER_NO_SCHEDULE)
        ]

    def score(self, node: NodeInfo) -> int:
        return sum(
            1
            for taint in node.taints
            if taint.effect is TaintEffect.PREFER_NO_SCHEDULE
            and not any(t.tolerates(taint) for t in self._tolerations)
        )

    def normalize(self, nodes: Sequence[NodeInfo], scores: list[int]) -> list[int]:
        return default_normalize(scores, reverse=True)


# --- NodeAffinity ------------------------------------------------------------------------------


class NodeAffinityFilter:
    """Refuses a node that misses the ``nodeSelector`` or every required affinity term."""

    name = "NodeAffinity"

    def __init__(self, task: TaskRequirements, nodes: Sequence[NodeInfo]) -> None:
        self._task = task

    def filter(self, node: NodeInfo) -> list[str]:
        return [] if fits_node_affinity(self._task, node) else [REASON_AFFINITY]


class NodeAffinityScore:
    """The weights of the preferred affinity terms a node matches, scaled to the best node."""

    name = "NodeAffinity"

    def __init__(
        self, task: TaskRequirements, nodes: Sequence[NodeInfo], feasible: Sequence[NodeInfo]
    ) -> None:
        self._affinity = task.node_affinity

    def score(self, node: NodeInfo) -> int:
        if self._affinity is None:
            return 0
        return self._affinity.preference_score(node.labels, node.name)

    def normalize(self, nodes: Sequence[NodeInfo], scores: list[int]) -> list[int]:
        return default_normalize(scores, reverse=False)


# --- NodeResourcesFit --------------------------------------------------------------------------


class NodeResourcesFit:
    """Refuses a node without room: per resource, and for one more task.

    A request is checked against the node's declared ``spec.resources`` minus the requests of
    the placements on it; a resource the node does not declare counts as zero, as an
    extended resource a Kubernetes node lacks. Requests of zero are not checked.
    """

    name = "NodeResourcesFit"

    def __init__(self, task: TaskRequirements, nodes: Sequence[NodeInfo]) -> None:
        self._requests = sorted((k, v) for k, v in task.requests.items() if v > 0)

    def filter(self, node: NodeInfo) -> list[str]:
        reasons: list[str] = []
        if node.max_tasks is not None and node.tasks + 1 > node.max_tasks:
            reasons.append(REASON_TOO_MANY_TASKS)
        for resource, amount in self._requests:
            free = node.allocatable.get(resource, Fraction(0)) - node.requested.get(
                resource, Fraction(0)
            )
            if amount > free:
                reasons.append(f"Insufficient {resource}")
        return reasons


# --- TopologySpread ----------------------------------------------------------------------------


class _SelectsTasks(Protocol):
    def selects(self, labels: Mapping[str, str]) -> bool: ...


def _matching(placements: Iterable[Placement], term: _SelectsTasks) -> int:
    return sum(1 for p in placements if term.selects(p.requirements.labels))


def _counts_node(
    task: TaskRequirements, node: NodeInfo, constraint: TopologySpreadConstraint
) -> bool:
    """Upstream matchNodeInclusionPolicies: whether the node's domain is one to spread over."""
    if constraint.node_affinity_policy == "Honor" and not fits_node_affinity(task, node):
        return False
    return not (
        constraint.node_taints_policy == "Honor"
        and find_untolerated_taint(node.taints, task.tolerations, _blocks_scheduling)
    )


def _count_domains(
    task: TaskRequirements,
    constraints: Sequence[TopologySpreadConstraint],
    nodes: Iterable[NodeInfo],
    counts: list[dict[str, int]],
    *,
    known_only: bool,
) -> None:
    """Add each node's matching placements to its domain's count, per constraint.

    Only nodes carrying every constraint's key count, as upstream. ``known_only`` counts
    only the domains already in ``counts`` (scoring counts the domains of feasible nodes).
    """
    keys = [c.topology_key for c in constraints]
    for node in nodes:
        if not all(key in node.labels for key in keys):
            continue
        for index, constraint in enumerate(constraints):
            value = node.labels[constraint.topology_key]
            domain = counts[index]
            if known_only and value not in domain:
                continue
            if _counts_node(task, node, constraint):
                domain[value] = domain.get(value, 0) + _matching(node.placements, constraint)


class TopologySpreadFilter:
    """``DoNotSchedule`` constraints: refuses nodes where the skew would exceed ``maxSkew``."""

    name = "TopologySpread"

    def __init__(self, task: TaskRequirements, nodes: Sequence[NodeInfo]) -> None:
        self._task = task
        self._constraints = [c for c in task.topology_spread_constraints if c.hard]
        self._counts: list[dict[str, int]] = [{} for _ in self._constraints]
        _count_domains(task, self._constraints, nodes, self._counts, known_only=False)

    def filter(self, node: NodeInfo) -> list[str]:
        for index, constraint in enumerate(self._constraints):
            value = node.labels.get(constraint.topology_key)
            if value is None:
                return [REASON_SPREAD_LABEL]
            counts = self._counts[index]
            minimum = min(counts.values(), default=None)
            if constraint.min_domains is not None and len(counts) < constraint.min_domains:
                minimum = 0
            if minimum is None:
                continue  # no eligible domain: nothing to be skewed against
            self_match = 1 if constraint.selects(self._task.labels) else 0
            if counts.get(value, 0) + self_match - minimum > constraint.max_skew:
                return [REASON_SPREAD]
        return []


class TopologySpreadScore:
    """``ScheduleAnyway`` constraints: fewer matching tasks in the node's domain score higher.

    Upstream's formula: per constraint ``count * log(domains + 2) + maxSkew - 1``, summed and
    rounded, then ``100 * (max + min - score) / max``; a feasible node without every topology
    key scores 0.
    """

    name = "TopologySpread"

    def __init__(
        self, task: TaskRequirements, nodes: Sequence[NodeInfo], feasible: Sequence[NodeInfo]
    ) -> None:
        self._constraints = [c for c in task.topology_spread_constraints if not c.hard]
        keys = [c.topology_key for c in self._constraints]
        self._ignored = {n.name for n in feasible if not all(k in n.labels for k in keys)}
        self._counts: list[dict[str, int]] = [{} for _ in self._constraints]
        for node in feasible:
            if node.name not in self._ignored:
                for index, constraint in enumerate(self._constraints):
                    self._counts[index].setdefault(node.labels[constraint.topology_key], 0)
        self._weights = [math.log(len(counts) + 2) for counts in self._counts]
        _count_domains(task, self._constraints, nodes, self._counts, known_only=True)

    def score(self, node: NodeInfo) -> int:
        if not self._constraints or node.name in self._ignored:
            return 0
        total = 0.0
        for index, constraint in enumerate(self._constraints):
            value = node.labels[constraint.topology_key]
            total += self._counts[index][value] * self._weights[index] + constraint.max_skew - 1
        return math.floor(total + 0.5)  # Go's math.Round, for non-negative numbers

    def normalize(self, nodes: Sequence[NodeInfo], scores: list[int]) -> list[int]:
        if not self._constraints:
            return [0] * len(scores)
        counted = [s for n, s in zip(nodes, scores, strict=True) if n.name not in self._ignored]
        low, high = min(counted, default=0), max(counted, default=0)
        out: list[int] = []
        for node, score in zip(nodes, scores, strict=True):
            if node.name in self._ignored:
                out.append(0)
            elif high == 0:
                out.append(MAX_NODE_SCORE)
            else:
                out.append(MAX_NODE_SCORE * (high + low - score) // high)
        return out


# --- TaskAntiAffinity --------------------------------------------------------------------------


def _domain(node: NodeInfo, key: str) -> tuple[str, str] | None:
    value = node.labels.get(key)
    return None if value is None else (key, value)


class TaskAntiAffinityFilter:
    """Refuses nodes in a domain the task must avoid, or where a running task must avoid it.

    A node without the term's topology key is in no domain, so the term does not refuse it.
    """

    name = "TaskAntiAffinity"

    def __init__(self, task: TaskRequirements, nodes: Sequence[NodeInfo]) -> None:
        own_terms = task.anti_affinity.required if task.anti_affinity else []
        self._own: set[tuple[str, str]] = set()
        self._existing: set[tuple[str, str]] = set()
        for node in nodes:
            for placement in node.placements:
                for term in own_terms:
                    domain = _domain(node, term.topology_key)
                    if domain and term.selects(placement.requirements.labels):
                        self._own.add(domain)
                theirs = placement.requirements.anti_affinity
                for term in theirs.required if theirs else ():
                    domain = _domain(node, term.topology_key)
                    if domain and term.selects(task.labels):
                        self._existing.add(domain)

    def filter(self, node: NodeInfo) -> list[str]:
        reasons: list[str] = []
        if any(node.labels.get(key) == value for key, value in self._own):
            reasons.append(REASON_ANTI_AFFINITY)
        if any(node.labels.get(key) == value for key, value in self._existing):
            reasons.append(REASON_EXISTING_ANTI_AFFINITY)
        return reasons


class TaskAntiAffinityScore:
    """Each matching task in a node's domain costs the term's weight; scaled min to max."""

    name = "TaskAntiAffinity"

    def __init__(
        self, task: TaskRequirements, nodes: Sequence[NodeInfo], feasible: Sequence[NodeInfo]
    ) -> None:
        own_terms = task.anti_affinity.preferred if task.anti_affinity else []
        self._cost: dict[tuple[str, str], int] = {}
        for node in nodes:
            for placement in node.placements:
                theirs = placement.requirements.anti_affinity
                pairs = [
                    (w, w.task_affinity_term, placement.requirements.labels) for w in own_terms
                ]
                pairs += [
                    (w, w.task_affinity_term, task.labels)
                    for w in (theirs.preferred if theirs else ())
                ]
                for weighted, term, labels in pairs:
                    domain = _domain(node, term.topology_key)
                    if domain and term.selects(labels):
                        self._cost[domain] = self._cost.get(domain, 0) - weighted.weight

    def score(self, node: NodeInfo) -> int:
        return sum(
            cost for (key, value), cost in self._cost.items() if node.labels.get(key) == value
        )

    def normalize(self, nodes: Sequence[NodeInfo], scores: list[int]) -> list[int]:
        low, high = min(scores, default=0), max(scores, default=0)
        if high == low:
            return [0] * len(scores)
        return [MAX_NODE_SCORE * (score - low) // (high - low) for score in scores]


# --- LeastLoaded -------------------------------------------------------------------------------


class LeastLoadedScore:
    """``100 * free slots / maxConcurrentTasks``; a node that declares no limit scores 100."""

    name = "LeastLoaded"

    def __init__(
        self, task: TaskRequirements, nodes: Sequence[NodeInfo], feasible: Sequence[NodeInfo]
    ) -> None:
        pass

    def score(self, node: NodeInfo) -> int:
        if not node.max_tasks:  # None: no limit; 0 never gets here (filtered as full)
            return MAX_NODE_SCORE
        return max(node.max_tasks - node.tasks, 0) * MAX_NODE_SCORE // node.max_tasks

    def normalize(self, nodes: Sequence[NodeInfo], scores: list[int]) -> list[int]:
        return scores
