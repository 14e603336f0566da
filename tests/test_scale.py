"""Issue #14's linear stalls: cached wire bytes, incremental gauges, GC, the index's cost.

Each fix is shown by what it must not change (the bytes a client gets, the counts, the
nodes selected) and by a count of the work done, never by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from conftest import BACKENDS, passport
from live_server import make_app, serve
from node_registry import AsyncRegistry, FakeClock, Registry, load_settings
from node_registry.errors import NotFoundError
from node_registry.kube import objects, table
from node_registry.kube.objects import (
    dumps,
    entry_to_object,
    list_to_object,
    object_bytes,
    partial_object_metadata,
)
from node_registry.kube.table import COLUMN_DEFINITIONS, IncludeObject, nodes_table
from node_registry.passport import load_passport
from node_registry.registry import aio, index
from node_registry.selectors import as_selector
from node_registry.server import create_app, render
from node_registry.server.gctune import REFREEZE_MIN_WRITES, GcTuning
from node_registry.store import MemoryStore, NodeRecord

API = "/apis/ai_team.io/v1"
T0 = FakeClock().now()


@pytest.fixture
def app(clock: FakeClock) -> FastAPI:
    return make_app(clock)


@pytest.fixture
def http(app: FastAPI) -> Iterator[httpx.Client]:
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def registry_of(app: FastAPI) -> Registry:
    registry: Registry = app.state.registry.sync
    return registry


def fleet(registry: Registry) -> None:
    """Nodes whose objects differ in every way the cached encoding must keep."""
    registry.register(passport("plain-a", labels={"zone": "a"}))
    odd = passport("unicode-b", labels={"zone": "b"})
    odd["metadata"]["annotations"] = {"note": "Zürich, 東京 ✓", "quote": 'say "hi"\\n'}
    registry.register(odd)
    unready = passport("unready-c")
    unready["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "reason": "Overloaded"}],
    }
    registry.register(unready)
    pending = passport("pending-d")
    pending["status"] = {"phase": "Pending"}
    registry.register(pending)


def test_a_list_is_the_same_json_as_before_whatever_the_node(
    app: FastAPI, http: httpx.Client, clock: FakeClock
) -> None:
    registry = registry_of(app)
    fleet(registry)
    for step in range(3):
        found = registry.list_nodes()
        response = http.get(f"{API}/nodepassports")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        expected = list_to_object(found.items, found.resource_version)
        assert response.json() == expected
        # Byte for byte what Starlette's JSONResponse made of the document.
        assert response.content == dumps(expected)
        # Health is judged at each read: the cached bytes follow it (NOT_READY, then
        # OFFLINE recorded by the controller, which makes a new stored version).
        clock.advance(21)
        if step == 1:
            registry.reconcile()


def test_pages_are_the_same_json_as_the_list(app: FastAPI, http: httpx.Client) -> None:
    fleet(registry_of(app))
    whole = http.get(f"{API}/nodepassports").json()["items"]
    first = http.get(f"{API}/nodepassports", params={"limit": 3}).json()
    assert first["metadata"]["remainingItemCount"] == 1
    rest = http.get(
        f"{API}/nodepassports", params={"limit": 3, "continue": first["metadata"]["continue"]}
    ).json()
    assert first["items"] + rest["items"] == whole
    assert "continue" not in rest["metadata"]


def encodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the nodes whose stored version gets encoded from now on."""
    encoded: list[str] = []
    fragments = objects._fragments

    def counted(entry: Any) -> Any:
        encoded.append(entry.name)
        return fragments(entry)

    monkeypatch.setattr(objects, "_fragments", counted)
    return encoded


