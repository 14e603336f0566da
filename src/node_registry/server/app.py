"""The HTTP service: ``create_app(registry, settings)`` builds the FastAPI application.

Routes live in ``server.routes`` (one router per resource) and are thin: they authenticate,
authorize, translate HTTP to a registry call and the result to the Kubernetes API group's
objects (``node_registry.kube``). Lease renewals, nearly all of the traffic, are answered
by a fast path in front of the framework that behaves as their route does (``fastpath``).
Every error leaves as a Kubernetes ``Status`` (``handlers``). No module-level state: the
factory takes the registry, the settings and a metrics collector registry and puts them on
``app.state`` (``context``), so tests build as many as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from node_registry import __version__
from node_registry.config import Settings
from node_registry.errors import RegistryError
from node_registry.kube.openapi import schemas as kube_schemas
from node_registry.registry import AsyncRegistry, EventType
from node_registry.server.auth import Authenticator
from node_registry.server.body import BodyLimitMiddleware
from node_registry.server.context import ServerContext
from node_registry.server.fastpath import RegistryApp, RenewalFastPath
from node_registry.server.flowcontrol import FlowControl, FlowControlMiddleware, Level
from node_registry.server.gctune import GcTuning
from node_registry.server.handlers import install_error_handlers
from node_registry.server.metrics import Metrics, TimingMiddleware
from node_registry.server.pages import Paginator
from node_registry.server.routes import (
    discovery,
    leaserenewals,
    leases,
    nodepassport_writes,
    nodepassports,
    nodetypes,
    operations,
    verification,
)
from node_registry.server.routes import openapi as kube_openapi
from node_registry.server.ui import mount_dashboard

log = logging.getLogger("node_registry.server")

#: Errors are JSON Status bodies whatever the route's own media type (FastAPI would list
#: them under text/plain for /metrics and /readyz), so the content is spelled out.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
    }
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
        429: "The registry is shedding load: retry after Retry-After seconds",
        503: "Store unavailable",
    }.items()
}
#: Two models are called Status (the passport's section and Kubernetes' error body), so
#: pydantic names both after their module; the API's documents use these names instead.
SCHEMA_NAMES = {
    "node_registry__kube__meta__Status": "Status",
    "node_registry__passport__models__Status": "PassportStatus",
}


def create_app(
    registry: AsyncRegistry,
    settings: Settings | None = None,
    *,
    metrics: Metrics | None = None,
    authenticator: Authenticator | None = None,
    fast_renewals: bool = True,
) -> FastAPI:
    """The registry's HTTP API over ``registry``; runs its lifecycle controller while serving.

    ``fast_renewals`` False serves lease renewals through the framework's route too, rather
    than the fast path in front of it (``server.fastpath``): for comparisons.
    """
    settings = settings or registry.settings
    server = settings.server
    metrics = metrics or Metrics(registry.sync)
    auth = authenticator or Authenticator.from_file(server.tokens_file)

    tuning = GcTuning(
        nodes=lambda: sum(registry.sync.node_counts().values()),
        writes=lambda: registry.sync.resource_version,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        counter = asyncio.create_task(_count_transitions(registry, metrics))
        async with registry, tuning.running():
            yield
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter

    app = RegistryApp(
        title="AI_TEAM Node Registry",
        version=__version__,
        description="Node passports, heartbeats as leases, label selectors, watch.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.context = ServerContext(
        registry=registry,
        settings=settings,
        metrics=metrics,
        authenticator=auth,
        pages=Paginator(server.list_snapshot_ttl_seconds),
        clock=registry.sync.clock,
    )
    # The dashboard's own route reads these two.
    app.state.registry = registry
    app.state.authenticator = auth
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete_openapi(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    install_error_handlers(app, metrics)
    app.include_router(leases.router)
    app.include_router(leaserenewals.router)
    app.include_router(nodepassports.router)
    app.include_router(verification.router)
    app.include_router(nodetypes.router)
    app.include_router(nodepassport_writes.router)
    app.include_router(discovery.router)
    app.include_router(kube_openapi.router)
    app.include_router(operations.router)
    mount_dashboard(app, settings)  # the web dashboard at /ui (after the API's routes)
    app.add_middleware(
        BodyLimitMiddleware,
        limit=server.max_body_bytes,
        on_refuse=lambda reason: metrics.refusals.labels(reason).inc(),
    )
    metrics.loop_lag.set_function(lambda: registry.loop_lag)

    def shed(level: Level) -> None:
        metrics.shed.labels(level.value).inc()
        metrics.refusals.labels("TooManyRequests").inc()
        if level is Level.NODE_HIGH:
            registry.sync.report_saturation()  # a renewal it refused: it could not hear

    control = FlowControl(server, on_shed=shed, loop_lag=lambda: registry.loop_lag)
    app.add_middleware(FlowControlMiddleware, control=control)
    app.add_middleware(TimingMiddleware, metrics=metrics)
    if fast_renewals:
        app.fast_path = RenewalFastPath(app.state.context, control, server.max_body_bytes)
    return app


def _complete_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """Rename the two Status; add the group's schemas."""
    doc.setdefault("components", {}).setdefault("schemas", {})
    text = json.dumps(doc)
    for old, new in SCHEMA_NAMES.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    completed: dict[str, Any] = json.loads(text)
    schemas = completed["components"]["schemas"]
    for old, new in SCHEMA_NAMES.items():
        if old in schemas:
            schemas[new] = schemas.pop(old)
    # The Kubernetes-shaped routes' objects, under the names /openapi/v3 gives them.
    schemas.update(kube_schemas())
    return completed


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
