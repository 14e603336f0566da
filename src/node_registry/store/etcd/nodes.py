"""The etcd store (seed 2.2.2, option A): records as JSON in KV, heartbeats as etcd leases.

Every read-modify-write is one transaction comparing ``mod_revision`` (``create_revision ==
0`` for a create); the failure branch reads the keys back so the error says what lost.

Its other parts, one module each: ``bindings`` (a deregistered node's name, kept for it),
``heartbeats`` (each node's etcd lease), ``objects`` (what is kept besides the nodes).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import (
    AsyncGenerator,
    Callable,
)
from contextlib import aclosing
from datetime import datetime
from typing import Any

import aetcd  # type: ignore[import-untyped]  # aetcd 1.0.0 ships no py.typed marker
import aetcd.rpc  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

from node_registry.errors import (
    ConflictError,
    NotFoundError,
    RevisionCompactedError,
    RevisionConflictError,
)
from node_registry.store.base import (
    Binding,
    ChangeType,
    StoreEvent,
    Versioned,
)
from node_registry.store.etcd.bindings import EtcdBindings
from node_registry.store.etcd.connection import _failing_over
from node_registry.store.etcd.heartbeats import EtcdHeartbeats
from node_registry.store.etcd.keys import (
    _encode,
    _prefix_end,
    _stored_name,
    _try_decode,
)
from node_registry.store.etcd.members import _Client
from node_registry.store.etcd.objects import EtcdObjects
from node_registry.store.etcd.seat import EtcdCoordination, _check_seat
from node_registry.store.etcd.translate import _translated
from node_registry.store.etcd.written import Written
from node_registry.store.records import NodeRecord

log = logging.getLogger(__name__)

PAGE_SIZE = 1_000
_RETRIES = 5

#: The record a watcher holds for a version of a node (node id, mod revision), if it does.
Held = Callable[[str, int], NodeRecord | None]


class EtcdStore(EtcdBindings, EtcdHeartbeats, EtcdObjects, EtcdCoordination):
    """``AsyncStore`` on etcd v3 through aetcd; see ``store.etcd.keys`` for the layout."""

    @functools.cached_property
    def _written(self) -> Written:
        """Records this store is writing or wrote, until its replica's feed sees them."""
        return Written()

    def follow_own_writes(self) -> None:
        """Note each record this store writes from now on, for the one watch given ``held``
        (its replica's feed) to take back undecoded; a store nothing follows notes none."""
        self._written.followed = True

    def __repr__(self) -> str:
        return (
            f"EtcdStore({self._endpoint!r}, prefix={self._prefix!r}, "
            f"timeout={self._timeout}, lease_ttl={self._lease_ttl})"
        )

    @_failing_over
    async def get(self, node_id: str) -> Versioned | None:
        """The node's record; None when there is none, or it cannot be read (then skipped)."""
        key = self._keys.node(node_id)
        with _translated(self._member, f"get {node_id}"):
            kv = await self._client.get(key)
        if kv is None:
            self.skipped.readable(key.decode())
            return None
        record = self._read(kv)
        return None if record is None else Versioned(record, int(kv.mod_revision))

    @_failing_over
    async def list(self) -> tuple[dict[str, Versioned], int]:
        """Every node at one revision, read in pages of ``PAGE_SIZE`` pinned to the first."""
        records: dict[str, Versioned] = {}
        unreadable: dict[str, tuple[int, str]] = {}
        start = self._keys.nodes
        end = _prefix_end(start)
        revision = 0
        with _translated(self._member, "list"):
            while True:
                response = await self._range(start, end, limit=PAGE_SIZE, revision=revision)
                revision = revision or int(response.header.revision)
                for kv in response.kvs:
                    record, why = _try_decode(kv.value)
                    if record is None:
                        unreadable[bytes(kv.key).decode()] = (int(kv.mod_revision), why)
                        continue
                    records[record.node_id] = Versioned(record, int(kv.mod_revision))
                if not response.more or not response.kvs:
                    self.skipped.replace(unreadable, revision)
                    return records, revision
                start = bytes(response.kvs[-1].key) + b"\0"

    @_failing_over
    async def create(self, record: NodeRecord, *, renewed_at: datetime) -> int:
        node_id, tx = record.node_id, self._client.transactions
        node_key, name_key = self._keys.node(node_id), self._keys.name(record.name)
        value = _encode(record)
        with _translated(self._member, f"create {node_id}"):
            lease = await self._client.lease(self._lease_ttl)
            self._written.add(record, value)
            try:
                ok, revision, ranges = await self._txn(
                    compare=[tx.create(node_key) == 0, tx.create(name_key) == 0],
                    success=[
                        tx.put(node_key, value),
                        tx.put(name_key, node_id.encode()),
                        tx.put(self._keys.lease(node_id), self._lease_doc(renewed_at), lease.id),
                        *self._forgetting(record.name),
                    ],
                    failure=[tx.get(node_key), tx.get(name_key)],
                )
            except BaseException:
                self._written.discard(record, value)
                await self._revoke(int(lease.id))
                raise
            if not ok:
                self._written.discard(record, value)
                await self._revoke(int(lease.id))
        if not ok:
            if ranges[0]:
                if self._read(ranges[0][0]) is None:
                    return await self._replace_unreadable(record, renewed_at, ranges[0][0])
                raise RevisionConflictError(f"node {node_id!r} already exists")
            raise _name_taken(record.name, _owner(ranges[1]))
        self._leases[node_id] = int(lease.id)
        await self._forgotten(ranges)
        return revision

    async def _replace_unreadable(self, record: NodeRecord, renewed_at: datetime, old: Any) -> int:
        """Register ``record`` over its node's stored record that cannot be read (``old``).

        The node registering again is what repairs such a record (its runtime registers
        again when its heartbeats are refused). The name key goes with it: reused when it
        points to this node, and removed under the old name, when that can still be read
        from the old value and still points here.
        """
        node_id, tx = record.node_id, self._client.transactions
        node_key, name_key = self._keys.node(node_id), self._keys.name(record.name)
        compare = [tx.mod(node_key) == int(old.mod_revision)]
        success = [
            tx.put(node_key, _encode(record)),
            tx.put(name_key, node_id.encode()),
            *self._forgetting(record.name),
        ]
        with _translated(self._member, f"create {node_id}"):
            holder = await self._client.get(name_key)
            if holder is None:
                compare.append(tx.create(name_key) == 0)
            elif bytes(holder.value).decode() == node_id:
                compare.append(tx.mod(name_key) == int(holder.mod_revision))
            else:
                raise _name_taken(record.name, bytes(holder.value).decode())
            old_name = _stored_name(old.value)
            if old_name is not None and old_name != record.name:
                old_name_key = self._keys.name(old_name)
                left = await self._client.get(old_name_key)
                if left is not None and bytes(left.value).decode() == node_id:
                    compare.append(tx.mod(old_name_key) == int(left.mod_revision))
                    success.append(tx.delete(old_name_key))
            old_lease = await self._client.get(self._keys.lease(node_id))
            lease = await self._client.lease(self._lease_ttl)
            success.append(tx.put(self._keys.lease(node_id), self._lease_doc(renewed_at), lease.id))
            try:
                ok, revision, ranges = await self._txn(compare=compare, success=success, failure=[])
            except BaseException:
                await self._revoke(int(lease.id))
                raise
        if not ok:
            await self._revoke(int(lease.id))
            raise RevisionConflictError(f"node {node_id!r} changed while being registered")
        await self._forgotten(ranges)
        if old_lease is not None:
            await self._revoke(int(old_lease.lease))
        self._leases[node_id] = int(lease.id)
        self.skipped.readable(node_key.decode(), revision)
        log.warning("node %s registered again: its unreadable record was replaced", node_id)
        return revision

    @_failing_over
    async def update(
        self,
        record: NodeRecord,
        *,
        expected_revision: int,
        renewed_at: datetime | None = None,
        seat: int | None = None,
    ) -> int:
        """Compare-and-swap the record; with ``seat``, only while the controller's seat is
        the one created at that revision (a fenced write of the lifecycle controller)."""
        node_id, tx = record.node_id, self._client.transactions
        node_key, name_key = self._keys.node(node_id), self._keys.name(record.name)
        with _translated(self._member, f"update {node_id}"):
            current = await self.get(node_id)
            if current is None:
                raise NotFoundError(f"node {node_id!r} is not registered")
            compare = [tx.mod(node_key) == expected_revision]
            value = _encode(record)
            success = [tx.put(node_key, value)]
            old_name = current.record.name
            if old_name != record.name:
                compare.append(tx.create(name_key) == 0)
                success += [
                    tx.put(name_key, node_id.encode()),
                    tx.delete(self._keys.name(old_name)),
                    *self._forgetting(record.name),
                ]
            compare += self._fence(seat)
            self._written.add(record, value)
            try:
                ok, revision, ranges = await self._txn(
                    compare=compare,
                    success=success,
                    failure=[tx.get(node_key), tx.get(name_key), tx.get(self._keys.controller)],
                )
            except BaseException:
                self._written.discard(record, value)
                raise
        if not ok:
            self._written.discard(record, value)
            _check_seat(seat, ranges[2])
            if not ranges[0]:
                raise NotFoundError(f"node {node_id!r} is not registered")
            actual = int(ranges[0][0].mod_revision)
            if actual != expected_revision:
                raise RevisionConflictError(
                    f"node {node_id!r} changed (revision {actual}, expected {expected_revision})"
                )
            raise _name_taken(record.name, _owner(ranges[1]))
        await self._forgotten(ranges)
        if renewed_at is not None:
            await self.renew(node_id, renewed_at)
        return revision

    @_failing_over
    async def delete(
        self,
        node_id: str,
        *,
        expected_revision: int | None = None,
        keep: Binding | None = None,
        seat: int | None = None,
    ) -> int:
        """Delete the record (compared, with ``expected_revision``; fenced, with ``seat``)."""
        tx = self._client.transactions
        node_key = self._keys.node(node_id)
        with _translated(self._member, f"delete {node_id}"):
            for _ in range(_RETRIES):
                current = await self.get(node_id)
                if current is None:
                    raise NotFoundError(f"node {node_id!r} is not registered")
                if expected_revision is not None and current.revision != expected_revision:
                    raise RevisionConflictError(
                        f"node {node_id!r} changed (revision {current.revision}, "
                        f"expected {expected_revision})"
                    )
                name = current.record.name
                lease_kv = await self._client.get(self._keys.lease(node_id))
                success = [
                    tx.delete(node_key),
                    tx.delete(self._keys.name(name)),
                    tx.delete(self._keys.lease(node_id)),
                ]
                kept = None
                if keep is None:
                    success += self._forgetting(name)
                else:
                    kept = await self._client.lease(self._binding_ttl)
                    doc = json.dumps(keep.to_dict(), separators=(",", ":")).encode()
                    success += [
                        tx.get(self._keys.binding(name)),
                        tx.put(self._keys.binding(name), doc, kept.id),
                    ]
                try:
                    ok, revision, ranges = await self._txn(
                        compare=[tx.mod(node_key) == current.revision, *self._fence(seat)],
                        success=success,
                        failure=[tx.get(self._keys.controller)],
                    )
                except BaseException:
                    if kept is not None:
                        await self._revoke(int(kept.id))
                    raise
                if not ok:
                    if kept is not None:
                        await self._revoke(int(kept.id))
                    _check_seat(seat, ranges[0])
                    continue  # the record changed since it was read: read it again
                self._leases.pop(node_id, None)
                if lease_kv is not None:
                    await self._revoke(int(lease_kv.lease))
                await self._forgotten(ranges)
                return revision
        raise RevisionConflictError(f"node {node_id!r} kept changing; delete again")

    async def watch(
        self,
        since: int,
        opened: Callable[[], None] | None = None,
        held: Held | None = None,
    ) -> AsyncGenerator[StoreEvent, None]:
        """The node events after ``since``; ``opened`` runs once the watch is open.

        With ``held`` (the replica's own feed: one per store), a record this store wrote
        comes as it was written, and a previous value ``held`` has as it is there: only
        the writes of others are decoded.
        """
        # Asked first rather than left to the watch: etcd cancels a watch created before its
        # compacted revision with a notice that aetcd now and then never hands on (seen in
        # CI: the watch waited, silent, instead of raising), while a range at that revision
        # is refused at once. A compaction between the two is still etcd's notice to give.
        await self.check_watchable(since)
        key = self._keys.nodes

        def open_stream(client: _Client) -> Any:
            return client.watch_prefix(key, start_revision=since + 1, prev_kv=True)

        async with aclosing(self._stream("watch", open_stream, opened)) as stream:
            async for event in stream:
                converted = self._event(event, held)
                if converted is not None:
                    yield converted

    @_failing_over
    async def check_watchable(self, since: int) -> None:
        """Raise ``RevisionCompactedError`` unless a watch from ``since`` can replay history."""
        current = await self.revision()
        if since > current:
            raise _future_revision(since, current)
        if since <= 0:
            return
        try:
            with _translated(self._member, "watch"):
                try:
                    await self._range(self._keys.nodes, revision=since, count_only=True)
                except aetcd.rpc.AioRpcError as error:
                    if error.code() is grpc.StatusCode.OUT_OF_RANGE:
                        raise aetcd.RevisionCompactedError(since) from error
                    raise
        except RevisionCompactedError:
            raise RevisionCompactedError(
                f"resource version {since} is too old: etcd history before it was compacted; "
                "list again and watch from the list's version"
            ) from None

    def _node_id(self, key: bytes) -> str:
        return bytes(key)[len(self._keys.nodes) :].decode()

    def _read(self, kv: Any) -> NodeRecord | None:
        """The record ``kv`` holds; None, skipped (logged, counted), when it cannot be read."""
        record, why = _try_decode(kv.value)
        key = bytes(kv.key).decode()
        if record is None:
            self.skipped.skip(key, int(kv.mod_revision), why)
        else:
            self.skipped.readable(key, int(kv.mod_revision))
        return record

    def _event(self, event: Any, held: Held | None = None) -> StoreEvent | None:
        """The store event of an etcd one; None when there is nothing a reader can use.

        A record that turns unreadable is a deletion to readers: every cache drops the last
        version it could read rather than go on serving it as current. When it can be read
        again, it is added again.
        """
        revision = int(event.kv.mod_revision)
        # aetcd hands an empty KeyValue, not None, when there is no previous value.
        has_prev = event.prev_kv is not None and bool(event.prev_kv.key)
        prev = None
        if has_prev:
            if held is not None:
                prev = held(self._node_id(event.prev_kv.key), int(event.prev_kv.mod_revision))
            if prev is None:
                prev = _try_decode(event.prev_kv.value)[0]
        if event.kind == aetcd.EventKind.DELETE:
            self.skipped.readable(bytes(event.kv.key).decode(), revision)
            if prev is None:
                if not has_prev:  # the previous value was compacted away: nothing to report
                    log.warning(
                        "DELETE at revision %d without its previous value; skipped", revision
                    )
                return None
            return StoreEvent(ChangeType.DELETED, prev, prev, revision)
        record = None
        if held is not None:
            record = self._written.take(self._node_id(event.kv.key), bytes(event.kv.value))
        if record is None:
            record = self._read(event.kv)
        else:  # written here, so readable: what ``_read`` would have noted
            self.skipped.readable(bytes(event.kv.key).decode(), revision)
        if record is None:
            return None if prev is None else StoreEvent(ChangeType.DELETED, prev, prev, revision)
        if event.kv.create_revision == event.kv.mod_revision or (has_prev and prev is None):
            return StoreEvent(ChangeType.ADDED, record, None, revision)
        return StoreEvent(ChangeType.MODIFIED, record, prev, revision)


def _future_revision(since: int, current: int) -> RevisionCompactedError:
    return RevisionCompactedError(
        f"resource version {since} is newer than etcd's current revision {current} "
        "(a different etcd, or its data was reset?); list again and watch from the "
        "list's version"
    )


def _owner(kvs: Any) -> str:
    return bytes(kvs[0].value).decode() if kvs else "?"


def _name_taken(name: str, owner: str) -> ConflictError:
    return ConflictError(
        f"name {name!r} is already registered by node {owner}; "
        "names are unique, choose another or deregister that node"
    )
