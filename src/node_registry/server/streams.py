"""Watch over HTTP: newline-delimited JSON, Kubernetes' watch.

It streams the registry's watch from a resource version, filtered like a list (kind, label
selector) with Kubernetes' watch-cache semantics: a node that starts matching arrives as
ADDED and one that stops matching leaves as DELETED, so a cache built from a filtered
watch stays exact. A BOOKMARK goes out whenever nothing was sent for a bookmark interval,
carrying the last version this stream has processed (never the store's newest, which may
not have reached the stream yet), so a quiet or heavily filtered watcher keeps a fresh
resume point. A watcher that falls behind the kept history, or too far behind the newest
event (``watch.backlog_events``: a slow reader), gets an ERROR event with a 410 Status and
the stream ends: list again, then watch from the list's version.

Watchers share the work: an event's effective labels and each of its encoded frames (per
type shown and format) are computed once and kept on its ``Slot``, so a thousand watchers
of the same shape cost one encode. An encoding may build its frame from the bytes the
event's stored version keeps (``Encoding.ndjson``): then a list of that version and the
watch share one encode too. Waiting events go out in one write per batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from node_registry.errors import RevisionCompactedError
from node_registry.kube.meta import status_from_error
from node_registry.registry import AsyncWatch, EventType, RegistryEntry, WatchEvent
from node_registry.registry.watch import Slot
from node_registry.selectors import NodeFilter, Selector

Frame = Callable[[dict[str, Any], int], bytes]
#: Extra filtering beside kind and labels (a field selector): True when the entry is wanted.
EntryFilter = Callable[[RegistryEntry], bool]


@dataclass(frozen=True, slots=True)
class Encoding:
    """The documents a stream sends: an event as shown, and a BOOKMARK at a version.

    Streams of one encoding share each event's encoded frame, so an encoding is made once (a
    module constant, or cached per variant) and compared by identity.
    """

    event: Callable[[WatchEvent], dict[str, Any]]
    bookmark: Callable[[int], dict[str, Any]]
    #: The event's NDJSON frame made straight from bytes its stored version keeps (a list
    #: of that version reuses them, and the other way round); ``event`` when None.
    ndjson: Callable[[WatchEvent], bytes] | None = None


#: Frames sent in one write at most: a burst goes out in few writes, never as one huge one.
BATCH = 128


def ndjson_frame(doc: dict[str, Any], resource_version: int) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def _labels(slot: Slot, entry: RegistryEntry, key: str) -> dict[str, str]:
    labels: dict[str, str] | None = slot.memo.get(key)
    if labels is None:
        labels = slot.memo[key] = entry.labels
    return labels


def _matches(
    slot: Slot,
    entry: RegistryEntry | None,
    key: str,
    nodes: NodeFilter,
    wanted: EntryFilter | None,
) -> bool:
    if entry is None:
        return False
    if wanted is not None and not wanted(entry):
        return False
    return nodes.matches(entry.node_kind, lambda: _labels(slot, entry, key))


def shown_type(
    slot: Slot, nodes: NodeFilter, wanted: EntryFilter | None = None
) -> EventType | None:
    """The event's type as a watcher of (nodes, wanted) sees it, or None: not for it."""
    event = slot.event
    if nodes.empty() and wanted is None:
        return event.type
    now = _matches(slot, event.entry, "labels", nodes, wanted)
    if event.type in (EventType.ADDED, EventType.DELETED):
        return event.type if now else None
    before = _matches(slot, event.previous, "previous labels", nodes, wanted)
    if now and before:
        return event.type
    if now:
        return EventType.ADDED
    if before:
        return EventType.DELETED
    return None


def encoded(slot: Slot, shown: EventType, frame: Frame, encoding: Encoding) -> bytes:
    """The event as ``shown``, in ``frame``'s format: encoded once, shared by every watcher."""
    key = (shown, frame, encoding)
    data: bytes | None = slot.memo.get(key)
    if data is None:
        event = slot.event
        if shown is not event.type:
            event = WatchEvent(shown, event.entry, event.resource_version)
        if frame is ndjson_frame and encoding.ndjson is not None:
            data = slot.memo[key] = encoding.ndjson(event)
        else:
            data = slot.memo[key] = frame(encoding.event(event), event.resource_version)
    return data


async def stream_events(
    watch: AsyncWatch,
    since: int,
    *,
    kind: str | None,
    selector: Selector,
    frame: Frame,
    bookmarks: bool,
    bookmark_interval: float,
    timeout: float | None,
    on_open: Callable[[], None],
    on_close: Callable[[], None],
    encoding: Encoding,
    wanted: EntryFilter | None = None,
    initial: Iterable[bytes] = (),
) -> AsyncIterator[bytes]:
    """Frames of an open watch until the client leaves, ``timeout`` passes or the watch ends.

    ``initial`` frames (a watch's synthetic ADDED events for the current state) go first,
    made as they are sent, ``BATCH`` at a time: 100,000 of them are neither built before
    the first is sent nor held at once.
    """
    on_open()
    nodes = NodeFilter(None if kind is None else str(kind), selector)
    deadline = None if timeout is None else time.monotonic() + timeout
    last = since
    last_frame = time.monotonic()
    try:
        frames = iter(initial)
        while batch := b"".join(islice(frames, BATCH)):
            yield batch
        while not watch.ended:
            now = time.monotonic()
            # Only a stream that sends bookmarks wakes for them: without, a wait bounded by
            # the bookmark interval turns 0 once the stream is idle that long, and the loop
            # spins without ever yielding to the event loop (the server froze meanwhile).
            wait = max(bookmark_interval - (now - last_frame), 0.0) if bookmarks else None
            if deadline is not None:
                if now >= deadline:
                    return
                wait = deadline - now if wait is None else min(wait, deadline - now)
            try:
                slots = await watch.next_slots(timeout=wait, limit=BATCH)
            except RevisionCompactedError as exc:
                yield frame({"type": "ERROR", "object": status_from_error(exc)}, last)
                return
            chunk: list[bytes] = []
            for slot in slots:
                last = slot.event.resource_version
                shown = shown_type(slot, nodes, wanted)
                if shown is not None:
                    chunk.append(encoded(slot, shown, frame, encoding))
            if chunk:
                yield b"".join(chunk)
                last_frame = time.monotonic()
                continue
            if (
                bookmarks
                and not watch.ended
                and time.monotonic() - last_frame >= bookmark_interval
                and (deadline is None or time.monotonic() < deadline)
            ):
                yield frame(encoding.bookmark(last), last)
                last_frame = time.monotonic()
    finally:
        watch.close()
        on_close()
