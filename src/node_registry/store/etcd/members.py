"""etcd's members: TLS to them, one aetcd client each, and leaving a failed one for the next.

Every call and every stream goes to the member in use; one that fails a call is left for
the next and its channel closed, so the streams on it end at once (``_Members``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aetcd  # type: ignore[import-untyped]  # aetcd 1.0.0 ships no py.typed marker
import aetcd.rpc  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

log = logging.getLogger(__name__)


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
