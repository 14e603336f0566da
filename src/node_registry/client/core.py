"""The client's I/O-free core: build requests, read responses and watch lines.

The sync and async clients each spell out their own short I/O path around these functions
(the httpx/lightkube pattern), so both speak exactly the same protocol and neither needs a
thread or a loop to borrow the other's code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from node_registry.client.settings import ClientSettings
from node_registry.errors import RegistryError, RegistryUnreachableError, StoreUnavailableError
from node_registry.kube.objects import object_to_entry
from node_registry.passport import Capability, Condition, NodePassport, NodeType, Phase
from node_registry.passport.verification import CapabilityVerification
from node_registry.registry.entry import NodeList, RegistryEntry, WatchEvent
from node_registry.selectors import Selector, as_selector
from node_registry.wire import (
    API_PREFIX,
    entry_from_wire,
    error_from_status,
    event_from_wire,
)

SelectorInput = str | Mapping[str, Any] | Selector | None
#: Statuses worth trying on another endpoint: the server is there but cannot serve now.
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request, independent of the library that sends it."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None


def register(passport: NodePassport | Mapping[str, Any]) -> Call:
    doc = passport.to_dict() if isinstance(passport, NodePassport) else dict(passport)
    return Call("POST", f"{API_PREFIX}/nodes", body=doc)


def get(name: str) -> Call:
    return Call("GET", f"{API_PREFIX}/nodes/{name}")


def deregister(name: str) -> Call:
    return Call("DELETE", f"{API_PREFIX}/nodes/{name}")


def heartbeat(name: str) -> Call:
    return Call(
        "PUT",
        f"{API_PREFIX}/leases/{name}",
        body={"apiVersion": "ai_team.io/v1", "kind": "Lease", "spec": {"holderIdentity": name}},
    )


def update_status(
    name: str,
    *,
    phase: Phase | str | None = None,
    conditions: Iterable[Condition | Mapping[str, Any]] | None = None,
    current_tasks: int | None = None,
) -> Call:
    body: dict[str, Any] = {}
    if phase is not None:
        body["phase"] = str(phase)
    if current_tasks is not None:
        body["currentTasks"] = current_tasks
    if conditions is not None:
        body["conditions"] = [
            c.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(c, Condition)
            else dict(c)
            for c in conditions
        ]
    return Call("PATCH", f"{API_PREFIX}/nodes/{name}/status", body=body)


def find_nodes(
    kind: str | NodeType | None = None,
    selector: SelectorInput = None,
    only_healthy: bool = False,
    only_verified: bool = False,
) -> Call:
    """The seed's find_nodes: the selector is parsed here, so a bad one fails before I/O."""
    parsed = as_selector(selector)
    params: dict[str, str] = {}
    if kind is not None:
        params["kind"] = str(kind)
    if not parsed.empty():
        params["labelSelector"] = str(parsed)
    if only_healthy:
        params["healthy"] = "true"
    if only_verified:
        params["verified"] = "true"
    return Call("GET", f"{API_PREFIX}/nodes", params=params)


def list_page(limit: int | None = None, continue_token: str | None = None) -> Call:
    params: dict[str, str] = {}
    if limit is not None:
        params["limit"] = str(limit)
    if continue_token:
        params["continue"] = continue_token
    return Call("GET", f"{API_PREFIX}/nodes", params=params)


def watch(
    since: int,
    *,
    timeout_seconds: int | None = None,
    kind: str | NodeType | None = None,
    selector: SelectorInput = None,
) -> Call:
    """A watch from ``since``, filtered on the server (nodes entering or leaving the
    selector arrive as ADDED or DELETED)."""
    params = {"watch": "true", "resourceVersion": str(since), "allowWatchBookmarks": "true"}
    if timeout_seconds is not None:
        params["timeoutSeconds"] = str(timeout_seconds)
    if kind is not None:
        params["kind"] = str(kind)
    parsed = as_selector(selector)
    if not parsed.empty():
        params["labelSelector"] = str(parsed)
    return Call("GET", f"{API_PREFIX}/nodes", params=params)


# -- #12: the nodepassports subresources (verification, capabilities) and their list ------

KUBE_PREFIX = "/apis/ai_team.io/v1"


def set_capabilities(name: str, capabilities: Iterable[Capability | Mapping[str, Any]]) -> Call:
    """Replace the node's capabilities without re-registering (``.../capabilities``)."""
    listed = [
        c.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(c, Capability)
        else dict(c)
        for c in capabilities
    ]
    body = {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodeCapabilities",
        "spec": {"capabilities": listed},
    }
    return Call("PUT", f"{KUBE_PREFIX}/nodepassports/{name}/capabilities", body=body)


