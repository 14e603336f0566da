"""A store's change feed kept in process: the last events, and the sinks watching live.

Shared by the in-memory store and the etcd replica's cache. It has no lock of its own:
the store calls it under the lock that orders its writes, so watchers see events in
commit order and a subscription never misses one between its replay and going live.
"""

from __future__ import annotations

import threading
from collections import deque

from node_registry.store.base import Cancel, Sink, StoreEvent


class Feed:
    """The last ``history_size`` events and the live sinks; see the module docstring."""

    def __init__(self, history_size: int, lock: threading.Lock) -> None:
        self._lock = lock
        self.history: deque[StoreEvent] = deque(maxlen=history_size)
        self._sinks: dict[int, Sink] = {}
        self._next = 0

    def oldest(self, revision: int) -> int:
        """The first revision still replayable, given the store's current ``revision``."""
        return self.history[0].revision if self.history else revision + 1

    def covers(self, since: int, revision: int) -> bool:
        """Whether every event after ``since`` is here (``since`` not newer than ``revision``)."""
        return self.oldest(revision) <= since + 1 and since <= revision

    def subscribe(self, since: int, sink: Sink) -> Cancel:
        """Replay the kept events after ``since`` to ``sink``, then send it every new one."""
        for event in self.history:
            if event.revision > since:
                sink(event)
        token = self._next
        self._next += 1
        self._sinks[token] = sink

        def cancel() -> None:
            with self._lock:
                self._sinks.pop(token, None)

        return cancel

    def publish(self, event: StoreEvent) -> None:
        self.history.append(event)
        for sink in list(self._sinks.values()):
            sink(event)

    def close(self) -> None:
        self._sinks.clear()
