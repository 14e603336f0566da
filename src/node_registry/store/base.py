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
- Two protocols: ``Storage`` (records, leases, bindings, watch) and ``Coordination``
  (who leads, whether the view is current, shared state); ``Store`` is both, as every
  backend is. A store shared by several registry processes (etcd) says which one runs
  the lifecycle controller (``leading``); a ``fenced`` write (``update``/``delete``, and
  every ``publish_state``) succeeds only while this process holds that seat, checked by
  the store in the write itself, else ``NotLeadingError`` (a controller paused past its
  seat's lease writes nothing from its stale view: issue #10, item 9). It says whether
  its view is current (``check_view``), since when it has seen every renewal again after
  losing the store (``resumed_at``), and carries the controller's shared state to the
  others (``publish_state``/``shared_state``). A store only this process uses always
  leads, is always current, and never lost sight of a renewal.
- A name a node gave up is remembered: ``delete(node_id, keep=binding)`` stores, in the
  same atomic step as the deletion, whose the name was and the labels to give back
  (``binding(name)``), until the name is registered again (``create``, or ``update``
  renaming a node to it, forgets it) or ``forget(name)``; a ``delete`` without ``keep``
  forgets it too. The store may drop a binding once ``binding_ttl`` seconds passed since
  its ``released_at`` (the registry ignores older ones anyway). Bindings are read from the
  store itself, so every process sharing it sees the same.
- A stored record this process cannot read (written by another version, damaged, or over
  a limit enforced later) is skipped by every read and watch, never raised: one bad record
  must not take reads, watches or a replica down. ``skipped`` says which, for the metrics.
- Objects other than nodes (``put_object``/``objects``: the registered ``NodeType`` s) are
  kept as JSON documents by kind and name, on no lease: they outlive every process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from node_registry.errors import RevisionCompactedError
from node_registry.store.records import NodeRecord

if TYPE_CHECKING:
    from node_registry.store.aio import AsyncStorage

log = logging.getLogger("node_registry")

#: How long a name stays bound to the node that deregistered itself from it: a week.
DEFAULT_BINDING_TTL = 7 * 24 * 3600


class ChangeType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One committed change; ``record`` is the new state, or the last one for DELETED.

    ``memo`` is the new version's (``Versioned.memo``): every reader of the change feed that
    keeps the version (the registry's index, the watch fan-out) shares what is derived of
    it, such as its wire bytes, so a watch and a list encode it once between them.
    """

    type: ChangeType
    record: NodeRecord
    prev: NodeRecord | None
    revision: int
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Binding:
    """A name its node deregistered from: the uid it stays bound to, the labels to give back.

    ``labels`` are the protected labels of its passport, ``effective`` the protected labels
    selectors matched on it (those plus the ones its resources made).
    """

    name: str
    node_id: str
    labels: dict[str, str]
    released_at: datetime
    effective: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeId": self.node_id,
            "labels": self.labels,
            "effective": self.effective,
            "releasedAt": self.released_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, name: str, doc: dict[str, Any]) -> Binding:
        released = datetime.fromisoformat(doc["releasedAt"])
        labels, effective = _labels(doc.get("labels")), _labels(doc.get("effective"))
        return cls(name, str(doc["nodeId"]), labels, released, effective)


def _labels(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("labels must map strings to strings")
    return value


@dataclass(frozen=True, slots=True)
class Versioned:
    """A record with the revision of its last modification (``mod_revision`` in etcd).

    Both are immutable, so what readers derive from one version (its encoded wire bytes)
    holds for as long as it is current: ``memo`` keeps it, shared by every read of it, and
    goes with the version when a change replaces it.
    """

    record: NodeRecord
    revision: int
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


class SkippedRecords:
    """The stored records skipped as unreadable: which keys now, and how many versions so far.

    Each version of a key (its revision) is counted and logged once, however many reads and
    watches come across it; a key leaves the set when a later readable version replaces it
    or it is deleted. Watches replaying old history report old versions: a version older
    than what is known of the key changes nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skipped: dict[str, int] = {}  # key -> revision of the unreadable version
        self._cleared: dict[str, int] = {}  # key once skipped -> revision it was cleared at
        self.found = 0  #: unreadable versions found since this process started

    def skip(self, key: str, revision: int, why: str) -> None:
        with self._lock:
            known = max(self._skipped.get(key, -1), self._cleared.get(key, -1))
            if revision <= known:
                return
            self._skipped[key] = revision
            self.found += 1
        log.warning(
            "skipped the stored record %s (revision %d): it cannot be read (%s); every other "
            "node is served as usual. The node's next registration replaces it; or remove it "
            "(etcdctl del %s)",
            key,
            revision,
            why,
            key,
        )

    def readable(self, key: str, revision: int | None = None) -> None:
        """``key`` holds a readable version at ``revision`` (None: the latest), or is gone."""
        if key not in self._skipped:
            return  # the usual case: no lock
        with self._lock:
            skipped = self._skipped.get(key)
            if skipped is None or (revision is not None and revision < skipped):
                return
            del self._skipped[key]
            self._cleared[key] = skipped if revision is None else revision

    def replace(self, found: dict[str, tuple[int, str]], revision: int) -> None:
        """A listing at ``revision`` found exactly these unreadable keys (key -> (rev, why))."""
        for key in set(self._skipped) - set(found):
            self.readable(key, revision)
        for key, (version, why) in found.items():
            self.skip(key, version, why)

    @property
    def keys(self) -> list[str]:
        """The keys skipped now."""
        with self._lock:
            return sorted(self._skipped)


Sink = Callable[[StoreEvent], None]
ErrorSink = Callable[[RevisionCompactedError], None]
Cancel = Callable[[], None]


class Storage(Protocol):
    """The records, their leases and watch; see the module docstring for the contract.

    ``fenced`` on ``update``/``delete`` is the coordination's seat check made part of the
    write (see ``Coordination``); a store only this process uses never refuses one.
    """

    #: Whether calls wait on the network (etcd): ``AsyncRegistry`` awaits them on ``aio``.
    blocking: bool
    #: Stored records skipped as unreadable (see the module docstring).
    skipped: SkippedRecords

    @property
    def failovers(self) -> int:
        """Times the store left a failing member of its cluster for another (0 with one)."""

    @property
    def aio(self) -> AsyncStorage:
        """The same storage, its calls that may wait awaited (``AsyncRegistry`` drives it)."""

    @property
    def revision(self) -> int: ...

    def put_object(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        """Keep a registry object other than a node (a ``NodeType``) for good: no lease."""

    def delete_object(self, kind: str, name: str) -> bool:
        """Drop the object; whether there was one."""

    def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every object of ``kind`` by name, as the store holds them now (a read of the
        store itself on etcd: objects are few and rarely change)."""

    def get(self, node_id: str) -> Versioned | None: ...

    def list(self) -> tuple[dict[str, Versioned], int]: ...

    def create(self, record: NodeRecord, *, renewed_at: datetime) -> int: ...

    def update(
        self,
        record: NodeRecord,
        *,
        expected_revision: int,
        renewed_at: datetime | None = None,
        fenced: bool = False,
    ) -> int: ...

    def delete(
        self,
        node_id: str,
        *,
        expected_revision: int | None = None,
        keep: Binding | None = None,
        fenced: bool = False,
    ) -> int: ...

    def binding(self, name: str) -> Binding | None:
        """The binding the node that gave up ``name`` left, if any (see the module docstring)."""

    def forget(self, name: str) -> bool:
        """Drop the binding of ``name``; whether there was one."""

    def renew(self, node_id: str, at: datetime) -> None: ...

    def renewed_at(self, node_id: str) -> datetime | None: ...

    def check_watchable(self, since: int) -> None:
        """Raise ``RevisionCompactedError`` where ``watch(since)`` would (may be a round trip)."""

    def watch(self, since: int, sink: Sink, on_error: ErrorSink | None = None) -> Cancel: ...

    def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store answers (``/readyz``)."""

    def close(self) -> None: ...


class Coordination(Protocol):
    """What the registry processes sharing a store agree on: who runs the lifecycle
    controller, whether this one's view is current, and the controller's shared state.

    On etcd the seat is a leased key every replica campaigns for, and a ``fenced`` write
    compares it in its own transaction (``NotLeadingError`` once it is gone). A store only
    this process uses is its own quorum: it always leads, is always current, and shares
    state with no one but itself.
    """

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


class Store(Storage, Coordination, Protocol):
    """Storage and its coordination in one object, as every backend is: the registry
    needs both (it writes records and answers only from a current view)."""
