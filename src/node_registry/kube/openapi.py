"""OpenAPI documents for Kubernetes clients: v3 (``kubectl explain``) and v2.

kubectl reads ``/openapi/v3`` (an index of group versions, each with a content hash in its
``serverRelativeURL``), then the group version's document, and finds a kind's schema by its
``x-kubernetes-group-version-kind``. The schemas come from the wire models (descriptions from
the passport models' fields and docstrings), rewritten into the dialect kube-openapi reads:
no ``anyOf`` with null for optional fields, ``$ref`` with a description wrapped in ``allOf``,
names like ``io.ai_team.v1.NodePassport``. Only the group's kinds are described; the routes'
own reference for people stays FastAPI's ``/openapi.json`` and ``/docs``.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

from pydantic import BaseModel

from node_registry import __version__
from node_registry.kube import extensions
from node_registry.kube.discovery import GROUP_VERSION, VERSION
from node_registry.kube.objects import Lease, LeaseList, NodePassportList, NodePassportObject
from node_registry.kube.patch import MERGE_KEYS, PatchType
from node_registry.passport.models import API_GROUP

#: The schema-name prefix apiserver gives a group's kinds (reverse DNS of the group).
PREFIX = "io.ai_team.v1."
GROUP_VERSION_PATH = f"apis/{GROUP_VERSION}"
#: Top-level kinds: schema name -> model.
KINDS: dict[str, type[BaseModel]] = {
    "NodePassport": NodePassportObject,
    "NodePassportList": NodePassportList,
    "Lease": Lease,
    "LeaseList": LeaseList,
}
KINDS.update(extensions.KINDS)  # NodeType, NodeVerification, NodeCapabilities (#12)


def _kube_schema(node: Any, refs: dict[str, str]) -> Any:
    """pydantic's JSON Schema as kube-openapi writes it (see the module docstring)."""
    if isinstance(node, list):
        return [_kube_schema(item, refs) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k != "title"}
    options = node.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            node.pop("anyOf")
            if node.get("default", ...) is None:
                node.pop("default")
            node = {**kept[0], **node}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "$ref" in node:
        ref = node.pop("$ref")
        target = {"$ref": "#/components/schemas/" + refs.get(ref.rsplit("/", 1)[-1], "")}
        if node:
            return {"allOf": [target], **{k: _kube_schema(v, refs) for k, v in node.items()}}
        return target
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _kube_schema(prop, refs) for name, prop in value.items()}
        else:
            out[key] = _kube_schema(value, refs)
    return out


@cache
def schemas() -> dict[str, Any]:
    """``components.schemas`` of the group version: every kind and the types it uses."""
    raw: dict[str, Any] = {}
    for name, model in KINDS.items():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        raw.update(schema.pop("$defs", {}))
        raw[name] = schema
    refs = {name: PREFIX + name for name in raw}
    out = {PREFIX + name: _kube_schema(schema, refs) for name, schema in raw.items()}
    merge_keys = {path[-1]: key for path, key in MERGE_KEYS.items()}
    for schema in out.values():
        for name, prop in schema.get("properties", {}).items():
            if name in merge_keys and prop.get("type") == "array":
                # What kubectl's strategic merge (client-side apply) and server-side apply
                # read: the list merges per element, named by this key.
                prop["x-kubernetes-patch-strategy"] = "merge"
                prop["x-kubernetes-patch-merge-key"] = merge_keys[name]
                prop["x-kubernetes-list-type"] = "map"
                prop["x-kubernetes-list-map-keys"] = [merge_keys[name]]
    for kind in KINDS:
        out[PREFIX + kind]["x-kubernetes-group-version-kind"] = [
            {"group": API_GROUP, "version": VERSION, "kind": kind}
        ]
    return out


def _query(*names: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "schema": {"type": t}} for n, t in names]


_PATH_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_LIST_QUERY = _query(
    ("labelSelector", "string"),
    ("fieldSelector", "string"),
    ("limit", "integer"),
    ("continue", "string"),
    ("watch", "boolean"),
    ("resourceVersion", "string"),
    ("timeoutSeconds", "integer"),
    ("allowWatchBookmarks", "boolean"),
)
#: What every write takes; kubectl looks for ``fieldValidation`` (and ``dryRun``) on a kind's
#: PATCH operation to know the server validates (``--validate``, ``--dry-run=server``).
_WRITE_QUERY = _query(("dryRun", "string"), ("fieldValidation", "string"))
_MANAGER_QUERY = _query(("fieldManager", "string"))
#: The patch types served. Strategic merge listed tells kubectl's client-side apply to send
#: one (computed from the schemas' patch strategies) rather than a JSON merge patch, which
#: replaces whole lists: capabilities the server defaulted would then always differ.
_PATCH_TYPES = tuple(p.value for p in PatchType)


