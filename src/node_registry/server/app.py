"""The HTTP service: ``create_app(registry, settings)`` builds the FastAPI application.

Routes are thin: they authenticate, authorize, translate HTTP to a registry call and the
result to the wire format (``node_registry.wire``). Every error leaves as a Kubernetes
``Status`` from the one table in ``wire``. No module-level state: the app factory takes the
registry, the settings and a metrics collector registry, so tests build as many as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any

import anyio.to_thread
import pydantic
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from node_registry import __version__
from node_registry.config import ServerSettings, Settings
from node_registry.errors import (
    BadRequestError,
    FieldError,
    NotFoundError,
    RegistryError,
    SelectorError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from node_registry.passport import NodeType, load_passport
from node_registry.passport.versions import translate_pydantic_error
from node_registry.registry import AsyncRegistry, EventType, RegistryEntry
from node_registry.selectors import Selector, as_selector
from node_registry.server.auth import (
    Authenticator,
    Principal,
    Role,
    authorize_node_id,
    authorize_node_registration,
    authorize_node_write,
    authorize_read,
    restrict_protected_labels,
)
from node_registry.server.body import (
    JSON_TYPES,
    BodyLimitMiddleware,
    BodyTooLarge,
    media_type,
    read_document,
    too_large,
)
from node_registry.server.metrics import Metrics
from node_registry.server.pages import Paginator
from node_registry.server.render import NodesResponse
from node_registry.server.streams import ndjson_frame, sse_frame, stream_events
from node_registry.server.ui import mount_dashboard
from node_registry.wire import (
    API_PREFIX,
    Lease,
    RegistryEntryList,
    RegistryEntryModel,
    SearchRequest,
    Status,
    StatusUpdate,
    WatchEventModel,
    entry_to_wire,
    list_to_wire,
    status_from_error,
)

log = logging.getLogger("node_registry.server")

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NodeName = Annotated[str, Path(max_length=253, pattern=NAME_PATTERN, description="Node name")]
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Status, "description": text}
    for code, text in {
        400: "Unreadable request: malformed JSON/YAML, empty body, selector, continue token",
        401: "No or unknown bearer token",
        403: "The token's role does not allow this",
        404: "No such node",
        409: "Name taken by another node, or a concurrent change",
        410: "Resource version or continue token too old: list again",
        413: "Request body over the limit",
        415: "Body is neither JSON nor YAML",
        422: "Invalid passport or request",
        503: "Store unavailable",
    }.items()
}
PASSPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"$ref": "#/components/schemas/NodePassport"}}
            for media in ("application/json", "application/yaml")
        },
    }
}
LEASE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Lease"}}},
    }
}
WATCH_CONTENT: dict[str, Any] = {
    "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/WatchEventModel"}},
    "text/event-stream": {"schema": {"type": "string"}},
}
#: Two models are called Status (the passport's section and Kubernetes' error body), so
#: pydantic names both after their module; the API's documents use these names instead.
SCHEMA_NAMES = {
    "node_registry__wire__Status": "Status",
    "node_registry__passport__models__Status": "PassportStatus",
}


async def _principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    # async on purpose: FastAPI runs a plain def dependency in a thread pool, a thread hop
    # per request that halved heartbeat throughput.
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.authenticate(authorization)


async def _reader(caller: Annotated[Principal, Depends(_principal)]) -> Principal:
    authorize_read(caller)
    return caller


async def _writer(caller: Annotated[Principal, Depends(_principal)]) -> Principal:
    # A reader may write nothing: refused before the body is even validated.
    if caller.role is Role.READER:
        authorize_node_write(caller, "")
    return caller


async def _node_writer(
    name: NodeName, caller: Annotated[Principal, Depends(_principal)]
) -> Principal:
    # Authorization by the URL comes before body validation, as in Kubernetes: a caller
    # refused for this node learns nothing from its request being malformed.
    authorize_node_write(caller, name)
    return caller


# Module level: FastAPI resolves these string annotations against the module's globals.
Caller = Annotated[Principal, Depends(_principal)]
Reader = Annotated[Principal, Depends(_reader)]
Writer = Annotated[Principal, Depends(_writer)]
NodeWriter = Annotated[Principal, Depends(_node_writer)]


class _Timing:
    """Pure ASGI middleware: request latency by route template (no BaseHTTPMiddleware cost)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            key = (getattr(route, "path", None) or "unmatched", scope["method"])
            child = self._children.get(key)
            if child is None:
                # labels() takes a lock and builds a tuple key on every call; route
                # templates are few, so each child is looked up once.
                child = self._children[key] = self.metrics.request_duration.labels(*key)
            child.observe(time.perf_counter() - start)


