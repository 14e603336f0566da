"""What one replica follows of the state replicas share besides the nodes: the
controller's published state (``state/``), and the objects (node types) as last read.

Shared state is state (the latest per key), not history: after a failure a follower
reads it afresh and watches from there, which loses nothing that matters and needs no
history that compaction may have dropped (``follow_shared``; the renewal digests are
followed the same way).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

from node_registry.errors import RevisionCompactedError, StoreUnavailableError
from node_registry.store.etcd.cache import RETRY_FIRST, RETRY_MAX, PartState

log = logging.getLogger("node_registry")

S = TypeVar("S")  # a snapshot of shared state
C = TypeVar("C")  # one change of it

#: A watch of shared state from a revision; it calls ``opened`` once its stream is open.
SharedWatch = Callable[[int, Callable[[], None]], AsyncGenerator[C, None]]


async def follow_shared(
    part: str,
    read: Callable[[], Awaitable[tuple[S, int]]],
    watch: SharedWatch[C],
    take_all: Callable[[S], None],
    take_one: Callable[[C], None],
    state: PartState,
    name: str,
    revision: int | None = None,
) -> None:
    """Keep shared state current: read it, watch from there; after a failure, read afresh.

    ``state`` hears whether the follower works: up once the watch's stream is open (a read
    that works but a watch that fails to open is no view), down at each failure.
    """
    delay = RETRY_FIRST
    while True:
        try:
            if revision is None:
                snapshot, revision = await read()
                take_all(snapshot)
            async with aclosing(watch(revision, lambda: state(None))) as items:
                async for item in items:
                    take_one(item)
                    delay = RETRY_FIRST
            revision = None  # the store moved to another etcd member: read it there
        except Exception as error:  # a bug must not stop the feed for good
            if not isinstance(error, StoreUnavailableError | RevisionCompactedError):
                log.exception("replica %s: the %s feed failed", name, part)
            state(error)
            revision = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)


class SharedStates:
    """The controller's published state, by key, as the ``state/`` watch last delivered it."""

    def __init__(self) -> None:
        self._states: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"SharedStates({sorted(self._states)})"

    def get(self, key: str) -> dict[str, Any] | None:
        return self._states.get(key)

    def put(self, key: str, doc: dict[str, Any]) -> None:
        """This replica's own publication: seen here before the watch brings it back."""
        self._states[key] = doc

    def take_all(self, states: dict[str, dict[str, Any]]) -> None:
        self._states = states

    def take_one(self, change: tuple[str, dict[str, Any] | None]) -> None:
        key, doc = change
        if doc is None:
            self._states.pop(key, None)
        else:
            self._states[key] = doc


class Objects:
    """The objects (node types) by kind as last read from etcd, for reads that cannot wait."""

    def __init__(self, read: Callable[[str], Awaitable[dict[str, dict[str, Any]]]]) -> None:
        self._read = read
        self._last: dict[str, dict[str, dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return f"Objects({sorted(self._last)})"

    def last(self, kind: str) -> dict[str, dict[str, Any]]:
        """What was read last of ``kind`` (a copy; empty before the first read)."""
        return dict(self._last.get(kind, {}))

    async def read(self, kind: str) -> dict[str, dict[str, Any]]:
        found = await self._read(kind)
        self._last[kind] = found
        return found
