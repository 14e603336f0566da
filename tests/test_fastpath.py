"""The renewal fast path (server.fastpath) answers as the framework's route does, byte for byte.

Two real uvicorn servers on loopback over the same clock, tokens and nodes: one serves lease
renewals through the fast path, the other (``fast_renewals=False``) through the FastAPI
route. Every request here goes to both as the same raw bytes, and the answers (status line,
headers but the date, body) and what the metrics counted must be equal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from conftest import passport
from live_server import serve
from node_registry import AsyncRegistry, FakeClock, load_settings
from node_registry.client import core
from node_registry.server import create_app
from node_registry.server.fastpath import RegistryApp, RenewalFastPath
from node_registry.server.routes import leases
from node_registry.server.routes.leases import renew_lease

API = "/apis/ai_team.io/v1"
ADMIN = "admin-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
NODE_A = "node-a-token-0123456789abcdef"
PINNED = "node-p-token-0123456789abcdef"
TOKENS = {
    "tokens": [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": READER, "role": "reader", "name": "dashboard"},
        {"token": NODE_A, "role": "node", "node": "node-a"},
        # Pinned to a uid that is not the one node-p is registered with.
        {
            "token": PINNED,
            "role": "node",
            "node": "node-p",
            "uid": "0b8f7a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        },
    ]
}
LIMIT = 1024


@dataclass
class Server:
    app: FastAPI
    port: int

    def exchange(self, raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        """Send ``raw`` on a new connection; the status line, headers (no date) and body."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(raw)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, f"no answer to {raw[:80]!r}"
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status, *lines = head.split(b"\r\n")
            headers = [
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(b":") for line in lines)
            ]
            length = int(dict(headers).get(b"content-length", b"0"))
            while len(body) < length:
                chunk = sock.recv(65536)
                assert chunk, "the body was cut short"
                body += chunk
        return status, [h for h in headers if h[0] != b"date"], body

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(
            f"http://127.0.0.1:{self.port}/metrics",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=5,
        ).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.name.endswith("_created")
            and s.name.startswith(
                (
                    "node_registry_refusals",
                    "node_registry_heartbeats",
                    "node_registry_requests_shed",
                    "node_registry_http_request_duration_seconds_count",
                )
            )
        }


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """(fast path, framework route): same clock, tokens and nodes; both stopped at the end."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    tokens.chmod(0o600)
    clock = FakeClock()
    with contextlib.ExitStack() as stack:
        pair = []
        for fast in (True, False):
            settings = load_settings(
                controller={"period_seconds": 3600},
                server={
                    "tokens_file": str(tokens),
                    "max_body_bytes": LIMIT,
                    "max_node_writes_inflight": 2,
                    "shed_reads_lag_seconds": 3600.0,
                },
            )
            app = create_app(
                AsyncRegistry(clock=clock, settings=settings), settings, fast_renewals=fast
            )
            base = stack.enter_context(serve(app))
            server = Server(app, int(base.rsplit(":", 1)[1]))
            for name in ("node-a", "node-p"):
                created = httpx.post(
                    f"{base}{API}/nodepassports",
                    json=passport(name),
                    headers={"Authorization": f"Bearer {ADMIN}"},
                    timeout=5,
                )
                assert created.status_code == 201, created.text
            pair.append(server)
        yield pair[0], pair[1]


def put(
    name: str,
    body: bytes | None = b"{}",
    *,
    token: str | None = ADMIN,
    content_type: str | None = "application/json",
    extra: str = "",
) -> bytes:
    head = f"PUT {API}/leases/{name} HTTP/1.1\r\nHost: x\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "Connection: close\r\n\r\n").encode() + (body or b"")


def chunked(name: str, chunks: list[bytes]) -> bytes:
    head = (
        f"PUT {API}/leases/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
    return head + body + b"0\r\n\r\n"


def lease(name: str, holder: str | None = None, **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "apiVersion": "ai_team.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder or name},
        **extra,
    }
    return json.dumps(doc).encode()


def client_body(name: str) -> bytes:
    """The Lease the registry's own client sends to renew ``name``."""
    body, _ = core.encode(core.heartbeat(name))
    assert body is not None
    return body


def test_the_route_knows_the_body_the_client_sends() -> None:
    assert leases._client_body("node-a") == client_body("node-a") == unescaped_body("node-a")


