"""Capability verification by probe tasks (seed 3.2): probes, judging, the planner, what
results mean for matching, and the runner against the example agent on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conftest import passport
from live_server import serve
from node_registry import FakeClock
from node_registry.errors import ConfigError
from node_registry.passport import Endpoint, NodePassport, load_passport
from node_registry.passport.verification import params_digest
from node_registry.verification import (
    CapabilityVerification,
    Due,
    DueReason,
    MemorySink,
    NodeView,
    ProbeResponse,
    ProbeSet,
    VerificationPolicy,
    VerificationState,
    Verifier,
    claim_states,
    counted_capabilities,
    is_trusted,
    judge,
    load_probes,
    matchable_labels,
    plan,
    read_probes,
    verification_labels,
)

ROOT = Path(__file__).resolve().parent.parent
PROBES = ROOT / "examples" / "probes.yaml"


def _example_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("probe_agent", ROOT / "examples/probe_agent.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


probe_agent = _example_agent()


@pytest.fixture(scope="module")
def agents() -> Iterator[tuple[str, str]]:
    """The example agent twice on loopback: answering right, and answering wrong."""
    with serve(probe_agent.create_app()) as good, serve(probe_agent.create_app(wrong=True)) as bad:
        yield good + "/tasks", bad + "/tasks"


def agent_passport(name: str, address: str) -> NodePassport:
    return load_passport(probe_agent.passport(name, address))


def result(
    node: NodePassport, capability: str, state: VerificationState, clock: FakeClock, **extra: Any
) -> CapabilityVerification:
    cap = next(c for c in node.spec.capabilities if c.name == capability)
    fields: dict[str, Any] = {
        "node_uid": node.node_id,
        "node_name": node.metadata.name,
        "capability": capability,
        "state": state,
        "reason": "Passed" if state == VerificationState.VERIFIED else "CheckFailed",
        "message": "",
        "checked_at": clock.now(),
        "capability_version": cap.version,
        "params_digest": params_digest(cap.params),
        "consecutive_failures": 1 if state == VerificationState.FAILED else 0,
    }
    fields.update(extra)
    return CapabilityVerification(**fields)


def probe_set(*probes: dict[str, Any]) -> ProbeSet:
    return load_probes({"probes": list(probes)})


def simple_probe(capability: str = "code_generation", **extra: Any) -> dict[str, Any]:
    return {
        "name": f"{capability}-probe",
        "capability": capability,
        "task": {"capability": capability, "input": "x"},
        **extra,
    }


# --- probe definitions ------------------------------------------------------------------------


def test_the_example_probes_load_and_apply_by_capability_version_and_type() -> None:
    probes = read_probes(PROBES)
    assert [p.name for p in probes.probes] == ["hello-world-python", "summarise-one-sentence"]
    node = agent_passport("a", "http://127.0.0.1:1/tasks")
    code, text = node.spec.capabilities
    assert [p.name for p in probes.for_capability(node, code)] == ["hello-world-python"]
    assert [p.name for p in probes.for_capability(node, text)] == ["summarise-one-sentence"]
    hello = probes.probes[0]
    assert not hello.applies_to(node, code.model_copy(update={"version": "2.0"}))
    assert not hello.applies_to(node, code.model_copy(update={"version": None}))
    assert not hello.applies_to(node, code.model_copy(update={"version": "not-a-version"}))
    assert hello.applies_to(node, code.model_copy(update={"version": "1.9rc1"}))
    tool = load_passport(passport("t", kind="tool", capabilities=("code_generation",)))
    assert probes.for_capability(tool, tool.spec.capabilities[0]) == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"expect": {"fields": [{"path": "a", "equals": 1, "matches": "x"}]}}, "exactly one"),
        ({"expect": {"fields": [{"path": "a"}]}}, "got none"),
        ({"expect": {"fields": [{"path": "a", "matches": "("}]}}, "is not a regular expression"),
        ({"expect": {"fields": [{"path": "a..b", "equals": 1}]}}, "is not a field path"),
        ({"versions": "around 1"}, "probes[0].versions: 'around 1' is not a version range"),
        ({"timeoutSeconds": 0}, "probes[0].timeoutSeconds"),
        ({"expect": {"statuz": 200}}, "probes[0].expect.statuz: Extra inputs"),
    ],
)
def test_a_malformed_probe_is_a_config_error_naming_the_field(
    change: dict[str, Any], where: str
) -> None:
    with pytest.raises(ConfigError, match="invalid ProbeSet") as caught:
        load_probes({"probes": [simple_probe(**change)]})
    assert where in str(caught.value)


def test_probe_names_are_unique_and_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="probe names must be unique; repeated: p"):
        load_probes({"probes": [simple_probe(name="p"), simple_probe(name="p")]})
    file = tmp_path / "probes.yaml"
    file.write_text("- not a mapping\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"probes\.yaml: a ProbeSet must be a mapping"):
        read_probes(file)


# --- judging one answer -----------------------------------------------------------------------


def _judge(fields: list[dict[str, Any]], body: object, **expect: Any) -> tuple[bool, str, str]:
    probe = probe_set(simple_probe(expect={"fields": fields, **expect})).probes[0]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    verdict = judge(probe, ProbeResponse(expect.pop("got", 200), raw), 0.5)
    return verdict.passed, verdict.reason, verdict.message


def test_judge_checks_status_latency_and_fields_in_order() -> None:
    ok = {"output": 'print("Hello, World!")', "language": "python", "tags": ["a", "b"]}
    hello = {"path": "output", "matches": "(?i)hello,? world"}
    assert _judge([hello], ok) == (True, "Passed", "probe code_generation-probe passed")
    probe = probe_set(simple_probe(expect={"maxLatencySeconds": 0.1})).probes[0]
    verdict = judge(probe, ProbeResponse(500, b""), 9.0)
    assert (verdict.reason, verdict.message) == ("HTTPStatus", "HTTP 500, expected 200")
    verdict = judge(probe, ProbeResponse(200, b"{}"), 0.25)
    assert (verdict.reason, verdict.message) == (
        "TooSlow",
        "answered in 0.25 s, over the bound of 0.1 s",
    )
    assert _judge([hello], b"<html>") == (False, "InvalidResponse", "the answer is not JSON")
    assert _judge([hello], {"output": "bye"}) == (
        False,
        "CheckFailed",
        "check output did not match /(?i)hello,? world/ (got 'bye')",
    )


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"path": "language", "equals": "python"}, None),
        ({"path": "language", "equals": "go"}, "check language: expected 'go', got 'python'"),
        ({"path": "count", "equals": 1}, "check count: expected 1, got True"),
        ({"path": "tags", "contains": "b"}, None),
        ({"path": "tags[1]", "equals": "b"}, None),
        ({"path": "tags", "contains": "c"}, "check tags did not contain 'c' (got ['a', 'b'])"),
        ({"path": "output", "contains": "World"}, None),
        ({"path": "nested.deep[0].x", "equals": 2}, None),
        ({"path": "tags[5]", "equals": "b"}, "check tags[5]: the answer has no field tags[5]"),
        ({"path": "count", "matches": "1"}, "check count did not match /1/ (got True)"),
    ],
)
def test_field_checks(check: dict[str, Any], message: str | None) -> None:
    body = {
        "output": "Hello, World",
        "language": "python",
        "tags": ["a", "b"],
        "count": True,
        "nested": {"deep": [{"x": 2}]},
    }
    passed, _, text = _judge([check], body)
    assert passed is (message is None)
    if message is not None:
        assert text == message


def test_a_long_unexpected_value_is_shortened_in_the_message() -> None:
    _, _, message = _judge([{"path": "output", "matches": "hello"}], {"output": "x" * 500})
    assert len(message) < 200
    assert message.endswith("...)")


# --- the planner ------------------------------------------------------------------------------


def test_plan_probes_what_was_never_verified_changed_expired_or_is_due_a_retry(
    clock: FakeClock,
) -> None:
    policy = VerificationPolicy(
        reverify_after_seconds=3600, retry_after_seconds=60, retry_max_seconds=200
    )
    node = agent_passport("a", "http://127.0.0.1:1/tasks")
    uid, name = node.node_id, "a"
    assert plan([NodeView(node)], clock.now(), policy) == [
        Due(uid, name, "code_generation", DueReason.NEVER_VERIFIED),
        Due(uid, name, "text_generation", DueReason.NEVER_VERIFIED),
    ]
    results = {
        "code_generation": result(node, "code_generation", VerificationState.VERIFIED, clock),
        "text_generation": result(node, "text_generation", VerificationState.FAILED, clock),
    }
    view = NodeView(node, results)
    assert plan([view], clock.now(), policy) == []
    clock.advance(60)
    assert plan([view], clock.now(), policy) == [Due(uid, name, "text_generation", DueReason.RETRY)]
    clock.advance(3540)
    assert [d.reason for d in plan([view], clock.now(), policy)] == [
        DueReason.EXPIRED,
        DueReason.RETRY,
    ]


def test_retry_backoff_doubles_per_failure_up_to_the_cap(clock: FakeClock) -> None:
    policy = VerificationPolicy(retry_after_seconds=60, retry_max_seconds=200)
    node = agent_passport("a", "http://127.0.0.1:1/tasks")
    for failures, wait in [(1, 60), (2, 120), (3, 200), (9, 200)]:
        failed = result(
            node, "code_generation", VerificationState.FAILED, clock, consecutive_failures=failures
        )
        view = NodeView(node, {"code_generation": failed})
        due_at = clock.now() + timedelta(seconds=wait)
        assert "code_generation" not in [
            d.capability for d in plan([view], due_at - timedelta(seconds=1), policy)
        ]
        assert "code_generation" in [d.capability for d in plan([view], due_at, policy)]


def test_a_changed_claim_is_due_again_and_counts_as_unverified(clock: FakeClock) -> None:
    node = agent_passport("a", "http://127.0.0.1:1/tasks")
    results = {
        name: result(node, name, VerificationState.VERIFIED, clock)
        for name in ("code_generation", "text_generation")
    }
    doc = node.to_dict()
    doc["spec"]["capabilities"][0]["params"] = {"languages": ["python", "go"]}
    doc["spec"]["capabilities"][1]["version"] = "1.1"
    doc["spec"]["capabilities"].append({"name": "web_search"})
    changed = load_passport(doc)
    assert [
        (d.capability, d.reason)
        for d in plan([NodeView(changed, results)], clock.now(), VerificationPolicy())
    ] == [
        ("code_generation", DueReason.CHANGED),
        ("text_generation", DueReason.CHANGED),
        ("web_search", DueReason.NEVER_VERIFIED),
    ]
    assert set(claim_states(changed, results).values()) == {"Unverified"}
    # A result recorded for another node of the same name is not this node's.
    other = load_passport(
        {**node.to_dict(), "metadata": {**doc["metadata"], "uid": str(uuid.uuid4())}}
    )
    assert {
        d.reason for d in plan([NodeView(other, results)], clock.now(), VerificationPolicy())
    } == {DueReason.NEVER_VERIFIED}


# --- what results mean for matching -------------------------------------------------------------


def test_a_failed_claim_untrusts_the_node_and_stops_matching(clock: FakeClock) -> None:
    node = agent_passport("a", "http://127.0.0.1:1/tasks")
    results = {
        "code_generation": result(node, "code_generation", VerificationState.FAILED, clock),
    }
    policy = VerificationPolicy()
    assert not is_trusted(node, results, policy)
    assert is_trusted(node, results, VerificationPolicy(untrusted_on_failure=False))
    assert counted_capabilities(node, results, policy) == ["text_generation"]
    assert counted_capabilities(node, results, policy, only_verified=True) == []
    strict = VerificationPolicy(unverified_capabilities_count=False)
    assert counted_capabilities(node, results, strict) == []
    assert verification_labels(node, results, policy) == {
        "verification.ai-team.io/code_generation": "Failed",
        "verification.ai-team.io/text_generation": "Unverified",
        "verification.ai-team.io/trusted": "false",
    }
    labels = matchable_labels(node, results, policy)
    assert "capability.code_generation" not in labels
    assert labels["capability.text_generation"] == "true"


def test_only_verified_claims_match_when_asked_even_if_labelled_by_hand(clock: FakeClock) -> None:
    doc = probe_agent.passport("a", "http://127.0.0.1:1/tasks")
    doc["metadata"]["labels"] = {"capability.web_search": "true", "zone": "eu"}
    node = load_passport(doc)
    results = {
        "code_generation": result(node, "code_generation", VerificationState.VERIFIED, clock),
    }
    policy = VerificationPolicy()
    lenient = matchable_labels(node, results, policy)
    assert {k for k in lenient if k.startswith("capability.")} == {
        "capability.code_generation",
        "capability.text_generation",
    }
    strict = matchable_labels(node, results, policy, only_verified=True)
    assert {k for k in strict if k.startswith("capability.")} == {"capability.code_generation"}
    assert strict["zone"] == "eu"
    assert strict["verification.ai-team.io/trusted"] == "true"


# --- the runner, against the example agent for real --------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _verify(probes: ProbeSet, node: NodePassport, **kwargs: Any) -> list[Any]:
    async with Verifier(probes, clock=kwargs.pop("clock", FakeClock())) as verifier:
        verification = await verifier.verify_node(node, **kwargs)
    return [(r.capability, r.state.value, r.reason, r.message) for r in verification.results]


def test_the_example_agent_is_verified_when_right_and_failed_when_wrong(
    agents: tuple[str, str], clock: FakeClock
) -> None:
    good, bad = agents
    probes = read_probes(PROBES)

    async def scenario() -> tuple[Any, Any]:
        async with Verifier(probes, clock=clock) as verifier:
            return (
                await verifier.verify_node(agent_passport("good", good), resource_version="7"),
                await verifier.verify_node(agent_passport("bad", bad)),
            )

    right, wrong = run(scenario())
    assert [(r.capability, r.state, r.reason, r.probe) for r in right.results] == [
        ("code_generation", VerificationState.VERIFIED, "Passed", "hello-world-python"),
        ("text_generation", VerificationState.VERIFIED, "Passed", "summarise-one-sentence"),
    ]
    first = right.results[0]
    assert first.checked_at == clock.now()
    assert (first.resource_version, first.capability_version) == ("7", "1.0")
    assert first.node_uid == agent_passport("good", good).node_id
    assert first.latency_seconds is not None
    assert 0 < first.latency_seconds < 2
    assert [(r.state, r.reason, r.message, r.consecutive_failures) for r in wrong.results] == [
        (
            VerificationState.FAILED,
            "CheckFailed",
            "check output did not match /(?i)hello,? world/ (got 'print(\"Goodbye\")\\n')",
            1,
        ),
        (VerificationState.FAILED, "HTTPStatus", "HTTP 500, expected 200", 1),
    ]


def test_what_cannot_be_probed_is_unknown_not_failed(agents: tuple[str, str]) -> None:
    good, _ = agents
    doc = probe_agent.passport("a", good)
    doc["spec"]["capabilities"].append({"name": "web_search"})
    assert run(_verify(read_probes(PROBES), load_passport(doc), capabilities=["web_search"])) == [
        ("web_search", "Unknown", "NoProbe", "no probe for web_search on node type agent")
    ]
    doc["spec"]["endpoint"] = {"protocol": "mindbus", "address": "amqp://bus:5672", "queue": "q"}
    assert run(_verify(read_probes(PROBES), load_passport(doc), capabilities=["text_generation"]))[
        0
    ][2:] == ("NoTransport", "no transport for endpoint protocol 'mindbus' (have: http, https)")


def test_a_node_that_does_not_answer_fails_by_timeout_or_connection() -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(3)
        return JSONResponse({})

    app = Starlette(routes=[Route("/tasks", slow, methods=["POST"])])
    probes = probe_set(simple_probe(timeoutSeconds=0.2))
    with serve(app) as url:
        node = agent_passport("slow", url + "/tasks")
        (outcome,) = run(_verify(probes, node, capabilities=["code_generation"]))
        assert outcome[2:] == ("Timeout", "no answer within 0.2 s")
        probes = probe_set(simple_probe(timeoutSeconds=5))

        async def budget() -> Any:
            async with Verifier(probes, node_timeout_seconds=0.2) as verifier:
                return await verifier.verify_node(node, capabilities=["code_generation"])

        (limited,) = run(budget()).results
        assert (limited.reason, limited.message) == (
            "Timeout",
            "the node's probes ran over their budget of 0.2 s",
        )
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        node = agent_passport("gone", f"http://127.0.0.1:{port}/tasks")
        (outcome,) = run(_verify(probes, node, capabilities=["code_generation"]))
    assert outcome[1:3] == ("Failed", "ConnectionFailed")


def test_an_oversized_answer_is_not_read_to_the_end() -> None:
    async def huge(request: Request) -> Response:
        return Response(b"x" * (2 * 1024 * 1024), media_type="application/json")

    with serve(Starlette(routes=[Route("/tasks", huge, methods=["POST"])])) as url:
        node = agent_passport("huge", url + "/tasks")
        (outcome,) = run(_verify(probe_set(simple_probe()), node, capabilities=["code_generation"]))
    assert outcome[2:] == ("InvalidResponse", "the answer is over 1048576 bytes")


def test_probes_in_flight_are_bounded_by_concurrency() -> None:
    in_flight = {"now": 0, "most": 0}

    async def counted(request: Request) -> Response:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        await asyncio.sleep(0.05)
        in_flight["now"] -= 1
        return JSONResponse({"output": "ok"})

    names = [f"cap{i}" for i in range(6)]
    probes = probe_set(*(simple_probe(n) for n in names))
    with serve(Starlette(routes=[Route("/tasks", counted, methods=["POST"])])) as url:
        node = load_passport(
            {
                **passport("wide", capabilities=tuple(names)),
                "spec": {
                    "capabilities": [{"name": n} for n in names],
                    "endpoint": {"protocol": "http", "address": url + "/tasks"},
                },
            }
        )

        async def scenario() -> Any:
            async with Verifier(probes, concurrency=2) as verifier:
                return await verifier.verify_node(node)

        verification = run(scenario())
    assert {r.state for r in verification.results} == {VerificationState.VERIFIED}
    assert in_flight["most"] == 2


def test_a_transport_plugs_in_per_protocol() -> None:
    class Loopback:
        """A MindBus stand-in: answers in process, as a real transport's seam allows."""

        def __init__(self) -> None:
            self.sent: list[tuple[str, Mapping[str, Any]]] = []

        async def send(
            self, endpoint: Endpoint, task: Mapping[str, Any], *, timeout: float
        ) -> ProbeResponse:
            self.sent.append((endpoint.queue or "", task))
            return ProbeResponse(200, b'{"output": "Hello, World"}')

    transport = Loopback()
    node = load_passport(passport("bus-node", capabilities=("code_generation",)))
    probes = probe_set(simple_probe(expect={"fields": [{"path": "output", "contains": "Hello"}]}))

    async def scenario() -> Any:
        async with Verifier(probes, transports={"mindbus": transport}) as verifier:
            return await verifier.verify_node(node)

    (outcome,) = run(scenario()).results
    assert outcome.state == VerificationState.VERIFIED
    assert transport.sent == [("bus-node", {"capability": "code_generation", "input": "x"})]


