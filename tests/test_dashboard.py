"""The web dashboard (/ui) in a real headless Chromium against a real uvicorn server.

Servers run on a FakeClock started at the real time (the page measures "N s ago" with the
browser's clock) with the lifecycle controller's timer out of reach: transitions come from
``reconcile()`` called by the test. Every wait is bounded (Playwright's ``expect`` timeouts).

``NODE_REGISTRY_SCREENSHOT=docs/dashboard.png pytest tests/test_dashboard.py -k screenshot``
writes the README's screenshot; without the variable that test is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from fastapi import FastAPI

from conftest import passport, probe_result
from live_server import free_port, make_app, serve
from node_registry import FakeClock, Registry
from node_registry.kube.objects import entry_to_object
from node_registry.passport.objects import SERVER_METADATA, SERVER_STATUS, passport_of

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - CI installs it
    HAVE_PLAYWRIGHT = False

CHROMIUM = Path("/usr/bin/chromium")
if not HAVE_PLAYWRIGHT or not CHROMIUM.exists():  # pragma: no cover - CI installs both
    pytest.skip(
        "the dashboard tests need playwright (pip) and Debian's chromium at /usr/bin/chromium",
        allow_module_level=True,
    )

#: Headless, and nothing that reaches out to Google (this machine refuses it).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SETTINGS: dict[str, Any] = {"controller": {"period_seconds": 3600}}
ADMIN = "admin-token-0123456789abcdef"
NODE_TOKEN = "node-token-0123456789abcdef"
NODEPASSPORTS = "/apis/ai_team.io/v1/nodepassports"
#: What the page may ask the registry for: its own files, the nodepassports resource, and
#: /version and discovery. Never the older /nodes routes (#11: one wire format).
DISCOVERY = {"/version", "/api", "/apis", "/apis/ai_team.io", "/apis/ai_team.io/v1"}
#: Computed background colours of the health badges (style.css).
COLOURS = {
    "ALIVE": "rgb(218, 251, 225)",
    "NOT_READY": "rgb(255, 241, 194)",
    "OFFLINE": "rgb(207, 34, 46)",
}


@contextlib.contextmanager
def serve_on(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """``serve`` with a bound on shutdown: an open watch stream would hold it forever."""
    with serve(app, port=port, timeout_graceful_shutdown=1) as url:
        yield url


@dataclass
class Dash:
    app: FastAPI
    clock: FakeClock
    url: str

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.registry.sync
        return registry

    def register(self, name: str, **kwargs: Any) -> None:
        self.registry.register(passport(name, **kwargs))

    def age(self, seconds: float, *, keep: tuple[str, ...] = ()) -> None:
        """Let ``seconds`` pass, heartbeating ``keep``, and run one controller pass."""
        self.clock.advance(seconds)
        for name in keep:
            self.registry.heartbeat(self.registry.id_of(name))
        self.registry.reconcile()


def now_clock(offset: float = 0) -> FakeClock:
    return FakeClock(datetime.now(UTC) - timedelta(seconds=offset))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def dash() -> Iterator[Dash]:
    clock = now_clock()
    app = make_app(clock, **SETTINGS)
    with serve_on(app) as url:
        yield Dash(app, clock, url)


def allowed(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return True  # about:blank, data: URLs
    path = parts.path
    return (
        path in ("/", "/ui")
        or path.startswith("/ui/")
        or path in DISCOVERY
        or path == NODEPASSPORTS
        or path.startswith(f"{NODEPASSPORTS}/")
    )


@pytest.fixture
def requested() -> list[str]:
    """Every URL the page requested (filled by ``page``)."""
    return []


@pytest.fixture
def page(browser: Browser, requested: list[str]) -> Iterator[Page]:
    """A fresh browser context per test; uncaught page errors, CSP violations and a request
    outside the Kubernetes API (``allowed``) fail it."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.on("request", lambda request: requested.append(request.url))
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if "Content Security Policy" in message.text or message.text.startswith("dashboard:")
            else None
        ),
    )
    yield tab
    context.close()
    assert problems == []
    assert [url for url in requested if not allowed(url)] == []


def row(page: Page, name: str) -> Any:
    return page.locator(f'tr[data-node="{name}"]')


