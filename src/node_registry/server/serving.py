"""The registry under uvicorn: connection limits, and a shutdown that ends watch streams.

uvicorn bounds neither how many connections a process holds nor how long a client may
take to send its request head, and its httptools parser (what ``uvicorn[standard]``
picks) has no header size limit at all (``h11_max_incomplete_event_size`` applies to h11
only). So thousands of idle or slow connections (slowloris) exhaust file descriptors and
stop every heartbeat, and one 100 MB header costs seconds of CPU. ``GuardedProtocol`` is
uvicorn's httptools protocol with Go's ``net/http`` limits, as the Kubernetes API server
has them:

- ``max_header_bytes``: a request line and headers over this get 431, then the close.
- ``header_timeout_seconds``: a request head not complete this long after its first byte
  (or after the connection opened) gets 408, then the close (Go's ``ReadHeaderTimeout``).
- ``max_connections``: at the limit, a new connection takes the place of the longest-idle
  one (keep-alive, or still sending its head); only when every connection is busy with a
  request is the newcomer refused with 503 and ``Retry-After``. A heartbeat thus always
  gets through a flood of idle connections.
- ``write_timeout_seconds``: a connection whose client stopped reading (the transport's
  buffer stays full this long) is aborted, so a stuck watcher holds no memory.

Each response leaves in one send where it can: uvicorn writes a response's head and its body
with a syscall (and a loopback packet) each, 15 % of a renewal's server CPU at 100,000 nodes
(docs/benchmarks.md); the head is held (``HeldHead``) until the body follows it, or until the
loop's turn ends (a stream's head waits no longer than that), as Go's ``net/http`` buffers a
response's head with its body.

uvicorn's own ``limit_concurrency`` is not used: it counts idle connections against
requests (a slowloris flood would get heartbeats refused) and answers in plain text.
Every refusal here is a Kubernetes ``Status`` body. On SIGTERM, ``RegistryServer`` ends every
watch stream cleanly before uvicorn's graceful shutdown waits for connections: clients
watch again elsewhere from their last version instead of being cut off after the timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from node_registry.config import ServerSettings

log = logging.getLogger("node_registry.server")
#: How long a refused connection's further input is read and dropped before the close.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    header_timeout: float
    write_timeout: float

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(
            max_connections=server.max_connections,
            max_header_bytes=server.max_header_bytes,
            header_timeout=server.header_timeout_seconds,
            write_timeout=server.write_timeout_seconds,
        )


class ConnectionGuard:
    """The connections of one server: how many are open, and which are idle, oldest first."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        self.idle: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self.refused = 0
        self.evicted = 0


