"""Watch streams over the store's change feed: a blocking one for threads, one for asyncio.

A watcher that falls ``capacity`` events behind is closed with ``RevisionCompactedError``,
as the Kubernetes API server drops too-slow watchers: it lists again and resumes from the
list's version, instead of the registry buffering without bound on its behalf.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Self

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


class AsyncWatch:
    """Async iterator of WatchEvents; store events may come from any thread."""

    def __init__(self, subscribe: Subscribe, since: int, convert: Convert, capacity: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._capacity = capacity
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._convert = convert
        self._failed: RevisionCompactedError | None = None
        self._closed = False
        self._cancel = subscribe(since, self._push, self._fail)

    def _fail(self, error: RevisionCompactedError) -> None:
        self._failed = error
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    def _push(self, event: StoreEvent) -> None:
        # Runs in the writer's thread, under the store lock: count here, queue on the loop.
        if self._failed is not None:
            return
        with self._pending_lock:
            if self._pending >= self._capacity:
                self._failed = _overflow(self._capacity)
                self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
                return
            self._pending += 1
        self._loop.call_soon_threadsafe(self._queue.put_nowait, self._convert(event))

    async def next(self, timeout: float | None = None) -> WatchEvent | None:
        if self._closed:
            return None
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if item is None:
            if self._failed is not None:
                self.close()
                raise self._failed
            return None
        with self._pending_lock:
            self._pending -= 1
        return item

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WatchEvent]:
        while not self._closed:
            event = await self.next()
            if event is not None:
                yield event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cancel()
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
