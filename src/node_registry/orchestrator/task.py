"""What a task asks of the node it runs on, and where the orchestrator's tasks already run.

``TaskRequirements`` is the scheduling part of a Kubernetes pod spec, with the same field
names so a reader of Kubernetes can write it without a manual::

    labels: {group: review}                 # the task's own labels (spread, anti-affinity)
    nodeSelector: {zone: eu-west-1}         # every label must match
    tolerations:
      - {key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}
      - {key: node.ai-team.io/unreachable, operator: Exists, effect: NoExecute,
         tolerationSeconds: 60}
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms: [{matchExpressions: [{key: memory, operator: Gt, values: [4Gi]}]}]
        preferredDuringSchedulingIgnoredDuringExecution:
          - {weight: 50, preference: {matchExpressions: [{key: gpu, operator: Exists}]}}
      taskAntiAffinity:                     # Kubernetes' podAntiAffinity, for tasks
        requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {group: review}}, topologyKey: zone}
    topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {group: review}}}
    resources: {requests: {cpu: "1", memory: 2Gi}}

Spreading and anti-affinity need to know where tasks already run: the registry does not
know (it does not carry tasks, seed 2.7), so the orchestrator passes its ``Placement`` list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from node_registry import labels as label_syntax
from node_registry.errors import SelectorError
from node_registry.orchestrator.affinity import NodeAffinity
from node_registry.orchestrator.base import TaskModel, load
from node_registry.orchestrator.taints import Toleration
from node_registry.passport.models import NumberOrStr, check_label_map, check_resource_map
from node_registry.quantity import parse_quantity
from node_registry.selectors import Selector, as_selector

__all__ = [
    "Affinity",
    "Placement",
    "Resources",
    "TaskAffinityTerm",
    "TaskAntiAffinity",
    "TaskRequirements",
    "TopologySpreadConstraint",
    "WeightedTaskAffinityTerm",
    "load_requirements",
]


class _SelectsTasks(TaskModel):
    """A term that selects tasks by their labels, compiled once when it is read."""

    #: A selector object (``matchLabels``/``matchExpressions``) or the ``kubectl -l`` text.
    label_selector: dict[str, Any] | str = Field(alias="labelSelector")
    _selector: Selector = PrivateAttr(default_factory=Selector)

    @model_validator(mode="after")
    def _compile(self) -> _SelectsTasks:
        try:
            self._selector = as_selector(self.label_selector)
        except SelectorError as exc:
            raise ValueError(f"labelSelector: {exc}") from None
        return self

    @field_validator("topology_key", check_fields=False)
    @classmethod
    def _topology_key(cls, value: str) -> str:
        if errors := label_syntax.qualified_name_errors(value):
            raise ValueError("; ".join(errors))
        return value

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether a task with these labels is one this term counts."""
        return self._selector.matches(labels)


class TaskAffinityTerm(_SelectsTasks):
    """Tasks matching ``labelSelector`` on nodes sharing the ``topologyKey`` label's value."""

    topology_key: str = Field(alias="topologyKey")


class WeightedTaskAffinityTerm(TaskModel):
    """A preferred term: each matching task in the node's domain costs ``weight`` (1 to 100)."""

    weight: int = Field(ge=1, le=100)
    task_affinity_term: TaskAffinityTerm = Field(alias="taskAffinityTerm")


class TaskAntiAffinity(TaskModel):
    """Kubernetes' ``podAntiAffinity`` for tasks: stay away from domains running these tasks."""

    required: list[TaskAffinityTerm] = Field(
        default_factory=list, alias="requiredDuringSchedulingIgnoredDuringExecution"
    )
    preferred: list[WeightedTaskAffinityTerm] = Field(
        default_factory=list, alias="preferredDuringSchedulingIgnoredDuringExecution"
    )


class Affinity(TaskModel):
    """Node affinity and task anti-affinity, as a pod's ``affinity``."""

    node_affinity: NodeAffinity | None = Field(default=None, alias="nodeAffinity")
    task_anti_affinity: TaskAntiAffinity | None = Field(default=None, alias="taskAntiAffinity")


