"""One replica's cache of the nodes in etcd, fed by etcd's watch, and the watchers it feeds.

List, then watch from the list's revision; watch again from the last revision after a
broken stream; list again and diff after compaction. The last ``history_size`` events
are kept for watchers (``Feed``). A write waits until the cache has applied its revision
(``caught_up``), so a replica reads its own writes. A watcher resuming from a version
outside that history gets its own etcd watch from the version (``relay``).

A record is decoded once per replica at most: the replica's own writes
(``store.etcd.written``) and the previous values the cache holds are taken as they are
when the watch brings them back; only the writes of other replicas are decoded.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
from collections.abc import Callable
from contextlib import aclosing

from node_registry.errors import RevisionCompactedError, StoreUnavailableError
from node_registry.store.base import ChangeType, ErrorSink, Sink, StoreEvent, Versioned
from node_registry.store.etcd.nodes import EtcdStore
from node_registry.store.feed import Feed
from node_registry.store.records import NodeRecord

log = logging.getLogger("node_registry")

RETRY_FIRST = 0.1
RETRY_MAX = 2.0

#: The part of the view that failed (an error), or works again (None).
PartState = Callable[[BaseException | None], None]


class NodeCache:
    """Every node record as the feed last applied it, at ``revision``; guarded by ``lock``
    (shared with the replica's own state), its events published to ``feed``."""

    def __init__(self, etcd: EtcdStore, history_size: int, lock: threading.Lock) -> None:
        self._etcd = etcd
        etcd.follow_own_writes()  # this cache's feed takes them back
        self.lock = lock
        self.records: dict[str, Versioned] = {}
        self.revision = 0
        self.feed = Feed(history_size, lock)
        # Writers waiting for the cache to apply their revision: (revision, seq, future),
        # a heap, so each applied event wakes only the writers it completes.
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = 0

    def snapshot(self) -> tuple[dict[str, Versioned], int]:
        with self.lock:
            return dict(self.records), self.revision

    def covers(self, since: int) -> bool:
        """Whether a watch from ``since`` can be served from the kept events."""
        with self.lock:
            return self.feed.covers(since, self.revision)

    async def load(self) -> None:
        records, revision = await self._etcd.list()
        with self.lock:
            self.records = records
            self.revision = revision
            self.feed.history.clear()
            self._wake_writers()

    async def follow(self, state: PartState, deleted: Callable[[str], None], name: str) -> None:
        """The feed: watch from the last revision applied, for as long as the replica runs.

        ``deleted`` runs under the lock for each node deleted (the replica forgets its
        renewals); ``state`` hears whether the feed works.
        """
        delay = RETRY_FIRST
        relist = False
        while True:
            try:
                if relist:
                    await self._relist()
                    relist = False
                await self._etcd.ping()
                watch = self._etcd.watch(self.revision, lambda: state(None), self._held)
                async with aclosing(watch) as events:
                    async for event in events:
                        self._apply(event, deleted)
                        delay = RETRY_FIRST
            except RevisionCompactedError as error:
                log.warning("etcd history was compacted past this replica's view: listing again")
                state(error)
                relist = True
            except Exception as error:  # a bug must not stop the feed for good
                if not isinstance(error, StoreUnavailableError):
                    log.exception("replica %s: the etcd feed failed", name)
                state(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _relist(self) -> None:
        """List again and hand every difference to the watchers, as one revision."""
        records, revision = await self._etcd.list()
        with self.lock:
            old = self.records
            events = [
                StoreEvent(ChangeType.DELETED, gone.record, gone.record, revision)
                for node_id, gone in old.items()
                if node_id not in records
            ]
            for node_id, now in records.items():
                before = old.get(node_id)
                if before is None:
                    events.append(StoreEvent(ChangeType.ADDED, now.record, None, revision))
                elif before.revision != now.revision:
                    events.append(
                        StoreEvent(ChangeType.MODIFIED, now.record, before.record, revision)
                    )
            self.records = records
            self.revision = max(self.revision, revision)
            self.feed.history.clear()
            for event in events:
                self.feed.publish(event)
            self._wake_writers()

    def _apply(self, event: StoreEvent, deleted: Callable[[str], None]) -> None:
        with self.lock:
            if event.type is ChangeType.DELETED:
                node_id = event.record.node_id
                self.records.pop(node_id, None)
                deleted(node_id)
            else:
                self.records[event.record.node_id] = Versioned(
                    event.record, event.revision, event.memo
                )
            self.revision = max(self.revision, event.revision)
            self.feed.publish(event)
            self._wake_writers()

    def _held(self, node_id: str, revision: int) -> NodeRecord | None:
        """On the loop, as the watch converts an event: the record held at ``revision``
        (a previous value: the same bytes, decoded when they came)."""
        held = self.records.get(node_id)
        return held.record if held is not None and held.revision == revision else None

    async def caught_up(self, revision: int, timeout: float) -> int:
        """``revision``, once the cache has applied it (read-your-writes); on its loop."""
        with self.lock:
            if self.revision >= revision:
                return revision
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter_seq += 1
            heapq.heappush(self._waiting, (revision, self._waiter_seq, done))
        # Bounded: a cache that lags longer only costs this replica its read-your-writes.
        await asyncio.wait([done], timeout=timeout)
        return revision

    def _wake_writers(self) -> None:
        """Under the lock, on the loop: release the writers the cache has caught up with."""
        waiting = self._waiting
        while waiting and waiting[0][0] <= self.revision:
            done = heapq.heappop(waiting)[2]
            if not done.done():
                done.set_result(None)

    async def relay(self, since: int, sink: Sink, on_error: ErrorSink | None, name: str) -> None:
        """A watcher's own etcd watch, re-opened from its last event after a broken stream."""
        delay = RETRY_FIRST
        last = since
        while True:
            try:
                if last == since:  # compacted or never issued: say so, do not wait for events
                    await self._etcd.check_watchable(since)
                async with aclosing(self._etcd.watch(last)) as events:
                    async for event in events:
                        with self.lock:
                            sink(event)
                        last = event.revision
                        delay = RETRY_FIRST
            except RevisionCompactedError as error:
                if on_error is not None:
                    on_error(error)
                return
            except StoreUnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            except Exception:
                # Not etcd's doing (a record this version cannot read, a bug): end this
                # watcher as too old, so its client lists again, rather than hang it.
                log.exception("replica %s: a watcher's relay failed", name)
                if on_error is not None:
                    on_error(RevisionCompactedError("the watch broke; list again"))
                return

    def close(self) -> None:
        with self.lock:
            self.feed.close()
