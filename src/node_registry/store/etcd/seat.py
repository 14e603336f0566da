"""What the registry replicas sharing one etcd coordinate through it: renewal digests,
the lifecycle controller's seat and what it publishes, the replicas' own leases.

What replicas share besides the nodes (see ``store.replica``): ``renewals/{replica}``
(digests of renewal times, on the replica's lease), ``controller`` (the lifecycle
controller's seat, on its holder's lease) and ``state/{key}`` (what the controller
publishes, on its lease).
"""

from __future__ import annotations

import json
import logging
from collections.abc import (
    AsyncGenerator,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from datetime import datetime
from typing import Any

import aetcd  # type: ignore[import-untyped]  # aetcd 1.0.0 ships no py.typed marker
import aetcd.rpc  # type: ignore[import-untyped]

from node_registry.errors import (
    NotLeadingError,
    RegistryError,
)
from node_registry.store.etcd.connection import EtcdConnection, _failing_over
from node_registry.store.etcd.keys import (
    _decode_renewals,
    _decode_state,
    merge_latest,
)
from node_registry.store.etcd.members import _Client
from node_registry.store.etcd.translate import _translated

log = logging.getLogger(__name__)

#: Nodes per renewal digest key: ~60 bytes each, so a put stays near 0.5 MiB.
DIGEST_CHUNK = 8_000
#: Digest bytes per transaction. etcd refuses a request over its --max-request-bytes (1.5
#: MiB by default), and one period's digest may hold every node: a batched burst, or a
#: replica publishing what it served while etcd was away (60,000 nodes are ~3 MiB). One
#: transaction for all of it failed every tick from then on, and the replica stayed
#: unavailable for good.
DIGEST_TXN_BYTES = 1024 * 1024


class EtcdCoordination(EtcdConnection):
    """The coordination half of ``EtcdStore``: digests, shared state, leases, the seat."""

    @_failing_over
    async def publish_renewals(
        self, replica: str, renewed: Mapping[str, datetime], lease_id: int
    ) -> None:
        """Tell every replica when the nodes this one renewed did so.

        Keepalives do not say *when* a lease was renewed to anyone but the renewing replica;
        this digest does, for the price of one Raft write per replica and period instead of
        one per heartbeat (a key per ``DIGEST_CHUNK`` nodes, and a write more per
        ``DIGEST_TXN_BYTES`` of them, to stay below etcd's request size limit). It lives on
        the replica's lease, so a dead replica's digest goes with it. Times are epoch
        seconds: a third of the size of ISO text.
        """
        items = list(renewed.items())
        tx = self._client.transactions
        batches: list[list[Any]] = [[]]  # the puts of each transaction
        size = 0
        for number, start in enumerate(range(0, len(items), DIGEST_CHUNK)):
            doc = {
                node_id: round(at.timestamp(), 3)
                for node_id, at in items[start : start + DIGEST_CHUNK]
            }
            key = self._keys.renewal(replica if number == 0 else f"{replica}.{number}")
            value = json.dumps(doc, separators=(",", ":")).encode()
            if batches[-1] and size + len(value) > DIGEST_TXN_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(tx.put(key, value, lease_id))
            size += len(value)
        # Several transactions are not one atomic digest, and need not be: each key holds
        # its own nodes, and readers keep the latest time per node whatever they see first.
        with _translated(self._member, "publish renewals"):
            for puts in batches:
                await self._txn(compare=[], success=puts, failure=[])

    @_failing_over
    async def renewals(self) -> tuple[dict[str, datetime], int]:
        """The digests now in etcd, merged (latest time per node), and the revision read at."""
        merged: dict[str, datetime] = {}
        with _translated(self._member, "read renewals"):
            response = await self._range(self._keys.renewals)
        for kv in response.kvs:
            merge_latest(merged, _decode_renewals(kv.value))
        return merged, int(response.header.revision)

    async def watch_renewals(
        self, since: int, opened: Callable[[], None] | None = None
    ) -> AsyncGenerator[tuple[str, dict[str, datetime]], None]:
        """(publisher, digest) for each digest published after revision ``since``, as it
        comes; the publisher is the replica name (with ``.N`` for a digest's later chunks).
        ``opened`` runs once the watch is open."""
        key = self._keys.renewals

        def open_stream(client: _Client) -> Any:
            return client.watch_prefix(key, start_revision=since + 1)

        async with aclosing(self._stream("watch renewals", open_stream, opened)) as stream:
            async for event in stream:
                if event.kind == aetcd.EventKind.PUT:
                    publisher = bytes(event.kv.key)[len(key) :].decode()
                    yield publisher, _decode_renewals(event.kv.value)

    @_failing_over
    async def put_state(
        self, key: str, doc: Mapping[str, Any], lease_id: int, *, seat: int | None = None
    ) -> None:
        """Publish a piece of the controller's state (on its lease: it goes when it dies);
        fenced on the controller's seat, with ``seat``."""
        tx = self._client.transactions
        put = tx.put(self._keys.state(key), json.dumps(doc).encode(), lease_id)
        with _translated(self._member, f"publish {key}"):
            ok, _, ranges = await self._txn(
                compare=self._fence(seat), success=[put], failure=[tx.get(self._keys.controller)]
            )
        if not ok:
            _check_seat(seat, ranges[0])

    @_failing_over
    async def states(self) -> tuple[dict[str, dict[str, Any]], int]:
        """Every published piece of state, and the revision read at."""
        with _translated(self._member, "read state"):
            response = await self._range(self._keys.states)
        found = {}
        for kv in response.kvs:
            doc = _decode_state(kv.value)
            if doc is not None:
                found[bytes(kv.key)[len(self._keys.states) :].decode()] = doc
        return found, int(response.header.revision)

    async def watch_states(
        self, since: int, opened: Callable[[], None] | None = None
    ) -> AsyncGenerator[tuple[str, dict[str, Any] | None], None]:
        """(key, document) for each state published after ``since``; None when it went.
        ``opened`` runs once the watch is open."""
        prefix = self._keys.states

        def open_stream(client: _Client) -> Any:
            return client.watch_prefix(prefix, start_revision=since + 1)

        async with aclosing(self._stream("watch state", open_stream, opened)) as stream:
            async for event in stream:
                key = bytes(event.kv.key)[len(prefix) :].decode()
                gone = event.kind == aetcd.EventKind.DELETE
                yield key, None if gone else _decode_state(event.kv.value)

    @_failing_over
    async def grant(self, ttl: int) -> int:
        """A new etcd lease of ``ttl`` seconds (a replica's own: its digest, its seat)."""
        with _translated(self._member, "grant lease"):
            lease = await self._client.lease(ttl)
        return int(lease.id)

    @_failing_over
    async def keep(self, lease_id: int) -> bool:
        """Renew a replica's lease; False when it has already run out."""
        with _translated(self._member, "keep lease"):
            return await self._keepalive(lease_id)

    async def release(self, lease_id: int) -> None:
        """Revoke a replica's lease: its digest and its controller seat go at once.

        Best effort (on the next member if the one in use fails): a lease not revoked
        runs out after its TTL.
        """
        try:
            await self._revoke_now(lease_id)
        except RegistryError as error:
            log.warning("could not release etcd lease %x (%s); it runs out", lease_id, error)

    @_failing_over
    async def _revoke_now(self, lease_id: int) -> None:
        with _translated(self._member, "release lease"):
            await self._client.revoke_lease(lease_id)

    @_failing_over
    async def campaign(self, candidate: str, lease_id: int) -> tuple[str, int]:
        """Take the controller's seat if it is free: who holds it after, and the revision
        the seat was created at (what the holder's fenced writes compare).

        The seat is one key attached to the holder's lease, created only if absent
        (``create_revision == 0``) in one transaction: when the holder dies, its lease runs
        out, the key goes, and the next campaign of any replica wins it (a new seat, at a
        new revision: the old holder's fenced writes fail from then on).
        """
        tx = self._client.transactions
        key = self._keys.controller
        with _translated(self._member, "campaign"):
            ok, revision, ranges = await self._txn(
                compare=[tx.create(key) == 0],
                success=[tx.put(key, candidate.encode(), lease_id)],
                failure=[tx.get(key)],
            )
        if ok:
            return candidate, revision
        if not ranges or not ranges[0]:
            return "", 0
        held = ranges[0][0]
        return bytes(held.value).decode(), int(held.create_revision)

    def _fence(self, seat: int | None) -> Sequence[Any]:
        """The compare that fences a controller's write: its seat is still the one it took."""
        if seat is None:
            return []
        return [self._client.transactions.create(self._keys.controller) == seat]


def _check_seat(seat: int | None, kvs: Any) -> None:
    """After a failed fenced transaction: ``NotLeadingError`` if the seat was what failed."""
    if seat is None:
        return
    if not kvs or int(kvs[0].create_revision) != seat:
        holder = bytes(kvs[0].value).decode() if kvs else "nobody"
        raise NotLeadingError(
            f"this replica no longer holds the lifecycle controller's seat (held by "
            f"{holder}); its write was refused"
        )
