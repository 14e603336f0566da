"""``find_nodes`` over the Kubernetes API, nothing lost from the embedded call: kind, label
selector, ``only_healthy`` (``status.schedulable``) and ``only_verified``
(``status.verification.required``, #12) on nodepassports list and watch, in the clients, the
informer and on the real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import passport, probe_result
from live_server import make_app, serve
from node_registry import FakeClock, Registry
from node_registry.client import Informer, RegistryClient
from node_registry.client.aio import AsyncRegistryClient
from node_registry.client.objects import RegistryEntry
from node_registry.errors import BadRequestError
from node_registry.kube.fields import parse_field_selector
from node_registry.verification import VerificationState

API = "/apis/ai_team.io/v1"
NP = f"{API}/nodepassports"
CODE = "capability.code_generation=true"
VERIFIED = "status.verification.required=true"


def _result(registry: Registry, name: str, state: VerificationState) -> None:
    result = probe_result(registry, name, "code_generation", state.value)
    registry.record_verification(result.node_uid, [result])


@pytest.fixture
def served() -> Iterator[tuple[str, Registry, FakeClock]]:
    """right (code_generation Verified), wrong (Failed), fresh (never probed), a tool
    (no claim), and pending (phase Pending: not schedulable)."""
    clock = FakeClock()
    app = make_app(clock, controller={"period_seconds": 3600})
    registry: Registry = app.state.registry.sync
    for name in ("right-01", "wrong-01", "fresh-01"):
        registry.register(passport(name, capabilities=("code_generation",)))
    registry.register(passport("tool-01", kind="tool", capabilities=()))
    registry.register(passport("pending-01", phase="Pending", capabilities=()))
    _result(registry, "right-01", VerificationState.VERIFIED)
    _result(registry, "wrong-01", VerificationState.FAILED)
    with serve(app) as url:
        yield url, registry, clock


def _names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [i["metadata"]["name"] for i in response.json()["items"]]


def _list(url: str, **params: str) -> httpx.Response:
    return httpx.get(url + NP, params=params, timeout=10)


def test_only_verified_is_a_field_selector_on_list(
    served: tuple[str, Registry, FakeClock],
) -> None:
    url, registry, _ = served
    both = {"labelSelector": CODE, "fieldSelector": VERIFIED}
    assert _names(_list(url, labelSelector=CODE)) == ["fresh-01", "right-01"]
    assert _names(_list(url, **both)) == ["right-01"]
    # Untrusted nodes go; nodes claiming nothing stay (nothing of theirs is unverified).
    assert _names(_list(url, fieldSelector=VERIFIED)) == [
        "fresh-01",
        "pending-01",
        "right-01",
        "tool-01",
    ]
    # A negative capability term reads the strict labels too: fresh's claim does not count.
    strict = _list(url, labelSelector="!capability.code_generation", fieldSelector=VERIFIED)
    assert _names(strict) == ["fresh-01", "pending-01", "tool-01"]
    # "=false" and "!=true" are the plain reading; the embedded call answers the same.
    plain = ["fresh-01", "right-01"]
    assert _names(_list(url, labelSelector=CODE, fieldSelector=VERIFIED[:-4] + "false")) == plain
    assert _names(_list(url, labelSelector=CODE, fieldSelector=VERIFIED.replace("=", "!="))) == [
        *plain
    ]
    embedded = registry.find_nodes(selector=CODE, only_verified=True)
    assert [e.name for e in embedded] == ["right-01"]
    # Pages of a strict list come from the strict answer.
    first = _list(url, fieldSelector=VERIFIED, limit="2").json()
    token = first["metadata"]["continue"]
    rest = httpx.get(url + NP, params={"continue": token, "limit": "5"}, timeout=10)
    assert [i["metadata"]["name"] for i in first["items"]] + _names(rest) == [
        "fresh-01",
        "pending-01",
        "right-01",
        "tool-01",
    ]


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("status.verification.required=yes", "status.verification.required is true or false"),
        ("status.schedulable=1", "status.schedulable is true or false, not '1'"),
        (
            "status.verification.required=true,status.verification.required=false",
            "asked both true and false",
        ),
        ("status.verified=true", "field label not supported: status.verified"),
    ],
)
def test_bad_values_are_a_400_naming_the_field(
    served: tuple[str, Registry, FakeClock], selector: str, message: str
) -> None:
    url = served[0]
    for params in ({"fieldSelector": selector}, {"fieldSelector": selector, "watch": "true"}):
        refused = _list(url, **params)
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert (body["kind"], body["reason"], body["code"]) == ("Status", "BadRequest", 400)
        assert message in body["message"]
    with pytest.raises(BadRequestError):
        parse_field_selector(selector)


def test_schedulable_is_only_healthy(served: tuple[str, Registry, FakeClock]) -> None:
    url, registry, clock = served
    embedded = [e.name for e in registry.find_nodes(only_healthy=True)]
    assert "pending-01" not in embedded
    assert _names(_list(url, fieldSelector="status.schedulable=true")) == embedded
    assert _names(_list(url, fieldSelector="status.schedulable!=true")) == ["pending-01"]
    # Ready=False makes a Running, heartbeating node unschedulable: no other field says so.
    registry.update_status(
        registry.id_of("tool-01"), conditions=[{"type": "Ready", "status": "False"}]
    )
    assert "tool-01" not in _names(_list(url, fieldSelector="status.schedulable=true"))
    clock.advance(registry.ttl_seconds + 1)
    assert _names(_list(url, fieldSelector="status.schedulable=true")) == []


def _watch_lines(url: str, **params: str) -> list[dict[str, Any]]:
    params = {"watch": "true", "resourceVersion": "0", "timeoutSeconds": "1", **params}
    with httpx.stream("GET", url + NP, params=params, timeout=10) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line) for line in response.iter_lines() if line]


def test_only_verified_on_watch(served: tuple[str, Registry, FakeClock]) -> None:
    url, registry, _ = served
    since = registry.resource_version
    initial = _watch_lines(url, labelSelector=CODE, fieldSelector=VERIFIED)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [
        ("ADDED", "right-01")
    ]
    # fresh-01 is verified: it enters the strict selection; right-01 fails: it leaves it.
    _result(registry, "fresh-01", VerificationState.VERIFIED)
    _result(registry, "right-01", VerificationState.FAILED)
    registry.heartbeat(registry.id_of("wrong-01"))  # its lease: not a change anyone sees
    events = _watch_lines(
        url, labelSelector=CODE, fieldSelector=VERIFIED, resourceVersion=str(since)
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "fresh-01"),
        ("DELETED", "right-01"),
    ]
    # The plain watch saw right-01 drop out too (a Failed claim never matches), not fresh-01
    # come in (it matched already).
    plain = _watch_lines(url, labelSelector=CODE, resourceVersion=str(since))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in plain] == [
        ("MODIFIED", "fresh-01"),
        ("DELETED", "right-01"),
    ]


def test_the_clients_and_the_informer_ask_only_verified(
    served: tuple[str, Registry, FakeClock],
) -> None:
    url = served[0]

    def names(entries: list[Any]) -> list[str]:
        return [e.name for e in entries]

    with RegistryClient(url) as client:
        assert names(client.find_nodes(selector=CODE, only_verified=True)) == ["right-01"]
        assert names(client.find_nodes(selector=CODE)) == ["fresh-01", "right-01"]
        healthy = names(client.find_nodes(only_healthy=True, only_verified=True))
        assert healthy == ["fresh-01", "right-01", "tool-01"]

    async def strict() -> list[RegistryEntry]:
        async with AsyncRegistryClient(url) as aclient:
            return await aclient.find_nodes(kind="agent", selector=CODE, only_verified=True)

    assert names(asyncio.run(strict())) == ["right-01"]
    with Informer(url) as informer:
        assert informer.wait_synced(10)
        assert names(informer.find_nodes(selector=CODE, only_verified=True)) == ["right-01"]
        # The cache reads labels as the server does: a Failed claim never matches.
        assert names(informer.find_nodes(selector=CODE)) == ["fresh-01", "right-01"]
        assert names(informer.find_nodes(only_verified=True)) == [
            "fresh-01",
            "pending-01",
            "right-01",
            "tool-01",
        ]
