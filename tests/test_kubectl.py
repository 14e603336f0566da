"""The real kubectl against a live registry (HTTPS, bearer token, trustme CA), on memory and etcd.

Phase 1 of #11: discovery, ``kubectl version``/``api-resources``/``api-versions``/``explain``,
and ``kubectl get`` of nodepassports in every form (Table, wide, yaml, label and field
selectors, watch). Writes through kubectl come with phase 2.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kube_server import ADMIN, NODES, READER, KubeServer, kube_server_on
from kubectl import Kubectl, kubectl_binary, kubectl_for, kubectl_minor
from node_registry.kube.table import age

NAMES = [name for name, _, _ in NODES]


@pytest.fixture(scope="module", params=["memory", "etcd"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeServer]:
    kubectl_binary()  # skip (or fail under CI) before starting anything
    tmp = tmp_path_factory.mktemp(f"kube-{request.param}")
    with kube_server_on(request.param, tmp) as live:
        yield live


@pytest.fixture
def kubectl(server: KubeServer, tmp_path: Path) -> Kubectl:
    server.reset()
    return kubectl_for(tmp_path, server.url, token=ADMIN, ca_file=server.ca)


def table(text: str) -> list[list[str]]:
    """kubectl's columns, split on runs of 2+ spaces (cells hold single spaces at most)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


# -- discovery -----------------------------------------------------------------------------


def test_kubectl_version_shows_the_api_level_and_the_registry(kubectl: Kubectl) -> None:
    result = kubectl.run("version", "-o", "json")
    version = json.loads(result.ok())["serverVersion"]
    assert version["major"] == "1"
    assert version["minor"] == "32"
    assert version["gitVersion"].startswith("v1.32.0+node-registry-")
    assert "WARNING" not in result.stderr  # no version skew warning against kubectl 1.3x


def test_api_resources_lists_the_group_cluster_scoped(kubectl: Kubectl) -> None:
    rows = table(kubectl.run("api-resources", "-o", "wide").ok())
    assert rows[0][:5] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    by_name = {row[0]: row for row in rows[1:]}
    assert by_name["nodepassports"][1:5] == ["np", "ai_team.io/v1", "false", "NodePassport"]
    verbs = by_name["nodepassports"][5].strip("[]").replace(",", " ").split()
    assert verbs == ["get", "list", "watch"]
    if kubectl_minor() >= 22:  # older kubectl has no CATEGORIES column
        assert by_name["nodepassports"][6] == "ai-team"
    assert by_name["leases"][1:4] == ["ai_team.io/v1", "false", "Lease"]
    only = kubectl.run("api-resources", "--api-group", "ai_team.io", "-o", "name").ok()
    assert only.split() == ["leases.ai_team.io", "nodepassports.ai_team.io", "nodetypes.ai_team.io"]


def test_api_versions(kubectl: Kubectl) -> None:
    assert kubectl.run("api-versions").ok().split() == ["ai_team.io/v1", "v1"]


def test_explain_reads_openapi_v3(kubectl: Kubectl) -> None:
    if kubectl_minor() < 27:
        pytest.skip(
            f"kubectl 1.{kubectl_minor()} explains from OpenAPI v2 in protobuf only, which the "
            "registry does not serve (kubectl 1.27+ reads /openapi/v3)"
        )
    spec = kubectl.run("explain", "nodepassports.spec").ok()
    assert "GROUP:      ai_team.io" in spec
    assert "FIELD: spec <Spec>" in spec
    assert re.search(r"capabilities\s+<\[\]Capability>", spec)
    assert "What the node can do" in spec
    caps = kubectl.run("explain", "np.spec.capabilities").ok()
    assert re.search(r"name\s+<string> -required-", caps)
    status = kubectl.run("explain", "nodepassports.status.healthState").ok()
    assert "ALIVE, NOT_READY, OFFLINE" in status


# -- get -----------------------------------------------------------------------------------


