"""``scheduler.select_best`` and ``schedule``: pick the node for a task, and say why.

The registry only returns candidates; choosing among them is the Orchestrator's business
(seed 2.5). This is the Kubernetes scheduling cycle on those candidates:

1. every filter plugin runs on every candidate (upstream stops at a node's first failure; we
   run them all so the explanation lists every reason);
2. every score plugin scores the feasible nodes, normalised to 0 to 100, times its weight;
3. the highest total wins; ties go to the node name that sorts first, so a decision can be
   reproduced (upstream picks a random one among the best).

With no requirements only ``NodeResourcesFit`` (a full node does not fit) and ``LeastLoaded``
tell nodes apart, so ``select_best(candidates)`` — seed 2.5's call — picks the least loaded
node by ``currentTasks / maxConcurrentTasks``.

When nothing fits, ``Decision.message()`` is the scheduler's own summary, e.g.
``0/5 nodes are available: 2 Insufficient memory, 3 node(s) had untolerated taint {gpu: }.``
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from node_registry.errors import FieldError, ValidationError
from node_registry.orchestrator import plugins
from node_registry.orchestrator.plugins import FilterPlugin, NodeInfo, ScorePlugin
from node_registry.orchestrator.task import Placement, TaskRequirements, load_requirements
from node_registry.registry import RegistryEntry

__all__ = [
    "DEFAULT_WEIGHTS",
    "Decision",
    "NodeScore",
    "Scheduler",
    "free_slots",
    "schedule",
    "select_best",
]

FilterFactory = Callable[[TaskRequirements, Sequence[NodeInfo]], FilterPlugin]
ScoreFactory = Callable[[TaskRequirements, Sequence[NodeInfo], Sequence[NodeInfo]], ScorePlugin]

FILTERS: Final[tuple[FilterFactory, ...]] = (
    plugins.TaintTolerationFilter,
    plugins.NodeAffinityFilter,
    plugins.NodeResourcesFit,
    plugins.TopologySpreadFilter,
    plugins.TaskAntiAffinityFilter,
)
SCORES: Final[dict[str, ScoreFactory]] = {
    "TaintToleration": plugins.TaintTolerationScore,
    "NodeAffinity": plugins.NodeAffinityScore,
    "TopologySpread": plugins.TopologySpreadScore,
    "TaskAntiAffinity": plugins.TaskAntiAffinityScore,
    "LeastLoaded": plugins.LeastLoadedScore,
}
#: Kubernetes' default weights for the plugins it has (TaintToleration 3, NodeAffinity 2,
#: PodTopologySpread 2, InterPodAffinity 2, resource-based 1).
DEFAULT_WEIGHTS: Final[Mapping[str, int]] = {
    "TaintToleration": 3,
    "NodeAffinity": 2,
    "TopologySpread": 2,
    "TaskAntiAffinity": 2,
    "LeastLoaded": 1,
}

Requirements = TaskRequirements | Mapping[str, Any] | None


def free_slots(entry: RegistryEntry) -> int | None:
    """Tasks the node can still take; None when it declares no limit."""
    limit = entry.passport.spec.max_concurrent_tasks
    if limit is None:
        return None
    return max(limit - entry.passport.status.current_tasks, 0)


@dataclass(frozen=True, slots=True)
class NodeScore:
    """A feasible node, its weighted total and each plugin's normalised (0 to 100) score."""

    entry: RegistryEntry
    total: int
    scores: Mapping[str, int]

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one scheduling cycle: the node (None if none fits) and the reasons."""

    node: RegistryEntry | None
    #: The feasible nodes, best first.
    ranking: tuple[NodeScore, ...]
    #: Every node that does not fit, by name, with each filter's reasons.
    rejected: Mapping[str, tuple[str, ...]]
    considered: int

    def reasons(self) -> Counter[str]:
        """How many nodes each reason refused."""
        return Counter(reason for reasons in self.rejected.values() for reason in reasons)

    def _histogram(self) -> str:
        # As upstream FitError: "<count> <reason>" strings, sorted as strings.
        return ", ".join(sorted(f"{count} {reason}" for reason, count in self.reasons().items()))

    def message(self) -> str:
        """Kubernetes' FitError text when nothing fits; otherwise what won and what was refused."""
        histogram = self._histogram()
        if self.node is None:
            head = f"0/{self.considered} nodes are available"
            return f"{head}: {histogram}." if histogram else f"{head}."
        best = self.ranking[0]
        text = (
            f"{best.name} (score {best.total}); "
            f"{len(self.ranking)}/{self.considered} nodes are feasible"
        )
        return f"{text}; refused: {histogram}." if histogram else f"{text}."


