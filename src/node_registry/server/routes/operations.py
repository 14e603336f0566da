"""Operations: liveness (``/healthz``), readiness (``/readyz``), Prometheus ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node_registry.kube.meta import Status
from node_registry.server.context import Ctx, Reader

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    return "ok"


@router.get("/readyz", response_class=PlainTextResponse, responses={503: {"model": Status}})
async def readyz(ctx: Ctx) -> str:
    await ctx.registry.ping()
    return "ok"


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics_endpoint(caller: Reader, ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics.collectors), media_type=CONTENT_TYPE_LATEST)
