"""Property-based API testing with schemathesis over the app's own OpenAPI document.

The app runs in-process (ASGI) without tokens, on a fake clock, with a few nodes registered
before every generated request, and a hook aims generated requests at those nodes half of
the time, so GET/PUT/DELETE by name, leases and status patches reach real nodes instead of
only 404s. Every operation is exercised, positive and negative data.

Watch streams: ``GET /nodes?watch=true`` streams until the client leaves, which a generated
request never does, so every watching case gets ``timeoutSeconds=1``: the stream ends by
itself after a second and its response is checked like any other.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from conftest import passport
from node_registry import AsyncRegistry, FakeClock, load_settings
from node_registry.errors import ConflictError
from node_registry.server import create_app
from node_registry.wire import API_PREFIX

NODES = ("coder-01", "coder-02", "planner-01")
NODES_PATH = f"{API_PREFIX}/nodes"
NODE_PATH = f"{API_PREFIX}/nodes/{{name}}"
LEASE_PATH = f"{API_PREFIX}/leases/{{name}}"
#: What FastAPI (pydantic) reads as true in a query string.
TRUE = {"1", "true", "on", "yes", "t", "y"}


@pytest.fixture(scope="module")
def registry() -> AsyncRegistry:
    return AsyncRegistry(clock=FakeClock(), settings=load_settings())


@pytest.fixture(scope="module")
def app(registry: AsyncRegistry) -> FastAPI:
    ensure_nodes(registry)
    return create_app(registry)


def ensure_nodes(registry: AsyncRegistry) -> None:
    """NODES registered as their canonical passports, whatever the last request did."""
    sync = registry.sync
    for name in NODES:
        try:
            sync.register(passport(name))
        except ConflictError:  # a generated passport took the name: remove it
            sync.deregister(sync.id_of(name))
            sync.register(passport(name))


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    @schema.hook
    def flatmap_case(context: Any, case: Any) -> st.SearchStrategy[Any]:
        aimed = st.sampled_from(NODES).map(lambda name: aim(case, name))
        return st.one_of(st.just(case), aimed)

    return schema


def aim(case: Any, name: str) -> Any:
    """``case`` pointed at the registered node NAME, with a body that agrees with it."""
    if "name" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "name": name}
    if case.method == "PUT" and case.path == NODE_PATH or (
        case.method == "POST" and case.path == NODES_PATH
    ):
        case.body = passport(name)  # a re-registration: 200 with the entry
    elif case.method == "PUT" and case.path == LEASE_PATH and isinstance(case.body, dict):
        case.body = {**case.body, "metadata": {"name": name}, "spec": {"holderIdentity": name}}
    return case


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    # Generating passports is slow-ish and the hooks reject nothing; neither is a problem.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case: Any, registry: AsyncRegistry) -> None:
    ensure_nodes(registry)
    if case.method == "GET" and case.path == NODES_PATH:
        watch = case.query.get("watch")
        if str(watch).lower() in TRUE:
            case.query = {**case.query, "timeoutSeconds": 1}
    case.call_and_validate(timeout=10)
