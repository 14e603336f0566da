"""The store contract awaited: ``AsyncStorage`` (what the async registry drives), and
``AsyncStore`` (the raw etcd client's).

``AsyncStorage`` is ``Storage``'s calls that may wait, as coroutines: the registry's
procedures (``registry.steps``) yield them and ``AsyncRegistry`` awaits them on its loop.
Every store offers it as ``store.aio``: a store that never waits (memory) answers at once
(``Immediate``); the etcd replica awaits etcd on the loop it runs on.

``AsyncStore``:

Same contract as ``store.base.Storage`` (see its docstring), with two differences that come
from the I/O and not from the rules:

- ``revision()`` is a coroutine: on etcd it is a round trip (the header of a read).
- ``watch(since)`` is an async generator instead of a sink: it yields every change after
  ``since`` in revision order and raises ``RevisionCompactedError`` at the first step when
  ``since`` is older than the kept history or newer than any revision issued, or later from
  the iterator when history is compacted under a slow watcher. Close it with
  ``contextlib.aclosing`` (or ``aclose()``) when done; breaking out of the loop alone leaves
  the server-side watch open until the generator is collected.

Revisions are strictly increasing but need not be dense: on etcd they are cluster-wide
revisions, so writes under other prefixes advance them too.

``EtcdStore`` is its one implementation (``EtcdReplica`` drives it, and offers the
registry ``AsyncStorage`` on top).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from node_registry.store.records import NodeRecord

if TYPE_CHECKING:
    from node_registry.store.base import Binding, Store, StoreEvent, Versioned


class AsyncStorage(Protocol):
    """``Storage``'s calls that may wait, awaited; same contract (see ``store.base``)."""

    async def get(self, node_id: str) -> Versioned | None: ...

    async def create(self, record: NodeRecord, *, renewed_at: datetime) -> int: ...

    async def update(
        self,
        record: NodeRecord,
        *,
        expected_revision: int,
        renewed_at: datetime | None = None,
        fenced: bool = False,
    ) -> int: ...

    async def delete(
        self,
        node_id: str,
        *,
        expected_revision: int | None = None,
        keep: Binding | None = None,
        fenced: bool = False,
    ) -> int: ...

    async def renew(self, node_id: str, at: datetime) -> None: ...

    async def binding(self, name: str) -> Binding | None: ...

    async def forget(self, name: str) -> bool: ...

    async def objects(self, kind: str) -> dict[str, dict[str, Any]]: ...

    async def put_object(self, kind: str, name: str, doc: dict[str, Any]) -> None: ...

    async def delete_object(self, kind: str, name: str) -> bool: ...

    async def publish_state(self, key: str, doc: dict[str, Any]) -> None: ...

    async def check_watchable(self, since: int) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None:
        """Close the store (on etcd: give up the controller seat, close the client)."""


class Immediate:
    """``AsyncStorage`` over a store whose calls never wait (memory): each answers at once."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"Immediate({self._store!r})"

    async def get(self, node_id: str) -> Versioned | None:
        return self._store.get(node_id)

    async def create(self, record: NodeRecord, *, renewed_at: datetime) -> int:
        return self._store.create(record, renewed_at=renewed_at)

    async def update(
        self,
        record: NodeRecord,
        *,
        expected_revision: int,
        renewed_at: datetime | None = None,
        fenced: bool = False,
    ) -> int:
        return self._store.update(
            record, expected_revision=expected_revision, renewed_at=renewed_at, fenced=fenced
        )

    async def delete(
        self,
        node_id: str,
        *,
        expected_revision: int | None = None,
        keep: Binding | None = None,
        fenced: bool = False,
    ) -> int:
        return self._store.delete(
            node_id, expected_revision=expected_revision, keep=keep, fenced=fenced
        )

    async def renew(self, node_id: str, at: datetime) -> None:
        self._store.renew(node_id, at)

    async def binding(self, name: str) -> Binding | None:
        return self._store.binding(name)

    async def forget(self, name: str) -> bool:
        return self._store.forget(name)

    async def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        return self._store.objects(kind)

    async def put_object(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        self._store.put_object(kind, name, doc)

    async def delete_object(self, kind: str, name: str) -> bool:
        return self._store.delete_object(kind, name)

    async def publish_state(self, key: str, doc: dict[str, Any]) -> None:
        self._store.publish_state(key, doc)

    async def check_watchable(self, since: int) -> None:
        self._store.check_watchable(since)

    async def ping(self) -> None:
        self._store.ping()

    async def close(self) -> None:
        self._store.close()


class AsyncStore(Protocol):
    """Asynchronous store; see ``store.base`` for the contract."""

    async def revision(self) -> int: ...

    async def get(self, node_id: str) -> Versioned | None: ...

    async def list(self) -> tuple[dict[str, Versioned], int]: ...

    async def create(self, record: NodeRecord, *, renewed_at: datetime) -> int: ...

    async def update(
        self, record: NodeRecord, *, expected_revision: int, renewed_at: datetime | None = None
    ) -> int: ...

    async def delete(
        self, node_id: str, *, expected_revision: int | None = None, keep: Binding | None = None
    ) -> int: ...

    async def binding(self, name: str) -> Binding | None: ...

    async def forget(self, name: str) -> bool: ...

    async def renew(self, node_id: str, at: datetime) -> None: ...

    async def renewed_at(self, node_id: str) -> datetime | None: ...

    def watch(self, since: int) -> AsyncGenerator[StoreEvent, None]: ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store answers (``/readyz``)."""

    async def close(self) -> None: ...
