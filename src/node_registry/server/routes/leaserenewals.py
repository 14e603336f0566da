"""Batched lease renewals: ``POST leaserenewals``, many heartbeats in one request.

A host that runs many agents would otherwise pay the per-request floor (the socket, HTTP
parsing: about 30 µs of server CPU, docs/benchmarks.md) once per agent and interval. A
``LeaseRenewal`` is a create-only object, as Kubernetes' ``TokenReview`` is: the request
names the leases in ``spec.leases``, the answer carries one result per lease in
``status.results``, in order — the renew time, or the ``Status`` the single ``PUT`` of that
lease would have been refused with. Nothing is stored.

Each lease is authorized on its own, as its ``PUT`` is: a node token renews its own lease
and gets 403 for the others (its own is still renewed); a uid-pinned token only its uid's.
What is wrong with the request as a whole is refused as a whole, before anything is renewed:
no or a bad token (401), a role that may renew nothing (403), a body that is not a
LeaseRenewal (400/415/422), more leases than ``server.max_renewals_per_request``, or a name
given twice (422). The body limit and the ``node-high`` seats apply as to every renewal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from node_registry.errors import FieldError, RegistryError, ValidationError
from node_registry.kube.discovery import API_PREFIX
from node_registry.passport import API_VERSION
from node_registry.passport.versions import translate_pydantic_error
from node_registry.server.auth import Role, authorize_node_id, authorize_node_write
from node_registry.server.body import read_document
from node_registry.server.context import context
from node_registry.server.handlers import refusal_status

KIND = "LeaseRenewal"
router = APIRouter(prefix=API_PREFIX, tags=["leases"])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LeaseReference(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=253)]


class LeaseRenewalSpec(_Strict):
    leases: list[LeaseReference] = Field(min_length=1)


class LeaseRenewal(_Strict):
    """The request: the leases to renew (the answer's ``status`` is described above)."""

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["LeaseRenewal"] = "LeaseRenewal"
    metadata: dict[str, Any] | None = None
    spec: LeaseRenewalSpec


class LeaseRenewalResult(_Strict):
    """One lease's result: its renew time, or the Status its own PUT would have got."""

    name: str
    renew_time: datetime | None = Field(default=None, alias="renewTime")
    error: dict[str, Any] | None = Field(default=None, description="A Kubernetes Status")


class LeaseRenewalStatus(_Strict):
    lease_duration_seconds: int = Field(alias="leaseDurationSeconds")
    results: list[LeaseRenewalResult]


class LeaseRenewalAnswer(_Strict):
    """The answer: one result per lease asked for, in order (the request's spec not echoed)."""

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["LeaseRenewal"] = "LeaseRenewal"
    status: LeaseRenewalStatus


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` put in place: the API document has no ``#/$defs``."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


RENEWAL_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": _inline(LeaseRenewal.model_json_schema(by_alias=True))}
            for media in ("application/json", "application/yaml")
        },
    }
}


@router.post(
    "/leaserenewals",
    status_code=201,
    response_model=LeaseRenewalAnswer,
    openapi_extra=RENEWAL_BODY,
    summary="Renew many leases in one request: one result per lease",
)
async def renew_leases(request: Request) -> JSONResponse:
    ctx = context(request)
    caller = ctx.authenticator.authenticate(request.headers.get("authorization"))
    if caller.role in (Role.READER, Role.VERIFIER):
        authorize_node_write(caller, "")  # renews nothing: refused before the body is read
    renewal = _parse(await read_document(request), ctx.settings.server.max_renewals_per_request)
    registry, metrics = ctx.registry, ctx.metrics
    results: list[dict[str, Any]] = []
    for ref in renewal.spec.leases:
        name = ref.name
        try:
            authorize_node_write(caller, name)
            node_id = registry.sync.id_of(name)
            authorize_node_id(caller, node_id)
            renewed = await registry.heartbeat(node_id)
        except RegistryError as exc:
            metrics.refusals.labels(exc.reason).inc()
            results.append({"name": name, "error": refusal_status(exc, name)})
            continue
        metrics.heartbeats.inc()
        results.append({"name": name, "renewTime": renewed.isoformat()})
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "status": {
            "leaseDurationSeconds": round(ctx.settings.heartbeat.ttl_seconds),
            "results": results,
        },
    }
    return JSONResponse(doc, status_code=201)


def _parse(doc: Any, limit: int) -> LeaseRenewal:
    try:
        renewal = LeaseRenewal.model_validate(doc)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"invalid {KIND}", translate_pydantic_error(exc)) from None
    leases = renewal.spec.leases
    if len(leases) > limit:
        raise ValidationError(
            f"too many leases in one {KIND}",
            [FieldError("spec.leases", f"{len(leases)} leases; at most {limit} per request")],
        )
    first: dict[str, int] = {}
    for index, ref in enumerate(leases):
        seen = first.setdefault(ref.name, index)
        if seen != index:
            raise ValidationError(
                f"a lease named twice in one {KIND}",
                [FieldError(f"spec.leases[{index}].name", f"{ref.name!r} is spec.leases[{seen}]")],
            )
    return renewal
