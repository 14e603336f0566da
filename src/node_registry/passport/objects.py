"""The passport inside a NodePassport object: which fields the registry adds, and taking them
out again (what a client reads back, what a write route stores)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node_registry.passport.verification import TRUSTED

#: metadata fields the registry owns: never part of the stored passport.
SERVER_METADATA = ("creationTimestamp", "resourceVersion", "generation", "managedFields")
#: status fields the registry owns (its view of the node beside the node's own report).
SERVER_STATUS = ("healthState", "lastSeen", "registeredAt", "schedulable", "verification")


def passport_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The passport inside a NodePassport object: the object less the registry's fields."""
    passport = dict(doc)
    meta = passport.get("metadata")
    if isinstance(meta, Mapping):
        passport["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_METADATA}
    status = passport.get("status")
    if isinstance(status, Mapping):
        passport["status"] = {k: v for k, v in status.items() if k not in SERVER_STATUS}
        conditions = status.get("conditions")
        if isinstance(conditions, list):
            # The Trusted condition is the registry's, from the verifier's results.
            passport["status"]["conditions"] = [
                c for c in conditions if not (isinstance(c, Mapping) and c.get("type") == TRUSTED)
            ]
    return passport