def badge(page: Page, name: str) -> Any:
    return row(page, name).locator(".health")


def background(locator: Any) -> str:
    colour: str = locator.evaluate("e => getComputedStyle(e).backgroundColor")
    return colour


def hash_params(page: Page) -> str:
    return page.url.partition("#")[2]


# -- the live table ---------------------------------------------------------------------------


def test_a_registered_node_appears_live_without_reload(dash: Dash, page: Page) -> None:
    page.goto(f"{dash.url}/")  # redirected to /ui/
    assert page.url == f"{dash.url}/ui/"
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator("#empty")).to_have_text("No nodes are registered.")
    page.evaluate("window.sameDocument = true")

    dash.register(
        "coder-01",
        labels={"zone": "eu-west-1", "tier": "gold"},
        capabilities=("code_generation", "review"),
    )
    node = row(page, "coder-01")
    expect(node).to_be_visible(timeout=2000)
    assert page.evaluate("window.sameDocument") is True

    cells = node.locator("td")
    expect(cells.nth(1)).to_have_text("agent")
    expect(badge(page, "coder-01")).to_have_text("ALIVE")
    assert background(badge(page, "coder-01")) == COLOURS["ALIVE"]
    expect(cells.nth(3)).to_have_text("Running")
    expect(cells.nth(4)).to_have_text("code_generationreview")
    expect(cells.nth(5)).to_contain_text("zone=eu-west-1")
    expect(cells.nth(5)).to_contain_text("tier=gold")
    expect(cells.nth(6)).to_contain_text("amqp://bus:5672")
    expect(cells.nth(8)).to_have_text("0 / 4")
    expect(page.locator('[data-counter="nodes"] .value')).to_have_text("1")
    expect(page.locator('[data-counter="ALIVE"] .value')).to_have_text("1")
    expect(page.locator('[data-kind="agent"]')).to_have_text("agent 1")

    # "N s ago" ticks by itself, and says where it comes from.
    age = cells.nth(7)
    expect(age).to_have_text(re.compile(r"^(just now|\d+ s ago)$"))
    first = age.text_content()
    expect(age).not_to_have_text(first or "", timeout=2500)
    assert "Heartbeats are not streamed" in (age.get_attribute("title") or "")

    # A status change and a deregistration arrive the same way.
    dash.registry.update_status(dash.registry.id_of("coder-01"), current_tasks=3)
    expect(cells.nth(8)).to_have_text("3 / 4", timeout=2000)
    dash.registry.deregister(dash.registry.id_of("coder-01"))
    expect(node).to_have_count(0, timeout=2000)
    assert page.evaluate("window.sameDocument") is True


def api_calls(requested: list[str]) -> list[tuple[str, dict[str, list[str]]]]:
    """(path, query) of each request the page sent to the API (not its own files)."""
    parts = [urlsplit(url) for url in requested]
    return [(p.path, parse_qs(p.query)) for p in parts if p.path.startswith("/apis/")]


def test_the_page_lists_and_watches_nodepassports_only(
    dash: Dash, page: Page, requested: list[str]
) -> None:
    dash.register("search-01", kind="tool")
    dash.register("coder-01")
    page.goto(f"{dash.url}/ui/#/?kind=tool")
    expect(row(page, "search-01")).to_be_visible()
    expect(row(page, "coder-01")).to_have_count(0)
    expect(page.locator("#conn")).to_have_text("live")
    page.goto(f"{dash.url}/ui/#/node/coder-01")
    expect(page.locator("#history-note")).to_contain_text("Replayed", timeout=4000)
    expect(page.locator("#conn")).to_have_text("live")

    calls = api_calls(requested)
    assert {path for path, _ in calls} == {NODEPASSPORTS}
    # The kind filter is a field selector; the watch resumes from the list's version.
    by_kind = [q for _, q in calls if q.get("fieldSelector") == ["metadata.nodeType=tool"]]
    assert [("watch" in q) for q in by_kind[:2]] == [False, True]
    assert by_kind[1]["resourceVersion"] == ["2"]
    assert by_kind[1]["allowWatchBookmarks"] == ["true"]
    # The node page lists and watches its node only, and replays its history from 1.
    by_name = [q for _, q in calls if q.get("fieldSelector") == ["metadata.name=coder-01"]]
    replay = [q for q in by_name if q.get("resourceVersion") == ["1"]]
    assert len(replay) == 1
    assert replay[0]["watch"] == ["true"]
    assert any("watch" not in q for q in by_name)
    assert any(q.get("resourceVersion") == ["2"] and "watch" in q for q in by_name)

    # search-01's registration is version 1, older than any watch can start from ("0" asks
    # for the current state): its ADDED comes from metadata.creationTimestamp, and once.
    page.goto(f"{dash.url}/ui/#/node/search-01")
    events = page.locator("#events tbody tr")
    expect(events).to_have_count(1)
    expect(events.nth(0)).to_contain_text("ADDED")
    expect(events.nth(0)).to_contain_text("from metadata.creationTimestamp")
    expect(events.nth(0).locator("td").nth(4)).to_have_text("—")
    expect(page.locator("#history-note")).to_contain_text("Replayed")
    page.goto("about:blank")


