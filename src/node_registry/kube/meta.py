"""meta.k8s.io/v1 shapes every resource shares: object and list metadata, Table, watch events.

Kubernetes' own types, as pydantic models with their wire names, so the server and the client
read and write exactly what kubectl and client-go do, and ``Status``, the body of every error
response, built from the package's errors by one table (``errors.ERRORS_BY_REASON``), which
the client reads back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from node_registry import errors

META_GROUP_VERSION = "meta.k8s.io/v1"
#: Watch event types: Kubernetes' five, and no others (a health transition is a MODIFIED).
WATCH_EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")


class KubeModel(BaseModel):
    """Wire names on output, either name on input; unknown fields kept (newer servers add some)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")


def rfc3339(moment: datetime) -> str:
    """``metav1.Time``: RFC 3339 in UTC to the second (``creationTimestamp``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(moment: datetime) -> str:
    """``metav1.MicroTime``: RFC 3339 in UTC to the microsecond (``renewTime``, ``lastSeen``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def list_meta(
    resource_version: int | None, continue_token: str | None = None, remaining: int | None = None
) -> dict[str, Any]:
    """A list's (or a list Table's) ``metadata``: its version and where the next page starts."""
    meta: dict[str, Any] = {}
    if resource_version is not None:
        meta["resourceVersion"] = str(resource_version)
    if continue_token:
        meta["continue"] = continue_token
        if remaining is not None:
            meta["remainingItemCount"] = remaining
    return meta


class ListMeta(KubeModel):
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    continue_: str | None = Field(default=None, alias="continue")
    remaining_item_count: int | None = Field(default=None, alias="remainingItemCount")


class ObjectMeta(KubeModel):
    """The metadata of any object (``PartialObjectMetadata``'s): the fields kubectl reads."""

    name: str | None = None
    uid: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    creation_timestamp: datetime | None = Field(default=None, alias="creationTimestamp")
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    generation: int | None = None


class PartialObjectMetadata(KubeModel):
    """An object's metadata alone: what a Table row carries with ``includeObject=Metadata``."""

    api_version: Literal["meta.k8s.io/v1"] = Field(default="meta.k8s.io/v1", alias="apiVersion")
    kind: Literal["PartialObjectMetadata"] = "PartialObjectMetadata"
    metadata: ObjectMeta


class TableColumnDefinition(KubeModel):
    name: str
    type: Literal["integer", "number", "string", "boolean", "date"]
    format: str = ""
    description: str = ""
    #: 0: shown by ``kubectl get``; higher: only with ``-o wide``.
    priority: int = 0


class TableRow(KubeModel):
    cells: list[Any]
    #: The object (or its metadata, or nothing), as ``includeObject`` asked.
    object: dict[str, Any] | None = None


class Table(KubeModel):
    """Server-side printing: the columns ``kubectl get`` shows, computed by the server."""

    api_version: Literal["meta.k8s.io/v1"] = Field(default="meta.k8s.io/v1", alias="apiVersion")
    kind: Literal["Table"] = "Table"
    metadata: ListMeta = Field(default_factory=ListMeta)
    column_definitions: list[TableColumnDefinition] = Field(alias="columnDefinitions")
    rows: list[TableRow]


class _Strict(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class StatusCause(_Strict):
    reason: str
    message: str
    field: str | None = None


class StatusDetails(_Strict):
    name: str | None = None
    group: str | None = None
    kind: str | None = None
    causes: list[StatusCause] = Field(default_factory=list)


class Status(_Strict):
    """Kubernetes' ``Status``: the body of every error response."""

    api_version: Literal["v1"] = Field(default="v1", alias="apiVersion")
    kind: Literal["Status"] = "Status"
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["Success", "Failure"] = "Failure"
    message: str = ""
    reason: str = ""
    details: StatusDetails | None = None
    code: int


def status_from_error(
    exc: errors.RegistryError,
    *,
    name: str | None = None,
    kind: str = "nodepassports",
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


class WatchEvent(KubeModel):
    """One line of a watch stream (``metav1.WatchEvent``)."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
    object: dict[str, Any]


__all__ = [
    "META_GROUP_VERSION",
    "WATCH_EVENT_TYPES",
    "KubeModel",
    "ListMeta",
    "ObjectMeta",
    "PartialObjectMetadata",
    "Status",
    "StatusCause",
    "StatusDetails",
    "Table",
    "TableColumnDefinition",
    "TableRow",
    "WatchEvent",
    "list_meta",
    "rfc3339",
    "rfc3339_micro",
    "status_from_error",
]
