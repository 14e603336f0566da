"""The etcd store (seed 2.2.2, option A): records as JSON in KV, heartbeats as etcd leases.

Key layout under ``prefix`` (default ``/ai_team/registry``), readable with
``etcdctl get --prefix /ai_team/registry``:

- ``{prefix}/nodes/{node_id}``  → ``NodeRecord.to_dict()`` as JSON; its ``mod_revision`` is the
  node's resource version.
- ``{prefix}/names/{name}``     → the node_id holding the name, written in the same
  transaction as the node, so name uniqueness is enforced by etcd and not by a replica.
- ``{prefix}/leases/{node_id}`` → a small JSON lease record, attached to an etcd lease of
  ``lease_ttl`` seconds; the key's ``lease`` field is how any replica finds the lease.
- ``{prefix}/bindings/{name}``  → ``Binding.to_dict()``: the name a node deregistered itself
  from, written in the deletion's transaction and removed in the transaction that
  registers the name again; on an etcd lease of ``binding_ttl`` seconds, so names nobody
  comes back for do not pile up.
- ``{prefix}/objects/{kind}/{name}`` → registry objects other than nodes (the registered
  ``NodeType`` s) as JSON, on no lease: they outlive every replica.

Every read-modify-write is one transaction comparing ``mod_revision`` (``create_revision ==
0`` for a create); the failure branch reads the keys back so the error says what lost.

What replicas share besides the nodes (see ``store.replica``): ``renewals/{replica}``
(digests of renewal times, on the replica's lease), ``controller`` (the lifecycle
controller's seat, on its holder's lease) and ``state/{key}`` (what the controller
publishes, on its lease).

Heartbeats. ``renew`` is a lease keepalive, not a Raft write: it adds no revision, no MVCC
history to compact and no watch traffic. Every keepalive of the process goes over one
long-lived LeaseKeepAlive stream (aetcd would open a stream per call); etcd answers about
2.4k/s on the 2-core machine measured. ``renewed_at`` here is derived from the lease
(LeaseTimeToLive: ``granted_ttl - remaining``; whole seconds, and reset to the full TTL on
an etcd leader change), which is what the store contract asks; the registry's replicas do
not use it for health: ``EtcdReplica`` records renewal times itself and shares them as
digests, so no verdict depends on etcd's remaining TTLs.

A renewal of an expired lease grants a new one and writes the lease key (a Raft write, rare).
Leases are cached per replica (node_id → lease id); a keepalive that finds the lease gone
falls back to reading the lease key, so a lease re-granted by another replica is found.

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
import json
import logging
import math
import re
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
from contextlib import aclosing, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aetcd  # type: ignore[import-untyped]  # aetcd 1.0.0 ships no py.typed marker
import aetcd.rpc  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

from node_registry.clock import Clock, steady
from node_registry.errors import (
    ConflictError,
    NotFoundError,
    NotLeadingError,
    RegistryError,
    RevisionCompactedError,
    RevisionConflictError,
    StoreUnavailableError,
)
from node_registry.store.base import (
    DEFAULT_BINDING_TTL,
    Binding,
    ChangeType,
    SkippedRecords,
    StoreEvent,
    Versioned,
)
from node_registry.store.records import NodeRecord

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

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
#: A JSON escape of a UTF-16 surrogate: a pair spells a character, a lone one cannot be sent.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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
    method: Callable[Concatenate[EtcdStore, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[EtcdStore, P], Coroutine[Any, Any, T]]:
    """The call, again on the next member when the member in use fails it.

    Retrying writes is safe here: every write is a transaction comparing revisions (a
    create compares absence), a lease grant or keepalive, or a put of this replica's own
    state. A write that did reach etcd before its member failed is refused on the retry
    as a conflict, which the registry's compare-and-swap loops already handle.
    """

    @functools.wraps(method)
    async def call(store: EtcdStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if _FAILING_OVER.get():
            return await method(store, *args, **kwargs)
        token = _FAILING_OVER.set(True)
        try:
            return await store._retrying(functools.partial(method, store, *args, **kwargs))
        finally:
            _FAILING_OVER.reset(token)

    return call


@dataclass(frozen=True, slots=True)
class _Keys:
    prefix: str

    @property
    def nodes(self) -> bytes:
        return f"{self.prefix}/nodes/".encode()

    def node(self, node_id: str) -> bytes:
        return f"{self.prefix}/nodes/{node_id}".encode()

    def name(self, name: str) -> bytes:
        return f"{self.prefix}/names/{name}".encode()

    def lease(self, node_id: str) -> bytes:
        return f"{self.prefix}/leases/{node_id}".encode()

    def binding(self, name: str) -> bytes:
        return f"{self.prefix}/bindings/{name}".encode()

    @property
    def bindings(self) -> bytes:
        return f"{self.prefix}/bindings/".encode()

    @property
    def renewals(self) -> bytes:
        return f"{self.prefix}/renewals/".encode()

    def renewal(self, replica: str) -> bytes:
        return f"{self.prefix}/renewals/{replica}".encode()

    @property
    def controller(self) -> bytes:
        return f"{self.prefix}/controller".encode()

    @property
    def states(self) -> bytes:
        return f"{self.prefix}/state/".encode()

    def state(self, key: str) -> bytes:
        return f"{self.prefix}/state/{key}".encode()

    def objects(self, kind: str) -> bytes:
        return f"{self.prefix}/objects/{kind}/".encode()

    def object(self, kind: str, name: str) -> bytes:
        return f"{self.prefix}/objects/{kind}/{name}".encode()


def _prefix_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    end[-1] += 1  # prefixes here end in "/", never in 0xff
    return bytes(end)


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
                    await call.write(aetcd.rpc.LeaseKeepAliveRequest(ID=lease_id))
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


class EtcdStore:
    """``AsyncStore`` on etcd v3 through aetcd; see the module docstring for the layout."""

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
        self, action: str, open_stream: Callable[[_Client], Awaitable[Any]]
    ) -> AsyncGenerator[Any, None]:
        """The events of a watch opened on the member in use (failing over to open it).

        It ends, without an error, when the store leaves that member for another (the
        caller watches again from its last revision, on the new member); it raises
        ``StoreUnavailableError`` when it breaks otherwise.
        """

        async def opened() -> tuple[Any, _Client]:
            client = self._members.client
            with _translated(client.endpoint, action):
                return await open_stream(client), client

        stream, client = await self._retrying(opened)
        try:
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

    def __repr__(self) -> str:
        return (
            f"EtcdStore({self._endpoint!r}, prefix={self._prefix!r}, "
            f"timeout={self._timeout}, lease_ttl={self._lease_ttl})"
        )

    # -- reads ---------------------------------------------------------------------------

    @_failing_over
    async def revision(self) -> int:
        with _translated(self._member, "revision"):
            response = await self._range(self._keys.nodes, count_only=True)
        return int(response.header.revision)

    @_failing_over
    async def get(self, node_id: str) -> Versioned | None:
        """The node's record; None when there is none, or it cannot be read (then skipped)."""
        key = self._keys.node(node_id)
        with _translated(self._member, f"get {node_id}"):
            kv = await self._client.get(key)
        if kv is None:
            self.skipped.readable(key.decode())
            return None
        record = self._read(kv)
        return None if record is None else Versioned(record, int(kv.mod_revision))

    @_failing_over
    async def list(self) -> tuple[dict[str, Versioned], int]:
        """Every node at one revision, read in pages of ``PAGE_SIZE`` pinned to the first."""
        records: dict[str, Versioned] = {}
        unreadable: dict[str, tuple[int, str]] = {}
        start = self._keys.nodes
        end = _prefix_end(start)
        revision = 0
        with _translated(self._member, "list"):
            while True:
                response = await self._range(start, end, limit=PAGE_SIZE, revision=revision)
                revision = revision or int(response.header.revision)
                for kv in response.kvs:
                    record, why = _try_decode(kv.value)
                    if record is None:
                        unreadable[bytes(kv.key).decode()] = (int(kv.mod_revision), why)
                        continue
                    records[record.node_id] = Versioned(record, int(kv.mod_revision))
                if not response.more or not response.kvs:
                    self.skipped.replace(unreadable, revision)
                    return records, revision
                start = bytes(response.kvs[-1].key) + b"\0"

    @_failing_over
    async def renewed_at(self, node_id: str) -> datetime | None:
        with _translated(self._member, f"lease of {node_id}"):
            kv = await self._client.get(self._keys.lease(node_id))
            if kv is None:
                return await self._expired_at(node_id)
            info = await self._client.get_lease_info(int(kv.lease), keys=False)
        if info.TTL <= 0:
            return await self._expired_at(node_id)
        elapsed = max(0, int(info.grantedTTL) - int(info.TTL))
        return self._clock.now() - timedelta(seconds=elapsed)

    # -- writes --------------------------------------------------------------------------

    @_failing_over
    async def create(self, record: NodeRecord, *, renewed_at: datetime) -> int:
        node_id, tx = record.node_id, self._client.transactions
        node_key, name_key = self._keys.node(node_id), self._keys.name(record.name)
        with _translated(self._member, f"create {node_id}"):
            lease = await self._client.lease(self._lease_ttl)
            try:
                ok, revision, ranges = await self._txn(
                    compare=[tx.create(node_key) == 0, tx.create(name_key) == 0],
                    success=[
                        tx.put(node_key, _encode(record)),
                        tx.put(name_key, node_id.encode()),
                        tx.put(self._keys.lease(node_id), self._lease_doc(renewed_at), lease.id),
                        *self._forgetting(record.name),
                    ],
                    failure=[tx.get(node_key), tx.get(name_key)],
                )
            except BaseException:
                await self._revoke(int(lease.id))
                raise
            if not ok:
                await self._revoke(int(lease.id))
        if not ok:
            if ranges[0]:
                if self._read(ranges[0][0]) is None:
                    return await self._replace_unreadable(record, renewed_at, ranges[0][0])
                raise RevisionConflictError(f"node {node_id!r} already exists")
            raise _name_taken(record.name, _owner(ranges[1]))
        self._leases[node_id] = int(lease.id)
        await self._forgotten(ranges)
        return revision

    async def _replace_unreadable(self, record: NodeRecord, renewed_at: datetime, old: Any) -> int:
        """Register ``record`` over its node's stored record that cannot be read (``old``).

        The node registering again is what repairs such a record (its runtime registers
        again when its heartbeats are refused). The name key goes with it: reused when it
        points to this node, and removed under the old name, when that can still be read
        from the old value and still points here.
        """
        node_id, tx = record.node_id, self._client.transactions
        node_key, name_key = self._keys.node(node_id), self._keys.name(record.name)
        compare = [tx.mod(node_key) == int(old.mod_revision)]
        success = [
            tx.put(node_key, _encode(record)),
            tx.put(name_key, node_id.encode()),
            *self._forgetting(record.name),
        ]
        with _translated(self._member, f"create {node_id}"):
            holder = await self._client.get(name_key)
            if holder is None:
                compare.append(tx.create(name_key) == 0)
            elif bytes(holder.value).decode() == node_id:
                compare.append(tx.mod(name_key) == int(holder.mod_revision))
            else:
                raise _name_taken(record.name, bytes(holder.value).decode())
            old_name = _stored_name(old.value)
            if old_name is not None and old_name != record.name:
                old_name_key = self._keys.name(old_name)
                left = await self._client.get(old_name_key)
                if left is not None and bytes(left.value).decode() == node_id:
                    compare.append(tx.mod(old_name_key) == int(left.mod_revision))
                    success.append(tx.delete(old_name_key))
            old_lease = await self._client.get(self._keys.lease(node_id))
            lease = await self._client.lease(self._lease_ttl)
            success.append(tx.put(self._keys.lease(node_id), self._lease_doc(renewed_at), lease.id))
            try:
                ok, revision, ranges = await self._txn(compare=compare, success=success, failure=[])
            except BaseException:
                await self._revoke(int(lease.id))
                raise
        if not ok:
            await self._revoke(int(lease.id))
            raise RevisionConflictError(f"node {node_id!r} changed while being registered")
        await self._forgotten(ranges)
        if old_lease is not None:
            await self._revoke(int(old_lease.lease))
        self._leases[node_id] = int(lease.id)
        self.skipped.readable(node_key.decode(), revision)
        log.warning("node %s registered again: its unreadable record was replaced", node_id)
        return revision

    @_failing_over
    async def update(
        self,
        record: NodeRecord,
        *,
        expected_revision: int,
        renewed_at: datetime | None = None,
        seat: int | None = None,
    ) -> int:
        """Compare-and-swap the record; with ``seat``, only while the controller's seat is
        the one created at that revision (a fenced write of the lifecycle controller)."""
        node_id, tx = record.node_id, self._client.transactions
        node_key, name_key = self._keys.node(node_id), self._keys.name(record.name)
        with _translated(self._member, f"update {node_id}"):
            current = await self.get(node_id)
            if current is None:
                raise NotFoundError(f"node {node_id!r} is not registered")
            compare = [tx.mod(node_key) == expected_revision]
            success = [tx.put(node_key, _encode(record))]
            old_name = current.record.name
            if old_name != record.name:
                compare.append(tx.create(name_key) == 0)
                success += [
                    tx.put(name_key, node_id.encode()),
                    tx.delete(self._keys.name(old_name)),
                    *self._forgetting(record.name),
                ]
            compare += self._fence(seat)
            ok, revision, ranges = await self._txn(
                compare=compare,
                success=success,
                failure=[tx.get(node_key), tx.get(name_key), tx.get(self._keys.controller)],
            )
        if not ok:
            _check_seat(seat, ranges[2])
            if not ranges[0]:
                raise NotFoundError(f"node {node_id!r} is not registered")
            actual = int(ranges[0][0].mod_revision)
            if actual != expected_revision:
                raise RevisionConflictError(
                    f"node {node_id!r} changed (revision {actual}, expected {expected_revision})"
                )
            raise _name_taken(record.name, _owner(ranges[1]))
        await self._forgotten(ranges)
        if renewed_at is not None:
            await self.renew(node_id, renewed_at)
        return revision

    @_failing_over
    async def delete(
        self,
        node_id: str,
        *,
        expected_revision: int | None = None,
        keep: Binding | None = None,
        seat: int | None = None,
    ) -> int:
        """Delete the record (compared, with ``expected_revision``; fenced, with ``seat``)."""
        tx = self._client.transactions
        node_key = self._keys.node(node_id)
        with _translated(self._member, f"delete {node_id}"):
            for _ in range(_RETRIES):
                current = await self.get(node_id)
                if current is None:
                    raise NotFoundError(f"node {node_id!r} is not registered")
                if expected_revision is not None and current.revision != expected_revision:
                    raise RevisionConflictError(
                        f"node {node_id!r} changed (revision {current.revision}, "
                        f"expected {expected_revision})"
                    )
                name = current.record.name
                lease_kv = await self._client.get(self._keys.lease(node_id))
                success = [
                    tx.delete(node_key),
                    tx.delete(self._keys.name(name)),
                    tx.delete(self._keys.lease(node_id)),
                ]
                kept = None
                if keep is None:
                    success += self._forgetting(name)
                else:
                    kept = await self._client.lease(self._binding_ttl)
                    doc = json.dumps(keep.to_dict(), separators=(",", ":")).encode()
                    success += [
                        tx.get(self._keys.binding(name)),
                        tx.put(self._keys.binding(name), doc, kept.id),
                    ]
                try:
                    ok, revision, ranges = await self._txn(
                        compare=[tx.mod(node_key) == current.revision, *self._fence(seat)],
                        success=success,
                        failure=[tx.get(self._keys.controller)],
                    )
                except BaseException:
                    if kept is not None:
                        await self._revoke(int(kept.id))
                    raise
                if not ok:
                    if kept is not None:
                        await self._revoke(int(kept.id))
                    _check_seat(seat, ranges[0])
                    continue  # the record changed since it was read: read it again
                self._leases.pop(node_id, None)
                if lease_kv is not None:
                    await self._revoke(int(lease_kv.lease))
                await self._forgotten(ranges)
                return revision
        raise RevisionConflictError(f"node {node_id!r} kept changing; delete again")

    @_failing_over
    async def binding(self, name: str) -> Binding | None:
        with _translated(self._member, f"binding of {name}"):
            kv = await self._client.get(self._keys.binding(name))
        if kv is None:
            return None
        try:
            return Binding.from_dict(name, json.loads(kv.value))
        except (ValueError, KeyError, TypeError) as error:
            # Unreadable, it binds nothing: the name is as free as if it had expired.
            log.warning("the binding of name %r cannot be read (%s); ignored", name, error)
            return None

    @_failing_over
    async def forget(self, name: str) -> bool:
        with _translated(self._member, f"forget {name}"):
            _, _, ranges = await self._txn(compare=[], success=self._forgetting(name), failure=[])
        await self._forgotten(ranges)
        return bool(ranges and ranges[0])

    def _forgetting(self, name: str) -> tuple[Any, Any]:
        """Transaction steps that drop the binding of ``name``, reading it first: the etcd
        lease it was on is revoked after (``_forgotten``) instead of running out in a week."""
        tx = self._client.transactions
        return tx.get(self._keys.binding(name)), tx.delete(self._keys.binding(name))

    async def _forgotten(self, ranges: Sequence[Any]) -> None:
        for kvs in ranges:
            for kv in kvs:
                if bytes(kv.key).startswith(self._keys.bindings) and int(kv.lease):
                    await self._revoke(int(kv.lease))

    @_failing_over
    async def renew(self, node_id: str, at: datetime) -> None:
        """A lease keepalive; ``at`` is not stored (etcd's lease clock is the record)."""
        with _translated(self._member, f"renew {node_id}"):
            lease_id = self._leases.get(node_id)
            if lease_id is not None and await self._keepalive(lease_id):
                return
            kv = await self._client.get(self._keys.lease(node_id))
            if kv is not None and await self._keepalive(int(kv.lease)):
                self._leases[node_id] = int(kv.lease)
                return
            await self._regrant(node_id, at)

    # -- watch ---------------------------------------------------------------------------

    async def watch(self, since: int) -> AsyncGenerator[StoreEvent, None]:
        current = await self.revision()
        if since > current:
            raise _future_revision(since, current)
        key = self._keys.nodes

        def open_stream(client: _Client) -> Any:
            return client.watch_prefix(key, start_revision=since + 1, prev_kv=True)

        async with aclosing(self._stream("watch", open_stream)) as stream:
            async for event in stream:
                converted = self._event(event)
                if converted is not None:
                    yield converted

    @_failing_over
    async def check_watchable(self, since: int) -> None:
        """Raise ``RevisionCompactedError`` unless a watch from ``since`` can replay history."""
        current = await self.revision()
        if since > current:
            raise _future_revision(since, current)
        if since <= 0:
            return
        try:
            with _translated(self._member, "watch"):
                try:
                    await self._range(self._keys.nodes, revision=since, count_only=True)
                except aetcd.rpc.AioRpcError as error:
                    if error.code() is grpc.StatusCode.OUT_OF_RANGE:
                        raise aetcd.RevisionCompactedError(since) from error
                    raise
        except RevisionCompactedError:
            raise RevisionCompactedError(
                f"resource version {since} is too old: etcd history before it was compacted; "
                "list again and watch from the list's version"
            ) from None

    # -- what registry replicas share: renewal times, the controller's seat ---------------

    @_failing_over
    async def publish_renewals(
        self, replica: str, renewed: Mapping[str, datetime], lease_id: int
    ) -> None:
        """Tell every replica when the nodes this one renewed did so.

        Keepalives do not say *when* a lease was renewed to anyone but the renewing replica;
        this digest does, for the price of one Raft write per replica and period instead of
        one per heartbeat (one more per ``DIGEST_CHUNK`` nodes, to stay far below etcd's
        request size limit). It lives on the replica's lease, so a dead replica's digest
        goes with it. Times are epoch seconds: a third of the size of ISO text.
        """
        items = list(renewed.items())
        tx = self._client.transactions
        puts = []
        for number, start in enumerate(range(0, len(items), DIGEST_CHUNK)):
            doc = {
                node_id: round(at.timestamp(), 3)
                for node_id, at in items[start : start + DIGEST_CHUNK]
            }
            key = self._keys.renewal(replica if number == 0 else f"{replica}.{number}")
            puts.append(tx.put(key, json.dumps(doc, separators=(",", ":")).encode(), lease_id))
        with _translated(self._member, "publish renewals"):
            await self._txn(compare=[], success=puts, failure=[])

    @_failing_over
    async def renewals(self) -> tuple[dict[str, datetime], int]:
        """The digests now in etcd, merged (latest time per node), and the revision read at."""
        merged: dict[str, datetime] = {}
        with _translated(self._member, "read renewals"):
            response = await self._range(self._keys.renewals)
        for kv in response.kvs:
            merge_latest(merged, _decode_renewals(kv.value))
        return merged, int(response.header.revision)

    async def watch_renewals(
        self, since: int
    ) -> AsyncGenerator[tuple[str, dict[str, datetime]], None]:
        """(publisher, digest) for each digest published after revision ``since``, as it
        comes; the publisher is the replica name (with ``.N`` for a digest's later chunks)."""
        key = self._keys.renewals

        def open_stream(client: _Client) -> Any:
            return client.watch_prefix(key, start_revision=since + 1)

        async with aclosing(self._stream("watch renewals", open_stream)) as stream:
            async for event in stream:
                if event.kind == aetcd.EventKind.PUT:
                    publisher = bytes(event.kv.key)[len(key) :].decode()
                    yield publisher, _decode_renewals(event.kv.value)

    @_failing_over
    async def put_state(
        self, key: str, doc: Mapping[str, Any], lease_id: int, *, seat: int | None = None
    ) -> None:
        """Publish a piece of the controller's state (on its lease: it goes when it dies);
        fenced on the controller's seat, with ``seat``."""
        tx = self._client.transactions
        put = tx.put(self._keys.state(key), json.dumps(doc).encode(), lease_id)
        with _translated(self._member, f"publish {key}"):
            ok, _, ranges = await self._txn(
                compare=self._fence(seat), success=[put], failure=[tx.get(self._keys.controller)]
            )
        if not ok:
            _check_seat(seat, ranges[0])

    @_failing_over
    async def put_object(self, kind: str, name: str, doc: Mapping[str, Any]) -> None:
        """Keep an object (a NodeType) on no lease: it outlives every replica."""
        with _translated(self._member, f"put {kind}/{name}"):
            await self._client.put(self._keys.object(kind, name), json.dumps(doc).encode())

    @_failing_over
    async def delete_object(self, kind: str, name: str) -> bool:
        with _translated(self._member, f"delete {kind}/{name}"):
            return await self._client.delete(self._keys.object(kind, name)) is not None

    @_failing_over
    async def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every object of ``kind`` by name; an unreadable one is logged and left out."""
        prefix = self._keys.objects(kind)
        with _translated(self._member, f"list {kind}"):
            response = await self._range(prefix)
        found = {}
        for kv in response.kvs:
            name = bytes(kv.key)[len(prefix) :].decode()
            doc = _decode_state(kv.value)
            if doc is None:
                log.warning("the stored %s %r is not a JSON object; ignored", kind, name)
                continue
            found[name] = doc
        return found

    @_failing_over
    async def states(self) -> tuple[dict[str, dict[str, Any]], int]:
        """Every published piece of state, and the revision read at."""
        with _translated(self._member, "read state"):
            response = await self._range(self._keys.states)
        found = {}
        for kv in response.kvs:
            doc = _decode_state(kv.value)
            if doc is not None:
                found[bytes(kv.key)[len(self._keys.states) :].decode()] = doc
        return found, int(response.header.revision)

    async def watch_states(
        self, since: int
    ) -> AsyncGenerator[tuple[str, dict[str, Any] | None], None]:
        """(key, document) for each state published after ``since``; None when it went."""
        prefix = self._keys.states

        def open_stream(client: _Client) -> Any:
            return client.watch_prefix(prefix, start_revision=since + 1)

        async with aclosing(self._stream("watch state", open_stream)) as stream:
            async for event in stream:
                key = bytes(event.kv.key)[len(prefix) :].decode()
                gone = event.kind == aetcd.EventKind.DELETE
                yield key, None if gone else _decode_state(event.kv.value)

    @_failing_over
    async def grant(self, ttl: int) -> int:
        """A new etcd lease of ``ttl`` seconds (a replica's own: its digest, its seat)."""
        with _translated(self._member, "grant lease"):
            lease = await self._client.lease(ttl)
        return int(lease.id)

    @_failing_over
    async def keep(self, lease_id: int) -> bool:
        """Renew a replica's lease; False when it has already run out."""
        with _translated(self._member, "keep lease"):
            return await self._keepalive(lease_id)

    async def release(self, lease_id: int) -> None:
        """Revoke a replica's lease: its digest and its controller seat go at once.

        Best effort (on the next member if the one in use fails): a lease not revoked
        runs out after its TTL.
        """
        try:
            await self._revoke_now(lease_id)
        except RegistryError as error:
            log.warning("could not release etcd lease %x (%s); it runs out", lease_id, error)

    @_failing_over
    async def _revoke_now(self, lease_id: int) -> None:
        with _translated(self._member, "release lease"):
            await self._client.revoke_lease(lease_id)

    @_failing_over
    async def campaign(self, candidate: str, lease_id: int) -> tuple[str, int]:
        """Take the controller's seat if it is free: who holds it after, and the revision
        the seat was created at (what the holder's fenced writes compare).

        The seat is one key attached to the holder's lease, created only if absent
        (``create_revision == 0``) in one transaction: when the holder dies, its lease runs
        out, the key goes, and the next campaign of any replica wins it (a new seat, at a
        new revision: the old holder's fenced writes fail from then on).
        """
        tx = self._client.transactions
        key = self._keys.controller
        with _translated(self._member, "campaign"):
            ok, revision, ranges = await self._txn(
                compare=[tx.create(key) == 0],
                success=[tx.put(key, candidate.encode(), lease_id)],
                failure=[tx.get(key)],
            )
        if ok:
            return candidate, revision
        if not ranges or not ranges[0]:
            return "", 0
        held = ranges[0][0]
        return bytes(held.value).decode(), int(held.create_revision)

    def _fence(self, seat: int | None) -> Sequence[Any]:
        """The compare that fences a controller's write: its seat is still the one it took."""
        if seat is None:
            return []
        return [self._client.transactions.create(self._keys.controller) == seat]

    # -- the rest ------------------------------------------------------------------------

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

    async def _regrant(self, node_id: str, at: datetime) -> None:
        """The lease ran out while the node record stayed: attach a new one (a Raft write)."""
        tx = self._client.transactions
        node_key, lease_key = self._keys.node(node_id), self._keys.lease(node_id)
        lease = await self._client.lease(self._lease_ttl)
        ok, _, _ = await self._txn(
            compare=[tx.create(node_key) > 0],
            success=[tx.put(lease_key, self._lease_doc(at), lease.id)],
            failure=[],
        )
        if not ok:
            await self._revoke(int(lease.id))
            raise NotFoundError(f"node {node_id!r} is not registered")
        self._leases[node_id] = int(lease.id)

    async def _expired_at(self, node_id: str) -> datetime | None:
        if await self._client.get(self._keys.node(node_id)) is None:
            return None
        return self._clock.now() - timedelta(seconds=self._lease_ttl)

    async def _revoke(self, lease_id: int) -> None:
        # Best effort: an orphan lease holds no keys and runs out after lease_ttl.
        with suppress(Exception):
            await self._client.revoke_lease(lease_id)

    def _lease_doc(self, at: datetime) -> bytes:
        doc = {"grantedAt": at.isoformat(), "ttlSeconds": self._lease_ttl}
        return json.dumps(doc).encode()

    def _read(self, kv: Any) -> NodeRecord | None:
        """The record ``kv`` holds; None, skipped (logged, counted), when it cannot be read."""
        record, why = _try_decode(kv.value)
        key = bytes(kv.key).decode()
        if record is None:
            self.skipped.skip(key, int(kv.mod_revision), why)
        else:
            self.skipped.readable(key, int(kv.mod_revision))
        return record

    def _event(self, event: Any) -> StoreEvent | None:
        """The store event of an etcd one; None when there is nothing a reader can use.

        A record that turns unreadable is a deletion to readers: every cache drops the last
        version it could read rather than go on serving it as current. When it can be read
        again, it is added again.
        """
        revision = int(event.kv.mod_revision)
        # aetcd hands an empty KeyValue, not None, when there is no previous value.
        has_prev = event.prev_kv is not None and bool(event.prev_kv.key)
        prev = _try_decode(event.prev_kv.value)[0] if has_prev else None
        if event.kind == aetcd.EventKind.DELETE:
            self.skipped.readable(bytes(event.kv.key).decode(), revision)
            if prev is None:
                if not has_prev:  # the previous value was compacted away: nothing to report
                    log.warning(
                        "DELETE at revision %d without its previous value; skipped", revision
                    )
                return None
            return StoreEvent(ChangeType.DELETED, prev, prev, revision)
        record = self._read(event.kv)
        if record is None:
            return None if prev is None else StoreEvent(ChangeType.DELETED, prev, prev, revision)
        if event.kv.create_revision == event.kv.mod_revision or (has_prev and prev is None):
            return StoreEvent(ChangeType.ADDED, record, None, revision)
        return StoreEvent(ChangeType.MODIFIED, record, prev, revision)


def _encode(record: NodeRecord) -> bytes:
    return json.dumps(record.to_dict(), separators=(",", ":")).encode()


def _decode(value: bytes) -> NodeRecord:
    doc = json.loads(value)
    if _SURROGATE_ESCAPE.search(value):
        # JSON may spell a lone surrogate as an escape; a record holding one could never be
        # sent to a client (the registry refuses such input; this is an older or foreign one).
        json.dumps(doc, ensure_ascii=False).encode()
    return NodeRecord.from_dict(doc)


def _try_decode(value: bytes) -> tuple[NodeRecord | None, str]:
    """The record, or None and why it cannot be read (whatever is wrong with the value)."""
    try:
        return _decode(value), ""
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        # pydantic's ValidationError, JSON's and UTF-8's errors are ValueErrors.
        text = str(error).splitlines()
        return None, f"{type(error).__name__}: {'; '.join(line.strip() for line in text[:3])}"


def _stored_name(value: bytes) -> str | None:
    """The node name an unreadable record holds, when its JSON still says so."""
    try:
        name = json.loads(value)["passport"]["metadata"]["name"]
    except (ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _future_revision(since: int, current: int) -> RevisionCompactedError:
    return RevisionCompactedError(
        f"resource version {since} is newer than etcd's current revision {current} "
        "(a different etcd, or its data was reset?); list again and watch from the "
        "list's version"
    )


def _decode_renewals(value: bytes) -> dict[str, datetime]:
    """A digest's renewal times; what does not read as one is skipped, with a warning.

    A digest only refines renewal times (the seen-floor covers what it would have said),
    so one written by another version, or damaged, must not stop a replica.
    """
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        log.warning("a renewal digest is not a JSON object; skipped")
        return {}
    renewed: dict[str, datetime] = {}
    for node_id, at in doc.items():
        if isinstance(at, int | float) and not isinstance(at, bool):
            renewed[node_id] = datetime.fromtimestamp(at, UTC)
    if len(renewed) < len(doc):
        log.warning("a renewal digest had %d unreadable entries; skipped", len(doc) - len(renewed))
    return renewed


def _decode_state(value: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        log.warning("a published registry state is not a JSON object; ignored")
        return None
    return doc


def merge_latest(into: dict[str, datetime], renewed: Mapping[str, datetime]) -> None:
    for node_id, at in renewed.items():
        known = into.get(node_id)
        if known is None or at > known:
            into[node_id] = at


def _check_seat(seat: int | None, kvs: Any) -> None:
    """After a failed fenced transaction: ``NotLeadingError`` if the seat was what failed."""
    if seat is None:
        return
    if not kvs or int(kvs[0].create_revision) != seat:
        holder = bytes(kvs[0].value).decode() if kvs else "nobody"
        raise NotLeadingError(
            f"this replica no longer holds the lifecycle controller's seat (held by "
            f"{holder}); its write was refused"
        )


def _owner(kvs: Any) -> str:
    return bytes(kvs[0].value).decode() if kvs else "?"


def _name_taken(name: str, owner: str) -> ConflictError:
    return ConflictError(
        f"name {name!r} is already registered by node {owner}; "
        "names are unique, choose another or deregister that node"
    )
