"""What readers get back: registry entries, watch events, lists, registry conditions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from node_registry.passport import NodePassport
from node_registry.passport.verification import (
    CapabilityVerification,
    registry_labels,
    strict_labels,
)
from node_registry.store.records import HealthState


@dataclass(slots=True)
class RegistryEntry:
    """Seed 2.4's registry entry: the passport as stored plus what the registry knows of it.

    ``health_state`` is computed from the lease at the moment of the read; ``passport.status``
    holds what was last recorded (by the node, or by the lifecycle controller).

    Each read builds fresh entries, so nothing stored changes if a caller edits one; that is
    why it is not frozen (a frozen dataclass costs 5x to build, and queries build thousands).
    """

    node_id: str
    node_kind: str
    passport: NodePassport
    last_seen: datetime
    health_state: HealthState
    registered_at: datetime
    resource_version: int
    #: The verifier's last result per capability (``status.verification`` of the object).
    verification: Mapping[str, CapabilityVerification] = field(default_factory=dict)
    #: ``verification.require``: only Verified claims match ``capability.<name>``.
    require_verified: bool = False
    #: The stored version's memo (``Versioned.memo``) when the entry shows one unchanged:
    #: encoders keep its wire bytes there, valid while ``passport`` is the one they encoded.
    memo: dict[Any, Any] | None = field(default=None, compare=False, repr=False)
    #: ``metadata.generation`` of the stored version (1 at registration, +1 per spec change).
    generation: int = 1

    @property
    def name(self) -> str:
        return self.passport.metadata.name

    @property
    def labels(self) -> dict[str, str]:
        """What selectors match (watches too): effective labels and verification labels,
        without the ``capability.<name>`` of claims that do not count."""
        labels = registry_labels(self.passport, self.verification)
        return strict_labels(labels) if self.require_verified else labels

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeId": self.node_id,
            "nodeKind": str(self.node_kind),
            "passport": self.passport.to_dict(),
            "lastSeen": self.last_seen.isoformat(),
            "healthState": self.health_state.value,
            "registeredAt": self.registered_at.isoformat(),
            "resourceVersion": str(self.resource_version),
        }


class EventType(StrEnum):
    """Watch event types: Kubernetes' three, plus a MODIFIED that changed recorded health.

    A cache applies HEALTH_CHANGED exactly like MODIFIED; the separate name lets consumers
    react to transitions without diffing.
    """

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    HEALTH_CHANGED = "HEALTH_CHANGED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change, with the entry as it was right after it (before it, for DELETED)."""

    type: EventType
    entry: RegistryEntry
    resource_version: int
    previous_health: HealthState | None = None
    #: The node as it was before a MODIFIED/HEALTH_CHANGED: a filtered watch needs it to
    #: tell "stopped matching" (sent as DELETED) from "never matched" (not sent).
    previous: RegistryEntry | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type.value, "object": self.entry.to_dict()}
        if self.previous_health is not None:
            doc["previousHealth"] = self.previous_health.value
        return doc


@dataclass(frozen=True, slots=True)
class NodeList:
    """A consistent snapshot and the resource version to start a watch from."""

    items: list[RegistryEntry]
    resource_version: int


@dataclass(frozen=True, slots=True)
class RegistryCondition:
    """A condition about the registry itself (for now: MassFailureProtection)."""

    type: str
    status: bool
    reason: str
    message: str
    last_transition_time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time.isoformat(),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RegistryCondition:
        return cls(
            str(doc["type"]),
            bool(doc["status"]),
            str(doc["reason"]),
            str(doc["message"]),
            datetime.fromisoformat(doc["lastTransitionTime"]),
        )
