"""Request bodies: the size limit, the content types read (JSON and YAML), the parse errors.

The limit is enforced by an ASGI middleware before any handler runs, on the declared
Content-Length and again on the bytes actually received (chunked bodies have no length).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node_registry.errors import (
    BadRequestError,
    FieldError,
    TooLargeError,
    UnsupportedMediaTypeError,
)
from node_registry.wire import status_from_error

JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})


class BodyTooLarge(HTTPException):
    """Raised inside the receive channel; turned into a 413 Status by the app.

    An ``HTTPException`` so that FastAPI re-raises it while it reads a body into a model
    (leases, status, search) instead of swallowing it into a bare 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes (413) before they reach a handler."""

    def __init__(
        self, app: ASGIApp, limit: int, on_refuse: Callable[[str], None] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                refusal = too_large(self.limit)
                if self.on_refuse is not None:
                    self.on_refuse(refusal.reason)
                await _send_status(send, status_from_error(refusal))
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


async def _send_status(send: Send, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": body["code"],
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def too_large(limit: int) -> TooLargeError:
    return TooLargeError("request body too large", [FieldError("", f"the limit is {limit} bytes")])


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_document(request: Request) -> Any:
    """The body as a JSON/YAML value; 415 for other types, 400-class errors for bad syntax."""
    kind = media_type(request)
    if kind and kind not in JSON_TYPES and kind not in YAML_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaTypeError(
            "unsupported content type",
            [FieldError("Content-Type", f"{kind!r}; send application/json or application/yaml")],
        )
    raw = await request.body()
    if not raw.strip():
        raise BadRequestError("empty request body", [FieldError("", "a document is required")])
    try:
        if kind in YAML_TYPES:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            "malformed JSON", [FieldError("", f"{exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from None
    except yaml.YAMLError as exc:
        raise BadRequestError("malformed YAML", [FieldError("", str(exc))]) from None
    except UnicodeDecodeError as exc:
        raise BadRequestError("the body is not UTF-8", [FieldError("", str(exc))]) from None
