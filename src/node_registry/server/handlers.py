"""Every error leaves as a Kubernetes ``Status``: the exception handlers of the app."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from node_registry.errors import BadRequestError, FieldError, RegistryError, ValidationError
from node_registry.kube.meta import Status, status_from_error
from node_registry.passport.models import API_GROUP
from node_registry.server.body import BodyTooLarge, too_large
from node_registry.server.metrics import Metrics

#: (resource, group) a route names in its errors' Status details; nodepassports by default.
Resource = tuple[str, str | None]


def refusal(
    exc: RegistryError,
    metrics: Metrics,
    name: str | None = None,
    resource: Resource | None = None,
) -> JSONResponse:
    """The answer to a refused request, counted: shared with the renewal fast path, so both
    refuse byte for byte alike."""
    metrics.refusals.labels(exc.reason).inc()
    # RFC 7235: a 401 names the scheme the client should use.
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse(
        refusal_status(exc, name, resource), status_code=exc.status_code, headers=headers
    )


def refusal_status(
    exc: RegistryError, name: str | None = None, resource: Resource | None = None
) -> dict[str, Any]:
    """The ``Status`` body of a refusal (also each refused lease's in a batched renewal)."""
    kind, group = resource or ("nodepassports", API_GROUP)
    return status_from_error(exc, name=name, kind=kind, group=group)


def internal_error(exc: Exception) -> JSONResponse:
    """A bug, not a refusal: the client still gets a Status; the traceback goes to the log."""
    message = f"internal error: {type(exc).__name__} (see the registry log)"
    body = Status(code=500, reason="InternalError", message=message)
    return JSONResponse(body.model_dump(by_alias=True, exclude_none=True), status_code=500)


def client_gone() -> Response:
    """What a request whose client hung up gets (nobody reads it): nginx's 499."""
    return Response(status_code=499)


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def refuse(
        exc: RegistryError, name: str | None = None, resource: Resource | None = None
    ) -> JSONResponse:
        return refusal(exc, metrics, name, resource)

    @app.exception_handler(RegistryError)
    async def _registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        name = request.path_params.get("name")
        resource = getattr(request.state, "resource", None)
        return refuse(exc, name if isinstance(name, str) else None, resource)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the error for the server to log after this answer.
        return internal_error(exc)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # The caller hung up mid-request (a node shutting down during a renewal): nobody
        # is left to answer, and it is not a server error worth a traceback.
        return client_gone()

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
