"""The HTTP API's wire format, shared by the server and the client: no I/O here.

Objects follow Kubernetes conventions (``apiVersion``/``kind``/``metadata``, string
``resourceVersion``, list ``metadata.continue``, ``Status`` for errors, ``Lease`` for
heartbeats). One table (``ERRORS_BY_REASON``) maps the package's error classes to HTTP status
codes and back, so the client raises exactly what the embedded registry would have raised.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from node_registry import errors
from node_registry.passport import API_VERSION, Condition, NodePassport, Phase
from node_registry.passport.models import node_type_of
from node_registry.registry.entry import EventType, RegistryEntry, WatchEvent
from node_registry.registry.registry import is_schedulable
from node_registry.selectors import MAX_REQUIREMENTS, MAX_TOTAL_VALUES, MAX_VALUES
from node_registry.store import HealthState

API_PREFIX = f"/apis/{API_VERSION}"
ENTRY_KIND = "RegistryEntry"
LIST_KIND = "RegistryEntryList"
LEASE_KIND = "Lease"
BOOKMARK = "BOOKMARK"
ERROR = "ERROR"


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class ObjectMeta(_Wire):
    name: str
    uid: str | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    creation_timestamp: datetime | None = Field(default=None, alias="creationTimestamp")


class RegistryEntryModel(_Wire):
    """A node as the registry knows it: the passport as stored plus the registry's view."""

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["RegistryEntry"] = "RegistryEntry"
    node_id: str = Field(alias="nodeId")
    node_kind: Annotated[str, AfterValidator(node_type_of)] = Field(alias="nodeKind")
    passport: NodePassport
    last_seen: datetime = Field(alias="lastSeen")
    health_state: HealthState = Field(alias="healthState")
    registered_at: datetime = Field(alias="registeredAt")
    resource_version: str = Field(alias="resourceVersion")
    schedulable: bool = Field(
        description="What only_healthy selects: ALIVE, Running, not Ready=False"
    )


class ListMeta(_Wire):
    resource_version: str = Field(alias="resourceVersion")
    continue_: str | None = Field(default=None, alias="continue")
    remaining_item_count: int | None = Field(default=None, alias="remainingItemCount")


class RegistryEntryList(_Wire):
    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["RegistryEntryList"] = "RegistryEntryList"
    metadata: ListMeta
    items: list[RegistryEntryModel]


#: A qualified label name: a DNS subdomain prefix (253), "/", a name (63).
_KEY_LENGTH = 253 + 1 + 63
_VALUE_LENGTH = 63
_Key = Annotated[str, Field(max_length=_KEY_LENGTH)]
_Value = Annotated[str, Field(max_length=_VALUE_LENGTH)]


class MatchExpression(_Wire):
    key: _Key
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[_Value] = Field(default_factory=list, max_length=MAX_VALUES)


class LabelSelector(_Wire):
    """Bounded as the selector parser bounds it (``MAX_REQUIREMENTS``, ``MAX_VALUES``...), and
    refused here first, before a large body is validated item by item."""

    match_labels: dict[_Key, _Value] = Field(
        default_factory=dict, alias="matchLabels", max_length=MAX_REQUIREMENTS
    )
    match_expressions: list[MatchExpression] = Field(
        default_factory=list, alias="matchExpressions", max_length=MAX_REQUIREMENTS
    )

    @model_validator(mode="after")
    def _bounded(self) -> LabelSelector:
        count = len(self.match_labels) + len(self.match_expressions)
        if count > MAX_REQUIREMENTS:
            raise ValueError(f"{count} requirements in all; at most {MAX_REQUIREMENTS}")
        values = len(self.match_labels) + sum(len(e.values) for e in self.match_expressions)
        if values > MAX_TOTAL_VALUES:
            raise ValueError(f"{values} values in all; at most {MAX_TOTAL_VALUES}")
        return self


class SearchRequest(_Wire):
    """The seed's ``find_nodes(kind, selector, only_healthy)`` as a request body."""

    kind: str | None = Field(default=None, max_length=63)
    selector: LabelSelector | None = None
    only_healthy: bool = Field(default=False, alias="onlyHealthy")
    #: Only Verified claims match capability.<name>, and only trusted nodes (#12).
    only_verified: bool = Field(default=False, alias="onlyVerified")


class LeaseSpec(_Wire):
    holder_identity: str | None = Field(default=None, alias="holderIdentity", max_length=253)
    lease_duration_seconds: int | None = Field(
        default=None, alias="leaseDurationSeconds", ge=1, le=86_400
    )
    renew_time: datetime | None = Field(default=None, alias="renewTime")


class LeaseMeta(_Wire):
    name: str
    resource_version: str | None = Field(default=None, alias="resourceVersion")


class Lease(_Wire):
    """A node's heartbeat lease (Kubernetes ``coordination.k8s.io/v1`` Lease, in our group).

    Renewing it (PUT) is the heartbeat; the registry takes the renew time from its own clock.
    """

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["Lease"] = "Lease"
    metadata: LeaseMeta | None = None
    spec: LeaseSpec = Field(default_factory=LeaseSpec)


