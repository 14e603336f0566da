"""One replica's heartbeats: renewal times in memory, shared as digests, passed on to leases.

A heartbeat is recorded here and acknowledged; nothing waits on etcd (a lease keepalive
costs etcd a linearizable round, ~2.4k/s on the 2-core machine measured in
docs/benchmarks.md, and a Raft write ~1.2k/s). Every period the replica then (a)
publishes one digest of the renewal times it served (``publish``: one write; every
replica merges every digest, so readers anywhere compute health from renewal times at
most one period plus a watch delay old), and (b) keeps alive the etcd leases of the nodes
that renewed, each at most once per ``spacing`` (a third of the lease TTL by default),
pipelined (``keeping_leases``). A replica that dies loses at most one period of renewals:
those nodes look one period staler elsewhere, never fresher.

Renewal times from other replicas' digests are bounded by this replica's clock (not after
now, not before the publisher's last period or so): a replica whose clock is off makes no
node look alive in the future, or long dead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timedelta

from node_registry.clock import Clock
from node_registry.errors import NotFoundError, RegistryError
from node_registry.store.etcd.keys import merge_latest
from node_registry.store.etcd.nodes import EtcdStore

log = logging.getLogger("node_registry")

_KEEPALIVES_IN_FLIGHT = 64


class Renewals:
    """Replica ``name``'s renewal times, its unpublished digest and its lease bookkeeping;
    guarded by ``lock`` (the replica's, shared with its cache)."""

    def __init__(
        self,
        etcd: EtcdStore,
        *,
        name: str,
        period: float,
        clock: Clock,
        lock: threading.Lock,
        spacing: float | None = None,
    ) -> None:
        self._etcd = etcd
        self._name = name
        self._period = period
        self._clock = clock
        self._lock = lock
        # How old a renewal in a digest just received can be: the publisher's period, a
        # tick delayed by a slow etcd call, and a period more for the watch to deliver it.
        self._digest_window = timedelta(seconds=2 * period + etcd.timeout)
        self._renewed: dict[str, datetime] = {}
        self._unpublished: dict[str, datetime] = {}
        # Heartbeats not yet passed on to the node's etcd lease; when each lease last was.
        self._lease_due: dict[str, datetime] = {}
        self._lease_kept: dict[str, float] = {}
        # A node's etcd lease is kept alive at most this often (None: a third of its TTL).
        self._spacing = etcd.lease_ttl / 3 if spacing is None else spacing
        #: What the heartbeat path cost etcd so far (the benchmark reads these).
        self.keepalives_sent = 0
        self.digests_published = 0

    def __repr__(self) -> str:
        return f"Renewals({self._name!r}, nodes={len(self._renewed)})"

    def renewed_at(self, node_id: str) -> datetime | None:
        return self._renewed.get(node_id)

    def served(self, node_id: str, at: datetime) -> None:
        """A heartbeat this replica served: shared in the next digest, passed to the lease."""
        with self._lock:
            merge_latest(self._renewed, {node_id: at})
            self._unpublished[node_id] = at
            self._lease_due[node_id] = at

    def written(self, node_id: str, at: datetime) -> None:
        """A renewal written with the record (a create, an update): its lease was kept then."""
        self._lease_kept[node_id] = time.monotonic()
        with self._lock:
            merge_latest(self._renewed, {node_id: at})
            self._unpublished[node_id] = at

    def forget(self, node_id: str) -> None:
        """Under the lock: a deleted node's renewals and lease bookkeeping go with it."""
        self._renewed.pop(node_id, None)
        self._lease_due.pop(node_id, None)
        self._lease_kept.pop(node_id, None)

    # -- digests -------------------------------------------------------------------------

    async def publish(self, lease: int) -> None:
        """Publish the renewals served since the last digest, on the replica's ``lease``;
        on failure they wait for the next one."""
        with self._lock:
            unpublished, self._unpublished = self._unpublished, {}
        if not unpublished:
            return
        try:
            await self._etcd.publish_renewals(self._name, unpublished, lease)
        except BaseException:
            with self._lock:
                merge_latest(self._unpublished, unpublished)
            raise
        self.digests_published += 1

    def take_all(self, renewed: dict[str, datetime]) -> None:
        """Digests read as they are in etcd: none counts as later than now here."""
        now = self._clock.now()
        merge_latest(self._renewed, {n: at if at < now else now for n, at in renewed.items()})

    def take_digest(self, digest: tuple[str, dict[str, datetime]]) -> None:
        """A digest just published: its renewals were served within the publisher's last
        period or so, whatever its clock says (issue #10, item 11).

        Times are stamped by the publishing replica's clock. One running ahead would make
        nodes look alive in the future, one running behind would make them look long
        silent; so each time is bounded by this replica's clock at receipt: not after now,
        not before the publisher's last period (and a slow tick) before now.
        """
        publisher, renewed = digest
        if publisher == self._name or publisher.startswith(f"{self._name}."):
            return  # this replica's own: known here already, at the times it served them
        now = self._clock.now()
        earliest = now - self._digest_window
        merge_latest(
            self._renewed,
            {
                n: now if at > now else earliest if at < earliest else at
                for n, at in renewed.items()
            },
        )

    # -- lease keepalives ----------------------------------------------------------------

    async def keeping_leases(self) -> None:
        """Pass heartbeats on to the nodes' etcd leases, each lease at most every spacing."""
        spacing = self._spacing
        gate = asyncio.Semaphore(_KEEPALIVES_IN_FLIGHT)

        async def keep(node_id: str, at: datetime) -> None:
            async with gate:
                try:
                    await self._etcd.renew(node_id, at)
                except NotFoundError:
                    return  # deregistered meanwhile
                except RegistryError:
                    with self._lock:
                        self._lease_due.setdefault(node_id, at)  # next period
                    return
                self._lease_kept[node_id] = time.monotonic()
                self.keepalives_sent += 1

        while True:
            await asyncio.sleep(self._period)
            now = time.monotonic()
            with self._lock:
                due = {
                    node_id: at
                    for node_id, at in self._lease_due.items()
                    if now - self._lease_kept.get(node_id, -spacing) >= spacing
                }
                for node_id in due:
                    del self._lease_due[node_id]
            if due:
                results = await asyncio.gather(
                    *(keep(node_id, at) for node_id, at in due.items()), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, Exception):  # a bug: log it, keep keeping leases
                        log.error(
                            "replica %s: a lease keepalive failed", self._name, exc_info=result
                        )
