"""The group's objects (NodePassport, NodePassportList, Lease) and their registry entries.

A NodePassport object is the passport exactly as its node sent it (seed 2.4), with the
registry's facts added where a Kubernetes user looks for them and nowhere else:

- ``metadata``: ``creationTimestamp`` (= registration), ``resourceVersion``, ``generation``;
- ``status``: ``healthState``, ``lastSeen``, ``registeredAt``, ``schedulable`` beside the
  node's own ``phase``, ``conditions`` and ``currentTasks`` (with the lifecycle controller's
  Ready=Unknown overlay while the node is not ALIVE, as the registry already shows it);
  once a verifier has recorded results, ``status.verification`` (each claim's state, the
  results, ``trusted``) and the ``Trusted`` condition, written only through the
  ``verification`` subresource.

``entry_to_object`` and ``object_to_entry`` are inverses: a client rebuilds the very
``RegistryEntry`` the server held, so ``find_nodes`` answers the seed's types over HTTP too.
The server-owned fields are taken out of the passport on the way back, so a passport never
carries them (a node that sent a field of the same name has it replaced, not merged).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

import pydantic
from pydantic import ConfigDict, Field

from node_registry import errors
from node_registry.kube.meta import (
    META_GROUP_VERSION,
    KubeModel,
    ListMeta,
    list_meta,
    rfc3339,
    rfc3339_micro,
)
from node_registry.passport import API_VERSION, KIND, NodePassport
from node_registry.passport import Metadata as PassportMetadata
from node_registry.passport import Status as PassportStatus
from node_registry.passport.objects import SERVER_METADATA, SERVER_STATUS, passport_of
from node_registry.passport.verification import (
    TRUSTED,
    CapabilityVerification,
    VerificationState,
    claim_states,
)
from node_registry.passport.versions import translate_pydantic_error
from node_registry.registry.decide import ready_to_work
from node_registry.registry.entry import RegistryEntry
from node_registry.registry.registry import is_schedulable
from node_registry.store import HealthState

LIST_KIND = f"{KIND}List"
LEASE_KIND = "Lease"


class VerificationStatus(KubeModel):
    """The verifier's results for the node's claims (registry-owned: seed 3.2)."""

    trusted: bool = Field(description="False once a claim the node still makes has Failed")
    capabilities: dict[str, str] = Field(
        default_factory=dict,
        description="Each claimed capability's state: Verified, Failed, Unknown, Unverified "
        "(never probed, or changed since its result)",
    )
    results: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The last result per capability (state, reason, message, checkedAt, "
        "probe, capabilityVersion, paramsDigest, latencySeconds, consecutiveFailures)",
    )


class NodePassportMetadata(PassportMetadata):
    """The passport's identity as the node sent it, plus what the registry adds."""

    creation_timestamp: datetime | None = Field(
        default=None,
        alias="creationTimestamp",
        description="When the node first registered (the registry's clock); set by the server",
    )
    resource_version: str | None = Field(
        default=None,
        alias="resourceVersion",
        description="The registry's version of this object: opaque; a watch resumes from it",
    )
    generation: int | None = Field(
        default=None,
        description="Bumped by the server when the spec changes (not the status or labels)",
    )
    managed_fields: list[dict[str, Any]] | None = Field(
        default=None,
        alias="managedFields",
        description="Which field manager owns which fields (server-side apply); set by the server",
    )


class NodePassportStatus(PassportStatus):
    """The node's report (phase, conditions, tasks) and the registry's view of the node."""

    health_state: HealthState | None = Field(
        default=None,
        alias="healthState",
        description="The registry's verdict from the node's heartbeats: ALIVE, NOT_READY, OFFLINE",
    )
    last_seen: datetime | None = Field(
        default=None, alias="lastSeen", description="The node's last heartbeat (lease renewal)"
    )
    registered_at: datetime | None = Field(
        default=None, alias="registeredAt", description="When the node first registered"
    )
    schedulable: bool | None = Field(
        default=None,
        description="What find_nodes(only_healthy=True) selects: ALIVE, Running, not Ready=False",
    )
    verification: VerificationStatus | None = Field(
        default=None,
        description="The verifier's results (written through nodepassports/NAME/verification)",
    )


class NodePassportObject(NodePassport):
    """A node of the registry: its NODE_PASSPORT as sent, with the registry's view added."""

    model_config = ConfigDict(title="NodePassport")

    metadata: NodePassportMetadata = Field(
        description="Who the node is (uid, name, type, labels), and the registry's versions"
    )
    status: NodePassportStatus = Field(
        default_factory=NodePassportStatus,
        description="How the node is: its own report, and the registry's view (healthState)",
    )