def unescaped_body(name: str) -> bytes:
    """``client_body`` with ``name`` put in as it is, escaped or not."""
    return b'{"apiVersion":"ai_team.io/v1","kind":"Lease","spec":{"holderIdentity":"%s"}}' % (
        name.encode()
    )


#: A name that needs escaping in JSON (unescaped, the quote ends the string: no JSON) and one
#: too long for a holderIdentity: bodies spelled as the client's are still parsed for them.
QUOTED, LONG = 'a"b', "a" * 254
_QUOTED_BODY = unescaped_body(QUOTED)
_LONG_BODY = unescaped_body(LONG)

#: (what, raw request, expected status): every way a renewal is answered.
CASES = [
    ("renewed", put("node-a", lease("node-a")), 200),
    ("renewed, empty body", put("node-a", b""), 200),
    ("renewed, no content type", put("node-a", b"{}", content_type=None), 200),
    ("renewed, +json type", put("node-a", b"{}", content_type="application/merge-patch+json"), 200),
    ("renewed by its node", put("node-a", b"{}", token=NODE_A), 200),
    ("no token", put("node-a", token=None), 401),
    ("unknown token", put("node-a", token="x" * 30), 401),
    ("not bearer", put("node-a", token=None, extra="Authorization: Basic Zm9vOmJhcg==\r\n"), 401),
    ("a reader", put("node-a", token=READER), 403),
    ("another node's token", put("node-p", token=NODE_A), 403),
    ("a token pinned to another uid", put("node-p", token=PINNED), 403),
    ("not registered", put("ghost"), 404),
    ("yaml", put("node-a", b"spec: {}", content_type="application/yaml"), 415),
    ("text", put("node-a", b"{}", content_type="text/plain; charset=utf-8"), 415),
    ("malformed", put("node-a", b'{"spec": '), 400),
    ("not utf-8", put("node-a", b'{"spec": "\xff"}'), 400),
    ("unknown field", put("node-a", b'{"spec": {}, "extra": 1}'), 422),
    ("bad duration", put("node-a", b'{"spec": {"leaseDurationSeconds": 0}}'), 422),
    ("name mismatch", put("node-a", lease("node-p")), 422),
    ("holder mismatch", put("node-a", lease("node-a", holder="node-p")), 422),
    ("declared too large", put("node-a", b"{" + b" " * LIMIT + b"}"), 413),
    ("chunked too large", chunked("node-a", [b"{", b" " * LIMIT, b"}"]), 413),
    ("chunked", chunked("node-a", [b'{"spec"', b": {}}"]), 200),
    ("the client's body", put("node-a", client_body("node-a")), 200),
    ("the client's body, by its node", put("node-a", client_body("node-a"), token=NODE_A), 200),
    (
        "the client's body, as text",
        put("node-a", client_body("node-a"), content_type="text/plain"),
        415,
    ),
    ("the client's body, not registered", put("ghost", client_body("ghost")), 404),
    ("the client's body, another node's", put("node-a", client_body("node-p")), 422),
    ("the client's body, a name it quotes", put("a%22b", _QUOTED_BODY), 400),
    ("the client's body, a name it escapes", put("a%22b", client_body(QUOTED)), 404),
    ("the client's body, a name too long", put(LONG, _LONG_BODY), 422),
]


@pytest.mark.parametrize(("what", "raw", "code"), CASES, ids=[c[0] for c in CASES])
def test_every_answer_equals_the_framework_routes(
    servers: tuple[Server, Server], what: str, raw: bytes, code: int
) -> None:
    fast, framework = servers
    fast_path = fast.app.fast_path  # type: ignore[attr-defined]
    assert isinstance(fast_path, RenewalFastPath)
    assert framework.app.fast_path is None  # type: ignore[attr-defined]
    before = fast_path.served
    answered = fast.exchange(raw)
    expected = framework.exchange(raw)
    assert answered == expected
    assert answered[0].split()[1] == str(code).encode(), answered
    assert fast_path.served == before + 1  # the fast path served it, not the framework
    assert fast.metrics() == framework.metrics()