def test_get_prints_the_servers_table(server: KubeServer, kubectl: Kubectl) -> None:
    server.clock.advance(5)  # ages are counted on the registry's clock
    server.status("coder-02", currentTasks=3)
    shown = age(server.registry.get_by_name("coder-01").registered_at, server.clock.now())
    rows = table(kubectl.run("get", "nodepassports").ok())
    assert rows[0] == ["NAME", "KIND", "HEALTH", "PHASE", "TASKS", "AGE"]
    assert rows[1:] == [
        ["coder-01", "agent", "ALIVE", "Running", "0/4", shown],
        ["coder-02", "agent", "ALIVE", "Running", "3/4", shown],
        ["search-01", "tool", "ALIVE", "Running", "0/4", shown],
    ]
    assert table(kubectl.run("get", "np", "coder-02").ok())[1][0] == "coder-02"


def test_get_wide_adds_capabilities_zone_endpoint_last_seen(
    server: KubeServer, kubectl: Kubectl
) -> None:
    server.clock.advance(7)
    rows = table(kubectl.run("get", "np", "-o", "wide").ok())
    assert rows[0] == [
        "NAME", "KIND", "HEALTH", "PHASE", "TASKS", "AGE",
        "CAPABILITIES", "ZONE", "ENDPOINT", "LAST-SEEN",
    ]  # fmt: skip
    assert rows[1][6:] == [
        "code_generation,python", "eu-west-1", "mindbus:amqp://bus:5672#coder-01", "7s ago",
    ]  # fmt: skip


def test_get_yaml_is_the_object(server: KubeServer, kubectl: Kubectl) -> None:
    doc = yaml.safe_load(kubectl.run("get", "np", "coder-01", "-o", "yaml").ok())
    assert doc["apiVersion"] == "ai_team.io/v1"
    assert doc["kind"] == "NodePassport"
    assert doc["metadata"]["name"] == "coder-01"
    assert doc["metadata"]["nodeType"] == "agent"
    assert doc["metadata"]["creationTimestamp"] == "2026-01-01T00:00:00Z"
    assert int(doc["metadata"]["resourceVersion"]) > 0
    assert doc["spec"]["maxConcurrentTasks"] == 4
    assert doc["status"]["healthState"] == "ALIVE"
    assert doc["status"]["schedulable"] is True
    listed = yaml.safe_load(kubectl.run("get", "np", "-o", "yaml").ok())
    assert [item["metadata"]["name"] for item in listed["items"]] == NAMES


def test_get_by_label_and_show_labels(kubectl: Kubectl) -> None:
    rows = table(kubectl.run("get", "np", "-l", "zone=eu-west-1", "--show-labels").ok())
    assert [row[0] for row in rows[1:]] == ["coder-01", "search-01"]
    assert rows[0][-1] == "LABELS"
    assert rows[1][-1] == "zone=eu-west-1"
    # Labels the registry derives from the passport select too.
    rows = table(kubectl.run("get", "np", "-l", "capability.python=true,zone!=eu-west-1").ok())
    assert [row[0] for row in rows[1:]] == ["coder-02"]


def test_field_selectors(server: KubeServer, kubectl: Kubectl) -> None:
    server.status("coder-02", phase="NotReady")
    cases = {
        "metadata.name=coder-01": ["coder-01"],
        "metadata.nodeType==tool": ["search-01"],
        "metadata.nodeType!=tool": ["coder-01", "coder-02"],
        "status.phase=NotReady": ["coder-02"],
        "status.healthState=ALIVE,status.phase!=NotReady": ["coder-01", "search-01"],
    }
    for selector, names in cases.items():
        rows = table(kubectl.run("get", "np", "--field-selector", selector).ok())
        assert [row[0] for row in rows[1:]] == names, selector


def test_a_field_selector_not_supported_is_refused_not_ignored(kubectl: Kubectl) -> None:
    result = kubectl.run("get", "np", "--field-selector", "spec.endpoint.protocol=mindbus")
    assert result.rc == 1
    assert "Error from server (BadRequest)" in result.stderr
    assert "field label not supported: spec.endpoint.protocol" in result.stderr
    assert result.stdout == ""


