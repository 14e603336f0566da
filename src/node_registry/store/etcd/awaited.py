"""``EtcdReplica.aio``: one replica's calls that wait on etcd, as coroutines on its loop."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from node_registry.store.base import Binding, Versioned
from node_registry.store.records import NodeRecord

if TYPE_CHECKING:
    from node_registry.store.etcd.replica import EtcdReplica


class _Awaited:
    """``EtcdReplica.aio``: the replica's calls that wait on etcd, as coroutines."""

    def __init__(self, replica: EtcdReplica) -> None:
        self._replica = replica

    def __repr__(self) -> str:
        return f"{self._replica!r}.aio"

    async def get(self, node_id: str) -> Versioned | None:
        replica = self._replica
        return await replica._runner.run(replica._get(node_id))

    async def create(self, record: NodeRecord, *, renewed_at: datetime) -> int:
        replica = self._replica
        return await replica._runner.run(replica._create(record, renewed_at=renewed_at))

    async def update(
        self,
        record: NodeRecord,
        *,
        expected_revision: int,
        renewed_at: datetime | None = None,
        fenced: bool = False,
    ) -> int:
        replica = self._replica
        return await replica._runner.run(
            replica._update(
                record, expected_revision=expected_revision, renewed_at=renewed_at, fenced=fenced
            )
        )

    async def delete(
        self,
        node_id: str,
        *,
        expected_revision: int | None = None,
        keep: Binding | None = None,
        fenced: bool = False,
    ) -> int:
        replica = self._replica
        return await replica._runner.run(
            replica._delete(node_id, expected_revision=expected_revision, keep=keep, fenced=fenced)
        )

    async def renew(self, node_id: str, at: datetime) -> None:
        replica = self._replica
        await replica._runner.run(replica._renew(node_id, at))

    async def binding(self, name: str) -> Binding | None:
        replica = self._replica
        return await replica._runner.run(replica._binding(name))

    async def forget(self, name: str) -> bool:
        replica = self._replica
        return await replica._runner.run(replica._forget(name))

    async def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        replica = self._replica
        return await replica._runner.run(replica._objects.read(kind))

    async def put_object(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        replica = self._replica
        await replica._runner.run(replica._etcd.put_object(kind, name, doc))

    async def delete_object(self, kind: str, name: str) -> bool:
        replica = self._replica
        return await replica._runner.run(replica._etcd.delete_object(kind, name))

    async def publish_state(self, key: str, doc: dict[str, Any]) -> None:
        replica = self._replica
        await replica._runner.run(replica._publish_state(key, doc))

    async def check_watchable(self, since: int) -> None:
        replica = self._replica
        await replica._runner.run(replica._check_watchable(since))

    async def ping(self) -> None:
        replica = self._replica
        await replica._runner.run(replica._ping())

    async def close(self) -> None:
        await self._replica.aclose()
