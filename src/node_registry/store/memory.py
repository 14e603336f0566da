"""The in-memory store: the embedded default (seed 2.2.1), with the full store contract.

One lock serialises writes so revisions and the event history stay in commit order; sinks
are called under that lock so a watcher never sees events out of order. Sinks must be quick
and must not call back into the store.

It is its own ``Coordination`` too, honestly rather than as a stub: no other process can
reach the data, so this one is the whole quorum. It always leads (no seat to lose, so a
``fenced`` write is never refused), its view is always current (``check_view`` passes,
``resumed_at`` is None: it never lost sight of a renewal), and the state it publishes is
shared with the only reader there is, itself.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from node_registry.errors import (
    ConflictError,
    NotFoundError,
    RevisionCompactedError,
    RevisionConflictError,
)
from node_registry.store.aio import AsyncStorage, Immediate
from node_registry.store.base import (
    DEFAULT_BINDING_TTL,
    Binding,
    Cancel,
    ChangeType,
    ErrorSink,
    Sink,
    SkippedRecords,
    StoreEvent,
    Versioned,
)
from node_registry.store.feed import Feed
from node_registry.store.records import NodeRecord

DEFAULT_HISTORY = 10_000


class MemoryStore:
    """Records in dicts, leases as renewal times, the last ``history_size`` events for watchers."""

    blocking = False
    leading = True
    resumed_at = None

    def __init__(
        self, *, history_size: int = DEFAULT_HISTORY, binding_ttl: float = DEFAULT_BINDING_TTL
    ) -> None:
        self._lock = threading.Lock()
        # In release order (a re-release moves to the end), so the oldest go first.
        self._bindings: dict[str, Binding] = {}
        self._binding_ttl = timedelta(seconds=binding_ttl)
        self._records: dict[str, Versioned] = {}
        self._names: dict[str, str] = {}
        self._renewed: dict[str, datetime] = {}
        self._revision = 0
        self._feed = Feed(history_size, self._lock)
        self._state: dict[str, dict[str, Any]] = {}
        self._objects: dict[str, dict[str, dict[str, Any]]] = {}
        #: Always empty: records are kept as objects here, never decoded.
        self.skipped = SkippedRecords()
        self._aio = Immediate(self)

    @property
    def failovers(self) -> int:
        return 0  # in this process: no member to fail

    @property
    def aio(self) -> AsyncStorage:
        """Nothing here waits: each awaited call answers at once, on the caller's loop."""
        return self._aio

    def __repr__(self) -> str:
        return f"MemoryStore(history_size={self._feed.history.maxlen})"

    @property
    def revision(self) -> int:
        return self._revision

    def get(self, node_id: str) -> Versioned | None:
        return self._records.get(node_id)

    def list(self) -> tuple[dict[str, Versioned], int]:
        with self._lock:
            return dict(self._records), self._revision

    def renewed_at(self, node_id: str) -> datetime | None:
        return self._renewed.get(node_id)

    def renew(self, node_id: str, at: datetime) -> None:
        # No lock: a dict store is atomic under the GIL and this is the hot path. The
        # membership check and the store can interleave with a delete; the stray renewal
        # is dropped by the next delete of the id or overwritten by its next create.
        if node_id not in self._records:
            raise NotFoundError(f"node {node_id!r} is not registered")
        self._renewed[node_id] = at

    def create(self, record: NodeRecord, *, renewed_at: datetime) -> int:
        node_id = record.node_id
        with self._lock:
            if node_id in self._records:
                # A create is a compare-and-swap against "absent": losing it is a stale read.
                raise RevisionConflictError(f"node {node_id!r} already exists")
            self._claim_name(record)
            self._bindings.pop(record.name, None)
            return self._commit(ChangeType.ADDED, record, None, renewed_at)

    def update(
        self,
        record: NodeRecord,
        *,
        expected_revision: int,
        renewed_at: datetime | None = None,
        fenced: bool = False,
    ) -> int:
        node_id = record.node_id
        with self._lock:
            current = self._records.get(node_id)
            if current is None:
                raise NotFoundError(f"node {node_id!r} is not registered")
            if current.revision != expected_revision:
                raise RevisionConflictError(
                    f"node {node_id!r} changed (revision {current.revision}, "
                    f"expected {expected_revision})"
                )
            if current.record.name != record.name:
                self._claim_name(record)
                del self._names[current.record.name]
                self._bindings.pop(record.name, None)
            return self._commit(ChangeType.MODIFIED, record, current.record, renewed_at)

    def delete(
        self,
        node_id: str,
        *,
        expected_revision: int | None = None,
        keep: Binding | None = None,
        fenced: bool = False,
    ) -> int:
        with self._lock:
            current = self._records.get(node_id)
            if current is None:
                raise NotFoundError(f"node {node_id!r} is not registered")
            if expected_revision is not None and current.revision != expected_revision:
                raise RevisionConflictError(
                    f"node {node_id!r} changed (revision {current.revision}, "
                    f"expected {expected_revision})"
                )
            del self._names[current.record.name]
            self._renewed.pop(node_id, None)
            self._bindings.pop(current.record.name, None)
            if keep is not None:
                self._bindings[keep.name] = keep
                self._drop_bindings_before(keep.released_at - self._binding_ttl)
            return self._commit(ChangeType.DELETED, current.record, current.record, None)

    def binding(self, name: str) -> Binding | None:
        return self._bindings.get(name)

    def forget(self, name: str) -> bool:
        with self._lock:
            return self._bindings.pop(name, None) is not None

    def _drop_bindings_before(self, moment: datetime) -> None:
        for name, binding in list(self._bindings.items()):
            if binding.released_at >= moment:
                break
            del self._bindings[name]

    def check_view(self) -> None:
        """Always current: the data lives here."""

    def publish_state(self, key: str, doc: dict[str, Any]) -> None:
        self._state[key] = doc

    def shared_state(self, key: str) -> dict[str, Any] | None:
        return self._state.get(key)

    def put_object(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        with self._lock:
            self._objects.setdefault(kind, {})[name] = doc

    def delete_object(self, kind: str, name: str) -> bool:
        with self._lock:
            return self._objects.get(kind, {}).pop(name, None) is not None

    def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._objects.get(kind, {}))

    def check_watchable(self, since: int) -> None:
        with self._lock:
            self._check_watchable(since)

    def _check_watchable(self, since: int) -> None:
        if since > self._revision:
            # A version this store never issued: the registry restarted with a new
            # history (memory://) and the watcher holds a version of the old one.
            raise RevisionCompactedError(
                f"resource version {since} is newer than the registry's current "
                f"version {self._revision} (the registry restarted?); list again and "
                "watch from the list's version"
            )
        oldest = self._feed.oldest(self._revision)
        if since < self._revision and since + 1 < oldest:
            raise RevisionCompactedError(
                f"resource version {since} is too old: history starts at "
                f"{oldest - 1}, current is {self._revision}; list again and "
                "watch from the list's version"
            )

    def watch(self, since: int, sink: Sink, on_error: ErrorSink | None = None) -> Cancel:
        # ``on_error`` is never called: history here is only ever lost before a watch starts.
        with self._lock:
            self._check_watchable(since)
            return self._feed.subscribe(since, sink)

    def ping(self) -> None:
        """Always reachable: it lives in this process."""

    def close(self) -> None:
        with self._lock:
            self._feed.close()

    def _claim_name(self, record: NodeRecord) -> None:
        owner = self._names.get(record.name)
        if owner is not None and owner != record.node_id:
            raise ConflictError(
                f"name {record.name!r} is already registered by node {owner}; "
                "names are unique, choose another or deregister that node"
            )
        self._names[record.name] = record.node_id

    def _commit(
        self,
        change: ChangeType,
        record: NodeRecord,
        prev: NodeRecord | None,
        renewed_at: datetime | None,
    ) -> int:
        self._revision += 1
        event = StoreEvent(change, record, prev, self._revision)
        if change is ChangeType.DELETED:
            del self._records[record.node_id]
        else:
            self._records[record.node_id] = Versioned(record, self._revision, event.memo)
            if renewed_at is not None:
                self._renewed[record.node_id] = renewed_at
        self._feed.publish(event)
        return self._revision
