"""The contract every store keeps, whatever holds the data (memory today, etcd next).

- Every write returns a revision higher than any before it; reads report the revision at
  which the record was last modified.
- ``expected_revision`` makes ``update`` and ``delete`` a compare-and-swap: a stale one raises
  ``RevisionConflictError`` and changes nothing; ``create`` of an id that exists raises it too.
- Names are unique: ``create``/``update`` raise ``ConflictError`` when another node id holds
  the name.
- A heartbeat is a lease renewal: it never rewrites the record and never bumps the revision
  (Kubernetes keeps Lease apart from Node for the same reason).
- ``watch(since, sink, on_error)`` delivers every change after ``since`` in revision order,
  first the kept history and then live events, or raises ``RevisionCompactedError`` when
  ``since`` is older than the history kept, or newer than any revision issued (a new
  history). A store that can lose history later (etcd compaction under a watcher) ends the
  watch by handing that error to ``on_error``.
- A store shared by several registry processes (etcd) says which one runs the lifecycle
  controller (``leading``), whether its view is current (``check_view``), since when it
  has seen every renewal again after losing the store (``resumed_at``), and carries the
  controller's shared state to the others (``publish_state``/``shared_state``). A store only this
  process uses always leads, is always current, and never lost sight of a renewal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from node_registry.errors import RevisionCompactedError
from node_registry.store.records import NodeRecord


class ChangeType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One committed change; ``record`` is the new state, or the last one for DELETED."""

    type: ChangeType
    record: NodeRecord
    prev: NodeRecord | None
    revision: int


@dataclass(frozen=True, slots=True)
class Versioned:
    """A record with the revision of its last modification (``mod_revision`` in etcd)."""

    record: NodeRecord
    revision: int


Sink = Callable[[StoreEvent], None]
ErrorSink = Callable[[RevisionCompactedError], None]
Cancel = Callable[[], None]


class Store(Protocol):
    """Synchronous store; see the module docstring for the contract."""

    #: Whether calls wait on the network (an async caller runs them in a thread pool).
    blocking: bool

    @property
    def revision(self) -> int: ...

    @property
    def leading(self) -> bool: ...

    @property
    def resumed_at(self) -> datetime | None: ...

    def check_view(self) -> None:
        """Raise ``StoreUnavailableError`` when this process's view may be stale."""

    def publish_state(self, key: str, doc: dict[str, Any]) -> None:
        """Share a piece of the controller's state with every process on this store."""

    def shared_state(self, key: str) -> dict[str, Any] | None:
        """What the controller last published under ``key`` (None: nothing, or it died)."""

    def get(self, node_id: str) -> Versioned | None: ...

    def list(self) -> tuple[dict[str, Versioned], int]: ...

    def create(self, record: NodeRecord, *, renewed_at: datetime) -> int: ...

    def update(
        self, record: NodeRecord, *, expected_revision: int, renewed_at: datetime | None = None
    ) -> int: ...

    def delete(self, node_id: str, *, expected_revision: int | None = None) -> int: ...

    def renew(self, node_id: str, at: datetime) -> None: ...

    def renewed_at(self, node_id: str) -> datetime | None: ...

    def check_watchable(self, since: int) -> None:
        """Raise ``RevisionCompactedError`` where ``watch(since)`` would (may be a round trip)."""

    def watch(self, since: int, sink: Sink, on_error: ErrorSink | None = None) -> Cancel: ...

    def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store answers (``/readyz``)."""

    def close(self) -> None: ...
