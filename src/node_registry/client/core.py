"""The client's I/O-free core: build requests, read responses and watch lines.

The sync and async clients each spell out their own short I/O path around these functions
(the httpx/lightkube pattern), so both speak exactly the same protocol and neither needs a
thread or a loop to borrow the other's code.

The protocol is the Kubernetes API group ``ai_team.io/v1`` (docs/kubectl.md) and nothing
else: ``nodepassports`` (get; list with label and field selectors; watch with
``resourceVersion``, BOOKMARKs and 410; create to register; a strategic merge patch of
``/status``; delete), and the heartbeat, a ``PUT`` of the node's Lease. Whatever comes back is
read here and nowhere else, and anything that is not what the API sends is an
``InvalidResponseError``: callers catch the package's errors, never a ``KeyError``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from node_registry.client import objects
from node_registry.client.objects import EventType, NodeList, RegistryEntry, WatchEvent
from node_registry.client.settings import ClientSettings
from node_registry.errors import (
    InvalidResponseError,
    RegistryError,
    RegistryUnreachableError,
    StoreUnavailableError,
    error_from_status,
)
from node_registry.passport import API_VERSION, Capability, Condition, NodePassport, NodeType, Phase
from node_registry.passport.kinds import parse_kind
from node_registry.passport.verification import CapabilityVerification
from node_registry.selectors import Selector, as_selector

API_PREFIX = f"/apis/{API_VERSION}"
NODEPASSPORTS = f"{API_PREFIX}/nodepassports"
LEASES = f"{API_PREFIX}/leases"
LEASE_RENEWALS = f"{API_PREFIX}/leaserenewals"
#: Leases a client puts in one ``LeaseRenewal`` (the server's default limit is 1,000).
RENEWALS_PER_REQUEST = 500
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

SelectorInput = str | Mapping[str, Any] | Selector | None
#: Statuses worth trying on another endpoint: the server is there but cannot serve now.
RETRY_STATUSES = frozenset({502, 503, 504})
#: The field selector terms of find_nodes' only_healthy and only_verified.
_HEALTHY_FIELD = "status.schedulable=true"
_VERIFIED_FIELD = "status.verification.required=true"


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request, independent of the library that sends it."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    content_type: str | None = None  # None: JSON, when there is a body
    #: It keeps a registered node alive (a renewal, a batch of them, a status report): a
    #: client with calls waiting sends it first (``client.turns``).
    keeps_alive: bool = False


def encode(call: Call) -> tuple[bytes | None, dict[str, str]]:
    """The request body and its headers (JSON unless the call names another type)."""
    if call.body is None:
        return None, {}
    content = json.dumps(call.body, separators=(",", ":")).encode()
    return content, {"Content-Type": call.content_type or "application/json"}


def transport_failure(exc: Exception) -> InvalidResponseError:
    """An httpx failure that is not the network's (a body that does not decode, a redirect
    loop): the answer is unusable, and asking again would get the same one."""
    return InvalidResponseError(f"unusable answer from the registry: {type(exc).__name__}: {exc}")


def _named(collection: str, name: str) -> str:
    # Quoted: a name is the caller's text, and must not turn into another path.
    return f"{collection}/{quote(name, safe='')}"


def register(passport: NodePassport | Mapping[str, Any]) -> Call:
    """A create of the NodePassport; the same uid registering again replaces its passport."""
    doc = passport.to_dict() if isinstance(passport, NodePassport) else dict(passport)
    return Call("POST", NODEPASSPORTS, body=doc)


def get(name: str) -> Call:
    return Call("GET", _named(NODEPASSPORTS, name))


def deregister(name: str) -> Call:
    return Call("DELETE", _named(NODEPASSPORTS, name))


def heartbeat(name: str) -> Call:
    return Call(
        "PUT",
        _named(LEASES, name),
        body={"apiVersion": API_VERSION, "kind": "Lease", "spec": {"holderIdentity": name}},
        keeps_alive=True,
    )


def heartbeat_many(names: list[str]) -> Call:
    """One ``LeaseRenewal`` of ``names`` (at most the server's ``max_renewals_per_request``)."""
    leases = [{"name": name} for name in names]
    return Call(
        "POST",
        LEASE_RENEWALS,
        body={"apiVersion": API_VERSION, "kind": "LeaseRenewal", "spec": {"leases": leases}},
        keeps_alive=True,
    )


def batches(names: Iterable[str], size: int = RENEWALS_PER_REQUEST) -> list[list[str]]:
    """``names`` without repeats (the server refuses a name twice), in requests of ``size``."""
    unique = list(dict.fromkeys(names))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


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
    # Strategic merge, as client-go patches a Node's status: conditions merge by type (the
    # embedded registry's update_status rule), where a JSON merge patch would replace them all.
    return Call(
        "PATCH",
        f"{_named(NODEPASSPORTS, name)}/status",
        body={"status": body},
        content_type=STRATEGIC_MERGE_PATCH,
        keeps_alive=True,
    )


def _selection(
    kind: str | NodeType | None,
    selector: SelectorInput,
    *,
    healthy: bool = False,
    verified: bool = False,
) -> dict[str, str]:
    """The list/watch parameters of (kind, selector): parsed here, so bad ones fail before I/O."""
    wanted = parse_kind(kind)
    parsed = as_selector(selector)
    params: dict[str, str] = {}
    if not parsed.empty():
        params["labelSelector"] = str(parsed)
    terms = [] if wanted is None else [f"metadata.nodeType={wanted}"]
    if healthy:
        terms.append(_HEALTHY_FIELD)
    if verified:
        terms.append(_VERIFIED_FIELD)
    if terms:
        params["fieldSelector"] = ",".join(terms)
    return params


def find_nodes(
    kind: str | NodeType | None = None,
    selector: SelectorInput = None,
    only_healthy: bool = False,
    only_verified: bool = False,
) -> Call:
    """The seed's find_nodes as a list of nodepassports (``entries`` keeps the schedulable)."""
    params = _selection(kind, selector, healthy=only_healthy, verified=only_verified)
    return Call("GET", NODEPASSPORTS, params=params)


def list_page(limit: int | None = None, continue_token: str | None = None) -> Call:
    params: dict[str, str] = {}
    if limit is not None:
        params["limit"] = str(limit)
    if continue_token:
        params["continue"] = continue_token
    return Call("GET", NODEPASSPORTS, params=params)


def watch(
    since: int,
    *,
    timeout_seconds: int | None = None,
    kind: str | NodeType | None = None,
    selector: SelectorInput = None,
    only_verified: bool = False,
) -> Call:
    """A watch of the changes after ``since``, filtered on the server (nodes entering or
    leaving the selection arrive as ADDED or DELETED).

    ``since`` 0 is Kubernetes' "any version": the current nodes as ADDED, then changes.
    """
    params = {
        "watch": "true",
        "resourceVersion": str(since),
        "allowWatchBookmarks": "true",
        **_selection(kind, selector, verified=only_verified),
    }
    if timeout_seconds is not None:
        params["timeoutSeconds"] = str(timeout_seconds)
    return Call("GET", NODEPASSPORTS, params=params)


# -- responses ---------------------------------------------------------------------------


# -- #12: the nodepassports subresources (verification, capabilities) and their list ------


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
    return Call("PUT", f"{NODEPASSPORTS}/{name}/capabilities", body=body)


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
    return Call(method, f"{NODEPASSPORTS}/{name}/verification", body=body)


def passport_entry(doc: Any) -> RegistryEntry:
    """The entry a NodePassport object describes (its verification results included)."""
    return objects.entry_of(doc)


def check(status: int, content: bytes) -> Any:
    """The JSON document of a 2xx response; the package's own error for anything else."""
    try:
        doc = json.loads(content) if content else None
    except ValueError:  # not JSON (or not UTF-8): a 2xx is refused below, an error kept
        doc = None
    if 200 <= status < 300:
        if doc is None and content:
            raise InvalidResponseError(
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
    return objects.entry_of(doc)


def entries(doc: Any, *, only_healthy: bool = False) -> list[RegistryEntry]:
    """A list's entries; ``only_healthy`` keeps those the server called schedulable."""
    found = objects.node_list(doc)[0].items
    return [e for e in found if e.schedulable] if only_healthy else found


def node_list(doc: Any) -> tuple[NodeList, str | None]:
    """A page: its entries and version, and the continue token of the next page."""
    return objects.node_list(doc)


def renew_time(doc: Any) -> datetime:
    return objects.renew_time(doc)


def renewals(doc: Any, names: list[str]) -> objects.Renewals:
    return objects.renewals(doc, names)


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
        only_verified: bool = False,
        settings: ClientSettings,
        endpoints: int,
    ) -> None:
        self.last = since
        self.bounded = timeout_seconds is not None
        self._deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        self._kind = kind
        self._selector = selector
        self._verified = only_verified
        self._settings = settings
        self._budget = settings.retries * endpoints
        self._failures = 0
        # Fails here, before any request, on a bad kind or selector.
        watch(since, kind=kind, selector=selector)

    def open(self) -> Call | None:
        """The request that resumes the watch, or None when its time is up."""
        remaining = None
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                return None
            remaining = max(1, round(left))
        return watch(
            self.last,
            timeout_seconds=remaining,
            kind=self._kind,
            selector=self._selector,
            only_verified=self._verified,
        )

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


_EVENT_TYPES = {t.value: t for t in (EventType.ADDED, EventType.MODIFIED, EventType.DELETED)}


def watch_line(line: str) -> WatchEvent | int | None:
    """A watch line: an event, the version a BOOKMARK carries, or None for a blank line.

    An ERROR line raises its error (``RevisionCompactedError``: list again).
    """
    line = line.strip()
    if not line:
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        raise objects.invalid("a watch line that is not JSON", repr(line[:80])) from None
    event = objects.mapping(doc, "a watch event that is not an object")
    kind, obj = event.get("type"), event.get("object")
    if kind == "ERROR":
        raise error_from_status(objects.mapping(obj, "an ERROR event without a Status"))
    if kind == "BOOKMARK":
        meta = objects.mapping(objects.mapping(obj, "a BOOKMARK").get("metadata"), "a BOOKMARK")
        return objects.version_of(meta.get("resourceVersion"), "a BOOKMARK")
    event_type = _EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if event_type is None:
        raise objects.invalid("a watch event of an unknown type", repr(kind))
    entry = objects.entry_of(obj)
    return WatchEvent(event_type, entry, entry.resource_version)
