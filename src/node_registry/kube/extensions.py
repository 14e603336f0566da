"""What #12 adds to the group: the ``nodetypes`` resource and two nodepassports subresources.

- ``nodetypes`` (kind ``NodeType``, cluster-scoped, as CustomResourceDefinitions are):
  create, get, list, patch (a JSON merge patch), delete.
- ``nodepassports/verification``: the verifier's results (kind ``NodeVerification`` in,
  the NodePassport out): get, patch (merge by capability), update (replace).
- ``nodepassports/capabilities``: the node's claims at runtime (kind ``NodeCapabilities``):
  get, update.

Discovery (``extend_resources``) and OpenAPI (``KINDS``, ``paths``) read this module, so the
documents kubectl reads list exactly what the routes serve.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from node_registry.kube.meta import META_GROUP_VERSION, KubeModel, ListMeta, list_meta
from node_registry.passport.models import API_GROUP, Capability
from node_registry.passport.types import NodeTypeDefinition
from node_registry.passport.verification import CapabilityVerification

NODE_TYPES = "nodetypes"
VERIFICATION = "verification"
CAPABILITIES = "capabilities"


class NodeTypeList(KubeModel):
    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["NodeTypeList"] = "NodeTypeList"
    metadata: ListMeta = Field(default_factory=ListMeta)
    items: list[NodeTypeDefinition]


class NodeVerification(KubeModel):
    """What a verifier writes to ``nodepassports/NAME/verification``: its results."""

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["NodeVerification"] = "NodeVerification"
    results: list[CapabilityVerification] = Field(
        description="One result per capability probed (PATCH merges them by capability)"
    )


class CapabilitiesMeta(KubeModel):
    name: str = Field(description="The node's name")
    resource_version: str | None = Field(default=None, alias="resourceVersion")


class CapabilitiesSpec(KubeModel):
    capabilities: list[Capability] = Field(description="Every capability the node claims")


class NodeCapabilities(KubeModel):
    """``nodepassports/NAME/capabilities``: the node's claims, changed without re-registering."""

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["NodeCapabilities"] = "NodeCapabilities"
    metadata: CapabilitiesMeta | None = None
    spec: CapabilitiesSpec


#: Schema name -> model, beside the group's other kinds in /openapi/v3.
KINDS: dict[str, type[KubeModel] | type[NodeTypeDefinition]] = {
    "NodeType": NodeTypeDefinition,
    "NodeTypeList": NodeTypeList,
    "NodeVerification": NodeVerification,
    "NodeCapabilities": NodeCapabilities,
}


_TYPE_COLUMNS = (
    ("Name", "The type's name: a passport's metadata.nodeType", 0),
    ("Source", "built-in, configured (node_types.path) or registered (the API)", 0),
    ("Schema", "Whether the passport's spec has a schema (spec.schema.openAPIV3Schema)", 0),
    ("Capabilities", "The capabilities it defines; '*': any other allowed too", 0),
    ("Description", "spec.description", 1),
)


def node_types_table(
    definitions: list[NodeTypeDefinition], sources: list[str], resource_version: int
) -> dict[str, Any]:
    """``kubectl get nodetypes``: a Table (rows carry no object: types have no metadata to
    watch by)."""
    rows = []
    for definition, source in zip(definitions, sources, strict=True):
        spec = definition.spec
        defined = sorted(spec.capabilities)
        if spec.allow_unknown_capabilities:
            defined.append("*")
        rows.append(
            {
                "cells": [
                    definition.name,
                    source,
                    "yes" if spec.type_schema is not None else "-",
                    ",".join(defined),
                    spec.description,
                ]
            }
        )
    return {
        "apiVersion": META_GROUP_VERSION,
        "kind": "Table",
        "metadata": list_meta(resource_version),
        "columnDefinitions": [
            {
                "name": name,
                "type": "string",
                "format": "name" if name == "Name" else "",
                "description": description,
                "priority": priority,
            }
            for name, description, priority in _TYPE_COLUMNS
        ],
        "rows": rows,
    }


