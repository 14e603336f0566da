"""``RegistryClient``: the registry service from synchronous code, over httpx.

Several endpoints may be given; a call goes to the last one that answered, and moves on to
the next when an endpoint refuses the connection, times out or answers 502/503/504. Every
call is idempotent (re-registering replaces, a lease renewal renews), so all are retried,
with exponential backoff between rounds over the endpoints.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx

from node_registry.client import core
from node_registry.client.objects import NodeList, RegistryEntry, Renewals, WatchEvent
from node_registry.client.settings import WATCH_IDLE_TIMEOUT, ClientSettings
from node_registry.errors import (
    RegistryError,
    RegistryUnreachableError,
    StoreUnavailableError,
)
from node_registry.passport import Condition, NodePassport, NodeType, Phase


class RegistryClient:
    """The service's API with the embedded registry's names (``find_nodes`` as in seed 2.5)."""

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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = ClientSettings.build(endpoints, token, timeout, retries, backoff)
        tls = self.settings.tls(verify)
        self._clients = [
            httpx.Client(
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

    def __repr__(self) -> str:
        return f"RegistryClient({list(self.settings.endpoints)!r})"

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        return self.settings.endpoints[self._current]

    def _send(self, call: core.Call) -> Any:
        problems: list[str] = []
        content, headers = core.encode(call)
        for attempt in range(self.settings.retries + 1):
            if attempt:
                time.sleep(self.settings.delay(attempt))
            for offset in range(len(self._clients)):
                index = (self._current + offset) % len(self._clients)
                client = self._clients[index]
                try:
                    response = client.request(
                        call.method, call.path, params=call.params, content=content, headers=headers
                    )
                except httpx.TransportError as exc:
                    problems.append(f"{client.base_url}: {type(exc).__name__}: {exc}")
                    continue
                except httpx.HTTPError as exc:
                    self._current = index
                    raise core.transport_failure(exc) from exc
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

    def register(self, passport: NodePassport | Mapping[str, Any]) -> RegistryEntry:
        return core.entry(self._send(core.register(passport)))

    def heartbeat(self, name: str) -> datetime:
        """Renew the node's lease; ``NotFoundError`` means: register again."""
        return core.renew_time(self._send(core.heartbeat(name)))

    def heartbeat_many(
        self, names: Iterable[str], *, per_request: int = core.RENEWALS_PER_REQUEST
    ) -> Renewals:
        """Renew many leases (a host's agents) in one request per ``per_request`` of them.

        Each lease is renewed or refused on its own (``Renewals.refused`` holds the error
        its single ``heartbeat`` would have raised); a refusal of the whole request (a bad
        token, the registry unreachable) raises, as ``heartbeat`` does.
        """
        done = Renewals()
        for batch in core.batches(names, per_request):
            answer = self._send(core.heartbeat_many(batch))
            done.add(core.renewals(answer, batch))
        return done

    def update_status(
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
        return core.entry(self._send(call))

    def deregister(self, name: str) -> None:
        self._send(core.deregister(name))

    def get(self, name: str) -> RegistryEntry:
        return core.entry(self._send(core.get(name)))

    def find_nodes(
        self,
        kind: str | NodeType | None = None,
        selector: core.SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> list[RegistryEntry]:
        """Seed 2.5's find_nodes on the server; ``only_verified``: only Verified claims
        match ``capability.<name>``, and only trusted nodes (#12)."""
        return core.entries(
            self._send(core.find_nodes(kind, selector, only_healthy, only_verified)),
            only_healthy=only_healthy,
        )

    def list_nodes(self, *, page_size: int = 500) -> NodeList:
        """Every node, page by page from one snapshot, and the version to watch from."""
        items: list[RegistryEntry] = []
        token: str | None = None
        while True:
            page, token = core.node_list(self._send(core.list_page(page_size, token)))
            items.extend(page.items)
            if token is None:
                return NodeList(items, page.resource_version)

    def watch(
        self,
        since: int,
        *,
        timeout_seconds: int | None = None,
        kind: str | NodeType | None = None,
        selector: core.SelectorInput = None,
        only_verified: bool = False,
    ) -> Iterator[WatchEvent]:
        """Events after ``since``; reconnects (with failover) and resumes from the last version.

        BOOKMARKs only move the resume point. ``RevisionCompactedError``: list again.
        """
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
                with client.stream(
                    call.method, call.path, params=call.params, timeout=self._watch_timeout
                ) as response:
                    if response.status_code != 200:
                        core.check(response.status_code, response.read())
                    cursor.connected()
                    for line in response.iter_lines():
                        event = cursor.read(line)
                        if event is not None:
                            yield event
                if cursor.bounded:
                    return
            except (httpx.TransportError, StoreUnavailableError):
                self._current = (self._current + 1) % len(self._clients)
                time.sleep(cursor.lost())
            except httpx.HTTPError as exc:
                raise core.transport_failure(exc) from exc

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
