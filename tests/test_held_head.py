"""The guarded protocol's writes (server.serving.HeldHead): a response's head leaves with its
body in one send, and a stream's head no later than the end of the loop's turn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from live_server import free_port
from node_registry import load_settings
from node_registry.server import serving
from node_registry.server.serving import (
    JOIN_BYTES,
    ConnectionGuard,
    ConnectionLimits,
    HeldHead,
    uvicorn_config,
)


class _Recorded(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def _a_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        (b"body", [b"head" + b"body"]),
        (b"b" * (JOIN_BYTES + 1), [b"head", b"b" * (JOIN_BYTES + 1)]),  # not copied
    ],
)
def test_a_head_leaves_with_its_body(body: bytes, sent: list[bytes]) -> None:
    async def run() -> list[bytes]:
        real = _Recorded()
        held = HeldHead(real, asyncio.get_running_loop())
        held.write(b"head")
        assert real.writes == []
        held.write(body)
        held.write(b"more")  # a stream's next chunk goes at once
        await _a_turn()  # the turn's end finds nothing held
        return real.writes

    assert asyncio.run(run()) == [*sent, b"more"]


def test_a_head_alone_leaves_at_the_end_of_the_loops_turn() -> None:
    async def run() -> None:
        real = _Recorded()
        held = HeldHead(real, asyncio.get_running_loop())
        held.write(b"head")
        assert real.writes == []
        await _a_turn()
        assert real.writes == [b"head"]
        held.write(b"chunk")
        assert real.writes == [b"head", b"chunk"]

    asyncio.run(run())


def test_a_close_sends_the_held_head_first() -> None:
    async def run() -> None:
        real = _Recorded()
        held = HeldHead(real, asyncio.get_running_loop())
        held.write(b"head")
        held.close()
        assert real.writes == [b"head"]
        assert real.closed
        await _a_turn()
        assert real.writes == [b"head"]  # not twice

    asyncio.run(run())


@contextlib.contextmanager
def guarded(app: Any) -> Iterator[int]:
    """``app`` served as the registry serves (the guarded protocol), in a thread."""
    port = free_port()
    settings = load_settings(server={"port": port, "host": "127.0.0.1"})
    guard = ConnectionGuard(ConnectionLimits.from_settings(settings.server))
    server = uvicorn.Server(uvicorn_config(app, settings.server, guard, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the server died"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_registrys_server_answers_through_held_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    write = HeldHead.write

    def counted(self: HeldHead, data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        write(self, data)

    monkeypatch.setattr(serving.HeldHead, "write", counted)
    released = threading.Event()

    async def plain(request: Request) -> Response:
        return Response(b"renewed", media_type="application/json")

    async def chunks() -> AsyncIterator[bytes]:
        while not released.is_set():
            await asyncio.sleep(0.01)
        yield b"event"

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="application/json")

    app = Starlette(routes=[Route("/plain", plain), Route("/stream", stream)])
    with guarded(app) as port, socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"renewed"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert len(writes) == 2  # the head, then the body it left with
        assert writes[0].endswith(b"\r\n\r\n")
        assert writes[1] == b"renewed"
        # A stream's head arrives while its body is still to come.
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK")
        released.set()
        rest = head.partition(b"\r\n\r\n")[2]
        while b"event" not in rest:
            rest += sock.recv(65536)
