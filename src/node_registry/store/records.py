"""What a store keeps per node: the passport plus the few facts the registry adds around it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from node_registry.passport import NodePassport, effective_labels


class HealthState(StrEnum):
    """Seed 2.4's health states, in the order a silent node passes through them."""

    ALIVE = "ALIVE"
    NOT_READY = "NOT_READY"
    OFFLINE = "OFFLINE"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One stored node.

    ``health`` is the state the lifecycle controller last *recorded* (and wrote into
    ``passport.status``); readers compute the current state from the lease instead, so a
    lagging controller never makes a dead node look alive.
    """

    passport: NodePassport
    registered_at: datetime
    health: HealthState = HealthState.ALIVE
    health_changed_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Effective labels are read by every selector match; compute them once per write.
        object.__setattr__(self, "labels", effective_labels(self.passport))

    @property
    def node_id(self) -> str:
        return self.passport.node_id

    @property
    def name(self) -> str:
        return self.passport.metadata.name

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON document (what the etcd backend writes under the node's key)."""
        return {
            "passport": self.passport.to_dict(),
            "registeredAt": self.registered_at.isoformat(),
            "health": self.health.value,
            "healthChangedAt": (
                self.health_changed_at.isoformat() if self.health_changed_at else None
            ),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> NodeRecord:
        changed = doc.get("healthChangedAt")
        return cls(
            passport=NodePassport.model_validate(doc["passport"]),
            registered_at=datetime.fromisoformat(doc["registeredAt"]),
            health=HealthState(doc["health"]),
            health_changed_at=datetime.fromisoformat(changed) if changed else None,
        )
