"""One registry replica's view of a shared etcd: the ``Store`` over ``EtcdStore``.

Any number of ``node-registry serve`` processes can share one etcd. Each runs this store,
on an event loop: its caller's (``EtcdReplica.open``, as ``serve`` runs it: ``aio`` then
awaits etcd on that loop, and sync calls come from other threads) or one of its own in a
background thread (the constructor, for sync embedders; ``store.etcd.loop``). It owns:

- a cache of every node record, fed by the etcd watch (``store.etcd.cache``). Reads never
  wait on etcd; a write returns once this cache has applied it, so a replica reads its own
  writes. Watchers resuming from a version outside the cache's history (a restarted
  replica, a version another replica issued) get their own etcd watch from that version.
- heartbeats, recorded in memory and acknowledged, published as a digest each period
  and passed on to the nodes' etcd leases in batches (``store.etcd.renewals``).
- ticks: its own etcd lease, its digest, the lifecycle controller's seat held or sought,
  fenced writes, compaction while leading (``store.etcd.coordinator``).
- the followers of what replicas share besides the nodes: the controller's published
  state, the objects (``store.etcd.shared``).

When etcd cannot be reached (or a feed broke), calls fail fast with
``StoreUnavailableError`` and reads too, rather than serve a view that may be stale; once
every part of the view is back (``store.etcd.view``), ``resumed_at`` tells the registry
from when on it has seen every renewal again, so nodes are not declared dead for the
outage (they could not heartbeat through it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import threading
import uuid
from contextlib import suppress
from datetime import datetime
from typing import Any, TypeVar

from node_registry.clock import Clock, steady
from node_registry.errors import (
    NotFoundError,
    RegistryError,
    StoreUnavailableError,
)
from node_registry.store.aio import AsyncStorage
from node_registry.store.base import (
    Binding,
    Cancel,
    ErrorSink,
    Sink,
    Versioned,
)
from node_registry.store.etcd.awaited import _Awaited
from node_registry.store.etcd.cache import NodeCache
from node_registry.store.etcd.coordinator import Coordinator
from node_registry.store.etcd.loop import ReplicaLoop
from node_registry.store.etcd.nodes import EtcdStore
from node_registry.store.etcd.renewals import Renewals
from node_registry.store.etcd.shared import Objects, SharedStates, follow_shared
from node_registry.store.etcd.view import STARTING, View
from node_registry.store.records import NodeRecord

log = logging.getLogger("node_registry")

T = TypeVar("T")


class EtcdReplica:
    """``Store`` for one replica of a registry kept in etcd; see the module docstring."""

    blocking = True

    def __init__(
        self,
        etcd: EtcdStore,
        *,
        history_size: int,
        seat_ttl: int,
        period: float = 1.0,
        compaction_interval: float = 300.0,
        lease_spacing: float | None = None,
        clock: Clock | None = None,
        name: str | None = None,
        on_loop: bool = False,
    ) -> None:
        # Host and PID: an operator reading the seat's key knows which process to look at.
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._etcd = etcd
        self.skipped = etcd.skipped
        self._clock = steady(clock)
        self._timeout = etcd.timeout
        self._lock = threading.Lock()
        self._cache = NodeCache(etcd, history_size, self._lock)
        self._renewals = Renewals(
            etcd,
            name=self.name,
            period=period,
            clock=self._clock,
            lock=self._lock,
            spacing=lease_spacing,
        )
        self._states = SharedStates()
        # The objects (node types) as last read, by kind: see ``objects``.
        self._objects = Objects(etcd.objects)
        self._view = View(self.name, etcd.endpoint, self._clock)
        self._coordinator = Coordinator(
            etcd,
            name=self.name,
            seat_ttl=seat_ttl,
            period=period,
            compaction_interval=compaction_interval,
            renewals=self._renewals,
            view=self._view,
        )
        self._compaction_interval = compaction_interval
        self._tasks: list[asyncio.Task[None]] = []
        # Relays of watchers outside the cache, reads in the background: closed with it.
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._aio = _Awaited(self)
        # ``open``: it starts the replica on the running loop.
        self._runner = ReplicaLoop(self.name, etcd.endpoint, self._timeout, own_thread=not on_loop)
        self._loop = self._runner.loop
        if on_loop:
            return
        try:
            self._runner.call(self._start())
        except BaseException:
            self.close()
            raise

    @classmethod
    async def open(cls, etcd: EtcdStore, **options: Any) -> EtcdReplica:
        """The replica on the running event loop (the server's): its feed, ticks and
        keepalives are tasks of that loop, and ``aio`` awaits etcd there, with no thread or
        loop between the caller and etcd. Sync calls still work from other threads (they
        hop onto the loop); from the loop itself only ``aio`` does. Close with ``aclose``.
        """
        replica = cls(etcd, on_loop=True, **options)
        try:
            await replica._start()
        except BaseException:
            await replica.aclose()
            raise
        return replica

    @property
    def aio(self) -> AsyncStorage:
        """This replica's storage awaited: on its loop directly, else one hop onto it."""
        return self._aio

    def __repr__(self) -> str:
        return f"EtcdReplica({self.name!r}, {self._etcd!r})"

    # -- the Store contract: reads from the cache -----------------------------------------

    @property
    def keepalives_sent(self) -> int:
        """Lease keepalives the heartbeat path sent etcd so far (the benchmark reads it)."""
        return self._renewals.keepalives_sent

    @property
    def digests_published(self) -> int:
        """Renewal digests this replica published so far (the benchmark reads it)."""
        return self._renewals.digests_published

    @property
    def revision(self) -> int:
        return self._cache.revision

    @property
    def failovers(self) -> int:
        return self._etcd.failovers

    @property
    def leading(self) -> bool:
        return self._coordinator.leading

    @property
    def resumed_at(self) -> datetime | None:
        return self._view.resumed_at

    def check_view(self) -> None:
        self._view.check()

    def get(self, node_id: str) -> Versioned | None:
        return self._runner.call(self._get(node_id))

    async def _get(self, node_id: str) -> Versioned | None:
        # The read of a read-modify-write: from etcd, so the compare-and-swap that follows
        # is against the latest revision, not a cache that may lag by a watch delay.
        self.check_view()  # fail fast: a known outage does not wait for a timeout
        return await self._etcd.get(node_id)

    def list(self) -> tuple[dict[str, Versioned], int]:
        return self._cache.snapshot()

    def renewed_at(self, node_id: str) -> datetime | None:
        return self._renewals.renewed_at(node_id)

    # -- writes: to etcd, then wait for the cache to apply them --------------------------

    def create(self, record: NodeRecord, *, renewed_at: datetime) -> int:
        return self._runner.call(self._create(record, renewed_at=renewed_at))

    async def _create(self, record: NodeRecord, *, renewed_at: datetime) -> int:
        self.check_view()
        revision = await self._etcd.create(record, renewed_at=renewed_at)
        self._renewals.written(record.node_id, renewed_at)  # its lease granted with it
        return await self._cache.caught_up(revision, self._timeout)

    def update(
        self,
        record: NodeRecord,
        *,
        expected_revision: int,
        renewed_at: datetime | None = None,
        fenced: bool = False,
    ) -> int:
        return self._runner.call(
            self._update(
                record, expected_revision=expected_revision, renewed_at=renewed_at, fenced=fenced
            )
        )

    async def _update(
        self,
        record: NodeRecord,
        *,
        expected_revision: int,
        renewed_at: datetime | None = None,
        fenced: bool = False,
    ) -> int:
        self.check_view()
        seat = self._coordinator.fence(fenced)
        revision = await self._etcd.update(
            record, expected_revision=expected_revision, renewed_at=renewed_at, seat=seat
        )
        if renewed_at is not None:  # EtcdStore.update kept the lease alive too
            self._renewals.written(record.node_id, renewed_at)
        return await self._cache.caught_up(revision, self._timeout)

    def delete(
        self,
        node_id: str,
        *,
        expected_revision: int | None = None,
        keep: Binding | None = None,
        fenced: bool = False,
    ) -> int:
        return self._runner.call(
            self._delete(node_id, expected_revision=expected_revision, keep=keep, fenced=fenced)
        )

    async def _delete(
        self,
        node_id: str,
        *,
        expected_revision: int | None = None,
        keep: Binding | None = None,
        fenced: bool = False,
    ) -> int:
        self.check_view()
        seat = self._coordinator.fence(fenced)
        revision = await self._etcd.delete(
            node_id, expected_revision=expected_revision, keep=keep, seat=seat
        )
        return await self._cache.caught_up(revision, self._timeout)

    def binding(self, name: str) -> Binding | None:
        return self._runner.call(self._binding(name))

    async def _binding(self, name: str) -> Binding | None:
        # From etcd, not a cache: a registration through any replica must see it.
        self.check_view()
        return await self._etcd.binding(name)

    def forget(self, name: str) -> bool:
        return self._runner.call(self._forget(name))

    async def _forget(self, name: str) -> bool:
        self.check_view()
        return await self._etcd.forget(name)

    def renew(self, node_id: str, at: datetime) -> None:
        """Record the renewal; etcd hears of it within a period (see the module docstring)."""
        self.check_view()
        # A node just registered through another replica may not be in this cache yet.
        if node_id not in self._cache.records and self.get(node_id) is None:
            raise NotFoundError(f"node {node_id!r} is not registered")
        self._renewals.served(node_id, at)

    async def _renew(self, node_id: str, at: datetime) -> None:
        self.check_view()
        if node_id not in self._cache.records and await self._etcd.get(node_id) is None:
            raise NotFoundError(f"node {node_id!r} is not registered")
        self._renewals.served(node_id, at)

    # -- watch ---------------------------------------------------------------------------

    def watch(self, since: int, sink: Sink, on_error: ErrorSink | None = None) -> Cancel:
        cache = self._cache
        with self._lock:
            if cache.feed.covers(since, cache.revision):
                return cache.feed.subscribe(since, sink)
        # Outside the cache's window: a watch of its own, straight from etcd. Without an
        # error sink the caller learns of a too-old version only here, so check first.
        if on_error is None:
            self._runner.call(self._etcd.check_watchable(since))
        future = asyncio.run_coroutine_threadsafe(self._relay(since, sink, on_error), self._loop)

        def cancel_relay() -> None:
            future.cancel()

        return cancel_relay

    def publish_state(self, key: str, doc: dict[str, Any]) -> None:
        self._runner.call(self._publish_state(key, doc))

    async def _publish_state(self, key: str, doc: dict[str, Any]) -> None:
        self.check_view()
        lease = self._coordinator.lease
        if lease is None:
            raise StoreUnavailableError(f"replica {self.name} holds no etcd lease yet")
        await self._etcd.put_state(key, doc, lease, seat=self._coordinator.fence(True))
        self._states.put(key, doc)

    def shared_state(self, key: str) -> dict[str, Any] | None:
        return self._states.get(key)

    def put_object(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        self._runner.call(self._etcd.put_object(kind, name, doc))

    def delete_object(self, kind: str, name: str) -> bool:
        return self._runner.call(self._etcd.delete_object(kind, name))

    def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        if self._runner.thread is None and self._runner.on_loop():
            # A sync read on the loop etcd answers on cannot wait for etcd (a listing of
            # an unknown node kind, say): what was read last, and a read again meanwhile.
            task = self._loop.create_task(self._read_objects_quietly(kind))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return self._objects.last(kind)
        return self._runner.call(self._objects.read(kind))

    async def _read_objects_quietly(self, kind: str) -> None:
        with suppress(RegistryError):  # the next read tries again
            await self._objects.read(kind)

    def check_watchable(self, since: int) -> None:
        if not self._cache.covers(since):
            self._runner.call(self._etcd.check_watchable(since))

    async def _check_watchable(self, since: int) -> None:
        if not self._cache.covers(since):
            await self._etcd.check_watchable(since)

    def ping(self) -> None:
        self._runner.call(self._ping())

    async def _ping(self) -> None:
        self.check_view()
        await self._etcd.ping()

    @property
    def closed(self) -> bool:
        """Whether ``close`` (or ``aclose``) ran: the seat released, the client closed."""
        return self._closed or self._loop.is_closed()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._runner.thread is None:  # on its caller's loop: stopped there if it still runs
            if self._runner.on_loop():  # cannot wait for itself: closes as soon as this returns
                self._closing = self._loop.create_task(self.aclose())
            elif self._loop.is_running():
                with suppress(Exception):
                    asyncio.run_coroutine_threadsafe(self.aclose(), self._loop).result(
                        self._timeout
                    )
            return
        self._runner.stop_thread(self._stop)
        self._cache.close()

    async def aclose(self) -> None:
        """``close``, awaited on the replica's loop (a replica ``open`` ed on it)."""
        if self._runner.thread is not None:
            await asyncio.to_thread(self.close)
            return
        if self._closed:
            return
        self._closed = True
        await self._stop(every_task=False)
        self._cache.close()

    async def _start(self) -> None:
        await self._cache.load()
        merged, revision = await self._etcd.renewals()
        renewals = self._renewals
        renewals.take_all(merged)
        coordinator = self._coordinator
        await coordinator.tick()
        self._view.set_part(STARTING, None)
        spawn = self._loop.create_task
        part = self._part
        self._tasks = [
            spawn(self._cache.follow(part("feed"), self._forget_node, self.name), name="etcd-feed"),
            spawn(
                follow_shared(
                    "renewals",
                    self._etcd.renewals,
                    self._etcd.watch_renewals,
                    renewals.take_all,
                    renewals.take_digest,
                    part("renewals"),
                    self.name,
                    revision,
                ),
                name="etcd-renewals",
            ),
            spawn(
                follow_shared(
                    "state",
                    self._etcd.states,
                    self._etcd.watch_states,
                    self._states.take_all,
                    self._states.take_one,
                    part("state"),
                    self.name,
                ),
                name="etcd-state",
            ),
            spawn(coordinator.ticking(), name="etcd-tick"),
            spawn(renewals.keeping_leases(), name="etcd-leases"),
        ]
        if self._compaction_interval > 0:
            self._tasks.append(spawn(coordinator.compacting(), name="etcd-compaction"))

    def _part(self, part: str) -> functools.partial[None]:
        """What the follower of ``part`` of the view reports its state to."""
        return functools.partial(self._view.set_part, part)

    async def _stop(self, *, every_task: bool = True) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(BaseException):
                await task
        await self._coordinator.release()
        for task in list(self._background):  # relays of open watchers, background reads
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._etcd.close()
        if not every_task:
            return  # the loop is its caller's: the other tasks on it are not the replica's
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:  # grpc's own
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _relay(self, since: int, sink: Sink, on_error: ErrorSink | None) -> None:
        """A watcher's own etcd watch (``NodeCache.relay``), closed with the replica."""
        task = asyncio.current_task()
        if task is not None:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        await self._cache.relay(since, sink, on_error, self.name)

    # -- bookkeeping ---------------------------------------------------------------------

    def _forget_node(self, node_id: str) -> None:
        """Under the lock: a deleted node's renewals and lease bookkeeping go with it."""
        self._renewals.forget(node_id)


__all__ = ["EtcdReplica"]
