"""``scheduler.select_best``: the seed's example scheduler (seed 2.5), least-loaded first.

The registry only returns candidates; choosing among them is the Orchestrator's business
(seed 2.5), so this is an example policy, not part of the registry's contract.
"""

from __future__ import annotations

from collections.abc import Sequence

from node_registry.registry.entry import RegistryEntry


def free_slots(entry: RegistryEntry) -> int | None:
    """Tasks the node can still take; None when it declares no limit."""
    limit = entry.passport.spec.max_concurrent_tasks
    if limit is None:
        return None
    return max(limit - entry.passport.status.current_tasks, 0)


def select_best(candidates: Sequence[RegistryEntry]) -> RegistryEntry | None:
    """The candidate with the most free slots (unlimited first), then the fewest tasks, by name.

    Nodes with no free slot are never chosen; None when nobody can take the task.
    """

    def rank(entry: RegistryEntry) -> tuple[int, int, str]:
        slots = free_slots(entry)
        unlimited = 1 if slots is None else 0
        return (-unlimited, -(slots or 0), entry.name)

    available = [c for c in candidates if free_slots(c) != 0]
    return min(available, key=rank, default=None)
