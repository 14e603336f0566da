"""The Kubernetes API's pure parts: objects and entries, field selectors, Table, negotiation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from conftest import passport
from node_registry import FakeClock, Registry
from node_registry.errors import BadRequestError, ValidationError
from node_registry.kube import discovery, openapi
from node_registry.kube.fields import parse_field_selector
from node_registry.kube.objects import (
    NodePassportObject,
    entry_to_object,
    object_to_entry,
    passport_of,
)
from node_registry.kube.table import IncludeObject, nodes_table
from node_registry.server.negotiation import Shape, content_type, negotiate

KUBECTL_GET = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
KUBECTL_DISCOVERY = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)
SERVED = frozenset({Shape.TABLE, Shape.METADATA, Shape.METADATA_LIST})


def test_an_object_is_the_passport_plus_the_registrys_view(
    registry: Registry, clock: FakeClock
) -> None:
    sent = passport("coder-01")
    sent["metadata"]["annotations"] = {"team": "red"}
    entry = registry.register(sent)
    clock.advance(3)
    registry.heartbeat(entry.node_id)
    entry = registry.get(entry.node_id)
    obj = entry_to_object(entry)
    assert obj["metadata"]["creationTimestamp"] == "2026-01-01T00:00:00Z"
    assert obj["metadata"]["resourceVersion"] == str(entry.resource_version)
    assert obj["status"]["lastSeen"] == "2026-01-01T00:00:03.000000Z"
    assert obj["status"]["healthState"] == "ALIVE"
    assert obj["status"]["schedulable"] is True
    assert obj["spec"] == entry.passport.to_dict()["spec"]  # the node's own, untouched
    assert passport_of(obj) == entry.passport.to_dict()
    NodePassportObject.model_validate(obj)  # the object satisfies its published schema
    assert object_to_entry(obj) == entry


def test_a_health_transition_shows_in_status(registry: Registry, clock: FakeClock) -> None:
    entry = registry.register(passport("coder-01"))
    clock.advance(registry.ttl_seconds + 1)
    registry.reconcile()
    silent = registry.get(entry.node_id)
    obj = entry_to_object(silent)
    assert obj["status"]["healthState"] == silent.health_state.value != "ALIVE"
    assert obj["status"]["phase"] == silent.passport.status.phase.value != "Running"
    assert obj["status"]["conditions"][0]["status"] == "Unknown"  # the controller's overlay
    assert obj["status"]["schedulable"] is False


def test_an_object_not_from_the_registry_is_refused_naming_why() -> None:
    with pytest.raises(ValidationError, match="not a NodePassport object"):
        object_to_entry({"metadata": {"name": "x"}})
    doc = passport("coder-01")
    with pytest.raises(ValidationError, match="as the registry sends it"):
        object_to_entry(doc)  # a passport alone: no status.lastSeen, no resourceVersion


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("metadata.name=a", [("metadata.name", True, "a")]),
        ("metadata.name==a", [("metadata.name", True, "a")]),
        ("status.phase!=Running,", [("status.phase", False, "Running")]),
        (
            r"metadata.name=a\,b,status.healthState=ALIVE",
            [("metadata.name", True, "a,b"), ("status.healthState", True, "ALIVE")],
        ),
        (r"metadata.nodeType=x\=y\\", [("metadata.nodeType", True, "x=y\\")]),
        ("metadata.name=", [("metadata.name", True, "")]),
    ],
)
def test_field_selector_syntax(text: str, expected: list[tuple[str, bool, str]]) -> None:
    parsed = parse_field_selector(text)
    assert [(r.field, r.equal, r.value) for r in parsed.requirements] == expected
    assert parse_field_selector(str(parsed)) == parsed  # it prints as it parses


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec.capabilities=x", "field label not supported: spec.capabilities"),
        ("metadata.namespace=default", "field label not supported: metadata.namespace"),
        ("metadata.name", "invalid field selector"),
        (r"metadata.name=a\b", "invalid field selector"),
        ("metadata.name=a=b", "invalid field selector"),
        ("x" * 5000, "invalid field selector"),
    ],
)
def test_field_selectors_refused(text: str, message: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        parse_field_selector(text)
    assert str(refused.value).startswith(message)
    assert refused.value.status_code == 400


def test_field_selectors_match_the_entry(registry: Registry, clock: FakeClock) -> None:
    registry.register(passport("coder-01"))
    registry.register(passport("search-01", kind="tool", phase="Pending"))
    clock.advance(registry.ttl_seconds + 1)
    registry.heartbeat(registry.id_of("coder-01"))
    entries = registry.list_nodes().items

    def names(text: str) -> list[str]:
        selector = parse_field_selector(text)
        return [e.name for e in entries if selector.matches(e)]

    assert names("metadata.nodeType=tool") == ["search-01"]
    assert names("status.healthState=ALIVE") == ["coder-01"]
    assert names("status.healthState!=ALIVE") == ["search-01"]
    assert names("status.phase=Running,metadata.name!=coder-01") == []


def _table(registry: Registry, clock: FakeClock, include: IncludeObject) -> dict[str, Any]:
    registry.register(passport("coder-01"))
    clock.advance(200)
    return nodes_table(registry.list_nodes().items, clock.now(), include=include)


def test_table_rows_and_what_they_carry(registry: Registry, clock: FakeClock) -> None:
    table = _table(registry, clock, IncludeObject.METADATA)
    names = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert names[:6] == [(n, 0) for n in ("Name", "Kind", "Health", "Phase", "Tasks", "Age")]
    assert [n for n, p in names if p == 1] == ["Capabilities", "Zone", "Endpoint", "Last-Seen"]
    (row,) = table["rows"]
    # Health is computed at the read; the phase is what was last recorded (no reconcile).
    assert row["cells"][:6] == ["coder-01", "agent", "OFFLINE", "Running", "0/4", "3m20s"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "coder-01"
    assert "spec" not in row["object"]


@pytest.mark.parametrize(
    ("include", "kind"),
    [(IncludeObject.NONE, None), (IncludeObject.OBJECT, "NodePassport")],
)
def test_table_include_object(
    registry: Registry, clock: FakeClock, include: IncludeObject, kind: str | None
) -> None:
    (row,) = _table(registry, clock, include)["rows"]
    assert row.get("object", {}).get("kind") == kind


@pytest.mark.parametrize(
    ("accept", "shape"),
    [
        (KUBECTL_GET, Shape.TABLE),
        ("application/json", Shape.OBJECT),
        (None, Shape.OBJECT),
        ("*/*", Shape.OBJECT),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", Shape.OBJECT),
        ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", Shape.METADATA_LIST),
        ("application/yaml, application/json;as=Table;g=meta.k8s.io;v=v1", Shape.TABLE),
        ("application/json, application/json;as=Table;g=meta.k8s.io;v=v1", Shape.OBJECT),
    ],
)
def test_negotiation_takes_the_first_served_shape(accept: str | None, shape: Shape) -> None:
    assert negotiate(accept, SERVED) is shape


def test_aggregated_discovery_only_when_asked() -> None:
    served = frozenset({Shape.DISCOVERY})
    assert negotiate(KUBECTL_DISCOVERY, served) is Shape.DISCOVERY
    assert negotiate("application/json", served) is Shape.OBJECT
    assert content_type(Shape.DISCOVERY) == discovery.AGGREGATED_V2


def test_discovery_documents_agree() -> None:
    legacy = discovery.api_resource_list()["resources"]
    aggregated = discovery.aggregated_groups()["items"][0]["versions"][0]["resources"]
    assert [r["name"] for r in legacy if "/" not in r["name"]] == [
        r["resource"] for r in aggregated
    ]
    by_name = {r["name"]: r for r in legacy}
    assert by_name["nodepassports"]["shortNames"] == ["np"]
    assert by_name["nodepassports/status"]["verbs"] == ["get", "patch", "update"]
    assert by_name["nodepassports"]["verbs"] == list(discovery.WRITABLE)
    assert aggregated[0]["subresources"][0]["subresource"] == "status"
    assert discovery.version_info()["gitVersion"].startswith("v1.32.0+node-registry-")


def test_ages_use_the_clock_given(registry: Registry, clock: FakeClock) -> None:
    registry.register(passport("coder-01"))
    entries = registry.list_nodes().items
    later = clock.now() + timedelta(days=3, hours=5)
    assert nodes_table(entries, later)["rows"][0]["cells"][5] == "3d5h"


def test_openapi_describes_the_writes_kubectl_looks_for() -> None:
    doc = openapi.group_version_document()
    one = doc["paths"]["/apis/ai_team.io/v1/nodepassports/{name}"]
    assert set(one) == {"get", "put", "patch", "delete"}
    patch = one["patch"]
    # kubectl validates on the server (--validate, --dry-run=server) only when the kind's
    # PATCH operation takes these; client-side apply sends strategic merge when listed.
    params = {p["name"] for p in patch["parameters"]}
    assert {"fieldValidation", "dryRun", "fieldManager", "force"} <= params
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "NodePassport"
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    assert "application/apply-patch+yaml" in patch["requestBody"]["content"]
    collection = doc["paths"]["/apis/ai_team.io/v1/nodepassports"]
    assert collection["delete"]["x-kubernetes-action"] == "deletecollection"
    assert set(doc["paths"]["/apis/ai_team.io/v1/nodepassports/{name}/status"]) == {
        "get", "put", "patch"
    }  # fmt: skip
    spec = openapi.schemas()["io.ai_team.v1.Spec"]["properties"]["capabilities"]
    assert (spec["x-kubernetes-patch-strategy"], spec["x-kubernetes-patch-merge-key"]) == (
        "merge",
        "name",
    )
    v2 = openapi.swagger_v2()
    put = v2["paths"]["/apis/ai_team.io/v1/nodepassports/{name}"]["put"]
    assert put["consumes"] == ["application/json", "application/yaml"]
    body = next(p for p in put["parameters"] if p["in"] == "body")
    assert body["schema"] == {"$ref": "#/definitions/io.ai_team.v1.NodePassport"}
    assert {"name": "fieldValidation", "in": "query", "type": "string"} in put["parameters"]