def test_a_silent_node_turns_not_ready_then_offline_then_disappears(dash: Dash, page: Page) -> None:
    dash.register("coder-01")
    dash.register("coder-02")
    page.goto(f"{dash.url}/ui/")
    expect(badge(page, "coder-01")).to_have_text("ALIVE")

    dash.age(21, keep=("coder-02",))
    expect(badge(page, "coder-01")).to_have_text("NOT_READY", timeout=2000)
    assert background(badge(page, "coder-01")) == COLOURS["NOT_READY"]
    expect(row(page, "coder-01").locator("td").nth(3)).to_have_text("NotReady")
    expect(badge(page, "coder-02")).to_have_text("ALIVE")
    expect(page.locator('[data-counter="NOT_READY"] .value')).to_have_text("1")
    expect(page.locator('[data-counter="schedulable"] .value')).to_have_text("1")

    dash.age(10, keep=("coder-02",))
    expect(badge(page, "coder-01")).to_have_text("OFFLINE", timeout=2000)
    assert background(badge(page, "coder-01")) == COLOURS["OFFLINE"]
    expect(row(page, "coder-01").locator("td").nth(3)).to_have_text("Offline")
    title = row(page, "coder-01").locator("td.age").get_attribute("title") or ""
    assert "Removed at about" in title
    expect(page.locator('[data-counter="OFFLINE"] .value')).to_have_text("1")

    dash.age(60, keep=("coder-02",))  # ttl + grace period since its last heartbeat
    expect(row(page, "coder-01")).to_have_count(0, timeout=2000)
    expect(badge(page, "coder-02")).to_have_text("ALIVE")
    expect(page.locator('[data-counter="nodes"] .value')).to_have_text("1")


