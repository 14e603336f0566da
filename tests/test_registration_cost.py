"""What a registration costs the server beyond its own work (#14): no thread hop it can skip.

FastAPI runs a plain ``def`` dependency in a worker thread, and a small passport validates
faster than a hop to a worker takes; both hops were most of a registration's server CPU
(docs/benchmarks.md). A large body is still validated off the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from conftest import passport
from node_registry import AsyncRegistry, FakeClock
from node_registry.server import create_app
from node_registry.server.body import INLINE_PARSE_BYTES, off_the_loop_if_large


def _routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # an included router
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def test_no_route_depends_on_a_plain_function() -> None:
    app = create_app(AsyncRegistry(clock=FakeClock()))
    api = [r for r in _routes(app.router.routes) if isinstance(r, APIRoute)]
    assert len(api) > 20  # the walk found the API's routes
    dependencies = {call for route in api for call in _calls(route.dependant)}
    assert dependencies  # and their dependencies
    hopping = sorted(c.__qualname__ for c in dependencies if not inspect.iscoroutinefunction(c))
    assert hopping == [], f"each is a worker-thread hop per request: {hopping}"
    endpoints = sorted(r.name for r in api if not inspect.iscoroutinefunction(r.endpoint))
    assert endpoints == []


def test_a_small_body_is_validated_on_the_loop_and_a_large_one_off_it() -> None:
    async def where(size: int) -> threading.Thread:
        return await off_the_loop_if_large(threading.current_thread, size)

    loop_thread = threading.current_thread()
    assert asyncio.run(where(900)) is loop_thread
    assert asyncio.run(where(INLINE_PARSE_BYTES)) is loop_thread
    assert asyncio.run(where(INLINE_PARSE_BYTES + 1)) is not loop_thread


async def _register_over_http(doc: dict[str, Any]) -> list[str]:
    """POST ``doc`` to the app on this loop; what the loop's executor was given meanwhile."""
    app = create_app(AsyncRegistry(clock=FakeClock()))
    loop = asyncio.get_running_loop()
    submitted: list[str] = []
    real = loop.run_in_executor

    def counting(executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        submitted.append(func.__name__)
        return real(executor, func, *args)

    loop.run_in_executor = counting  # type: ignore[method-assign]
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
            response = await http.post("/apis/ai_team.io/v1/nodepassports", json=doc)
    finally:
        del loop.run_in_executor  # the class's own again
    assert response.status_code == 201, response.text
    assert app.state.registry.sync.get(doc["metadata"]["uid"]).name == doc["metadata"]["name"]
    return submitted


@pytest.mark.parametrize(("padding", "hops"), [(0, 0), (INLINE_PARSE_BYTES, 1)])
def test_the_registry_validates_a_small_registration_on_the_loop(padding: int, hops: int) -> None:
    doc = passport("coder-01")
    if padding:
        doc["metadata"]["annotations"] = {"note": "x" * padding}  # a body over the line
    assert (len(httpx.Request("POST", "/", json=doc).content) > INLINE_PARSE_BYTES) == bool(hops)
    submitted = asyncio.run(_register_over_http(doc))
    # The registry's validating stretch is the only executor work a registration has (the
    # route's own off-the-loop parse and validation go through anyio's threads instead).
    assert submitted == ["first_call"] * hops
