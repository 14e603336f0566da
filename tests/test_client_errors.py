"""Every failure the client raises is one of the package's errors (#13), whatever the server
at the other end does: garbage, the wrong documents, 5xx pages, bodies that do not decode,
stalls. The server is real (uvicorn on loopback) and answers as each test tells it."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from conftest import passport
from live_server import serve
from node_registry.client import AsyncRegistryClient, RegistryClient
from node_registry.errors import (
    InvalidResponseError,
    NotFoundError,
    RegistryError,
    RegistryUnreachableError,
    RevisionCompactedError,
    ValidationError,
)

JSON = [(b"content-type", b"application/json")]


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: list[tuple[bytes, bytes]] = field(default_factory=lambda: list(JSON))
    stall: float = 0.0  # seconds to wait before answering


class Scripted:
    """A raw ASGI app: every request gets ``answer``, whatever it asked."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.paths.append(scope["raw_path"].decode())
        answer = self.answer
        if answer.stall:
            await asyncio.sleep(answer.stall)
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[Scripted, str]]:
    app = Scripted()
    with serve(app) as url:  # type: ignore[arg-type]
        yield app, url


def ours(exc: BaseException) -> None:
    """What a caller catches: the package's tree, never a library's or a KeyError."""
    assert isinstance(exc, RegistryError), type(exc)
    assert not isinstance(exc, (KeyError, TypeError, httpx.HTTPError)), type(exc)


def json_body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


NODE_OBJECT = {
    **passport("coder-01"),
    "status": {"phase": "Running", "healthState": "ALIVE"},  # no lastSeen, registeredAt
}
CALLS: dict[str, Callable[[RegistryClient], object]] = {
    "get": lambda c: c.get("coder-01"),
    "find_nodes": lambda c: c.find_nodes(kind="agent", only_healthy=True),
    "list_nodes": lambda c: c.list_nodes(),
    "heartbeat": lambda c: c.heartbeat("coder-01"),
    "register": lambda c: c.register(passport("coder-01")),
    "update_status": lambda c: c.update_status("coder-01", current_tasks=1),
    "watch": lambda c: list(c.watch(3, timeout_seconds=1)),
}
#: 2xx answers no registry sends, each with the call it breaks.
GARBAGE: list[tuple[str, bytes]] = [
    ("not JSON", b"<html>hello</html>"),
    ("not UTF-8", b"\xff\xfe\x00garbage"),
    ("a JSON list", b"[1, 2]"),
    ("a JSON string", b'"ok"'),
    ("an empty object", b"{}"),
    ("a node without the registry's fields", json_body(NODE_OBJECT)),
    ("a list without items", json_body({"metadata": {"resourceVersion": "3"}})),
    ("items of the wrong shape", json_body({"metadata": {"resourceVersion": "3"}, "items": [1]})),
    ("a version that is not one", json_body({"metadata": {"resourceVersion": "x"}, "items": []})),
    ("a Lease without its time", json_body({"kind": "Lease", "spec": {"renewTime": 5}})),
]


def _stream(*events: Any) -> bytes:
    return b"".join(json_body(event) + b"\n" for event in events)


#: Watch lines no registry sends (each is garbage for the other calls too).
GARBAGE += [
    ("a line that is not JSON", b"{not json\n"),
    ("an event of no known type", _stream({"type": "HEALTH_CHANGED", "object": {}})),
    ("an event without an object", _stream({"type": "ADDED"})),
    ("an event of a broken object", _stream({"type": "MODIFIED", "object": NODE_OBJECT})),
    ("a BOOKMARK without a version", _stream({"type": "BOOKMARK", "object": {"metadata": {}}})),
    ("a BOOKMARK that is no object", _stream({"type": "BOOKMARK", "object": 7})),
    ("an ERROR without a Status", _stream({"type": "ERROR", "object": "gone"})),
]


@pytest.mark.parametrize(("what", "body"), GARBAGE, ids=[g[0] for g in GARBAGE])
@pytest.mark.parametrize("call", list(CALLS))
def test_a_2xx_the_api_never_sends_is_an_invalid_response(
    scripted: tuple[Scripted, str], call: str, what: str, body: bytes
) -> None:
    app, url = scripted
    app.answer = Answer(body=body)
    with (
        RegistryClient(url, retries=0, verify=False) as client,
        pytest.raises(InvalidResponseError) as caught,
    ):
        CALLS[call](client)
    ours(caught.value)