def test_filters_narrow_the_table_and_live_in_the_url(dash: Dash, page: Page) -> None:
    dash.register("coder-eu", labels={"zone": "eu-west-1"})
    dash.register("coder-us", labels={"zone": "us-east-1"})
    dash.register("search-eu", kind="tool", labels={"zone": "eu-west-1"})
    page.goto(f"{dash.url}/ui/")
    expect(page.locator("#nodes tbody tr")).to_have_count(3)

    page.fill("#selector", "zone=eu-west-1")
    page.press("#selector", "Enter")
    expect(page.locator("#nodes tbody tr")).to_have_count(2)
    expect(row(page, "coder-us")).to_have_count(0)
    assert hash_params(page) == "/?labelSelector=zone%3Deu-west-1"

    page.select_option("#kind", "tool")
    expect(page.locator("#nodes tbody tr")).to_have_count(1)
    expect(row(page, "search-eu")).to_be_visible()
    assert hash_params(page) == "/?kind=tool&labelSelector=zone%3Deu-west-1"

    # The filtered watch keeps the view exact: a non-matching node never shows up.
    dash.register("search-us", kind="tool", labels={"zone": "us-east-1"})
    dash.register("crawler-eu", kind="tool", labels={"zone": "eu-west-1"})
    expect(row(page, "crawler-eu")).to_be_visible(timeout=2000)
    expect(row(page, "search-us")).to_have_count(0)

    # Reloading (or sharing the URL) keeps the view.
    page.reload()
    expect(page.locator("#selector")).to_have_value("zone=eu-west-1")
    expect(page.locator("#kind")).to_have_value("tool")
    expect(page.locator("#nodes tbody tr")).to_have_count(2)

    # Only healthy: computed in the page from `schedulable`, following health changes.
    page.select_option("#kind", "")
    expect(page.locator("#nodes tbody tr")).to_have_count(3)
    dash.age(21, keep=("coder-eu", "coder-us", "search-eu"))
    expect(badge(page, "crawler-eu")).to_have_text("NOT_READY", timeout=2000)
    page.check("#healthy")
    expect(page.locator("#nodes tbody tr")).to_have_count(2)
    expect(row(page, "crawler-eu")).to_have_count(0)
    assert "healthy=true" in hash_params(page)

    # The registry's 400 Status, inline; a valid selector clears it.
    page.fill("#selector", "zone in (")
    page.press("#selector", "Enter")
    error = page.locator("#selector-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text('invalid label selector "zone in ("')
    expect(error).to_contain_text("position 9")
    expect(page.locator("#nodes tbody tr")).to_have_count(0)
    assert "labelSelector=zone+in+%28" in hash_params(page)
    page.fill("#selector", "zone notin (us-east-1)")
    page.press("#selector", "Enter")
    expect(error).to_be_hidden()
    expect(page.locator("#nodes tbody tr")).to_have_count(2)


def test_the_node_page_shows_passport_conditions_and_events(dash: Dash, page: Page) -> None:
    dash.register("other-01")  # other nodes' events stay off this node's page
    doc = passport("coder-01", capabilities=("code_generation", "python"))
    doc["metadata"]["annotations"] = {
        "note": "a: b # not a comment",
        "flag": "yes",
        "version": "1.10",
        "empty": "",
        "lines": "one\ntwo",
        "unicode": "Zürich → 東京",
    }
    dash.registry.register(doc)
    node_id = dash.registry.id_of("coder-01")
    dash.registry.update_status(
        node_id,
        current_tasks=2,
        conditions=[{"type": "DiskPressure", "status": "False", "reason": "DiskOK"}],
    )
    dash.age(21)  # NOT_READY before the page opens: it comes from the watch history
    page.goto(f"{dash.url}/ui/")
    row(page, "coder-01").locator("a").click()
    assert hash_params(page) == "/node/coder-01"

    # The passport as the node sent it; the registry's fields apart; the two are the object.
    yaml_text = page.locator("#passport-yaml")
    expect(yaml_text).to_contain_text("name: coder-01")
    expect(yaml_text).to_contain_text("- name: code_generation")
    expect(yaml_text).to_contain_text("- name: python")
    expect(page.locator("#registry-yaml")).to_contain_text("healthState: NOT_READY")
    obj = json.loads(json.dumps(entry_to_object(dash.registry.get_by_name("coder-01"))))
    shown = yaml.safe_load(yaml_text.text_content() or "")
    added = yaml.safe_load(page.locator("#registry-yaml").text_content() or "")
    assert shown == passport_of(obj)
    assert shown["metadata"]["annotations"] == doc["metadata"]["annotations"]
    assert set(added) == {"metadata", "status"}
    assert set(added["metadata"]) <= set(SERVER_METADATA)
    # status.verification appears once a verifier recorded results (test_verification_wiring).
    assert set(added["status"]) == set(SERVER_STATUS) - {"verification"}
    shown["metadata"].update(added["metadata"])
    shown["status"].update(added["status"])
    assert shown == obj

    conditions = page.locator("#conditions tbody")
    expect(conditions.locator('[data-condition="Ready"]')).to_contain_text("Unknown")
    expect(conditions.locator('[data-condition="Ready"]')).to_contain_text("NodeStatusUnknown")
    expect(conditions.locator('[data-condition="DiskPressure"]')).to_contain_text("DiskOK")
    expect(page.locator("#facts")).to_contain_text("2 / 4")

    # Replayed from the watch history; a health transition is a MODIFIED whose healthState
    # changed (the watch has no other type for it).
    events = page.locator("#events tbody tr")
    expect(events).to_have_count(3)  # newest first
    expect(events.nth(0)).to_contain_text("MODIFIED")
    expect(events.nth(0)).to_contain_text("ALIVE → NOT_READY")
    expect(events.nth(0)).to_have_attribute("data-transition", "ALIVE>NOT_READY")
    expect(events.nth(1)).to_contain_text("MODIFIED")
    expect(events.nth(1)).not_to_contain_text("→")
    expect(events.nth(1).locator("td").nth(4)).to_have_text("3")
    expect(events.nth(2)).to_contain_text("ADDED")
    expect(events.nth(2).locator("td").nth(4)).to_have_text("2")
    assert events.nth(2).locator("td").first.get_attribute("title") == "status.registeredAt"
    expect(page.locator("#history-note")).to_contain_text("Replayed from the registry's watch")

    # Live on this page too: a heartbeat brings it back, the controller records it.
    dash.age(1, keep=("coder-01",))
    expect(events).to_have_count(4, timeout=2000)
    expect(events.nth(0)).to_contain_text("MODIFIED")
    expect(events.nth(0)).to_contain_text("NOT_READY → ALIVE")
    expect(events.nth(0)).to_contain_text("heartbeats resumed")
    expect(page.locator(".node-header .health")).to_have_text("ALIVE")
    # The registry's Ready=Unknown verdict is gone; the node's own conditions remain.
    expect(conditions.locator('[data-condition="Ready"]')).to_have_count(0)
    expect(conditions.locator('[data-condition="DiskPressure"]')).to_contain_text("DiskOK")

    dash.registry.deregister(node_id)
    expect(page.locator("#node-notice")).to_contain_text("removed from the registry", timeout=2000)
    expect(events.nth(0)).to_contain_text("DELETED")

    page.click("text=← all nodes")
    expect(row(page, "other-01")).to_be_visible()
    expect(row(page, "coder-01")).to_have_count(0)


def test_the_node_page_shows_verification_and_trust(dash: Dash, page: Page) -> None:
    """#12: each claim's state as the verifier judged it, and whether the node is Trusted,
    live as results are recorded."""
    dash.register("coder-01", capabilities=("code_generation", "python"))
    page.goto(f"{dash.url}/ui/#/node/coder-01")
    claims = page.locator("#capabilities tbody")
    trusted = page.locator("#trusted")
    expect(claims.locator("tr")).to_have_count(2)
    for name in ("code_generation", "python"):
        expect(claims.locator(f'[data-capability="{name}"]')).to_have_attribute(
            "data-state", "Unverified"
        )
    expect(trusted).to_have_text("yes (nothing probed yet)")

    node_id = dash.registry.id_of("coder-01")
    verified = probe_result(dash.registry, "coder-01", "python", "Verified")
    dash.registry.record_verification(node_id, [verified])
    python = claims.locator('[data-capability="python"]')
    expect(python).to_have_attribute("data-state", "Verified", timeout=2000)
    expect(python).to_contain_text("Passed")
    expect(python).to_contain_text("1 probe passed")
    expect(trusted).to_have_text("yes")

    failed = probe_result(dash.registry, "coder-01", "code_generation", "Failed")
    dash.registry.record_verification(node_id, [failed])
    code = claims.locator('[data-capability="code_generation"]')
    expect(code).to_have_attribute("data-state", "Failed", timeout=2000)
    expect(code).to_contain_text("CheckFailed")
    expect(code).to_contain_text("output did not match")
    expect(trusted).to_have_text("no — failed: code_generation")
    assert background(trusted) == "rgba(0, 0, 0, 0)"  # a coloured word, not a badge
    assert trusted.evaluate("e => getComputedStyle(e).color") == "rgb(207, 34, 46)"
    # The registry's Trusted condition shows with the others.
    condition = page.locator('#conditions tbody [data-condition="Trusted"]')
    expect(condition).to_contain_text("False")
    expect(condition).to_contain_text("CapabilityVerificationFailed")

    # A changed claim is unverified again until it is probed: the old result speaks no more.
    dash.registry.set_capabilities(
        node_id, [{"name": "code_generation", "version": "2.0"}, {"name": "python"}]
    )
    expect(code).to_have_attribute("data-state", "Unverified", timeout=2000)
    expect(code).not_to_contain_text("CheckFailed")
    expect(trusted).to_have_text("yes")


def test_a_watch_that_falls_behind_lists_again(page: Page) -> None:
    # History and watcher capacity of one event: a burst overflows the page's watch, which
    # gets an ERROR (410 Expired) event and must list again to catch up.
    app = make_app(now_clock(), watch={"history_size": 1}, **SETTINGS)
    registry: Registry = app.state.registry.sync
    lists: list[str] = []
    page.on(
        "request",
        lambda request: (
            lists.append(request.url)
            if f"{NODEPASSPORTS}?" in request.url and "watch=" not in request.url
            else None
        ),
    )
    with serve_on(app) as url:
        page.goto(f"{url}/ui/")
        expect(page.locator("#conn")).to_have_text("live")
        assert len(lists) == 1
        for i in range(20):
            registry.register(passport(f"burst-{i:02d}"))
        expect(page.locator("#nodes tbody tr")).to_have_count(20, timeout=4000)
        assert len(lists) >= 2
        expect(page.locator("#conn")).to_have_text("live")

        # The node page cannot replay a history that is gone, and says so; the registration
        # still shows, from metadata.creationTimestamp.
        page.goto(f"{url}/ui/#/node/burst-07")
        expect(page.locator("#passport-yaml")).to_contain_text("name: burst-07")
        expect(page.locator("#history-note")).to_contain_text("no longer reaches back")
        added = page.locator('#events tbody tr[data-event="ADDED"]')
        expect(added).to_contain_text("from metadata.creationTimestamp")
        expect(added.locator("td").nth(4)).to_have_text("—")
        page.goto("about:blank")


# -- tokens and outages --------------------------------------------------------------------------


def test_a_registry_with_tokens_prompts_for_one(page: Page, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"token": ADMIN, "role": "admin", "name": "ops"},
                    {"token": NODE_TOKEN, "role": "node", "node": "coder-01"},
                ]
            }
        )
    )
    app = make_app(now_clock(), server={"tokens_file": tokens}, **SETTINGS)
    app.state.registry.sync.register(passport("coder-01"))
    with serve_on(app) as url:
        page.goto(f"{url}/ui/")
        dialog = page.locator("#login")
        expect(dialog).to_be_visible()
        expect(page.locator("#conn")).to_have_text("token required")

        page.fill("#login-token", "not-a-token-of-this-registry")
        page.press("#login-token", "Enter")
        expect(page.locator("#login-error")).to_contain_text("unknown bearer token")
        page.fill("#login-token", NODE_TOKEN)
        page.press("#login-token", "Enter")
        expect(page.locator("#login-error")).to_contain_text("may not read")

        page.fill("#login-token", ADMIN)
        page.press("#login-token", "Enter")
        expect(dialog).to_be_hidden()
        expect(row(page, "coder-01")).to_be_visible()
        expect(page.locator("#conn")).to_have_text("live")
        assert page.evaluate("sessionStorage.getItem('node-registry.token')") == ADMIN

        page.reload()  # the token stays for the tab's session
        expect(row(page, "coder-01")).to_be_visible()
        expect(dialog).to_be_hidden()

        page.click("#signout")
        expect(dialog).to_be_visible()
        page.goto("about:blank")  # close the watch before the server stops


