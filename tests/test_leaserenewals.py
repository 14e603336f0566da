"""Batched lease renewals (``POST leaserenewals``) against a real server, and the clients'
``heartbeat_many``: each lease authorized on its own, partial failure, the limits.

One uvicorn server on loopback with a tokens file, over a FakeClock: a renewal is seen by
the node's ``lastSeen`` moving to the clock's time, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import passport
from live_server import make_app, serve
from node_registry import FakeClock
from node_registry.client import AsyncRegistryClient, RegistryClient, Renewals
from node_registry.errors import ForbiddenError, NotFoundError, UnauthorizedError
from node_registry.registry import Registry
from node_registry.server.flowcontrol import Level, classify
from node_registry.server.routes.leaserenewals import LeaseRenewalAnswer

API = "/apis/ai_team.io/v1"
RENEWALS = f"{API}/leaserenewals"
ADMIN = "admin-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
HOST_A = "node-a-token-0123456789abcdef"
PINNED = "node-p-token-0123456789abcdef"
TOKENS = {
    "tokens": [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": READER, "role": "reader", "name": "dashboard"},
        {"token": HOST_A, "role": "node", "node": "agent-a"},
        {
            "token": PINNED,
            "role": "node",
            "node": "agent-p",
            "uid": "0b8f7a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        },
    ]
}
NAMES = ("agent-a", "agent-b", "agent-c", "agent-p")
LIMIT = 5


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def renewal(*names: str) -> dict[str, Any]:
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "LeaseRenewal",
        "spec": {"leases": [{"name": n} for n in names]},
    }


class Server:
    def __init__(self, base: str, registry: Registry, clock: FakeClock) -> None:
        self.base = base
        self.registry = registry
        self.clock = clock
        self.http = httpx.Client(base_url=base, timeout=5)

    def post(self, doc: Any, token: str = ADMIN) -> httpx.Response:
        return self.http.post(RENEWALS, headers=bearer(token), json=doc)

    def last_seen(self) -> dict[str, Any]:
        return {n: self.registry.get_by_name(n).last_seen for n in NAMES}

    def later(self) -> None:
        self.clock.advance(7)


@pytest.fixture
def server(tmp_path: Path, clock: FakeClock) -> Iterator[Server]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    tokens.chmod(0o600)
    app = make_app(
        clock=clock,
        controller={"period_seconds": 3600},
        server={
            "tokens_file": str(tokens),
            "max_renewals_per_request": LIMIT,
            "max_body_bytes": 2048,
        },
    )
    with serve(app) as base:
        for name in NAMES:
            created = httpx.post(
                f"{base}{API}/nodepassports", json=passport(name), headers=bearer(ADMIN), timeout=5
            )
            assert created.status_code == 201, created.text
        served = Server(base, app.state.registry.sync, clock)
        try:
            yield served
        finally:
            served.http.close()


def results(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body = response.json()
    LeaseRenewalAnswer.model_validate(body)  # the answer is what the API document says
    assert body["kind"] == "LeaseRenewal"
    assert body["status"]["leaseDurationSeconds"] == 30
    return {r["name"]: r for r in body["status"]["results"]}


def test_an_admin_renews_many_leases_in_one_request(server: Server) -> None:
    server.later()
    now = server.clock.now()
    answer = results(server.post(renewal("agent-a", "agent-b", "agent-c")))
    assert list(answer) == ["agent-a", "agent-b", "agent-c"]  # in the order asked
    assert all(r["renewTime"] == now.isoformat() for r in answer.values())
    seen = server.last_seen()
    assert seen["agent-a"] == seen["agent-b"] == seen["agent-c"] == now
    assert seen["agent-p"] < now  # not asked for: not renewed
    metrics = server.http.get("/metrics", headers=bearer(ADMIN)).text
    assert "node_registry_heartbeats_total 3.0" in metrics


def test_each_lease_is_authorized_on_its_own(server: Server) -> None:
    server.later()
    now = server.clock.now()
    answer = results(server.post(renewal("agent-a", "agent-b"), token=HOST_A))
    assert answer["agent-a"]["renewTime"] == now.isoformat()
    refused = answer["agent-b"]["error"]
    assert refused["kind"] == "Status"
    assert (refused["code"], refused["reason"]) == (403, "Forbidden")
    assert "may not change node 'agent-b', only 'agent-a'" in refused["message"]
    # The refusal equals the single PUT's.
    single = server.http.put(f"{API}/leases/agent-b", json={}, headers=bearer(HOST_A))
    assert single.status_code == 403
    assert single.json() == refused
    seen = server.last_seen()
    assert seen["agent-a"] == now
    assert seen["agent-b"] < now
    # A token pinned to a uid renews nothing of another uid under its name.
    pinned = results(server.post(renewal("agent-p"), token=PINNED))["agent-p"]["error"]
    assert pinned["code"] == 403
    assert "bound to uid" in pinned["message"]


def test_a_partial_failure_renews_the_rest(server: Server) -> None:
    server.later()
    now = server.clock.now()
    answer = results(server.post(renewal("ghost", "agent-a", "phantom")))
    assert answer["agent-a"]["renewTime"] == now.isoformat()
    for name in ("ghost", "phantom"):
        error = answer[name]["error"]
        assert (error["code"], error["reason"]) == (404, "NotFound")
        assert error["details"]["name"] == name
    assert server.last_seen()["agent-a"] == now
    metrics = server.http.get("/metrics", headers=bearer(ADMIN)).text
    assert 'node_registry_refusals_total{reason="NotFound"} 2.0' in metrics


@pytest.mark.parametrize(
    ("token", "code", "reason"),
    [(None, 401, "Unauthorized"), ("x" * 30, 401, "Unauthorized"), (READER, 403, "Forbidden")],
)
def test_a_caller_who_may_renew_nothing_is_refused_as_a_whole(
    server: Server, token: str | None, code: int, reason: str
) -> None:
    before = server.last_seen()
    headers = bearer(token) if token else {}
    response = server.http.post(RENEWALS, json=renewal("agent-a"), headers=headers)
    assert response.status_code == code, response.text
    assert response.json()["reason"] == reason
    server.later()
    assert server.last_seen() == before


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (renewal(*(f"agent-{i}" for i in range(LIMIT + 1))), 422, "spec.leases"),
        (renewal("agent-a", "agent-b", "agent-a"), 422, "spec.leases[2].name"),
        (renewal(), 422, "spec.leases"),
        ({**renewal("agent-a"), "kind": "Lease"}, 422, "kind"),
        ({**renewal("agent-a"), "extra": 1}, 422, "extra"),
        ({"apiVersion": "ai_team.io/v1", "kind": "LeaseRenewal"}, 422, "spec"),
        (renewal("a" * 300), 422, "spec.leases[0].name"),
    ],
    ids=["over the count", "twice", "none", "wrong kind", "unknown field", "no spec", "long"],
)
def test_a_bad_request_is_refused_before_anything_is_renewed(
    server: Server, body: dict[str, Any], code: int, field: str
) -> None:
    server.later()
    before = server.last_seen()
    response = server.post(body)
    assert response.status_code == code, response.text
    status = response.json()
    assert status["reason"] == "Invalid"
    assert field in [c["field"] for c in status["details"]["causes"]], status
    assert server.last_seen() == before


def test_the_body_limits_and_media_types_are_those_of_every_write(server: Server) -> None:
    before = server.last_seen()
    big = json.dumps(renewal("agent-a")).encode()[:-1] + b" " * 2048 + b"}"
    too_large = server.http.post(
        RENEWALS, content=big, headers={**bearer(ADMIN), "Content-Type": "application/json"}
    )
    assert too_large.status_code == 413
    assert too_large.json()["reason"] == "RequestEntityTooLarge"
    text = server.http.post(
        RENEWALS,
        content=b"agent-a",
        headers={**bearer(ADMIN), "Content-Type": "text/plain"},
    )
    assert text.status_code == 415
    malformed = server.http.post(
        RENEWALS,
        content=b'{"spec": ',
        headers={**bearer(ADMIN), "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert server.last_seen() == before
    # YAML, as every other write takes it.
    server.later()
    as_yaml = server.http.post(
        RENEWALS,
        content=yaml.safe_dump(renewal("agent-c")).encode(),
        headers={**bearer(ADMIN), "Content-Type": "application/yaml"},
    )
    assert results(as_yaml)["agent-c"]["renewTime"] == server.clock.now().isoformat()


def test_batched_renewals_are_node_high_as_single_ones() -> None:
    assert classify("POST", RENEWALS) is Level.NODE_HIGH
    assert classify("POST", f"{API}/leases/agent-a") is Level.NODE_HIGH


def test_the_sync_client_renews_many_in_requests_of_its_size(server: Server) -> None:
    server.later()
    now = server.clock.now()
    with RegistryClient(server.base, token=ADMIN, retries=0) as client:
        done = client.heartbeat_many(
            ["agent-a", "ghost", "agent-b", "agent-c", "agent-a"], per_request=2
        )
    assert isinstance(done, Renewals)
    assert done.renewed == {"agent-a": now, "agent-b": now, "agent-c": now}
    assert list(done.refused) == ["ghost"]
    assert isinstance(done.refused["ghost"], NotFoundError)
    with RegistryClient(server.base, token=HOST_A, retries=0) as client:
        mine = client.heartbeat_many(["agent-a", "agent-b"])
    assert list(mine.renewed) == ["agent-a"]
    assert isinstance(mine.refused["agent-b"], ForbiddenError)
    with (
        RegistryClient(server.base, token=READER, retries=0) as client,
        pytest.raises(ForbiddenError),
    ):
        client.heartbeat_many(["agent-a"])


def test_the_async_client_renews_many(server: Server) -> None:
    server.later()
    now = server.clock.now()

    async def renew() -> Renewals:
        async with AsyncRegistryClient(server.base, token=ADMIN, retries=0) as client:
            return await client.heartbeat_many(NAMES)

    done = asyncio.run(renew())
    assert done.renewed == dict.fromkeys(NAMES, now)
    assert not done.refused

    async def anonymous() -> Renewals:
        async with AsyncRegistryClient(server.base, retries=0) as client:
            return await client.heartbeat_many(["agent-a"])

    with pytest.raises(UnauthorizedError):
        asyncio.run(anonymous())
