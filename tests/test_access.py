"""Access control end to end: bearer tokens, roles and NodeRestriction against a real server.

One uvicorn server per module with a tokens file of four principals; before every test the
registry is put back to the same state (``coder-01`` registered, ``coder-02`` not), so the
tests are independent although they share the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import passport
from live_server import make_app, serve
from node_registry import FakeClock
from node_registry.errors import ConfigError, UnauthorizedError
from node_registry.kube.discovery import API_PREFIX
from node_registry.server import Authenticator

ADMIN = "admin-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
NODE_01 = "node-coder-01-token-0123456789"
NODE_02 = "node-coder-02-token-0123456789"
PINNED = "node-coder-03-token-0123456789"
PINNED_UID = "0b8f7a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
TOKENS = {
    "tokens": [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": READER, "role": "reader", "name": "dashboard"},
        {"token": NODE_01, "role": "node", "node": "coder-01"},
        {"token": NODE_02, "role": "node", "node": "coder-02"},
        # Pinned to its uid too, written in capitals: a uid is the same in any spelling.
        {"token": PINNED, "role": "node", "node": "coder-03", "uid": PINNED_UID.upper()},
    ]
}
#: Registered before every test; coder-02 has a token but no node.
TARGET = "coder-01"
ABSENT = "coder-02"
PROTECTED = "registry.ai-team.io/trusted"
NP = f"{API_PREFIX}/nodepassports"
SMP = {"Content-Type": "application/strategic-merge-patch+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("access") / "tokens.yaml"
    tokens.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    # A fake clock that never moves: no node changes health while the module runs.
    app = make_app(clock=FakeClock(), server={"tokens_file": tokens})
    with serve(app) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        reset(http)
        yield http


def reset(http: httpx.Client) -> None:
    """``coder-01`` registered from scratch, nothing else, and no name bound."""
    for item in snapshot(http)["items"]:
        name = item["metadata"]["name"]
        response = http.delete(f"{NP}/{name}", headers=bearer(ADMIN))
        assert response.status_code == 200, response.text
    for name in ("coder-01", "coder-02", "coder-03", "victim"):
        # Names left bound by nodes that deregistered themselves: freed by an admin.
        response = http.delete(f"{NP}/{name}", headers=bearer(ADMIN))
        assert response.status_code in (200, 404), response.text
    response = http.post(NP, json=passport(TARGET), headers=bearer(ADMIN))
    assert response.status_code == 201, response.text


def snapshot(http: httpx.Client) -> dict[str, Any]:
    """Everything stored, as the admin sees it (including the list's resourceVersion)."""
    response = http.get(NP, headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- the matrix ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {name} is the node acted on
    body: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None

    def url(self, name: str) -> str:
        return self.path.format(name=name)

    def send(self, http: httpx.Client, name: str, headers: dict[str, str]) -> httpx.Response:
        body = self.body(name) if callable(self.body) else self.body
        # Streamed: an allowed watch sends its status and headers first, then the test stops
        # reading and leaves (timeoutSeconds bounds the stream should the close go unnoticed).
        sent = {**(self.headers or {}), **headers}
        with http.stream(
            self.method, self.url(name), json=body, params=self.params, headers=sent
        ) as response:
            if (self.params or {}).get("watch") and response.status_code == 200:
                return response
            response.read()
            return response


ENDPOINTS = {
    "register": Endpoint("POST", NP, passport),
    "replace": Endpoint("PUT", f"{NP}/{{name}}", passport),
    "patch": Endpoint("PATCH", f"{NP}/{{name}}", {"spec": {"maxConcurrentTasks": 5}}, None, MERGE),
    "get": Endpoint("GET", f"{NP}/{{name}}"),
    "list": Endpoint("GET", NP),
    "watch": Endpoint("GET", NP, params={"watch": "true", "timeoutSeconds": "5"}),
    "selected": Endpoint(
        "GET", NP, params={"fieldSelector": "metadata.nodeType=agent,status.schedulable=true"}
    ),
    "lease-get": Endpoint("GET", f"{API_PREFIX}/leases/{{name}}"),
    "lease-renew": Endpoint(
        "PUT", f"{API_PREFIX}/leases/{{name}}", lambda name: {"spec": {"holderIdentity": name}}
    ),
    "status-patch": Endpoint(
        "PATCH",
        f"{NP}/{{name}}/status",
        {"status": {"phase": "Running", "currentTasks": 2}},
        None,
        SMP,
    ),
    "delete": Endpoint("DELETE", f"{NP}/{{name}}"),
    "metrics": Endpoint("GET", "/metrics"),
    "healthz": Endpoint("GET", "/healthz"),
    "readyz": Endpoint("GET", "/readyz"),
    "openapi": Endpoint("GET", "/openapi.json"),
    "docs": Endpoint("GET", "/docs"),
}
PUBLIC = {"healthz", "readyz", "openapi", "docs"}

#: Status on the registered node TARGET, per authenticated caller. node-own is coder-01's
#: token, node-other is coder-02's token acting on coder-01.
ALLOWED: dict[str, tuple[int, int, int, int]] = {
    #                admin reader node-own node-other
    "register": (200, 403, 200, 403),
    "replace": (200, 403, 200, 403),
    "patch": (200, 403, 200, 403),
    # A node reads its own node (kubectl reads an object before it patches it).
    "get": (200, 200, 200, 403),
    "list": (200, 200, 403, 403),
    "watch": (200, 200, 403, 403),
    "selected": (200, 200, 403, 403),
    "lease-get": (200, 200, 200, 403),
    "lease-renew": (200, 403, 200, 403),
    "status-patch": (200, 403, 200, 403),
    "delete": (200, 403, 200, 403),
    "metrics": (200, 200, 403, 403),
}
AUTHENTICATED = {"admin": ADMIN, "reader": READER, "node-own": NODE_01, "node-other": NODE_02}
#: Credentials that identify nobody -> (Authorization header or None, what the 401 says).
UNAUTHENTICATED: dict[str, tuple[str | None, str]] = {
    "no-token": (None, "requires a bearer token"),
    "unknown-token": ("Bearer this-token-is-not-in-the-file", "unknown bearer token"),
    "basic": ("Basic x", "must be 'Bearer <token>'"),
    "bearer-alone": ("Bearer", "must be 'Bearer <token>'"),
}


def _matrix() -> Iterator[Any]:
    for endpoint in ENDPOINTS:
        for credential in [*UNAUTHENTICATED, *AUTHENTICATED]:
            if endpoint in PUBLIC:
                expected = 200
            elif credential in UNAUTHENTICATED:
                expected = 401
            else:
                expected = ALLOWED[endpoint][list(AUTHENTICATED).index(credential)]
            yield pytest.param(endpoint, credential, expected, id=f"{endpoint}-{credential}")


def _headers(credential: str) -> dict[str, str]:
    if credential in AUTHENTICATED:
        return bearer(AUTHENTICATED[credential])
    header = UNAUTHENTICATED[credential][0]
    return {} if header is None else {"Authorization": header}


def assert_status_body(response: httpx.Response, code: int, reason: str) -> str:
    body = response.json()
    assert body["apiVersion"] == "v1"
    assert body["kind"] == "Status"
    assert body["status"] == "Failure"
    assert body["code"] == code
    assert body["reason"] == reason
    message: str = body["message"]
    assert message
    for secret in (ADMIN, READER, NODE_01, NODE_02):
        assert secret not in response.text
    return message


def assert_refusal_explained(response: httpx.Response, endpoint: str, credential: str) -> None:
    if response.status_code == 401:
        message = assert_status_body(response, 401, "Unauthorized")
        assert UNAUTHENTICATED[credential][1] in message
        return
    message = assert_status_body(response, 403, "Forbidden")
    role = credential.split("-", maxsplit=1)[0]
    assert f"{role} " in message, message  # who was refused...
    if credential == "reader":
        assert "may not change nodes" in message  # ...and why
    elif endpoint in ALLOWED and ALLOWED[endpoint][2] == 200:
        # A write (or the lease read) on another node: names both nodes.
        assert f"may not change node {TARGET!r}, only {ABSENT!r}" in message
    else:
        assert "may only register, heartbeat, update and deregister its own node" in message


@pytest.mark.parametrize(("endpoint", "credential", "expected"), list(_matrix()))
def test_access_matrix(client: httpx.Client, endpoint: str, credential: str, expected: int) -> None:
    before = snapshot(client)
    response = ENDPOINTS[endpoint].send(client, TARGET, _headers(credential))
    assert response.status_code == expected, response.text
    if expected >= 400:
        assert_refusal_explained(response, endpoint, credential)
        assert snapshot(client) == before, "a refused request changed stored data"
    elif endpoint == "watch":
        assert response.headers["content-type"].startswith("application/json")


#: Status on ABSENT (coder-02: a token, no node): authorized callers learn it is missing,
#: a node bound elsewhere is refused before the registry is asked (403, not 404).
MISSING: dict[str, tuple[int, int, int, int]] = {
    #                admin reader node-own node-other
    "get": (404, 404, 404, 403),
    "lease-get": (404, 404, 404, 403),
    "lease-renew": (404, 403, 404, 403),
    "status-patch": (404, 403, 404, 403),
    "delete": (404, 403, 404, 403),
}


@pytest.mark.parametrize(
    ("endpoint", "credential", "expected"),
    [
        pytest.param(endpoint, credential, codes[index], id=f"{endpoint}-{credential}")
        for endpoint, codes in MISSING.items()
        for index, credential in enumerate(AUTHENTICATED)
    ],
)
def test_access_to_a_missing_node(
    client: httpx.Client, endpoint: str, credential: str, expected: int
) -> None:
    # node-own is coder-02 acting on itself here, node-other is coder-01 acting on coder-02.
    token = {"node-own": NODE_02, "node-other": NODE_01}.get(credential, AUTHENTICATED[credential])
    before = snapshot(client)
    response = ENDPOINTS[endpoint].send(client, ABSENT, bearer(token))
    assert response.status_code == expected, response.text
    if expected == 404:
        message = assert_status_body(response, 404, "NotFound")
        assert ABSENT in message
    else:
        message = assert_status_body(response, 403, "Forbidden")
        if credential == "node-other" and MISSING[endpoint][2] != 403:
            assert f"may not change node {ABSENT!r}, only {TARGET!r}" in message
    assert snapshot(client) == before


def test_a_node_registers_itself_from_nothing(client: httpx.Client) -> None:
    response = client.post(NP, json=passport(ABSENT), headers=bearer(NODE_02))
    assert response.status_code == 201, response.text
    names = [i["metadata"]["name"] for i in snapshot(client)["items"]]
    assert sorted(names) == [TARGET, ABSENT]


def test_a_node_cannot_register_a_passport_named_for_another(client: httpx.Client) -> None:
    before = snapshot(client)
    # coder-02's token, coder-01's passport: on POST the name comes only from the body.
    response = client.post(NP, json=passport(TARGET), headers=bearer(NODE_02))
    assert response.status_code == 403, response.text
    assert f"may not change node {TARGET!r}" in assert_status_body(response, 403, "Forbidden")
    assert snapshot(client) == before


def test_tokens_are_matched_exactly(client: httpx.Client) -> None:
    before = snapshot(client)
    for header in (
        f"Bearer {ADMIN[:-1]}",  # a prefix
        f"Bearer {ADMIN}x",  # an extension
        f"Bearer {ADMIN.upper()}",  # another case
        f"Token {ADMIN}",  # another scheme
        ADMIN,  # no scheme
    ):
        response = client.delete(f"{NP}/{TARGET}", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert_status_body(response, 401, "Unauthorized")
    assert snapshot(client) == before
    # The scheme is case-insensitive (RFC 7235), the token is not.
    response = client.get(NP, headers={"Authorization": f"bearer {READER}"})
    assert response.status_code == 200


# -- NodeRestriction: protected labels ------------------------------------------------------


def _labelled(value: str | None, **extra: str) -> dict[str, Any]:
    labels = {"zone": "eu-west-1", **extra}
    if value is not None:
        labels[PROTECTED] = value
    return passport(TARGET, labels=labels)


def _stored_labels(http: httpx.Client) -> dict[str, str]:
    response = http.get(f"{NP}/{TARGET}", headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    labels: dict[str, str] = response.json()["metadata"]["labels"]
    return labels


def _register(http: httpx.Client, doc: dict[str, Any], token: str, via: str) -> httpx.Response:
    if via == "POST":
        return http.post(NP, json=doc, headers=bearer(token))
    return http.put(f"{NP}/{TARGET}", json=doc, headers=bearer(token))


def _assert_protected_refusal(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    message = assert_status_body(response, 403, "Forbidden")
    assert PROTECTED in message
    assert "not by nodes" in message


@pytest.mark.parametrize("via", ["POST", "PUT"])
def test_a_node_may_not_set_a_protected_label(client: httpx.Client, via: str) -> None:
    before = snapshot(client)
    _assert_protected_refusal(_register(client, _labelled("true"), NODE_01, via))
    assert snapshot(client) == before
    # Nor on first registration (coder-02 has no node yet).
    labels = {"zone": "eu-west-1", PROTECTED: "true"}
    response = client.post(NP, json=passport(ABSENT, labels=labels), headers=bearer(NODE_02))
    _assert_protected_refusal(response)
    assert snapshot(client) == before


@pytest.mark.parametrize("via", ["POST", "PUT"])
def test_a_node_keeps_the_protected_labels_an_operator_set(client: httpx.Client, via: str) -> None:
    # The operator marks the node.
    response = _register(client, _labelled("true"), ADMIN, via)
    assert response.status_code == 200, response.text
    assert _stored_labels(client)[PROTECTED] == "true"

    # The node re-registers without the label, changing another one: the mark stays.
    response = _register(client, _labelled(None, team="blue"), NODE_01, via)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["labels"][PROTECTED] == "true"
    assert _stored_labels(client) == {"zone": "eu-west-1", "team": "blue", PROTECTED: "true"}

    # Repeating the operator's value is no change, so it is allowed.
    response = _register(client, _labelled("true"), NODE_01, via)
    assert response.status_code == 200, response.text

    # A different value is refused and changes nothing.
    before = snapshot(client)
    _assert_protected_refusal(_register(client, _labelled("false"), NODE_01, via))
    assert snapshot(client) == before
    assert _stored_labels(client)[PROTECTED] == "true"

    # The operator may change it, and the node keeps the new value too.
    response = _register(client, _labelled("false"), ADMIN, via)
    assert response.status_code == 200, response.text
    assert _stored_labels(client)[PROTECTED] == "false"
    response = _register(client, _labelled(None), NODE_01, via)
    assert response.status_code == 200, response.text
    assert _stored_labels(client)[PROTECTED] == "false"

    # The operator may also remove it.
    response = _register(client, _labelled(None), ADMIN, via)
    assert response.status_code == 200, response.text
    assert PROTECTED not in _stored_labels(client)


def test_a_node_may_not_reach_a_protected_label_through_its_resources(
    client: httpx.Client,
) -> None:
    # Every resource is also a label (``<resource>: <quantity>``) that selectors match, so
    # a resource named under the protected prefix would be a protected label in disguise.
    doc = passport(TARGET, resources={"cpu": "4", PROTECTED: "1"})
    before = snapshot(client)
    _assert_protected_refusal(_register(client, doc, NODE_01, "POST"))
    assert snapshot(client) == before
    selector = f"{NP}?labelSelector={PROTECTED}"
    assert client.get(selector, headers=bearer(ADMIN)).json()["items"] == []

    # What an operator declared, the node may repeat.
    response = _register(client, doc, ADMIN, "POST")
    assert response.status_code == 200, response.text
    response = _register(client, doc, NODE_01, "POST")
    assert response.status_code == 200, response.text
    changed = passport(TARGET, resources={"cpu": "4", PROTECTED: "2"})
    _assert_protected_refusal(_register(client, changed, NODE_01, "POST"))


# -- a node token binds the name and the uid -------------------------------------------------

VICTIM_UID = "5a5a5a5a-1111-4222-8333-444444444444"


def _as(name: str, uid: str, **labels: str) -> dict[str, Any]:
    return passport(name, uid=uid, labels={"zone": "eu-west-1", **labels})


def _uid(http: httpx.Client, name: str) -> str:
    response = http.get(f"{NP}/{name}", headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    uid: str = response.json()["metadata"]["uid"]
    return uid


@pytest.mark.parametrize("spelling", [str.lower, str.upper], ids=["lower", "upper"])
@pytest.mark.parametrize("via", ["POST", "PUT"])
def test_a_node_token_cannot_take_over_another_nodes_record(
    client: httpx.Client, via: str, spelling: Callable[[str], str]
) -> None:
    # The operator's node "victim", with an endpoint and a protected label.
    victim = _as("victim", VICTIM_UID, **{PROTECTED: "true"})
    assert client.post(NP, json=victim, headers=bearer(ADMIN)).status_code == 201
    # coder-01's token leaves, then comes back under its own name with the victim's uid.
    assert client.delete(f"{NP}/{TARGET}", headers=bearer(NODE_01)).status_code == 200
    before = snapshot(client)
    hijack = _as(TARGET, spelling(VICTIM_UID))
    hijack["spec"]["endpoint"]["address"] = "amqp://attacker:5672"
    response = _register(client, hijack, NODE_01, via)
    if via == "PUT":  # a PUT creates nothing: the name left is not there to replace
        assert_status_body(response, 404, "NotFound")
    else:
        message = assert_status_body(response, 403, "Forbidden")
        assert f"uid {VICTIM_UID} is registered as node 'victim'" in message
    assert snapshot(client) == before
    # Nor without leaving first (the name is its own, the uid is not).
    reset(client)
    assert client.post(NP, json=victim, headers=bearer(ADMIN)).status_code == 201
    before = snapshot(client)
    refused = _register(client, hijack, NODE_01, via)
    if via == "PUT":  # whoever sends it, a uid never changes under a name (apiserver's rule)
        assert "metadata.uid: field is immutable" in assert_status_body(refused, 422, "Invalid")
    else:
        assert refused.status_code == 403, refused.text
    assert snapshot(client) == before


def _marked_then_left(client: httpx.Client) -> str:
    """An operator marks coder-01 with a protected label, then the node leaves by itself
    (the node runtime deregisters on SIGTERM); its uid."""
    uid = _uid(client, TARGET)
    marked = _as(TARGET, uid, **{PROTECTED: "quarantined"})
    response = client.put(f"{NP}/{TARGET}", json=marked, headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    left = client.delete(f"{NP}/{TARGET}", headers=bearer(NODE_01))
    assert left.status_code == 200, left.text
    return uid


def test_a_node_that_left_comes_back_with_its_uid_and_labels(client: httpx.Client) -> None:
    uid = _marked_then_left(client)
    before = snapshot(client)

    # Its token cannot shed the operator's label by coming back as another uid...
    fresh = _as(TARGET, "77777777-6666-4555-8444-333333333333")
    response = client.post(NP, json=fresh, headers=bearer(NODE_01))
    message = assert_status_body(response, 403, "Forbidden")
    assert f"name {TARGET!r} is bound to uid {uid}, which deregistered itself from it" in message
    assert f"an admin can free the name: DELETE nodepassports/{TARGET}" in message
    assert snapshot(client) == before
    # ...while the node itself, any spelling of its uid, gets its name and label back.
    again = client.post(NP, json=_as(TARGET, uid.upper()), headers=bearer(NODE_01))
    assert again.status_code == 201, again.text
    assert again.json()["metadata"]["uid"] == uid
    assert _stored_labels(client) == {"zone": "eu-west-1", PROTECTED: "quarantined"}


def test_an_admin_delete_forgets_the_binding(client: httpx.Client) -> None:
    uid = _marked_then_left(client)
    # The operator frees the name the node left bound...
    freed = client.delete(f"{NP}/{TARGET}", headers=bearer(ADMIN))
    assert freed.status_code == 200, freed.text
    assert freed.json()["message"] == f"name {TARGET} released"
    assert client.delete(f"{NP}/{TARGET}", headers=bearer(ADMIN)).status_code == 404
    # ...so any uid may take it, with no label of the old node.
    fresh = _as(TARGET, "77777777-6666-4555-8444-333333333333")
    response = client.post(NP, json=fresh, headers=bearer(NODE_01))
    assert response.status_code == 201, response.text
    assert _stored_labels(client) == {"zone": "eu-west-1"}
    # Deleting a registered node as an admin leaves no binding either.
    assert client.delete(f"{NP}/{TARGET}", headers=bearer(ADMIN)).status_code == 200
    response = client.post(NP, json=_as(TARGET, uid), headers=bearer(NODE_01))
    assert response.status_code == 201, response.text
    # A node token cannot free a name: only an admin's delete does.
    assert client.delete(f"{NP}/{TARGET}", headers=bearer(NODE_01)).status_code == 200
    refused = client.delete(f"{NP}/{TARGET}", headers=bearer(NODE_01))
    assert refused.status_code == 404, refused.text


def test_a_token_pinned_to_a_uid_acts_on_that_uid_only(client: httpx.Client) -> None:
    other = "44444444-3333-4222-8111-000000000000"
    before = snapshot(client)
    response = client.post(NP, json=_as("coder-03", other), headers=bearer(PINNED))
    assert f"is bound to uid {PINNED_UID}, not {other}" in assert_status_body(
        response, 403, "Forbidden"
    )
    assert snapshot(client) == before
    response = client.post(NP, json=_as("coder-03", PINNED_UID), headers=bearer(PINNED))
    assert response.status_code == 201, response.text
    lease = {"spec": {"holderIdentity": "coder-03"}}
    assert (
        client.put(f"{API_PREFIX}/leases/coder-03", json=lease, headers=bearer(PINNED)).status_code
        == 200
    )

    # An operator puts another uid under the name: the pinned token may not touch it.
    assert client.delete(f"{NP}/coder-03", headers=bearer(ADMIN)).status_code == 200
    response = client.post(NP, json=_as("coder-03", other), headers=bearer(ADMIN))
    assert response.status_code == 201, response.text
    before = snapshot(client)
    for method, path, body in (
        ("PUT", "/leases/coder-03", lease),
        ("GET", "/leases/coder-03", None),
        ("GET", "/nodepassports/coder-03", None),
        ("PATCH", "/nodepassports/coder-03/status", {"status": {"currentTasks": 1}}),
        ("PATCH", "/nodepassports/coder-03", {"metadata": {"labels": {"a": "b"}}}),
        ("DELETE", "/nodepassports/coder-03", None),
    ):
        headers = {**bearer(PINNED), **(SMP if method == "PATCH" else {})}
        response = client.request(method, f"{API_PREFIX}{path}", json=body, headers=headers)
        assert response.status_code == 403, (method, path, response.text)
        assert f"is bound to uid {PINNED_UID}, not {other}" in assert_status_body(
            response, 403, "Forbidden"
        )
    assert snapshot(client) == before


def test_a_uid_in_the_tokens_file_must_be_a_uuid_of_a_node_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    for entry, problem in (
        ({"token": SECRET, "role": "node", "node": "coder-01", "uid": "coder-01"}, "valid UUID"),
        ({"token": SECRET, "role": "admin", "uid": PINNED_UID}, "only role 'node' is bound"),
    ):
        path.write_text(yaml.safe_dump({"tokens": [entry]}), encoding="utf-8")
        with pytest.raises(ConfigError, match=problem):
            Authenticator.from_file(path)


# -- the tokens file -----------------------------------------------------------------------

SECRET = "s3cret-token-value-0123456789"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(
            {"tokens": [{"token": SECRET, "role": "node"}]},
            "a token with role 'node' names its node",
            id="node-without-node",
        ),
        pytest.param(
            {"tokens": [{"token": "short", "role": "admin"}]},
            "tokens.0.token: String should have at least 16 characters",
            id="short-token",
        ),
        pytest.param(
            {"tokens": [{"token": SECRET, "role": "admin"}, {"token": SECRET, "role": "reader"}]},
            "tokens[1] is a duplicate",
            id="duplicate-token",
        ),
        pytest.param(
            {"tokens": [{"token": SECRET, "role": "root"}]},
            "tokens.0.role: Input should be 'admin', 'reader', 'node' or 'verifier'",
            id="unknown-role",
        ),
        pytest.param(
            {"tokens": [{"token": SECRET, "role": "admin", "node": "coder-01"}]},
            "only role 'node' is bound to a node",
            id="admin-bound-to-node",
        ),
        pytest.param(
            {"tokens": [{"token": SECRET, "role": "node", "node": "Coder_01"}]},
            "node 'Coder_01'",
            id="invalid-node-name",
        ),
        pytest.param(
            {"tokens": [{"token": SECRET, "role": "admin", "scope": "all"}]},
            "tokens.0.scope: Extra inputs are not permitted",
            id="unknown-field",
        ),
        pytest.param({"tokens": []}, "tokens: List should have at least 1 item", id="no-tokens"),
        pytest.param("tokens: [ {token: x", "is not valid YAML", id="broken-yaml"),
        pytest.param(None, "cannot read tokens file", id="missing-file"),
    ],
)
def test_invalid_tokens_file_is_a_config_error(
    tmp_path: Path, content: dict[str, Any] | str | None, problem: str
) -> None:
    path = tmp_path / "tokens.yaml"
    if isinstance(content, dict):
        path.write_text(yaml.safe_dump(content), encoding="utf-8")
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Authenticator.from_file(path)
    message = str(caught.value)
    assert problem in message
    assert str(path) in message
    assert SECRET not in message  # a tokens file's errors never repeat a token


def test_valid_tokens_file_maps_tokens_to_principals(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    auth = Authenticator.from_file(path)
    assert auth.enabled
    node = auth.authenticate(f"Bearer {NODE_01}")
    assert (node.role.value, node.node, node.name) == ("node", "coder-01", "coder-01")
    admin = auth.authenticate(f"Bearer {ADMIN}")
    assert (admin.role.value, admin.node, admin.name) == ("admin", None, "ops")
    assert not Authenticator.from_file(None).enabled


class Ticks:
    """A monotonic clock for the authenticator's once-a-second check, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_changed_tokens_file_is_read_again_within_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    path.chmod(0o600)
    ticks = Ticks()
    auth = Authenticator.from_file(path, ticks=ticks)
    assert auth.authenticate(f"Bearer {NODE_02}").node == "coder-02"
    without = {"tokens": [t for t in TOKENS["tokens"] if t["token"] != NODE_02]}
    path.write_text(yaml.safe_dump(without), encoding="utf-8")
    ticks.now += 0.5  # the file is looked at once a second at most, not per request
    assert auth.authenticate(f"Bearer {NODE_02}").node == "coder-02"
    ticks.now += 0.5
    with pytest.raises(UnauthorizedError):
        auth.authenticate(f"Bearer {NODE_02}")
    assert auth.authenticate(f"Bearer {NODE_01}").node == "coder-01"

    # A file that no longer reads keeps the tokens in force, and says why.
    path.write_text("tokens: [ {token: " + NODE_02, encoding="utf-8")
    ticks.now += 1
    with caplog.at_level(logging.ERROR, logger="node_registry.server"):
        assert auth.authenticate(f"Bearer {NODE_01}").node == "coder-01"
    assert "tokens file not reloaded, the tokens in force stay" in caplog.text
    assert NODE_02 not in caplog.text
    assert not auth.reload()
    path.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    assert auth.reload()
    assert auth.authenticate(f"Bearer {NODE_02}").node == "coder-02"
    assert "can be read by" not in caplog.text  # mode 600: nobody else reads it


@pytest.mark.parametrize(
    ("mode", "who"), [(0o640, "its group"), (0o604, "every user")], ids=["group", "world"]
)
def test_a_tokens_file_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, who: str
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="node_registry.server"):
        auth = Authenticator.from_file(path)
        assert f"can be read by {who} (mode {oct(mode)})" in caplog.text
        caplog.clear()
        auth.reload()
    assert f"can be read by {who}" in caplog.text  # at every reload too


def test_a_token_removed_from_the_file_stops_working_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    app = make_app(clock=FakeClock(), server={"tokens_file": path})
    with serve(app) as url, httpx.Client(base_url=url, timeout=5) as http:
        assert http.get(NP, headers=bearer(READER)).status_code == 200
        without = {"tokens": [t for t in TOKENS["tokens"] if t["token"] != READER]}
        path.write_text(yaml.safe_dump(without), encoding="utf-8")
        deadline = time.monotonic() + 5
        while (code := http.get(NP, headers=bearer(READER)).status_code) == 200:
            assert time.monotonic() < deadline, "the removed token still works"
            time.sleep(0.05)
        assert code == 401
        assert http.get(NP, headers=bearer(ADMIN)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "token", "body"),
    [
        ("POST", "/nodepassports", READER, {"metadata": "not a mapping"}),
        ("PUT", f"/nodepassports/{TARGET}", NODE_02, {"metadata": "not a mapping"}),
        ("PATCH", f"/nodepassports/{TARGET}/status", NODE_02, {"status": {"phase": "Bogus"}}),
        ("PATCH", f"/nodepassports/{TARGET}/status", READER, {"status": {"currentTasks": -1}}),
        ("GET", "/nodepassports?labelSelector=zone%20in%20(", NODE_01, None),
        ("GET", "/nodepassports?fieldSelector=status.schedulable=maybe", NODE_01, None),
    ],
)
def test_authorization_comes_before_validation(
    client: httpx.Client, method: str, path: str, token: str, body: dict[str, Any]
) -> None:
    # Kubernetes authorizes before it validates: a refused caller learns nothing from
    # whether its request was well-formed.
    before = snapshot(client)
    headers = {**bearer(token), **(SMP if method == "PATCH" else {})}
    response = client.request(method, f"{API_PREFIX}{path}", json=body, headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["reason"] == "Forbidden"
    assert snapshot(client) == before


def test_a_401_names_the_bearer_scheme(client: httpx.Client) -> None:
    response = client.get(NP)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