def test_a_lost_registry_shows_a_banner_and_the_page_catches_up(page: Page) -> None:
    port = free_port()
    first = make_app(now_clock(), **SETTINGS)
    first.state.registry.sync.register(passport("old-node"))
    with serve_on(first, port) as url:
        page.goto(f"{url}/ui/")
        expect(row(page, "old-node")).to_be_visible()
        expect(page.locator("#banner")).to_be_hidden()

    banner = page.locator("#banner")
    expect(banner).to_be_visible(timeout=4000)
    expect(banner).to_contain_text("Disconnected — retrying")
    expect(banner).to_contain_text("stale")
    expect(page.locator("#conn")).to_have_text("disconnected")
    expect(row(page, "old-node")).to_be_visible()  # the last known state stays on screen

    second = make_app(now_clock(), **SETTINGS)
    second.state.registry.sync.register(passport("new-node", kind="tool"))
    with serve_on(second, port):
        expect(row(page, "new-node")).to_be_visible(timeout=6000)
        expect(row(page, "old-node")).to_have_count(0)
        expect(banner).to_be_hidden()
        expect(page.locator("#conn")).to_have_text("live")
        # ...and it follows the new registry's watch.
        second.state.registry.sync.register(passport("newer-node"))
        expect(row(page, "newer-node")).to_be_visible(timeout=2000)
        page.goto("about:blank")


