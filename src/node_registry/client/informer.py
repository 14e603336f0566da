"""The informer: a local copy of the registry, kept current by list + watch, that answers queries.

client-go's SharedInformer in small: ``NodeCache`` is the store (no I/O), ``Informer`` (a
daemon thread over ``RegistryClient``) and ``AsyncInformer`` (a task over
``AsyncRegistryClient``) each spell out the same short loop around it. Decisions:

- List, then watch from the list's resource version; a 410 (``RevisionCompactedError``: the
  watcher fell behind the registry's history) means list again, at once, as client-go does.
- Every broken connection also means list again, never resume. A restarted in-memory registry
  has a new history that starts again at 1: a resume version from the old server is "too new"
  for it, and the server accepts it without complaint, so a resumed watch would stream
  versions the cache takes for old news, or skip what the new server did before it caught up.
  A list tells the truth whatever happened to the history, so the informer's own client is
  built with ``retries=0``: every disconnect reaches the informer instead of being hidden by
  the client's reconnect, and is followed by a re-list. A watch event not newer than the cache
  (only possible when a history restarted behind a client's own reconnect) re-lists too.
- While the registry is unreachable the cache keeps answering from the last state it knew
  (seed 3.4: the orchestrator keeps scheduling on what it knows), reports how stale it is
  (``connected``, ``staleness``, ``last_synced_at``) and retries with the one full-jitter
  backoff (``client.backoff``: up to 0.2 s doubling to 7 s), reset once a connection has held,
  so informers that lost one registry together do not re-list it together.
- Health is what the registry last *recorded*, not a live lease check. A heartbeat renews a
  lease and produces no watch event (Kubernetes' Lease/Node split), so the cache learns of a
  silent node only when the registry's lifecycle controller records the transition (a
  MODIFIED whose ``status.healthState`` changed, which the informer delivers as
  HEALTH_CHANGED, as Kubernetes' Node Ready condition), up to one controller period after
  ``not_ready_after``. Until then ``find_nodes(only_healthy=True)`` here can still return a
  node the embedded registry, which computes health from the lease on every read, would not.
  A list carries the health computed at the moment of the list.
- Consumers get events through ``on_event``, after the cache has applied them. A re-list
  delivers the difference between the old cache and the new list as synthetic events
  (client-go's Replace), so a consumer that follows events still sees every change once.
- A thread blocked reading a socket cannot be cancelled, and closing the socket does not wake
  it; shutting it down does. The sync informer's client therefore runs on a transport that
  remembers the socket of its last response, so ``stop()`` returns promptly.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import operator
import random
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

import httpx

from node_registry.client.aio import AsyncRegistryClient
from node_registry.client.backoff import backoff as jittered
from node_registry.client.core import SelectorInput
from node_registry.client.objects import (
    EventType,
    NodeList,
    RegistryEntry,
    WatchEvent,
    classify,
)
from node_registry.client.settings import MAX_DELAY, tls_verify
from node_registry.client.sync import RegistryClient
from node_registry.clock import Clock, SystemClock
from node_registry.errors import (
    ConfigError,
    RegistryError,
    RevisionCompactedError,
)
from node_registry.passport import NodeType
from node_registry.passport.kinds import parse_kind
from node_registry.passport.verification import registry_labels, strict_labels, trusted
from node_registry.selectors import NodeFilter, as_selector
from node_registry.store.records import HealthState

log = logging.getLogger("node_registry.informer")

EventHandler = Callable[[WatchEvent], None]
#: A connection that held this long (or delivered an event) resets the backoff.
_STEADY_SECONDS = MAX_DELAY


class ListWatch(Protocol):
    """What ``Informer`` needs of a client; ``RegistryClient`` has it, tests pass fakes."""

    def list_nodes(self) -> NodeList: ...

    def watch(self, since: int) -> Iterator[WatchEvent]: ...


class AsyncListWatch(Protocol):
    """What ``AsyncInformer`` needs of a client; ``AsyncRegistryClient`` has it."""

    async def list_nodes(self) -> NodeList: ...

    def watch(self, since: int) -> AsyncIterator[WatchEvent]: ...


# -- the cache -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stored:
    entry: RegistryEntry
    #: What selectors match, computed once per stored version rather than once per query.
    labels: dict[str, str]


_ENTRY_FIELDS = operator.attrgetter(*(f.name for f in fields(RegistryEntry)))
_KIND = operator.attrgetter("entry.node_kind")
_LABELS = operator.attrgetter("labels")


def _copy(entry: RegistryEntry) -> RegistryEntry:
    # Ten times faster than copy.copy, and a find_nodes over every node copies every node.
    return RegistryEntry(*_ENTRY_FIELDS(entry))


def _store(entry: RegistryEntry) -> _Stored:
    # The labels the server's selectors match (a Failed claim's capability is gone).
    return _Stored(entry, registry_labels(entry.passport, entry.verification))


class NodeCache:
    """Registry entries by node, at one resource version; thread-safe, no I/O.

    ``find_nodes`` answers exactly as ``Registry.find_nodes`` would for the same entries:
    the same filter (``selectors.NodeFilter``), effective labels, sorting by name, and the
    server's ``schedulable``. Reads return copies, so a caller editing an entry changes
    nothing here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, _Stored] = {}
        self._ids: dict[str, str] = {}  # name -> node id; names are unique in the registry
        self._resource_version = 0

    def __repr__(self) -> str:
        return f"<NodeCache {len(self)} nodes at resource version {self._resource_version}>"

    def __len__(self) -> int:
        return len(self._items)

    @property
    def resource_version(self) -> int:
        """The version the cache is current at: the last list's, or the last event's."""
        return self._resource_version

    def replace(self, items: Iterable[RegistryEntry], resource_version: int) -> list[WatchEvent]:
        """Become the list's state (after a list); the changes it made, as synthetic events.

        The version is taken even when lower than the cache's: a registry whose history
        restarted lists lower versions, and its list is the truth.
        """
        new = {entry.node_id: _store(entry) for entry in items}
        ids = {stored.entry.name: node_id for node_id, stored in new.items()}
        with self._lock:
            old, self._items, self._ids = self._items, new, ids
            self._resource_version = resource_version
        return _differences(old, new, resource_version)

    def apply(self, event: WatchEvent) -> bool:
        """Apply one watch event; False when it is not newer than the cache, and ignored."""
        entry = event.entry
        stored = None if event.type == EventType.DELETED else _store(entry)
        with self._lock:
            if event.resource_version <= self._resource_version:
                return False
            self._resource_version = event.resource_version
            old = self._items.pop(entry.node_id, None)
            if old is not None and self._ids.get(old.entry.name) == entry.node_id:
                del self._ids[old.entry.name]
            if stored is not None:
                holder = self._ids.get(entry.name)
                if holder is not None:
                    # Names are unique, so another node holding this one is already gone.
                    del self._items[holder]
                self._items[entry.node_id] = stored
                self._ids[entry.name] = entry.node_id
        return True

    def get(self, name: str) -> RegistryEntry | None:
        """The node called ``name``, or None."""
        with self._lock:
            node_id = self._ids.get(name)
            stored = None if node_id is None else self._items.get(node_id)
        return None if stored is None else _copy(stored.entry)

    def list(self) -> builtins.list[RegistryEntry]:
        """Every node, sorted by name."""
        return self.find_nodes()

    def find_nodes(
        self,
        kind: str | NodeType | None = None,
        selector: SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> builtins.list[RegistryEntry]:
        """Seed 2.5's ``find_nodes``, answered from the cache (see ``Registry.find_nodes``)."""
        wanted = parse_kind(kind)
        test = NodeFilter(None if wanted is None else str(wanted), as_selector(selector))
        with self._lock:
            found = builtins.list(self._items.values())
        # Stored entries are replaced, never changed, so matching runs outside the lock.
        if only_verified:
            found = [_Stored(s.entry, strict_labels(s.labels)) for s in found if trusted(s.labels)]
        if not test.empty():
            found = test.select(found, _KIND, _LABELS)
        if only_healthy:
            found = [s for s in found if s.entry.schedulable]
        found.sort(key=lambda s: s.entry.name)
        return [_copy(s.entry) for s in found]

    def health_of(self, node_id: str) -> HealthState | None:
        """The health the cache holds for the node, None when it holds no such node."""
        with self._lock:
            stored = self._items.get(node_id)
        return None if stored is None else stored.entry.health_state


def _differences(
    old: dict[str, _Stored], new: dict[str, _Stored], resource_version: int
) -> list[WatchEvent]:
    """What turned ``old`` into ``new``, by name: ADDED, MODIFIED/HEALTH_CHANGED, DELETED."""
    events: list[WatchEvent] = []
    for node_id, stored in new.items():
        entry = stored.entry
        before = old.get(node_id)
        if before is None:
            events.append(WatchEvent(EventType.ADDED, entry, entry.resource_version))
            continue
        prev = before.entry
        if (
            prev.resource_version == entry.resource_version
            and prev.health_state is entry.health_state
            and prev.passport == entry.passport
        ):
            continue
        kind = (
            EventType.MODIFIED
            if prev.health_state is entry.health_state
            else EventType.HEALTH_CHANGED
        )
        events.append(WatchEvent(kind, entry, entry.resource_version, prev.health_state))
    for node_id, before in old.items():
        if node_id not in new:
            prev = before.entry
            events.append(WatchEvent(EventType.DELETED, prev, resource_version, prev.health_state))
    events.sort(key=lambda e: e.entry.name)
    return events


# -- what both informers share ---------------------------------------------------------------


class _HistoryRestarted(RegistryError):
    """A watch event older than the cache: the stream is not continuing the cache's history."""


def _handlers(on_event: EventHandler | Iterable[EventHandler] | None) -> list[EventHandler]:
    if on_event is None:
        return []
    if callable(on_event):
        return [on_event]
    return list(on_event)


class _InformerState:
    """The informer's bookkeeping around its cache; no I/O, so both loops share it."""

    def __init__(
        self,
        on_event: EventHandler | Iterable[EventHandler] | None,
        clock: Clock | None,
        backoff: float,
        rng: random.Random | None,
    ) -> None:
        if backoff < 0:
            raise ConfigError("backoff must not be negative")
        self._rng = rng or random.Random()
        self._cache = NodeCache()
        self._handlers = _handlers(on_event)
        self._clock: Clock = clock or SystemClock()
        self._backoff = backoff
        self._connected = False
        self._stale_since: datetime | None = None
        self._last_synced_at: datetime | None = None
        self._lists = 0

    @property
    def cache(self) -> NodeCache:
        """The cache itself: ``get(name)``, ``list()``, ``resource_version``."""
        return self._cache

    @property
    def connected(self) -> bool:
        """Whether the cache is following the registry: from a successful list until the watch
        after it breaks (or the informer stops)."""
        return self._connected

    @property
    def staleness(self) -> float:
        """Seconds since the cache last knew it was current: 0 while connected, inf if never."""
        if self._connected:
            return 0.0
        since = self._stale_since
        if since is None:
            return math.inf
        return max((self._clock.now() - since).total_seconds(), 0.0)

    @property
    def last_synced_at(self) -> datetime | None:
        """When the last successful (re)list completed; None before the first."""
        return self._last_synced_at

    @property
    def relists(self) -> int:
        """Successful lists after the first: after a 410, a reconnect or a restarted history."""
        return max(self._lists - 1, 0)

    def _listed(self, node_list: NodeList) -> None:
        if self._lists and node_list.resource_version < self._cache.resource_version:
            log.warning(
                "the registry lists version %d, older than the cache's %d: its history "
                "restarted (a new in-memory server?); the cache follows the new one",
                node_list.resource_version,
                self._cache.resource_version,
            )
        events = self._cache.replace(node_list.items, node_list.resource_version)
        self._lists += 1
        self._last_synced_at = self._clock.now()
        if not self._connected:
            log.info(
                "informer synced: %d nodes at resource version %d",
                len(node_list.items),
                node_list.resource_version,
            )
        self._connected = True
        self._deliver(events)

    def _received(self, event: WatchEvent) -> None:
        # The API has no HEALTH_CHANGED: a transition is a MODIFIED whose healthState
        # changed, which only a holder of the previous state can tell; the cache is one.
        event = classify(event, self._cache.health_of(event.entry.node_id))
        if not self._cache.apply(event):
            raise _HistoryRestarted(
                f"watch event at version {event.resource_version}, not after the cache's "
                f"{self._cache.resource_version}"
            )
        self._deliver([event])

    def _deliver(self, events: list[WatchEvent]) -> None:
        for event in events:
            for handler in self._handlers:
                try:
                    handler(event)
                except Exception:
                    # A consumer's bug must not stop the cache from following the registry.
                    log.exception("an informer on_event handler failed on %s", event.type)

    def _lost(self, why: object, *, stopping: bool = False) -> None:
        """The cache stops being current now (unless it already had)."""
        if self._connected:
            self._stale_since = self._clock.now()
            self._connected = False
            if not stopping:
                log.warning("informer disconnected (%s); answering from the last state", why)

    def _delay(self, failures: int) -> float:
        return jittered(failures, base=self._backoff, cap=MAX_DELAY, rng=self._rng)

    def _held(self, began: datetime) -> bool:
        return (self._clock.now() - began).total_seconds() >= _STEADY_SECONDS


def _one_source(endpoints: object, client: object) -> None:
    if client is not None and endpoints is not None:
        raise ConfigError("give an informer endpoints or a client, not both")


# -- the sync informer ---------------------------------------------------------------------


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        # socket.socket's own shutdown: SSLSocket.shutdown would drop the TLS state under
        # the reading thread instead of just ending the stream it is blocked on.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _StopSwitch(httpx.BaseTransport):
    """A transport whose last response's socket ``interrupt()`` shuts down, waking the reader.

    Uses the ``network_stream`` response extension httpcore documents for this kind of use.
    After ``interrupt()`` it refuses new requests, so a watch opening concurrently ends too.
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._stopped = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._stopped:
            raise httpx.ConnectError("the informer is stopping", request=request)
        response = self._inner.handle_request(request)
        stream: Any = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = sock if isinstance(sock, socket.socket) else None
            stopped = self._stopped
        if stopped:
            _shut(self._socket)
        return response

    def interrupt(self) -> None:
        with self._lock:
            self._stopped = True
            sock = self._socket
        _shut(sock)

    def close(self) -> None:
        self._inner.close()


class Informer(_InformerState):
    """A cache of the registry that a daemon thread keeps current; queries never leave it.

    ``with Informer("http://registry:8080") as informer: informer.wait_synced(10)``, then
    ``informer.find_nodes(kind="agent", selector=..., only_healthy=True)``. Handlers run in
    the informer's thread, after the cache has applied their event; keep them quick.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        verify: bool | str | ssl.SSLContext = True,
        backoff: float = 0.2,
        on_event: EventHandler | Iterable[EventHandler] | None = None,
        client: ListWatch | None = None,  # None: its own client; a fake for tests
        clock: Clock | None = None,  # None: the system clock; staleness is measured with it
        sleep: Callable[[float], object] | None = None,  # None: a wait that stop() ends
        rng: random.Random | None = None,  # None: a fresh one; seeded in tests
    ) -> None:
        super().__init__(on_event, clock, backoff, rng)
        _one_source(endpoints, client)
        self._switch: _StopSwitch | None = None
        self._own: RegistryClient | None = None
        if client is None:
            self._switch = _StopSwitch(httpx.HTTPTransport(verify=tls_verify(verify)))
            # retries=0: every broken watch must reach the informer, which re-lists.
            self._own = RegistryClient(
                endpoints, token=token, timeout=timeout, retries=0, transport=self._switch
            )
            client = self._own
        self._client: ListWatch = client
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        if self._own is not None:
            return f"Informer({list(self._own.settings.endpoints)!r})"
        return f"Informer(client={self._client!r})"

    def start(self) -> None:
        """Start following the registry in a daemon thread; an informer runs once."""
        if self._stopping.is_set():
            raise RuntimeError("an informer cannot be started again after stop()")
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name="node-registry-informer", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread (waiting up to ``timeout`` s for it) and close the informer's client.

        The cache keeps its last state and can still be read. Only the informer's own client
        can be interrupted mid-read; with an injected one the thread ends at its next event.
        """
        self._stopping.set()
        if self._switch is not None:
            self._switch.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
        self._lost("stopped", stopping=True)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first successful list; whether it happened within ``timeout`` s."""
        return self._synced.wait(timeout)

    def find_nodes(
        self,
        kind: str | NodeType | None = None,
        selector: SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> list[RegistryEntry]:
        """``RegistryClient.find_nodes``, answered from the cache (even while disconnected)."""
        return self._cache.find_nodes(kind, selector, only_healthy, only_verified)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._own is not None:
                self._own.close()

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            began = self._clock.now()
            delivered = False
            try:
                node_list = self._client.list_nodes()
                if self._stopping.is_set():
                    return
                self._listed(node_list)
                self._synced.set()
                events = self._client.watch(self._cache.resource_version)
                try:
                    for event in events:
                        if self._stopping.is_set():
                            return
                        self._received(event)
                        delivered = True
                finally:
                    # Close the stream now, not when the generator is collected.
                    closer = getattr(events, "close", None)
                    if closer is not None:
                        closer()
                problem: object = "the watch ended"
            except (RevisionCompactedError, _HistoryRestarted) as exc:
                if self._stopping.is_set():
                    return
                self._lost(exc)
                continue  # list again at once
            except RegistryError as exc:
                problem = exc
            except Exception as exc:
                log.exception("informer: unexpected failure; retrying")
                problem = exc
            if self._stopping.is_set():
                return
            if delivered or self._held(began):
                failures = 0
            failures += 1
            self._lost(problem)
            delay = self._delay(failures)
            log.debug("informer: retrying in %.1fs (%s)", delay, problem)
            self._sleep(delay)


# -- the async informer --------------------------------------------------------------------


class AsyncInformer(_InformerState):
    """``Informer`` for asyncio: a task of the running loop keeps the cache current.

    ``async with AsyncInformer(url) as informer: await informer.wait_synced(10)``; handlers
    run on the loop and must not block it.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        verify: bool | str | ssl.SSLContext = True,
        backoff: float = 0.2,
        on_event: EventHandler | Iterable[EventHandler] | None = None,
        client: AsyncListWatch | None = None,  # None: its own client; a fake for tests
        clock: Clock | None = None,  # None: the system clock; staleness is measured with it
        sleep: Callable[[float], Awaitable[object]] | None = None,  # None: asyncio.sleep
        rng: random.Random | None = None,  # None: a fresh one; seeded in tests
    ) -> None:
        super().__init__(on_event, clock, backoff, rng)
        _one_source(endpoints, client)
        self._own: AsyncRegistryClient | None = None
        if client is None:
            # retries=0: every broken watch must reach the informer, which re-lists.
            self._own = AsyncRegistryClient(
                endpoints,
                token=token,
                timeout=timeout,
                retries=0,
                transport=httpx.AsyncHTTPTransport(verify=tls_verify(verify)),
            )
            client = self._own
        self._client: AsyncListWatch = client
        self._sleep = sleep or asyncio.sleep
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def __repr__(self) -> str:
        if self._own is not None:
            return f"AsyncInformer({list(self._own.settings.endpoints)!r})"
        return f"AsyncInformer(client={self._client!r})"

    async def start(self) -> None:
        """Start following the registry in a task of the running loop; an informer runs once."""
        if self._stopped:
            raise RuntimeError("an informer cannot be started again after stop()")
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="node-registry-informer")

    async def stop(self) -> None:
        """Cancel the task and close the informer's client; the cache can still be read."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own is not None:
            await self._own.aclose()
        self._lost("stopped", stopping=True)

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first successful list; whether it happened within ``timeout`` s."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def find_nodes(
        self,
        kind: str | NodeType | None = None,
        selector: SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> list[RegistryEntry]:
        """``AsyncRegistryClient.find_nodes``, answered from the cache without I/O."""
        return self._cache.find_nodes(kind, selector, only_healthy, only_verified)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _loop(self) -> None:
        failures = 0
        while True:
            began = self._clock.now()
            delivered = False
            try:
                self._listed(await self._client.list_nodes())
                self._synced.set()
                events = self._client.watch(self._cache.resource_version)
                try:
                    async for event in events:
                        self._received(event)
                        delivered = True
                finally:
                    # An abandoned async generator would close its stream only when collected.
                    closer = getattr(events, "aclose", None)
                    if closer is not None:
                        await closer()
                problem: object = "the watch ended"
            except (RevisionCompactedError, _HistoryRestarted) as exc:
                self._lost(exc)
                continue  # list again at once
            except RegistryError as exc:
                problem = exc
            except Exception as exc:
                log.exception("informer: unexpected failure; retrying")
                problem = exc
            if delivered or self._held(began):
                failures = 0
            failures += 1
            self._lost(problem)
            delay = self._delay(failures)
            log.debug("informer: retrying in %.1fs (%s)", delay, problem)
            await self._sleep(delay)
