"""The client library against a real server: same answers as the embedded registry, errors
mapped back to the package's own classes, endpoint failover, watch resume and 410."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import passport
from live_server import free_port, make_app, serve
from node_registry import (
    FakeClock,
    NotFoundError,
    Registry,
    RevisionCompactedError,
    SelectorError,
    UnsupportedVersionError,
    ValidationError,
    load_settings,
)
from node_registry.client import AsyncRegistryClient, RegistryClient
from node_registry.client.settings import DEFAULT_URL, ClientSettings, tls_verify
from node_registry.errors import ConfigError, RegistryUnreachableError

DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens there
SEED_SELECTORS: list[Any] = [
    {"matchLabels": {"capability.code_generation": "true", "capability.python": "true"}},
    {
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["eu-west-1"]},
            {"key": "memory", "operator": "Gt", "values": ["4Gi"]},
        ]
    },
    "capability.code_generation,zone!=us-east-1",
    None,
]


def _fleet() -> list[dict[str, Any]]:
    return [
        passport("coder-01"),
        passport("coder-02", resources={"memory": "2Gi"}),
        passport("coder-03", labels={"zone": "us-east-1"}),
        passport("writer-01", capabilities=("text_generation",)),
        passport("db-01", kind="storage", capabilities=("sql",)),
    ]


@pytest.fixture
def url(clock: FakeClock) -> Iterator[str]:
    with serve(make_app(clock, controller={"period_seconds": 3600})) as base:
        yield base


def test_find_nodes_answers_as_the_embedded_registry(url: str, clock: FakeClock) -> None:
    embedded = Registry(clock=clock, settings=load_settings())
    with RegistryClient(url) as client:
        for doc in _fleet():
            embedded.register(doc)
            client.register(doc)
        for selector in SEED_SELECTORS:
            for kind in (None, "agent", "storage"):
                for healthy in (False, True):
                    local = embedded.find_nodes(kind=kind, selector=selector, only_healthy=healthy)
                    remote = client.find_nodes(kind=kind, selector=selector, only_healthy=healthy)
                    assert [e.name for e in remote] == [e.name for e in local], (selector, kind)
                    assert [e.health_state for e in remote] == [e.health_state for e in local]


def test_errors_come_back_as_the_package_classes(url: str) -> None:
    with RegistryClient(url) as client:
        client.register(passport("coder-01"))
        with pytest.raises(NotFoundError, match="nobody"):
            client.get("nobody")
        with pytest.raises(NotFoundError):
            client.heartbeat("nobody")
        with pytest.raises(UnsupportedVersionError) as caught:
            client.register({**passport("x"), "apiVersion": "ai_team.io/v2"})
        assert caught.value.errors[0].loc == "apiVersion"
        with pytest.raises(ValidationError) as invalid:
            client.register(passport("Bad_Name"))
        assert invalid.value.errors[0].loc == "metadata.name"
        with pytest.raises(SelectorError):  # refused before any request is sent
            client.find_nodes(selector="zone in (a")


def test_failover_moves_to_the_endpoint_that_answers(url: str) -> None:
    with RegistryClient([DEAD, url], retries=0) as client:
        client.register(passport("coder-01"))
        assert client.endpoint == url
    with RegistryClient([DEAD, url], retries=0) as client:
        with pytest.raises(NotFoundError):  # a definite "no" still names the live endpoint
            client.get("nobody")
        assert client.endpoint == url
    with (
        RegistryClient([DEAD], retries=1, backoff=0.01) as client,
        pytest.raises(RegistryUnreachableError, match="no registry endpoint answered"),
    ):
        client.get("coder-01")


def test_watch_resumes_and_a_restarted_registry_is_a_410(clock: FakeClock) -> None:
    port = free_port()
    with serve(make_app(clock), port=port) as base, RegistryClient(base) as client:
        client.register(passport("coder-01"))
        client.register(passport("coder-02"))
        events = list(client.watch(1, timeout_seconds=1))
        assert [(e.type.value, e.entry.name) for e in events] == [("ADDED", "coder-02")]
    # A new in-memory registry on the same address has a new, shorter history.
    with serve(make_app(clock), port=port) as base, RegistryClient(base) as client:
        with pytest.raises(RevisionCompactedError, match="list again"):
            list(client.watch(2, timeout_seconds=1))
        assert client.list_nodes().resource_version == 0


def test_list_nodes_pages_through_one_snapshot(url: str) -> None:
    with RegistryClient(url) as client:
        for i in range(7):
            client.register(passport(f"node-{i}"))
        listed = client.list_nodes(page_size=3)
        assert [e.name for e in listed.items] == [f"node-{i}" for i in range(7)]
        assert listed.resource_version == 7


def test_async_client(url: str) -> None:
    async def scenario() -> list[str]:
        async with AsyncRegistryClient([DEAD, url], retries=0) as client:
            for doc in _fleet():
                await client.register(doc)
            await client.heartbeat("coder-01")
            await client.update_status("coder-01", current_tasks=2)
            entry = await client.get("coder-01")
            assert entry.passport.status.current_tasks == 2
            await client.deregister("db-01")
            names = [e.name for e in await client.find_nodes(kind="agent", only_healthy=True)]
            events = [e async for e in client.watch(1, timeout_seconds=1)]
            assert events[-1].type.value == "DELETED"
            # From 0 (Kubernetes' "any version"): the nodes there are now, as ADDED.
            state = [e async for e in client.watch(0, timeout_seconds=1)]
            assert {e.type.value for e in state} == {"ADDED"}
            assert [e.entry.name for e in state] == [
                "coder-01",
                "coder-02",
                "coder-03",
                "writer-01",
            ]
            return names

    assert asyncio.run(scenario()) == ["coder-01", "coder-02", "coder-03", "writer-01"]


def test_settings_from_arguments_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_REGISTRY_URL", "")
    assert ClientSettings.build(None, None, 5, 3, 0.2).endpoints == (DEFAULT_URL,)
    monkeypatch.setenv("NODE_REGISTRY_URL", "http://a:1, http://b:2/")
    monkeypatch.setenv("NODE_REGISTRY_TOKEN", "t0ken")
    built = ClientSettings.build(None, None, 5, 3, 0.2)
    assert built.endpoints == ("http://a:1", "http://b:2")
    assert built.headers() == {"Authorization": "Bearer t0ken"}
    with pytest.raises(ConfigError, match="must start with http"):
        ClientSettings.build("ftp://x", None, 5, 3, 0.2)
    # Full jitter under a ceiling doubling from the backoff to 7 s (client.backoff).
    rng = random.Random(7)
    for attempt, top in zip((1, 2, 3, 6, 7, 5000), (0.2, 0.4, 0.8, 6.4, 7.0, 7.0), strict=True):
        delays = [built.delay(attempt, rng) for _ in range(200)]
        assert 0 <= min(delays) < top / 4
        assert top * 3 / 4 < max(delays) <= top


def test_tls_verify_accepts_a_ca_path_without_deprecated_httpx_use(tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    assert isinstance(tls_verify(str(path)), ssl.SSLContext)
    assert tls_verify(False) is False


def test_tls_is_built_once_and_only_for_https() -> None:
    plain = ClientSettings.build("http://a:1,http://b:2", None, 5, 3, 0.2)
    assert plain.tls(True) is False  # no TLS happens: no CA bundle to load per client
    mixed = ClientSettings.build("http://a:1,https://b:2", None, 5, 3, 0.2)
    assert isinstance(mixed.tls(True), ssl.SSLContext)
    assert mixed.tls(False) is False


def test_the_client_and_the_agent_load_no_registry() -> None:
    # #13: "the client light". The import-linter contract keeps the imports out; this is what
    # a program that only talks to a registry service actually loads.
    code = (
        "import sys, node_registry.client, node_registry.agent\n"
        "heavy = ('node_registry.registry', 'node_registry.kube',"
        " 'node_registry.server', 'fastapi')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout


class BreaksAfterBookmark(httpx.BaseTransport):
    """A real transport that cuts the first watch stream right after a BOOKMARK of version
    ``at`` or later has gone through (as a dropped connection would), and notes each watch's
    ``resourceVersion``."""

    def __init__(self, at: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.at = at
        self.opened: list[str] = []
        self.cut = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.params.get("watch") != "true":
            return response
        self.opened.append(request.url.params["resourceVersion"])
        if self.cut:
            return response
        self.cut = True
        lines = response.stream

        def cut_after_bookmark() -> Iterator[bytes]:
            for chunk in lines:  # type: ignore[union-attr]
                yield chunk
                for line in chunk.splitlines():
                    doc = json.loads(line)
                    rv = int(doc["object"]["metadata"]["resourceVersion"])
                    if doc["type"] == "BOOKMARK" and rv >= self.at:
                        raise httpx.ReadError("connection reset (by the test)")

        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Stream(cut_after_bookmark(), response),
        )

    def close(self) -> None:
        self.inner.close()


class _Stream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes], response: httpx.Response) -> None:
        self.chunks = chunks
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        self.response.close()


def test_a_broken_watch_resumes_from_the_last_bookmark(clock: FakeClock) -> None:
    app = make_app(clock, server={"bookmark_interval_seconds": 0.1})
    with serve(app) as base, RegistryClient(base) as writer:
        start = writer.register(passport("coder-01")).resource_version
        # Filtered out of the watch below: only a BOOKMARK tells the watcher it happened.
        skipped = writer.register(passport("coder-02")).resource_version
        transport = BreaksAfterBookmark(skipped)
        seen: list[Any] = []
        with RegistryClient(base, retries=1, backoff=0.01, transport=transport) as client:

            def follow() -> None:
                seen.extend(client.watch(start, timeout_seconds=2, kind="storage"))

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            deadline = time.monotonic() + 5
            while len(transport.opened) < 2:
                assert time.monotonic() < deadline, transport.opened
                time.sleep(0.01)
            db = writer.register(passport("db-01", kind="storage")).resource_version
            thread.join(5)  # the bounded watch ends by itself
            assert not thread.is_alive()
        # Reopened from the bookmark's version, not from the first event's or the start's.
        assert transport.opened[:2] == [str(start), str(skipped)]
        assert [(e.type.value, e.entry.name, e.resource_version) for e in seen] == [
            ("ADDED", "db-01", db)
        ]


def test_the_public_names_are_the_ones_meant() -> None:
    import node_registry.client as client_package

    assert sorted(client_package.__all__) == [
        "AsyncInformer",
        "AsyncRegistryClient",
        "EventType",
        "HealthTracker",
        "Informer",
        "NodeCache",
        "NodeList",
        "RegistryClient",
        "RegistryEntry",
        "Renewals",
        "WatchEvent",
    ]
    for name in client_package.__all__:
        assert getattr(client_package, name).__module__.startswith("node_registry.client.")


class Recording(httpx.BaseTransport):
    """A real transport that notes each request's method, path and content type."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: list[tuple[str, str, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path, request.headers.get("content-type")))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_every_call_speaks_the_kubernetes_api(url: str) -> None:
    # #11: nodepassports and leases only; the registry's older /nodes routes are not used.
    recording = Recording()
    with RegistryClient(url, transport=recording) as client:
        created = client.register(passport("coder-01"))
        assert created.passport.status.phase.value == "Running"
        client.heartbeat("coder-01")
        reported = client.update_status(
            "coder-01",
            current_tasks=3,
            conditions=[{"type": "GPUHealthy", "status": "True", "reason": "NvmlOK"}],
        )
        assert reported.passport.status.current_tasks == 3
        # Merged by type, as the embedded registry's update_status: Ready stays beside it.
        client.update_status("coder-01", conditions=[{"type": "Ready", "status": "True"}])
        types = {c.type for c in client.get("coder-01").passport.status.conditions}
        assert types == {"GPUHealthy", "Ready"}
        client.find_nodes(kind="agent", selector="zone=eu-west-1", only_healthy=True)
        client.list_nodes(page_size=1)
        list(client.watch(created.resource_version, timeout_seconds=1))
        client.deregister("coder-01")
        with pytest.raises(NotFoundError):
            client.get("coder-01")
    api = "/apis/ai_team.io/v1"
    assert {(method, path) for method, path, _ in recording.seen} == {
        ("POST", f"{api}/nodepassports"),
        ("PUT", f"{api}/leases/coder-01"),
        ("PATCH", f"{api}/nodepassports/coder-01/status"),
        ("GET", f"{api}/nodepassports/coder-01"),
        ("GET", f"{api}/nodepassports"),
        ("DELETE", f"{api}/nodepassports/coder-01"),
    }
    patches = {kind for method, _, kind in recording.seen if method == "PATCH"}
    assert patches == {"application/strategic-merge-patch+json"}
