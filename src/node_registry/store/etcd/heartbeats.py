"""Node heartbeats as etcd leases: a renewal is a keepalive, a lease that ran out is re-granted.

``renew`` is a lease keepalive, not a Raft write: it adds no revision, no MVCC history to
compact and no watch traffic. Every keepalive of the process goes over one long-lived
LeaseKeepAlive stream (``keepalives``; aetcd would open a stream per call); etcd answers
about 2.4k/s on the 2-core machine measured. ``renewed_at`` here is derived from the lease
(LeaseTimeToLive: ``granted_ttl - remaining``; whole seconds, and reset to the full TTL on
an etcd leader change), which is what the store contract asks; the registry's replicas do
not use it for health: ``EtcdReplica`` records renewal times itself and shares them as
digests, so no verdict depends on etcd's remaining TTLs.

A renewal of an expired lease grants a new one and writes the lease key (a Raft write, rare).
Leases are cached per replica (node_id → lease id); a keepalive that finds the lease gone
falls back to reading the lease key, so a lease re-granted by another replica is found.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from node_registry.errors import NotFoundError
from node_registry.store.etcd.connection import EtcdConnection, _failing_over
from node_registry.store.etcd.translate import _translated


class EtcdHeartbeats(EtcdConnection):
    """The heartbeat half of ``EtcdStore``: each node's lease, renewed and read back."""

    @_failing_over
    async def renewed_at(self, node_id: str) -> datetime | None:
        with _translated(self._member, f"lease of {node_id}"):
            kv = await self._client.get(self._keys.lease(node_id))
            if kv is None:
                return await self._expired_at(node_id)
            info = await self._client.get_lease_info(int(kv.lease), keys=False)
        if info.TTL <= 0:
            return await self._expired_at(node_id)
        elapsed = max(0, int(info.grantedTTL) - int(info.TTL))
        return self._clock.now() - timedelta(seconds=elapsed)

    @_failing_over
    async def renew(self, node_id: str, at: datetime) -> None:
        """A lease keepalive; ``at`` is not stored (etcd's lease clock is the record)."""
        with _translated(self._member, f"renew {node_id}"):
            lease_id = self._leases.get(node_id)
            if lease_id is not None and await self._keepalive(lease_id):
                return
            kv = await self._client.get(self._keys.lease(node_id))
            if kv is not None and await self._keepalive(int(kv.lease)):
                self._leases[node_id] = int(kv.lease)
                return
            await self._regrant(node_id, at)

    async def _regrant(self, node_id: str, at: datetime) -> None:
        """The lease ran out while the node record stayed: attach a new one (a Raft write)."""
        tx = self._client.transactions
        node_key, lease_key = self._keys.node(node_id), self._keys.lease(node_id)
        lease = await self._client.lease(self._lease_ttl)
        ok, _, _ = await self._txn(
            compare=[tx.create(node_key) > 0],
            success=[tx.put(lease_key, self._lease_doc(at), lease.id)],
            failure=[],
        )
        if not ok:
            await self._revoke(int(lease.id))
            raise NotFoundError(f"node {node_id!r} is not registered")
        self._leases[node_id] = int(lease.id)

    async def _expired_at(self, node_id: str) -> datetime | None:
        if await self._client.get(self._keys.node(node_id)) is None:
            return None
        return self._clock.now() - timedelta(seconds=self._lease_ttl)

    def _lease_doc(self, at: datetime) -> bytes:
        doc = {"grantedAt": at.isoformat(), "ttlSeconds": self._lease_ttl}
        return json.dumps(doc).encode()