def test_get_missing_is_kubernetes_not_found(kubectl: Kubectl) -> None:
    result = kubectl.run("get", "np", "ghost")
    assert result.rc == 1
    assert 'Error from server (NotFound): nodepassports.ai_team.io "ghost" not found' in (
        result.stderr
    )


def test_get_leases_and_the_category(server: KubeServer, kubectl: Kubectl) -> None:
    server.clock.advance(3)
    rows = table(kubectl.run("get", "leases").ok())
    assert rows[0] == ["NAME", "HOLDER", "RENEWED"]
    assert rows[1] == ["coder-01", "coder-01", "3s ago"]
    both = kubectl.run("get", "ai-team", "-o", "name").ok().split()
    assert both == [f"nodepassport.ai_team.io/{n}" for n in NAMES] + [
        f"lease.ai_team.io/{n}" for n in NAMES
    ]


# -- watch ---------------------------------------------------------------------------------


def _watch(kubectl: Kubectl, *args: str, seconds: float = 4) -> subprocess.Popen[str]:
    """``kubectl get np -w`` running in the background, bounded by --request-timeout."""
    return subprocess.Popen(
        [
            kubectl_binary(), "--kubeconfig", str(kubectl.config),
            "--cache-dir", str(kubectl.home / "cache"),
            "get", "np", "-w", "--request-timeout", f"{seconds}s", *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"HOME": str(kubectl.home), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def _wait_for_line(process: subprocess.Popen[str], lines: list[str], count: int) -> None:
    """Read stdout in a thread until ``count`` lines came (bounded by the process's timeout)."""
    assert process.stdout is not None
    stream = process.stdout

    def read() -> None:
        for line in stream:
            lines.append(line)
            if len(lines) >= count:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=15)


def test_watch_prints_a_health_transition_as_modified(server: KubeServer, kubectl: Kubectl) -> None:
    process = _watch(kubectl, "--output-watch-events", "--field-selector", "metadata.name=coder-01")
    try:
        lines: list[str] = []
        _wait_for_line(process, lines, 2)  # the header and the ADDED row of the list
        assert table("".join(lines))[1][:4] == ["ADDED", "coder-01", "agent", "ALIVE"]
        server.silence(server.registry.ttl_seconds + 1)  # no heartbeat: NOT_READY
        _wait_for_line(process, lines, 3)
        row = table("".join(lines))[2]
        assert row[:5] == ["MODIFIED", "coder-01", "agent", "NOT_READY", "NotReady"]
    finally:
        process.communicate(timeout=20)  # waits for --request-timeout; closes the pipes


def test_watch_is_bounded_by_request_timeout(kubectl: Kubectl) -> None:
    started = time.monotonic()
    result = kubectl.run("get", "np", "-w", "--request-timeout", "2s", timeout=20)
    assert time.monotonic() - started < 15
    assert [row[0] for row in table(result.stdout)[1:]] == NAMES


# -- auth ----------------------------------------------------------------------------------


def test_an_unknown_token_is_unauthorized(server: KubeServer, tmp_path: Path) -> None:
    # (With no credentials at all kubectl does not ask: it prompts for a username.)
    stranger = kubectl_for(tmp_path, server.url, token="not-this-registrys", ca_file=server.ca)
    result = stranger.run("get", "np")
    assert result.rc == 1
    assert "error: You must be logged in to the server" in result.stderr


def test_a_reader_token_and_inline_ca_data(server: KubeServer, tmp_path: Path) -> None:
    reader = kubectl_for(tmp_path, server.url, token=READER, ca_data=server.ca_pem)
    assert [row[0] for row in table(reader.run("get", "np").ok())[1:]] == NAMES


def test_an_untrusted_server_certificate_is_refused(server: KubeServer, tmp_path: Path) -> None:
    untrusting = kubectl_for(tmp_path, server.url, token=ADMIN)
    result = untrusting.run("get", "np")
    assert result.rc == 1
    assert "certificate" in result.stderr
    insecure = kubectl_for(tmp_path / "insecure", server.url, token=ADMIN, insecure=True)
    assert insecure.run("get", "np").rc == 0
