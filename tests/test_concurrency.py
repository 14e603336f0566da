"""Many threads and many asyncio tasks at once never corrupt the registry's state."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid

from conftest import passport
from node_registry import (
    AsyncRegistry,
    ConflictError,
    EventType,
    FakeClock,
    NotFoundError,
    Registry,
    load_settings,
)


def _check_consistent(registry: Registry) -> None:
    """The read cache, the label index, the store and the event log all tell one story."""
    listed = registry.list_nodes()
    names = [e.name for e in listed.items]
    assert len(names) == len(set(names)), "two nodes share a name"
    for entry in listed.items:
        assert registry.get(entry.node_id) == entry
        by_name = registry.find_nodes(selector=f"capability.{entry.name.replace('-', '_')}")
        assert [e.node_id for e in by_name] == [entry.node_id]
    # Replaying the whole history rebuilds exactly the listed state.
    replay: dict[str, int] = {}
    with registry.watch(0) as watch:
        last = 0
        for event in iter(lambda: watch.next(0), None):
            assert event.resource_version == last + 1, "a revision was skipped or repeated"
            last = event.resource_version
            if event.type is EventType.DELETED:
                del replay[event.entry.node_id]
            else:
                replay[event.entry.node_id] = event.resource_version
    assert last == listed.resource_version
    assert replay == {e.node_id: e.resource_version for e in listed.items}


def test_threads_register_heartbeat_update_find_deregister(clock: FakeClock) -> None:
    registry = Registry(clock=clock, settings=load_settings(watch={"history_size": 100_000}))
    names = [f"node-{i:02d}" for i in range(24)]
    ids = {name: str(uuid.uuid5(uuid.NAMESPACE_DNS, name)) for name in names}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        try:
            for _ in range(400):
                name = rng.choice(names)
                node = ids[name]
                action = rng.random()
                try:
                    if action < 0.3:
                        caps = (name.replace("-", "_"), rng.choice(["python", "go"]))
                        registry.register(passport(name, capabilities=caps))
                    elif action < 0.6:
                        registry.heartbeat(node)
                    elif action < 0.75:
                        registry.update_status(node, current_tasks=rng.randrange(5))
                    elif action < 0.8:
                        registry.deregister(node)
                    else:
                        for entry in registry.find_nodes(selector="capability.python"):
                            assert entry.passport.spec.capabilities[1].name == "python"
                except NotFoundError:
                    pass  # deregistered by another thread in between: expected
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert registry.resource_version > 100
    _check_consistent(registry)


def test_concurrent_registrations_of_one_name_leave_exactly_one_owner(clock: FakeClock) -> None:
    registry = Registry(clock=clock, settings=load_settings())
    barrier = threading.Barrier(16)
    outcomes: list[str] = []

    def claim(i: int) -> None:
        barrier.wait()
        try:
            registry.register(passport("contested", uid=str(uuid.UUID(int=i + 1))))
            outcomes.append("won")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("won") == 1
    assert outcomes.count("conflict") == 15
    assert [e.name for e in registry.list_nodes().items] == ["contested"]


def test_many_asyncio_tasks(clock: FakeClock) -> None:
    async def scenario() -> Registry:
        registry = AsyncRegistry(clock=clock, settings=load_settings())

        async def agent(i: int) -> None:
            name = f"node-{i:02d}"
            entry = await registry.register(passport(name, capabilities=(f"node_{i:02d}",)))
            for beat in range(20):
                await registry.heartbeat(entry.node_id)
                if beat % 5 == 0:
                    await registry.update_status(entry.node_id, current_tasks=beat % 3)
                await registry.find_nodes(kind="agent", only_healthy=True)
                await asyncio.sleep(0)

        await asyncio.gather(*(agent(i) for i in range(50)))
        return registry.sync

    registry = asyncio.run(scenario())
    assert len(registry.list_nodes().items) == 50
    _check_consistent(registry)
