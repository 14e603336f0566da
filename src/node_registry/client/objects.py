"""What the client hands back: registry entries, lists and watch events, read from the API's
NodePassport objects (``/apis/ai_team.io/v1/nodepassports``), with no I/O.

The classes carry the embedded registry's names and fields (``RegistryEntry.node_id``,
``.health_state``, ``.passport``...; ``WatchEvent.type``, ``.entry``), so the seed's calls
move from ``Registry`` to ``RegistryClient`` with one line changed, but they are the client's
own: the client never imports the registry (it stays light, and the layers say so). Health
and phase enums are the package's (``HealthState`` compares identical to the registry's).

A NodePassport object is the passport as its node sent it plus the registry's view, which
this module takes back out of it: ``metadata.creationTimestamp``/``resourceVersion``/
``generation`` and ``status.healthState``/``lastSeen``/``registeredAt``/``schedulable``.
Anything the server sends that is not such an object is an ``InvalidResponseError``, never a
``KeyError`` or a pydantic error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pydantic

from node_registry.errors import FieldError, InvalidResponseError, RegistryError, error_from_status
from node_registry.passport import API_VERSION, KIND, NodePassport
from node_registry.passport.objects import passport_of
from node_registry.passport.verification import CapabilityVerification
from node_registry.store.records import HealthState


@dataclass(slots=True)
class RegistryEntry:
    """Seed 2.4's registry entry as the server last reported it (a NodePassport object).

    ``schedulable`` is the server's verdict for ``only_healthy`` at the time of the read.
    """

    node_id: str
    #: A ``NodeType`` member for a built-in type, else the registered type's name.
    node_kind: str
    passport: NodePassport
    last_seen: datetime
    health_state: HealthState
    registered_at: datetime
    resource_version: int
    schedulable: bool = False
    #: The verifier's last result per capability (``status.verification.results``).
    verification: Mapping[str, CapabilityVerification] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.passport.metadata.name


class EventType(StrEnum):
    """Kubernetes' watch event types, and the informer's name for a recorded health change.

    The API sends a health transition as a MODIFIED whose ``status.healthState`` changed; a
    client that knows the node's previous state (the informer's cache, ``describe``) calls it
    HEALTH_CHANGED, as the embedded registry does.
    """

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    HEALTH_CHANGED = "HEALTH_CHANGED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change, with the entry as it was right after it (its last state, for DELETED)."""

    type: EventType
    entry: RegistryEntry
    resource_version: int
    previous_health: HealthState | None = None
    previous: RegistryEntry | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class NodeList:
    """A consistent snapshot and the resource version to start a watch from."""

    items: list[RegistryEntry]
    resource_version: int


# -- reading the API's documents ---------------------------------------------------------


def invalid(what: str, problem: object) -> InvalidResponseError:
    """The error for an answer that is not what the API sends."""
    return InvalidResponseError(f"the registry sent {what}: {problem}")


