"""``AsyncRegistryClient``: the registry service from asyncio code; the sync client's twin.

Same calls, same core (``client.core``), same failover and retry policy; only the I/O path
is spelled out again with ``await``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx

from node_registry.client import core
from node_registry.client.objects import NodeList, RegistryEntry, Renewals, WatchEvent
from node_registry.client.settings import WATCH_IDLE_TIMEOUT, ClientSettings
from node_registry.client.turns import Turns
from node_registry.errors import (
    RegistryError,
    RegistryUnreachableError,
    StoreUnavailableError,
)
from node_registry.passport import Capability, Condition, NodePassport, NodeType, Phase
from node_registry.passport.verification import CapabilityVerification

#: Calls one client has in flight at once; more wait their turn here (``client.turns``:
#: renewals first). httpcore's pool scans every waiting request on each connection it frees,
#: so thousands of concurrent calls (the agents of a host sharing one client) cost the
#: client quadratic CPU there (#14).
MAX_IN_FLIGHT = 32


class AsyncRegistryClient:
    """``await client.find_nodes(kind="agent", selector=..., only_healthy=True)``."""

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        verify: bool | str | ssl.SSLContext = True,
        watch_idle_timeout: float = WATCH_IDLE_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = ClientSettings.build(endpoints, token, timeout, retries, backoff)
        tls = self.settings.tls(verify)
        self._clients = [
            httpx.AsyncClient(
                base_url=url,
                headers=self.settings.headers(),
                timeout=timeout,
                verify=tls,
                transport=transport,
            )
            for url in self.settings.endpoints
        ]
        self._current = 0
        self._watch_timeout = httpx.Timeout(timeout, read=watch_idle_timeout)
        self._in_flight = Turns(MAX_IN_FLIGHT)

    def __repr__(self) -> str:
        return f"AsyncRegistryClient({list(self.settings.endpoints)!r})"

    @property
    def endpoint(self) -> str:
        return self.settings.endpoints[self._current]

    async def _send(self, call: core.Call) -> Any:
        problems: list[str] = []
        content, headers = core.encode(call)
        for attempt in range(self.settings.retries + 1):
            if attempt:
                await asyncio.sleep(self.settings.delay(attempt))
            for offset in range(len(self._clients)):
                index = (self._current + offset) % len(self._clients)
                client = self._clients[index]
                try:
                    # The wait for a turn counts against the timeout, as httpx's pool wait did.
                    async with asyncio.timeout(self.settings.timeout):
                        await self._in_flight.acquire(urgent=call.keeps_alive)
                except TimeoutError:
                    problems.append(
                        f"{client.base_url}: {MAX_IN_FLIGHT} calls of this client in flight "
                        f"for {self.settings.timeout:g} s"
                    )
                    continue
                try:
                    response = await client.request(
                        call.method, call.path, params=call.params, content=content, headers=headers
                    )
                except httpx.TransportError as exc:
                    problems.append(f"{client.base_url}: {type(exc).__name__}: {exc}")
                    continue
                except httpx.HTTPError as exc:
                    self._current = index
                    raise core.transport_failure(exc) from exc
                finally:
                    self._in_flight.release()
                try:
                    result = core.check(response.status_code, response.content)
                except StoreUnavailableError as exc:
                    problems.append(f"{client.base_url}: {exc}")
                    continue
                except RegistryError:
                    # An endpoint that answered, even "no", is the one to ask next time.
                    self._current = index
                    raise
                self._current = index
                return result
        raise RegistryUnreachableError(
            f"no registry endpoint answered {call.method} {call.path}: " + "; ".join(problems[-3:])
        )

    async def register(self, passport: NodePassport | Mapping[str, Any]) -> RegistryEntry:
        return core.entry(await self._send(core.register(passport)))

    async def heartbeat(self, name: str) -> datetime:
        return core.renew_time(await self._send(core.heartbeat(name)))

    async def heartbeat_many(
        self, names: Iterable[str], *, per_request: int = core.RENEWALS_PER_REQUEST
    ) -> Renewals:
        """Renew many leases (a host's agents) in one request per ``per_request`` of them.

        Each lease is renewed or refused on its own (``Renewals.refused`` holds the error
        its single ``heartbeat`` would have raised); a refusal of the whole request (a bad
        token, the registry unreachable) raises, as ``heartbeat`` does.
        """
        done = Renewals()
        for batch in core.batches(names, per_request):
            answer = await self._send(core.heartbeat_many(batch))
            done.add(core.renewals(answer, batch))
        return done

    async def update_status(
        self,
        name: str,
        *,
        phase: Phase | str | None = None,
        conditions: Iterable[Condition | Mapping[str, Any]] | None = None,
        current_tasks: int | None = None,
    ) -> RegistryEntry:
        call = core.update_status(
            name, phase=phase, conditions=conditions, current_tasks=current_tasks
        )
        return core.entry(await self._send(call))

    async def deregister(self, name: str) -> None:
        await self._send(core.deregister(name))

    async def get(self, name: str) -> RegistryEntry:
        return core.entry(await self._send(core.get(name)))

    async def find_nodes(
        self,
        kind: str | NodeType | None = None,
        selector: core.SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> list[RegistryEntry]:
        """Seed 2.5's find_nodes on the server; ``only_verified``: only Verified claims
        match ``capability.<name>``, and only trusted nodes (#12)."""
        return core.entries(
            await self._send(core.find_nodes(kind, selector, only_healthy, only_verified)),
            only_healthy=only_healthy,
        )

    async def list_nodes(self, *, page_size: int = 500) -> NodeList:
        items: list[RegistryEntry] = []
        token: str | None = None
        while True:
            page, token = core.node_list(await self._send(core.list_page(page_size, token)))
            items.extend(page.items)
            if token is None:
                return NodeList(items, page.resource_version)

    async def watch(
        self,
        since: int,
        *,
        timeout_seconds: int | None = None,
        kind: str | NodeType | None = None,
        selector: core.SelectorInput = None,
        only_verified: bool = False,
    ) -> AsyncIterator[WatchEvent]:
        """Events after ``since``; reconnects with failover and resumes from the last version."""
        cursor = core.WatchCursor(
            since,
            timeout_seconds=timeout_seconds,
            kind=kind,
            selector=selector,
            only_verified=only_verified,
            settings=self.settings,
            endpoints=len(self._clients),
        )
        while (call := cursor.open()) is not None:
            client = self._clients[self._current]
            try:
                async with client.stream(
                    call.method, call.path, params=call.params, timeout=self._watch_timeout
                ) as response:
                    if response.status_code != 200:
                        core.check(response.status_code, await response.aread())
                    cursor.connected()
                    async for line in response.aiter_lines():
                        event = cursor.read(line)
                        if event is not None:
                            yield event
                if cursor.bounded:
                    return
            except (httpx.TransportError, StoreUnavailableError):
                self._current = (self._current + 1) % len(self._clients)
                await asyncio.sleep(cursor.lost())
            except httpx.HTTPError as exc:
                raise core.transport_failure(exc) from exc

    # -- #12: dynamic capabilities and verification (the nodepassports subresources) ----

    async def set_capabilities(
        self, name: str, capabilities: Iterable[Capability | Mapping[str, Any]]
    ) -> list[Capability]:
        """Replace the node's capabilities at runtime; the capabilities stored."""
        doc = await self._send(core.set_capabilities(name, capabilities))
        return [Capability.model_validate(c) for c in doc["spec"]["capabilities"]]

    async def record_verification(
        self, name: str, results: Iterable[CapabilityVerification], *, replace: bool = False
    ) -> RegistryEntry:
        """Record a verifier's results (a verifier or admin token); the node as stored."""
        call = core.record_verification(name, results, replace=replace)
        return core.passport_entry(await self._send(call))

    async def passport_changes(
        self, since: int, *, timeout_seconds: int
    ) -> AsyncIterator[tuple[str, RegistryEntry]]:
        """``(type, entry)`` for each nodepassports change after ``since``, for at most
        ``timeout_seconds`` (one connection, no resume: a caller that lists again after
        it misses nothing). ``RevisionCompactedError`` when ``since`` is too old."""
        client = self._clients[self._current]
        params = {
            "watch": "true",
            "resourceVersion": str(since),
            "timeoutSeconds": str(timeout_seconds),
        }
        async with client.stream(
            "GET", core.NODEPASSPORTS, params=params, timeout=self._watch_timeout
        ) as response:
            if response.status_code != 200:
                core.check(response.status_code, await response.aread())
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    yield event["type"], core.passport_entry(event["object"])
                elif event.get("type") == "ERROR":
                    status = event["object"]
                    core.check(int(status.get("code") or 500), json.dumps(status).encode())

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
