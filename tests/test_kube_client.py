"""The official ``kubernetes`` Python client against a live registry, on memory and on etcd.

Its DynamicClient discovers the group, finds NodePassport by kind, lists, gets and watches
(Kubernetes' watch semantics: the current nodes as ADDED, then changes; resume by version;
a health transition as MODIFIED), and errors come back as its own ApiException subclasses.
Phase 2: create, replace, every patch type (server-side apply included), the status
subresource, dry runs, field validation, delete preconditions, deletecollection, the watch of
writes, and a node token's limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config, dynamic
from kubernetes.dynamic.exceptions import (
    BadRequestError,
    ConflictError,
    DynamicApiError,
    ForbiddenError,
    NotFoundError,
    UnprocessibleEntityError,
)

from conftest import passport
from kube_server import ADMIN, NODE, NODES, KubeServer, kube_server_on
from kubectl import write_kubeconfig

NAMES = [name for name, _, _ in NODES]


@pytest.fixture(scope="module", params=["memory", "etcd"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeServer]:
    tmp = tmp_path_factory.mktemp(f"client-{request.param}")
    with kube_server_on(request.param, tmp) as live:
        yield live


@pytest.fixture
def client(server: KubeServer, tmp_path: Path) -> Iterator[dynamic.DynamicClient]:
    server.reset()
    path = write_kubeconfig(tmp_path / "kubeconfig", server.url, token=ADMIN, ca_file=server.ca)
    api = config.new_client_from_config(str(path))
    try:
        yield dynamic.DynamicClient(api)
    finally:
        api.close()


def passports(client: dynamic.DynamicClient) -> Any:
    return client.resources.get(api_version="ai_team.io/v1", kind="NodePassport")


def test_discovery_finds_the_group_and_its_kinds(client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    assert (resource.name, resource.short_names, resource.namespaced) == (
        "nodepassports",
        ["np"],
        False,
    )
    assert resource.group_version == "ai_team.io/v1"
    assert set(resource.verbs) == {
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    }
    assert client.resources.get(short_names=["np"]).kind == "NodePassport"
    assert client.resources.get(api_version="ai_team.io/v1", kind="Lease").name == "leases"
    assert client.version["kubernetes"]["gitVersion"].startswith("v1.32.0+node-registry-")


def test_list_and_get(server: KubeServer, client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    listed = resource.get()
    assert listed.kind == "NodePassportList"
    assert [item.metadata.name for item in listed.items] == NAMES
    assert int(listed.metadata.resourceVersion) >= max(
        int(item.metadata.resourceVersion) for item in listed.items
    )
    one = resource.get(name="coder-01")
    assert one.metadata.uid == server.registry.get_by_name("coder-01").node_id
    assert one.status.healthState == "ALIVE"
    assert one.spec.endpoint.queue == "coder-01"
    assert [i.metadata.name for i in resource.get(label_selector="zone=us-east-1").items] == [
        "coder-02"
    ]
    assert [
        i.metadata.name for i in resource.get(field_selector="metadata.nodeType=tool").items
    ] == ["search-01"]


def test_pages_with_limit_and_continue(client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    first = resource.get(limit=2)
    assert [i.metadata.name for i in first.items] == NAMES[:2]
    assert first.metadata.remainingItemCount == 1
    rest = resource.get(limit=2, _continue=first.metadata["continue"])
    assert [i.metadata.name for i in rest.items] == NAMES[2:]
    assert rest.metadata["continue"] is None


def test_errors_are_the_clients_own(client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    with pytest.raises(NotFoundError) as missing:
        resource.get(name="ghost")
    assert 'nodepassports.ai_team.io "ghost" not found' in str(missing.value.summary())
    with pytest.raises(BadRequestError) as refused:
        resource.get(field_selector="spec.maxConcurrentTasks=4")
    assert "field label not supported: spec.maxConcurrentTasks" in str(refused.value.summary())


def test_watch_sends_current_nodes_then_changes(
    server: KubeServer, client: dynamic.DynamicClient
) -> None:
    resource = passports(client)
    events = resource.watch(timeout=3)
    initial = [next(events) for _ in NAMES]
    assert [(e["type"], e["object"].metadata.name) for e in initial] == [
        ("ADDED", name) for name in NAMES
    ]
    server.silence(server.registry.ttl_seconds + 1)  # every node goes NOT_READY
    changed = next(events)
    assert changed["type"] == "MODIFIED"  # Kubernetes has no HEALTH_CHANGED
    assert changed["object"].status.healthState == "NOT_READY"
    assert changed["object"].metadata.name in NAMES
    events.close()


def test_watch_resumes_from_a_resource_version(
    server: KubeServer, client: dynamic.DynamicClient
) -> None:
    resource = passports(client)
    version = resource.get().metadata.resourceVersion
    server.status("coder-02", currentTasks=2)
    events = resource.watch(resource_version=version, timeout=2)
    first = next(events)
    assert (first["type"], first["object"].metadata.name) == ("MODIFIED", "coder-02")
    assert first["object"].status.currentTasks == 2
    assert int(first["object"].metadata.resourceVersion) > int(version)
    events.close()


# -- writes (#11 phase 2) --------------------------------------------------------------------

MERGE = "application/merge-patch+json"


def _client_for(server: KubeServer, tmp_path: Path, token: str) -> Any:
    path = write_kubeconfig(
        tmp_path / f"kubeconfig-{token[:4]}", server.url, token=token, ca_file=server.ca
    )
    return config.new_client_from_config(str(path))


def test_create_get_and_already_exists(server: KubeServer, client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    made = resource.create(body=passport("web-01", kind="tool"))
    assert (made.kind, made.metadata.name, made.status.healthState) == (
        "NodePassport",
        "web-01",
        "ALIVE",
    )
    assert resource.get(name="web-01").metadata.resourceVersion == made.metadata.resourceVersion
    with pytest.raises(ConflictError) as taken:
        resource.create(body=passport("web-01", uid="00000000-0000-4000-8000-000000000001"))
    assert taken.value.status == 409
    assert 'nodepassports.ai_team.io "web-01" already exists' in taken.value.summary()
    # The same uid again is the node registering again: its passport replaced.
    again = resource.create(body=passport("web-01", kind="tool", labels={"zone": "x"}))
    assert again.metadata.labels.to_dict() == {"zone": "x"}


def test_replace_with_a_stale_version_conflicts(client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    current = resource.get(name="coder-01").to_dict()
    current["metadata"]["labels"]["team"] = "a"
    replaced = resource.replace(body=current)
    assert replaced.metadata.labels["team"] == "a"
    assert int(replaced.metadata.resourceVersion) > int(current["metadata"]["resourceVersion"])
    with pytest.raises(ConflictError) as stale:
        resource.replace(body=current)
    assert "the object has been modified" in stale.value.summary()
    renamed = {**replaced.to_dict(), "metadata": {**replaced.to_dict()["metadata"], "uid": NEW_UID}}
    renamed["metadata"].pop("resourceVersion")
    with pytest.raises(UnprocessibleEntityError) as immutable:
        resource.replace(body=renamed)
    assert "metadata.uid: field is immutable" in immutable.value.summary()


NEW_UID = "00000000-0000-4000-8000-000000000002"


def test_patch_types(client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    merged = resource.patch(
        name="coder-01", body={"metadata": {"labels": {"a": "1"}}}, content_type=MERGE
    )
    assert merged.metadata.labels["a"] == "1"
    ops = [{"op": "replace", "path": "/spec/maxConcurrentTasks", "value": 8}]
    assert (
        resource.patch(
            name="coder-01", body=ops, content_type="application/json-patch+json"
        ).spec.maxConcurrentTasks
        == 8
    )
    strategic = resource.patch(
        name="coder-01",
        body={"spec": {"capabilities": [{"name": "go"}]}},
        content_type="application/strategic-merge-patch+json",
    )
    assert [c.name for c in strategic.spec.capabilities] == ["code_generation", "python", "go"]
    # A resourceVersion in the patch is a precondition.
    with pytest.raises(ConflictError):
        resource.patch(
            name="coder-01",
            body={
                "metadata": {
                    "resourceVersion": merged.metadata.resourceVersion,
                    "labels": {"b": "2"},
                }
            },
            content_type=MERGE,
        )


def test_server_side_apply(client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    intent = {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {"name": "coder-01", "labels": {"owner": "alice"}},
    }
    applied = resource.server_side_apply(name="coder-01", body=intent, field_manager="alice")
    assert applied.metadata.labels["owner"] == "alice"
    assert applied.metadata.labels["zone"] == "eu-west-1"  # not alice's, kept
    intent["metadata"]["labels"] = {"owner": "bob"}
    with pytest.raises(ConflictError) as conflict:
        resource.server_side_apply(name="coder-01", body=intent, field_manager="bob")
    assert 'conflict with "alice": .metadata.labels.owner' in conflict.value.summary()
    forced = resource.server_side_apply(
        name="coder-01", body=intent, field_manager="bob", force_conflicts=True
    )
    assert forced.metadata.labels["owner"] == "bob"
    assert [m.manager for m in forced.metadata.managedFields] == ["bob"]
    with pytest.raises(BadRequestError) as nameless:
        resource.patch(name="coder-01", body=intent, content_type="application/apply-patch+yaml")
    assert "fieldManager" in nameless.value.summary()


def test_status_subresource(server: KubeServer, client: dynamic.DynamicClient) -> None:
    status = passports(client).subresources["status"]
    server.silence(server.registry.ttl_seconds + 1)  # NOT_READY: a status report revives it
    reported = status.patch(
        name="coder-02",
        body={"status": {"currentTasks": 3, "conditions": [{"type": "Ready", "status": "True"}]}},
        content_type=MERGE,
    )
    assert reported.status.currentTasks == 3
    assert reported.status.healthState == "ALIVE"
    assert reported.status.phase == "Running"  # the node's own phase, not the overlay's
    whole = reported.to_dict()
    whole["status"]["phase"] = "Pending"
    whole["spec"]["maxConcurrentTasks"] = 1  # /status ignores the spec
    replaced = status.replace(body=whole)
    assert (replaced.status.phase, replaced.spec.maxConcurrentTasks) == ("Pending", 4)
    with pytest.raises(UnprocessibleEntityError) as owned:
        status.patch(
            name="coder-02",
            body={"status": {"registeredAt": "2020-01-01T00:00:00Z"}},
            content_type=MERGE,
        )
    assert "status.registeredAt: set by the registry" in owned.value.summary()
    huge = {
        "status": {"conditions": [{"type": "X", "status": "True", "message": "m" * 30_000}] * 1}
    }
    huge["status"]["conditions"] = [
        {"type": f"C{i}", "status": "True", "message": "m" * 9_000} for i in range(30)
    ]
    with pytest.raises(DynamicApiError) as large:
        status.patch(name="coder-02", body=huge, content_type=MERGE)
    assert large.value.status in (413, 422)
    assert "the passport is too large" in large.value.summary()


def test_dry_run_and_field_validation(server: KubeServer, client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    version = server.registry.resource_version
    made = resource.create(body=passport("web-01"), dry_run="All")
    assert made.metadata.name == "web-01"
    resource.patch(
        name="coder-01",
        body={"metadata": {"labels": {"x": "y"}}},
        content_type=MERGE,
        dry_run="All",
    )
    resource.delete(name="coder-02", dry_run="All")
    assert server.registry.resource_version == version
    with pytest.raises(BadRequestError) as bad:
        resource.create(body=passport("web-01"), dry_run="Some")
    assert "the only value is All" in bad.value.summary()
    # The client has no fieldValidation parameter: Strict and the Warning header over HTTP.
    odd = passport("web-01")
    odd["spec"]["bogus"] = 1
    url = "/apis/ai_team.io/v1/nodepassports"
    strict = server.http.post(url, json=odd, params={"fieldValidation": "Strict"})
    assert strict.status_code == 400
    assert strict.json()["message"] == 'strict decoding error: unknown field "spec.bogus"'
    warned = server.http.post(url, json=odd, params={"fieldValidation": "Warn"})
    assert warned.status_code == 201
    assert warned.headers["warning"] == '299 - "unknown field \\"spec.bogus\\""'
    odd["spec"]["other"] = 2
    ignored = server.http.post(url, json=odd, params={"fieldValidation": "Ignore"})
    assert (ignored.status_code, ignored.headers.get("warning")) == (200, None)
    assert resource.get(name="web-01").spec.other == 2  # kept: the passport as sent


def test_delete_preconditions_and_collections(
    server: KubeServer, client: dynamic.DynamicClient
) -> None:
    resource = passports(client)
    one = resource.get(name="coder-01")
    with pytest.raises(ConflictError) as wrong_uid:
        resource.delete(name="coder-01", body={"preconditions": {"uid": NEW_UID}})
    assert f"Precondition failed: UID in precondition: {NEW_UID}" in wrong_uid.value.summary()
    resource.patch(name="coder-01", body={"metadata": {"labels": {"a": "b"}}}, content_type=MERGE)
    with pytest.raises(ConflictError):
        resource.delete(
            name="coder-01",
            body={"preconditions": {"resourceVersion": one.metadata.resourceVersion}},
        )
    deleted = resource.delete(name="coder-01", body={"preconditions": {"uid": one.metadata.uid}})
    assert deleted.metadata.name == "coder-01"
    gone = resource.delete(label_selector="zone=eu-west-1")  # deletecollection
    assert [i.metadata.name for i in gone.items] == ["search-01"]
    resource.delete(field_selector="metadata.name=coder-02")
    assert resource.get().items == []


def test_watch_sees_every_write(client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    version = resource.get().metadata.resourceVersion
    resource.create(body=passport("web-01"))
    resource.patch(name="web-01", body={"metadata": {"labels": {"a": "b"}}}, content_type=MERGE)
    passports(client).subresources["status"].patch(
        name="web-01", body={"status": {"currentTasks": 1}}, content_type=MERGE
    )
    resource.delete(name="web-01")
    events = resource.watch(resource_version=version, timeout=2)
    seen = [(e["type"], e["object"].metadata.name) for e in events]
    assert seen == [
        ("ADDED", "web-01"),
        ("MODIFIED", "web-01"),
        ("MODIFIED", "web-01"),
        ("DELETED", "web-01"),
    ]


def test_a_node_token_writes_only_its_own_node(server: KubeServer, tmp_path: Path) -> None:
    server.reset()
    api = _client_for(server, tmp_path, NODE)
    try:
        node = dynamic.DynamicClient(api)
        resource = passports(node)
        status = resource.subresources["status"]
        assert resource.get(name="coder-01").metadata.name == "coder-01"  # its own, as its lease
        with pytest.raises(ForbiddenError):
            resource.get(name="coder-02")
        assert (
            status.patch(
                name="coder-01", body={"status": {"currentTasks": 2}}, content_type=MERGE
            ).status.currentTasks
            == 2
        )
        with pytest.raises(ForbiddenError) as other:
            status.patch(name="coder-02", body={"status": {"currentTasks": 2}}, content_type=MERGE)
        assert "may not change node 'coder-02', only 'coder-01'" in other.value.summary()
        with pytest.raises(ForbiddenError) as protected:
            resource.patch(
                name="coder-01",
                body={"metadata": {"labels": {"registry.ai-team.io/gpu-verified": "true"}}},
                content_type=MERGE,
            )
        assert "registry.ai-team.io/" in protected.value.summary()
        with pytest.raises(ForbiddenError):
            resource.delete(label_selector="zone=eu-west-1")
        # Bound to its uid too: another uid under its own name is refused.
        with pytest.raises(ForbiddenError) as uid:
            resource.create(body=passport("coder-01", uid=NEW_UID))
        assert "bound to uid" in uid.value.summary()
        resource.delete(name="coder-01")
    finally:
        api.close()
    assert [e.name for e in server.registry.list_nodes().items] == NAMES[1:]
    assert server.registry.binding("coder-01") is not None  # it left by itself: name kept


def test_create_never_renames_a_registered_uid(client: dynamic.DynamicClient) -> None:
    resource = passports(client)
    uid = resource.get(name="coder-01").metadata.uid
    with pytest.raises(ConflictError) as renamed:
        resource.create(body=passport("coder-09", uid=uid))
    assert f"uid {uid} is registered as node 'coder-01'" in renamed.value.summary()
    assert [i.metadata.name for i in resource.get().items] == NAMES
