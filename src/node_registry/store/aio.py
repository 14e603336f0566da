"""The store contract with async I/O, for backends that talk to a server (etcd).

Same contract as ``store.base.Store`` (see its docstring), with two differences that come
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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Protocol

from node_registry.store.base import DEFAULT_BINDING_TTL, Binding, StoreEvent, Versioned
from node_registry.store.memory import DEFAULT_HISTORY, MemoryStore
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


class AsyncMemoryStore:
    """``MemoryStore`` behind the async contract, so one contract suite covers both.

    Every call is a plain call of the sync store (it never blocks on I/O). Watch events
    cross from the store's sink into the watcher's loop through ``call_soon_threadsafe``,
    so writes from other threads are delivered too, in order.
    """

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        history_size: int = DEFAULT_HISTORY,
        binding_ttl: float = DEFAULT_BINDING_TTL,
    ):
        if store is None:
            store = MemoryStore(history_size=history_size, binding_ttl=binding_ttl)
        self._store = store

    def __repr__(self) -> str:
        return f"AsyncMemoryStore({self._store!r})"

    async def revision(self) -> int:
        return self._store.revision

    async def get(self, node_id: str) -> Versioned | None:
        return self._store.get(node_id)

    async def list(self) -> tuple[dict[str, Versioned], int]:
        return self._store.list()

    async def create(self, record: NodeRecord, *, renewed_at: datetime) -> int:
        return self._store.create(record, renewed_at=renewed_at)

    async def update(
        self, record: NodeRecord, *, expected_revision: int, renewed_at: datetime | None = None
    ) -> int:
        return self._store.update(
            record, expected_revision=expected_revision, renewed_at=renewed_at
        )

    async def delete(
        self, node_id: str, *, expected_revision: int | None = None, keep: Binding | None = None
    ) -> int:
        return self._store.delete(node_id, expected_revision=expected_revision, keep=keep)

    async def binding(self, name: str) -> Binding | None:
        return self._store.binding(name)

    async def forget(self, name: str) -> bool:
        return self._store.forget(name)

    async def renew(self, node_id: str, at: datetime) -> None:
        self._store.renew(node_id, at)

    async def renewed_at(self, node_id: str) -> datetime | None:
        return self._store.renewed_at(node_id)

    async def watch(self, since: int) -> AsyncGenerator[StoreEvent, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StoreEvent] = asyncio.Queue()

        def sink(event: StoreEvent) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        cancel = self._store.watch(since, sink)  # raises RevisionCompactedError here
        try:
            while True:
                yield await queue.get()
        finally:
            cancel()

    async def ping(self) -> None:
        self._store.ping()

    async def close(self) -> None:
        self._store.close()
