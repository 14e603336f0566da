"""The connection to etcd: one client per member, failover between them, errors translated.

Members: one client per endpoint, one in use (``_Members``). Each attempt of a call has
``attempt_timeout`` seconds on the member in use; a member that fails it (no answer, no
Raft leader, unavailable) is left for the next and its channel closed, so its watch and
keepalive streams end at once; the call is tried again there (``_failing_over``), within
``timeout`` in all. A watch that ends because its member was left behind ends without an
error: watch again from the last revision seen, on the new member.

Errors: every aetcd/grpc failure is translated in ``_translated`` (one place): unreachable,
timed-out or refusing etcd → ``StoreUnavailableError`` naming the endpoint and what etcd
said; compaction → ``RevisionCompactedError``; a fenced write whose seat is gone →
``NotLeadingError``. After an etcd restart a running watch raises
``StoreUnavailableError``: watch again from the last revision seen (aetcd does not resume
by itself).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
from collections import deque
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aetcd  # type: ignore[import-untyped]  # aetcd 1.0.0 ships no py.typed marker
import aetcd.rpc  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

from node_registry.clock import Clock, steady
from node_registry.errors import (
    RevisionCompactedError,
    StoreUnavailableError,
)
from node_registry.store.base import (
    DEFAULT_BINDING_TTL,
    SkippedRecords,
)
from node_registry.store.etcd.keys import _Keys, _prefix_end

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="EtcdConnection")

DEFAULT_PREFIX = "/ai_team/registry"
DEFAULT_TIMEOUT = 5.0
DEFAULT_LEASE_TTL = 90
PAGE_SIZE = 1_000
#: Nodes per renewal digest key: ~60 bytes each, so a put stays near 0.5 MiB.
DIGEST_CHUNK = 8_000
_MAX_MESSAGE = 64 * 1024 * 1024
_RETRIES = 5


#: Per attempt on one member of several: a frozen member costs a call this, then the
#: call goes to the next member (the whole call is still bounded by ``timeout``).
DEFAULT_ATTEMPT_TIMEOUT = 1.0
#: Every member failed once in a row (an election, most likely): wait this before the next.
_ROUND_PAUSE = 0.1


class _MemberFailed(StoreUnavailableError):
    """The member in use did not answer (or has no Raft leader): the next one may."""


#: gRPC codes that say the member failed, not the request: try the next member.
_MEMBER_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
_MEMBER_ERRORS = (
    aetcd.ConnectionFailedError,
    aetcd.ConnectionTimeoutError,
    aetcd.WatchTimeoutError,
    TimeoutError,
    OSError,
)


@contextmanager
def _translated(endpoint: str, action: str) -> Iterator[None]:
    """aetcd's and grpc's errors → ours; the one place a library error is allowed in."""
    try:
        yield
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # this task is being cancelled
        # grpc's way to end a call on a channel being closed: the member was left behind.
        raise _MemberFailed(f"etcd at {endpoint} was left for another member ({action})") from None
    except aetcd.RevisionCompactedError as error:
        raise RevisionCompactedError(
            f"resource version is too old: etcd history was compacted up to revision "
            f"{error.compacted_revision}; list again and watch from the list's version"
        ) from error
    except aetcd.rpc.AioRpcError as error:
        raise _rpc_error(endpoint, action, error) from error
    except (aetcd.ClientError, TimeoutError, OSError) as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, aetcd.rpc.AioRpcError):  # aetcd wraps some; say what etcd said
            raise _rpc_error(endpoint, action, cause) from error
        kind = _MemberFailed if isinstance(error, _MEMBER_ERRORS) else StoreUnavailableError
        raise kind(
            f"etcd at {endpoint} did not answer ({action}): {error or type(error).__name__}"
        ) from error


_REFUSALS = {"PERMISSION_DENIED", "UNAUTHENTICATED"}


def _rpc_error(endpoint: str, action: str, error: Any) -> StoreUnavailableError:
    code, details = error.code().name, error.details()
    if code in _REFUSALS or "authentication failed" in details or "permission denied" in details:
        return StoreUnavailableError(
            f"etcd at {endpoint} refused the request ({action}): {details}; check the "
            "registry's etcd credentials (store.etcd_username/etcd_password, client "
            "certificate) and the role's permissions on the key prefix"
        )
    kind = _MemberFailed if code in _MEMBER_CODES else StoreUnavailableError
    return kind(f"etcd at {endpoint} did not answer ({action}): {code}: {details}")


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


@dataclass(frozen=True, slots=True)
class EtcdTLS:
    """TLS to etcd: the CA that signed etcd's certificate, and a client pair for mTLS."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client on one etcd member, over TLS when asked.

    ``connect`` is aetcd's own, with only the channel creation changed (aetcd 1.0.0 dials
    insecure ``host:port`` only).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        tls: EtcdTLS | None,
        timeout: float,
        options: Mapping[str, Any],
        username: str | None,
        password: str | None,
    ) -> None:
        super().__init__(
            timeout=timeout, options=dict(options), username=username, password=password
        )
        self.endpoint = endpoint
        self._tls = tls

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]  # set by aetcd, untyped
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            options = list(self._options.items())
            if self._tls is None:
                self.channel = grpc.aio.insecure_channel(self.endpoint, options=options)
            else:
                host = self.endpoint.rsplit(":", 1)[0].strip("[]")
                options.append(("grpc.ssl_target_name_override", host))
                self.channel = grpc.aio.secure_channel(
                    self.endpoint, self._tls.credentials(), options=options
                )
            if self._username is not None:
                self.auth_stub = aetcd.rpc.AuthStub(self.channel)
                request = aetcd.rpc.AuthenticateRequest(
                    name=self._username, password=self._password
                )
                reply = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.metadata = (("token", reply.token),)
            self.kvstub = aetcd.rpc.KVStub(self.channel)
            self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
            self.leasestub = aetcd.rpc.LeaseStub(self.channel)
            self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(
                aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


class _Members:
    """The etcd members of the cluster: one client (one channel) each, one of them in use.

    Every call and every stream goes to the member in use. A member that fails a call
    (no answer within the attempt deadline, unavailable, no Raft leader) is left for the
    next one, and its client is closed: every watch and keepalive stream on it ends at
    once and is opened again on the next member, so no stream stays stuck on a frozen
    member (SIGSTOP, a partition: TCP stays up, nothing answers) until gRPC's keepalive
    notices it 15 s later. gRPC's round-robin balancing did not do this: it keeps a
    frozen member's connection READY and sends it every third call.
    """

    def __init__(self, endpoints: Sequence[str], make: Callable[[str], _Client]) -> None:
        self._make = make
        self._clients = [make(endpoint) for endpoint in endpoints]
        self._current = 0
        self._closing: set[asyncio.Task[None]] = set()
        #: Times a member was left for the next one (the metrics and tests read it).
        self.failovers = 0

    @property
    def client(self) -> _Client:
        return self._clients[self._current]

    @property
    def size(self) -> int:
        return len(self._clients)

    def fail_over(self, failed: _Client, why: BaseException) -> None:
        """Leave ``failed`` for the next member, unless another call already did."""
        if failed is not self.client or self.size == 1:
            return  # one member only: its channel reconnects by itself
        index = self._current
        self._clients[index] = self._make(failed.endpoint)  # fresh, connects when used again
        self._current = (index + 1) % self.size
        self.failovers += 1
        log.warning(
            "etcd member %s failed (%s); using %s",
            failed.endpoint,
            why,
            self.client.endpoint,
        )
        task = asyncio.get_running_loop().create_task(_close_quietly(failed))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for client in self._clients:
            await _close_quietly(client)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _close_quietly(client: _Client) -> None:
    with suppress(Exception):
        await client.close()


class _KeepAlives:
    """Every lease renewal of this process on one long-lived LeaseKeepAlive stream.

    aetcd's ``refresh_lease`` opens a stream per call (~1.4k renewals/s here); one stream
    carries 7-8k/s. Replies come back per lease in request order, so each lease id has a
    queue of waiting futures. A broken stream fails everything waiting on it and is opened
    again by the next renewal.
    """

    def __init__(self, members: _Members, timeout: float) -> None:
        self._members = members
        self._timeout = timeout
        self._call: Any = None
        self._call_client: _Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        # Per stream (a stream left behind on a failed member fails only its own), then
        # per lease id.
        self._waiting: dict[Any, dict[int, deque[asyncio.Future[int]]]] = {}

    async def refresh(self, lease_id: int) -> int:
        """The lease's remaining TTL after the renewal; 0 when the lease no longer exists."""
        call = await self._open()
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[call].setdefault(lease_id, deque()).append(waiter)
        try:
            async with asyncio.timeout(self._timeout):
                async with self._write_lock:
                    try:
                        await call.write(aetcd.rpc.LeaseKeepAliveRequest(ID=lease_id))
                    except asyncio.InvalidStateError:
                        # grpc's word for a stream that ended before its reader noticed
                        # (etcd went away): an unreachable etcd, not a bug, and the next
                        # renewal opens a new stream.
                        if self._call is call:
                            self._call = None
                        raise ConnectionError("the lease keepalive stream ended") from None
                return await waiter
        finally:
            # Its reply (if one comes) still pops it, keeping the queue in request order.
            waiter.cancel()

    async def _open(self) -> Any:
        client = self._members.client
        if self._call is not None and self._call_client is not client:
            self._call.cancel()  # on a member left behind: its reader fails what waits
            self._call = None
        if self._call is None:
            await client.connect()
            self._call = client.leasestub.LeaseKeepAlive(metadata=client.metadata)
            self._call_client = client
            self._waiting[self._call] = {}
            self._reader = asyncio.create_task(self._read(self._call))
        return self._call

    async def _read(self, call: Any) -> None:
        error: BaseException = ConnectionError("the lease keepalive stream ended")
        by_lease = self._waiting[call]
        try:
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    break
                waiting = by_lease.get(int(reply.ID))
                if waiting:
                    waiter = waiting.popleft()
                    if not waiting:
                        del by_lease[int(reply.ID)]
                    if not waiter.done():
                        waiter.set_result(int(reply.TTL))
        except (grpc.aio.AioRpcError, OSError) as failure:
            error = failure
        finally:
            if self._call is call:
                self._call = None
            self._waiting.pop(call, None)
            for waiting in by_lease.values():
                for waiter in waiting:
                    if not waiter.done():
                        waiter.set_exception(error)

    async def close(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        if self._reader is not None:
            with suppress(BaseException):
                await self._reader


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