# -- the README's screenshot ------------------------------------------------------------------

FLEET: list[tuple[str, str, tuple[str, ...], dict[str, str]]] = [
    ("orchestrator-main", "orchestrator", ("planning", "task_routing"), {"zone": "eu-west-1"}),
    ("orchestrator-standby", "orchestrator", ("planning", "task_routing"), {"zone": "us-east-1"}),
    *[
        (
            f"agent-coder-{i:02d}",
            "agent",
            ("code_generation", "python", "go") if i % 2 else ("code_generation", "python"),
            {"zone": "eu-west-1" if i % 3 else "us-east-1", "tier": "gpu" if i < 4 else "cpu"},
        )
        for i in range(1, 11)
    ],
    *[
        (
            f"agent-reviewer-{i:02d}",
            "agent",
            ("code_review", "security_audit"),
            {"zone": "eu-west-1" if i % 2 else "us-east-1"},
        )
        for i in range(1, 7)
    ],
    *[
        (f"agent-writer-{i:02d}", "agent", ("documentation", "translation"), {"zone": "eu-west-1"})
        for i in range(1, 5)
    ],
    *[
        (f"tool-search-{i:02d}", "tool", ("web_search",), {"zone": "us-east-1"})
        for i in range(1, 4)
    ],
    ("tool-sandbox-01", "tool", ("code_execution",), {"zone": "eu-west-1"}),
    ("tool-sandbox-02", "tool", ("code_execution",), {"zone": "us-east-1"}),
    ("storage-vectors-01", "storage", ("vector_store", "embeddings"), {"zone": "eu-west-1"}),
    ("storage-artifacts-01", "storage", ("object_store",), {"zone": "eu-west-1"}),
    ("gateway-a2a-01", "gateway", ("a2a_bridge",), {"zone": "eu-west-1"}),
    ("monitoring-prom-01", "monitoring", ("metrics", "alerting"), {"zone": "eu-west-1"}),
    ("external-partner-01", "external", ("translation",), {"zone": "us-east-1"}),
]
OFFLINE_NODES = ("agent-coder-07", "tool-search-03", "external-partner-01")
NOT_READY_NODES = ("agent-reviewer-05", "agent-writer-04", "storage-artifacts-01")