def test_run_due_probes_what_is_due_records_it_and_counts_failures(
    agents: tuple[str, str], clock: FakeClock
) -> None:
    good, bad = agents
    nodes = [agent_passport("good", good), agent_passport("bad", bad)]
    policy = VerificationPolicy(retry_after_seconds=60)
    sink = MemorySink()

    def views() -> list[NodeView]:
        return [NodeView(n, sink.results_for(n.node_id), resource_version="1") for n in nodes]

    async def rounds() -> list[int]:
        probed = []
        async with Verifier(read_probes(PROBES), clock=clock) as verifier:
            for step in (0, 30, 30):  # now, 30 s later (nothing due), 60 s (retry the failed)
                clock.advance(step)
                done = await verifier.run_due(views(), sink, policy)
                probed.append(sum(len(v.results) for v in done))
        return probed

    assert run(rounds()) == [4, 0, 2]
    good_results = sink.results_for(nodes[0].node_id)
    bad_results = sink.results_for(nodes[1].node_id)
    assert {r.state for r in good_results.values()} == {VerificationState.VERIFIED}
    assert {r.consecutive_failures for r in bad_results.values()} == {2}
    assert is_trusted(nodes[0], good_results, policy)
    assert not is_trusted(nodes[1], bad_results, policy)
    assert len(sink.recorded) == 3  # one record per node probed, none for an idle round


# --- the walk-through -------------------------------------------------------------------------


def test_the_walk_through_output_in_the_docs_is_current() -> None:
    script = ROOT / "examples" / "verification.py"
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    doc = (ROOT / "docs" / "verification.md").read_text(encoding="utf-8")
    match = re.search(r"\$ python examples/verification.py\n(.*?)```", doc, re.DOTALL)
    assert match is not None, "docs/verification.md has no output block for the walk-through"
    assert match.group(1) == completed.stdout, (
        "docs/verification.md is out of date with examples/verification.py; paste its output"
    )


def test_the_example_probes_file_is_what_the_docs_show() -> None:
    doc = (ROOT / "docs" / "verification.md").read_text(encoding="utf-8")
    shown = re.search(r"```yaml\n# examples/probes.yaml\n(.*?)```", doc, re.DOTALL)
    assert shown is not None
    assert yaml.safe_load(shown.group(1)) == yaml.safe_load(PROBES.read_text())
