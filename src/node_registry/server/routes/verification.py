"""Two subresources of nodepassports (#12): ``verification`` and ``capabilities``.

- ``nodepassports/NAME/verification``: the verifier's results, registry-owned status as
  ``/status`` is the kubelet's. ``GET`` is the NodePassport object (its
  ``status.verification``); ``PATCH`` merges a ``NodeVerification``'s results into the
  node's by capability, ``PUT`` replaces them all. Only a ``verifier`` or an ``admin`` token
  may write it; nothing else can set ``status.verification`` or the Trusted condition.
- ``nodepassports/NAME/capabilities``: the node's claims, changed at runtime without
  re-registering (seed 3.5). ``GET`` and ``PUT`` a ``NodeCapabilities`` object (``spec.
  capabilities``, the whole list, as ``/scale`` holds ``spec.replicas``); the node's own
  token or an admin may write it, and it passes the node type and admission as any write.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from node_registry.errors import FieldError, NotFoundError, ValidationError
from node_registry.kube.discovery import GROUP_VERSION
from node_registry.kube.objects import entry_to_object
from node_registry.passport.models import API_GROUP, API_VERSION
from node_registry.registry import RegistryEntry
from node_registry.server.auth import (
    authorize_node_id,
    authorize_read,
    authorize_verification,
    user_info,
)
from node_registry.server.body import read_document
from node_registry.server.context import Caller, Ctx, NodeName, NodeWriter, ServerContext
from node_registry.server.negotiation import kube_response
from node_registry.server.render import NodesResponse

RESOURCE = "nodepassports"
VERIFICATION_KIND = "NodeVerification"
CAPABILITIES_KIND = "NodeCapabilities"


async def _name_errors(request: Request) -> None:
    request.state.resource = (RESOURCE, API_GROUP)


router = APIRouter(
    prefix=f"/apis/{GROUP_VERSION}", tags=[RESOURCE], dependencies=[Depends(_name_errors)]
)


def _node_id(ctx: ServerContext, name: str) -> str:
    try:
        return ctx.registry.sync.id_of(name)
    except NotFoundError:
        raise NotFoundError(f'{RESOURCE}.{API_GROUP} "{name}" not found') from None


def _object(entry: RegistryEntry) -> JSONResponse:
    return NodesResponse(entry_to_object(entry))


def _body(doc: Any, kind: str, field: str) -> Any:
    """``doc[field]`` of a ``kind`` document; 422 naming what is wrong otherwise."""
    if not isinstance(doc, dict):
        raise ValidationError(
            f"a {kind} must be a JSON object", [FieldError("", f"got {type(doc).__name__}")]
        )
    problems = []
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        problems.append(FieldError("apiVersion", f"must be {API_VERSION}"))
    if doc.get("kind", kind) != kind:
        problems.append(FieldError("kind", f"must be {kind}, not {doc.get('kind')!r}"))
    value: Any = doc
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, list):
        problems.append(FieldError(field, f"a list is required, not {type(value).__name__}"))
    if problems:
        raise ValidationError(f"invalid {kind}", problems)
    return value


@router.get(
    f"/{RESOURCE}/{{name}}/verification",
    summary="Get a NodePassport's verification subresource (status.verification)",
    responses=kube_response("NodePassport", "The NodePassport"),
)
async def get_verification(name: NodeName, caller: Caller, ctx: Ctx) -> JSONResponse:
    authorize_read(caller)
    return _object(ctx.registry.sync.get(_node_id(ctx, name)))


async def _record(
    name: str, request: Request, caller: Any, ctx: ServerContext, *, replace: bool
) -> JSONResponse:
    authorize_verification(caller)
    node_id = _node_id(ctx, name)
    results = _body(await read_document(request), VERIFICATION_KIND, "results")
    entry = await ctx.registry.record_verification(node_id, results, replace=replace)
    return _object(entry)


@router.patch(
    f"/{RESOURCE}/{{name}}/verification",
    summary="Record verification results (merged by capability); verifier or admin only",
    responses=kube_response("NodePassport", "The NodePassport with the results"),
)
async def patch_verification(
    name: NodeName, request: Request, caller: Caller, ctx: Ctx
) -> JSONResponse:
    return await _record(name, request, caller, ctx, replace=False)


@router.put(
    f"/{RESOURCE}/{{name}}/verification",
    summary="Replace all verification results; verifier or admin only",
    responses=kube_response("NodePassport", "The NodePassport with the results"),
)
async def put_verification(
    name: NodeName, request: Request, caller: Caller, ctx: Ctx
) -> JSONResponse:
    return await _record(name, request, caller, ctx, replace=True)


def capabilities_object(entry: RegistryEntry) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": CAPABILITIES_KIND,
        "metadata": {"name": entry.name, "resourceVersion": str(entry.resource_version)},
        "spec": {
            "capabilities": [
                c.model_dump(mode="json", by_alias=True, exclude_none=True)
                for c in entry.passport.spec.capabilities
            ]
        },
    }


@router.get(
    f"/{RESOURCE}/{{name}}/capabilities",
    summary="Get a node's capabilities (a NodeCapabilities object)",
    responses=kube_response(CAPABILITIES_KIND, "The node's NodeCapabilities"),
)
async def get_capabilities(name: NodeName, caller: Caller, ctx: Ctx) -> JSONResponse:
    authorize_read(caller)
    return NodesResponse(capabilities_object(ctx.registry.sync.get(_node_id(ctx, name))))


@router.put(
    f"/{RESOURCE}/{{name}}/capabilities",
    summary="Replace a node's capabilities at runtime, without re-registering",
    responses=kube_response(CAPABILITIES_KIND, "The node's NodeCapabilities"),
)
async def put_capabilities(
    name: NodeName, request: Request, caller: NodeWriter, ctx: Ctx
) -> JSONResponse:
    node_id = _node_id(ctx, name)
    authorize_node_id(caller, node_id)
    capabilities = _body(await read_document(request), CAPABILITIES_KIND, "spec.capabilities")
    entry = await ctx.registry.set_capabilities(node_id, capabilities, user=user_info(caller))
    return NodesResponse(capabilities_object(entry))
