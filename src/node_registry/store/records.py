"""What a store keeps per node: the passport plus the few facts the registry adds around it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from node_registry.passport import NodePassport
from node_registry.passport.verification import CapabilityVerification, registry_labels


class HealthState(StrEnum):
    """Seed 2.4's health states, in the order a silent node passes through them."""

    ALIVE = "ALIVE"
    NOT_READY = "NOT_READY"
    OFFLINE = "OFFLINE"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One stored node.

    ``passport`` is exactly what the node sent and reported (its status included).
    ``health`` is the state the lifecycle controller last *recorded*, since
    ``health_changed_at``; ``unready_since`` is when the current silence was first recorded
    (None while ALIVE). Readers compute the current state from the lease instead, so a
    lagging controller never makes a dead node look alive. ``verification`` is the
    verifier's last result per capability (registry-owned status, never the node's).
    """

    passport: NodePassport
    registered_at: datetime
    health: HealthState = HealthState.ALIVE
    health_changed_at: datetime | None = None
    unready_since: datetime | None = None
    verification: Mapping[str, CapabilityVerification] = field(default_factory=dict)
    #: ``metadata.generation``: 1 at registration, one more at each change of the spec.
    generation: int = 1
    labels: dict[str, str] = field(init=False, compare=False, repr=False)
    node_id: str = field(init=False, compare=False, repr=False)
    name: str = field(init=False, compare=False, repr=False)
    kind: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Read on every query and selector match; computed once per write (str(UUID) alone
        # costs more than the rest of building an entry).
        object.__setattr__(self, "labels", registry_labels(self.passport, self.verification))
        object.__setattr__(self, "node_id", self.passport.node_id)
        object.__setattr__(self, "name", self.passport.metadata.name)
        object.__setattr__(self, "kind", self.passport.metadata.node_type)

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON document (what the etcd backend writes under the node's key)."""
        doc: dict[str, Any] = {
            "passport": self.passport.to_dict(),
            "registeredAt": self.registered_at.isoformat(),
            "health": self.health.value,
            "healthChangedAt": _iso(self.health_changed_at),
            "unreadySince": _iso(self.unready_since),
        }
        if self.verification:
            doc["verification"] = [r.to_dict() for r in self.verification.values()]
        if self.generation != 1:
            doc["generation"] = self.generation
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> NodeRecord:
        return cls(
            passport=NodePassport.model_validate(doc["passport"]),
            registered_at=datetime.fromisoformat(doc["registeredAt"]),
            health=HealthState(doc["health"]),
            health_changed_at=_from_iso(doc.get("healthChangedAt")),
            unready_since=_from_iso(doc.get("unreadySince")),
            verification={
                result.capability: result for result in map(_result, doc.get("verification", []))
            },
            # Records written before generations were kept read as their first.
            generation=int(doc.get("generation", 1)),
        )


def _result(doc: Any) -> CapabilityVerification:
    return CapabilityVerification.model_validate(doc)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
