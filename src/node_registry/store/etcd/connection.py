"""The connection to etcd: calls that fail over between its members, within one timeout.

Each attempt of a call has ``attempt_timeout`` seconds on the member in use
(``members``); a member that fails it (no answer, no Raft leader, unavailable) is left for
the next and its channel closed, so its watch and keepalive streams end at once; the call
is tried again there (``_failing_over``), within ``timeout`` in all. A watch that ends
because its member was left behind ends without an error: watch again from the last
revision seen, on the new member.

Errors are translated to ours in ``translate`` (one place); a fenced write whose seat is
gone is ``NotLeadingError`` (``seat``). After an etcd restart a running watch raises
``StoreUnavailableError``: watch again from the last revision seen (aetcd does not resume
by itself).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Sequence,
)
from contextlib import suppress
from typing import Any, Concatenate, ParamSpec, TypeVar

import aetcd.rpc  # type: ignore[import-untyped]  # aetcd 1.0.0 ships no py.typed marker

from node_registry.clock import Clock, steady
from node_registry.errors import StoreUnavailableError
from node_registry.store.base import (
    DEFAULT_BINDING_TTL,
    SkippedRecords,
)
from node_registry.store.etcd.keepalives import _KeepAlives
from node_registry.store.etcd.keys import _Keys, _prefix_end
from node_registry.store.etcd.members import EtcdTLS, _Client, _Members
from node_registry.store.etcd.translate import _MemberFailed, _translated

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="EtcdConnection")

DEFAULT_PREFIX = "/ai_team/registry"
DEFAULT_TIMEOUT = 5.0
DEFAULT_LEASE_TTL = 90
_MAX_MESSAGE = 64 * 1024 * 1024


#: Per attempt on one member of several: a frozen member costs a call this, then the
#: call goes to the next member (the whole call is still bounded by ``timeout``).
DEFAULT_ATTEMPT_TIMEOUT = 1.0
#: Every member failed once in a row (an election, most likely): wait this before the next.
_ROUND_PAUSE = 0.1


#: Set inside a call that fails over already: the calls it makes do not retry on their own.
_FAILING_OVER: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "etcd_failing_over", default=False
)


def _failing_over(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """The call, again on the next member when the member in use fails it.

    Retrying writes is safe here: every write is a transaction comparing revisions (a
    create compares absence), a lease grant or keepalive, or a put of this replica's own
    state. A write that did reach etcd before its member failed is refused on the retry
    as a conflict, which the registry's compare-and-swap loops already handle.
    """

    @functools.wraps(method)
    async def call(store: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if _FAILING_OVER.get():
            return await method(store, *args, **kwargs)
        token = _FAILING_OVER.set(True)
        try:
            return await store._retrying(functools.partial(method, store, *args, **kwargs))
        finally:
            _FAILING_OVER.reset(token)

    return call


class EtcdConnection:
    """etcd's members, the calls that fail over between them, and one keepalive stream:
    what ``EtcdStore``'s records and coordination are written on."""

    def __init__(
        self,
        endpoints: str | Sequence[str] = "127.0.0.1:2379",
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        lease_ttl: int = DEFAULT_LEASE_TTL,
        binding_ttl: float = DEFAULT_BINDING_TTL,
        tls: EtcdTLS | None = None,
        username: str | None = None,
        password: str | None = None,
        clock: Clock | None = None,  # None for the system clock; a FakeClock in tests
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    ) -> None:
        listed = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self._endpoint = ",".join(listed)
        self._prefix = prefix.rstrip("/")
        self._keys = _Keys(self._prefix)
        self._timeout = timeout
        # One member: nowhere to fail over to, so a call gets the whole timeout.
        self._attempt_timeout = timeout if len(listed) == 1 else min(attempt_timeout, timeout)
        self._lease_ttl = lease_ttl
        self._binding_ttl = max(1, math.ceil(binding_ttl))
        self._clock = steady(clock)
        self._leases: dict[str, int] = {}
        channel_options = {
            "grpc.max_receive_message_length": _MAX_MESSAGE,
            # Reconnect promptly after an etcd restart (grpc's default backoff grows to
            # two minutes, during which every call fails fast).
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.min_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 1_000,
            # Notice a silently dead connection (no RST: a partition, a frozen member)
            # even on a member no call is waiting on. etcd allows pings every 5 s by
            # default (--grpc-keepalive-min-time).
            "grpc.keepalive_time_ms": 10_000,
            "grpc.keepalive_timeout_ms": 5_000,
        }

        def member(endpoint: str) -> _Client:
            return _Client(
                endpoint,
                tls=tls,
                username=username,
                password=password,
                timeout=self._attempt_timeout,
                options=channel_options,
            )

        self._members = _Members(listed, member)
        self._keepalives = _KeepAlives(self._members, self._attempt_timeout)
        #: Node records skipped as unreadable (a record is never raised to readers).
        self.skipped = SkippedRecords()

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def lease_ttl(self) -> int:
        return self._lease_ttl

    @property
    def failovers(self) -> int:
        """How many times a failed member was left for the next one."""
        return self._members.failovers

    @property
    def member(self) -> str:
        """The endpoint of the member in use."""
        return self._members.client.endpoint

    @property
    def _client(self) -> _Client:
        return self._members.client

    @property
    def _member(self) -> str:
        return self._members.client.endpoint

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, on the next member each time the member in use fails it: up to
        twice round the members, within ``timeout`` once each was tried."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        size = self._members.size
        tries = 0
        while True:
            client = self._members.client
            try:
                return await attempt()
            except _MemberFailed as error:
                tries += 1
                self._members.fail_over(client, error)
                out_of_time = tries >= size and loop.time() >= deadline
                if size == 1 or tries >= 2 * size or out_of_time:
                    if size == 1:
                        raise
                    raise StoreUnavailableError(
                        f"no etcd member of {self._endpoint} answered ({tries} attempts); "
                        f"the last: {error}"
                    ) from error
                if tries % size == 0:
                    await asyncio.sleep(_ROUND_PAUSE)

    async def _stream(
        self,
        action: str,
        open_stream: Callable[[_Client], Awaitable[Any]],
        opened: Callable[[], None] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """The events of a watch opened on the member in use (failing over to open it);
        ``opened`` runs once etcd has created the watch.

        It ends, without an error, when the store leaves that member for another (the
        caller watches again from its last revision, on the new member); it raises
        ``StoreUnavailableError`` when it breaks otherwise.
        """

        async def opening() -> tuple[Any, _Client]:
            client = self._members.client
            with _translated(client.endpoint, action):
                return await open_stream(client), client

        stream, client = await self._retrying(opening)
        try:
            if opened is not None:
                opened()
            try:
                with _translated(client.endpoint, action):
                    async for event in stream:
                        yield event
            except _MemberFailed as error:
                self._members.fail_over(client, error)
                if client is self._members.client:
                    raise
                return
            if client is self._members.client:
                raise StoreUnavailableError(f"the watch on etcd at {client.endpoint} ended")
        finally:
            with suppress(Exception):
                await stream.cancel()

    @_failing_over
    async def revision(self) -> int:
        with _translated(self._member, "revision"):
            response = await self._range(self._keys.nodes, count_only=True)
        return int(response.header.revision)

    @_failing_over
    async def ping(self) -> None:
        await self.revision()

    async def close(self) -> None:
        await self._keepalives.close()
        await self._members.close()

    @_failing_over
    async def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (etcd keeps it all until told); tests and ops."""
        with _translated(self._member, f"compact {revision}"):
            await self._client.compact(revision, physical=True)

    async def _range(
        self,
        key: bytes,
        end: bytes | None = None,
        *,
        limit: int = 0,
        revision: int = 0,
        count_only: bool = False,
    ) -> Any:
        """A raw Range: aetcd's get_range cannot page (no limit, no revision)."""
        await self._client.connect()
        request = aetcd.rpc.RangeRequest(
            key=key,
            range_end=end if end is not None else _prefix_end(key),
            limit=limit,
            revision=revision,
            count_only=count_only,
        )
        return await self._client.kvstub.Range(
            request, timeout=self._attempt_timeout, metadata=self._client.metadata
        )

    async def _txn(
        self, *, compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any]
    ) -> tuple[bool, int, Sequence[Any]]:
        """A raw Txn: (succeeded, the revision it ran at, each range result's kvs).

        aetcd's ``transaction`` drops the response header, which holds the revision.
        """
        await self._client.connect()
        request = aetcd.rpc.TxnRequest(
            compare=[c.build_message() for c in compare],
            success=self._client._ops_to_requests(success),
            failure=self._client._ops_to_requests(failure),
        )
        response = await self._client.kvstub.Txn(
            request, timeout=self._attempt_timeout, metadata=self._client.metadata
        )
        ranges = [
            list(r.response_range.kvs) for r in response.responses if r.HasField("response_range")
        ]
        return bool(response.succeeded), int(response.header.revision), ranges

    async def _keepalive(self, lease_id: int) -> bool:
        return await self._keepalives.refresh(lease_id) > 0

    async def _revoke(self, lease_id: int) -> None:
        # Best effort: an orphan lease holds no keys and runs out after lease_ttl.
        with suppress(Exception):
            await self._client.revoke_lease(lease_id)
