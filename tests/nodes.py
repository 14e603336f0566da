"""Registry entries for scheduling tests, built the way a registry builds them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from conftest import passport
from node_registry import HealthState, RegistryEntry, load_passport

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def node(
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    taints: Sequence[Mapping[str, Any]] = (),
    resources: Mapping[str, str] | None = None,
    max_tasks: int | None = 4,
    current: int = 0,
    health: HealthState = HealthState.ALIVE,
    status: Mapping[str, Any] | None = None,
) -> RegistryEntry:
    """A node with exactly these labels (no capabilities; resources only when given)."""
    doc = passport(
        name, capabilities=(), labels=dict(labels or {}), resources=dict(resources or {})
    )
    doc["spec"]["maxConcurrentTasks"] = max_tasks
    if taints:
        doc["spec"]["taints"] = [dict(t) for t in taints]
    doc["status"]["currentTasks"] = current
    doc["status"].update(status or {})
    checked = load_passport(doc)
    return RegistryEntry(
        node_id=checked.node_id,
        node_kind=checked.metadata.node_type,
        passport=checked,
        last_seen=T0,
        health_state=health,
        registered_at=T0,
        resource_version=1,
    )