class Scheduler:
    """The filter and score plugins with their weights; a weight of 0 turns a score off.

    Filters cannot be turned off: they are what the task requires.
    """

    def __init__(self, *, weights: Mapping[str, int] | None = None) -> None:
        chosen = dict(DEFAULT_WEIGHTS)
        problems: list[FieldError] = []
        for name, weight in (weights or {}).items():
            if name not in SCORES:
                problems.append(
                    FieldError(
                        f"weights.{name}", f"no such score plugin; one of {', '.join(SCORES)}"
                    )
                )
            elif isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                problems.append(
                    FieldError(f"weights.{name}", f"must be an integer >= 0, got {weight!r}")
                )
            else:
                chosen[name] = weight
        if problems:
            raise ValidationError("invalid scheduler weights", problems)
        self.weights: Mapping[str, int] = chosen

    def __repr__(self) -> str:
        return f"Scheduler(weights={dict(self.weights)!r})"

    def schedule(
        self,
        candidates: Iterable[RegistryEntry],
        requirements: Requirements = None,
        *,
        placements: Iterable[Placement] = (),
    ) -> Decision:
        """Run one cycle: filter every candidate, score the feasible ones, pick the best."""
        task = load_requirements(requirements)
        nodes = plugins.node_infos(candidates, placements)
        filters = [factory(task, nodes) for factory in FILTERS]
        rejected: dict[str, tuple[str, ...]] = {}
        feasible: list[NodeInfo] = []
        for node in nodes:
            reasons = tuple(reason for f in filters for reason in f.filter(node))
            if reasons:
                rejected[node.name] = reasons
            else:
                feasible.append(node)
        ranking = self._rank(task, nodes, feasible)
        best = ranking[0].entry if ranking else None
        return Decision(best, tuple(ranking), rejected, len(nodes))

    def _rank(
        self, task: TaskRequirements, nodes: Sequence[NodeInfo], feasible: Sequence[NodeInfo]
    ) -> list[NodeScore]:
        per_node: list[dict[str, int]] = [{} for _ in feasible]
        for name, factory in SCORES.items():
            if self.weights[name] == 0:
                continue
            plugin = factory(task, nodes, feasible)
            raw = [plugin.score(node) for node in feasible]
            for scores, value in zip(per_node, plugin.normalize(feasible, raw), strict=True):
                scores[name] = value
        ranking = [
            NodeScore(
                node.entry,
                sum(self.weights[name] * value for name, value in scores.items()),
                scores,
            )
            for node, scores in zip(feasible, per_node, strict=True)
        ]
        ranking.sort(key=lambda s: (-s.total, s.name))
        return ranking

    def select_best(
        self,
        candidates: Iterable[RegistryEntry],
        requirements: Requirements = None,
        *,
        placements: Iterable[Placement] = (),
    ) -> RegistryEntry | None:
        """The node ``schedule`` picks; None when no candidate fits."""
        return self.schedule(candidates, requirements, placements=placements).node


DEFAULT_SCHEDULER: Final = Scheduler()


def schedule(
    candidates: Iterable[RegistryEntry],
    requirements: Requirements = None,
    *,
    placements: Iterable[Placement] = (),
) -> Decision:
    """One scheduling cycle with the default weights (see ``Scheduler.schedule``)."""
    return DEFAULT_SCHEDULER.schedule(candidates, requirements, placements=placements)


def select_best(
    candidates: Iterable[RegistryEntry],
    requirements: Requirements = None,
    *,
    placements: Iterable[Placement] = (),
) -> RegistryEntry | None:
    """Seed 2.5's ``scheduler.select_best(candidates)``: the best node, or None if none fits.

    Without requirements: the least loaded node that still has a free slot, ties by name.
    ``requirements`` (a ``TaskRequirements`` or its dict form) adds taints and tolerations,
    node affinity, resource requests, spreading and anti-affinity; ``placements`` says where
    the orchestrator's tasks already run.
    """
    return DEFAULT_SCHEDULER.select_best(candidates, requirements, placements=placements)
