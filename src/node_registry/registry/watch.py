"""Watch streams over the store's change feed: a blocking one for threads, one for asyncio.

A watcher that falls ``capacity`` events behind is closed with ``RevisionCompactedError``,
as the Kubernetes API server drops too-slow watchers: it lists again and resumes from the
list's version, instead of the registry buffering without bound on its behalf.

The asyncio side fans out like Kubernetes' watch cache: one ``WatchHub`` per event loop
holds the only store subscription. The store's writer (under its lock, possibly in another
thread) only appends the raw event to the hub's inbox, whatever the number of watchers; the
hub converts each event once, on the loop, into a ``Slot`` of a bounded ring that every
watcher reads through its own cursor. Watchers share the events (and whatever consumers
memoise on a slot, such as the encoded frame), so a watcher costs a cursor, not a copy of
the stream, and one that leaves releases nothing but that cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, Self

from node_registry.errors import RevisionCompactedError
from node_registry.registry.entry import EventType, WatchEvent
from node_registry.store.base import Cancel, ChangeType, ErrorSink, Sink, StoreEvent

Convert = Callable[[StoreEvent], WatchEvent]
Subscribe = Callable[[int, Sink, ErrorSink], Cancel]


def _overflow(capacity: int) -> RevisionCompactedError:
    return RevisionCompactedError(
        f"the watcher fell more than {capacity} events behind and was closed; "
        "list again and watch from the list's version"
    )


def event_type(event: StoreEvent) -> EventType:
    if (
        event.type is ChangeType.MODIFIED
        and event.prev is not None
        and event.prev.health is not event.record.health
    ):
        return EventType.HEALTH_CHANGED
    return EventType(event.type.value)


class Watch:
    """Blocking iterator of WatchEvents; ``next(timeout)`` returns None when nothing came."""

    def __init__(self, subscribe: Subscribe, since: int, convert: Convert, capacity: int) -> None:
        self._queue: queue.Queue[WatchEvent | None] = queue.Queue(maxsize=capacity)
        self._capacity = capacity
        self._convert = convert
        self._failed: RevisionCompactedError | None = None
        self._closed = False
        self._cancel = subscribe(since, self._push, self._fail)

    def _push(self, event: StoreEvent) -> None:
        if self._failed is not None:
            return
        try:
            self._queue.put_nowait(self._convert(event))
        except queue.Full:
            self._failed = _overflow(self._capacity)

    def _fail(self, error: RevisionCompactedError) -> None:
        # The store lost the history this watch needs: end it once the queue is drained.
        self._failed = error
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def next(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, waiting up to ``timeout`` seconds (None: forever)."""
        if self._closed:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            item = None
        if item is None and self._failed is not None:
            self.close()
            raise self._failed
        return item

    def __iter__(self) -> Iterator[WatchEvent]:
        while not self._closed:
            event = self.next()
            if event is not None:
                yield event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cancel()
            # Wakes a reader blocked in next(); a full queue already has items to wake it.
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


#: Events a hub converts per turn of the event loop before letting other work run: a
#: replay of thousands of events must not hold up heartbeats for its whole length.
DRAIN_CHUNK = 256
#: Watchers woken per turn of the event loop. Between two batches the loop reads its
#: sockets, so a heartbeat waits behind one batch of watchers, not behind all of them.
WAKE_BATCH = 32


class Slot:
    """One event as every watcher of a hub sees it, with a memo the watchers share.

    ``memo`` holds work that consumers would otherwise repeat per watcher (the server keeps
    each event's effective labels and encoded frames there); it lives as long as the slot
    is in the hub's ring.
    """

    __slots__ = ("event", "memo")

    def __init__(self, event: WatchEvent) -> None:
        self.event = event
        self.memo: dict[Any, Any] = {}