def _lease_json(name: str, renewed: datetime, ttl: float) -> bytes:
    # Formatted rather than json.dumps'ed: it was a third of the route's own time. Safe
    # because ``name`` is a stored node's name (a DNS-1123 subdomain: nothing to escape)
    # and the rest are numbers and an ISO timestamp.
    return (
        f'{{"apiVersion":"ai_team.io/v1","kind":"Lease","metadata":{{"name":"{name}"}},'
        f'"spec":{{"holderIdentity":"{name}","leaseDurationSeconds":{round(ttl)},'
        f'"renewTime":"{renewed.isoformat()}"}}}}'
    ).encode()


def _parse_lease(raw: bytes, kind: str) -> Lease:
    if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaTypeError(
            "unsupported content type",
            [FieldError("Content-Type", f"{kind!r}; a Lease is sent as application/json")],
        )
    try:
        return Lease.model_validate_json(raw or b"{}")
    except pydantic.ValidationError as exc:
        unreadable = any(e["type"] == "json_invalid" for e in exc.errors())
        error = BadRequestError if unreadable else ValidationError
        raise error("invalid Lease", translate_pydantic_error(exc)) from None


def create_app(
    registry: AsyncRegistry,
    settings: Settings | None = None,
    *,
    metrics: Metrics | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The registry's HTTP API over ``registry``; runs its lifecycle controller while serving."""
    settings = settings or registry.settings
    server: ServerSettings = settings.server
    metrics = metrics or Metrics(registry.sync)
    auth = authenticator or Authenticator.from_file(server.tokens_file)
    pages = Paginator(server.list_snapshot_ttl_seconds)
    ttl = settings.heartbeat.ttl_seconds

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        counter = asyncio.create_task(_count_transitions(registry, metrics))
        async with registry:
            yield
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter

    app = FastAPI(
        title="AI_TEAM Node Registry",
        version=__version__,
        description="Node passports, heartbeats as leases, label selectors, watch.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.authenticator = auth
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete_openapi(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def refuse(exc: RegistryError, name: str | None = None) -> JSONResponse:
        metrics.refusals.labels(exc.reason).inc()
        # RFC 7235: a 401 names the scheme the client should use.
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(
            status_from_error(exc, name=name), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RegistryError)
    async def _registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        name = request.path_params.get("name")
        return refuse(exc, name if isinstance(name, str) else None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a refusal: the client still gets a Status, and the traceback is logged
        # (Starlette re-raises the error for the server to log after this answer).
        message = f"internal error: {type(exc).__name__} (see the registry log)"
        body = Status(code=500, reason="InternalError", message=message)
        return JSONResponse(body.model_dump(by_alias=True, exclude_none=True), status_code=500)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # The caller hung up mid-request (a node shutting down during a renewal): nobody
        # is left to answer, and it is not a server error worth a traceback.
        return Response(status_code=499)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return refuse(too_large(exc.limit))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Routing (404, 405) and FastAPI's body parsing (400 for a body that is not even
        # text) raise these; they leave as a Status like every other error.
        reason = HTTPStatus(exc.status_code).phrase.title().replace(" ", "").replace("-", "")
        metrics.refusals.labels(reason).inc()
        body = Status(code=exc.status_code, reason=reason, message=str(exc.detail))
        return JSONResponse(
            body.model_dump(by_alias=True, exclude_none=True),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            FieldError(
                ".".join(str(p) for p in e["loc"] if p != "body") or "body",
                str(e["msg"]).removeprefix("Value error, "),
            )
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return refuse(BadRequestError("malformed JSON", problems))
        return refuse(ValidationError("invalid request", problems))

    # -- nodes --------------------------------------------------------------------------

    async def _register(caller: Principal, doc: Any, path_name: str | None) -> JSONResponse:
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
                passport, stored, binding, server.protected_label_prefix
            )
        entry = await registry.register(passport, rename=not node)
        metrics.registrations.inc()
        return NodesResponse(entry_to_wire(entry), status_code=200 if existing else 201)

    @app.post(
        f"{API_PREFIX}/nodes",
        status_code=201,
        response_model=RegistryEntryModel,
        responses={200: {"model": RegistryEntryModel, "description": "Re-registered"}},
        openapi_extra=PASSPORT_BODY,
        summary="Register a node (or re-register: replaces its passport)",
        tags=["nodes"],
    )
    async def register(request: Request, caller: Writer) -> JSONResponse:
        return await _register(caller, await read_document(request), None)

    @app.put(
        f"{API_PREFIX}/nodes/{{name}}",
        response_model=RegistryEntryModel,
        responses={201: {"model": RegistryEntryModel, "description": "Registered"}},
        openapi_extra=PASSPORT_BODY,
        summary="Register or replace the node called NAME",
        tags=["nodes"],
    )
    async def replace(name: NodeName, request: Request, caller: NodeWriter) -> JSONResponse:
        return await _register(caller, await read_document(request), name)

    @app.get(
        f"{API_PREFIX}/nodes/{{name}}",
        response_model=RegistryEntryModel,
        summary="Get one node",
        tags=["nodes"],
    )
    async def get_node(name: NodeName, caller: Reader) -> JSONResponse:
        entry = registry.sync.get_by_name(name)
        return NodesResponse(entry_to_wire(entry))

    @app.delete(
        f"{API_PREFIX}/nodes/{{name}}",
        response_model=Status,
        summary="Deregister a node",
        tags=["nodes"],
    )
    async def delete_node(name: NodeName, caller: NodeWriter) -> JSONResponse:
        node_id = _holder(registry, name)
        if node_id is None:
            # An admin deleting a name no node holds frees a name its node left bound.
            if caller.role is not Role.ADMIN or not await registry.release(name):
                raise NotFoundError(f"no node is named {name!r}")
            return JSONResponse(_deleted(name, f"name {name} released"))
        authorize_node_id(caller, node_id)
        # A node leaving by itself keeps its name and labels for when it comes back.
        await registry.deregister(node_id, keep_binding=caller.role is Role.NODE)
        return JSONResponse(_deleted(name, f"node {name} deregistered"))

    @app.get(
        f"{API_PREFIX}/nodes",
        response_model=RegistryEntryList,
        summary="List nodes, or watch them with watch=true",
        tags=["nodes"],
        responses={200: {"content": WATCH_CONTENT}},
    )
    async def list_nodes(
        request: Request,
        caller: Caller,
        kind: NodeType | None = None,
        label_selector: Annotated[str | None, Query(alias="labelSelector", max_length=4096)] = None,
        healthy: bool = False,
        limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
        continue_: Annotated[str | None, Query(alias="continue", max_length=512)] = None,
        watch: bool = False,
        resource_version: Annotated[
            str | None, Query(alias="resourceVersion", max_length=20, pattern=r"^[0-9]*$")
        ] = None,
        timeout_seconds: Annotated[
            int | None, Query(alias="timeoutSeconds", ge=1, le=86_400)
        ] = None,
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
            since = int(since_text) if since_text else registry.sync.resource_version
            # Opened here, not in the generator, so a too-old version is a plain 410.
            opened = await registry.open_watch(since)
            frames = stream_events(
                opened,
                since,
                kind=kind,
                selector=selector,
                frame=sse_frame if sse else ndjson_frame,
                bookmarks=allow_watch_bookmarks,
                bookmark_interval=server.bookmark_interval_seconds,
                timeout=timeout_seconds,
                on_open=metrics.watch_streams.inc,
                on_close=metrics.watch_streams.dec,
            )
            media = "text/event-stream" if sse else "application/x-ndjson"
            return StreamingResponse(
                frames, media_type=media, headers={"Cache-Control": "no-cache"}
            )
        if continue_:
            page = pages.next(continue_, limit)
        else:
            found = registry.sync.select(kind=kind, selector=selector, only_healthy=healthy)
            page = pages.first(found.items, found.resource_version, limit)
        return NodesResponse(
            list_to_wire(page.items, page.resource_version, page.continue_token, page.remaining)
        )

    @app.post(
        f"{API_PREFIX}/search",
        response_model=RegistryEntryList,
        summary="find_nodes(kind, selector, only_healthy) with a structured selector",
        tags=["nodes"],
    )
    async def search(body: SearchRequest, caller: Reader) -> JSONResponse:
        selector = (
            body.selector.model_dump(by_alias=True, exclude_defaults=True)
            if body.selector
            else None
        )
        found = registry.sync.select(
            kind=body.kind, selector=selector, only_healthy=body.only_healthy
        )
        return NodesResponse(list_to_wire(found.items, found.resource_version))

    # -- heartbeats and status ----------------------------------------------------------

    @app.put(
        f"{API_PREFIX}/leases/{{name}}",
        response_model=Lease,
        openapi_extra=LEASE_BODY,
        summary="Renew the node's lease: the heartbeat",
        tags=["leases"],
    )
    async def renew_lease(name: str, request: Request) -> Response:
        # The hot path (every node, every 10 s): authentication and the body are read here
        # rather than through FastAPI's dependency and body machinery, which cost a third
        # of the request (see docs/benchmarks.md). ``name`` skips the path pattern check
        # too: only a registered (hence valid) name gets past ``id_of``.
        caller = auth.authenticate(request.headers.get("authorization"))
        authorize_node_write(caller, name)
        lease = _parse_lease(await request.body(), media_type(request))
        _check_lease(lease, name)
        node_id = registry.sync.id_of(name)
        authorize_node_id(caller, node_id)
        renewed = await registry.heartbeat(node_id)
        metrics.heartbeats.inc()
        return Response(_lease_json(name, renewed, ttl), media_type="application/json")

    @app.get(
        f"{API_PREFIX}/leases/{{name}}",
        response_model=Lease,
        summary="The node's lease: when it last renewed",
        tags=["leases"],
    )
    async def get_lease(name: NodeName, caller: Caller) -> Response:
        if caller.role is Role.NODE:
            authorize_node_write(caller, name)
        else:
            authorize_read(caller)
        entry = registry.sync.get_by_name(name)
        authorize_node_id(caller, entry.node_id)
        return Response(_lease_json(name, entry.last_seen, ttl), media_type="application/json")

    @app.patch(
        f"{API_PREFIX}/nodes/{{name}}/status",
        response_model=RegistryEntryModel,
        summary="Update phase, conditions, currentTasks (merge by condition type)",
        tags=["nodes"],
    )
    async def update_status(name: NodeName, body: StatusUpdate, caller: NodeWriter) -> JSONResponse:
        node_id = registry.sync.id_of(name)
        authorize_node_id(caller, node_id)
        entry = await registry.update_status(
            node_id,
            phase=body.phase,
            conditions=body.conditions,
            current_tasks=body.current_tasks,
        )
        return NodesResponse(entry_to_wire(entry))

    # -- operations ---------------------------------------------------------------------

    @app.get("/healthz", response_class=PlainTextResponse, tags=["operations"])
    async def healthz() -> str:
        return "ok"

    @app.get(
        "/readyz",
        response_class=PlainTextResponse,
        tags=["operations"],
        responses={503: {"model": Status}},
    )
    async def readyz() -> str:
        await registry.ping()
        return "ok"

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    async def metrics_endpoint(caller: Reader) -> Response:
        return Response(generate_latest(metrics.collectors), media_type=CONTENT_TYPE_LATEST)

    mount_dashboard(app, settings)  # the web dashboard at /ui (after the API's routes)

    app.add_middleware(
        BodyLimitMiddleware,
        limit=server.max_body_bytes,
        on_refuse=lambda reason: metrics.refusals.labels(reason).inc(),
    )
    app.add_middleware(_Timing, metrics=metrics)
    return app


def _complete_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the watch line schema (only referenced from WATCH_CONTENT) and rename the two Status."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    watch = WatchEventModel.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}", mode="serialization"
    )
    for name, schema in watch.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas["WatchEventModel"] = watch
    text = json.dumps(doc)
    for old, new in SCHEMA_NAMES.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    completed: dict[str, Any] = json.loads(text)
    schemas = completed["components"]["schemas"]
    for old, new in SCHEMA_NAMES.items():
        if old in schemas:
            schemas[new] = schemas.pop(old)
    return completed


def _query_selector(text: str | None) -> Selector:
    try:
        return as_selector(text)
    except SelectorError as exc:
        # The parser cannot know it was given a query parameter; the caller should be told.
        raise SelectorError(
            exc.message, [FieldError(e.loc or "labelSelector", e.message) for e in exc.errors]
        ) from None


def _check_lease(lease: Lease, name: str) -> None:
    if lease.metadata is not None and lease.metadata.name != name:
        raise ValidationError(
            "lease name mismatch",
            [FieldError("metadata.name", f"{lease.metadata.name!r} is not {name!r}")],
        )
    holder = lease.spec.holder_identity
    if holder is not None and holder != name:
        raise ValidationError(
            "lease holder mismatch",
            [FieldError("spec.holderIdentity", f"{holder!r} does not hold the lease of {name!r}")],
        )


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


async def _count_transitions(registry: AsyncRegistry, metrics: Metrics) -> None:
    """Count recorded health transitions for the metrics, from the registry's own watch."""
    while True:
        watch = registry.watch()
        try:
            async for event in watch:
                if event.type is EventType.HEALTH_CHANGED and event.previous_health:
                    metrics.transitions.labels(
                        event.previous_health.value, event.entry.health_state.value
                    ).inc()
        except RegistryError:
            log.warning("transition counter fell behind; counting from now on")
        finally:
            watch.close()