def mapping(doc: object, what: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise invalid(what, f"expected a JSON object, got {type(doc).__name__}")
    return doc


def version_of(value: object, what: str) -> int:
    """A ``resourceVersion``: opaque to Kubernetes clients, a decimal revision here."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise invalid(what, f"resourceVersion {value!r} is not a registry version")


def _moment(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{where} is {value!r}, not a timestamp")
    return datetime.fromisoformat(value)


def entry_of(doc: object) -> RegistryEntry:
    """The registry entry a NodePassport object, as the server sends it, describes."""
    obj = mapping(doc, "a NodePassport that is not an object")
    try:
        passport = NodePassport.model_validate(passport_of(obj))
    except pydantic.ValidationError as exc:
        problems = [
            FieldError(".".join(str(p) for p in e["loc"]), e["msg"])
            for e in exc.errors(include_url=False)[:3]
        ]
        detail = "; ".join(map(str, problems))
        raise invalid("a NodePassport that does not validate", detail) from None
    try:
        meta, status = obj["metadata"], obj["status"]
        return RegistryEntry(
            node_id=passport.node_id,
            node_kind=passport.metadata.node_type,
            passport=passport,
            last_seen=_moment(status["lastSeen"], "status.lastSeen"),
            health_state=HealthState(status["healthState"]),
            registered_at=_moment(status["registeredAt"], "status.registeredAt"),
            resource_version=version_of(meta["resourceVersion"], "a NodePassport"),
            schedulable=status.get("schedulable") is True,
            verification=_verification(status.get("verification")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise invalid("a NodePassport without the registry's fields", repr(exc)) from None


def _verification(doc: object) -> dict[str, CapabilityVerification]:
    if doc is None:
        return {}
    results = mapping(doc, "a status.verification that is not an object").get("results")
    try:
        checked = [CapabilityVerification.model_validate(r) for r in results or []]
    except (TypeError, pydantic.ValidationError) as exc:
        raise invalid("a status.verification that does not validate", exc) from None
    return {r.capability: r for r in checked}


def node_list(doc: object) -> tuple[NodeList, str | None]:
    """A NodePassportList page: its entries and version, and the next page's continue token."""
    listed = mapping(doc, "a list that is not an object")
    meta = mapping(listed.get("metadata"), "a list without metadata")
    items = listed.get("items")
    if not isinstance(items, list):
        raise invalid("a list without items", f"items is {type(items).__name__}")
    token = meta.get("continue") or None
    if token is not None and not isinstance(token, str):
        raise invalid("a list with a bad continue token", repr(token))
    version = version_of(meta.get("resourceVersion"), "a list")
    return NodeList([entry_of(item) for item in items], version), token


def renew_time(doc: object) -> datetime:
    """A Lease's ``spec.renewTime``."""
    lease = mapping(doc, "a Lease that is not an object")
    try:
        return _moment(lease["spec"]["renewTime"], "spec.renewTime")
    except (KeyError, TypeError, ValueError) as exc:
        raise invalid("a Lease without spec.renewTime", repr(exc)) from None


@dataclass(frozen=True, slots=True)
class Renewals:
    """What a batch of lease renewals did: each lease renewed (its renew time) or refused
    (the error its single renewal would have raised: ``NotFoundError`` means register
    again)."""

    renewed: dict[str, datetime] = field(default_factory=dict)
    refused: dict[str, RegistryError] = field(default_factory=dict)

    def add(self, other: Renewals) -> None:
        self.renewed.update(other.renewed)
        self.refused.update(other.refused)


def renewals(doc: object, names: list[str]) -> Renewals:
    """A ``LeaseRenewal``'s results, one per name asked for; a missing one is invalid."""
    answer = mapping(doc, "a LeaseRenewal that is not an object")
    status = mapping(answer.get("status"), "a LeaseRenewal without status")
    results = status.get("results")
    if not isinstance(results, list):
        raise invalid("a LeaseRenewal without status.results", type(results).__name__)
    done = Renewals()
    for index, item in enumerate(results):
        result = mapping(item, f"status.results[{index}] that is not an object")
        name = result.get("name")
        if not isinstance(name, str):
            raise invalid(f"status.results[{index}] without a name", repr(name))
        if "error" in result:
            error = mapping(result["error"], f"status.results[{index}].error")
            done.refused[name] = error_from_status(error)
        else:
            done.renewed[name] = _moment(result.get("renewTime"), f"status.results[{index}]")
    missing = [n for n in names if n not in done.renewed and n not in done.refused]
    if missing:
        raise invalid("a LeaseRenewal without a result for every lease", ", ".join(missing[:5]))
    return done


# -- health transitions ------------------------------------------------------------------


def classify(event: WatchEvent, before: HealthState | None) -> WatchEvent:
    """``event`` as the embedded registry would name it, given the node's health ``before``
    it (None: unknown): a MODIFIED that changed the health is a HEALTH_CHANGED, and
    MODIFIED, HEALTH_CHANGED and DELETED carry ``previous_health``."""
    if event.type == EventType.ADDED or before is None:
        return event
    kind = event.type
    if kind == EventType.MODIFIED and before is not event.entry.health_state:
        kind = EventType.HEALTH_CHANGED
    return WatchEvent(kind, event.entry, event.resource_version, before)


class HealthTracker:
    """Names health transitions in a watch stream by remembering each node's last health
    (the API sends them as MODIFIED); for consumers of a watch that hold no cache."""

    def __init__(self) -> None:
        self._health: dict[str, HealthState] = {}

    def know(self, entries: Iterable[RegistryEntry]) -> None:
        """Start from a list's state (the watch then continues from its version)."""
        self._health.update((e.node_id, e.health_state) for e in entries)

    def __call__(self, event: WatchEvent) -> WatchEvent:
        node_id = event.entry.node_id
        if event.type == EventType.DELETED:
            before = self._health.pop(node_id, None)
        else:
            before = self._health.get(node_id)
            self._health[node_id] = event.entry.health_state
        return classify(event, before)


# -- writing them back -------------------------------------------------------------------


def _time(moment: datetime, fmt: str) -> str:
    return moment.astimezone(UTC).strftime(fmt)


def object_of(entry: RegistryEntry) -> dict[str, Any]:
    """The NodePassport object ``entry`` was read from (``entry_of``'s inverse), JSON-ready:
    what ``node-registry get -o yaml`` prints, as ``kubectl get np -o yaml`` does."""
    doc = entry.passport.to_dict()
    meta = doc["metadata"]
    meta["creationTimestamp"] = _time(entry.registered_at, "%Y-%m-%dT%H:%M:%SZ")
    meta["resourceVersion"] = str(entry.resource_version)
    status = doc.setdefault("status", {})
    status["healthState"] = entry.health_state.value
    status["lastSeen"] = _time(entry.last_seen, "%Y-%m-%dT%H:%M:%S.%fZ")
    status["registeredAt"] = _time(entry.registered_at, "%Y-%m-%dT%H:%M:%S.%fZ")
    status["schedulable"] = entry.schedulable
    return doc


def list_object(entries: list[RegistryEntry], resource_version: int) -> dict[str, Any]:
    """A NodePassportList of ``entries``."""
    return {
        "apiVersion": API_VERSION,
        "kind": f"{KIND}List",
        "metadata": {"resourceVersion": str(resource_version)},
        "items": [object_of(e) for e in entries],
    }


def event_object(event: WatchEvent) -> dict[str, Any]:
    """A watch event as the API streams it (a HEALTH_CHANGED is the MODIFIED it was)."""
    kind = EventType.MODIFIED if event.type == EventType.HEALTH_CHANGED else event.type
    return {"type": str(kind), "object": object_of(event.entry)}
