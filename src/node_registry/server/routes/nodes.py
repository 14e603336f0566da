"""Nodes: register, replace, get, deregister, list (or watch), search, report status."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from node_registry.errors import (
    FieldError,
    NotFoundError,
    ValidationError,
)
from node_registry.passport import load_passport
from node_registry.registry import AsyncRegistry, RegistryEntry
from node_registry.server.auth import (
    Principal,
    Role,
    authorize_node_id,
    authorize_node_registration,
    authorize_node_write,
    authorize_read,
    restrict_protected_labels,
    user_info,
)
from node_registry.server.body import read_document
from node_registry.server.context import (
    Caller,
    Ctx,
    NodeName,
    NodeWriter,
    Reader,
    ServerContext,
    Writer,
)
from node_registry.server.render import NodesResponse
from node_registry.server.routes.params import (
    ContinueQuery,
    LabelSelectorQuery,
    LimitQuery,
    ResourceVersionQuery,
    TimeoutQuery,
    query_selector,
)
from node_registry.server.routes.watch import WATCH_CONTENT, watch_response
from node_registry.wire import (
    API_PREFIX,
    RegistryEntryList,
    RegistryEntryModel,
    SearchRequest,
    Status,
    StatusUpdate,
    entry_to_wire,
    list_to_wire,
)

PASSPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"$ref": "#/components/schemas/NodePassport"}}
            for media in ("application/json", "application/yaml")
        },
    }
}

router = APIRouter(prefix=API_PREFIX, tags=["nodes"])


async def _register(
    ctx: ServerContext, caller: Principal, doc: Any, path_name: str | None
) -> JSONResponse:
    registry = ctx.registry
    if not isinstance(doc, dict):
        raise ValidationError(
            "a passport must be a JSON object", [FieldError("", f"got {type(doc).__name__}")]
        )
    # In a worker thread: validating a passport of 256 KiB takes milliseconds.
    passport = await anyio.to_thread.run_sync(load_passport, doc)
    name = passport.metadata.name
    if path_name is not None and path_name != name:
        raise ValidationError(
            "name mismatch",
            [
                FieldError(
                    "metadata.name",
                    f"{name!r} does not match the name in the URL ({path_name!r})",
                )
            ],
        )
    authorize_node_write(caller, name)
    existing: RegistryEntry | None
    try:
        existing = await registry.get(passport.node_id)
    except NotFoundError:
        existing = None
    node = caller.role is Role.NODE
    if node:
        stored = existing.passport if existing else None
        holder = _holder(registry, name)
        binding = None if holder is not None else await registry.binding(name)
        authorize_node_registration(
            caller,
            passport,
            stored_name=stored.metadata.name if stored else None,
            holder=holder,
            binding=binding,
        )
        passport = restrict_protected_labels(
            passport, stored, binding, ctx.settings.server.protected_label_prefix
        )
    entry = await registry.register(passport, rename=not node, user=user_info(caller))
    ctx.metrics.registrations.inc()
    return NodesResponse(entry_to_wire(entry), status_code=200 if existing else 201)


@router.post(
    "/nodes",
    status_code=201,
    response_model=RegistryEntryModel,
    responses={200: {"model": RegistryEntryModel, "description": "Re-registered"}},
    openapi_extra=PASSPORT_BODY,
    summary="Register a node (or re-register: replaces its passport)",
)
async def register(request: Request, caller: Writer, ctx: Ctx) -> JSONResponse:
    return await _register(ctx, caller, await read_document(request), None)


@router.put(
    "/nodes/{name}",
    response_model=RegistryEntryModel,
    responses={201: {"model": RegistryEntryModel, "description": "Registered"}},
    openapi_extra=PASSPORT_BODY,
    summary="Register or replace the node called NAME",
)
async def replace(name: NodeName, request: Request, caller: NodeWriter, ctx: Ctx) -> JSONResponse:
    return await _register(ctx, caller, await read_document(request), name)


@router.get("/nodes/{name}", response_model=RegistryEntryModel, summary="Get one node")
async def get_node(name: NodeName, caller: Reader, ctx: Ctx) -> JSONResponse:
    return NodesResponse(entry_to_wire(ctx.registry.sync.get_by_name(name)))


@router.delete("/nodes/{name}", response_model=Status, summary="Deregister a node")
async def delete_node(name: NodeName, caller: NodeWriter, ctx: Ctx) -> JSONResponse:
    registry = ctx.registry
    node_id = _holder(registry, name)
    if node_id is None:
        # An admin deleting a name no node holds frees a name its node left bound.
        if caller.role is not Role.ADMIN or not await registry.release(name):
            raise NotFoundError(f"no node is named {name!r}")
        return JSONResponse(_deleted(name, f"name {name} released"))
    authorize_node_id(caller, node_id)
    # A node leaving by itself keeps its name and labels for when it comes back.
    await registry.deregister(
        node_id, keep_binding=caller.role is Role.NODE, user=user_info(caller)
    )
    return JSONResponse(_deleted(name, f"node {name} deregistered"))


@router.get(
    "/nodes",
    response_model=RegistryEntryList,
    summary="List nodes, or watch them with watch=true",
    responses={200: {"content": WATCH_CONTENT}},
)
async def list_nodes(
    request: Request,
    caller: Caller,
    ctx: Ctx,
    kind: Annotated[str | None, Query(max_length=63)] = None,
    label_selector: LabelSelectorQuery = None,
    healthy: bool = False,
    verified: bool = False,
    limit: LimitQuery = None,
    continue_: ContinueQuery = None,
    watch: bool = False,
    resource_version: ResourceVersionQuery = None,
    timeout_seconds: TimeoutQuery = None,
    allow_watch_bookmarks: Annotated[bool, Query(alias="allowWatchBookmarks")] = True,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=20, pattern=r"^[0-9]*$")
    ] = None,
) -> Response:
    authorize_read(caller)
    selector = query_selector(label_selector)
    if watch:
        sse = "text/event-stream" in request.headers.get("accept", "")
        since_text = (last_event_id if sse and last_event_id else None) or resource_version
        return await watch_response(
            ctx,
            since=int(since_text) if since_text else None,
            kind=kind,
            selector=selector,
            sse=sse,
            bookmarks=allow_watch_bookmarks,
            timeout=timeout_seconds,
        )
    if continue_:
        page = ctx.pages.next(continue_, limit)
    else:
        found = ctx.registry.sync.select(
            kind=kind, selector=selector, only_healthy=healthy, only_verified=verified
        )
        page = ctx.pages.first(found.items, found.resource_version, limit)
    return NodesResponse(
        list_to_wire(page.items, page.resource_version, page.continue_token, page.remaining)
    )


@router.post(
    "/search",
    response_model=RegistryEntryList,
    summary="find_nodes(kind, selector, only_healthy, only_verified) with a structured selector",
)
async def search(body: SearchRequest, caller: Reader, ctx: Ctx) -> JSONResponse:
    selector = (
        body.selector.model_dump(by_alias=True, exclude_defaults=True) if body.selector else None
    )
    found = ctx.registry.sync.select(
        kind=body.kind,
        selector=selector,
        only_healthy=body.only_healthy,
        only_verified=body.only_verified,
    )
    return NodesResponse(list_to_wire(found.items, found.resource_version))


@router.patch(
    "/nodes/{name}/status",
    response_model=RegistryEntryModel,
    summary="Update phase, conditions, currentTasks (merge by condition type)",
)
async def update_status(
    name: NodeName, body: StatusUpdate, caller: NodeWriter, ctx: Ctx
) -> JSONResponse:
    registry = ctx.registry
    node_id = registry.sync.id_of(name)
    authorize_node_id(caller, node_id)
    entry = await registry.update_status(
        node_id,
        phase=body.phase,
        conditions=body.conditions,
        current_tasks=body.current_tasks,
        user=user_info(caller),
    )
    return NodesResponse(entry_to_wire(entry))


def _holder(registry: AsyncRegistry, name: str) -> str | None:
    """The uid registered under ``name`` now, or None."""
    try:
        return registry.sync.id_of(name)
    except NotFoundError:
        return None


def _deleted(name: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success",
        "message": message,
        "reason": "",
        "details": {"name": name, "kind": "nodes", "causes": []},
        "code": 200,
    }
