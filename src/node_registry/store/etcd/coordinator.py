"""What one replica does each period with the others: keeps its own etcd lease, publishes
its renewal digest on it, holds or seeks the lifecycle controller's seat, and compacts
etcd's history while it holds the seat.

The seat is a key on this replica's own lease, taken in a transaction when free
(``EtcdStore.campaign``); ``leading`` says whether this replica holds it. A replica that
cannot reach etcd stops leading at its next tick, well before its lease (``seat_ttl``)
runs out and another replica may take the seat. A fenced write (the controller's)
compares the revision the seat was created at, in etcd, so a replica that still believes
it leads (paused past its lease) cannot write once the seat moved.
"""

from __future__ import annotations

import asyncio
import logging

from node_registry.errors import NotLeadingError, RegistryError, RevisionCompactedError
from node_registry.store.etcd.nodes import EtcdStore
from node_registry.store.etcd.renewals import Renewals
from node_registry.store.etcd.view import View

log = logging.getLogger("node_registry")

#: The part of the view the ticks keep.
TICKS = "ticks"


class Coordinator:
    """Replica ``name``'s lease, seat and ticks; a failed tick takes its ``view`` down."""

    def __init__(
        self,
        etcd: EtcdStore,
        *,
        name: str,
        seat_ttl: int,
        period: float,
        compaction_interval: float,
        renewals: Renewals,
        view: View,
    ) -> None:
        self._etcd = etcd
        self._name = name
        self._seat_ttl = seat_ttl
        self._period = period
        self._compaction_interval = compaction_interval
        self._renewals = renewals
        self._view = view
        self._leading = False
        #: The revision the controller's seat was created at while this replica holds it:
        #: what its fenced writes compare.
        self._seat: int | None = None
        #: This replica's own etcd lease: its digests, its seat, the state it publishes.
        self.lease: int | None = None

    def __repr__(self) -> str:
        return f"Coordinator({self._name!r}, leading={self._leading})"

    @property
    def leading(self) -> bool:
        # A replica whose view is down does not act as controller, seat or not.
        return self._leading and self._view.current

    def fence(self, fenced: bool) -> int | None:
        """The seat a fenced write compares; ``NotLeadingError`` when this replica holds none."""
        if not fenced:
            return None
        seat = self._seat
        if seat is None or not self.leading:
            raise NotLeadingError(
                f"replica {self._name} does not hold the lifecycle controller's seat; "
                "its controller's write was refused"
            )
        return seat

    async def ticking(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            await self.tick()

    async def tick(self) -> None:
        """Keep this replica's lease, publish its renewals, hold or seek the controller seat."""
        try:
            if self.lease is not None and not await self._etcd.keep(self.lease):
                log.warning("replica %s: its etcd lease ran out; taking a new one", self._name)
                self.lease = None
            if self.lease is None:
                self._set_leading(False)
                self.lease = await self._etcd.grant(self._seat_ttl)
            await self._renewals.publish(self.lease)
            holder, seat = await self._etcd.campaign(self._name, self.lease)
        except Exception as error:
            if not isinstance(error, RegistryError):
                log.exception("replica %s: tick failed", self._name)
            self._set_leading(False)
            self._view.set_part(TICKS, error)
            return
        self._seat = seat if holder == self._name else None
        self._set_leading(holder == self._name)
        self._view.set_part(TICKS, None)

    async def release(self) -> None:
        """Give the lease up, and the seat on it: another replica takes it now rather than
        after ``seat_ttl``."""
        if self.lease is not None:
            await self._etcd.release(self.lease)

    async def compacting(self) -> None:
        """Compact etcd's history as the Kubernetes API server does, while leading.

        Renewal digests add a revision per replica and period; without compaction etcd's
        database grows until it hits its quota. Every interval the leader compacts up to
        the revision it saw one interval earlier, so a watcher may lag by one interval.
        """
        mark: int | None = None
        while True:
            await asyncio.sleep(self._compaction_interval)
            if not self._leading:
                mark = None
                continue
            try:
                if mark is not None:
                    await self._etcd.compact(mark)
                    log.info("replica %s compacted etcd history up to %d", self._name, mark)
                mark = await self._etcd.revision()
            except RevisionCompactedError:
                mark = None  # someone compacted further already
            except RegistryError as error:
                log.warning("replica %s: compaction failed (%s); next interval", self._name, error)
            except Exception:  # a bug must not end compaction for good
                log.exception("replica %s: compaction failed", self._name)

    def _set_leading(self, leading: bool) -> None:
        if not leading:
            self._seat = None
        if leading != self._leading:
            self._leading = leading
            if leading:
                log.warning("replica %s now runs the lifecycle controller", self._name)
            else:
                log.warning("replica %s no longer runs the lifecycle controller", self._name)
