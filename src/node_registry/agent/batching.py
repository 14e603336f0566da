"""``SharedClient``: one client for the many agents of one host, their renewals batched.

A host that runs many agents (one ``NodeAgent`` each, on one event loop) would send one
``PUT`` per agent and interval, each paying the registry's per-request floor. Given as the
agents' ``client``, a ``SharedClient`` holds their renewals for ``window`` seconds and sends
those that arrived together as one ``LeaseRenewal`` (``heartbeat_many``); each agent gets its
own result back: its renew time, or the error its single renewal would have raised
(``NotFoundError`` still means: register again). A refusal of the whole request (the
registry unreachable, a bad token) fails each waiting renewal with that error, and each
agent backs off on its own jittered schedule as before. Every other call (register, status,
deregister) passes straight through to the one underlying client, so its connection pool
is shared too.

Agents renew every interval ± 10 %, so their renewals are spread over the interval and a
window of tens of milliseconds gathers those that fall together without delaying any
renewal by more than that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from node_registry.agent.runtime import AgentClient
from node_registry.client import AsyncRegistryClient
from node_registry.client.core import RENEWALS_PER_REQUEST
from node_registry.client.objects import RegistryEntry
from node_registry.errors import ConfigError
from node_registry.passport import Capability, Condition, NodePassport, Phase

#: How long a renewal waits for others to share its request (seconds).
WINDOW = 0.05


class Relay:
    """An ``AgentClient`` that passes every call on to ``inner``: what a client for agents
    changes (``SharedClient``'s renewals, a benchmark's timing) it overrides."""

    def __init__(self, inner: AgentClient) -> None:
        self.inner = inner

    @property
    def endpoint(self) -> str:
        return self.inner.endpoint

    async def heartbeat(self, name: str) -> datetime:
        return await self.inner.heartbeat(name)

    async def register(self, passport: NodePassport | Mapping[str, Any]) -> RegistryEntry:
        return await self.inner.register(passport)

    async def update_status(
        self,
        name: str,
        *,
        phase: Phase | str | None = None,
        conditions: Iterable[Condition | Mapping[str, Any]] | None = None,
        current_tasks: int | None = None,
    ) -> RegistryEntry:
        return await self.inner.update_status(
            name, phase=phase, conditions=conditions, current_tasks=current_tasks
        )

    async def deregister(self, name: str) -> None:
        await self.inner.deregister(name)

    async def set_capabilities(
        self, name: str, capabilities: Iterable[Capability | Mapping[str, Any]]
    ) -> list[Capability]:
        return await self.inner.set_capabilities(name, capabilities)


class SharedClient(Relay):
    """An ``AgentClient`` over one ``AsyncRegistryClient`` for many agents; see the module."""

    def __init__(
        self,
        client: AsyncRegistryClient,
        *,
        window: float = WINDOW,
        per_request: int = RENEWALS_PER_REQUEST,
    ) -> None:
        super().__init__(client)
        if not window >= 0:
            raise ConfigError(f"the batching window must not be negative, not {window!r}")
        if per_request < 1:
            raise ConfigError(f"per_request must be at least 1, not {per_request!r}")
        self.client = client
        self.window = window
        self.per_request = per_request
        self._pending: dict[str, asyncio.Future[datetime]] = {}
        self._flush: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references
        self.requests = 0  # LeaseRenewal requests sent: what the storm bench reports

    async def heartbeat(self, name: str) -> datetime:
        future = self._pending.get(name)
        if future is None:
            future = self._pending[name] = asyncio.get_running_loop().create_future()
        if len(self._pending) >= self.per_request:
            self._send_now()
        elif self._flush is None:
            self._flush = asyncio.create_task(self._after_window())
        # Shielded: one agent stopping mid-renewal must not cancel the others' request.
        return await asyncio.shield(future)

    async def _after_window(self) -> None:
        await asyncio.sleep(self.window)
        self._flush = None
        self._send_now()

    def _send_now(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch, self._pending = self._pending, {}
        if batch:
            task = asyncio.create_task(self._renew(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _renew(self, batch: dict[str, asyncio.Future[datetime]]) -> None:
        self.requests += 1
        try:
            done = await self.client.heartbeat_many(batch, per_request=self.per_request)
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for name, future in batch.items():
            if future.done():
                continue
            renewed = done.renewed.get(name)
            if renewed is not None:
                future.set_result(renewed)
            else:
                future.set_exception(done.refused[name])