def _status(code: int, reason: str, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()
    phrase = {408: "Request Timeout", 431: "Request Header Fields Too Large"}.get(
        code, "Service Unavailable"
    )
    return (
        f"HTTP/1.1 {code} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


#: A body up to this size is sent in one piece with the head held before it (a copy); a
#: larger one after it, without copying it.
JOIN_BYTES = 64 * 1024


class HeldHead(asyncio.Transport):
    """The transport a request cycle writes its response to: its first write (the head) is
    held until the next (the body, sent with it) or the end of the loop's turn."""

    __slots__ = ("_first", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._held: bytes | None = None
        self._first = True
        self._loop = loop

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._first:
            self._first = False
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        held, self._held = self._held, None
        if held is None:
            self._transport.write(data)
        elif len(data) <= JOIN_BYTES:
            self._transport.write(held + data)
        else:
            self._transport.write(held)
            self._transport.write(data)

    def flush(self) -> None:
        """Send the held head, if still held (before anything else is written or closes)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    guard: ConnectionGuard  # set on the subclass ``protocol_class`` makes for each server

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counted = False
        self._head_bytes = 0
        #: The request line and headers parsed so far (what the limit applies to).
        self._head_size = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        #: When the head being timed began (loop time); None between requests.
        self._head_started: float | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._dropped = 0

    # -- connections ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        guard.open += 1
        self._counted = True
        if guard.open > guard.limits.max_connections and not self._make_room():
            guard.refused += 1
            self._refuse(
                503,
                "ServiceUnavailable",
                f"the registry holds its limit of {guard.limits.max_connections} connections, "
                "each busy with a request; retry shortly",
                b"retry-after: 1\r\n",
            )
            return
        self._arm_head_timer()
        guard.idle[self] = None

    def _make_room(self) -> bool:
        guard = self.guard
        for victim in guard.idle:
            guard.evicted += 1
            victim._release()
            victim.transport.close()
            return True
        return False

    def _release(self) -> None:
        """Stop counting this connection (once): it closes, or was closed to make room."""
        if self._counted:
            self._counted = False
            self.guard.open -= 1
        self.guard.idle.pop(self, None)
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def _refuse(self, code: int, reason: str, message: str, extra: bytes = b"") -> None:
        self._refused = True
        self._release()
        transport = self.transport
        if transport.is_closing():
            return
        if self.cycle is not None and isinstance(self.cycle.transport, HeldHead):
            self.cycle.transport.flush()  # the answer before, whole, then the refusal
        transport.write(_status(code, reason, message, extra))
        # Closing with unread input resets the connection, and the client may lose the
        # answer: stop writing, drop what still comes for a moment, then close (Go's and
        # nginx's lingering close).
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()

    # -- the request head ---------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        # One timer per connection, armed again when it fires before the head it times
        # ends: one armed and cancelled per request cost every renewal a timer. A head
        # already being timed (since the connection opened) keeps its start.
        if self._head_started is None:
            self._head_started = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.guard.limits.header_timeout, self._head_timed_out
            )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        started = self._head_started
        if started is None:
            return  # that head completed: the next one arms the timer again
        left = started + self.guard.limits.header_timeout - self.loop.time()
        if left > 0:  # a later head than the one the timer was armed for
            self._head_timer = self.loop.call_later(left, self._head_timed_out)
        elif self._in_head:
            self._refuse(
                408,
                "Timeout",
                f"the request head was not complete within {self.guard.limits.header_timeout:g} s",
            )

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.abort()  # still sending a flood: stop reading it
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.guard.limits.max_header_bytes:
            self._head_too_large()

    def _head_too_large(self) -> None:
        if not self._refused:
            limit = self.guard.limits.max_header_bytes
            self._refuse(
                431,
                "RequestHeaderFieldsTooLarge",
                f"the request line and headers are over the limit of {limit} bytes",
            )

    # The parser's callbacks. A head that arrives whole in one read is measured here (the
    # parser hands over the URL and each header complete); one still coming, in
    # ``data_received``. After a refusal the rest of the read is parsed for nothing.

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._in_head = True
        self._head_size = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            self._head_size += len(url)
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            self._head_size += len(name) + len(value) + 4
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._head_bytes = 0
        self._head_started = None
        if self._head_size > self.guard.limits.max_header_bytes:
            self._head_too_large()
            return
        self.guard.idle.pop(self, None)  # busy with a request until its response is out
        super().on_headers_complete()
        if self.cycle is not None:  # made just now, its task not started yet
            self.cycle.transport = HeldHead(self.transport, self.loop)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        # What follows on this connection is the next request's head.
        self._in_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._counted and not self.transport.is_closing():
            self.guard.idle[self] = None

    # -- writes -------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(
                self.guard.limits.write_timeout, self._write_stalled
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        self._write_timer = None
        log.warning(
            "aborting a connection from %s: it read nothing for %g s",
            self.client,
            self.guard.limits.write_timeout,
        )
        self.transport.abort()


def protocol_class(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """``GuardedProtocol`` bound to ``guard``, for ``uvicorn.Config(http=...)``."""
    bound = type("GuardedProtocol", (GuardedProtocol,), {"guard": guard})
    return cast(type[GuardedProtocol], bound)


class RegistryServer(uvicorn.Server):
    """``uvicorn.Server`` that calls ``on_shutdown`` (end the watches) when it starts stopping."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


def uvicorn_config(
    app: Any, server: ServerSettings, guard: ConnectionGuard, **extra: Any
) -> uvicorn.Config:
    """uvicorn's settings for the registry: the guarded protocol, no websockets, keep-alive."""
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        http=protocol_class(guard),
        ws="none",  # no route speaks it; an upgrade would escape the connection count
        timeout_keep_alive=server.keep_alive_seconds,
        # Only applies if h11 is ever chosen; the guarded httptools protocol checks itself.
        h11_max_incomplete_event_size=server.max_header_bytes,
        **extra,
    )
