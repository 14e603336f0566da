"""Dynamic capabilities (#12, seed 3.5): a node changes its claims at runtime without
re-registering — ``Registry.set_capabilities``, ``nodepassports/NAME/capabilities`` (the
node's own token), ``NodeAgent.add_capability``/``remove_capability`` — and watchers see it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml

from conftest import passport
from live_server import make_app, serve
from node_registry import FakeClock, Registry
from node_registry.agent import NodeAgent
from node_registry.errors import NotFoundError, ValidationError
from node_registry.registry import EventType, HealthState

API = "/apis/ai_team.io/v1"
ADMIN = "admin-token-0123456789abcdef"
CODER_01 = "node-coder-01-token-0123456789"
CODER_02 = "node-coder-02-token-0123456789"
WAIT = 10.0


def test_set_capabilities_changes_the_claims_in_place(registry: Registry) -> None:
    entry = registry.register(passport("coder-01", capabilities=("code_generation",)))
    watch = registry.watch()
    changed = registry.set_capabilities(
        entry.node_id,
        [{"name": "code_generation", "version": "1.0"}, {"name": "web_search", "params": {"n": 3}}],
    )
    event = watch.next(timeout=1)
    watch.close()
    assert event is not None
    assert (event.type, event.entry.name) == (EventType.MODIFIED, "coder-01")
    assert [c.name for c in event.entry.passport.spec.capabilities] == [
        "code_generation",
        "web_search",
    ]
    # The same node: same uid, registration time and status; only the claims changed.
    assert changed.registered_at == entry.registered_at
    assert changed.passport.status == entry.passport.status
    assert changed.resource_version > entry.resource_version
    assert [e.name for e in registry.find_nodes(selector="capability.web_search")] == ["coder-01"]
    with pytest.raises(ValidationError) as refused:
        registry.set_capabilities(entry.node_id, [{"name": "a"}, {"name": "a"}])
    assert "capability 'a' is listed more than once" in str(refused.value)
    with pytest.raises(NotFoundError):
        registry.set_capabilities("7d0b6c1e-4a5b-4c3d-9e8f-0123456789ab", [])


def test_a_capability_change_is_a_heartbeat(registry: Registry, clock: FakeClock) -> None:
    entry = registry.register(passport("coder-01", capabilities=("code_generation",)))
    clock.advance(25)
    registry.reconcile()
    assert registry.get(entry.node_id).health_state is HealthState.NOT_READY
    changed = registry.set_capabilities(entry.node_id, [{"name": "web_search"}])
    assert changed.health_state is HealthState.ALIVE
    assert changed.passport.status.phase.value == "Running"  # no NotReady overlay left


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("capabilities") / "tokens.yaml"
    entries = [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": CODER_01, "role": "node", "node": "coder-01"},
        {"token": CODER_02, "role": "node", "node": "coder-02"},
    ]
    tokens.write_text(yaml.safe_dump({"tokens": entries}), encoding="utf-8")
    tokens.chmod(0o600)
    with serve(make_app(clock=FakeClock(), server={"tokens_file": tokens})) as url:
        yield url


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _body(*names: str) -> dict[str, Any]:
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodeCapabilities",
        "spec": {"capabilities": [{"name": n} for n in names]},
    }


def test_the_capabilities_subresource(base_url: str) -> None:
    url = f"{API}/nodepassports/coder-01/capabilities"
    with httpx.Client(base_url=base_url, timeout=10) as http:
        doc = passport("coder-01", capabilities=("code_generation",))
        assert http.post(f"{API}/nodepassports", json=doc, headers=_as(CODER_01)).status_code in (
            200,
            201,
        )
        got = http.get(url, headers=_as(ADMIN)).json()
        assert got["kind"] == "NodeCapabilities"
        assert got["spec"]["capabilities"] == [
            {"name": "code_generation", "version": "1.0", "params": {}}
        ]

        other = http.put(url, json=_body("web_search"), headers=_as(CODER_02))
        assert other.status_code == 403, other.text
        put = http.put(url, json=_body("code_generation", "web_search"), headers=_as(CODER_01))
        assert put.status_code == 200, put.text
        assert [c["name"] for c in put.json()["spec"]["capabilities"]] == [
            "code_generation",
            "web_search",
        ]
        node = http.get(f"{API}/nodepassports/coder-01", headers=_as(ADMIN)).json()
        assert [c["name"] for c in node["spec"]["capabilities"]] == [
            "code_generation",
            "web_search",
        ]
        assert int(node["metadata"]["resourceVersion"]) == int(
            put.json()["metadata"]["resourceVersion"]
        )

        invalid = http.put(url, json=_body("not valid!"), headers=_as(CODER_01))
        assert invalid.status_code == 422, invalid.text
        assert invalid.json()["details"]["causes"][0]["field"] == "spec.capabilities[0].name"
        wrong_kind = http.put(url, json={**_body("x"), "kind": "Scale"}, headers=_as(CODER_01))
        assert wrong_kind.status_code == 422
        assert http.put(url, json=_body(), headers=_as(ADMIN)).status_code == 200
        assert http.get(url, headers=_as(ADMIN)).json()["spec"]["capabilities"] == []


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT} s: {what}")
        time.sleep(0.02)


def test_the_agent_adds_and_removes_capabilities_and_watchers_see_it(base_url: str) -> None:
    doc = passport("coder-02", capabilities=("code_generation",))
    agent = NodeAgent(doc, endpoints=base_url, token=CODER_02, detect=False, interval=1)
    events: list[tuple[str, list[str]]] = []
    with (
        httpx.Client(base_url=base_url, timeout=10, headers=_as(ADMIN)) as http,
        agent.running(),
    ):
        eventually(lambda: agent.registered, "the agent registered")
        eventually(
            lambda: (
                http.get(f"{API}/nodepassports/coder-02").json()["status"]["phase"] == "Running"
            ),
            "the agent reported Running",
        )
        since = http.get(f"{API}/nodepassports/coder-02").json()["metadata"]["resourceVersion"]

        def follow() -> None:
            params = {
                "watch": "true",
                "resourceVersion": since,
                "fieldSelector": "metadata.name=coder-02",
                "timeoutSeconds": "5",
            }
            with http.stream("GET", f"{API}/nodepassports", params=params) as stream:
                for line in stream.iter_lines():
                    event = json.loads(line)
                    caps = [c["name"] for c in event["object"]["spec"]["capabilities"]]
                    events.append((event["type"], caps))
                    if len(events) == 2:
                        return

        watcher = threading.Thread(target=follow)
        watcher.start()
        agent.add_capability("web_search", "2.1", {"engines": ["ddg"]})
        eventually(lambda: len(events) >= 1, "the watcher saw the capability added")
        assert agent.remove_capability("code_generation") is True
        assert agent.remove_capability("nothing") is False
        watcher.join(WAIT)
        assert events == [
            ("MODIFIED", ["code_generation", "web_search"]),
            ("MODIFIED", ["web_search"]),
        ]
        stored = http.get(f"{API}/nodepassports/coder-02/capabilities").json()
        assert stored["spec"]["capabilities"] == [
            {"name": "web_search", "version": "2.1", "params": {"engines": ["ddg"]}}
        ]
        assert [c.name for c in agent.capabilities] == ["web_search"]
        with pytest.raises(ValidationError):
            agent.add_capability("not valid!")


def test_a_registration_carries_the_claims_as_they_are(base_url: str) -> None:
    doc = passport("coder-01", capabilities=("code_generation",))
    agent = NodeAgent(doc, endpoints=base_url, token=CODER_01, detect=False, interval=1)
    agent.add_capability("python", "3.12")  # before it runs: the registration carries it
    agent.remove_capability("code_generation")
    with (
        httpx.Client(base_url=base_url, timeout=10, headers=_as(ADMIN)) as http,
        agent.running(),
    ):
        eventually(lambda: agent.registered, "the agent registered")
        stored = http.get(f"{API}/nodepassports/coder-01/capabilities").json()
        assert stored["spec"]["capabilities"] == [
            {"name": "python", "version": "3.12", "params": {}}
        ]