class TopologySpreadConstraint(_SelectsTasks):
    """Kubernetes' ``topologySpreadConstraints`` entry: spread matching tasks over a label.

    ``skew`` is a domain's matching task count (with this task, if it matches) minus the
    smallest count among eligible domains; ``DoNotSchedule`` refuses nodes where it would exceed
    ``maxSkew``, ``ScheduleAnyway`` only prefers the nodes where it is least. Eligible domains
    are the values of ``topologyKey`` on the candidate nodes that carry it — and, by default,
    that satisfy the task's node affinity (``nodeAffinityPolicy: Honor``) whatever their
    taints (``nodeTaintsPolicy: Ignore``). Fewer eligible domains than ``minDomains`` make the
    smallest count 0.
    """

    max_skew: int = Field(alias="maxSkew", ge=1)
    topology_key: str = Field(alias="topologyKey")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        alias="whenUnsatisfiable"
    )
    min_domains: int | None = Field(default=None, alias="minDomains", ge=1)
    node_affinity_policy: Literal["Honor", "Ignore"] = Field(
        default="Honor", alias="nodeAffinityPolicy"
    )
    node_taints_policy: Literal["Honor", "Ignore"] = Field(
        default="Ignore", alias="nodeTaintsPolicy"
    )

    @model_validator(mode="after")
    def _min_domains_needs_do_not_schedule(self) -> TopologySpreadConstraint:
        if self.min_domains is not None and self.when_unsatisfiable != "DoNotSchedule":
            raise ValueError("minDomains: can only be used with whenUnsatisfiable DoNotSchedule")
        return self

    @property
    def hard(self) -> bool:
        return self.when_unsatisfiable == "DoNotSchedule"


class Resources(TaskModel):
    """What the task needs of a node's declared ``spec.resources`` (Kubernetes quantities)."""

    requests: dict[str, NumberOrStr] = Field(default_factory=dict)

    @field_validator("requests")
    @classmethod
    def _requests(cls, value: dict[str, str]) -> dict[str, str]:
        return check_resource_map(value)


class TaskRequirements(TaskModel):
    """Where a task may run and where it would rather run; every field is optional."""

    labels: dict[str, str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: Affinity | None = None
    topology_spread_constraints: list[TopologySpreadConstraint] = Field(
        default_factory=list, alias="topologySpreadConstraints"
    )
    resources: Resources | None = None
    _requests: dict[str, Fraction] = PrivateAttr(default_factory=dict)

    @field_validator("labels", "node_selector")
    @classmethod
    def _label_maps(cls, value: dict[str, str]) -> dict[str, str]:
        return check_label_map(value)

    @field_validator("topology_spread_constraints")
    @classmethod
    def _unique_spread(
        cls, value: list[TopologySpreadConstraint]
    ) -> list[TopologySpreadConstraint]:
        # As Kubernetes' validation: one constraint per (topologyKey, whenUnsatisfiable).
        seen: dict[tuple[str, str], int] = {}
        for index, constraint in enumerate(value):
            pair = (constraint.topology_key, constraint.when_unsatisfiable)
            if pair in seen:
                raise ValueError(
                    f"[{index}] repeats [{seen[pair]}]: {pair[0]}, {pair[1]} must be unique"
                )
            seen[pair] = index
        return value

    @model_validator(mode="after")
    def _parse_requests(self) -> TaskRequirements:
        if self.resources is not None:
            self._requests = {
                name: parse_quantity(amount) for name, amount in self.resources.requests.items()
            }
        return self

    @property
    def requests(self) -> Mapping[str, Fraction]:
        """The resource requests as exact amounts (``2Gi`` is 2147483648)."""
        return self._requests

    @property
    def node_affinity(self) -> NodeAffinity | None:
        return self.affinity.node_affinity if self.affinity else None

    @property
    def anti_affinity(self) -> TaskAntiAffinity | None:
        return self.affinity.task_anti_affinity if self.affinity else None


NO_REQUIREMENTS = TaskRequirements()


def load_requirements(
    doc: TaskRequirements | Mapping[str, Any] | None,
) -> TaskRequirements:
    """Task requirements from a dict (JSON/YAML), validated; None asks for nothing."""
    if doc is None:
        return NO_REQUIREMENTS
    return load(TaskRequirements, doc, what="task requirements")


@dataclass(frozen=True, slots=True, init=False)
class Placement:
    """A task the orchestrator runs (or has just assigned) on the node named ``node``.

    Its requirements give its labels (for spreading and anti-affinity), its resource requests
    (counted as allocated on the node), its own anti-affinity (which a newcomer must respect)
    and its tolerations (for NoExecute eviction). They may be given in the dict form.
    """

    task: str
    node: str
    requirements: TaskRequirements

    def __init__(
        self,
        task: str,
        node: str,
        requirements: TaskRequirements | Mapping[str, Any] | None = None,
    ) -> None:
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "requirements", load_requirements(requirements))
