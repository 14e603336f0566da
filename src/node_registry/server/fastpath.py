"""The lease renewal's fast path: the heartbeat ``PUT`` answered in front of the framework.

Every node renews its lease every interval, so the renewal is nearly all of the registry's
traffic, and FastAPI's machinery (its middleware stack, exception middleware, routing,
request objects) cost three quarters of its CPU (docs/benchmarks.md). ``RegistryApp`` is
the FastAPI app with one check in front: a ``PUT`` on ``leases/{name}`` is served here, in
plain ASGI, and everything else goes to FastAPI as before.

It behaves as the framework's route does, because it shares the parts that decide:
``routes.leases.renew`` (authentication, authorization by the name then by the uid, the
body's media type and parsing, the heartbeat, its counter), ``FlowControl`` (a renewal holds
a ``node-high`` seat), the body limit (on the declared length, then on what arrives), the
refusal renderer of ``handlers`` (the same Status bytes, counted the same way) and the
request-duration histogram under the route's template. tests/test_fastpath.py compares
every refusal with the framework route's.
"""

from __future__ import annotations

import time
from functools import partial

from fastapi import FastAPI
from prometheus_client import Histogram
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from node_registry.errors import RegistryError
from node_registry.kube.discovery import API_PREFIX
from node_registry.kube.meta import status_from_error
from node_registry.server.body import BodyTooLarge, send_status, too_large
from node_registry.server.context import ServerContext
from node_registry.server.flowcontrol import FlowControl, Level
from node_registry.server.handlers import client_gone, internal_error, refusal
from node_registry.server.routes.leases import renew

#: The framework route's template: the fast path's requests are timed under it.
RENEWAL_ROUTE = f"{API_PREFIX}/leases/{{name}}"
#: What TimingMiddleware names a request refused before routing (shed, declared too large).
UNMATCHED = "unmatched"
_PREFIX = f"{API_PREFIX}/leases/"
_START = len(_PREFIX)
_JSON_HEADERS = (b"content-type", b"application/json")


class RegistryApp(FastAPI):
    """FastAPI with the renewal fast path in front; ``fast_path`` None hands it all on."""

    fast_path: RenewalFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and fast.serves(scope):
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class RenewalFastPath:
    """Serves ``PUT {API_PREFIX}/leases/{name}``; see the module docstring."""

    def __init__(self, ctx: ServerContext, control: FlowControl, limit: int) -> None:
        self.ctx = ctx
        self.control = control
        self.limit = limit
        self.served = 0  # renewals this path answered (any status): what tests look at
        self._timers: dict[str, Histogram] = {}

    def serves(self, scope: Scope) -> bool:
        """Whether the framework would route ``scope`` to the renewal: the same match as
        Starlette's ``{name}`` (one non-empty segment). Under a root path the framework
        keeps it, since routes match the path without it there."""
        if scope["type"] != "http" or scope["method"] != "PUT" or scope.get("root_path"):
            return False
        path: str = scope["path"]
        return path.startswith(_PREFIX) and len(path) > _START and "/" not in path[_START:]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        # What the framework times it under: a renewal that raised (a bug) had been routed;
        # only the refusals before routing (shed, declared too large) are unmatched.
        route = RENEWAL_ROUTE
        self.served += 1
        control = self.control
        try:
            full = control.full(Level.NODE_HIGH)
            if full is not None:
                await control.shed(send, Level.NODE_HIGH, full)
                route = UNMATCHED
            else:
                control.inflight[Level.NODE_HIGH] += 1
                try:
                    route = await self._renew(scope, receive, send)
                finally:
                    control.inflight[Level.NODE_HIGH] -= 1
        finally:
            timer = self._timers.get(route)
            if timer is None:
                timer = self._timers[route] = self.ctx.metrics.request_duration.labels(route, "PUT")
            timer.observe(time.perf_counter() - start)

    async def _renew(self, scope: Scope, receive: Receive, send: Send) -> str:
        authorization: str | None = None
        content_type: str | None = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > self.limit:
                    refused = too_large(self.limit)
                    self.ctx.metrics.refusals.labels(refused.reason).inc()
                    await send_status(send, status_from_error(refused))
                    return UNMATCHED
            elif key == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif key == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        kind = content_type.split(";", 1)[0].strip().lower() if content_type else ""
        name: str = scope["path"][_START:]
        response: Response
        try:
            payload = await renew(self.ctx, name, authorization, kind, partial(self._read, receive))
        except RegistryError as exc:
            response = refusal(exc, self.ctx.metrics, name)
        except BodyTooLarge as exc:
            response = refusal(too_large(exc.limit), self.ctx.metrics)
        except ClientDisconnect:
            response = client_gone()
        except Exception as exc:
            # As Starlette does for a bug: a Status for the client, the traceback raised
            # on for the server to log.
            await internal_error(exc)(scope, receive, send)
            raise
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(payload)).encode()), _JSON_HEADERS],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return RENEWAL_ROUTE
        await response(scope, receive, send)
        return RENEWAL_ROUTE

    async def _read(self, receive: Receive) -> bytes:
        """The body, within the limit (as ``BodyLimitMiddleware`` counts it: chunked bodies
        declare no length)."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.request":
                chunk: bytes = message.get("body", b"")
                received += len(chunk)
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()
