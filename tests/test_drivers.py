"""The registry's writes decide without I/O (``registry.steps``); the async driver awaits
the store on its caller's loop: on etcd, a replica opened there, with no thread between."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid

import pytest

from conftest import ETCD_PERIOD, PassportFactory
from etcd_server import EtcdServer
from node_registry import AsyncRegistry, FakeClock, Registry, load_settings
from node_registry.config import Settings
from node_registry.errors import (
    RevisionCompactedError,
    RevisionConflictError,
    StoreUnavailableError,
    ValidationError,
)
from node_registry.registry.steps import Call, run
from node_registry.store import HealthState, MemoryStore, open_store, open_store_on_loop
from test_nodetypes_wiring import GPU_WORKER, gpu_passport

#: Threads the async path used to hop through: the I/O pool, the replica's own loop.
HOPS = ("node-registry-io", "node-registry-etcd")


def on_etcd(server: EtcdServer) -> Settings:
    """Settings of a registry on ``server``, under a fresh prefix, ticking fast."""
    url = f"etcd://{server.endpoint}/test/{uuid.uuid4().hex}"
    return load_settings(
        store={"url": url, "etcd_period_seconds": ETCD_PERIOD, "etcd_timeout_seconds": 1}
    )


def test_a_write_is_steps_that_do_no_io_themselves(make_passport: PassportFactory) -> None:
    store = MemoryStore()
    registry = Registry(store)
    steps = registry.writes.register(make_passport("steps-1"))
    create = next(steps)
    assert isinstance(create, Call)
    assert create.name == "create"
    record = create.args[0]
    assert record.name == "steps-1"
    # A lost compare-and-swap: the procedure looks the node up in the store, then creates.
    assert steps.throw(RevisionConflictError("raced")) == Call("get", (record.node_id,))
    assert steps.send(None).name == "create"
    with pytest.raises(StopIteration) as done:
        steps.send(41)
    assert done.value.value.revision == 41
    assert store.list() == ({}, 0)  # it decided; nothing was written but by its driver
    # The same procedure on the sync driver writes.
    written = run(registry.writes.register(make_passport("steps-1")), store)
    assert store.get(written.record.node_id) == written


def test_the_async_registry_awaits_etcd_on_its_own_loop(
    shared_etcd: EtcdServer, clock: FakeClock, make_passport: PassportFactory
) -> None:
    settings = on_etcd(shared_etcd)

    async def scenario() -> None:
        store = await open_store_on_loop(settings, clock=clock)
        try:
            registry = AsyncRegistry(store, settings=settings, clock=clock)
            async with asyncio.timeout(10):
                while not store.leading:
                    await asyncio.sleep(ETCD_PERIOD)
            entry = await registry.register(make_passport("loop-1"))
            node_id = entry.node_id
            assert (await registry.get(node_id)).resource_version == entry.resource_version
            await registry.update_status(node_id, current_tasks=2)
            clock.advance(settings.heartbeat.not_ready_after_seconds + 1)
            assert await registry.controller_pass()  # a fenced write, awaited here
            assert (await registry.get(node_id)).health_state is HealthState.NOT_READY
            await registry.heartbeat(node_id)  # not local: it records the recovery
            assert (await registry.get(node_id)).health_state is HealthState.ALIVE
            assert (await registry.get(node_id)).passport.status.current_tasks == 2
            await registry.deregister(node_id, keep_binding=True)
            assert (await registry.binding("loop-1")) is not None
            await registry.ping()
            names = [t.name for t in threading.enumerate()]
            assert not [n for n in names if n.startswith(HOPS)], names
            # Waiting on the loop for the loop would hang it: refused, and said why.
            with pytest.raises(StoreUnavailableError, match="would block the loop"):
                store.get(node_id)
            await registry.close()
        finally:
            await store.aio.close()

    asyncio.run(scenario())


def test_a_replica_on_the_loop_learns_node_types_registered_elsewhere(
    shared_etcd: EtcdServer, clock: FakeClock
) -> None:
    settings = on_etcd(shared_etcd)

    async def scenario() -> None:
        store = await open_store_on_loop(settings, clock=clock)
        try:
            registry = AsyncRegistry(store, settings=settings, clock=clock)
            elsewhere = await asyncio.to_thread(open_store, settings, clock=clock)
            other = await asyncio.to_thread(Registry, elsewhere, settings=settings, clock=clock)
            await asyncio.to_thread(other.register_node_type, GPU_WORKER)
            # A write naming it asks etcd, awaited on this loop.
            assert (await registry.register(gpu_passport())).node_kind == "gpu-worker"
            await asyncio.to_thread(
                other.register_node_type, {**GPU_WORKER, "metadata": {"name": "tpu-worker"}}
            )
            # A read on the loop cannot wait for etcd: what it read last, and a read
            # meanwhile; never a request held up (or a 503) for it.
            with pytest.raises(ValidationError, match="unknown node kind"):
                registry.sync.find_nodes(kind="tpu-worker")
            async with asyncio.timeout(5):
                while True:
                    await asyncio.sleep(ETCD_PERIOD)
                    with contextlib.suppress(ValidationError):
                        assert registry.sync.find_nodes(kind="tpu-worker") == []
                        break
            await asyncio.to_thread(other.close)
            await asyncio.to_thread(elsewhere.close)
            await registry.close()
        finally:
            await store.aio.close()

    asyncio.run(scenario())


def test_watches_outside_the_cache_follow_etcd_on_the_callers_loop(
    shared_etcd: EtcdServer, clock: FakeClock, make_passport: PassportFactory
) -> None:
    settings = on_etcd(shared_etcd)

    async def scenario() -> None:
        first = await open_store_on_loop(settings, clock=clock)
        try:
            writer = AsyncRegistry(first, settings=settings, clock=clock)
            start = writer.sync.resource_version
            written = [await writer.register(make_passport(f"w-{i}")) for i in range(5)]
            later = await open_store_on_loop(settings, clock=clock)
            try:
                # A replica started after those writes: its cache keeps no event from
                # before, so the watch is an etcd watch of its own, relayed on this loop.
                reader = AsyncRegistry(later, settings=settings, clock=clock)
                watch = await reader.open_watch(start)
                seen = [await watch.next(timeout=5) for _ in written]
                assert [e.entry.name for e in seen if e is not None] == [e.name for e in written]
                with pytest.raises(RevisionCompactedError, match="newer than"):
                    await reader.open_watch(reader.sync.resource_version + 1000)
                await reader.close()
            finally:
                await later.aio.close()
            assert later.closed  # its relay ended with it
            await writer.close()
            first.close()  # sync, on its own loop: it closes as soon as the loop runs on
            async with asyncio.timeout(5):
                while not first.closed:
                    await asyncio.sleep(ETCD_PERIOD)
        finally:
            await first.aio.close()

    asyncio.run(scenario())
