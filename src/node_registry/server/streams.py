"""Watch over HTTP: newline-delimited JSON (Kubernetes' watch) and Server-Sent Events.

Both stream the registry's watch from a resource version, filtered like a list (kind, label
selector) with Kubernetes' watch-cache semantics: a node that starts matching arrives as
ADDED and one that stops matching leaves as DELETED, so a cache built from a filtered
watch stays exact. A BOOKMARK goes out whenever nothing was sent for a bookmark interval,
carrying the last version this stream has processed (never the store's newest, which may
not have reached the stream yet), so a quiet or heavily filtered watcher keeps a fresh
resume point. A watcher that falls behind the kept history gets an ERROR event with a 410
Status and the stream ends: list again, then watch from the list's version.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from node_registry.errors import RevisionCompactedError
from node_registry.passport import NodeType, effective_labels
from node_registry.registry import AsyncWatch, EventType, RegistryEntry, WatchEvent
from node_registry.selectors import Selector
from node_registry.wire import ERROR, bookmark_to_wire, event_to_wire, status_from_error

Frame = Callable[[dict[str, Any], int], bytes]


def ndjson_frame(doc: dict[str, Any], resource_version: int) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def sse_frame(doc: dict[str, Any], resource_version: int) -> bytes:
    # The id is the resource version, so a reconnecting EventSource resumes by itself
    # through the Last-Event-ID header.
    data = json.dumps(doc, separators=(",", ":"))
    return f"id: {resource_version}\nevent: {doc['type']}\ndata: {data}\n\n".encode()


def _matches(entry: RegistryEntry | None, kind: NodeType | None, selector: Selector) -> bool:
    if entry is None or (kind is not None and entry.node_kind is not kind):
        return False
    return selector.empty() or selector.matches(effective_labels(entry.passport))


def filtered(event: WatchEvent, kind: NodeType | None, selector: Selector) -> WatchEvent | None:
    """The event as a watcher of (kind, selector) sees it, or None when it is not for it."""
    if kind is None and selector.empty():
        return event
    now = _matches(event.entry, kind, selector)
    if event.type in (EventType.ADDED, EventType.DELETED):
        return event if now else None
    before = _matches(event.previous, kind, selector)
    if now and before:
        return event
    if now:
        return WatchEvent(EventType.ADDED, event.entry, event.resource_version)
    if before:
        return WatchEvent(EventType.DELETED, event.entry, event.resource_version)
    return None


async def stream_events(
    watch: AsyncWatch,
    since: int,
    *,
    kind: NodeType | None,
    selector: Selector,
    frame: Frame,
    bookmarks: bool,
    bookmark_interval: float,
    timeout: float | None,
    on_open: Callable[[], None],
    on_close: Callable[[], None],
) -> AsyncIterator[bytes]:
    """Frames of an open watch until the client leaves or ``timeout`` passes."""
    on_open()
    deadline = None if timeout is None else time.monotonic() + timeout
    last = since
    last_frame = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            wait = max(bookmark_interval - (now - last_frame), 0.0)
            if deadline is not None:
                if now >= deadline:
                    return
                wait = min(wait, deadline - now)
            try:
                event = await watch.next(timeout=wait)
            except RevisionCompactedError as exc:
                yield frame({"type": ERROR, "object": status_from_error(exc)}, last)
                return
            if event is not None:
                last = event.resource_version
                shown = filtered(event, kind, selector)
                if shown is not None:
                    yield frame(event_to_wire(shown), last)
                    last_frame = time.monotonic()
                    continue
            if (
                bookmarks
                and time.monotonic() - last_frame >= bookmark_interval
                and (deadline is None or time.monotonic() < deadline)
            ):
                yield frame(bookmark_to_wire(last), last)
                last_frame = time.monotonic()
    finally:
        watch.close()
        on_close()
