"""Load shedding over HTTP (a real uvicorn): seats per priority level, 429 with Retry-After.

A request holds its seat while its body is still coming, so a test holds seats exactly by
sending request heads whose bodies it keeps back; every socket is closed on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import passport
from live_server import make_app, serve
from node_registry import FakeClock, TooManyRequestsError
from node_registry.client import RegistryClient
from node_registry.server.flowcontrol import Level, classify

API = "/apis/ai_team.io/v1"


@contextlib.contextmanager
def held(base: str, heads: list[bytes]) -> Iterator[None]:
    """Requests whose bodies never come: each holds a seat of its level until closed."""
    host, port = base.removeprefix("http://").split(":")
    socks = []
    try:
        for head in heads:
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(head)
            socks.append(sock)
        time.sleep(0.2)  # the server has read every head
        yield
    finally:
        for sock in socks:
            sock.close()


def read_head() -> bytes:
    """A workload request that reads a body (a node type's creation, an operator's)."""
    return (
        f"POST {API}/nodetypes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()


def lease_head(name: str) -> bytes:
    return (
        f"PUT {API}/leases/{name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()


def shed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    body: dict[str, Any] = response.json()
    assert body["kind"] == "Status"
    assert body["reason"] == "TooManyRequests"
    return body


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[tuple[str, Any]]:
    app = make_app(
        clock=clock,
        controller={"period_seconds": 3600},
        server={"max_reads_inflight": 2, "max_node_writes_inflight": 2, "max_watch_streams": 1},
    )
    with serve(app) as base:
        yield base, app


def test_reads_beyond_their_seats_are_shed_while_renewals_go_through(
    limited: tuple[str, Any],
) -> None:
    base, app = limited
    with httpx.Client(base_url=base, timeout=5) as http:
        assert http.post(f"{API}/nodepassports", json=passport("n-1")).status_code == 201
        with held(base, [read_head(), read_head()]):
            body = shed(http.get(f"{API}/nodepassports"))
            assert "2 workload requests are in progress" in body["message"]
            # The client raises its own error class for it.
            client = RegistryClient(base, retries=0)
            with client, pytest.raises(TooManyRequestsError, match="shedding load"):
                client.find_nodes()
            # Node writes have seats of their own: a renewal is never behind the reads.
            assert http.put(f"{API}/leases/n-1", json={}).status_code == 200
            assert http.get("/healthz").status_code == 200  # probes are exempt
        deadline = time.monotonic() + 5  # the held requests end as their clients leave
        while http.get(f"{API}/nodepassports").status_code != 200:
            assert time.monotonic() < deadline, "the seats were never given back"
            time.sleep(0.05)
        metrics = http.get("/metrics").text
    assert 'node_registry_requests_shed_total{level="workload"}' in metrics
    assert 'node_registry_requests_shed_total{level="node-high"}' not in metrics
    # Shedding reads says nothing about hearing nodes: no saturation reported.
    assert app.state.registry.sync.saturated_at is None


def test_a_shed_renewal_counts_as_the_registry_being_saturated(
    limited: tuple[str, Any],
) -> None:
    base, app = limited
    with httpx.Client(base_url=base, timeout=5) as http:
        assert http.post(f"{API}/nodepassports", json=passport("n-1")).status_code == 201
        with held(base, [lease_head("n-1"), lease_head("n-1")]):
            body = shed(http.put(f"{API}/leases/n-1", json={}))
            assert "2 node-high requests are in progress" in body["message"]
    # The registry may have missed that node's heartbeat: it knows it was blind.
    assert app.state.registry.sync.saturated_at is not None


def test_open_watch_streams_are_bounded(limited: tuple[str, Any]) -> None:
    base, _ = limited
    with httpx.Client(base_url=base, timeout=5) as http:
        params = {"watch": "true", "timeoutSeconds": "5"}
        with http.stream("GET", f"{API}/nodepassports", params=params) as first:
            assert first.status_code == 200
            body = shed(http.get(f"{API}/nodepassports", params=params))
            assert "1 watch streams are open" in body["message"]
            # The open stream holds no read seat: lists still go through.
            listed = http.get(f"{API}/nodepassports")
            assert listed.status_code == 200
            assert json.loads(listed.text)["kind"] == "NodePassportList"


def test_a_late_event_loop_sheds_everything_but_node_writes_and_probes(clock: FakeClock) -> None:
    # Served from memory, a request never waits on a seat: it waits in the event loop's
    # queue, and the loop's lag is how long. (No lifespan here, so no probe overwrites
    # the lag the test sets.)
    app = make_app(clock=clock, server={"shed_reads_lag_seconds": 0.25})
    registry = app.state.registry
    registry.sync.register(passport("n-1"))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
            registry.loop_lag = 0.5
            body = shed(await http.get(f"{API}/nodepassports"))
            assert "event loop runs 0.50 s late (limit 0.25 s)" in body["message"]
            shed(await http.get("/metrics"))
            assert (await http.put(f"{API}/leases/n-1", json={})).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            registry.loop_lag = 0.01
            assert (await http.get(f"{API}/nodepassports")).status_code == 200

    asyncio.run(scenario())


def test_nodepassport_writes_are_node_writes_and_reads_are_workload() -> None:
    # The registry's own clients register, report status and leave through nodepassports
    # (#11): those writes must not be shed before reads are.
    for method, path in (
        ("POST", f"{API}/nodepassports"),
        ("PUT", f"{API}/nodepassports/a"),
        ("PATCH", f"{API}/nodepassports/a/status"),
        ("DELETE", f"{API}/nodepassports/a"),
        ("DELETE", f"{API}/nodepassports"),
    ):
        assert classify(method, path) is Level.NODE_HIGH, (method, path)
    assert classify("GET", f"{API}/nodepassports") is Level.WORKLOAD
    assert classify("GET", f"{API}/nodepassports/a/status") is Level.WORKLOAD
