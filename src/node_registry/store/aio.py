"""The store contract with async I/O, for backends that talk to a server (etcd).

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

``EtcdStore`` is its one implementation (``EtcdReplica`` drives it). The in-memory store
has no async twin: nothing async calls a store directly (``AsyncRegistry`` calls into
``Registry``), and the contract suite runs the sync contract over memory and etcd instead.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Protocol

from node_registry.store.base import Binding, StoreEvent, Versioned
from node_registry.store.records import NodeRecord


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
