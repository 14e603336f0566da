"""Bindings: the name of a deregistered node, kept for it on a lease of ``binding_ttl``.

A binding is written by the delete that keeps it (``nodes``); every write that takes a
name drops its binding and revokes the lease it was on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from node_registry.store.base import Binding
from node_registry.store.etcd.connection import EtcdConnection, _failing_over
from node_registry.store.etcd.translate import _translated

log = logging.getLogger(__name__)


class EtcdBindings(EtcdConnection):
    """The bindings half of ``EtcdStore``: read one, forget one, drop one in a write."""

    @_failing_over
    async def binding(self, name: str) -> Binding | None:
        with _translated(self._member, f"binding of {name}"):
            kv = await self._client.get(self._keys.binding(name))
        if kv is None:
            return None
        try:
            return Binding.from_dict(name, json.loads(kv.value))
        except (ValueError, KeyError, TypeError) as error:
            # Unreadable, it binds nothing: the name is as free as if it had expired.
            log.warning("the binding of name %r cannot be read (%s); ignored", name, error)
            return None

    @_failing_over
    async def forget(self, name: str) -> bool:
        with _translated(self._member, f"forget {name}"):
            _, _, ranges = await self._txn(compare=[], success=self._forgetting(name), failure=[])
        await self._forgotten(ranges)
        return bool(ranges and ranges[0])

    def _forgetting(self, name: str) -> tuple[Any, Any]:
        """Transaction steps that drop the binding of ``name``, reading it first: the etcd
        lease it was on is revoked after (``_forgotten``) instead of running out in a week."""
        tx = self._client.transactions
        return tx.get(self._keys.binding(name)), tx.delete(self._keys.binding(name))

    async def _forgotten(self, ranges: Sequence[Any]) -> None:
        for kvs in ranges:
            for kv in kvs:
                if bytes(kv.key).startswith(self._keys.bindings) and int(kv.lease):
                    await self._revoke(int(kv.lease))