class NodePassportList(KubeModel):
    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["NodePassportList"] = "NodePassportList"
    metadata: ListMeta = Field(default_factory=ListMeta)
    items: list[NodePassportObject]


class LeaseMeta(KubeModel):
    name: str = Field(description="The node's name: a node's lease is named after it")
    resource_version: str | None = Field(
        default=None, alias="resourceVersion", description="The node's resourceVersion"
    )
    creation_timestamp: datetime | None = Field(
        default=None, alias="creationTimestamp", description="When the node first registered"
    )


class LeaseSpec(KubeModel):
    holder_identity: str | None = Field(
        default=None, alias="holderIdentity", description="The node holding it: its own name"
    )
    lease_duration_seconds: int | None = Field(
        default=None,
        alias="leaseDurationSeconds",
        description="How long a renewal counts (the registry's heartbeat TTL)",
    )
    renew_time: datetime | None = Field(
        default=None,
        alias="renewTime",
        description="The last renewal, by the registry's clock (a PUT renews: the heartbeat)",
    )


class Lease(KubeModel):
    """A node's heartbeat (``coordination.k8s.io/v1`` Lease, in our group)."""

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["Lease"] = "Lease"
    metadata: LeaseMeta = Field(description="The lease's name: the node's")
    spec: LeaseSpec = Field(default_factory=LeaseSpec, description="Who holds it, when renewed")


