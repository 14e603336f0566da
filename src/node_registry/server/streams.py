"""Watch over HTTP: newline-delimited JSON (Kubernetes' watch) and Server-Sent Events.

Both stream the registry's watch from a resource version, filtered like a list (kind,
label selector), with a BOOKMARK when idle so a quiet watcher keeps a fresh resume point.
A watcher that falls behind the kept history gets an ERROR event carrying a 410 Status and
the stream ends: list again, then watch from the list's version.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from node_registry.errors import RevisionCompactedError
from node_registry.passport import NodeType, effective_labels
from node_registry.registry import AsyncRegistry, RegistryEntry
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


def matches(entry: RegistryEntry, kind: NodeType | None, selector: Selector) -> bool:
    if kind is not None and entry.node_kind is not kind:
        return False
    return selector.empty() or selector.matches(effective_labels(entry.passport))


async def stream_events(
    registry: AsyncRegistry,
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
    """Frames of the watch from ``since`` until the client leaves or ``timeout`` passes.

    The watch is opened before the first frame so a 410 can still be an HTTP status; the
    caller opens it (``registry.watch(since)``) through this generator's first step.
    """
    watch = registry.watch(since)
    on_open()
    deadline = None if timeout is None else time.monotonic() + timeout
    last = since
    try:
        while True:
            wait = bookmark_interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            try:
                event = await watch.next(timeout=wait)
            except RevisionCompactedError as exc:
                yield frame({"type": ERROR, "object": status_from_error(exc)}, last)
                return
            if event is None:
                if bookmarks and (deadline is None or time.monotonic() < deadline):
                    current = max(last, registry.sync.resource_version)
                    yield frame(bookmark_to_wire(current), current)
                    last = current
                continue
            last = event.resource_version
            if matches(event.entry, kind, selector):
                yield frame(event_to_wire(event), last)
    finally:
        watch.close()
        on_close()
