"""Capability verification wired into the registry (#12): results stored with the node as
registry-owned status, the verifier role, selectors and ``find_nodes(only_verified=True)``,
the ``verification.require`` policy, and the whole loop with real servers on loopback:
the registry, the example agent answering probes (right and wrong), ``node-registry verify``
re-verifying when a node adds a capability at runtime."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from conftest import passport
from etcd_server import EtcdServer
from live_server import make_app, serve
from node_registry import FakeClock, Registry, load_settings
from node_registry.agent import NodeAgent
from node_registry.cli.verify import RegistrySink, run_verifier
from node_registry.client import AsyncRegistryClient, RegistryClient
from node_registry.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from node_registry.passport import NodePassport, load_passport
from node_registry.passport.verification import params_digest
from node_registry.registry import EventType
from node_registry.store import open_store
from node_registry.verification import (
    CapabilityVerification,
    NodeVerification,
    VerificationPolicy,
    VerificationState,
    Verifier,
    read_probes,
)

ROOT = Path(__file__).resolve().parent.parent
PROBES = ROOT / "examples" / "probes.yaml"
API = "/apis/ai_team.io/v1"
ADMIN = "admin-token-0123456789abcdef"
VERIFIER = "verifier-token-0123456789abcd"
READER = "reader-token-0123456789abcdef"
RIGHT = "node-right-token-0123456789abc"
WRONG = "node-wrong-token-0123456789abc"
WAIT = 15.0


def result(
    node: NodePassport, capability: str, state: VerificationState, clock: FakeClock
) -> CapabilityVerification:
    cap = next(c for c in node.spec.capabilities if c.name == capability)
    return CapabilityVerification(
        node_uid=node.node_id,
        node_name=node.metadata.name,
        capability=capability,
        state=state,
        reason="Passed" if state is VerificationState.VERIFIED else "CheckFailed",
        message="probe passed" if state is VerificationState.VERIFIED else "wrong answer",
        checked_at=clock.now(),
        probe=f"{capability}-probe",
        capability_version=cap.version,
        params_digest=params_digest(cap.params),
        consecutive_failures=1 if state is VerificationState.FAILED else 0,
    )


def names(entries: list[Any]) -> list[str]:
    return [e.name for e in entries]


# -- the registry, embedded -------------------------------------------------------------------


def test_results_are_stored_with_the_node_and_select(registry: Registry, clock: FakeClock) -> None:
    right = registry.register(passport("right-01", capabilities=("code_generation", "python")))
    wrong = registry.register(passport("wrong-01", capabilities=("code_generation",)))
    fresh = registry.register(passport("fresh-01", capabilities=("code_generation",)))
    watch = registry.watch()
    registry.record_verification(
        right.node_id,
        [result(right.passport, "code_generation", VerificationState.VERIFIED, clock)],
    )
    registry.record_verification(
        wrong.node_id, [result(wrong.passport, "code_generation", VerificationState.FAILED, clock)]
    )
    # Watchers see each write as MODIFIED, with the results on the entry.
    events = [watch.next(timeout=1), watch.next(timeout=1)]
    watch.close()
    assert [(e.type, e.entry.name) for e in events if e is not None] == [
        (EventType.MODIFIED, "right-01"),
        (EventType.MODIFIED, "wrong-01"),
    ]
    assert events[0] is not None
    assert events[0].entry.verification["code_generation"].state is VerificationState.VERIFIED

    # A Failed claim never matches; an unverified one does, unless asked only_verified.
    code = "capability.code_generation=true"
    assert names(registry.find_nodes(selector=code)) == ["fresh-01", "right-01"]
    assert names(registry.find_nodes(selector=code, only_verified=True)) == ["right-01"]
    # only_verified: the claims that match must be Verified, and the node trusted.
    assert names(registry.find_nodes(only_verified=True)) == ["fresh-01", "right-01"]
    assert names(registry.find_nodes(selector="capability.python", only_verified=True)) == []
    assert names(
        registry.find_nodes(selector="!capability.code_generation", only_verified=True)
    ) == ["fresh-01"]
    # The verification labels select directly.
    prefix = "verification.ai-team.io/"
    assert names(registry.find_nodes(selector=f"{prefix}trusted=false")) == ["wrong-01"]
    assert names(registry.find_nodes(selector=f"{prefix}code_generation=Unverified")) == [
        "fresh-01"
    ]
    assert names(registry.find_nodes(selector=f"{prefix}code_generation in (Verified)")) == [
        "right-01"
    ]
    assert registry.get(fresh.node_id).verification == {}


def test_the_require_policy_counts_only_verified_claims(clock: FakeClock) -> None:
    settings = load_settings(verification={"require": True})
    with Registry(clock=clock, settings=settings) as registry:
        right = registry.register(passport("right-01", capabilities=("code_generation",)))
        registry.register(passport("fresh-01", capabilities=("code_generation",)))
        registry.record_verification(
            right.node_id,
            [result(right.passport, "code_generation", VerificationState.VERIFIED, clock)],
        )
        assert names(
            registry.find_nodes(selector={"matchLabels": {"capability.code_generation": "true"}})
        ) == ["right-01"]
        assert names(registry.find_nodes()) == ["fresh-01", "right-01"]
        # Watches filter on entry.labels: the same policy applies to them.
        labels = {e.name: e.labels for e in registry.find_nodes()}
        assert "capability.code_generation" in labels["right-01"]
        assert "capability.code_generation" not in labels["fresh-01"]


def test_results_follow_the_claims(registry: Registry, clock: FakeClock) -> None:
    node = registry.register(passport("right-01", capabilities=("code_generation", "python")))
    registry.record_verification(
        node.node_id,
        [
            result(node.passport, "code_generation", VerificationState.VERIFIED, clock),
            result(node.passport, "python", VerificationState.VERIFIED, clock),
        ],
    )
    # A changed claim is Unverified again; a dropped one loses its result; the rest stay.
    changed = registry.set_capabilities(
        node.node_id,
        [{"name": "code_generation", "version": "2.0"}, {"name": "python", "version": "1.0"}],
    )
    assert changed.labels["verification.ai-team.io/code_generation"] == "Unverified"
    assert changed.labels["verification.ai-team.io/python"] == "Verified"
    dropped = registry.set_capabilities(node.node_id, [{"name": "code_generation"}])
    assert set(dropped.verification) == {"code_generation"}
    # A re-registration keeps the results of the claims it keeps.
    again = registry.register(passport("right-01", capabilities=("python",)))
    assert again.verification == {}


def test_refused_results_and_refused_claims(registry: Registry, clock: FakeClock) -> None:
    node = registry.register(passport("right-01", capabilities=("code_generation",)))
    other = load_passport(passport("other-01", capabilities=("web_search",)))
    with pytest.raises(ValidationError) as refused:
        registry.record_verification(
            node.node_id, [result(other, "web_search", VerificationState.VERIFIED, clock)]
        )
    assert [e.loc for e in refused.value.errors] == ["results[0].nodeUid"]
    stray = result(node.passport, "code_generation", VerificationState.VERIFIED, clock)
    stray = stray.model_copy(update={"capability": "web_search"})
    with pytest.raises(ValidationError, match="does not claim 'web_search'"):
        registry.record_verification(node.node_id, [stray])
    with pytest.raises(ValidationError) as malformed:
        registry.record_verification(node.node_id, [{"capability": "code_generation"}])
    assert "results[0].state" in [e.loc for e in malformed.value.errors]

    # A node may not vouch for itself with the registry's labels or condition.
    forged = passport("right-01", labels={"verification.ai-team.io/code_generation": "Verified"})
    with pytest.raises(ValidationError, match="set by the registry from the verifier"):
        registry.register(forged)
    with pytest.raises(ValidationError, match="the Trusted condition is the registry's"):
        registry.update_status(node.node_id, conditions=[{"type": "Trusted", "status": "True"}])
    assert registry.get(node.node_id).verification == {}


# -- the whole loop over HTTP ------------------------------------------------------------------


def _example_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("probe_agent", ROOT / "examples/probe_agent.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


probe_agent = _example_agent()


@pytest.fixture(scope="module")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("verification") / "tokens.yaml"
    entries = [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": VERIFIER, "role": "verifier", "name": "prober"},
        {"token": READER, "role": "reader", "name": "dashboard"},
        {"token": RIGHT, "role": "node", "node": "ai-agent-right"},
        {"token": WRONG, "role": "node", "node": "ai-agent-wrong"},
    ]
    tokens.write_text(yaml.safe_dump({"tokens": entries}), encoding="utf-8")
    tokens.chmod(0o600)
    with serve(make_app(server={"tokens_file": tokens})) as url:
        yield url


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT} s: {what}")
        time.sleep(0.02)


def _object(http: httpx.Client, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = http.get(f"{API}/nodepassports/{name}", headers=_as(READER)).json()
    return doc


def _np_names(http: httpx.Client, selector: str) -> list[str]:
    listed = http.get(
        f"{API}/nodepassports", params={"labelSelector": selector}, headers=_as(READER)
    )
    assert listed.status_code == 200, listed.text
    return [item["metadata"]["name"] for item in listed.json()["items"]]


def test_only_a_verifier_or_an_admin_writes_verification(registry_url: str) -> None:
    with httpx.Client(base_url=registry_url, timeout=10) as http:
        doc = passport("ai-agent-wrong", capabilities=("code_generation",))
        assert http.post(f"{API}/nodepassports", json=doc, headers=_as(WRONG)).status_code in (
            200,
            201,
        )
        node = load_passport(doc)
        body = {
            "apiVersion": "ai_team.io/v1",
            "kind": "NodeVerification",
            "results": [
                result(node, "code_generation", VerificationState.VERIFIED, FakeClock()).to_dict()
            ],
        }
        url = f"{API}/nodepassports/ai-agent-wrong/verification"
        for token in (WRONG, READER):
            refused = http.patch(url, json=body, headers=_as(token))
            assert refused.status_code == 403, refused.text
            assert "only a verifier or an admin may" in refused.json()["message"]
        assert "verification" not in _object(http, "ai-agent-wrong")["status"]
        for token in (VERIFIER, ADMIN):
            assert http.patch(url, json=body, headers=_as(token)).status_code == 200
        bad = http.patch(url, json={"kind": "NodeVerification"}, headers=_as(VERIFIER))
        assert bad.status_code == 422
        assert bad.json()["details"]["causes"][0]["field"] == "results"
        missing = http.patch(
            f"{API}/nodepassports/nope/verification", json=body, headers=_as(VERIFIER)
        )
        assert missing.status_code == 404
        # The node's own token may not write the Trusted condition through its status either:
        # it is the registry's, shown from the results (a written one is dropped, as a GET's
        # copy sent back would be).
        forged = http.patch(
            f"{API}/nodepassports/ai-agent-wrong/status",
            json={
                "status": {"conditions": [{"type": "Trusted", "status": "False", "reason": "X"}]}
            },
            headers={**_as(WRONG), "Content-Type": "application/strategic-merge-patch+json"},
        )
        assert forged.status_code == 200, forged.text
        shown = _object(http, "ai-agent-wrong")["status"]["conditions"]
        assert [(c["type"], c["reason"]) for c in shown] == [("Trusted", "NoCapabilityFailed")]
        # The verifier reads, and writes nothing else.
        assert http.get(f"{API}/nodepassports", headers=_as(VERIFIER)).status_code == 200
        assert (
            http.delete(f"{API}/nodepassports/ai-agent-wrong", headers=_as(VERIFIER)).status_code
            == 403
        )
        assert http.put(url, json={**body, "results": []}, headers=_as(ADMIN)).status_code == 200
        assert _object(http, "ai-agent-wrong")["status"].get("verification") is None
        assert (
            http.delete(f"{API}/nodepassports/ai-agent-wrong", headers=_as(ADMIN)).status_code
            == 200
        )


def test_the_whole_loop_on_loopback(registry_url: str) -> None:
    """Two example agents register themselves; the verifier probes both over HTTP and
    records the results; selectors and the Trusted condition show them; the right agent
    claims a new capability at runtime and the running verifier probes it at once."""
    with contextlib.ExitStack() as stack:
        right_agent_url = stack.enter_context(serve(probe_agent.create_app()))
        wrong_agent_url = stack.enter_context(serve(probe_agent.create_app(wrong=True)))
        right = NodeAgent(
            probe_agent.passport("ai-agent-right", right_agent_url + "/tasks", ["code_generation"]),
            endpoints=registry_url,
            token=RIGHT,
            detect=False,
            interval=1,
        )
        wrong = NodeAgent(
            probe_agent.passport("ai-agent-wrong", wrong_agent_url + "/tasks"),
            endpoints=registry_url,
            token=WRONG,
            detect=False,
            interval=1,
        )
        stack.enter_context(right.running())
        stack.enter_context(wrong.running())
        eventually(lambda: right.registered and wrong.registered, "both agents registered")

        http = stack.enter_context(httpx.Client(base_url=registry_url, timeout=10))
        probes = read_probes(PROBES)
        policy = VerificationPolicy()

        async def once() -> int:
            async with (
                AsyncRegistryClient(registry_url, token=VERIFIER) as client,
                Verifier(probes) as verifier,
            ):
                return await run_verifier(client, verifier, policy, once=True, report=lines.append)

        lines: list[str] = []
        assert asyncio.run(once()) == 2
        assert sorted(lines[1:]) == [
            "ai-agent-right code_generation Verified Passed: 1 probe passed",
            "ai-agent-wrong code_generation Failed CheckFailed: check output did not match "
            "/(?i)hello,? world/ (got 'print(\"Goodbye\")\\n')",
            "ai-agent-wrong text_generation Failed HTTPStatus: HTTP 500, expected 200",
        ]

        status = _object(http, "ai-agent-wrong")["status"]
        assert status["verification"]["trusted"] is False
        assert status["verification"]["capabilities"] == {
            "code_generation": "Failed",
            "text_generation": "Failed",
        }
        trusted = next(c for c in status["conditions"] if c["type"] == "Trusted")
        assert (trusted["status"], trusted["reason"]) == ("False", "CapabilityVerificationFailed")
        assert trusted["message"] == (
            "failed verification: code_generation (CheckFailed), text_generation (HTTPStatus)"
        )
        right_status = _object(http, "ai-agent-right")["status"]
        assert right_status["verification"]["capabilities"] == {"code_generation": "Verified"}
        assert _np_names(http, "verification.ai-team.io/trusted=false") == ["ai-agent-wrong"]
        assert _np_names(http, "capability.code_generation=true") == ["ai-agent-right"]
        assert _np_names(http, "verification.ai-team.io/code_generation=Verified") == [
            "ai-agent-right"
        ]

        # find_nodes(only_verified=True) over HTTP: the field selector, and the client's.
        strict = {"fieldSelector": "status.verification.required=true"}
        nodes = http.get(f"{API}/nodepassports", params=strict, headers=_as(READER)).json()
        assert [i["metadata"]["name"] for i in nodes["items"]] == ["ai-agent-right"]
        with RegistryClient(registry_url, token=READER) as reader:
            assert names(reader.find_nodes(selector="capability.code_generation")) == [
                "ai-agent-right"
            ]
            found = reader.find_nodes(selector="capability.code_generation", only_verified=True)
            assert names(found) == ["ai-agent-right"]
            right_entry = reader.get("ai-agent-right")
            assert right_entry.verification["code_generation"].state is VerificationState.VERIFIED

        # The verifier keeps running; the right agent claims text_generation at runtime.
        seen: list[str] = []

        async def loop() -> None:
            async with (
                AsyncRegistryClient(registry_url, token=VERIFIER) as client,
                Verifier(probes) as verifier,
            ):
                task = asyncio.create_task(
                    run_verifier(client, verifier, policy, interval=60, report=seen.append)
                )
                await asyncio.sleep(0.5)  # the first round: nothing due, then it watches
                right.add_capability("text_generation", "1.0")
                deadline = time.monotonic() + WAIT
                while not any("ai-agent-right text_generation Verified" in s for s in seen):
                    assert time.monotonic() < deadline, seen
                    await asyncio.sleep(0.05)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        asyncio.run(loop())
        capabilities = _object(http, "ai-agent-right")["status"]["verification"]["capabilities"]
        assert capabilities == {"code_generation": "Verified", "text_generation": "Verified"}
        assert _np_names(http, "capability.text_generation=true") == ["ai-agent-right"]


# -- on etcd: results are part of the stored record --------------------------------------------


def test_results_are_stored_in_the_record_on_etcd(shared_etcd: EtcdServer) -> None:
    etcd = shared_etcd  # the session's server; this test's keys under a fresh prefix
    clock = FakeClock()
    settings = load_settings(
        store={
            "url": f"etcd://{etcd.endpoint}/test/{uuid.uuid4().hex}",
            "etcd_period_seconds": 0.05,
            "etcd_timeout_seconds": 2,
        }
    )
    with contextlib.ExitStack() as stack:

        def replica() -> Registry:
            store = open_store(settings, clock=clock)
            stack.callback(store.close)
            registry = Registry(store, settings=settings, clock=clock)
            stack.callback(registry.close)
            return registry

        first, second = replica(), replica()
        node = first.register(passport("right-01", capabilities=("code_generation",)))
        first.record_verification(
            node.node_id,
            [result(node.passport, "code_generation", VerificationState.FAILED, clock)],
        )
        # The other replica hears it through etcd's watch, and selects on it.
        eventually(
            lambda: (
                names(second.find_nodes(selector="verification.ai-team.io/trusted=false"))
                == ["right-01"]
            ),
            "the second replica sees the result",
        )
        restarted = replica()
        stored = restarted.get(node.node_id).verification["code_generation"]
        assert (stored.state, stored.reason) == (VerificationState.FAILED, "CheckFailed")


# -- the command ------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NODE_REGISTRY_", "KUBE"))}
    env["HOME"] = "/nonexistent"  # no ~/.kube/config of the machine
    return subprocess.run(
        [sys.executable, "-m", "node_registry", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_node_registry_verify_once(registry_url: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        agent_url = stack.enter_context(serve(probe_agent.create_app()))
        http = stack.enter_context(httpx.Client(base_url=registry_url, timeout=10))
        doc = probe_agent.passport("ai-agent-right", agent_url + "/tasks")
        assert http.post(f"{API}/nodepassports", json=doc, headers=_as(RIGHT)).is_success
        try:
            refused = _cli(
                "verify", "-f", str(PROBES), "--once", "-s", registry_url, "--token", READER
            )
            assert refused.returncode == 1
            assert "Forbidden" in refused.stderr
            assert "only a verifier or an admin may" in refused.stderr

            done = _cli(
                "verify", "-f", str(PROBES), "--once", "-s", registry_url, "--token", VERIFIER
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == [
                "round 1: 2 due",
                "ai-agent-right code_generation Verified Passed: 1 probe passed",
                "ai-agent-right text_generation Verified Passed: 1 probe passed",
                "recorded results for 1 node",
            ]
            again = _cli(
                "verify", "-f", str(PROBES), "--once", "-s", registry_url, "--token", VERIFIER
            )
            assert again.stdout == "recorded results for 0 nodes\n"  # nothing due any more

            bad = tmp_path / "probes.yaml"
            bad.write_text("probes: [{name: x, capability: y}]\n", encoding="utf-8")
            broken = _cli("verify", "-f", str(bad), "--once", "-s", registry_url)
            assert broken.returncode == 1
            assert "invalid ProbeSet" in broken.stderr
            assert "probes[0].task: Field required" in broken.stderr
        finally:
            http.delete(f"{API}/nodepassports/ai-agent-right", headers=_as(ADMIN))


class _Refusing:
    """A client whose record_verification raises ``error`` (the sink's one seam)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def record_verification(self, name: str, results: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        NotFoundError('nodepassports.ai_team.io "right-01" not found'),
        ValidationError("invalid verification", []),
        ConflictError("node is being changed concurrently; try again"),
        httpx.ConnectError("connection refused"),
    ],
    ids=["gone", "changed", "conflict", "unreachable"],
)
def test_the_sink_reports_what_it_could_not_record(error: Exception, clock: FakeClock) -> None:
    node = load_passport(passport("right-01", capabilities=("code_generation",)))
    verification = NodeVerification(
        node_uid=node.node_id,
        node_name="right-01",
        results=(result(node, "code_generation", VerificationState.VERIFIED, clock),),
    )
    lines: list[str] = []
    sink = RegistrySink(_Refusing(error), lines.append)  # type: ignore[arg-type]
    asyncio.run(sink.record(verification))
    assert sink.recorded == 0
    assert lines == [f"right-01: not recorded ({error}); planned again next round"]


def test_the_sink_stops_on_a_token_that_may_not_write(clock: FakeClock) -> None:
    node = load_passport(passport("right-01", capabilities=("code_generation",)))
    verification = NodeVerification(
        node_uid=node.node_id,
        node_name="right-01",
        results=(result(node, "code_generation", VerificationState.VERIFIED, clock),),
    )
    sink = RegistrySink(_Refusing(ForbiddenError("no")), print)  # type: ignore[arg-type]
    with pytest.raises(ForbiddenError):
        asyncio.run(sink.record(verification))