class WatchHub:
    """One store subscription fanned out to any number of ``AsyncWatch`` on one loop.

    The ring keeps the last ``history`` converted events: a watcher may start from any
    version since ``floor`` (older ones need a store watch of their own). A watcher found
    more than ``backlog`` events behind the newest (beyond what it was given to replay when
    it started) while it is not waiting for events, so busy elsewhere (its client does not
    read), is closed with ``RevisionCompactedError``: the 410 of a too-slow watcher.
    """

    def __init__(
        self,
        subscribe: Subscribe,
        since: int,
        convert: Convert,
        *,
        history: int,
        backlog: int,
        private: bool = False,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._convert = convert
        self._ring: deque[Slot] = deque(maxlen=history)
        self._backlog = backlog
        self._private = private
        #: Slots ever added: the sequence number of the next one.
        self._seq = 0
        self.floor = since
        self.position = since
        self._inbox: deque[StoreEvent] = deque()
        self._scheduled = False
        self._to_wake: deque[AsyncWatch] = deque()
        self._watchers: set[AsyncWatch] = set()
        self.failed: RevisionCompactedError | None = None
        self.closed = False
        self._cancel = subscribe(since, self._push, self._fail)

    def __repr__(self) -> str:
        return (
            f"WatchHub(floor={self.floor}, position={self.position}, "
            f"watchers={len(self._watchers)}, ring={len(self._ring)}/{self._ring.maxlen})"
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    @property
    def live(self) -> bool:
        """Whether the hub still follows the store (not closed, history not lost)."""
        return self.failed is None and not self.closed

    def covers(self, since: int) -> bool:
        """Whether a watch from ``since`` can be served from this hub's ring."""
        return self.live and since >= self.floor

    def attach(self, since: int) -> AsyncWatch:
        """A watch of every event after ``since`` (which ``covers`` must allow)."""
        replay = 0
        for slot in reversed(self._ring):
            if slot.event.resource_version <= since:
                break
            replay += 1
        watch = AsyncWatch(self, self._seq - replay, since, self._backlog + replay)
        self._watchers.add(watch)
        return watch

    def end(self) -> None:
        """End every watch now, as at the end of its time (the server is shutting down)."""
        for watch in list(self._watchers):
            watch.finish(None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel()
            self.end()
            self._ring.clear()

    # -- inside the store's writer (any thread, under its lock): O(1) per event ----------

    def _push(self, event: StoreEvent) -> None:
        self._inbox.append(event)
        if not self._scheduled:
            # A lost race only costs a spare wake-up: _drain clears the flag first.
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._drain)

    def _fail(self, error: RevisionCompactedError) -> None:
        self._loop.call_soon_threadsafe(self._lost, error)

    # -- on the loop ----------------------------------------------------------------------

    def _lost(self, error: RevisionCompactedError) -> None:
        self.failed = error
        self._cancel()
        for watch in list(self._watchers):
            watch.finish(error)
        self._ring.clear()

    def _drain(self) -> None:
        self._scheduled = False
        if self.closed or self.failed is not None:
            self._inbox.clear()
            return
        ring, inbox = self._ring, self._inbox
        for _ in range(min(len(inbox), DRAIN_CHUNK)):
            event = inbox.popleft()
            if len(ring) == ring.maxlen:
                self.floor = ring[0].event.resource_version
            ring.append(Slot(self._convert(event)))
            self.position = event.revision
            self._seq += 1
        if inbox and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)
        seq = self._seq
        waking = bool(self._to_wake)
        for watch in list(self._watchers):
            if watch.waiting:
                # It had read everything: a burst is no sign of slowness.
                if not watch.queued:
                    watch.queued = True
                    self._to_wake.append(watch)
            elif seq - watch.cursor > watch.limit:
                # Busy elsewhere (its client not reading) and this far behind: dropped.
                watch.finish(_overflow(watch.limit))
        if not waking:
            self._wake_some()

    def _wake_some(self) -> None:
        to_wake = self._to_wake
        for _ in range(min(len(to_wake), WAKE_BATCH)):
            watch = to_wake.popleft()
            watch.queued = False
            watch.wake()
        if to_wake:
            self._loop.call_soon(self._wake_some)

    def _detach(self, watch: AsyncWatch) -> None:
        self._watchers.discard(watch)
        if self._private and not self._watchers:
            self.close()

    def _slots(self, watch: AsyncWatch, limit: int) -> list[Slot]:
        ring = self._ring
        start = self._seq - len(ring)
        if watch.cursor < start:
            # Fell out of the ring: only possible when the ring is smaller than the backlog.
            raise _overflow(len(ring))
        taken: list[Slot] = []
        index = watch.cursor - start
        end = min(len(ring), index + limit)
        while index < end:
            slot = ring[index]
            index += 1
            if slot.event.resource_version > watch.since:
                taken.append(slot)
        watch.cursor = start + index
        return taken


class AsyncWatch:
    """Async iterator of WatchEvents over a ``WatchHub``; use it on the hub's loop."""

    def __init__(self, hub: WatchHub, cursor: int, since: int, limit: int) -> None:
        self._hub = hub
        self.cursor = cursor
        #: Events up to this version were already seen (the hub may still deliver some).
        self.since = since
        self.limit = limit
        self._waiter: asyncio.Future[None] | None = None
        #: In the hub's queue of watchers to wake.
        self.queued = False
        self._ended = False
        self._failed: RevisionCompactedError | None = None
        self._closed = False

    @property
    def waiting(self) -> bool:
        """Whether the watch is waiting for events (it has read every one there was)."""
        return self._waiter is not None and not self._waiter.done()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def finish(self, error: RevisionCompactedError | None) -> None:
        """End this watch: with ``error`` once read, or cleanly (None)."""
        self._failed = error
        self._ended = True
        # Nothing left to read is kept for a watch that is over.
        self.cursor = self._hub._seq
        self._hub._detach(self)
        self.wake()

    async def next_slots(self, timeout: float | None = None, limit: int = 128) -> list[Slot]:
        """Up to ``limit`` waiting slots, or none after ``timeout`` seconds (None: forever).

        Raises ``RevisionCompactedError`` once, when the watch was dropped; after the end
        of a watch (``close``, or the hub ending it) it returns an empty list at once.
        """
        while True:
            if self._failed is not None:
                error, self._failed = self._failed, None
                self.close()
                raise error
            if self._closed or self._ended:
                return []
            try:
                slots = self._hub._slots(self, limit) if self.cursor < self._hub._seq else []
            except RevisionCompactedError:
                self.close()
                raise
            if slots:
                return slots
            if self.cursor < self._hub._seq:
                continue  # only versions already seen were waiting
            if timeout is not None and timeout <= 0:
                return []
            self._waiter = self._hub._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                return []
            finally:
                self._waiter = None

    @property
    def ended(self) -> bool:
        """Whether the watch is over (closed, or ended by the hub); no more events come."""
        return self._closed or (self._ended and self._failed is None)

    async def next(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, waiting up to ``timeout`` seconds (None: forever)."""
        slots = await self.next_slots(timeout, limit=1)
        return slots[0].event if slots else None

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WatchEvent]:
        while not self.ended:
            for slot in await self.next_slots():
                yield slot.event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub._detach(self)
            self.wake()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
