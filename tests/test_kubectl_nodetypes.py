"""The real kubectl and #12's additions: ``nodetypes`` (create, get, delete) and the
verification state of nodepassports, against a live registry over HTTPS with tokens."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_server import ADMIN, KubeServer, kube_server_on
from kubectl import Kubectl, kubectl_binary, kubectl_for, kubectl_minor
from node_registry.passport.verification import params_digest

ROOT = Path(__file__).resolve().parent.parent
GPU_WORKER = ROOT / "examples" / "nodetypes" / "gpu-worker.yaml"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    kubectl_binary()  # skip (or fail under CI) before starting anything
    with kube_server_on("memory", tmp_path_factory.mktemp("kube-nodetypes")) as live:
        yield live


@pytest.fixture
def kubectl(server: KubeServer, tmp_path: Path) -> Kubectl:
    server.reset()
    return kubectl_for(tmp_path, server.url, token=ADMIN, ca_file=server.ca)


def table(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def test_kubectl_creates_lists_and_deletes_node_types(kubectl: Kubectl) -> None:
    # kubectl >= 1.25 validates on the server (the PATCH takes fieldValidation); older ones
    # want OpenAPI v2 in protobuf, which is not served.
    validate = [] if kubectl_minor() >= 25 else ["--validate=false"]
    created = kubectl.run("create", "-f", str(GPU_WORKER), *validate).ok()
    assert created.strip() == "nodetype.ai_team.io/gpu-worker created"
    try:
        rows = table(kubectl.run("get", "nodetypes").ok())
        assert rows[0] == ["NAME", "SOURCE", "SCHEMA", "CAPABILITIES"]
        by_name = {row[0]: row[1:] for row in rows[1:]}
        assert by_name["gpu-worker"] == ["registered", "yes", "code_generation,gpu_inference"]
        assert by_name["agent"] == ["built-in", "-", "*"]
        one = json.loads(kubectl.run("get", "nt", "gpu-worker", "-o", "json").ok())
        assert one["spec"]["capabilities"]["code_generation"]["versions"] == ["1.0", "1.1"]
        again = kubectl.run("create", "-f", str(GPU_WORKER), *validate)
        assert again.rc == 1
        assert "already exists" in again.stderr
        builtin = kubectl.run("delete", "nodetype", "agent")
        assert builtin.rc == 1
        assert "Error from server (Forbidden)" in builtin.stderr
    finally:
        deleted = kubectl.run("delete", "nodetype", "gpu-worker").ok()
    assert deleted.strip() == 'nodetype.ai_team.io "gpu-worker" deleted'
    assert "gpu-worker" not in kubectl.run("get", "nodetypes", "-o", "name").ok()


def test_kubectl_selects_nodes_by_verification_state(server: KubeServer, kubectl: Kubectl) -> None:
    verification = "/apis/ai_team.io/v1/nodepassports/coder-01/verification"
    node = server.http.get("/apis/ai_team.io/v1/nodepassports/coder-01").json()
    cap = node["spec"]["capabilities"][0]
    result = {
        "nodeUid": node["metadata"]["uid"],
        "nodeName": "coder-01",
        "capability": cap["name"],
        "state": "Failed",
        "reason": "CheckFailed",
        "message": "wrong answer",
        "checkedAt": "2026-01-01T00:00:00Z",
        "capabilityVersion": cap.get("version"),
        "paramsDigest": params_digest(cap.get("params", {})),
    }
    body = {"kind": "NodeVerification", "results": [result]}
    assert server.http.patch(verification, json=body).status_code == 200
    untrusted = kubectl.run(
        "get", "np", "-l", "verification.ai-team.io/trusted=false", "-o", "name"
    )
    assert untrusted.ok().split() == ["nodepassport.ai_team.io/coder-01"]
    condition = kubectl.run(
        "get", "np", "coder-01", "-o", "jsonpath={.status.conditions[?(@.type=='Trusted')].reason}"
    ).ok()
    assert condition == "CapabilityVerificationFailed"
    server.http.put(verification, json={"kind": "NodeVerification", "results": []})
