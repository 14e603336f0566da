"""Watch of nodepassports over HTTP end to end, as Kubernetes streams it, from a real server.

Servers run on a FakeClock with the lifecycle controller's timer out of reach (transitions
come from ``reconcile()`` called by the test) and, unless a test says otherwise, a BOOKMARK
every 0.2 s: the first BOOKMARK after a replay marks "caught up", so a test reads exactly
what was replayed without waiting for a timeout. Every read is bounded by httpx's read
timeout and by the stream's own ``timeoutSeconds``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from conftest import passport
from live_server import make_app, serve
from node_registry import FakeClock, Registry

API = "/apis/ai_team.io/v1"
NP = f"{API}/nodepassports"
TLS = ssl.create_default_context()
#: A line must arrive within 2 s; nothing here waits longer for the server.
READ = httpx.Timeout(5, read=2)
SMP = {"content-type": "application/strategic-merge-patch+json"}
Doc = dict[str, Any]


@dataclass
class Api:
    app: FastAPI
    http: httpx.Client
    clock: FakeClock

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.registry.sync
        return registry

    def ok(self, method: str, path: str, **kwargs: Any) -> Doc:
        if method == "PATCH":
            kwargs.setdefault("headers", SMP)
        response = self.http.request(method, f"{API}{path}", **kwargs)
        assert response.status_code in (200, 201), response.text
        body: Doc = response.json()
        return body

    @contextlib.contextmanager
    def ok_stream(self) -> Iterator[Iterator[Doc]]:
        """A watch from now whose lines are read as they come (no timeout of its own)."""
        query = {"watch": "true", "allowWatchBookmarks": "false"}
        with self.http.stream("GET", NP, params=query) as response:
            assert response.status_code == 200
            yield (json.loads(line) for line in response.iter_lines() if line)

    def streams_open(self) -> float | None:
        text = self.http.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "node_registry_watch_streams":
                    return float(sample.value)
        return None

    def wait_streams(self, expected: float) -> None:
        deadline = time.monotonic() + 2
        while (value := self.streams_open()) != expected:
            assert time.monotonic() < deadline, f"watch streams gauge is {value}, not {expected}"
            time.sleep(0.02)


Start = Callable[..., Api]


@pytest.fixture
def start(clock: FakeClock) -> Iterator[Start]:
    with contextlib.ExitStack() as stack:

        def _start(**overrides: Any) -> Api:
            overrides.setdefault("controller", {"period_seconds": 3600})
            overrides.setdefault("server", {"bookmark_interval_seconds": 0.2})
            app = make_app(clock=clock, **overrides)
            base = stack.enter_context(serve(app))
            http = stack.enter_context(httpx.Client(base_url=base, timeout=READ, verify=TLS))
            return Api(app, http, clock)

        yield _start


@pytest.fixture
def api(start: Start) -> Api:
    return start()


@contextlib.contextmanager
def ndjson(
    api: Api, headers: dict[str, str] | None = None, **params: Any
) -> Iterator[Iterator[Doc]]:
    """The watch's lines, parsed (BOOKMARKs asked for unless ``allowWatchBookmarks`` says);
    the connection closes when the block ends."""
    query = {"watch": "true", "timeoutSeconds": 10, "allowWatchBookmarks": "true", **params}
    with api.http.stream("GET", NP, params=query, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-cache"
        yield (json.loads(line) for line in response.iter_lines() if line)


def until_bookmark(events: Iterator[Doc]) -> tuple[list[Doc], Doc]:
    """Events up to the first BOOKMARK, and that BOOKMARK."""
    seen: list[Doc] = []
    for event in events:
        if event["type"] == "BOOKMARK":
            return seen, event
        seen.append(event)
        assert len(seen) < 100, "no BOOKMARK"
    raise AssertionError(f"the stream ended before a BOOKMARK, after {seen}")


def summary(events: list[Doc]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


def versions(events: list[Doc]) -> list[int]:
    return [int(e["object"]["metadata"]["resourceVersion"]) for e in events]


#: After ORIGIN's registration; a health transition is a MODIFIED (Kubernetes has no other).
HISTORY = [
    ("ADDED", "node-a"),
    ("MODIFIED", "node-a"),
    ("ADDED", "node-b"),
    ("MODIFIED", "node-a"),
    ("DELETED", "node-a"),
]


def make_history(api: Api) -> str:
    """One event of each type, as HISTORY lists them, after a first node's registration:
    the version to watch from to see them all (0 would send the nodes now as ADDED)."""
    origin = api.ok("POST", "/nodepassports", json=passport("origin"))
    api.ok("POST", "/nodepassports", json=passport("node-a"))
    api.ok("PATCH", "/nodepassports/node-a/status", json={"status": {"currentTasks": 1}})
    api.ok("POST", "/nodepassports", json=passport("node-b"))
    api.clock.advance(21)
    for name in ("origin", "node-b"):
        api.ok("PUT", f"/leases/{name}", json={"spec": {"holderIdentity": name}})
    api.registry.reconcile()  # node-a went silent: NOT_READY; the others renewed
    api.ok("DELETE", "/nodepassports/node-a")
    version: str = origin["metadata"]["resourceVersion"]
    return version


# -- NDJSON ----------------------------------------------------------------------------------


def test_watch_from_a_version_replays_every_event_after_it_in_order(api: Api) -> None:
    since = make_history(api)
    with ndjson(api, resourceVersion=since) as events:
        replayed, bookmark = until_bookmark(events)

    assert summary(replayed) == HISTORY
    rvs = versions(replayed)
    assert rvs == sorted(set(rvs)), rvs  # strictly increasing
    assert rvs[-1] == api.registry.resource_version
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) == rvs[-1]
    assert bookmark["object"]["kind"] == "NodePassport"

    health = replayed[3]
    assert health["object"]["status"]["healthState"] == "NOT_READY"
    assert health["object"]["status"]["phase"] == "NotReady"
    assert replayed[1]["object"]["status"]["currentTasks"] == 1
    assert {"previousHealth"} & set(replayed[3]) == set()  # Kubernetes' two keys only
    assert replayed[4]["object"]["metadata"]["uid"] == replayed[0]["object"]["metadata"]["uid"]

    # 0 (or none): the nodes now as ADDED, then what changes.
    with ndjson(api, resourceVersion="0") as events:
        now, bookmark = until_bookmark(events)
    assert summary(now) == [("ADDED", "node-b"), ("ADDED", "origin")]


def test_watch_resumes_after_a_version(api: Api) -> None:
    since = make_history(api)
    with ndjson(api, resourceVersion=since) as events:
        everything, _ = until_bookmark(events)
    middle = versions(everything)[1]

    with ndjson(api, resourceVersion=str(middle)) as events:
        later, bookmark = until_bookmark(events)
    assert summary(later) == HISTORY[2:]
    assert later == everything[2:]
    assert all(v > middle for v in versions(later))
    assert bookmark["object"]["metadata"]["resourceVersion"] == str(versions(everything)[-1])


def test_watch_from_a_compacted_version_is_a_410_before_streaming(start: Start) -> None:
    api = start(watch={"history_size": 3})
    for i in range(5):
        api.ok("POST", "/nodepassports", json=passport(f"node-{i}"))

    for params in ({"resourceVersion": "1"}, {"resourceVersion": "1", "labelSelector": "zone"}):
        query = {"watch": "true", "timeoutSeconds": 5, **params}
        with api.http.stream("GET", NP, params=query) as response:
            assert response.status_code == 410
            assert response.headers["content-type"] == "application/json"
            body = json.loads(response.read())
        assert body["kind"] == "Status"
        assert body["reason"] == "Expired"
        assert body["code"] == 410
        assert "too old" in body["message"]
    assert api.streams_open() == 0

    # The kept history (the last three versions) can still be resumed from.
    with ndjson(api, resourceVersion="2") as events:
        kept, _ = until_bookmark(events)
    assert versions(kept) == [3, 4, 5]


def test_bookmarks_keep_an_idle_watch_current(api: Api) -> None:
    api.ok("POST", "/nodepassports", json=passport("node-a"))
    api.ok("POST", "/nodepassports", json=passport("node-b"))
    current = str(api.registry.resource_version)

    with ndjson(api, resourceVersion=current) as events:
        started = time.monotonic()
        first, second = next(events), next(events)
        assert [first["type"], second["type"]] == ["BOOKMARK", "BOOKMARK"]
        assert time.monotonic() - started >= 0.3  # one per 0.2 s, not a busy loop
        for bookmark in (first, second):
            assert bookmark["object"]["metadata"] == {"resourceVersion": current}
            assert bookmark["object"]["kind"] == "NodePassport"

        added = api.ok("POST", "/nodepassports", json=passport("node-c"))
        changes, bookmark = until_bookmark(events)
        assert summary(changes) == [("ADDED", "node-c")]
        version = added["metadata"]["resourceVersion"]
        assert bookmark["object"]["metadata"]["resourceVersion"] == version


def test_bookmarks_can_be_turned_off_and_the_timeout_ends_the_stream(api: Api) -> None:
    api.ok("POST", "/nodepassports", json=passport("node-a"))
    started = time.monotonic()
    version = str(api.registry.resource_version)
    with ndjson(api, allowWatchBookmarks="false", timeoutSeconds=1, resourceVersion=version) as w:
        lines = list(w)
    assert lines == []
    assert 0.9 < time.monotonic() - started < 2


def test_an_idle_watch_without_bookmarks_leaves_the_server_responsive(api: Api) -> None:
    """Idle past the bookmark interval (0.2 s here), a watch that sends no bookmarks waits
    for events; it used to spin on a zero timeout, holding the event loop until its own
    timeout, so the registry answered nothing meanwhile (heartbeats included)."""
    api.ok("POST", "/nodepassports", json=passport("node-a"))
    version = api.http.get(NP).json()["metadata"]["resourceVersion"]
    query = {"watch": "true", "resourceVersion": version, "timeoutSeconds": 2}
    opened = threading.Event()

    def idle_watch() -> None:
        idle = httpx.Timeout(5, read=4)  # the stream is silent until its own timeout
        with api.http.stream("GET", NP, params=query, timeout=idle) as response:
            opened.set()
            for _ in response.iter_lines():
                pass

    watcher = threading.Thread(target=idle_watch, daemon=True)
    watcher.start()
    assert opened.wait(2)
    time.sleep(0.6)  # three bookmark intervals with nothing to send
    started = time.monotonic()
    answer = api.http.get(f"{NP}/node-a", timeout=2)
    assert answer.status_code == 200
    assert time.monotonic() - started < 0.5
    watcher.join(6)


def test_watch_filters_by_label_selector_and_kind(api: Api) -> None:
    api.ok("POST", "/nodepassports", json=passport("coder"))
    api.ok("POST", "/nodepassports", json=passport("writer", capabilities=("text_generation",)))
    api.ok("POST", "/nodepassports", json=passport("db", kind="storage", capabilities=("sql",)))
    origin = str(api.registry.resource_version)
    api.ok("PATCH", "/nodepassports/writer/status", json={"status": {"currentTasks": 2}})
    api.ok("PATCH", "/nodepassports/coder/status", json={"status": {"currentTasks": 1}})
    current = str(api.registry.resource_version)

    cases: list[tuple[dict[str, str], list[tuple[str, str]]]] = [
        ({"labelSelector": "capability.python=true"}, [("ADDED", "coder"), ("MODIFIED", "coder")]),
        (
            {"labelSelector": "capability.python!=true"},
            [("ADDED", "writer"), ("ADDED", "db"), ("MODIFIED", "writer")],
        ),
        ({"fieldSelector": "metadata.nodeType=storage"}, [("ADDED", "db")]),
        (
            {
                "fieldSelector": "metadata.nodeType=agent",
                "labelSelector": "capability.text_generation",
            },
            [("ADDED", "writer"), ("MODIFIED", "writer")],
        ),
        (
            {"fieldSelector": "metadata.nodeType=storage", "labelSelector": "capability.python"},
            [],
        ),
    ]
    for params, expected in cases:
        # From 0: the nodes matching now, as ADDED (sorted by name), then what changed.
        with ndjson(api, resourceVersion="0", **params) as events:
            matched, bookmark = until_bookmark(events)
        added = sorted(e for e in expected if e[0] == "ADDED")
        assert summary(matched) == added, params
        assert bookmark["object"]["metadata"]["resourceVersion"] == current, params
        with ndjson(api, resourceVersion=origin, **params) as events:
            changed, bookmark = until_bookmark(events)
        assert summary(changed) == [e for e in expected if e[0] != "ADDED"], params
        # Skipped events still move the resume point: the bookmark is the current version.
        assert bookmark["object"]["metadata"]["resourceVersion"] == current, params


def test_a_filtered_watch_sees_nodes_enter_and_leave_its_selector(api: Api) -> None:
    # Kubernetes' watch cache: leaving the selector is DELETED, entering it is ADDED, so a
    # cache built from a filtered watch never keeps a node that no longer matches.
    api.ok("POST", "/nodepassports", json=passport("origin", capabilities=()))
    api.ok("POST", "/nodepassports", json=passport("coder", capabilities=("python",)))
    api.ok("POST", "/nodepassports", json=passport("coder", capabilities=("go",)))
    status = {"status": {"currentTasks": 1}}
    api.ok("PATCH", "/nodepassports/coder/status", json=status)  # matches neither time
    api.ok("POST", "/nodepassports", json=passport("coder", capabilities=("python", "go")))
    api.ok("PATCH", "/nodepassports/coder/status", json={"status": {"currentTasks": 2}})
    with ndjson(api, resourceVersion="1", labelSelector="capability.python") as events:
        matched, _ = until_bookmark(events)
    assert summary(matched) == [
        ("ADDED", "coder"),
        ("DELETED", "coder"),
        ("ADDED", "coder"),
        ("MODIFIED", "coder"),
    ]
    assert versions(matched) == [2, 3, 5, 6]


def test_an_open_watch_gets_changes_live(api: Api) -> None:
    api.ok("POST", "/nodepassports", json=passport("early"))
    version = str(api.registry.resource_version)
    with ndjson(api, allowWatchBookmarks="false", resourceVersion=version) as events:
        # Writes from this thread while the server streams from its own.
        api.ok("POST", "/nodepassports", json=passport("late"))
        started = time.monotonic()
        added = next(events)
        assert time.monotonic() - started < 2
        assert summary([added]) == [("ADDED", "late")]

        api.ok("PATCH", "/nodepassports/late/status", json={"status": {"phase": "Pending"}})
        modified = next(events)
        assert summary([modified]) == [("MODIFIED", "late")]
        assert modified["object"]["status"]["phase"] == "Pending"

        # A write straight into the registry from a thread that is not the server's.
        api.clock.advance(21)
        writer = threading.Thread(target=api.registry.reconcile)
        writer.start()
        writer.join(timeout=2)
        changed = sorted(summary([next(events), next(events)]))
        assert changed == [("MODIFIED", "early"), ("MODIFIED", "late")]
        assert versions([modified]) > versions([added])


# -- what a watch is not ------------------------------------------------------------------------


def test_a_watch_is_not_server_sent_events(api: Api) -> None:
    """One wire format (#11): asked for text/event-stream, the watch is Kubernetes' stream."""
    api.ok("POST", "/nodepassports", json=passport("node-a"))
    query = {"watch": "true", "timeoutSeconds": 1}
    headers = {"accept": "text/event-stream"}
    with api.http.stream("GET", NP, params=query, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert summary(lines) == [("ADDED", "node-a")]


# -- the open streams gauge ------------------------------------------------------------------


def test_the_streams_gauge_follows_open_watches(api: Api) -> None:
    api.ok("POST", "/nodepassports", json=passport("node-a"))
    assert api.streams_open() == 0
    with ndjson(api) as events:
        assert next(events)["type"] == "ADDED"  # node-a, as it is now
        assert next(events)["type"] == "BOOKMARK"
        api.wait_streams(1)
        with ndjson(api, labelSelector="zone") as other:
            assert next(other)["type"] == "ADDED"
            api.wait_streams(2)
        api.wait_streams(1)  # the client hung up: the server noticed
    api.wait_streams(0)

    # A stream that ends by its own timeout is closed too.
    with ndjson(api, timeoutSeconds=1, resourceVersion="1") as events:
        assert next(events)["type"] == "BOOKMARK"
        api.wait_streams(1)
        rest = [e["type"] for e in events]  # ends when the server ends the stream
        assert rest
        assert set(rest) == {"BOOKMARK"}
        api.wait_streams(0)  # the server closed it, not the client


def _dechunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response (head included in ``raw``)."""
    rest = raw.partition(b"\r\n\r\n")[2]
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return body


def test_a_watcher_too_slow_to_read_is_dropped_with_410_not_buffered_for(start: Start) -> None:
    api = start(watch={"backlog_events": 50})
    host, port = api.http.base_url.host, api.http.base_url.port
    assert port is not None
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that lags
    slow.settimeout(5)
    slow.connect((host, port))
    slow.sendall(f"GET {NP}?watch=true HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    fast_seen: list[str] = []
    with api.ok_stream() as fast:

        def read() -> None:
            fast_seen.extend(e["type"] for _, e in zip(range(300), fast, strict=False))

        reader = threading.Thread(target=read)
        reader.start()
        for i in range(300):  # 60 KB each: far more than the socket buffers hold
            doc = passport(f"n-{i:03}")
            doc["metadata"]["annotations"] = {"note": "x" * 60_000}
            api.registry.register(doc)
            time.sleep(0.002)  # a registration rate a reader keeps up with
        reader.join(timeout=10)
        assert not reader.is_alive()
    raw = b""
    deadline = time.monotonic() + 10
    while not raw.endswith(b"\r\n0\r\n\r\n"):  # the stream's last chunk
        assert time.monotonic() < deadline, f"the stream went on: {len(raw)} bytes so far"
        chunk = slow.recv(1 << 20)
        assert chunk, "the connection closed before the stream ended"
        raw += chunk
    slow.close()
    lines = [json.loads(line) for line in _dechunk(raw).splitlines() if line]
    # The slow watcher got what fitted in the buffers, then the 410, and the stream ended.
    assert lines[-1]["type"] == "ERROR"
    assert lines[-1]["object"]["code"] == 410
    assert "more than 50 events behind" in lines[-1]["object"]["message"]
    assert 0 < len(lines) - 1 < 300
    assert fast_seen == ["ADDED"] * 300  # the watcher that kept up missed nothing
