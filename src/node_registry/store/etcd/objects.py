"""Objects kept in etcd besides the nodes (NodeTypes): JSON documents by kind and name."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from node_registry.store.etcd.connection import EtcdConnection, _failing_over
from node_registry.store.etcd.keys import _decode_state
from node_registry.store.etcd.translate import _translated

log = logging.getLogger(__name__)


class EtcdObjects(EtcdConnection):
    """The objects half of ``EtcdStore``: put, delete and list them, on no lease."""

    @_failing_over
    async def put_object(self, kind: str, name: str, doc: Mapping[str, Any]) -> None:
        """Keep an object (a NodeType) on no lease: it outlives every replica."""
        with _translated(self._member, f"put {kind}/{name}"):
            await self._client.put(self._keys.object(kind, name), json.dumps(doc).encode())

    @_failing_over
    async def delete_object(self, kind: str, name: str) -> bool:
        with _translated(self._member, f"delete {kind}/{name}"):
            return await self._client.delete(self._keys.object(kind, name)) is not None

    @_failing_over
    async def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every object of ``kind`` by name; an unreadable one is logged and left out."""
        prefix = self._keys.objects(kind)
        with _translated(self._member, f"list {kind}"):
            response = await self._range(prefix)
        found = {}
        for kv in response.kvs:
            name = bytes(kv.key)[len(prefix) :].decode()
            doc = _decode_state(kv.value)
            if doc is None:
                log.warning("the stored %s %r is not a JSON object; ignored", kind, name)
                continue
            found[name] = doc
        return found
