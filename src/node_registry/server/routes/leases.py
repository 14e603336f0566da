"""Leases: the heartbeat (``PUT``, every node every interval: the hot path) and its reading."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from node_registry.errors import (
    BadRequestError,
    FieldError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from node_registry.kube.discovery import API_PREFIX
from node_registry.kube.objects import Lease, LeaseRenewal, lease_object
from node_registry.kube.table import leases_table
from node_registry.passport import API_VERSION
from node_registry.passport.versions import translate_pydantic_error
from node_registry.server.auth import Role, authorize_node_id, authorize_node_write, authorize_read
from node_registry.server.body import JSON_TYPES, media_type
from node_registry.server.context import Caller, Ctx, NodeName, ServerContext, context
from node_registry.server.negotiation import Shape, content_type, kube_response, negotiate

LEASE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Lease"}}},
    }
}

router = APIRouter(prefix=API_PREFIX, tags=["leases"])
_TABLE = frozenset({Shape.TABLE})


@router.put(
    "/leases/{name}",
    response_model=Lease,
    openapi_extra=LEASE_BODY,
    summary="Renew the node's lease: the heartbeat",
)
async def renew_lease(name: str, request: Request) -> Response:
    # The hot path (every node, every 10 s): the context, authentication and the body are
    # read here rather than through FastAPI's dependency and body machinery, which cost a
    # third of the request (see docs/benchmarks.md). ``name`` skips the path pattern check
    # too: only a registered (hence valid) name gets past ``id_of``. Served by the fast
    # path (server.fastpath) in front of the framework; this route documents it and serves
    # what the fast path hands on (an app under a root path).
    body = await renew(
        context(request),
        name,
        request.headers.get("authorization"),
        media_type(request),
        request.body,
    )
    return Response(body, media_type="application/json")


async def renew(
    ctx: ServerContext,
    name: str,
    authorization: str | None,
    kind: str,
    read_body: Callable[[], Awaitable[bytes]],
) -> bytes:
    """Renew ``name``'s lease for the caller ``authorization`` names: the renewed Lease as JSON.

    Whoever serves the PUT (this route or the fast path) calls this, so both check the same
    things in the same order: the caller, its right to the name (before the body is read,
    as Kubernetes authorizes by the URL first), the body, the uid's binding.
    """
    caller = ctx.authenticator.authenticate(authorization)
    authorize_node_write(caller, name)
    raw = await read_body()
    _check_media_type(kind)
    if _PLAIN_NAME(name) is None or raw != _client_body(name):
        _check_lease(_parse_lease(raw), name)
    node_id = ctx.registry.sync.id_of(name)
    authorize_node_id(caller, node_id)
    renewed = await ctx.registry.heartbeat(node_id)
    ctx.metrics.heartbeats.inc()
    return _lease_json(name, renewed, ctx.settings.heartbeat.ttl_seconds)


@router.get(
    "/leases",
    summary="Every node's lease (a Table when asked)",
    responses=kube_response("LeaseList", "A LeaseList, or a Table when Accept asks for one"),
)
async def list_leases(request: Request, caller: Caller, ctx: Ctx) -> Response:
    authorize_read(caller)
    found = ctx.registry.sync.list_nodes()
    ttl = ctx.settings.heartbeat.ttl_seconds
    leases = [lease_object(e, ttl) for e in found.items]
    if negotiate(request.headers.get("accept"), _TABLE) is Shape.TABLE:
        table = leases_table(leases, ctx.clock.now(), resource_version=found.resource_version)
        return JSONResponse(table, media_type=content_type(Shape.TABLE))
    doc = {
        "apiVersion": API_VERSION,
        "kind": "LeaseList",
        "metadata": {"resourceVersion": str(found.resource_version)},
        "items": leases,
    }
    return JSONResponse(doc)


@router.get(
    "/leases/{name}", response_model=Lease, summary="The node's lease: when it last renewed"
)
async def get_lease(name: NodeName, request: Request, caller: Caller, ctx: Ctx) -> Response:
    if caller.role is Role.NODE:
        authorize_node_write(caller, name)
    else:
        authorize_read(caller)
    entry = ctx.registry.sync.get_by_name(name)
    authorize_node_id(caller, entry.node_id)
    if negotiate(request.headers.get("accept"), _TABLE) is Shape.TABLE:
        # kubectl get leases NAME; every other caller keeps the Lease below.
        lease = lease_object(entry, ctx.settings.heartbeat.ttl_seconds)
        table = leases_table([lease], ctx.clock.now())
        return JSONResponse(table, media_type=content_type(Shape.TABLE))
    return Response(
        _lease_json(name, entry.last_seen, ctx.settings.heartbeat.ttl_seconds),
        media_type="application/json",
    )


def _lease_json(name: str, renewed: datetime, ttl: float) -> bytes:
    # Formatted rather than json.dumps'ed: it was a third of the route's own time. Safe
    # because ``name`` is a stored node's name (a DNS-1123 subdomain: nothing to escape)
    # and the rest are numbers and an ISO timestamp.
    return (
        f'{{"apiVersion":"ai_team.io/v1","kind":"Lease","metadata":{{"name":"{name}"}},'
        f'"spec":{{"holderIdentity":"{name}","leaseDurationSeconds":{round(ttl)},'
        f'"renewTime":"{renewed.isoformat()}"}}}}'
    ).encode()


def _client_body(name: str) -> bytes:
    """The Lease this registry's client sends (client.core.heartbeat), byte for byte."""
    return b'{"apiVersion":"ai_team.io/v1","kind":"Lease","spec":{"holderIdentity":"%s"}}' % (
        name.encode()
    )


#: A name that ``_client_body`` spells as a valid Lease holding it: nothing JSON escapes in
#: it, no lone surrogate (UTF-8 has none), within holderIdentity's length. A node's own
#: renewal is then known valid unparsed (the parse was a tenth of the fast path's time).
_PLAIN_NAME = re.compile(r'[^"\\\x00-\x1f\ud800-\udfff]{1,253}').fullmatch


def _check_media_type(kind: str) -> None:
    if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaTypeError(
            "unsupported content type",
            [FieldError("Content-Type", f"{kind!r}; a Lease is sent as application/json")],
        )


def _parse_lease(raw: bytes) -> LeaseRenewal:
    try:
        return LeaseRenewal.model_validate_json(raw or b"{}")
    except pydantic.ValidationError as exc:
        unreadable = any(e["type"] == "json_invalid" for e in exc.errors())
        error = BadRequestError if unreadable else ValidationError
        raise error("invalid Lease", translate_pydantic_error(exc)) from None


def _check_lease(lease: LeaseRenewal, name: str) -> None:
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