def _operation(
    summary: str,
    kind: str,
    action: str,
    params: list[dict[str, Any]],
    *,
    body: tuple[str, ...] = (),
    response: str | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{PREFIX}{response or kind}"}
                    }
                },
            }
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": API_GROUP, "version": VERSION, "kind": kind},
    }
    if body:
        ref = {"$ref": f"#/components/schemas/{PREFIX}{kind}"}
        operation["requestBody"] = {"content": {media: {"schema": ref} for media in body}}
    return operation


def _get(summary: str, kind: str, *, listing: bool = False) -> dict[str, Any]:
    params = _LIST_QUERY if listing else [_PATH_NAME]
    return {"get": _operation(summary, kind, "list" if listing else "get", params)}


def _writable(what: str) -> dict[str, Any]:
    """put and patch of one NodePassport (or of its status)."""
    params = [_PATH_NAME, *_WRITE_QUERY, *_MANAGER_QUERY]
    return {
        "put": _operation(f"replace {what}", "NodePassport", "put", params, body=_JSON_BODY),
        "patch": _operation(
            f"partially update {what}",
            "NodePassport",
            "patch",
            [*params, *_query(("force", "boolean"))],
            body=_PATCH_TYPES,
        ),
    }


_JSON_BODY = ("application/json", "application/yaml")


@cache
def group_version_document() -> dict[str, Any]:
    """``/openapi/v3/apis/ai_team.io/v1``."""
    base = f"/{GROUP_VERSION_PATH}"
    collection = _get("list or watch NodePassports", "NodePassportList", listing=True)
    collection["post"] = _operation(
        "create (register) a NodePassport",
        "NodePassport",
        "post",
        [*_WRITE_QUERY, *_MANAGER_QUERY],
        body=_JSON_BODY,
    )
    collection["delete"] = _operation(
        "delete a collection of NodePassports",
        "NodePassport",
        "deletecollection",
        [*_WRITE_QUERY[:1], *_LIST_QUERY[:2]],
        response="NodePassportList",
    )
    one = _get("read a NodePassport", "NodePassport")
    one.update(_writable("a NodePassport's metadata and spec"))
    one["delete"] = _operation(
        "delete a NodePassport", "NodePassport", "delete", [_PATH_NAME, *_WRITE_QUERY[:1]]
    )
    status = _get("read a NodePassport's status", "NodePassport")
    status.update(_writable("a NodePassport's status"))
    return {
        "openapi": "3.0.0",
        "info": {"title": "AI_TEAM Node Registry", "version": __version__},
        "paths": {
            f"{base}/nodepassports": collection,
            f"{base}/nodepassports/{{name}}": one,
            f"{base}/nodepassports/{{name}}/status": status,
            f"{base}/leases": _get("list the nodes' Leases", "LeaseList", listing=True),
            f"{base}/leases/{{name}}": _get("read a node's Lease", "Lease"),
            **extensions.paths(base, PREFIX),
        },
        "components": {"schemas": schemas()},
    }


@cache
def document_hash() -> str:
    text = json.dumps(group_version_document(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha512(text.encode()).hexdigest()[:128].upper()


def index() -> dict[str, Any]:
    """``/openapi/v3``: where each group version's document is, with its hash (a cache key)."""
    return {
        "paths": {
            GROUP_VERSION_PATH: {
                "serverRelativeURL": f"/openapi/v3/{GROUP_VERSION_PATH}?hash={document_hash()}"
            }
        }
    }


def _swagger_operation(operation: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3 operation of ``group_version_document`` in Swagger 2.0's words."""
    params: list[dict[str, Any]] = [
        {k: v for k, v in p.items() if k != "schema"} | p["schema"] for p in operation["parameters"]
    ]
    out = {k: v for k, v in operation.items() if k not in ("parameters", "responses")}
    body = out.pop("requestBody", None)
    if body is not None:
        out["consumes"] = list(body["content"])
        schema = next(iter(body["content"].values()))["schema"]
        params.append({"name": "body", "in": "body", "required": True, "schema": schema})
    response = operation["responses"]["200"]
    out["produces"] = ["application/json"]
    out["parameters"] = params
    out["responses"] = {
        "200": {
            "description": response["description"],
            "schema": response["content"]["application/json"]["schema"],
        }
    }
    return out


@cache
def swagger_v2() -> dict[str, Any]:
    """``/openapi/v2``: the same schemas and operations in Swagger 2.0 (older kubectl reads it)."""
    paths = {
        path: {method: _swagger_operation(op) for method, op in operations.items()}
        for path, operations in group_version_document()["paths"].items()
    }
    text = json.dumps({"paths": paths, "definitions": schemas()})
    converted: dict[str, Any] = json.loads(
        text.replace('"#/components/schemas/', '"#/definitions/')
    )
    return {
        "swagger": "2.0",
        "info": {"title": "AI_TEAM Node Registry", "version": __version__},
        **converted,
    }
