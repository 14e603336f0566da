"""Server-side printing: NodePassports as a meta.k8s.io/v1 ``Table``, and the cells' text.

``kubectl get`` asks for a Table (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``)
and prints the columns the server chose: NAME, KIND, HEALTH, PHASE, TASKS, AGE, and with
``-o wide`` the priority-1 ones, CAPABILITIES, ZONE, ENDPOINT, LAST-SEEN. Ages are computed
here against the caller's ``now``, in kubectl's ``HumanDuration`` form, as apiserver does.

The cell helpers are pure and shared with the ``node-registry`` CLI's own tables.

A list's rows are joined from bytes each stored version keeps (``row_bytes``): the cells a
version fixes (name, kind, phase, tasks, capabilities, zone, endpoint) are encoded once per
version, and only health and the two ages are filled in at each read; the row's
PartialObjectMetadata is the version's too (``metadata_bytes``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from node_registry.kube.meta import META_GROUP_VERSION, list_meta
from node_registry.kube.objects import (
    dumps,
    entry_to_object,
    metadata_bytes,
    object_bytes,
    partial_object_metadata,
)
from node_registry.passport import NodePassport
from node_registry.registry.entry import RegistryEntry
from node_registry.store import HealthState

NONE = "<none>"


class IncludeObject(StrEnum):
    """What a Table row carries besides its cells (``TableOptions.includeObject``)."""

    NONE = "None"
    METADATA = "Metadata"
    OBJECT = "Object"


# -- cells -------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's ``HumanDuration``: ``5s``, ``3m20s``, ``45m``, ``2h10m``, ``4d``, ``2y30d``."""
    if seconds < -1:
        return "<invalid>"
    total = max(0, int(seconds))
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years = hours // (24 * 365)
    if years < 8:
        rest = (hours // 24) % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def age(since: datetime, now: datetime) -> str:
    return human_duration((now - since).total_seconds())


def tasks(passport: NodePassport) -> str:
    limit = passport.spec.max_concurrent_tasks
    return f"{passport.status.current_tasks}/{'-' if limit is None else limit}"


def capabilities(passport: NodePassport) -> str:
    return ",".join(c.name for c in passport.spec.capabilities) or NONE


def endpoint(passport: NodePassport) -> str:
    """``protocol:address#queue``, without repeating a protocol the address already names."""
    ep = passport.spec.endpoint
    if ep is None:
        return NONE
    text = ep.address if ep.address.startswith(f"{ep.protocol}:") else f"{ep.protocol}:{ep.address}"
    return f"{text}#{ep.queue}" if ep.queue else text


# -- the table -------------------------------------------------------------------------------

#: (name, description, priority): kubectl shows the names upper-cased, priority 1 with -o wide.
_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("Name", "The node's name (metadata.name)", 0),
    ("Kind", "The node's type (metadata.nodeType)", 0),
    ("Health", "The registry's verdict from heartbeats (status.healthState)", 0),
    ("Phase", "The node's lifecycle phase (status.phase)", 0),
    ("Tasks", "Tasks running / at most (status.currentTasks / spec.maxConcurrentTasks)", 0),
    ("Age", "Since the node first registered (metadata.creationTimestamp)", 0),
    ("Capabilities", "What the node can do (spec.capabilities[*].name)", 1),
    ("Zone", "The node's zone label (metadata.labels.zone)", 1),
    ("Endpoint", "Where the node takes work (spec.endpoint)", 1),
    ("Last-Seen", "Since the node's last heartbeat (status.lastSeen)", 1),
)

COLUMN_DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": name,
        "type": "string",
        "format": "name" if name == "Name" else "",
        "description": description,
        "priority": priority,
    }
    for name, description, priority in _COLUMNS
]


class Shown(Protocol):
    """What a row shows of a node: the registry's entries and the client's both have it, so
    the ``node-registry`` CLI prints the very cells the server's Table holds."""

    @property
    def name(self) -> str: ...

    @property
    def node_kind(self) -> str: ...

    @property
    def health_state(self) -> HealthState: ...

    @property
    def passport(self) -> NodePassport: ...

    @property
    def registered_at(self) -> datetime: ...

    @property
    def last_seen(self) -> datetime: ...


def cells(entry: Shown, now: datetime) -> list[Any]:
    passport = entry.passport
    return [
        entry.name,
        str(entry.node_kind),
        entry.health_state.value,
        passport.status.phase.value,
        tasks(passport),
        age(entry.registered_at, now),
        capabilities(passport),
        passport.metadata.labels.get("zone", NONE),
        endpoint(passport),
        f"{age(entry.last_seen, now)} ago",
    ]


