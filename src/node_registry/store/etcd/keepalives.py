"""The lease keepalives of this process, all on one long-lived LeaseKeepAlive stream."""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress
from typing import Any

import aetcd.rpc  # type: ignore[import-untyped]  # aetcd 1.0.0 ships no py.typed marker
import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs

from node_registry.store.etcd.members import _Client, _Members


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