def test_error_pages_and_odd_statuses_are_ours(scripted: tuple[Scripted, str]) -> None:
    app, url = scripted
    with RegistryClient(url, retries=0, verify=False) as client:
        app.answer = Answer(
            500, b"<h1>Internal Server Error</h1>", [(b"content-type", b"text/html")]
        )
        with pytest.raises(RegistryError, match="HTTP 500") as caught:
            client.get("coder-01")
        ours(caught.value)
        # A Status with nonsense in its fields: its code still says what it is.
        app.answer = Answer(
            404, json_body({"kind": "Status", "reason": 5, "code": "x", "details": "no"})
        )
        with pytest.raises(NotFoundError):
            client.get("coder-01")
        app.answer = Answer(
            422,
            json_body(
                {"kind": "Status", "reason": "Invalid", "details": {"causes": ["x", {"a": 1}]}}
            ),
        )
        with pytest.raises(ValidationError):
            client.find_nodes()
        for status in (502, 503, 504):  # worth another endpoint; there is none
            app.answer = Answer(status, b"bad gateway", [(b"content-type", b"text/plain")])
            with pytest.raises(RegistryUnreachableError, match=f"HTTP {status}"):
                client.list_nodes()


def test_a_body_that_does_not_decode_is_an_invalid_response(
    scripted: tuple[Scripted, str],
) -> None:
    app, url = scripted
    # Says gzip, is not: httpx raises its DecodingError while reading the body.
    app.answer = Answer(body=b"not gzip at all", headers=[*JSON, (b"content-encoding", b"gzip")])
    with RegistryClient(url, retries=0, verify=False) as client:
        with pytest.raises(InvalidResponseError, match="DecodingError") as caught:
            client.get("coder-01")
        ours(caught.value)
        with pytest.raises(InvalidResponseError, match="DecodingError"):
            list(client.watch(3, timeout_seconds=1))


def test_a_server_that_stalls_is_unreachable_not_a_timeout_exception(
    scripted: tuple[Scripted, str],
) -> None:
    app, url = scripted
    app.answer = Answer(stall=1.0)
    with RegistryClient(url, retries=1, backoff=0.01, timeout=0.2, verify=False) as client:
        with pytest.raises(RegistryUnreachableError, match="ReadTimeout") as caught:
            client.heartbeat("coder-01")
        ours(caught.value)
    with (
        RegistryClient(url, retries=0, timeout=0.2, watch_idle_timeout=0.2, verify=False) as client,
        pytest.raises(RegistryUnreachableError, match="lost every registry endpoint"),
    ):
        list(client.watch(3, timeout_seconds=5))


def test_a_watch_error_event_is_the_error_it_names(scripted: tuple[Scripted, str]) -> None:
    app, url = scripted
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    app.answer = Answer(
        body=_stream(
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
            {"type": "ERROR", "object": status},
        )
    )
    with (
        RegistryClient(url, retries=0, verify=False) as client,
        pytest.raises(RevisionCompactedError, match="too old"),
    ):
        list(client.watch(3, timeout_seconds=1))


def test_the_async_client_raises_the_same(scripted: tuple[Scripted, str]) -> None:
    app, url = scripted

    async def scenario() -> list[BaseException]:
        caught: list[BaseException] = []
        async with AsyncRegistryClient(url, retries=0, timeout=0.2, verify=False) as client:
            for answer in (
                Answer(body=b"<html>"),
                Answer(body=json_body(NODE_OBJECT)),
                Answer(body=b"junk", headers=[*JSON, (b"content-encoding", b"gzip")]),
                Answer(stall=1.0),
            ):
                app.answer = answer
                try:
                    await client.get("coder-01")
                except Exception as exc:
                    caught.append(exc)
            app.answer = Answer(body=b"{not json\n")
            try:
                async for _ in client.watch(3, timeout_seconds=1):
                    pass
            except Exception as exc:
                caught.append(exc)
        return caught

    caught = asyncio.run(scenario())
    assert [type(e) for e in caught] == [
        InvalidResponseError,
        InvalidResponseError,
        InvalidResponseError,
        RegistryUnreachableError,
        InvalidResponseError,
    ]


def test_a_name_cannot_reach_another_route(scripted: tuple[Scripted, str]) -> None:
    app, url = scripted
    app.answer = Answer(404, json_body({"kind": "Status", "code": 404, "reason": "NotFound"}))
    with RegistryClient(url, retries=0, verify=False) as client, pytest.raises(NotFoundError):
        client.get("../leases/x")
    assert app.paths[-1] == "/apis/ai_team.io/v1/nodepassports/..%2Fleases%2Fx"


def test_gzip_that_does_decode_is_read(scripted: tuple[Scripted, str]) -> None:
    app, url = scripted
    lease = {"kind": "Lease", "spec": {"renewTime": "2026-01-01T00:00:00.5Z"}}
    app.answer = Answer(
        body=gzip.compress(json_body(lease)), headers=[*JSON, (b"content-encoding", b"gzip")]
    )
    with RegistryClient(url, retries=0, verify=False) as client:
        assert client.heartbeat("coder-01").microsecond == 500_000