def extend_resources(resources: tuple[Any, ...]) -> tuple[Any, ...]:
    """The discovery table with #12's subresources and the ``nodetypes`` resource added."""
    from node_registry.kube.discovery import Resource, Subresource

    added = {
        "nodepassports": (
            Subresource(VERIFICATION, "NodePassport", ("get", "patch", "update")),
            Subresource(CAPABILITIES, "NodeCapabilities", ("get", "update")),
        )
    }
    extended = tuple(
        replace(r, subresources=(*r.subresources, *added.get(r.plural, ()))) for r in resources
    )
    node_types = Resource(
        plural=NODE_TYPES,
        singular="nodetype",
        kind="NodeType",
        verbs=("create", "delete", "get", "list", "patch"),
        short_names=("nt",),
        # Not in the ai-team category: ``kubectl get ai-team`` lists the nodes, not their types.
    )
    return (*extended, node_types)


def _operation(
    method: str,
    summary: str,
    kind: str,
    prefix: str,
    *,
    body: str | None = None,
    query: tuple[str, ...] = (),
    gvk: str | None = None,
) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{prefix}{kind}"}
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
        },
        "x-kubernetes-group-version-kind": {
            "group": API_GROUP,
            "version": "v1",
            "kind": gvk or kind,
        },
    }
    # Every operation lists its parameters (the Swagger 2.0 document is built from them).
    operation["parameters"] = [
        {"name": name, "in": "query", "schema": {"type": "string"}} for name in query
    ]
    if body is not None:
        body_ref = {"$ref": f"#/components/schemas/{prefix}{body}"}
        operation["requestBody"] = {"content": {"application/json": {"schema": body_ref}}}
    return {method: operation}


_PATH_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _named(operations: dict[str, Any]) -> dict[str, Any]:
    """``operations`` of a path with ``{name}`` in it: each takes the path parameter."""
    for operation in operations.values():
        operation["parameters"].insert(0, dict(_PATH_NAME))
    return operations


def paths(base: str, prefix: str) -> dict[str, Any]:
    """The /openapi/v3 paths of #12's routes, under the group version's ``base``."""
    passports = f"{base}/nodepassports/{{name}}"
    found = _paths(base, passports, prefix)
    return {path: _named(ops) if "{name}" in path else ops for path, ops in found.items()}


def _paths(base: str, passports: str, prefix: str) -> dict[str, Any]:
    return {
        f"{base}/{NODE_TYPES}": {
            **_operation("get", "list NodeTypes", "NodeTypeList", prefix),
            **_operation("post", "register a NodeType", "NodeType", prefix, body="NodeType"),
        },
        f"{base}/{NODE_TYPES}/{{name}}": {
            **_operation("get", "read a NodeType", "NodeType", prefix),
            **_operation("delete", "delete a NodeType", "NodeType", prefix),
            # kubectl create/apply validate on the server once the kind's PATCH takes it.
            **_operation(
                "patch",
                "change a NodeType (JSON merge patch)",
                "NodeType",
                prefix,
                body="NodeType",
                query=("fieldValidation",),
            ),
        },
        f"{passports}/{VERIFICATION}": {
            **_operation("get", "read a NodePassport's verification", "NodePassport", prefix),
            # Their kind is the body's (as /scale's is Scale): kubectl decides whether a kind
            # validates on the server (fieldValidation, dryRun) from the first PATCH of that
            # kind it finds, which must be NodePassport's own.
            **_operation(
                "patch",
                "record verification results (merged by capability)",
                "NodePassport",
                prefix,
                body="NodeVerification",
                gvk="NodeVerification",
            ),
            **_operation(
                "put",
                "replace the verification results",
                "NodePassport",
                prefix,
                body="NodeVerification",
                gvk="NodeVerification",
            ),
        },
        f"{passports}/{CAPABILITIES}": {
            **_operation("get", "read a node's capabilities", "NodeCapabilities", prefix),
            **_operation(
                "put",
                "replace a node's capabilities",
                "NodeCapabilities",
                prefix,
                body="NodeCapabilities",
            ),
        },
    }
