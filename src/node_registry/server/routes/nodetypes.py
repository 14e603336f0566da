"""NodeTypes (#12, seed 3.5): custom node types as objects of ``ai_team.io/v1``, as CRDs are.

``POST /apis/ai_team.io/v1/nodetypes`` registers one (admin only; kept in the store),
``GET`` lists or reads them (the built-in and configured types too), ``DELETE`` forgets a
registered one (admin only; refused while nodes are of it). A passport whose
``metadata.nodeType`` names a type is validated against its schema on every write.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from node_registry.errors import FieldError, NotFoundError, ValidationError
from node_registry.kube.discovery import GROUP_VERSION
from node_registry.kube.extensions import node_types_table
from node_registry.kube.meta import list_meta
from node_registry.passport.models import API_GROUP, API_VERSION
from node_registry.passport.types import NodeTypeDefinition
from node_registry.server.auth import authorize_admin, authorize_read
from node_registry.server.body import read_document
from node_registry.server.context import Caller, Ctx, NodeName
from node_registry.server.negotiation import Shape, content_type, kube_response, negotiate

RESOURCE = "nodetypes"
LIST_KIND = "NodeTypeList"
_TABLE = frozenset({Shape.TABLE})
#: kubectl validates on the server when the PATCH of a kind takes ``fieldValidation``; a
#: NodeType is always checked strictly (unknown fields are errors), whatever it asks.
FieldValidationQuery = Annotated[
    Literal["Strict", "Warn", "Ignore"] | None, Query(alias="fieldValidation")
]


async def _name_errors(request: Request) -> None:
    request.state.resource = (RESOURCE, API_GROUP)


router = APIRouter(
    prefix=f"/apis/{GROUP_VERSION}", tags=[RESOURCE], dependencies=[Depends(_name_errors)]
)


def type_object(definition: NodeTypeDefinition) -> dict[str, Any]:
    doc: dict[str, Any] = definition.model_dump(mode="json", by_alias=True, exclude_none=True)
    return doc


@router.get(
    f"/{RESOURCE}",
    summary="List the node types served: built-in, configured and registered",
    responses=kube_response(LIST_KIND, "A NodeTypeList"),
)
async def list_nodetypes(request: Request, caller: Caller, ctx: Ctx) -> JSONResponse:
    authorize_read(caller)
    types = await ctx.registry.node_types()
    if negotiate(request.headers.get("accept"), _TABLE) is Shape.TABLE:
        ordered = [types[name] for name in sorted(types)]
        sources = [ctx.registry.sync.node_types.source(d.name) for d in ordered]
        table = node_types_table(ordered, sources, ctx.registry.sync.resource_version)
        return JSONResponse(table, media_type=content_type(Shape.TABLE))
    items = [type_object(types[name]) for name in sorted(types)]
    doc = {
        "apiVersion": API_VERSION,
        "kind": LIST_KIND,
        "metadata": list_meta(ctx.registry.sync.resource_version, None, None),
        "items": items,
    }
    return JSONResponse(doc)


@router.get(
    f"/{RESOURCE}/{{name}}",
    summary="Get one node type",
    responses=kube_response("NodeType", "A NodeType"),
)
async def get_nodetype(name: NodeName, caller: Caller, ctx: Ctx) -> JSONResponse:
    authorize_read(caller)
    definition = (await ctx.registry.node_types()).get(name)
    if definition is None:
        raise NotFoundError(f'{RESOURCE}.{API_GROUP} "{name}" not found')
    return JSONResponse(type_object(definition))


@router.post(
    f"/{RESOURCE}",
    status_code=201,
    summary="Register a node type (admin only); passports may then name it",
    responses=kube_response("NodeType", "The NodeType registered"),
)
async def create_nodetype(
    request: Request, caller: Caller, ctx: Ctx, field_validation: FieldValidationQuery = None
) -> JSONResponse:
    authorize_admin(caller, "register node types")
    definition = await ctx.registry.register_node_type(await read_document(request))
    return JSONResponse(type_object(definition), status_code=201)


@router.patch(
    f"/{RESOURCE}/{{name}}",
    summary="Change a registered node type with a JSON merge patch (admin only)",
    responses=kube_response("NodeType", "The NodeType changed"),
)
async def patch_nodetype(
    name: NodeName,
    request: Request,
    caller: Caller,
    ctx: Ctx,
    field_validation: FieldValidationQuery = None,
) -> JSONResponse:
    authorize_admin(caller, "change node types")
    patch = await read_document(request)
    if not isinstance(patch, dict):
        raise ValidationError(
            "a merge patch must be a JSON object", [FieldError("", f"got {type(patch).__name__}")]
        )
    return JSONResponse(type_object(await ctx.registry.patch_node_type(name, patch)))


@router.delete(
    f"/{RESOURCE}/{{name}}",
    summary="Delete a registered node type (admin only; refused while nodes are of it)",
    responses=kube_response("NodeType", "The NodeType deleted"),
)
async def delete_nodetype(name: NodeName, caller: Caller, ctx: Ctx) -> JSONResponse:
    authorize_admin(caller, "delete node types")
    return JSONResponse(type_object(await ctx.registry.delete_node_type(name)))