def record_verification(
    name: str, results: Iterable[CapabilityVerification], *, replace: bool = False
) -> Call:
    """Record a verifier's results (``.../verification``: PATCH merges, PUT replaces)."""
    body = {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodeVerification",
        "results": [r.to_dict() for r in results],
    }
    method = "PUT" if replace else "PATCH"
    return Call(method, f"{KUBE_PREFIX}/nodepassports/{name}/verification", body=body)


def passports_page(limit: int | None = None, continue_token: str | None = None) -> Call:
    params: dict[str, str] = {}
    if limit is not None:
        params["limit"] = str(limit)
    if continue_token:
        params["continue"] = continue_token
    return Call("GET", f"{KUBE_PREFIX}/nodepassports", params=params)


def passport_list(doc: Any) -> tuple[NodeList, str | None]:
    """A NodePassportList page as entries (their verification results included)."""
    meta = doc.get("metadata") or {}
    items = [object_to_entry(item) for item in doc.get("items") or []]
    return NodeList(items, int(meta.get("resourceVersion") or 0)), meta.get("continue") or None


def passport_entry(doc: Any) -> RegistryEntry:
    return object_to_entry(doc)


def check(status: int, content: bytes) -> Any:
    """The JSON document of a 2xx response; the package's own error for anything else."""
    try:
        doc = json.loads(content) if content else None
    except ValueError:
        doc = None
    if 200 <= status < 300:
        if doc is None and content:
            raise RegistryError(
                f"HTTP {status} with a body that is not JSON: is this a node registry? "
                f"{content[:80]!r}"
            )
        return doc
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        raise error_from_status(doc, code=status)
    if status in RETRY_STATUSES:
        raise StoreUnavailableError(f"the registry answered HTTP {status}")
    raise RegistryError(f"the registry answered HTTP {status}: {content[:200]!r}")


def entry(doc: Any) -> RegistryEntry:
    return entry_from_wire(doc)


def entries(doc: Any) -> list[RegistryEntry]:
    return [entry_from_wire(item) for item in doc["items"]]


def node_list(doc: Any) -> tuple[NodeList, str | None]:
    """A page: its entries and version, and the continue token of the next page."""
    meta = doc["metadata"]
    return (
        NodeList(entries(doc), int(meta["resourceVersion"])),
        meta.get("continue") or None,
    )


def renew_time(doc: Any) -> datetime:
    return datetime.fromisoformat(doc["spec"]["renewTime"])


class WatchCursor:
    """A resuming watch's bookkeeping, shared by both clients: where to resume from, when
    a bounded watch is over, and how long to wait after losing a connection."""

    def __init__(
        self,
        since: int,
        *,
        timeout_seconds: int | None,
        kind: str | NodeType | None,
        selector: SelectorInput,
        settings: ClientSettings,
        endpoints: int,
    ) -> None:
        self.last = since
        self.bounded = timeout_seconds is not None
        self._deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        self._kind = kind
        self._selector = selector
        self._settings = settings
        self._budget = settings.retries * endpoints
        self._failures = 0

    def open(self) -> Call | None:
        """The request that resumes the watch, or None when its time is up."""
        remaining = None
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                return None
            remaining = max(1, round(left))
        return watch(self.last, timeout_seconds=remaining, kind=self._kind, selector=self._selector)

    def connected(self) -> None:
        self._failures = 0

    def read(self, line: str) -> WatchEvent | None:
        """The event a line carries (BOOKMARKs only move the resume point)."""
        item = watch_line(line)
        if isinstance(item, WatchEvent):
            self.last = item.resource_version
            return item
        if item is not None:
            self.last = item
        return None

    def lost(self) -> float:
        """Seconds to wait before reconnecting; raises once every endpoint has failed."""
        self._failures += 1
        if self._failures > self._budget:
            raise RegistryUnreachableError(
                f"the watch lost every registry endpoint (resume from {self.last})"
            )
        return self._settings.delay(self._failures)


def watch_line(line: str) -> WatchEvent | int | None:
    """A watch line: an event, the version a BOOKMARK carries, or None for a blank line.

    An ERROR line raises its error (``RevisionCompactedError``: list again).
    """
    line = line.strip()
    if not line:
        return None
    return event_from_wire(json.loads(line))
