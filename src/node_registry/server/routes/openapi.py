"""OpenAPI for Kubernetes clients: ``/openapi/v3`` (index), ``/openapi/v3/apis/ai_team.io/v1``,
``/openapi/v2``. FastAPI's own ``/openapi.json`` and ``/docs`` stay, for people.

Any authenticated caller may read them, as discovery.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from node_registry.kube import openapi
from node_registry.kube.meta import Status
from node_registry.server.context import Caller
from node_registry.server.negotiation import JSON, media_ranges

router = APIRouter(tags=["openapi"], include_in_schema=False)


@router.get("/openapi/v3")
async def index(caller: Caller) -> JSONResponse:
    return JSONResponse(openapi.index())


@router.get(f"/openapi/v3/{openapi.GROUP_VERSION_PATH}")
async def group_version(caller: Caller) -> JSONResponse:
    # The hash in the index's URL names this very document: a client may cache it for good.
    headers = {"ETag": f'"{openapi.document_hash()}"', "Cache-Control": "public, max-age=31536000"}
    return JSONResponse(openapi.group_version_document(), headers=headers)


@router.get("/openapi/v2")
async def swagger(request: Request, caller: Caller) -> JSONResponse:
    # kubectl asks for v2 in protobuf only (gnostic's OpenAPIv2 message), which is not served:
    # a JSON answer would fail its parser, a 406 tells it plainly.
    accept = request.headers.get("accept") or JSON
    if not any(m.type in (JSON, "*/*", "application/*") for m in media_ranges(accept)):
        message = f"only {JSON} is served here, not {accept}"
        body = Status(code=406, reason="NotAcceptable", message=message)
        return JSONResponse(body.model_dump(by_alias=True, exclude_none=True), status_code=406)
    return JSONResponse(openapi.swagger_v2())
