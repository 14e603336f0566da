"""The node records one store wrote, by their stored bytes, until its own watch brings
them back: that watch takes the record as written instead of decoding the bytes again.

Keyed by node and value, not revision: the watch usually delivers a write before the
write's own response arrives (88 % of 200 creates on loopback), so the record is noted
before the write is sent. The same bytes always decode to the same record, so a match is
right whoever wrote them. Bounded: past ``limit`` entries the oldest are decoded as usual.
"""

from __future__ import annotations

from node_registry.store.records import NodeRecord

#: Writes noted at once; a write whose entry was dropped is decoded, as before.
WRITTEN_LIMIT = 4_096


class Written:
    """Records written and not yet seen on the watch, by (node id, stored value); used on
    the store's event loop only (as every call of the store is)."""

    def __init__(self, limit: int = WRITTEN_LIMIT) -> None:
        self._limit = limit
        #: Whether a feed takes the records back; until one does, none is noted.
        self.followed = False
        self._records: dict[tuple[str, bytes], NodeRecord] = {}

    def __repr__(self) -> str:
        return f"Written({len(self._records)} of {self._limit})"

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: NodeRecord, value: bytes) -> None:
        """``record``, stored as ``value``, is about to be written."""
        if not self.followed:
            return  # a store without a feed (a tool, a test) would only fill the map
        records = self._records
        records[(record.node_id, value)] = record
        if len(records) > self._limit:
            del records[next(iter(records))]

    def take(self, node_id: str, value: bytes) -> NodeRecord | None:
        """The record written as ``value``, once: None if this store did not write it."""
        if not self._records:
            return None  # a replica that wrote nothing lately: not even a hash of the value
        return self._records.pop((node_id, value), None)

    def discard(self, record: NodeRecord, value: bytes) -> None:
        """The write of ``value`` failed: the watch will not bring it."""
        self._records.pop((record.node_id, value), None)
