"""The real kubectl against a live registry (HTTPS, bearer token, trustme CA), on memory and etcd.

Phase 1 of #11: discovery, ``kubectl version``/``api-resources``/``api-versions``/``explain``,
and ``kubectl get`` of nodepassports in every form (Table, wide, yaml, label and field
selectors, watch). Phase 2: every write verb kubectl has for them (create, replace, apply
client- and server-side, edit, patch of every type, label, annotate, delete, the status
subresource, ``wait --for=condition=Ready``), dry runs, field validation, conflicts, auth.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import passport
from kube_server import ADMIN, NODE, NODES, READER, KubeServer, kube_server_on
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
    assert verbs == [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]
    if kubectl_minor() >= 22:  # older kubectl has no CATEGORIES column
        assert by_name["nodepassports"][6] == "ai-team"
    assert by_name["leases"][1:4] == ["ai_team.io/v1", "false", "Lease"]
    # Batched renewals are create-only, as TokenReview is.
    assert by_name["leaserenewals"][1:4] == ["ai_team.io/v1", "false", "LeaseRenewal"]
    assert by_name["leaserenewals"][4].strip("[]").split() == ["create"]
    only = kubectl.run("api-resources", "--api-group", "ai_team.io", "-o", "name").ok()
    assert only.split() == [
        "leaserenewals.ai_team.io",
        "leases.ai_team.io",
        "nodepassports.ai_team.io",
        "nodetypes.ai_team.io",
    ]


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
        # find_nodes' only_healthy and only_verified (#12): no claim is verified, none failed.
        "status.schedulable=true": ["coder-01", "search-01"],
        "status.verification.required=true,metadata.nodeType=agent": ["coder-01", "coder-02"],
    }
    for selector, names in cases.items():
        rows = table(kubectl.run("get", "np", "--field-selector", selector).ok())
        assert [row[0] for row in rows[1:]] == names, selector
    strict = ("--field-selector", "status.verification.required=true")
    result = kubectl.run("get", "np", "-l", "capability.code_generation", *strict)
    assert (result.ok(), result.stderr.strip()) == ("", "No resources found")
    refused = kubectl.run("get", "np", "--field-selector", "status.schedulable=maybe")
    assert refused.rc == 1
    assert "status.schedulable is true or false, not 'maybe'" in refused.stderr


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


# -- writes (#11 phase 2) --------------------------------------------------------------------


@pytest.fixture
def writes_supported() -> None:
    if kubectl_minor() < 27:
        pytest.skip(
            f"kubectl 1.{kubectl_minor()} validates writes on the client from OpenAPI v2 in "
            "protobuf, which the registry does not serve (kubectl 1.27+ lets the server "
            "validate, finding fieldValidation in /openapi/v3), and lacks --subresource"
        )


def _file(tmp_path: Path, doc: dict[str, Any] | list[dict[str, Any]], name: str = "np.yaml") -> str:
    path = tmp_path / name
    docs = doc if isinstance(doc, list) else [doc]
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    return str(path)


def _get(kubectl: Kubectl, name: str) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(kubectl.run("get", "np", name, "-o", "yaml").ok())
    return found


@pytest.mark.usefixtures("writes_supported")
def test_create_registers_and_a_taken_name_already_exists(
    server: KubeServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    doc = passport("web-01", kind="tool", labels={"zone": "eu-west-1", "app": "web"})
    assert kubectl.run("create", "-f", _file(tmp_path, doc)).ok() == (
        "nodepassport.ai_team.io/web-01 created\n"
    )
    created = _get(kubectl, "web-01")
    assert created["metadata"]["uid"] == doc["metadata"]["uid"]
    assert created["spec"] == server.registry.get_by_name("web-01").passport.to_dict()["spec"]
    # The same name with another uid is another node: refused in apiserver's words.
    other = passport("web-01", uid="00000000-0000-4000-8000-000000000001")
    result = kubectl.run("create", "-f", _file(tmp_path, other, "other.yaml"))
    assert result.rc == 1
    assert "Error from server (AlreadyExists): error when creating" in result.stderr
    assert 'nodepassports.ai_team.io "web-01" already exists' in result.stderr


@pytest.mark.usefixtures("writes_supported")
def test_create_validates_strictly_by_default(kubectl: Kubectl, tmp_path: Path) -> None:
    doc = passport("web-01")
    doc["spec"]["bogus"] = True
    path = _file(tmp_path, doc)
    refused = kubectl.run("create", "-f", path)
    assert refused.rc == 1
    assert 'strict decoding error: unknown field "spec.bogus"' in refused.stderr
    assert kubectl.run("get", "np", "web-01").rc == 1  # nothing stored
    warned = kubectl.run("create", "-f", path, "--validate=warn")
    assert warned.ok() == "nodepassport.ai_team.io/web-01 created\n"
    assert 'Warning: unknown field "spec.bogus"' in warned.stderr


@pytest.mark.usefixtures("writes_supported")
def test_server_dry_run_stores_nothing(
    server: KubeServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    version = server.registry.resource_version
    path = _file(tmp_path, passport("web-01"))
    assert kubectl.run("create", "-f", path, "--dry-run=server").ok() == (
        "nodepassport.ai_team.io/web-01 created (server dry run)\n"
    )
    kubectl.run("label", "np", "coder-01", "team=a", "--dry-run=server").ok()
    kubectl.run("delete", "np", "coder-02", "--dry-run=server").ok()
    assert server.registry.resource_version == version
    assert [e.name for e in server.registry.list_nodes().items] == NAMES


@pytest.mark.usefixtures("writes_supported")
def test_label_annotate_and_remove(kubectl: Kubectl) -> None:
    assert kubectl.run("label", "np", "coder-01", "team=a").ok() == (
        "nodepassport.ai_team.io/coder-01 labeled\n"
    )
    kubectl.run("annotate", "np", "coder-01", "note=hello").ok()
    overwrite = kubectl.run("label", "np", "coder-01", "team=b")
    assert overwrite.rc == 1
    assert "'team' already has a value (a)" in overwrite.stderr
    kubectl.run("label", "np", "coder-01", "team=b", "--overwrite").ok()
    rows = table(kubectl.run("get", "np", "-l", "team=b").ok())
    assert [row[0] for row in rows[1:]] == ["coder-01"]
    kubectl.run("label", "np", "coder-01", "team-").ok()
    meta = _get(kubectl, "coder-01")["metadata"]
    assert meta["labels"] == {"zone": "eu-west-1"}
    assert meta["annotations"] == {"note": "hello"}


@pytest.mark.usefixtures("writes_supported")
def test_patch_strategic_merge_json(server: KubeServer, kubectl: Kubectl) -> None:
    kubectl.run("patch", "np", "coder-01", "-p", '{"spec":{"maxConcurrentTasks":6}}').ok()
    kubectl.run(
        "patch", "np", "coder-01", "--type=merge", "-p", '{"metadata":{"labels":{"a":"1"}}}'
    ).ok()
    kubectl.run(
        "patch", "np", "coder-01", "--type=json",
        "-p", '[{"op":"add","path":"/spec/capabilities/-","value":{"name":"rust"}}]',
    ).ok()  # fmt: skip
    doc = _get(kubectl, "coder-01")
    assert doc["spec"]["maxConcurrentTasks"] == 6
    assert doc["metadata"]["labels"]["a"] == "1"
    assert [c["name"] for c in doc["spec"]["capabilities"]] == [
        "code_generation", "python", "rust"
    ]  # fmt: skip
    # Strategic merge merges capabilities by name.
    kubectl.run(
        "patch", "np", "coder-01", "-p", '{"spec":{"capabilities":[{"name":"rust","version":"2"}]}}'
    ).ok()
    caps = _get(kubectl, "coder-01")["spec"]["capabilities"]
    assert caps[-1] == {"name": "rust", "version": "2", "params": {}}
    assert len(caps) == 3


@pytest.mark.usefixtures("writes_supported")
def test_patch_errors_say_what_and_where(kubectl: Kubectl) -> None:
    bad = kubectl.run(
        "patch", "np", "coder-01", "--type=json", "-p", '[{"op":"remove","path":"/nope"}]'
    )
    assert bad.rc == 1
    assert bad.stderr == (
        'The nodepassports "coder-01" is invalid: '
        "[0] remove /nope: can't remove a non-existent object 'nope'\n"
    )
    owned = kubectl.run(
        "patch", "np", "coder-01", "--type=merge", "-p", '{"status":{"healthState":"OFFLINE"}}'
    )
    assert owned.rc == 1
    assert "status.healthState: set by the registry, not writable by a client" in owned.stderr
    invalid = kubectl.run("patch", "np", "coder-01", "-p", '{"spec":{"maxConcurrentTasks":-1}}')
    assert invalid.rc == 1
    assert "spec.maxConcurrentTasks" in invalid.stderr
    missing = kubectl.run("patch", "np", "ghost", "-p", '{"metadata":{"labels":{"a":"1"}}}')
    assert 'Error from server (NotFound): nodepassports.ai_team.io "ghost" not found' in (
        missing.stderr
    )


@pytest.mark.usefixtures("writes_supported")
def test_edit(kubectl: Kubectl) -> None:
    editor = "sed -i s/maxConcurrentTasks:\\ 4/maxConcurrentTasks:\\ 9/"
    assert kubectl.run("edit", "np", "coder-01", env={"EDITOR": editor}).ok() == (
        "nodepassport.ai_team.io/coder-01 edited\n"
    )
    assert _get(kubectl, "coder-01")["spec"]["maxConcurrentTasks"] == 9


@pytest.mark.usefixtures("writes_supported")
def test_replace_and_its_optimistic_concurrency(kubectl: Kubectl, tmp_path: Path) -> None:
    doc = _get(kubectl, "coder-02")
    doc["metadata"]["labels"]["zone"] = "us-west-2"
    path = _file(tmp_path, doc)
    assert kubectl.run("replace", "-f", path).ok() == "nodepassport.ai_team.io/coder-02 replaced\n"
    stale = kubectl.run("replace", "-f", path)  # the resourceVersion it carries is gone now
    assert stale.rc == 1
    assert "Error from server (Conflict)" in stale.stderr
    assert "the object has been modified; please apply your changes to the latest version" in (
        stale.stderr
    )
    assert _get(kubectl, "coder-02")["metadata"]["labels"]["zone"] == "us-west-2"


@pytest.mark.usefixtures("writes_supported")
def test_client_side_apply(kubectl: Kubectl, tmp_path: Path) -> None:
    doc = passport("web-01", kind="tool", labels={"zone": "eu-west-1", "app": "web"})
    path = _file(tmp_path, doc)
    assert kubectl.run("apply", "-f", path).ok() == "nodepassport.ai_team.io/web-01 created\n"
    meta = _get(kubectl, "web-01")["metadata"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in meta["annotations"]
    doc["metadata"]["labels"] = {"zone": "eu-west-1", "tier": "front"}  # app removed
    doc["spec"]["maxConcurrentTasks"] = 2
    path = _file(tmp_path, doc)
    assert kubectl.run("apply", "-f", path).ok() == "nodepassport.ai_team.io/web-01 configured\n"
    applied = _get(kubectl, "web-01")
    assert applied["metadata"]["labels"] == {"zone": "eu-west-1", "tier": "front"}
    assert applied["spec"]["maxConcurrentTasks"] == 2
    assert kubectl.run("apply", "-f", path).ok() == "nodepassport.ai_team.io/web-01 unchanged\n"


@pytest.mark.usefixtures("writes_supported")
def test_server_side_apply_owns_fields_and_conflicts(kubectl: Kubectl, tmp_path: Path) -> None:
    doc = passport("web-01", kind="tool", labels={"zone": "eu-west-1", "app": "web"})
    path = _file(tmp_path, doc)
    assert kubectl.run("apply", "--server-side", "-f", path).ok() == (
        "nodepassport.ai_team.io/web-01 serverside-applied\n"
    )
    managed = yaml.safe_load(
        kubectl.run("get", "np", "web-01", "-o", "yaml", "--show-managed-fields").ok()
    )["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managed] == [("kubectl", "Apply")]
    assert "f:app" in managed[0]["fieldsV1"]["f:metadata"]["f:labels"]
    doc["metadata"]["labels"]["app"] = "api"
    path = _file(tmp_path, doc)
    conflict = kubectl.run("apply", "--server-side", "--field-manager=ops", "-f", path)
    assert conflict.rc == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .metadata.labels.app' in (
        conflict.stderr
    )
    kubectl.run(
        "apply", "--server-side", "--field-manager=ops", "--force-conflicts", "-f", path
    ).ok()
    assert _get(kubectl, "web-01")["metadata"]["labels"]["app"] == "api"


@pytest.mark.usefixtures("writes_supported")
def test_status_subresource_and_wait_for_ready(server: KubeServer, kubectl: Kubectl) -> None:
    waiting = kubectl.run("wait", "--for=condition=Ready", "np/coder-01", "--timeout=1s")
    assert waiting.rc == 1  # no Ready condition yet
    kubectl.run(
        "patch", "np", "coder-01", "--subresource=status", "--type=merge",
        "-p", '{"status":{"currentTasks":2,"conditions":[{"type":"Ready","status":"True"}]}}',
    ).ok()  # fmt: skip
    assert kubectl.run("wait", "--for=condition=Ready", "np/coder-01", "--timeout=5s").ok() == (
        "nodepassport.ai_team.io/coder-01 condition met\n"
    )
    # Strategic merge on /status merges conditions by type; JSON patch works there too.
    kubectl.run(
        "patch", "np", "coder-01", "--subresource=status",
        "-p", '{"status":{"conditions":[{"type":"DiskPressure","status":"False"}]}}',
    ).ok()  # fmt: skip
    kubectl.run(
        "patch", "np", "coder-01", "--subresource=status", "--type=json",
        "-p", '[{"op":"replace","path":"/status/phase","value":"Pending"}]',
    ).ok()  # fmt: skip
    status = _get(kubectl, "coder-01")["status"]
    assert [c["type"] for c in status["conditions"]] == ["Ready", "DiskPressure"]
    assert status["conditions"][0]["lastTransitionTime"]  # stamped, as update_status does
    assert (status["phase"], status["currentTasks"]) == ("Pending", 2)
    # The main resource ignores status; /status ignores the rest.
    kubectl.run(
        "patch", "np", "coder-01", "--type=merge", "-p", '{"status":{"currentTasks":7}}'
    ).ok()
    kubectl.run(
        "patch", "np", "coder-01", "--subresource=status", "--type=merge",
        "-p", '{"spec":{"maxConcurrentTasks":1}}',
    ).ok()  # fmt: skip
    doc = _get(kubectl, "coder-01")
    assert (doc["status"]["currentTasks"], doc["spec"]["maxConcurrentTasks"]) == (2, 4)


@pytest.mark.usefixtures("writes_supported")
def test_status_writes_are_held_to_the_passport_limits(kubectl: Kubectl) -> None:
    conditions = [{"type": f"C{i}", "status": "True"} for i in range(33)]
    patch = json.dumps({"status": {"conditions": conditions}})
    refused = kubectl.run("patch", "np", "coder-01", "--subresource=status", "-p", patch)
    assert refused.rc == 1
    assert "status.conditions: List should have at most 32 items" in refused.stderr
    assert "conditions" not in _get(kubectl, "coder-01")["status"] or (
        len(_get(kubectl, "coder-01")["status"]["conditions"]) < 32
    )


@pytest.mark.usefixtures("writes_supported")
def test_delete_and_delete_by_label(kubectl: Kubectl) -> None:
    assert kubectl.run("delete", "np", "search-01").ok() == (
        'nodepassport.ai_team.io "search-01" deleted\n'
    )
    kubectl.run("label", "np", "coder-02", "doomed=yes").ok()
    assert kubectl.run("delete", "np", "-l", "doomed=yes").ok() == (
        'nodepassport.ai_team.io "coder-02" deleted\n'
    )
    assert [row[0] for row in table(kubectl.run("get", "np").ok())[1:]] == ["coder-01"]
    gone = kubectl.run("delete", "np", "ghost")
    assert 'Error from server (NotFound): nodepassports.ai_team.io "ghost" not found' in (
        gone.stderr
    )


def _open_watches(server: KubeServer) -> float:
    value: float = server.app.state.context.metrics.watch_streams.collect()[0].samples[0].value
    return value


def _wait_for_watch(server: KubeServer, before: float) -> None:
    """Until the server has one more watch stream open than ``before`` (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    while _open_watches(server) < before + 1:
        assert time.monotonic() < deadline, "kubectl opened no watch"
        time.sleep(0.02)


@pytest.mark.usefixtures("writes_supported")
def test_watch_sees_every_write(server: KubeServer, kubectl: Kubectl, tmp_path: Path) -> None:
    before = _open_watches(server)
    process = _watch(
        kubectl, "--output-watch-events", "--field-selector", "metadata.name=web-01", seconds=30
    )
    try:
        lines: list[str] = []
        _wait_for_watch(server, before)  # kubectl lists first: no node, so no row to wait for
        kubectl.run("create", "-f", _file(tmp_path, passport("web-01"))).ok()
        kubectl.run("label", "np", "web-01", "a=b").ok()
        kubectl.run("delete", "np", "web-01").ok()
        _wait_for_line(process, lines, 4)
        events = [row[0] for row in table("".join(lines))[1:]]
        assert events == ["ADDED", "MODIFIED", "DELETED"]
    finally:
        process.terminate()  # no need to wait out --request-timeout
        process.communicate(timeout=20)


@pytest.mark.usefixtures("writes_supported")
def test_writes_are_authorized_as_the_nodes_routes(
    server: KubeServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    reader = kubectl_for(tmp_path / "reader", server.url, token=READER, ca_file=server.ca)
    refused = reader.run("label", "np", "coder-01", "a=b")
    assert refused.rc == 1
    assert "Error from server (Forbidden)" in refused.stderr
    assert "may not change nodes" in refused.stderr
    node = kubectl_for(tmp_path / "node", server.url, token=NODE, ca_file=server.ca)
    node.run(
        "patch", "np", "coder-01", "--subresource=status", "-p", '{"status":{"currentTasks":1}}'
    ).ok()
    other = node.run("label", "np", "coder-02", "a=b")
    assert "may not change node 'coder-02', only 'coder-01'" in other.stderr
    protected = node.run("label", "np", "coder-01", "registry.ai-team.io/trusted=true")
    assert protected.rc == 1
    assert "labels under 'registry.ai-team.io/' are set by the registry and operators" in (
        protected.stderr
    )
    kubectl.run("label", "np", "coder-01", "registry.ai-team.io/trusted=true").ok()  # an admin
    assert (
        node.run("delete", "np", "coder-01").ok() == 'nodepassport.ai_team.io "coder-01" deleted\n'
    )


@pytest.mark.usefixtures("writes_supported")
def test_diff_shows_what_apply_would_change_and_stores_nothing(
    server: KubeServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    doc = passport("web-01", labels={"zone": "eu-west-1", "app": "web"})
    kubectl.run("apply", "-f", _file(tmp_path, doc)).ok()
    version = server.registry.resource_version
    doc["metadata"]["labels"]["app"] = "api"
    path = _file(tmp_path, doc, "changed.yaml")
    for how in ("--server-side=false", "--server-side"):
        result = kubectl.run("diff", how, "-f", path)
        assert result.rc == 1, result.stderr  # 1: there are differences
        assert "-    app: web\n+    app: api\n" in result.stdout
    assert server.registry.resource_version == version  # dry runs only