class _Renewal(pydantic.BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class LeaseRenewalMeta(_Renewal):
    name: str
    resource_version: str | None = Field(default=None, alias="resourceVersion")


class LeaseRenewalSpec(_Renewal):
    holder_identity: str | None = Field(default=None, alias="holderIdentity", max_length=253)
    lease_duration_seconds: int | None = Field(
        default=None, alias="leaseDurationSeconds", ge=1, le=86_400
    )
    renew_time: datetime | None = Field(default=None, alias="renewTime")


class LeaseRenewal(_Renewal):
    """A Lease as a node PUTs it to renew (the heartbeat): strict, bounded, every field
    optional; the registry takes the renew time from its own clock."""

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["Lease"] = "Lease"
    metadata: LeaseRenewalMeta | None = None
    spec: LeaseRenewalSpec = Field(default_factory=LeaseRenewalSpec)


class LeaseList(KubeModel):
    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["LeaseList"] = "LeaseList"
    metadata: ListMeta = Field(default_factory=ListMeta)
    items: list[Lease]


# -- conversions ---------------------------------------------------------------------------


def entry_to_object(entry: RegistryEntry) -> dict[str, Any]:
    """The NodePassport object for ``entry``, JSON-ready (built directly: lists build many)."""
    return _object(
        entry, entry.health_state.value, rfc3339_micro(entry.last_seen), is_schedulable(entry)
    )


def _object(entry: RegistryEntry, health: str, seen: str, schedulable: Any) -> dict[str, Any]:
    doc = entry.passport.to_dict()
    _add_metadata(doc["metadata"], entry)
    status = doc.setdefault("status", {})
    status["healthState"] = health
    status["lastSeen"] = seen
    status["registeredAt"] = rfc3339_micro(entry.registered_at)
    status["schedulable"] = schedulable
    if entry.verification:
        _add_verification(status, entry)
    return doc


def _add_metadata(meta: dict[str, Any], entry: RegistryEntry) -> None:
    meta["creationTimestamp"] = rfc3339(entry.registered_at)
    meta["resourceVersion"] = str(entry.resource_version)
    meta["generation"] = entry.generation


def dumps(doc: Any) -> bytes:
    """JSON as the server sends it (Starlette's ``JSONResponse``): compact, UTF-8."""
    return json.dumps(
        doc, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


# Stand-ins for the three fields that change between reads of one stored version (health is
# judged from the clock at each read). Should a passport hold the same text, the split
# does not find each exactly once, in order, and that version is encoded whole every time.
_HEALTH, _SEEN, _SCHEDULABLE = "\x00health\x00", "\x00seen\x00", "\x00schedulable\x00"
_STAND_INS = tuple(dumps(s) for s in (_HEALTH, _SEEN, _SCHEDULABLE))
_HEALTH_BYTES = {state: dumps(state.value) for state in HealthState}
_OBJECT_BYTES = "NodePassport JSON"
_SEEN_BYTES = "lastSeen JSON"
# What a version keeps is tagged with the id of the passport it was made from, not the
# passport: a tuple of ints and bytes leaves the garbage collector's lists, so 100,000
# versions' caches add nothing to a full collection. The id is that passport's while the
# version lives (its record, or its memo for the shown one, holds it), so an equal id is
# the same passport; an entry given another passport finds the id differ.


def object_bytes(entry: RegistryEntry) -> bytes:
    """``dumps(entry_to_object(entry))``, encoded once per stored version and shared.

    A list joins what each node's version already holds (``RegistryEntry.memo``), filling
    in only what a read judges anew: health, last seen and schedulable. Raises what
    ``dumps`` raises for a value JSON cannot carry, on every read of that version.
    """
    memo = entry.memo
    if memo is None:  # not a stored version's (a client's entry): nowhere to keep it
        return dumps(entry_to_object(entry))
    cached = memo.get(_OBJECT_BYTES)
    if cached is None or cached[0] != id(entry.passport):
        cached = _fragments(entry)
        if cached[1] is not None:
            memo[_OBJECT_BYTES] = cached
    _, parts, schedulable_if_alive = cached
    health = entry.health_state
    if parts is None:
        return dumps(entry_to_object(entry))
    seen = _seen(entry.last_seen, memo)
    alive = health is HealthState.ALIVE
    schedulable = b"true" if alive and schedulable_if_alive else b"false"
    return b"".join(
        (parts[0], _HEALTH_BYTES[health], parts[1], seen, parts[2], schedulable, parts[3])
    )


def partial_object_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """A NodePassport object's ``PartialObjectMetadata`` (what ``kubectl get`` rows carry)."""
    return {
        "apiVersion": META_GROUP_VERSION,
        "kind": "PartialObjectMetadata",
        "metadata": obj["metadata"],
    }


_METADATA_BYTES = "PartialObjectMetadata JSON"


def metadata_bytes(entry: RegistryEntry) -> bytes:
    """``dumps(partial_object_metadata(entry_to_object(entry)))``, once per stored version.

    Nothing in an object's metadata is judged at the read (health, last seen are status),
    so the whole document is kept in the version's memo, as ``object_bytes`` keeps its
    fragments, and goes with the version.
    """
    memo = entry.memo
    if memo is not None:
        cached = memo.get(_METADATA_BYTES)
        if cached is not None and cached[0] == id(entry.passport):
            kept: bytes = cached[1]
            return kept
    # Only the metadata is dumped: a tenth of the passport, and dumped with the same options
    # as ``to_dict`` (``entry_to_object``'s metadata, key for key).
    meta = entry.passport.metadata.model_dump(mode="json", by_alias=True, exclude_none=True)
    _add_metadata(meta, entry)
    data = dumps(partial_object_metadata({"metadata": meta}))
    if memo is not None:
        memo[_METADATA_BYTES] = (id(entry.passport), data)
    return data


def _seen(moment: datetime, memo: dict[Any, Any]) -> bytes:
    # A node renews every 10 s: lists in between find its last renewal already formatted.
    cached = memo.get(_SEEN_BYTES)
    if cached is not None and cached[0] == moment:
        seen: bytes = cached[1]
        return seen
    seen = b'"' + rfc3339_micro(moment).encode() + b'"'
    memo[_SEEN_BYTES] = (moment, seen)
    return seen


def _fragments(
    entry: RegistryEntry,
) -> tuple[int, tuple[bytes, bytes, bytes, bytes] | None, bool]:
    text = dumps(_object(entry, _HEALTH, _SEEN, _SCHEDULABLE))
    schedulable_if_alive = ready_to_work(entry.passport)
    health, seen, schedulable = _STAND_INS
    first, _, rest = text.partition(health)
    second, _, rest = rest.partition(seen)
    third, _, fourth = rest.partition(schedulable)
    # Each stand-in exactly once, in this order, or the split is not the object's.
    if any(text.count(stand_in) != 1 for stand_in in _STAND_INS) or not (
        len(first) < text.find(seen) < text.find(schedulable)
    ):
        return id(entry.passport), None, schedulable_if_alive
    return id(entry.passport), (first, second, third, fourth), schedulable_if_alive


def _add_verification(status: dict[str, Any], entry: RegistryEntry) -> None:
    results = entry.verification
    states = claim_states(entry.passport, results)
    failed = sorted(name for name, state in states.items() if state == VerificationState.FAILED)
    status["verification"] = {
        "trusted": not failed,
        "capabilities": states,
        "results": [r.to_dict() for r in results.values()],
    }
    if failed:
        reasons = ", ".join(f"{name} ({results[name].reason})" for name in failed)
        condition = {
            "type": TRUSTED,
            "status": "False",
            "reason": "CapabilityVerificationFailed",
            "message": f"failed verification: {reasons}",
            "lastTransitionTime": rfc3339(max(results[name].checked_at for name in failed)),
        }
    else:
        condition = {
            "type": TRUSTED,
            "status": "True",
            "reason": "NoCapabilityFailed",
            "message": "no claimed capability failed verification",
        }
    status["conditions"] = [*status.get("conditions", []), condition]


def verification_of(doc: dict[str, Any]) -> dict[str, CapabilityVerification]:
    """The results in a NodePassport object's ``status.verification``, by capability."""
    status = doc.get("status")
    verification = status.get("verification") if isinstance(status, dict) else None
    if not isinstance(verification, dict):
        return {}
    try:
        results = [CapabilityVerification.model_validate(r) for r in verification["results"]]
    except (KeyError, TypeError, pydantic.ValidationError) as exc:
        raise errors.ValidationError(
            "not a NodePassport object as the registry sends it",
            [errors.FieldError("status.verification.results", str(exc))],
        ) from None
    return {r.capability: r for r in results}


def stamp_conditions(
    before: list[dict[str, Any]], after: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """``after``'s conditions with the times the node left out, as ``update_status`` sets them.

    A condition new or changed since ``before`` without ``lastTransitionTime`` gets the old one
    if its status is the same, else ``now``; without ``lastHeartbeatTime``, ``now``. A time
    equal to the old one counts as left out: a strategic merge patch carries the old times
    into the condition it merges, and a changed status would keep a stale transition time.
    Conditions the write did not touch keep exactly what they had.
    """
    old = {c.get("type"): c for c in before if isinstance(c, dict)}
    stamped = []
    for given in after:
        previous = old.get(given.get("type")) if isinstance(given, dict) else None
        if not isinstance(given, dict) or given == previous:
            stamped.append(given)
            continue
        cond = dict(given)
        if previous is not None:
            for key in ("lastTransitionTime", "lastHeartbeatTime"):
                if key in cond and cond[key] == previous.get(key):
                    del cond[key]
        if "lastTransitionTime" not in cond:
            same = previous is not None and previous.get("status") == cond.get("status")
            kept = previous.get("lastTransitionTime") if same and previous else None
            cond["lastTransitionTime"] = kept or rfc3339(now)
        cond.setdefault("lastHeartbeatTime", rfc3339(now))
        stamped.append(cond)
    return stamped


def object_to_entry(doc: dict[str, Any]) -> RegistryEntry:
    """The registry entry a NodePassport object (as the server sent it) describes."""
    try:
        passport = NodePassport.model_validate(passport_of(doc))
    except pydantic.ValidationError as exc:
        raise errors.ValidationError(
            "not a NodePassport object", translate_pydantic_error(exc)
        ) from None
    try:
        meta, status = doc["metadata"], doc["status"]
        return RegistryEntry(
            node_id=passport.node_id,
            node_kind=passport.metadata.node_type,
            passport=passport,
            last_seen=datetime.fromisoformat(status["lastSeen"]),
            health_state=HealthState(status["healthState"]),
            registered_at=datetime.fromisoformat(status["registeredAt"]),
            resource_version=int(meta["resourceVersion"]),
            verification=verification_of(doc),
            generation=int(meta.get("generation", 1)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.ValidationError(
            "not a NodePassport object as the registry sends it",
            [errors.FieldError("", f"{type(exc).__name__}: {exc}")],
        ) from None


def list_to_object(
    items: list[RegistryEntry],
    resource_version: int,
    continue_token: str | None = None,
    remaining: int | None = None,
) -> dict[str, Any]:
    return {
        **list_head(resource_version, continue_token, remaining),
        "items": [entry_to_object(e) for e in items],
    }


def list_head(
    resource_version: int, continue_token: str | None = None, remaining: int | None = None
) -> dict[str, Any]:
    """A NodePassportList without its items (``apiVersion``, ``kind``, ``metadata``)."""
    return {
        "apiVersion": API_VERSION,
        "kind": LIST_KIND,
        "metadata": list_meta(resource_version, continue_token, remaining),
    }


def lease_object(entry: RegistryEntry, ttl_seconds: float) -> dict[str, Any]:
    """The node's Lease: renewed at its last heartbeat, held by the node itself."""
    name = entry.name
    return {
        "apiVersion": API_VERSION,
        "kind": LEASE_KIND,
        "metadata": {
            "name": name,
            "creationTimestamp": rfc3339(entry.registered_at),
            "resourceVersion": str(entry.resource_version),
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": round(ttl_seconds),
            "renewTime": rfc3339_micro(entry.last_seen),
        },
    }


__all__ = [
    "LEASE_KIND",
    "LIST_KIND",
    "SERVER_METADATA",
    "SERVER_STATUS",
    "Lease",
    "LeaseList",
    "LeaseRenewal",
    "NodePassportList",
    "NodePassportMetadata",
    "NodePassportObject",
    "NodePassportStatus",
    "dumps",
    "entry_to_object",
    "lease_object",
    "list_head",
    "list_to_object",
    "metadata_bytes",
    "object_bytes",
    "object_to_entry",
    "partial_object_metadata",
    "passport_of",
    "stamp_conditions",
]
