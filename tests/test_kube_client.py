"""The official ``kubernetes`` Python client against a live registry, on memory and on etcd.

Its DynamicClient discovers the group, finds NodePassport by kind, lists, gets and watches
(Kubernetes' watch semantics: the current nodes as ADDED, then changes; resume by version;
a health transition as MODIFIED), and errors come back as its own ApiException subclasses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config, dynamic
from kubernetes.dynamic.exceptions import BadRequestError, NotFoundError

from kube_server import ADMIN, NODES, KubeServer, kube_server_on
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