@pytest.mark.skipif(
    not os.environ.get("NODE_REGISTRY_SCREENSHOT"),
    reason="set NODE_REGISTRY_SCREENSHOT=docs/dashboard.png to write the screenshot",
)
def test_screenshot(page: Page) -> None:
    clock = now_clock(offset=40)
    app = make_app(clock, protection={"enabled": False}, **SETTINGS)
    registry: Registry = app.state.registry.sync
    for name, kind, capabilities, labels in FLEET:
        resources = {"cpu": "8", "memory": "32Gi", "gpu": "1"} if "gpu" in labels.values() else None
        registry.register(
            passport(name, kind=kind, capabilities=capabilities, labels=labels, resources=resources)
        )
    alive = [name for name, *_ in FLEET if name not in OFFLINE_NODES + NOT_READY_NODES]
    for i, name in enumerate(alive):
        registry.update_status(registry.id_of(name), current_tasks=i % 4)
    clock.advance(12)  # the NotReady ones heartbeat last 28 s before "now", the Offline 40 s
    for name in NOT_READY_NODES:
        registry.heartbeat(registry.id_of(name))
    for second in range(28):
        clock.advance(1)
        for name in alive[second % 3 :: 3]:
            registry.heartbeat(registry.id_of(name))
    registry.reconcile()
    with serve_on(app) as url:
        page.goto(f"{url}/ui/#/?sort=health")
        expect(page.locator("#nodes tbody tr")).to_have_count(len(FLEET))
        expect(page.locator('[data-counter="OFFLINE"] .value')).to_have_text("3")
        page.wait_for_timeout(1200)  # let the "N s ago" column tick once
        target = Path(os.environ["NODE_REGISTRY_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target))
        page.goto("about:blank")
