"""Tolerations, and which of a node's taints a task tolerates (Kubernetes' rules, ported).

Ported from ``k8s.io/api/core/v1/toleration.go`` (``ToleratesTaint``), component-helpers
``scheduling/corev1/helpers.go`` (``TolerationsTolerateTaint``, ``FindMatchingUntoleratedTaint``),
``pkg/apis/core/v1/helper`` (``GetMatchingTolerations``) and the validation of
``pkg/apis/core/validation`` (``ValidateTolerations``). A toleration matches a taint when:

1. its effect is empty (every effect) or equal to the taint's;
2. its key is empty (every key; the operator must then be ``Exists``) or equal to the taint's;
3. its operator is ``Exists`` (any value), or ``Equal`` (the default) with an equal value.

Kubernetes 1.35 added ``Gt``/``Lt`` toleration operators behind an alpha feature gate; they are
not served here, and a toleration using them is refused with the operators that are.

Beyond the passport's own ``spec.taints`` a node carries the taints its health implies, as
Kubernetes' node lifecycle controller adds ``node.kubernetes.io/not-ready`` and
``.../unreachable``: a NOT_READY node has ``node.ai-team.io/not-ready`` and an OFFLINE one
``node.ai-team.io/unreachable``, each with the NoSchedule and NoExecute effects, so a task
that must ride out a silent node says so with a toleration (and ``tolerationSeconds``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from node_registry import labels as label_syntax
from node_registry.orchestrator.base import TaskModel
from node_registry.passport import NodePassport
from node_registry.passport.models import KEY_DOMAIN, ConditionStatus, Taint, TaintEffect
from node_registry.registry import HealthState, RegistryEntry

__all__ = [
    "NOT_READY_TAINT_KEY",
    "UNREACHABLE_TAINT_KEY",
    "Toleration",
    "TolerationOperator",
    "find_untolerated_taint",
    "matching_tolerations",
    "node_taints",
    "tolerations_tolerate_taint",
]

NOT_READY_TAINT_KEY = f"node.{KEY_DOMAIN}/not-ready"
UNREACHABLE_TAINT_KEY = f"node.{KEY_DOMAIN}/unreachable"

TaintFilter = Callable[[Taint], bool]


class TolerationOperator(StrEnum):
    """How a toleration compares values: ``Equal`` (the default) or ``Exists`` (any value)."""

    EQUAL = "Equal"
    EXISTS = "Exists"


def _empty_is_equal(value: object) -> object:
    # Kubernetes reads an empty operator as Equal.
    return TolerationOperator.EQUAL if value == "" else value


class Toleration(TaskModel):
    """A Kubernetes toleration: the task accepts nodes with taints it matches."""

    key: str = ""
    operator: Annotated[TolerationOperator, BeforeValidator(_empty_is_equal)] = (
        TolerationOperator.EQUAL
    )
    value: str = ""
    #: None matches every effect.
    effect: TaintEffect | None = None
    #: How long a task stays on a node after a matching NoExecute taint appears; None is
    #: forever, 0 or less is not at all.
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> Toleration:
        problems: list[str] = []
        if self.key:
            problems.extend(f"key: {m}" for m in label_syntax.qualified_name_errors(self.key))
        elif self.operator is not TolerationOperator.EXISTS:
            problems.append(
                "operator: must be Exists when `key` is empty, which means "
                '"match all values and all keys"'
            )
        if self.toleration_seconds is not None and self.effect is not TaintEffect.NO_EXECUTE:
            problems.append("effect: must be 'NoExecute' when `tolerationSeconds` is set")
        if self.operator is TolerationOperator.EXISTS:
            if self.value:
                problems.append("value: must be empty when `operator` is 'Exists'")
        else:
            problems.extend(f"value: {m}" for m in label_syntax.label_value_errors(self.value))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def tolerates(self, taint: Taint) -> bool:
        """Upstream ``Toleration.ToleratesTaint``."""
        if self.effect is not None and self.effect is not taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator is TolerationOperator.EXISTS:
            return True
        return self.value == (taint.value or "")


def tolerations_tolerate_taint(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    """Whether any of ``tolerations`` tolerates ``taint``."""
    return any(toleration.tolerates(taint) for toleration in tolerations)


def find_untolerated_taint(
    taints: Iterable[Taint],
    tolerations: Sequence[Toleration],
    only: TaintFilter | None = None,
) -> Taint | None:
    """The first taint (among those ``only`` selects; all when None) no toleration tolerates."""
    for taint in taints:
        if only is not None and not only(taint):
            continue
        if not tolerations_tolerate_taint(tolerations, taint):
            return taint
    return None


def matching_tolerations(
    taints: Iterable[Taint], tolerations: Sequence[Toleration]
) -> list[Toleration] | None:
    """The first toleration matching each taint, in taint order; None if one is untolerated.

    Upstream ``GetMatchingTolerations``: NoExecute eviction takes the tolerationSeconds of the
    first toleration that matches, not the longest one.
    """
    used: list[Toleration] = []
    for taint in taints:
        found = next((t for t in tolerations if t.tolerates(taint)), None)
        if found is None:
            return None
        used.append(found)
    return used


def _condition_taints(passport: NodePassport, health: HealthState) -> list[Taint]:
    if health is HealthState.ALIVE:
        return []
    key = NOT_READY_TAINT_KEY if health is HealthState.NOT_READY else UNREACHABLE_TAINT_KEY
    # The recorded move of Ready away from True is when the silence was noticed; until the
    # lifecycle controller records it, the taint has no start time (counted from "now").
    ready = passport.status.condition("Ready")
    since = None
    if ready is not None and ready.status is not ConditionStatus.TRUE:
        since = ready.last_transition_time
    return [
        Taint(key=key, effect=effect, time_added=since)
        for effect in (TaintEffect.NO_SCHEDULE, TaintEffect.NO_EXECUTE)
    ]


def node_taints(entry: RegistryEntry) -> list[Taint]:
    """The node's own taints (``spec.taints``) and those its health implies, in that order."""
    declared = list(entry.passport.spec.taints or ())
    return declared + _condition_taints(entry.passport, entry.health_state)
