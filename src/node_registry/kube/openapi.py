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
    for kind in KINDS:
        out[PREFIX + kind]["x-kubernetes-group-version-kind"] = [
            {"group": API_GROUP, "version": VERSION, "kind": kind}
        ]
    return out


def _get(summary: str, kind: str, *, listing: bool = False) -> dict[str, Any]:
    params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    if listing:
        params = [
            {"name": name, "in": "query", "schema": {"type": kind_}}
            for name, kind_ in (
                ("labelSelector", "string"),
                ("fieldSelector", "string"),
                ("limit", "integer"),
                ("continue", "string"),
                ("watch", "boolean"),
                ("resourceVersion", "string"),
                ("timeoutSeconds", "integer"),
                ("allowWatchBookmarks", "boolean"),
            )
        ]
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{PREFIX}{kind}"}
                        }
                    },
                }
            },
            "x-kubernetes-group-version-kind": {
                "group": API_GROUP,
                "version": VERSION,
                "kind": kind,
            },
        }
    }


@cache
def group_version_document() -> dict[str, Any]:
    """``/openapi/v3/apis/ai_team.io/v1``."""
    base = f"/{GROUP_VERSION_PATH}"
    return {
        "openapi": "3.0.0",
        "info": {"title": "AI_TEAM Node Registry", "version": __version__},
        "paths": {
            f"{base}/nodepassports": _get(
                "list or watch NodePassports", "NodePassportList", listing=True
            ),
            f"{base}/nodepassports/{{name}}": _get("read a NodePassport", "NodePassport"),
            f"{base}/nodepassports/{{name}}/status": _get(
                "read a NodePassport's status", "NodePassport"
            ),
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


@cache
def swagger_v2() -> dict[str, Any]:
    """``/openapi/v2``: the same schemas as Swagger 2.0 definitions (older kubectl reads it)."""
    text = json.dumps(schemas()).replace('"#/components/schemas/', '"#/definitions/')
    definitions: dict[str, Any] = json.loads(text)
    return {
        "swagger": "2.0",
        "info": {"title": "AI_TEAM Node Registry", "version": __version__},
        "paths": {},
        "definitions": definitions,
    }
