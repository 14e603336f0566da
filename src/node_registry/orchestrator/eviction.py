"""NoExecute: which tasks running on a node must leave it, and when (Kubernetes' taint eviction).

Ported from ``pkg/controller/tainteviction`` (``processPodOnNode``, ``getMinTolerationTime``):

* a running task that does not tolerate every NoExecute taint of its node is evicted now;
* otherwise it stays for the smallest ``tolerationSeconds`` among the tolerations that matched
  (the first matching one per taint); none set means it stays for good; 0 or less means now.

Upstream counts the time from when its controller noticed the taint. Here it is counted from
the taint's ``timeAdded``, so the answer is a pure function of the node, the tasks and
``now`` — call it again later with a later ``now`` and the same node and it agrees with
itself. A taint without ``timeAdded`` is counted from ``now``: the caller, which saw it
appear, keeps the deadline (or the node writes ``timeAdded``, as ``kubectl taint`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from node_registry.orchestrator.taints import matching_tolerations, node_taints
from node_registry.orchestrator.task import Placement
from node_registry.passport.models import Taint, TaintEffect
from node_registry.registry import RegistryEntry

__all__ = ["Eviction", "evictions"]


@dataclass(frozen=True, slots=True)
class Eviction:
    """``task`` must leave ``node`` at ``at`` (due once ``at <= now``) because of ``taint``."""

    task: str
    node: str
    taint: Taint
    at: datetime

    def due(self, now: datetime) -> bool:
        return self.at <= now


def _eviction(placement: Placement, taints: list[Taint], now: datetime) -> Eviction | None:
    tolerations = placement.requirements.tolerations
    used = matching_tolerations(taints, tolerations)
    if used is None:
        untolerated = next(t for t in taints if not any(x.tolerates(t) for x in tolerations))
        return Eviction(placement.task, placement.node, untolerated, now)
    deadlines = [
        ((taint.time_added or now) + timedelta(seconds=max(t.toleration_seconds, 0)), taint)
        for taint, t in zip(taints, used, strict=True)
        if t.toleration_seconds is not None
    ]
    if not deadlines:
        return None
    at, taint = min(deadlines, key=lambda d: d[0])
    return Eviction(placement.task, placement.node, taint, at)


def evictions(
    node: RegistryEntry, running: Iterable[Placement], *, now: datetime
) -> list[Eviction]:
    """The tasks of ``running`` on ``node`` that its NoExecute taints push out, soonest first.

    A task that tolerates every NoExecute taint for good is not listed; one due later is
    listed with its time, so the caller can act then (``Eviction.due(now)``). The taints are
    the node's own and those its health implies (``node.ai-team.io/unreachable``, ...).
    """
    taints = [t for t in node_taints(node) if t.effect is TaintEffect.NO_EXECUTE]
    if not taints:
        return []
    found = [
        eviction
        for placement in running
        if placement.node == node.name
        if (eviction := _eviction(placement, taints, now)) is not None
    ]
    found.sort(key=lambda e: (e.at, e.task))
    return found
