"""Discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/ai_team.io``, ``.../v1``.

What kubectl and client-go read before anything else. ``/api`` and ``/apis`` answer aggregated
discovery (``apidiscovery.k8s.io/v2``) when Accept asks for it — kubectl 1.32 does, and then
needs no request per group version — and the legacy documents otherwise. Any authenticated
caller may read them (Kubernetes' ``system:discovery``); ``/version`` is public, as
``system:public-info-viewer`` makes it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from node_registry.kube import discovery
from node_registry.passport.models import API_GROUP
from node_registry.server.context import Caller
from node_registry.server.negotiation import Shape, content_type, negotiate

router = APIRouter(tags=["discovery"])
_AGGREGATED = frozenset({Shape.DISCOVERY})


def _json(doc: dict[str, Any], shape: Shape = Shape.OBJECT) -> JSONResponse:
    # Vary: the same URL answers two documents, so a cache must key on Accept.
    return JSONResponse(doc, media_type=content_type(shape), headers={"Vary": "Accept"})


@router.get("/version", response_model=discovery.VersionInfo, summary="Version of the API")
async def version() -> JSONResponse:
    return _json(discovery.version_info())


@router.get("/api", response_model=discovery.APIVersions, summary="The core group's versions")
async def core_group(request: Request, caller: Caller) -> JSONResponse:
    if negotiate(request.headers.get("accept"), _AGGREGATED) is Shape.DISCOVERY:
        return _json(discovery.aggregated_core(), Shape.DISCOVERY)
    return _json(discovery.core_versions(request.url.netloc))


@router.get("/api/v1", response_model=discovery.APIResourceList, summary="Core v1: no resources")
async def core_resources(caller: Caller) -> JSONResponse:
    return _json(discovery.core_resources())


@router.get("/apis", response_model=discovery.APIGroupList, summary="The API groups served")
async def groups(request: Request, caller: Caller) -> JSONResponse:
    if negotiate(request.headers.get("accept"), _AGGREGATED) is Shape.DISCOVERY:
        return _json(discovery.aggregated_groups(), Shape.DISCOVERY)
    return _json(discovery.api_group_list())


@router.get(f"/apis/{API_GROUP}", response_model=discovery.APIGroup, summary="The group")
async def group(caller: Caller) -> JSONResponse:
    return _json(discovery.api_group())


@router.get(
    f"/apis/{discovery.GROUP_VERSION}",
    response_model=discovery.APIResourceList,
    summary="The group's resources and their verbs",
)
async def resources(caller: Caller) -> JSONResponse:
    return _json(discovery.api_resource_list())