def test_a_shed_renewal_equals_the_framework_routes(servers: tuple[Server, Server]) -> None:
    answers = []
    for server in servers:
        # Two renewals whose bodies never come hold both node-high seats.
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in "ab"]
        try:
            for sock in socks:
                sock.sendall(put("node-a", b"{}")[:-2])
            time.sleep(0.2)
            answers.append(server.exchange(put("node-a")))
        finally:
            for sock in socks:
                sock.close()
    assert answers[0] == answers[1]
    assert answers[0][0].split()[1] == b"429"
    assert dict(answers[0][1])[b"retry-after"] == b"1"
    deadline = time.monotonic() + 5
    while servers[0].app.fast_path.control.inflight:  # type: ignore[attr-defined]
        if not any(servers[0].app.fast_path.control.inflight.values()):  # type: ignore[attr-defined]
            break
        assert time.monotonic() < deadline, "the seats were never given back"
        time.sleep(0.05)
    fast_metrics, framework_metrics = servers[0].metrics(), servers[1].metrics()
    assert fast_metrics == framework_metrics
    shed = ("node_registry_requests_shed_total", (("level", "node-high"),))
    assert fast_metrics[shed] == 1


def test_the_renewals_of_a_day_leave_the_registry_as_the_framework_does(
    servers: tuple[Server, Server],
) -> None:
    for server in servers:
        for _ in range(3):
            assert server.exchange(put("node-a", token=NODE_A))[0].split()[1] == b"200"
    fast, framework = (s.app.state.registry.sync.get_by_name("node-a") for s in servers)
    assert fast.last_seen == framework.last_seen
    assert fast.resource_version == framework.resource_version


def framework_endpoint(app: FastAPI, scope: dict[str, Any]) -> Any:
    """The endpoint the framework serves ``scope`` with (Starlette leaves it in the scope;
    a path matched with another method is answered 405 instead)."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    full = {
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http",
        "raw_path": scope["path"].encode(),
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        **scope,
    }
    asyncio.run(app(full, receive, send))
    return None if statuses == [405] else full.get("endpoint")


@pytest.mark.parametrize("method", ["PUT", "GET", "POST", "DELETE", "PATCH"])
@pytest.mark.parametrize(
    "path",
    [
        f"{API}/leases/node-a",
        f"{API}/leases/a.b-c",
        f"{API}/leases/",
        f"{API}/leases",
        f"{API}/leases/a/b",
        f"{API}/leases/a/",
        f"{API}/leasesx/a",
        "/apis/other/v1/leases/a",
    ],
)
def test_the_fast_path_takes_exactly_what_the_framework_routes_to_the_renewal(
    method: str, path: str
) -> None:
    fast = create_app(AsyncRegistry(clock=FakeClock()))
    assert isinstance(fast, RegistryApp)
    assert fast.fast_path is not None
    framework = create_app(AsyncRegistry(clock=FakeClock()), fast_renewals=False)
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    renews = framework_endpoint(framework, scope) is renew_lease
    assert fast.fast_path.serves(scope) is renews
    # Under a root path the framework routes (it matches the path without the root).
    assert not fast.fast_path.serves({**scope, "root_path": "/registry"})


def test_a_bug_is_answered_as_the_framework_answers_it(
    servers: tuple[Server, Server],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A renewal that fails for a reason no refusal names (a bug in the registry) gets the
    # same 500 Status from both paths, and its traceback goes to the server's log.
    async def broken(node_id: str) -> Any:
        raise RuntimeError("a bug")

    for server in servers:
        monkeypatch.setattr(server.app.state.registry, "heartbeat", broken)
    answered, expected = (server.exchange(put("node-a")) for server in servers)
    assert answered == expected
    assert answered[0].split()[1] == b"500"
    assert b"internal error: RuntimeError" in answered[2]
    assert servers[0].metrics() == servers[1].metrics()


def test_a_renewal_spelled_as_the_client_sends_it_is_not_parsed(
    servers: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Known valid without a parse: what every node sends at every interval (the parse was a
    # tenth of the fast path's own time). The cases above answer its edges as a parse does.
    parsed: list[bytes] = []
    parse = leases._parse_lease

    def counting(raw: bytes, *args: Any) -> Any:
        parsed.append(raw)
        return parse(raw, *args)

    monkeypatch.setattr(leases, "_parse_lease", counting)
    fast, _ = servers
    assert fast.exchange(put("node-a", client_body("node-a")))[0].split()[1] == b"200"
    assert parsed == []
    spaced = json.dumps(json.loads(client_body("node-a"))).encode()  # the same Lease, spaced
    assert fast.exchange(put("node-a", spaced))[0].split()[1] == b"200"
    assert parsed == [spaced]
