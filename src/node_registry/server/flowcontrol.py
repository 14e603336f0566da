"""Load shedding in front of the app: seats per priority level, the excess answered 429.

Kubernetes' API priority and fairness in miniature. Each request belongs to a level and
holds one of its seats while it runs; a request that finds its level full is answered at
once with 429, ``Retry-After`` and a ``Status`` (reason ``TooManyRequests``), costing a
few microseconds instead of a place in a queue that only grows while the registry is
overloaded. Seats bound requests that wait on something (etcd, a slow body). A request
served from memory never waits, though: on one event loop the queue is the loop's own,
so while the loop runs more than ``shed_reads_lag_seconds`` late every level below
``node-high`` is shed outright, and renewals are what the loop spends its time on:

- ``node-high``: what keeps nodes alive (lease renewals, batched ones too, status reports,
  registration, deregistration; every write of ``leases``, ``leaserenewals`` and
  ``nodepassports``): the most seats, so these are the last to be refused;
- ``workload``: reads (get, list, watch). A watch holds its seat only until its
  stream starts (APF counts a watch's initialisation, not its lifetime); open streams
  are bounded separately (``max_watch_streams``);
- ``catch-all``: /metrics, the dashboard's files, the API documents;
- ``exempt``: the probes (/healthz, /readyz), which must answer under any load.

Refusing a node write means the registry may miss that node's heartbeat: the middleware
tells the registry (``on_node_shed``), which then counts the moment as its own blindness
and marks no node NotReady for it (see ``Registry.report_saturation``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node_registry.config import ServerSettings
from node_registry.errors import TooManyRequestsError
from node_registry.kube.discovery import API_PREFIX
from node_registry.kube.meta import status_from_error

RETRY_AFTER_SECONDS = 1
_NODE_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PROBES = frozenset({"/healthz", "/readyz"})
_API = API_PREFIX + "/"
#: What node writes go to: leases (one by one, or batched in leaserenewals) and
#: nodepassports (where the registry's clients register, report status and deregister, #11).
_NODE_WRITTEN = ("leases/", "leaserenewals", "nodepassports")


class Level(StrEnum):
    NODE_HIGH = "node-high"
    WORKLOAD = "workload"
    CATCH_ALL = "catch-all"
    EXEMPT = "exempt"


def classify(method: str, path: str) -> Level:
    """The priority level of a request, from its method and path alone."""
    if path.startswith(_API):
        rest = path[len(_API) :]
        if method in _NODE_WRITES and rest.startswith(_NODE_WRITTEN):
            return Level.NODE_HIGH
        return Level.WORKLOAD
    if path in _PROBES:
        return Level.EXEMPT
    return Level.CATCH_ALL


#: The collection a watch is opened on.
_WATCHED = ("/nodepassports",)


def is_watch(method: str, path: str, query: bytes) -> bool:
    if method != "GET" or not path.endswith(_WATCHED) or b"watch" not in query:
        return False
    params = dict(parse_qsl(query.decode("latin-1")))
    return params.get("watch", "").lower() in ("true", "1")


class FlowControl:
    """The seats of every level, shared by the middleware and the renewal fast path
    (``server.fastpath``), so a renewal holds a ``node-high`` seat whichever path serves it."""

    def __init__(
        self,
        settings: ServerSettings,
        on_shed: Callable[[Level], None],
        loop_lag: Callable[[], float],
    ) -> None:
        self.loop_lag = loop_lag
        self.max_lag = settings.shed_reads_lag_seconds
        self.seats = {
            Level.NODE_HIGH: settings.max_node_writes_inflight,
            Level.WORKLOAD: settings.max_reads_inflight,
            Level.CATCH_ALL: settings.max_other_inflight,
        }
        self.max_watches = settings.max_watch_streams
        self.inflight = dict.fromkeys(self.seats, 0)
        self.watches = 0
        self.on_shed = on_shed

    def full(self, level: Level) -> str | None:
        """Why ``level`` has no seat free now, or None."""
        seats = self.seats[level]
        if self.inflight[level] >= seats:
            return f"{seats} {level} requests are in progress, its limit"
        return None

    async def shed(self, send: Send, level: Level, why: str) -> None:
        self.on_shed(level)
        error = TooManyRequestsError(
            f"the registry is shedding load: {why}; retry after {RETRY_AFTER_SECONDS} s"
        )
        payload = json.dumps(status_from_error(error)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status_code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class FlowControlMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware cost); see the module docstring."""

    def __init__(self, app: ASGIApp, control: FlowControl) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        control = self.control
        method, path = scope["method"], scope["path"]
        level = classify(method, path)
        if level is Level.EXEMPT:
            await self.app(scope, receive, send)
            return
        if level is not Level.NODE_HIGH and control.loop_lag() > control.max_lag:
            lag = control.loop_lag()
            why = f"its event loop runs {lag:.2f} s late (limit {control.max_lag:g} s)"
            await control.shed(send, level, why)
            return
        watch = level is Level.WORKLOAD and is_watch(method, path, scope["query_string"])
        full = control.full(level)
        if full is not None:
            await control.shed(send, level, full)
            return
        if watch and control.watches >= control.max_watches:
            await control.shed(
                send, level, f"{control.max_watches} watch streams are open, its limit"
            )
            return
        control.inflight[level] += 1
        held = True
        if not watch:
            try:
                await self.app(scope, receive, send)
            finally:
                control.inflight[level] -= 1
            return

        async def release_at_start(message: Message) -> None:
            nonlocal held
            if held and message["type"] == "http.response.start":
                held = False
                control.inflight[level] -= 1
            await send(message)

        control.watches += 1
        try:
            await self.app(scope, receive, release_at_start)
        finally:
            control.watches -= 1
            if held:
                control.inflight[level] -= 1
