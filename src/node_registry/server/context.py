"""What every route reads from ``app.state``: the registry, settings, metrics, auth, pages.

``create_app`` puts one ``ServerContext`` on the application; routes reach it through the
request (``context(request)``) or the ``Ctx`` dependency, never through module globals, so
a process can build as many apps as it likes (tests do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request

from node_registry.clock import Clock
from node_registry.config import Settings
from node_registry.registry import AsyncRegistry
from node_registry.server.auth import (
    Authenticator,
    Principal,
    Role,
    authorize_node_write,
    authorize_read,
)
from node_registry.server.metrics import Metrics
from node_registry.server.pages import Paginator

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NodeName = Annotated[str, Path(max_length=253, pattern=NAME_PATTERN, description="Node name")]


@dataclass(frozen=True, slots=True)
class ServerContext:
    registry: AsyncRegistry
    settings: Settings
    metrics: Metrics
    authenticator: Authenticator
    pages: Paginator
    #: The registry's clock: ages in server-side printing are counted on it.
    clock: Clock


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.context
    return ctx


async def _context(request: Request) -> ServerContext:
    return context(request)


async def _principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    # async on purpose: FastAPI runs a plain def dependency in a thread pool, a thread hop
    # per request that halved heartbeat throughput.
    return context(request).authenticator.authenticate(authorization)


async def _reader(caller: Annotated[Principal, Depends(_principal)]) -> Principal:
    authorize_read(caller)
    return caller


async def _writer(caller: Annotated[Principal, Depends(_principal)]) -> Principal:
    # A reader may write nothing: refused before the body is even validated.
    if caller.role in (Role.READER, Role.VERIFIER):
        authorize_node_write(caller, "")
    return caller


async def _node_writer(
    name: NodeName, caller: Annotated[Principal, Depends(_principal)]
) -> Principal:
    # Authorization by the URL comes before body validation, as in Kubernetes: a caller
    # refused for this node learns nothing from its request being malformed.
    authorize_node_write(caller, name)
    return caller


# Module level: FastAPI resolves these string annotations against the module's globals.
Ctx = Annotated[ServerContext, Depends(_context)]
Caller = Annotated[Principal, Depends(_principal)]
Reader = Annotated[Principal, Depends(_reader)]
Writer = Annotated[Principal, Depends(_writer)]
NodeWriter = Annotated[Principal, Depends(_node_writer)]
