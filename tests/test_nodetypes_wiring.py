"""Custom node types wired into the registry (#12): registered objects (``nodetypes``),
passports validated against their type on every write, kept in the store across restarts."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import passport
from etcd_server import EtcdServer
from live_server import make_app, serve
from node_registry import FakeClock, Registry, load_settings
from node_registry.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from node_registry.store import open_store

ROOT = Path(__file__).resolve().parent.parent
GPU_WORKER_FILE = ROOT / "examples" / "nodetypes" / "gpu-worker.yaml"
GPU_WORKER: dict[str, Any] = yaml.safe_load(GPU_WORKER_FILE.read_text(encoding="utf-8"))
API = "/apis/ai_team.io/v1"
ADMIN = "admin-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
GPU_01 = "node-gpu-01-token-0123456789ab"
UNKNOWN = (
    "'gpu-worker' is not a registered node type (registered: agent, external, gateway, "
    "monitoring, orchestrator, storage, tool)"
)
BROKEN_CAUSES = [
    ("spec.resources.gpu", "'0' does not match '^[1-9][0-9]*$'"),
    ("spec.maxConcurrentTasks", "16 is greater than the maximum of 8"),
    (
        "spec.capabilities[0].params.languages[1]",
        "'cobol' is not one of ['python', 'go']",
    ),
]


def gpu_passport(name: str = "gpu-01") -> dict[str, Any]:
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "name": name,
            "nodeType": "gpu-worker",
        },
        "spec": {
            "capabilities": [
                {"name": "code_generation", "version": "1.1", "params": {"languages": ["python"]}}
            ],
            "resources": {"gpu": "2"},
            "endpoint": {"protocol": "http", "address": f"http://{name}:8000/tasks"},
            "maxConcurrentTasks": 4,
        },
        "status": {"phase": "Running"},
    }


def broken_passport() -> dict[str, Any]:
    doc = gpu_passport()
    doc["spec"]["resources"]["gpu"] = "0"
    doc["spec"]["maxConcurrentTasks"] = 16
    doc["spec"]["capabilities"][0]["params"] = {"languages": ["python", "cobol"]}
    return doc


def causes(error: ValidationError) -> list[tuple[str, str]]:
    return [(e.loc, e.message) for e in error.errors]


def test_a_custom_type_is_refused_until_registered_then_validated(registry: Registry) -> None:
    with pytest.raises(ValidationError) as unknown:
        registry.register(gpu_passport())
    assert causes(unknown.value) == [("metadata.nodeType", UNKNOWN)]

    registry.register_node_type(GPU_WORKER)
    entry = registry.register(gpu_passport())
    assert entry.node_kind == "gpu-worker"
    assert [e.name for e in registry.find_nodes(kind="gpu-worker")] == ["gpu-01"]

    with pytest.raises(ValidationError) as broken:
        registry.register(broken_passport())
    assert causes(broken.value) == BROKEN_CAUSES
    # Built-in types keep working beside it, and the refused write changed nothing.
    registry.register(passport("coder-01"))
    assert registry.get(entry.node_id).passport.spec.resources == {"gpu": "2"}


def test_every_write_path_checks_the_type(registry: Registry) -> None:
    registry.register_node_type(GPU_WORKER)
    node = registry.register(gpu_passport()).node_id
    with pytest.raises(ValidationError) as changed:
        registry.set_capabilities(node, [{"name": "web_search"}])
    assert causes(changed.value) == [
        (
            "spec.capabilities[0].name",
            "capability 'web_search' is not defined by node type 'gpu-worker' "
            "(it defines: code_generation, gpu_inference)",
        )
    ]


def test_registering_and_deleting_types(registry: Registry) -> None:
    registry.register_node_type(GPU_WORKER)
    with pytest.raises(ConflictError, match='"gpu-worker" already exists'):
        registry.register_node_type(GPU_WORKER)
    builtin = copy.deepcopy(GPU_WORKER)
    builtin["metadata"]["name"] = "agent"
    with pytest.raises(ConflictError, match="built-in or configured"):
        registry.register_node_type(builtin)
    bad = copy.deepcopy(GPU_WORKER)
    bad["spec"]["schema"]["openAPIV3Schema"]["$ref"] = "#/x"
    with pytest.raises(ValidationError) as refused:
        registry.register_node_type(bad)
    assert [e.loc for e in refused.value.errors] == ["spec.schema.openAPIV3Schema.$ref"]

    node = registry.register(gpu_passport()).node_id
    with pytest.raises(ConflictError, match="is the type of 1 registered node"):
        registry.delete_node_type("gpu-worker")
    registry.deregister(node)
    assert registry.delete_node_type("gpu-worker").name == "gpu-worker"
    with pytest.raises(NotFoundError):
        registry.delete_node_type("gpu-worker")
    with pytest.raises(ForbiddenError, match="built in"):
        registry.delete_node_type("agent")
    with pytest.raises(ValidationError, match="not a registered node type"):
        registry.register(gpu_passport())


def test_types_from_the_config_file(clock: FakeClock) -> None:
    settings = load_settings(node_types={"path": GPU_WORKER_FILE})
    with Registry(clock=clock, settings=settings) as registry:
        assert "gpu-worker" in registry.node_types.types
        assert registry.node_types.source("gpu-worker") == "configured"
        assert registry.node_types.source("agent") == "built-in"
        registry.register(gpu_passport())
        with pytest.raises(ForbiddenError):
            registry.delete_node_type("gpu-worker")


# -- over HTTP -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("nodetypes") / "tokens.yaml"
    entries = [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": READER, "role": "reader", "name": "dashboard"},
        {"token": GPU_01, "role": "node", "node": "gpu-01"},
    ]
    tokens.write_text(yaml.safe_dump({"tokens": entries}), encoding="utf-8")
    tokens.chmod(0o600)
    with serve(make_app(clock=FakeClock(), server={"tokens_file": tokens})) as url:
        yield url


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_nodetypes_over_http(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        before = http.post(f"{API}/nodepassports", json=gpu_passport(), headers=_as(GPU_01))
        assert before.status_code == 422, before.text
        assert before.json()["details"]["causes"] == [
            {"reason": "FieldValueInvalid", "field": "metadata.nodeType", "message": UNKNOWN}
        ]
        for token in (READER, GPU_01):
            refused = http.post(f"{API}/nodetypes", json=GPU_WORKER, headers=_as(token))
            assert refused.status_code == 403, refused.text
            assert "only an admin may" in refused.json()["message"]
        created = http.post(f"{API}/nodetypes", json=GPU_WORKER, headers=_as(ADMIN))
        assert created.status_code == 201, created.text
        assert created.json()["metadata"] == {"name": "gpu-worker"}
        again = http.post(f"{API}/nodetypes", json=GPU_WORKER, headers=_as(ADMIN))
        assert again.status_code == 409, again.text

        listed = http.get(f"{API}/nodetypes", headers=_as(READER)).json()
        assert listed["kind"] == "NodeTypeList"
        assert [t["metadata"]["name"] for t in listed["items"]] == [
            "agent",
            "external",
            "gateway",
            "gpu-worker",
            "monitoring",
            "orchestrator",
            "storage",
            "tool",
        ]
        table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        table = http.get(f"{API}/nodetypes", headers={**_as(READER), "Accept": table_accept}).json()
        assert table["kind"] == "Table"
        assert [c["name"] for c in table["columnDefinitions"]] == [
            "Name",
            "Source",
            "Schema",
            "Capabilities",
            "Description",
        ]
        rows = {row["cells"][0]: row["cells"][1:4] for row in table["rows"]}
        assert rows["agent"] == ["built-in", "-", "*"]
        assert rows["gpu-worker"] == ["registered", "yes", "code_generation,gpu_inference"]
        one = http.get(f"{API}/nodetypes/gpu-worker", headers=_as(READER)).json()
        assert one["spec"]["capabilities"]["code_generation"]["versions"] == ["1.0", "1.1"]
        missing = http.get(f"{API}/nodetypes/nope", headers=_as(READER))
        assert missing.status_code == 404
        assert missing.json()["message"] == 'nodetypes.ai_team.io "nope" not found'

        assert (
            http.post(f"{API}/nodepassports", json=gpu_passport(), headers=_as(GPU_01)).status_code
            == 201
        )
        broken = http.put(
            f"{API}/nodepassports/gpu-01", json=broken_passport(), headers=_as(GPU_01)
        )
        assert broken.status_code == 422, broken.text
        assert [(c["field"], c["message"]) for c in broken.json()["details"]["causes"]] == (
            BROKEN_CAUSES
        )
        np = http.get(
            f"{API}/nodepassports?fieldSelector=metadata.nodeType=gpu-worker", headers=_as(READER)
        ).json()
        assert [n["metadata"]["name"] for n in np["items"]] == ["gpu-01"]

        # A merge patch loosens the type: the broken passport's gpu is then allowed.
        patch = {"spec": {"schema": {"openAPIV3Schema": {"properties": {"resources": None}}}}}
        by_node = http.patch(f"{API}/nodetypes/gpu-worker", json=patch, headers=_as(GPU_01))
        assert by_node.status_code == 403
        patched = http.patch(
            f"{API}/nodetypes/gpu-worker?fieldValidation=Strict",
            json=patch,
            headers={**_as(ADMIN), "Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        assert "resources" not in patched.json()["spec"]["schema"]["openAPIV3Schema"]["properties"]
        loosened = http.put(
            f"{API}/nodepassports/gpu-01", json=broken_passport(), headers=_as(GPU_01)
        )
        assert [c["field"] for c in loosened.json()["details"]["causes"]] == [
            "spec.maxConcurrentTasks",
            "spec.capabilities[0].params.languages[1]",
        ]
        renamed = http.patch(
            f"{API}/nodetypes/gpu-worker", json={"metadata": {"name": "x"}}, headers=_as(ADMIN)
        )
        assert renamed.status_code == 422
        builtin = http.patch(f"{API}/nodetypes/agent", json=patch, headers=_as(ADMIN))
        assert builtin.status_code == 403

        in_use = http.delete(f"{API}/nodetypes/gpu-worker", headers=_as(ADMIN))
        assert in_use.status_code == 409, in_use.text
        assert http.delete(f"{API}/nodepassports/gpu-01", headers=_as(ADMIN)).status_code == 200
        deleted = http.delete(f"{API}/nodetypes/gpu-worker", headers=_as(ADMIN))
        assert deleted.status_code == 200, deleted.text


def test_discovery_and_openapi_list_nodetypes(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10, headers=_as(READER)) as http:
        resources = {r["name"]: r for r in http.get(f"{API}").json()["resources"]}
        assert resources["nodetypes"]["kind"] == "NodeType"
        assert resources["nodetypes"]["verbs"] == ["create", "delete", "get", "list", "patch"]
        assert resources["nodepassports/verification"]["verbs"] == ["get", "patch", "update"]
        assert resources["nodepassports/capabilities"]["verbs"] == ["get", "update"]
        index = http.get("/openapi/v3").json()
        url = index["paths"]["apis/ai_team.io/v1"]["serverRelativeURL"]
        document = http.get(url).json()
        schema = document["components"]["schemas"]["io.ai_team.v1.NodeType"]
        assert schema["x-kubernetes-group-version-kind"] == [
            {"group": "ai_team.io", "version": "v1", "kind": "NodeType"}
        ]
        assert f"/{API.strip('/')}/nodetypes" in document["paths"]
        # kubectl decides whether a kind validates on the server from the first PATCH of that
        # kind it meets (in map order): every PATCH of NodePassport must take both params.
        for path, operations in document["paths"].items():
            patch = operations.get("patch")
            if patch and patch["x-kubernetes-group-version-kind"]["kind"] == "NodePassport":
                names = {p["name"] for p in patch["parameters"]}
                assert {"fieldValidation", "dryRun"} <= names, path


# -- on etcd: registered types outlive the process -------------------------------------------


def test_registered_types_survive_a_restart_on_etcd(shared_etcd: EtcdServer) -> None:
    etcd = shared_etcd  # the session's server; this test's keys under a fresh prefix
    clock = FakeClock()
    settings = load_settings(
        store={
            "url": f"etcd://{etcd.endpoint}/test/{uuid.uuid4().hex}",
            "etcd_period_seconds": 0.05,
            "etcd_timeout_seconds": 2,
        }
    )

    def replica(stack: ExitStack) -> Registry:
        store = open_store(settings, clock=clock)
        stack.callback(store.close)
        registry = Registry(store, settings=settings, clock=clock)
        stack.callback(registry.close)
        return registry

    with ExitStack() as stack:
        first, second = replica(stack), replica(stack)
        first.register_node_type(GPU_WORKER)
        # The other replica has not listed since: it asks the store when a passport names it.
        assert second.register(gpu_passport()).node_kind == "gpu-worker"
    with ExitStack() as stack:
        restarted = replica(stack)
        assert "gpu-worker" in restarted.node_types.types
        with pytest.raises(ValidationError) as broken:
            restarted.register(broken_passport())
        assert causes(broken.value) == BROKEN_CAUSES
