"""The registry for asyncio programs, the async driver: the same calls as ``Registry``, awaited.

Reads are ``Registry``'s own (in-memory index, no I/O). Writes are the same procedures
(``registry.writes``) run by ``steps.run_async``: each store call they make is awaited on
the caller's loop through the store's ``aio`` (memory answers at once; an etcd replica
opened on this loop, as ``serve`` opens it, awaits etcd right here: no thread pool, no
loop hop). Registrations and status reports validate a whole passport (up to 256 KiB:
milliseconds of pure Python) before their first store call, so that stretch runs in a
worker thread, off the loop that serves heartbeats, unless the caller says the passport
came from at most ``INLINE_VALIDATION_BYTES`` (the server does: the body's length): then
it validates faster than the hop would take, right here. The lifecycle controller runs as a
task of the caller's loop inside ``async with``. Every watch it opens on a loop shares one
store subscription (``WatchHub``): a thousand watchers cost the store's writer what one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID

from node_registry.admission import Admission
from node_registry.clock import Clock
from node_registry.config import Settings, load_settings
from node_registry.errors import RegistryError
from node_registry.passport import Capability, Condition, NodePassport, NodeType, Phase
from node_registry.passport.limits import INLINE_VALIDATION_BYTES
from node_registry.passport.types import NodeTypeDefinition, NodeTypes
from node_registry.passport.verification import CapabilityVerification
from node_registry.registry.entry import NodeList, RegistryCondition, RegistryEntry
from node_registry.registry.policies import UserInfo
from node_registry.registry.registry import Registry, SelectorInput
from node_registry.registry.steps import Done, Steps, first_call, run_async
from node_registry.registry.watch import AsyncWatch, WatchHub
from node_registry.store import Binding, Store

log = logging.getLogger("node_registry")

T = TypeVar("T")
#: How often the event-loop lag is probed while the controller runs.
LAG_PROBE_SECONDS = 0.25
#: Nodes a read judges between two turns of the event loop (a few milliseconds' work).
SELECT_CHUNK = 1000


class AsyncRegistry:
    """``await registry.find_nodes(kind="agent", selector=..., only_healthy=True)``."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._sync = Registry(store, settings=settings, clock=clock, admission=admission)
        self.settings = self._sync.settings
        self._controller: asyncio.Task[None] | None = None
        self._lag_probe: asyncio.Task[None] | None = None
        #: How late the event loop last ran a timer (seconds): its saturation.
        self.loop_lag = 0.0
        self._saturated = False
        self._hub: WatchHub | None = None
        self._aio = self._sync.store.aio

    @classmethod
    def from_config(
        cls, path: str | Path, *, store: Store | None = None, clock: Clock | None = None
    ) -> AsyncRegistry:
        return cls(store, settings=load_settings(path), clock=clock)

    def __repr__(self) -> str:
        return f"Async{self._sync!r}"

    @property
    def sync(self) -> Registry:
        """The synchronous registry underneath, for code that is not async."""
        return self._sync

    async def register(
        self,
        passport: NodePassport | Mapping[str, Any],
        *,
        rename: bool = True,
        user: UserInfo | None = None,
        size: int | None = None,
    ) -> RegistryEntry:
        """``Registry.register``, awaited. ``size``: how many bytes the passport was read
        from (a request body's length), when known: up to ``INLINE_VALIDATION_BYTES`` it is
        validated on this loop, else (or unknown) in a worker thread."""
        steps = self._sync.writes.register(passport, rename=rename, user=user)
        return self._sync.entry(await self._drive(steps, validating=True, size=size))

    async def set_capabilities(
        self,
        node_id: str,
        capabilities: Iterable[Capability | Mapping[str, Any]],
        *,
        user: UserInfo | None = None,
    ) -> RegistryEntry:
        steps = self._sync.writes.set_capabilities(node_id, list(capabilities), user=user)
        return self._sync.entry(await self._drive(steps, validating=True))

    async def record_verification(
        self,
        node_id: str,
        results: Iterable[CapabilityVerification | Mapping[str, Any]],
        *,
        replace: bool = False,
    ) -> RegistryEntry:
        steps = self._sync.writes.record_verification(node_id, list(results), replace=replace)
        return self._sync.entry(await self._drive(steps, validating=True))

    async def register_node_type(self, doc: Mapping[str, Any]) -> NodeTypeDefinition:
        created: NodeTypeDefinition = await self._drive(
            self._sync.node_types.creating(doc), validating=True
        )
        return created

    async def patch_node_type(self, name: str, patch: Mapping[str, Any]) -> NodeTypeDefinition:
        patched: NodeTypeDefinition = await self._drive(
            self._sync.node_types.updating(name, patch), validating=True
        )
        return patched

    async def delete_node_type(self, name: str) -> NodeTypeDefinition:
        deleted: NodeTypeDefinition = await self._drive(self._sync.writes.delete_node_type(name))
        return deleted

    async def node_types(self) -> NodeTypes:
        """Every node type served, read from the store again (a registered one included)."""
        types: NodeTypes = await self._drive(self._sync.node_types.refreshing())
        return types

    async def heartbeat(self, node_id: str) -> datetime:
        # The hot path of every node: nothing waits on the network, no driver.
        renewed = self._sync.heartbeat_if_local(node_id)
        if renewed is not None:
            return renewed
        driven: datetime = await self._drive(self._sync.writes.heartbeat(node_id))
        return driven

    async def update_status(
        self,
        node_id: str,
        *,
        phase: Phase | str | None = None,
        conditions: Iterable[Condition | Mapping[str, Any]] | None = None,
        current_tasks: int | None = None,
        user: UserInfo | None = None,
    ) -> RegistryEntry:
        steps = self._sync.writes.update_status(
            node_id,
            phase=phase,
            conditions=None if conditions is None else list(conditions),
            current_tasks=current_tasks,
            user=user,
        )
        return self._sync.entry(await self._drive(steps, validating=True))

    async def rewrite(
        self,
        node_id: str,
        change: Callable[[NodePassport, int], NodePassport | Mapping[str, Any]],
        *,
        expected_revision: int | None = None,
        heartbeat: bool = False,
        dry_run: bool = False,
        user: UserInfo | None = None,
    ) -> RegistryEntry:
        steps = self._sync.writes.rewrite(
            node_id,
            change,
            expected_revision=expected_revision,
            heartbeat=heartbeat,
            dry_run=dry_run,
            user=user,
        )
        return self._sync.entry(await self._drive(steps, validating=True))

    async def deregister(
        self,
        node_id: str,
        *,
        keep_binding: bool = False,
        expected_revision: int | None = None,
        user: UserInfo | None = None,
    ) -> None:
        steps = self._sync.writes.deregister(
            node_id, keep_binding=keep_binding, expected_revision=expected_revision, user=user
        )
        await self._drive(steps)

    async def binding(self, name: str) -> Binding | None:
        return self._sync.current_binding(await self._aio.binding(name))

    async def release(self, name: str) -> bool:
        return await self._aio.forget(name)

    async def get(self, node_id: str) -> RegistryEntry:
        return self._sync.get(node_id)

    async def find_nodes(
        self,
        kind: str | NodeType | None = None,
        selector: SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> list[RegistryEntry]:
        found = await self.select(kind, selector, only_healthy, only_verified)
        return found.items

    async def select(
        self,
        kind: str | NodeType | None = None,
        selector: SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> NodeList:
        """``Registry.select``, its entries built ``SELECT_CHUNK`` nodes at a time with the
        loop handed back between chunks: a list of 100,000 nodes holds up heartbeats for one
        chunk's few milliseconds at a time, not for its whole length. The nodes are the ones
        stored at the instant this was called, judged at that instant (a renewal arriving
        meanwhile counts, as seen then)."""
        selection = self._sync.selection(kind, selector, only_healthy, only_verified)
        items: list[RegistryEntry] = []
        total = len(selection)
        for start in range(0, total, SELECT_CHUNK):
            if start:
                await asyncio.sleep(0)
            items += selection.entries(start, start + SELECT_CHUNK)
        return NodeList(items, selection.revision)

    async def list_nodes(self) -> NodeList:
        return await self.select()

    def watch(self, since: int | None = None) -> AsyncWatch:
        """``async for event in registry.watch(since)``; must be called inside the loop.

        On etcd, a version outside the replica's cache is not checked here (that is a round
        trip): its own etcd watch ends with ``RevisionCompactedError`` at the first step if
        etcd no longer has it. ``open_watch`` checks it before it returns.
        """
        hub = self._shared_hub()
        start = self._sync.resource_version if since is None else since
        if self._in_hub(hub, start):
            self._sync.check_watchable(start)  # in the cache: no round trip
            return hub.attach(start)
        if self._sync.blocking:
            return self._sync.async_watch(start, checked=True)
        return self._sync.async_watch(start)

    async def open_watch(self, since: int | None = None) -> AsyncWatch:
        """``watch``, with the check of ``since`` against the store's history off the loop."""
        hub = self._shared_hub()
        start = self._sync.resource_version if since is None else since
        if self._in_hub(hub, start):
            self._sync.check_watchable(start)
            return hub.attach(start)
        self._sync.store.check_view()
        await self._aio.check_watchable(start)  # a version never issued is refused here
        return self._sync.async_watch(start, checked=True)

    def _in_hub(self, hub: WatchHub, start: int) -> bool:
        """Whether the shared hub serves a watch from ``start`` with no store round trip:
        a version it has seen; one newer than any this replica knows is etcd's to judge."""
        if not hub.covers(start):
            return False
        return not self._sync.blocking or start <= self._sync.resource_version

    def end_watches(self) -> None:
        """End every open watch cleanly (a server shutting down); new ones may still open."""
        if self._hub is not None:
            self._hub.close()
            self._hub = None

    def _shared_hub(self) -> WatchHub:
        hub = self._hub
        if hub is None or not hub.live or hub.loop is not asyncio.get_running_loop():
            # From now on: older versions get a store watch of their own (see ``watch``).
            hub = self._hub = self._sync.watch_hub(checked=True)
        return hub

    def conditions(self) -> list[RegistryCondition]:
        return self._sync.conditions()

    # The seed's MVP names (2.2.1).
    async def register_node(self, passport: NodePassport | Mapping[str, Any]) -> RegistryEntry:
        return await self.register(passport)

    async def update_heartbeat(self, node_id: str | UUID) -> None:
        await self.heartbeat(str(node_id))

    async def get_alive_nodes(self) -> list[NodePassport]:
        return self._sync.get_alive_nodes()

    async def reconcile(self) -> None:
        await self._drive(self._sync.writes.reconcile())

    async def controller_pass(self) -> bool:
        """``Registry.controller_pass``, awaited: ``reconcile`` if this registry leads."""
        if self._sync.observe_leading():
            await self.reconcile()
            return True
        return False

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store answers (``/readyz``)."""
        await self._aio.ping()

    async def start(self) -> None:
        """Run the lifecycle controller, and the loop-lag probe, as tasks of the running loop."""
        if self._controller is None:
            self._controller = asyncio.create_task(
                self._run_controller(), name="node-registry-controller"
            )
            self._lag_probe = asyncio.create_task(self._probe_lag(), name="node-registry-lag")

    async def stop(self) -> None:
        for task in (self._controller, self._lag_probe):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._controller = self._lag_probe = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        await self.close()

    async def close(self) -> None:
        """Detach from the store (on etcd: give up the controller seat, close the client)."""
        self.end_watches()
        self._sync.close()

    async def _run_controller(self) -> None:
        period = self.settings.controller.period_seconds
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + period
            await asyncio.sleep(period)
            # Measured here too, so a pass after a stall knows of it before judging nodes.
            self._note_lag(loop.time() - due)
            try:
                await self.controller_pass()
            except RegistryError:
                log.exception("lifecycle controller pass failed; retrying next period")

    async def _probe_lag(self) -> None:
        probe = min(LAG_PROBE_SECONDS, self.settings.controller.saturation_lag_seconds / 2)
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + probe
            await asyncio.sleep(probe)
            self._note_lag(loop.time() - due)

    def _note_lag(self, lag: float) -> None:
        """Record the loop's lag; past the threshold the registry is saturated (blind)."""
        self.loop_lag = lag
        saturated = lag > self.settings.controller.saturation_lag_seconds
        if saturated:
            self._sync.report_saturation()
        if saturated != self._saturated:
            self._saturated = saturated
            if saturated:
                log.warning(
                    "the event loop runs %.1f s late: the registry is saturated; no node "
                    "counts as silent meanwhile",
                    lag,
                )
            else:
                log.warning("the event loop is on time again (%.3f s late)", lag)

    async def _drive(
        self, steps: Steps[T], *, validating: bool = False, size: int | None = None
    ) -> T:
        """Run a procedure of the registry's, its store calls awaited on this loop.

        ``validating``: its first stretch, up to its first store call, runs in a worker
        thread: it validates a whole passport (up to 256 KiB: milliseconds of pure Python),
        off the loop that serves heartbeats. Not when ``size`` (the bytes the passport came
        from) is known to be small: a passport of a few hundred bytes validates in tens of
        microseconds, and the hop cost a registration more than that (#14).
        """
        if not validating or (size is not None and size <= INLINE_VALIDATION_BYTES):
            return await run_async(steps, self._aio)
        first = await asyncio.get_running_loop().run_in_executor(None, first_call, steps)
        if isinstance(first, Done):
            return first.value  # type: ignore[no-any-return]
        return await run_async(steps, self._aio, first)