def row_object(obj: dict[str, Any], include: IncludeObject) -> dict[str, Any] | None:
    if include is IncludeObject.NONE:
        return None
    if include is IncludeObject.OBJECT:
        return obj
    return partial_object_metadata(obj)


def table_row(entry: RegistryEntry, now: datetime, include: IncludeObject) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": cells(entry, now)}
    obj = row_object(entry_to_object(entry), include)
    if obj is not None:
        row["object"] = obj
    return row


_CELLS_BYTES = "Table cells JSON"
_HEALTH_CELLS = {state: dumps(state.value) for state in HealthState}


def row_bytes(entry: RegistryEntry, now: datetime, include: IncludeObject) -> bytes:
    """``dumps(table_row(entry, now, include))`` from what the stored version keeps.

    Raises what ``dumps`` raises for a value JSON cannot carry, on every read of it.
    """
    memo = entry.memo
    cached = None if memo is None else memo.get(_CELLS_BYTES)
    # Tagged with the passport's id, as ``object_bytes``' fragments are (see there).
    if cached is None or cached[0] != id(entry.passport):
        cached = (id(entry.passport), _cell_parts(entry, now))
        if memo is not None:
            memo[_CELLS_BYTES] = cached
    head, middle, tail = cached[1]
    # Ages are digits, letters and <>: JSON strings without escapes, so no encoder is needed.
    row = b"".join(
        (
            head,
            _HEALTH_CELLS[entry.health_state],
            middle,
            b'"' + age(entry.registered_at, now).encode() + b'"',
            tail,
            b'"' + age(entry.last_seen, now).encode() + b' ago"]',
        )
    )
    if include is IncludeObject.NONE:
        return row + b"}"
    obj = metadata_bytes(entry) if include is IncludeObject.METADATA else object_bytes(entry)
    return row + b',"object":' + obj + b"}"


def _cell_parts(entry: RegistryEntry, now: datetime) -> tuple[bytes, bytes, bytes]:
    # The cells between health (2), age (5) and last seen (9): fixed by the version.
    shown = cells(entry, now)
    return (
        b'{"cells":[' + dumps(shown[0:2])[1:-1] + b",",
        b"," + dumps(shown[3:5])[1:-1] + b",",
        b"," + dumps(shown[6:9])[1:-1] + b",",
    )


def table_head(
    resource_version: int | None = None,
    continue_token: str | None = None,
    remaining: int | None = None,
) -> dict[str, Any]:
    """A Table of nodes without its rows (``apiVersion``, ``kind``, ``metadata``, columns)."""
    return {
        "apiVersion": META_GROUP_VERSION,
        "kind": "Table",
        "metadata": list_meta(resource_version, continue_token, remaining),
        "columnDefinitions": COLUMN_DEFINITIONS,
    }


def nodes_table(
    entries: Iterable[RegistryEntry],
    now: datetime,
    *,
    include: IncludeObject = IncludeObject.METADATA,
    resource_version: int | None = None,
    continue_token: str | None = None,
    remaining: int | None = None,
) -> dict[str, Any]:
    """A Table of ``entries`` (one row each, in order) as apiserver sends it for a list."""
    table = table_head(resource_version, continue_token, remaining)
    table["rows"] = [table_row(e, now, include) for e in entries]
    return table


# -- leases --------------------------------------------------------------------------------

LEASE_COLUMN_DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "The node's name",
        "priority": 0,
    },
    {
        "name": "Holder",
        "type": "string",
        "format": "",
        "description": "spec.holderIdentity",
        "priority": 0,
    },
    {
        "name": "Renewed",
        "type": "string",
        "format": "",
        "description": "Since the last renewal (spec.renewTime)",
        "priority": 0,
    },
    {
        "name": "Duration",
        "type": "integer",
        "format": "",
        "description": "spec.leaseDurationSeconds",
        "priority": 1,
    },
]


def leases_table(
    leases: Iterable[dict[str, Any]],
    now: datetime,
    *,
    include: IncludeObject = IncludeObject.METADATA,
    resource_version: int | None = None,
) -> dict[str, Any]:
    """A Table of Lease objects (``lease_object``'s documents)."""
    rows = []
    for lease in leases:
        spec = lease["spec"]
        renewed = datetime.fromisoformat(spec["renewTime"])
        row: dict[str, Any] = {
            "cells": [
                lease["metadata"]["name"],
                spec["holderIdentity"],
                f"{age(renewed, now)} ago",
                spec["leaseDurationSeconds"],
            ]
        }
        obj = row_object(lease, include)
        if obj is not None:
            row["object"] = obj
        rows.append(row)
    return {
        "apiVersion": META_GROUP_VERSION,
        "kind": "Table",
        "metadata": list_meta(resource_version),
        "columnDefinitions": LEASE_COLUMN_DEFINITIONS,
        "rows": rows,
    }
