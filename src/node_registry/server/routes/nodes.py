"""Nodes: register, replace, get, deregister, list (or watch), search, report status."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from node_registry.errors import (
    FieldError,
    ForbiddenError,
    NotFoundError,
    SelectorError,
    ValidationError,
)
from node_registry.passport import NodePassport, NodeType, load_passport
from node_registry.passport.derived import derived_labels, effective_labels
from node_registry.registry import RegistryEntry
from node_registry.selectors import Selector, as_selector
from node_registry.server.auth import Principal, Role, authorize_node_write, authorize_read
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
    passport = load_passport(doc)
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
    if caller.role is Role.NODE:
        passport = _restrict_protected_labels(
            passport, existing, ctx.settings.server.protected_label_prefix
        )
    entry = await registry.register(passport)
    ctx.metrics.registrations.inc()
    return JSONResponse(entry_to_wire(entry), status_code=200 if existing else 201)


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
    return JSONResponse(entry_to_wire(ctx.registry.sync.get_by_name(name)))


@router.delete("/nodes/{name}", response_model=Status, summary="Deregister a node")
async def delete_node(name: NodeName, caller: NodeWriter, ctx: Ctx) -> JSONResponse:
    registry = ctx.registry
    await registry.deregister(registry.sync.id_of(name))
    return JSONResponse(
        {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Success",
            "message": f"node {name} deregistered",
            "reason": "",
            "details": {"name": name, "kind": "nodes", "causes": []},
            "code": 200,
        }
    )


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
    kind: NodeType | None = None,
    label_selector: Annotated[str | None, Query(alias="labelSelector", max_length=4096)] = None,
    healthy: bool = False,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    continue_: Annotated[str | None, Query(alias="continue", max_length=512)] = None,
    watch: bool = False,
    resource_version: Annotated[
        str | None, Query(alias="resourceVersion", max_length=20, pattern=r"^[0-9]*$")
    ] = None,
    timeout_seconds: Annotated[int | None, Query(alias="timeoutSeconds", ge=1, le=86_400)] = None,
    allow_watch_bookmarks: Annotated[bool, Query(alias="allowWatchBookmarks")] = True,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=20, pattern=r"^[0-9]*$")
    ] = None,
) -> Response:
    authorize_read(caller)
    selector = _query_selector(label_selector)
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
        found = ctx.registry.sync.select(kind=kind, selector=selector, only_healthy=healthy)
        page = ctx.pages.first(found.items, found.resource_version, limit)
    return JSONResponse(
        list_to_wire(page.items, page.resource_version, page.continue_token, page.remaining)
    )


@router.post(
    "/search",
    response_model=RegistryEntryList,
    summary="find_nodes(kind, selector, only_healthy) with a structured selector",
)
async def search(body: SearchRequest, caller: Reader, ctx: Ctx) -> JSONResponse:
    selector = (
        body.selector.model_dump(by_alias=True, exclude_defaults=True) if body.selector else None
    )
    found = ctx.registry.sync.select(
        kind=body.kind, selector=selector, only_healthy=body.only_healthy
    )
    return JSONResponse(list_to_wire(found.items, found.resource_version))


@router.patch(
    "/nodes/{name}/status",
    response_model=RegistryEntryModel,
    summary="Update phase, conditions, currentTasks (merge by condition type)",
)
async def update_status(
    name: NodeName, body: StatusUpdate, caller: NodeWriter, ctx: Ctx
) -> JSONResponse:
    registry = ctx.registry
    entry = await registry.update_status(
        registry.sync.id_of(name),
        phase=body.phase,
        conditions=body.conditions,
        current_tasks=body.current_tasks,
    )
    return JSONResponse(entry_to_wire(entry))


def _query_selector(text: str | None) -> Selector:
    try:
        return as_selector(text)
    except SelectorError as exc:
        # The parser cannot know it was given a query parameter; the caller should be told.
        raise SelectorError(
            exc.message, [FieldError(e.loc or "labelSelector", e.message) for e in exc.errors]
        ) from None


def _restrict_protected_labels(
    passport: NodePassport, existing: RegistryEntry | None, prefix: str
) -> NodePassport:
    """NodeRestriction: a node keeps the protected labels operators gave it and adds none.

    Resources count too: each is also a label selectors match (``<resource>: <quantity>``),
    so a node may only repeat a protected one that is already there.
    """
    stored = {
        k: v
        for k, v in (existing.passport.metadata.labels.items() if existing else ())
        if k.startswith(prefix)
    }
    sent = {k: v for k, v in passport.metadata.labels.items() if k.startswith(prefix)}
    changed = sorted(k for k, v in sent.items() if stored.get(k) != v)
    stored_effective = effective_labels(existing.passport) if existing else {}
    changed += sorted(
        f"{k} (from {source})"
        for k, (v, source) in derived_labels(passport).items()
        if k.startswith(prefix) and k not in sent and stored_effective.get(k) != v
    )
    if changed:
        raise ForbiddenError(
            f"labels under {prefix!r} are set by the registry and operators, not by nodes: "
            f"{', '.join(changed)}"
        )
    if stored.keys() - sent.keys():
        labels = {**passport.metadata.labels, **stored}
        metadata = passport.metadata.model_copy(update={"labels": labels})
        passport = passport.model_copy(update={"metadata": metadata})
    return passport
