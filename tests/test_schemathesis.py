"""Property-based API testing with schemathesis over the app's own OpenAPI document.

The app runs in-process (ASGI) without tokens, on a fake clock, with a few nodes registered
before every generated request; a hook aims half of the requests that name a node at one of
them (with a body that agrees), so GET/PUT/DELETE by name, leases, status patches and
re-registrations reach real nodes instead of only 404s and 422s. Every operation runs, with
positive and negative data, checked for: no 5xx, a documented status code, a documented
content type, and a body that matches the documented schema.

Watch streams: ``GET .../nodepassports?watch=true`` streams until the client leaves, which a
generated request never does, so every watching case gets ``timeoutSeconds=1`` and the
stream ends by itself. The watch is Kubernetes' (lines of JSON in ``application/json``, which
schemathesis would read as one document): its lines are checked here as watch events of
NodePassports, and the stream is left out of the schema check.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import passport
from node_registry import AsyncRegistry, FakeClock, load_settings
from node_registry.errors import ConflictError
from node_registry.kube.discovery import API_PREFIX
from node_registry.server import create_app

NODES = ("coder-01", "coder-02", "planner-01")
LEASE_PATH = f"{API_PREFIX}/leases/{{name}}"
PASSPORTS_PATH = f"{API_PREFIX}/nodepassports"
PASSPORT_PATH = f"{API_PREFIX}/nodepassports/{{name}}"
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
#: What FastAPI (pydantic) reads as true in a query string.
TRUE = {"1", "true", "on", "yes", "t", "y"}


def ensure_nodes(registry: AsyncRegistry) -> None:
    """NODES registered as their canonical passports, whatever the last request did."""
    sync = registry.sync
    for name in NODES:
        try:
            sync.register(passport(name))
        except ConflictError:  # a generated passport took the name: remove it
            sync.deregister(sync.id_of(name))
            sync.register(passport(name))


# Module level, not ``schemathesis.pytest.from_fixture``: the lazy loader of schemathesis
# 4.32 sets ``request.node._nodeid``, which pytest 9.2 no longer has (AttributeError).
# from_asgi starts the app's lifespan in schemathesis' event-loop thread until the process
# exits; the registry's controller runs there on the fake clock, so nothing expires.
# Idle watch streams get a BOOKMARK every quarter second, so they have lines to check.
SETTINGS = load_settings(server={"bookmark_interval_seconds": 0.25})
REGISTRY = AsyncRegistry(clock=FakeClock(), settings=SETTINGS)
ensure_nodes(REGISTRY)
APP = create_app(REGISTRY)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
PASSPORT = jsonschema.Draft202012Validator(
    {
        "$ref": "#/components/schemas/io.ai_team.v1.NodePassport",
        "components": APP.openapi()["components"],
    }
)


@schema.hook
def flatmap_case(context: Any, case: Any) -> st.SearchStrategy[Any]:
    if (case.method, case.path) == ("GET", PASSPORTS_PATH):
        # A quarter of the lists become a watch from a few versions back: events to replay.
        return st.sampled_from([False, False, False, True]).map(
            lambda watch: watch_recent(case) if watch else case
        )
    if "name" not in case.path_parameters and (case.method, case.path) != ("POST", PASSPORTS_PATH):
        return st.just(case)
    return st.one_of(st.just(case), st.sampled_from(NODES).map(lambda name: aim(case, name)))


def watch_recent(case: Any) -> Any:
    since = max(0, REGISTRY.sync.resource_version - len(NODES))
    case.query = {"watch": "true", "resourceVersion": str(since)}
    return case


def aim(case: Any, name: str) -> Any:
    """``case`` pointed at the registered node NAME, with a body that agrees with it."""
    if "name" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "name": name}
    if (case.method, case.path) in (("PUT", PASSPORT_PATH), ("POST", PASSPORTS_PATH)):
        case.body = passport(name)  # a re-registration: 200 with the entry
    elif (case.method, case.path) == ("PUT", LEASE_PATH) and isinstance(case.body, dict):
        spec = case.body.get("spec")
        spec = {**spec, "holderIdentity": name} if isinstance(spec, dict) else {}
        case.body = {**case.body, "metadata": {"name": name}, "spec": spec}
    return case


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    # Passports are big documents to generate; that is not a problem to report.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case: Any) -> None:
    ensure_nodes(REGISTRY)
    watching = (case.method, case.path) == ("GET", PASSPORTS_PATH) and (
        str(case.query.get("watch")).lower() in TRUE
    )
    if watching:
        case.query = {**case.query, "timeoutSeconds": 1}
    checks = [c for c in CHECKS if c is not response_schema_conformance] if watching else CHECKS
    response = case.call_and_validate(checks=checks, timeout=10)
    if watching and response.status_code == 200:
        for line in response.content.decode().splitlines():
            event = json.loads(line)
            assert event["type"] in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                PASSPORT.validate(event["object"])