class StatusUpdate(_Wire):
    """A status subresource patch: the fields given change, conditions merge by type."""

    phase: Phase | None = None
    conditions: list[Condition] | None = Field(default=None, max_length=32)
    current_tasks: int | None = Field(default=None, alias="currentTasks", ge=0)


class StatusCause(_Wire):
    reason: str
    message: str
    field: str | None = None


class StatusDetails(_Wire):
    name: str | None = None
    group: str | None = None
    kind: str | None = None
    causes: list[StatusCause] = Field(default_factory=list)


class Status(_Wire):
    """Kubernetes' ``Status``: the body of every error response."""

    api_version: Literal["v1"] = Field(default="v1", alias="apiVersion")
    kind: Literal["Status"] = "Status"
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["Success", "Failure"] = "Failure"
    message: str = ""
    reason: str = ""
    details: StatusDetails | None = None
    code: int


class WatchEventModel(_Wire):
    """One line of a watch stream. BOOKMARK objects carry only ``resourceVersion``."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "HEALTH_CHANGED", "BOOKMARK", "ERROR"]
    object: RegistryEntryModel | Status | dict[str, Any]
    previous_health: HealthState | None = Field(default=None, alias="previousHealth")


def entry_to_wire(entry: RegistryEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": API_VERSION, "kind": ENTRY_KIND}
    doc.update(entry.to_dict())
    doc["schedulable"] = is_schedulable(entry)
    return doc


def entry_from_wire(doc: dict[str, Any]) -> RegistryEntry:
    return RegistryEntry(
        node_id=doc["nodeId"],
        node_kind=node_type_of(str(doc["nodeKind"])),
        passport=NodePassport.model_validate(doc["passport"]),
        last_seen=datetime.fromisoformat(doc["lastSeen"]),
        health_state=HealthState(doc["healthState"]),
        registered_at=datetime.fromisoformat(doc["registeredAt"]),
        resource_version=int(doc["resourceVersion"]),
    )


def list_to_wire(
    items: list[RegistryEntry],
    resource_version: int,
    continue_token: str | None = None,
    remaining: int | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if continue_token:
        meta["continue"] = continue_token
        meta["remainingItemCount"] = remaining
    return {
        "apiVersion": API_VERSION,
        "kind": LIST_KIND,
        "metadata": meta,
        "items": [entry_to_wire(e) for e in items],
    }


def event_to_wire(event: WatchEvent) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": event.type.value, "object": entry_to_wire(event.entry)}
    if event.previous_health is not None:
        doc["previousHealth"] = event.previous_health.value
    return doc


def bookmark_to_wire(resource_version: int) -> dict[str, Any]:
    return {
        "type": BOOKMARK,
        "object": {
            "apiVersion": API_VERSION,
            "kind": ENTRY_KIND,
            "metadata": {"resourceVersion": str(resource_version)},
        },
    }


def event_from_wire(doc: dict[str, Any]) -> WatchEvent | int:
    """A watch line as a WatchEvent, or the resource version a BOOKMARK carries.

    An ERROR line raises the error its Status names (410 Expired: list again).
    """
    kind = doc.get("type")
    obj = doc.get("object") or {}
    if kind == BOOKMARK:
        return int(obj["metadata"]["resourceVersion"])
    if kind == ERROR:
        raise error_from_status(obj)
    previous = doc.get("previousHealth")
    return WatchEvent(
        EventType(str(kind)),
        entry_from_wire(obj),
        int(obj["resourceVersion"]),
        HealthState(previous) if previous else None,
    )


# -- errors ------------------------------------------------------------------------------

#: Status ``reason`` -> the error class the client raises for it (``errors.ERRORS_BY_REASON``).
ERRORS_BY_REASON = errors.ERRORS_BY_REASON
error_from_status = errors.error_from_status


def status_from_error(
    exc: errors.RegistryError,
    *,
    name: str | None = None,
    kind: str = "nodes",
    group: str | None = None,
) -> dict[str, Any]:
    """The Kubernetes Status body for ``exc``; field errors become ``details.causes``."""
    causes: list[dict[str, Any]] = []
    message = str(exc)
    if isinstance(exc, errors.ValidationError):
        message = exc.message
        causes = [
            {"reason": "FieldValueInvalid", "message": e.message, "field": e.loc}
            for e in exc.errors
        ]
        if causes:
            message = f"{exc.message}: " + "; ".join(
                f"{c['field']}: {c['message']}" if c["field"] else c["message"] for c in causes
            )
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": exc.reason,
        "code": exc.status_code,
    }
    if causes or name:
        details: dict[str, Any] = {"kind": kind, "causes": causes}
        if name:
            details["name"] = name
        if group:
            details["group"] = group
        body["details"] = details
    return body