def test_each_stored_version_is_encoded_once(
    app: FastAPI, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_of(app)
    fleet(registry)
    encoded = encodes(monkeypatch)
    first = http.get(f"{API}/nodepassports").content
    assert sorted(encoded) == ["pending-d", "plain-a", "unicode-b", "unready-c"]
    assert http.get(f"{API}/nodepassports").content == first
    assert len(encoded) == 4  # the second list joined the kept bytes
    registry.update_status(registry.id_of("plain-a"), current_tasks=2)
    changed = http.get(f"{API}/nodepassports").json()["items"]
    assert encoded[4:] == ["plain-a"]  # only the new version is encoded
    assert changed[1]["status"]["currentTasks"] == 2


def test_an_entry_without_a_stored_version_or_with_the_stand_ins_encodes_whole(
    registry: Registry,
) -> None:
    odd = passport("odd-e")
    odd["metadata"]["annotations"] = {"x": "\x00health\x00"}
    registry.register(odd)
    entry = registry.get_by_name("odd-e")
    assert object_bytes(entry) == dumps(entry_to_object(entry))
    assert object_bytes(entry) == dumps(entry_to_object(entry))  # not cached: same again
    entry.memo = None  # an entry built by hand (a client's) has no stored version
    assert json.loads(object_bytes(entry)) == entry_to_object(entry)


def scrape(http: httpx.Client) -> dict[tuple[str, str], float]:
    counts = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for s in family.samples:
            if s.name == "node_registry_nodes":
                counts[s.labels["kind"], s.labels["health_state"]] = s.value
    return counts


def test_node_gauges_are_kept_as_nodes_change_not_counted_per_scrape(
    app: FastAPI, http: httpx.Client, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_of(app)
    for i in range(5):
        registry.register(passport(f"agent-{i}"))
    registry.register(passport("store-0", kind="storage"))
    judged: list[int] = []
    entries = Registry._entries

    def counted(self: Registry, found: list[Any], now: Any) -> Any:
        judged.append(len(found))
        return entries(self, found, now)

    monkeypatch.setattr(Registry, "_entries", counted)
    counts = scrape(http)
    assert judged == []  # no node was listed or judged for the scrape
    assert counts["agent", "ALIVE"] == 5
    assert counts["storage", "ALIVE"] == 1
    assert counts["tool", "ALIVE"] == 0  # built-in kinds show at 0 too

    registry.heartbeat(registry.id_of("agent-0"))
    clock.advance(21)
    registry.heartbeat(registry.id_of("agent-0"))
    registry.reconcile()  # records agent-1..4 and store-0 NotReady
    registry.deregister(registry.id_of("agent-4"))
    judged.clear()
    counts = scrape(http)
    assert judged == []
    listed = registry.list_nodes().items
    for kind, state in counts:
        expected = sum(1 for e in listed if e.node_kind == kind and e.health_state == state)
        assert counts[kind, state] == expected, (kind, state)
    assert counts["agent", "NOT_READY"] == 3
    assert counts["agent", "ALIVE"] == 1


def tracked(obj: object) -> bool:
    """Whether a full collection walks ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_a_serving_registry_keeps_its_stored_nodes_out_of_full_collections(
    app: FastAPI, clock: FakeClock
) -> None:
    registry = registry_of(app)
    registry.register(passport("before-start"))
    record = registry._index.get(registry.id_of("before-start"))
    assert record is not None
    assert tracked(record.record.passport)
    with serve(app):
        assert gc.get_freeze_count() > 0
        assert not tracked(record.record.passport)  # frozen at start-up
        tuning = GcTuning(
            nodes=lambda: len(registry._index), writes=lambda: registry.resource_version
        )
        tuning.freeze()
        assert not tuning.check()  # no write since
        for i in range(REFREEZE_MIN_WRITES):
            registry.register(passport(f"node-{i:04d}"))
        late = registry._index.get(registry.id_of("node-0999"))
        assert late is not None
        assert tracked(late.record.passport)
        assert tuning.check()
        assert not tracked(late.record.passport)
        assert not tuning.check()
    assert gc.get_freeze_count() == 0  # the server stopped: collectable again
    assert tracked(late.record.passport)


class CountingIndex(dict[Any, Any]):
    """A label index that records which labels a query looked up."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: list[Any] = []

    def get(self, key: Any, default: Any = None) -> Any:
        self.asked.append(key)
        return super().get(key, default)

    def __missing__(self, key: Any) -> Any:
        value = self[key] = set()
        return value


def labelled(registry: Registry, name: str, zone: int, team: int) -> None:
    registry.register(passport(name, labels={"zone": f"z{zone}", "team": f"t{team}"}))


def brute_force(registry: Registry, labels: dict[str, str]) -> list[str]:
    return [
        e.name
        for e in registry.list_nodes().items
        if all(e.labels.get(k) == v for k, v in labels.items())
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_matchlabels_stays_exact_through_churn(registry: Registry) -> None:
    rng = random.Random(14)
    names = [f"node-{i:03d}" for i in range(60)]
    for name in names:
        labelled(registry, name, rng.randrange(3), rng.randrange(4))
    queries = [{"zone": f"z{z}", "team": f"t{t}"} for z in range(3) for t in range(4)]
    queries.append({"zone": "z1", "team": "t2", "capability.python": "true"})
    for step in range(120):
        labels = queries[step % len(queries)]
        got = [e.name for e in registry.find_nodes(selector={"matchLabels": labels})]
        assert got == brute_force(registry, labels), (step, labels)
        name = rng.choice(names)
        change = rng.random()
        if change < 0.2:
            with contextlib.suppress(NotFoundError):
                registry.deregister(registry.id_of(name))
        else:  # a new node, or one moving to other labels
            labelled(registry, name, rng.randrange(3), rng.randrange(4))


def test_a_repeated_matchlabels_query_costs_its_result_not_n(registry: Registry) -> None:
    for i in range(2400):
        labelled(registry, f"node-{i:04d}", i % 8, i % 12)  # 24 combinations of 100
    index = registry._index
    selector = {"matchLabels": {"zone": "z3", "team": "t7"}}
    first = registry.find_nodes(selector=selector)
    assert len(first) == 100
    counting = CountingIndex(index._by_label)
    index._by_label = counting  # type: ignore[assignment]
    assert [e.name for e in registry.find_nodes(selector=selector)] == [e.name for e in first]
    assert counting.asked == []  # neither the zone's 300 nodes nor the team's 200 were read
    candidates = index._candidates(None, as_selector(selector))
    assert candidates is not None
    assert len(candidates) == 100  # what the full match then visits: the result
    labelled(registry, "node-0003", 3, 7)  # moves from (z3, t3) into the kept intersection
    assert len(registry.find_nodes(selector=selector)) == 101


def test_a_watch_from_now_sends_the_current_nodes_from_their_cached_json(
    app: FastAPI, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_of(app)
    fleet(registry)
    listed = http.get(f"{API}/nodepassports").json()["items"]  # encodes each version once
    encoded = encodes(monkeypatch)
    params = {"watch": "true", "timeoutSeconds": "1"}
    with http.stream("GET", f"{API}/nodepassports", params=params) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["type"] for line in lines] == ["ADDED"] * 4
    assert [line["object"] for line in lines] == listed
    assert encoded == []  # the list's bytes, not a new encode per watcher


@pytest.mark.parametrize("chunk", [1000, 2], ids=["whole", "streamed"])
def test_a_long_list_streams_the_same_json_and_leaves_out_what_cannot_be_sent(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(render, "STREAM_CHUNK", chunk)
    # What an older registry could have stored: a value no UTF-8 response carries.
    store = MemoryStore()
    app = create_app(AsyncRegistry(store, clock=clock), load_settings())
    for name in ("good-1", "good-2", "good-3"):
        store.create(NodeRecord(load_passport(passport(name)), T0), renewed_at=T0)
    bad = load_passport(passport("bad-0"))
    metadata = bad.metadata.model_copy(update={"annotations": {"note": "\ud800"}})
    store.create(NodeRecord(bad.model_copy(update={"metadata": metadata}), T0), renewed_at=T0)
    registry = registry_of(app)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        response = http.get(f"{API}/nodepassports")
        assert response.status_code == 200
        streamed = response.headers.get("transfer-encoding") == "chunked"
        assert streamed is (chunk == 2)
        found = registry.list_nodes()
        expected = list_to_object(found.items[1:], found.resource_version)  # bad-0 left out
        assert response.content == dumps(expected)


# -- #14, second pass: no read holds the loop for a time that grows with N ------------------


def stored(store: MemoryStore, count: int, *, shuffle: bool = False) -> None:
    """``count`` nodes put straight into ``store`` (one validated passport, copied with its
    own name and uid: 20,000 validations would take most of a minute)."""
    template = load_passport(passport("node-00000"))
    order = list(range(count))
    if shuffle:
        random.Random(14).shuffle(order)
    for i in order:
        uid = uuid.UUID(int=i + 1, version=4)
        labels = {"zone": f"z{i % 3}", "team": f"t{i % 7}"}
        update = {"name": f"node-{i:05d}", "uid": uid, "labels": labels}
        metadata = template.metadata.model_copy(update=update)
        node = template.model_copy(update={"metadata": metadata})
        store.create(NodeRecord(node, T0), renewed_at=T0)


def get(app: FastAPI, path: str, send: Callable[[dict[str, Any]], Awaitable[None]]) -> Any:
    """GET ``path`` straight through the ASGI app, on the caller's loop."""
    target, _, query = path.partition("?")
    asked = asyncio.Event()

    async def receive() -> dict[str, Any]:
        # The request once; then, as a server does, nothing until the client leaves (a
        # streamed response listens for that all along).
        if not asked.is_set():
            asked.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    return app(scope, receive, send)


def test_a_long_list_hands_the_loop_back_while_it_judges_the_nodes(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()
    stored(store, 20_000, shuffle=True)  # stored out of name order: the list sorts them
    built: list[tuple[int, int]] = []  # (entries built in one go, the ticker's count then)
    ticks = [0]
    entries = Registry._entries

    def counted(self: Registry, found: list[Any], *args: Any) -> Any:
        built.append((len(found), ticks[0]))
        return entries(self, found, *args)

    monkeypatch.setattr(Registry, "_entries", counted)
    body: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    async def run() -> None:
        app = create_app(AsyncRegistry(store, clock=clock), load_settings())

        async def ticker() -> None:  # a heartbeat's stand-in: runs whenever the loop is free
            while True:
                ticks[0] += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await get(app, f"{API}/nodepassports", send)
        task.cancel()

    asyncio.run(run())
    assert sum(size for size, _ in built) == 20_000
    assert max(size for size, _ in built) <= 1000  # no chunk grows with N
    seen = [tick for _, tick in built]
    assert all(b > a for a, b in itertools.pairwise(seen))  # the ticker ran between chunks
    names = [item["metadata"]["name"] for item in json.loads(b"".join(body))["items"]]
    assert names == sorted(names)
    assert len(names) == 20_000


QUERIES: list[dict[str, Any]] = [
    {},
    {"kind": "agent"},
    {"selector": {"matchLabels": {"zone": "z1"}}},  # one term: the index's set, unsorted
    {"selector": {"matchLabels": {"zone": "z1", "team": "t2"}}},  # the kept intersection
    {"selector": "zone in (z0,z2),team!=t3"},  # a match over candidates
    {"selector": "team!=t3"},  # a match over every node
    {"selector": "capability.python"},
    {"only_healthy": True},
    {"only_verified": True, "selector": "zone=z2"},
]


@pytest.mark.parametrize("query", QUERIES, ids=[json.dumps(q) for q in QUERIES])
def test_a_chunked_select_answers_what_the_sync_one_does(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, query: dict[str, Any]
) -> None:
    monkeypatch.setattr(aio, "SELECT_CHUNK", 7)
    monkeypatch.setattr(index, "SORT_AT_ONCE", 40)  # both ways of ordering the candidates
    store = MemoryStore()
    stored(store, 300, shuffle=True)

    async def run() -> None:
        registry = AsyncRegistry(store, clock=clock)
        sync = registry.sync
        for step in range(3):
            expected = sync.select(**query)
            got = await registry.select(**query)
            assert got == expected
            assert [e.name for e in got.items] == sorted(e.name for e in got.items)
            everyone = [e.name for e in sync.list_nodes().items]
            assert [e.name for e in await registry.find_nodes(**query)] == [
                n for n in everyone if n in {e.name for e in expected.items}
            ]
            # Churn: renames move a node in the order, relabels and removals too.
            sync.deregister(sync.id_of(f"node-{step:05d}"))
            moved = load_passport(passport(f"a-renamed-{step}", labels={"zone": "z1"}))
            sync.register(moved)
            clock.advance(21)  # some NOT_READY for only_healthy

    asyncio.run(run())


def test_a_selection_of_a_small_share_visits_its_candidates_not_every_node(
    clock: FakeClock,
) -> None:
    store = MemoryStore()
    stored(store, 20_000, shuffle=True)
    registry = Registry(store, clock=clock)
    # 2 of 21 (zone, team) combinations: ~1,900 nodes, more than SORT_AT_ONCE, under N / 8.
    selector = as_selector("zone=z0,team in (t0,t1)")
    scan = registry._index.scan(None, selector)
    expected = [e.name for e in registry.list_nodes().items if selector.matches(e.labels)]
    assert index.SORT_AT_ONCE < len(expected) < 20_000 // index.SCAN_SHARE
    assert len(scan.nodes) == len(expected)  # sorted, not every node scanned
    assert [v.record.name for v in scan.found()] == expected
    broad = registry._index.scan(None, as_selector("team!=t3"))  # most nodes: a scan
    assert len(broad.nodes) == 20_000


def test_the_index_keeps_every_node_in_name_order_through_churn(registry: Registry) -> None:
    rng = random.Random(7)
    names = [f"n-{rng.randrange(10**6):06d}" for _ in range(80)]
    for step in range(200):
        name = rng.choice(names)
        if rng.random() < 0.3:
            with contextlib.suppress(NotFoundError):
                registry.deregister(registry.id_of(name))
        else:
            labelled(registry, name, rng.randrange(3), rng.randrange(4))
        listed = [e.name for e in registry.list_nodes().items]
        assert listed == sorted(listed), step
        assert len(listed) == len(registry._index)


def watched(http: httpx.Client, since: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch from ``since``."""
    params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "10"}
    events: list[dict[str, Any]] = []
    with http.stream("GET", f"{API}/nodepassports", params=params) as response:
        for line in response.iter_lines():
            if line:
                events.append(json.loads(line))
            if len(events) == count:
                break
    return events


def test_a_watch_and_a_list_of_one_stored_version_encode_it_once_between_them(
    app: FastAPI, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_of(app)
    fleet(registry)
    names = ["pending-d", "plain-a", "unicode-b", "unready-c"]
    since = http.get(f"{API}/nodepassports").json()["metadata"]["resourceVersion"]
    encoded = encodes(monkeypatch)
    for name in names:
        registry.update_status(registry.id_of(name), current_tasks=3)
    events = watched(http, since, len(names))
    assert [e["type"] for e in events] == ["MODIFIED"] * len(names)
    assert encoded == names  # the watch encoded each new version once
    listed = http.get(f"{API}/nodepassports").json()["items"]
    assert encoded == names  # and the list joined those bytes: none encoded again
    assert [e["object"] for e in events] == listed  # the same objects either way
    # The other way round: a version listed first is not encoded again for a watch.
    since = http.get(f"{API}/nodepassports").json()["metadata"]["resourceVersion"]
    registry.update_status(registry.id_of("plain-a"), current_tasks=1)
    relisted = http.get(f"{API}/nodepassports").json()["items"]
    assert encoded[len(names) :] == ["plain-a"]
    (event,) = watched(http, since, 1)
    assert encoded[len(names) :] == ["plain-a"]
    assert event["object"] == relisted[1]


TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"


def encodings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What gets built from a stored version from now on: its Table cells, its object (as a
    document, or as the cached JSON's fragments)."""
    made: list[str] = []
    for module, name in [
        (table, "cells"),
        (table, "entry_to_object"),
        (objects, "entry_to_object"),
        (objects, "_add_metadata"),
        (objects, "_fragments"),
    ]:
        original = getattr(module, name)

        def counted(*args: Any, _original: Any = original, _name: str = name) -> Any:
            made.append(_name)
            return _original(*args)

        monkeypatch.setattr(module, name, counted)
    return made


@pytest.mark.parametrize("include", list(IncludeObject))
def test_a_table_list_joins_rows_each_stored_version_keeps(
    app: FastAPI,
    http: httpx.Client,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    include: IncludeObject,
) -> None:
    registry = registry_of(app)
    fleet(registry)
    made = encodings(monkeypatch)
    params = {"includeObject": include.value}
    for step in range(3):
        found = registry.list_nodes()
        expected = nodes_table(
            found.items, clock.now(), include=include, resource_version=found.resource_version
        )
        before = len(made)  # the expected table's own building left out
        response = http.get(f"{API}/nodepassports", params=params, headers={"Accept": TABLE})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json;as=Table")
        assert response.content == dumps(expected)  # byte for byte what JSONResponse made
        if step:
            assert made[before:] == []  # cells and objects from the kept bytes
        else:
            assert made[before:].count("cells") == 4  # once per stored version
        clock.advance(21)  # health and both ages move; the kept cells do not


def test_a_metadata_list_joins_what_each_stored_version_keeps(
    app: FastAPI, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_of(app)
    fleet(registry)
    made = encodings(monkeypatch)
    headers = {"Accept": METADATA_LIST}
    first = http.get(f"{API}/nodepassports", headers=headers)
    assert len(made) == 4
    found = registry.list_nodes()
    doc = list_to_object(found.items, found.resource_version)
    expected = {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": doc["metadata"],
        "items": [partial_object_metadata(item) for item in doc["items"]],
    }
    assert first.content == dumps(expected)
    before = len(made)
    assert http.get(f"{API}/nodepassports", headers=headers).content == first.content
    assert made[before:] == []
    registry.update_status(registry.id_of("plain-a"), current_tasks=2)
    http.get(f"{API}/nodepassports", headers=headers)
    assert len(made[before:]) == 1  # only the new version is encoded


def test_a_table_watch_and_a_table_list_share_each_versions_row(
    app: FastAPI, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_of(app)
    fleet(registry)
    since = http.get(f"{API}/nodepassports").json()["metadata"]["resourceVersion"]
    made = encodings(monkeypatch)
    registry.update_status(registry.id_of("plain-a"), current_tasks=2)
    params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "10"}
    with http.stream(
        "GET", f"{API}/nodepassports", params=params, headers={"Accept": TABLE}
    ) as response:
        line = next(line for line in response.iter_lines() if line)
    event = json.loads(line)
    assert event["type"] == "MODIFIED"
    (row,) = event["object"]["rows"]
    assert event["object"]["metadata"] == {"resourceVersion": str(registry.resource_version)}
    assert event["object"]["columnDefinitions"] == COLUMN_DEFINITIONS
    assert row["cells"][:5] == ["plain-a", "agent", "ALIVE", "Running", "2/4"]
    assert made.count("cells") == 1
    before = len(made)
    rows = http.get(f"{API}/nodepassports", headers={"Accept": TABLE}).json()["rows"]
    assert made[before:].count("cells") == 3  # the three other nodes' versions, not plain-a's
    assert rows[1] == row


def test_what_a_stored_version_keeps_adds_nothing_to_a_full_collection(
    app: FastAPI, http: httpx.Client
) -> None:
    registry = registry_of(app)
    fleet(registry)
    http.get(f"{API}/nodepassports")
    http.get(f"{API}/nodepassports", headers={"Accept": TABLE})
    http.get(f"{API}/nodepassports", headers={"Accept": METADATA_LIST})
    # A collection untracks a tuple holding only untracked values; a nested one, the next.
    gc.collect()
    gc.collect()
    for name in ("plain-a", "unicode-b", "unready-c", "pending-d"):
        versioned = registry._index.get(registry.id_of(name))
        assert versioned is not None
        kept = [value for key, value in versioned.memo.items() if isinstance(key, str)]
        assert len(kept) == 4  # the object's fragments, last seen, Table cells, metadata
        assert [v for v in kept if gc.is_tracked(v)] == [], name
