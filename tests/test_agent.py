"""The node runtime in-process: passport building, and its state machine against a real server.

The agent's time is fake: ``Steps`` stands in for its sleep, records every pause and lets the
agent through one pause at a time, so each test walks the state machine step by step. The
server is real (uvicorn in a thread, on a FakeClock), and reachability is switched by a
transport (``Switch``), so outages and recoveries happen exactly when a test says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
import types
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from fastapi import FastAPI

from conftest import passport
from live_server import free_port, make_app, serve
from node_registry import FakeClock
from node_registry.agent import (
    AgentEvent,
    AgentEventKind,
    NodeAgent,
    build_passport,
    detect_resources,
)
from node_registry.agent.resources import gpu_count, memory_quantity
from node_registry.agent.timing import BACKOFF_MAX, backoff_delay, renewal_delay, start_delay
from node_registry.client import AsyncRegistryClient, RegistryClient
from node_registry.client.backoff import ceiling
from node_registry.client.objects import RegistryEntry
from node_registry.errors import (
    ConfigError,
    NotFoundError,
    RegistryUnreachableError,
    UnsupportedVersionError,
    ValidationError,
)
from node_registry.passport import Condition, NodePassport, Phase
from node_registry.quantity import parse_quantity

WAIT = 10.0  # real seconds any harness wait may take before the test fails
SEED = 7


# -- harness ---------------------------------------------------------------------------


class Steps:
    """A fake ``sleep``: records each pause, then holds the agent until it is released.

    The agent's time never passes; the harness polls (1 ms, real) only to hand control back.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._budget = 0
        self._lock = threading.Lock()

    async def __call__(self, delay: float) -> None:
        with self._lock:
            self.delays.append(delay)
        while True:
            with self._lock:
                if self._budget > 0:
                    self._budget -= 1
                    return
            await asyncio.sleep(0.001)

    def release(self, count: int = 1) -> None:
        with self._lock:
            self._budget += count

    def _reached(self, count: int) -> bool:
        with self._lock:
            return len(self.delays) >= count

    def wait_for(self, count: int) -> list[float]:
        """Block (real time, bounded) until the agent has paused ``count`` times."""
        deadline = time.monotonic() + WAIT
        while not self._reached(count):
            assert time.monotonic() < deadline, f"agent paused {len(self.delays)}, not {count}"
            time.sleep(0.001)
        return list(self.delays)

    async def until(self, count: int) -> list[float]:
        deadline = time.monotonic() + WAIT
        while not self._reached(count):
            assert time.monotonic() < deadline, f"agent paused {len(self.delays)}, not {count}"
            await asyncio.sleep(0.001)
        return list(self.delays)

    async def step(self) -> list[float]:
        """Let the agent through its current pause; return once it pauses again."""
        count = len(self.delays)
        self.release()
        return await self.until(count + 1)


class Switch(httpx.AsyncBaseTransport):
    """A real transport with an off switch: off, every request fails as if refused."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("switched off by the test", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Recorder:
    """An AgentClient that records the calls it passes on to a real client."""

    def __init__(self, inner: AsyncRegistryClient) -> None:
        self.inner = inner
        self.calls: list[tuple[str, Any]] = []

    @property
    def endpoint(self) -> str:
        return self.inner.endpoint

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    async def register(self, passport: NodePassport | Mapping[str, Any]) -> RegistryEntry:
        self.calls.append(("register", passport))
        return await self.inner.register(passport)

    async def heartbeat(self, name: str) -> datetime:
        self.calls.append(("heartbeat", name))
        return await self.inner.heartbeat(name)

    async def update_status(
        self,
        name: str,
        *,
        phase: Phase | str | None = None,
        conditions: Iterable[Condition | Mapping[str, Any]] | None = None,
        current_tasks: int | None = None,
    ) -> RegistryEntry:
        given = list(conditions or [])
        self.calls.append(("status", {"phase": phase, "conditions": given, "tasks": current_tasks}))
        return await self.inner.update_status(
            name, phase=phase, conditions=given, current_tasks=current_tasks
        )

    async def deregister(self, name: str) -> None:
        self.calls.append(("deregister", name))
        await self.inner.deregister(name)


class Server:
    """A live server on a FakeClock, and a sync client to look at it."""

    def __init__(self, app: FastAPI, url: str, clock: FakeClock) -> None:
        self.app = app
        self.url = url
        self.clock = clock
        self.client = RegistryClient(url, retries=0)

    def get(self, name: str) -> RegistryEntry:
        return self.client.get(name)

    def absent(self, name: str) -> bool:
        try:
            self.client.get(name)
        except NotFoundError:
            return True
        return False

    def reconcile(self) -> None:
        """One lifecycle controller pass, now."""
        self.app.state.registry.sync.reconcile()


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent reads NODE_REGISTRY_URL/_TOKEN and the heartbeat interval from the
    # environment; the one running the tests must not steer them.
    for name in ("NODE_REGISTRY_URL", "NODE_REGISTRY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NODE_REGISTRY_HEARTBEAT__INTERVAL_SECONDS", raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    clock = FakeClock()
    app = make_app(clock=clock)
    with serve(app) as url:
        srv = Server(app, url, clock)
        try:
            yield srv
        finally:
            srv.client.close()


def unique(prefix: str) -> dict[str, Any]:
    """A fresh passport (its own name and uid), so tests share one server safely."""
    return passport(f"{prefix}-{uuid.uuid4().hex[:8]}", phase="Pending")


def make_agent(
    doc: Mapping[str, Any], *, steps: Steps, events: list[AgentEvent], **kwargs: Any
) -> NodeAgent:
    kwargs.setdefault("interval", 10.0)
    kwargs.setdefault("detect", False)
    # The first registration's jitter has its own test; elsewhere it would only add a pause.
    kwargs.setdefault("start_jitter", 0.0)
    return NodeAgent(
        doc,
        sleep=steps,
        clock=FakeClock(),
        rng=random.Random(SEED),
        on_event=events.append,
        **kwargs,
    )


@contextlib.asynccontextmanager
async def recorded(url: str, switch: Switch | None = None) -> AsyncIterator[Recorder]:
    async with AsyncRegistryClient(url, retries=0, timeout=5, transport=switch) as client:
        yield Recorder(client)


def no_events() -> list[AgentEvent]:
    return []


def kinds(events: list[AgentEvent]) -> list[AgentEventKind]:
    return [e.kind for e in events]


def ready_of(entry: RegistryEntry) -> Condition:
    condition = entry.passport.status.condition("Ready")
    assert condition is not None
    return condition


def expected_renewals(count: int, interval: float = 10.0) -> list[float]:
    rng = random.Random(SEED)
    return [renewal_delay(interval, rng) for _ in range(count)]


def replay(*pauses: str | int, interval: float = 10.0) -> list[float]:
    """The agent's pauses as its seeded rng draws them, in order: ``"renew"`` for a renewal,
    a number ``n`` for the backoff after ``n`` failures (or ``NotFound``s) in a row."""
    rng = random.Random(SEED)
    return [
        renewal_delay(interval, rng) if p == "renew" else backoff_delay(int(p), rng) for p in pauses
    ]


# -- timing ----------------------------------------------------------------------------


CEILINGS = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 7.0, 7.0, 7.0]


def test_backoff_is_full_jitter_under_a_ceiling_doubling_from_200ms_to_7s() -> None:
    rng = random.Random(3)
    for failures, top in enumerate(CEILINGS, start=1):
        assert ceiling(failures) == top
        draws = [backoff_delay(failures, rng) for _ in range(300)]
        assert 0 <= min(draws) < top / 4
        assert top * 3 / 4 < max(draws) <= top
    assert ceiling(10**9) == BACKOFF_MAX
    assert 0 <= backoff_delay(10**9, rng) <= BACKOFF_MAX


def test_a_fleet_that_failed_together_retries_spread_out() -> None:
    # #14: a plain doubling sends every node of a fleet back at the same instant (0.2 s,
    # 0.6 s, 1.4 s... after the failure); full jitter spreads each round over its ceiling.
    fleet = [random.Random(n) for n in range(1000)]
    first = [backoff_delay(1, rng) for rng in fleet]
    assert len({round(d, 3) for d in first}) > 150
    # Each tenth of the window gets its share, give or take: no burst anywhere in it.
    buckets = [sum(1 for d in first if i * 0.02 <= d < (i + 1) * 0.02) for i in range(10)]
    assert min(buckets) > 60, buckets


def test_the_first_registration_is_jittered(server: Server) -> None:
    steps, events = Steps(), no_events()
    doc = unique("start")
    name = doc["metadata"]["name"]

    async def scenario() -> None:
        async with make_agent(
            doc, steps=steps, events=events, endpoints=server.url, start_jitter=1.0
        ) as agent:
            await steps.until(1)
            assert not agent.registered  # still waiting its turn
            assert server.absent(name)
            await steps.step()
            assert agent.registered

    asyncio.run(scenario())
    rng = random.Random(SEED)
    assert steps.delays[:2] == [rng.uniform(0.0, 1.0), renewal_delay(10.0, rng)]
    # A fleet powered on together: spread over the second, not all at its start.
    starts = [start_delay(1.0, random.Random(n)) for n in range(500)]
    assert 0.0 <= min(starts) < 0.05
    assert 0.95 < max(starts) <= 1.0
    assert start_delay(0.0, random.Random(1)) == 0.0  # none asked: no pause, no draw
    with pytest.raises(ConfigError, match="start_jitter"):
        NodeAgent(doc, endpoints=server.url, detect=False, start_jitter=-1)


def test_renewals_are_jittered_within_ten_percent() -> None:
    rng = random.Random(1)
    delays = [renewal_delay(10.0, rng) for _ in range(1000)]
    assert all(9.0 <= d <= 11.0 for d in delays)
    assert max(delays) - min(delays) > 1.5  # jittered, not constant


# -- resources and the passport --------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "quantity"),
    [
        (16 * 1024**3, "16Gi"),
        (16012 * 1024**2 + 12345, "16012Mi"),
        (1024**2 - 1, "0Mi"),
        (0, "0Mi"),
    ],
)
def test_memory_is_rounded_down_to_mebibytes(total: int, quantity: str) -> None:
    assert memory_quantity(total) == quantity


def test_detect_resources_reads_this_machine() -> None:
    found = detect_resources(nvml=_FakeNvml(0))
    assert found["cpu"] == str(psutil.cpu_count(logical=True))
    memory = parse_quantity(found["memory"])
    assert 0 < memory <= psutil.virtual_memory().total
    assert "gpu" not in found  # no device: no entry, not gpu: "0"


class _FakeNvml(types.SimpleNamespace):
    """A stand-in for the pynvml module."""

    def __init__(self, count: int, *, broken: bool = False) -> None:
        super().__init__(shutdowns=0)
        self.count = count
        self.broken = broken

    def nvmlInit(self) -> None:
        if self.broken:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1


def test_gpus_are_counted_through_nvml() -> None:
    nvml = _FakeNvml(2)
    assert detect_resources(nvml=nvml)["gpu"] == "2"
    assert nvml.shutdowns == 1
    assert gpu_count(_FakeNvml(4, broken=True)) == 0
    assert "gpu" not in detect_resources(nvml=_FakeNvml(4, broken=True))


def test_gpu_count_without_pynvml_is_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert gpu_count() == 0


DETECTED = {"cpu": "64", "memory": "251Gi", "gpu": "8", "ephemeral-storage": "1Ti"}


def test_file_values_win_over_detected_ones() -> None:
    doc = passport("merge-01", resources={"cpu": "4"}, labels={"zone": "a", "gpu": "1"})
    built = build_passport(doc, detected=DETECTED)
    assert built.spec.resources == {
        "cpu": "4",  # written: wins
        "memory": "251Gi",  # detected: filled in
        "ephemeral-storage": "1Ti",
    }
    # gpu is already a label of the node: a detected gpu: "8" would contradict it.
    assert "gpu" not in built.spec.resources
    assert built.metadata.labels == {"zone": "a", "gpu": "1"}


def test_detected_resources_fill_an_empty_spec() -> None:
    doc = passport("merge-02", resources={})
    assert build_passport(doc, detected={"cpu": "2"}).spec.resources == {"cpu": "2"}
    assert build_passport(doc, detected=None).spec.resources == {}


def test_passport_from_yaml_json_and_model(tmp_path: Path) -> None:
    doc = passport("files-01")
    as_yaml = tmp_path / "node.yaml"
    as_yaml.write_text(yaml.safe_dump(doc), encoding="utf-8")
    as_json = tmp_path / "node.json"
    as_json.write_text(json.dumps(doc), encoding="utf-8")
    model = NodePassport.model_validate(doc)
    for source in (as_yaml, str(as_json), model, doc):
        built = build_passport(source, detected={"memory": "1Gi"})
        assert built.metadata.name == "files-01"
        assert built.spec.resources == {"cpu": "4", "memory": "8Gi"}  # the file's memory wins


def test_agent_uses_the_detector_unless_told_not_to() -> None:
    doc = passport("detect-01", resources={"cpu": "1"})
    agent = NodeAgent(doc, interval=1, detector=lambda: {"cpu": "32", "memory": "2Gi"})
    assert agent.passport.spec.resources == {"cpu": "1", "memory": "2Gi"}
    agent = NodeAgent(doc, interval=1, detect=False, detector=lambda: {"memory": "2Gi"})
    assert agent.passport.spec.resources == {"cpu": "1"}


def _field_errors(exc: ValidationError) -> list[str]:
    return [e.loc for e in exc.errors]


def test_a_bad_passport_names_the_field(tmp_path: Path) -> None:
    doc = passport("bad-01")
    doc["metadata"]["name"] = "Not_A_DNS_Name"
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        NodeAgent(file, endpoints="http://127.0.0.1:1")  # never contacted
    assert _field_errors(caught.value) == ["metadata.name"]

    doc = passport("bad-02", resources={"cpu": "four"})
    with pytest.raises(ValidationError) as caught:
        build_passport(doc)
    assert _field_errors(caught.value) == ["spec.resources"]


def test_a_detected_value_is_validated_too() -> None:
    with pytest.raises(ValidationError) as caught:
        build_passport(passport("bad-03", resources={}), detected={"memory": "lots"})
    assert _field_errors(caught.value) == ["spec.resources"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("metadata: [unclosed", "not valid YAML/JSON"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("a: 1\n---\nb: 2\n", "must hold one document"),
        ("", "must hold one document"),
    ],
)
def test_a_bad_file_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    file = tmp_path / "node.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError, match=problem):
        build_passport(file)


def test_a_missing_file_or_unserved_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read passport file"):
        build_passport(tmp_path / "absent.yaml")
    doc = passport("v2-01")
    doc["apiVersion"] = "ai_team.io/v2"
    with pytest.raises(UnsupportedVersionError) as caught:
        build_passport(doc)
    assert _field_errors(caught.value) == ["apiVersion"]


def test_bad_agent_settings_fail_before_any_io() -> None:
    doc = passport("settings-01")
    with pytest.raises(ConfigError, match="interval"):
        NodeAgent(doc, interval=0, detect=False)
    with pytest.raises(ConfigError, match="http://"):
        NodeAgent(doc, endpoints="registry:8080", detect=False)


def test_interval_defaults_to_the_heartbeat_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert NodeAgent(passport("interval-01"), detect=False).interval == 10.0
    monkeypatch.setenv("NODE_REGISTRY_HEARTBEAT__INTERVAL_SECONDS", "3")
    assert NodeAgent(passport("interval-02"), detect=False).interval == 3.0


def test_status_calls_are_validated() -> None:
    agent = NodeAgent(passport("calls-01"), detect=False, interval=1)
    with pytest.raises(ValidationError):
        agent.set_current_tasks(-1)
    with pytest.raises(ValidationError) as caught:
        agent.set_condition("DiskPressure", "Maybe")
    assert _field_errors(caught.value) == ["status.conditions.status"]
    agent.set_current_tasks(2)  # before start: kept, sent at registration
    assert agent.current_tasks == 2


# -- the state machine, asyncio mode ----------------------------------------------------


def test_registers_pending_then_reports_running_and_renews(server: Server) -> None:
    doc = unique("life")
    name = doc["metadata"]["name"]
    steps, events = Steps(), no_events()

    async def scenario() -> None:
        async with recorded(server.url) as client:
            agent = make_agent(doc, steps=steps, events=events, client=client)
            assert not agent.registered
            async with agent:
                await steps.until(1)
                assert client.names() == ["register", "status"]
                registered_doc = client.calls[0][1]
                assert registered_doc["status"]["phase"] == "Pending"
                status = client.calls[1][1]
                assert status["phase"] is Phase.RUNNING
                assert [(c.type, c.status.value) for c in status["conditions"]] == [
                    ("Ready", "True")
                ]
                entry = server.get(name)
                assert entry.passport.status.phase is Phase.RUNNING
                assert ready_of(entry).status.value == "True"
                assert agent.registered
                assert agent.last_renewal is not None
                assert kinds(events) == [AgentEventKind.REGISTERED]

                for _ in range(3):
                    await steps.step()
                assert client.names()[2:] == ["heartbeat"] * 3
                assert steps.delays == expected_renewals(4)
                assert agent.failures == 0
            assert client.names()[-1] == "deregister"
        assert not agent.registered
        assert kinds(events)[-1] is AgentEventKind.DEREGISTERED

    asyncio.run(scenario())
    assert server.absent(name)


def test_status_changes_are_written_at_once_and_only_when_changed(server: Server) -> None:
    doc = unique("status")
    name = doc["metadata"]["name"]
    steps, events = Steps(), no_events()

    async def scenario() -> None:
        async with (
            recorded(server.url) as client,
            make_agent(doc, steps=steps, events=events, client=client) as agent,
        ):
            await steps.until(1)
            agent.set_current_tasks(3)  # wakes the paused agent: no renewal interval wait
            await steps.until(2)
            assert client.names()[-1] == "status"
            assert server.get(name).passport.status.current_tasks == 3

            agent.set_current_tasks(3)  # unchanged: nothing to write
            agent.set_ready(False, reason="Draining", message="finishing current work")
            agent.set_condition("DiskPressure", False, reason="DiskOK")
            await steps.until(3)
            assert client.names().count("status") == 3  # both changes in one write
            status = server.get(name).passport.status
            assert ready_of(server.get(name)).status.value == "False"
            assert ready_of(server.get(name)).reason == "Draining"
            assert {c.type for c in status.conditions} == {"Ready", "DiskPressure"}
            assert status.phase is Phase.RUNNING

            await steps.step()  # a plain renewal: the status is not sent again
            assert client.names()[-1] == "heartbeat"

    asyncio.run(scenario())


def test_node_lost_by_the_registry_registers_again_with_its_status(server: Server) -> None:
    doc = unique("lost")
    name = doc["metadata"]["name"]
    steps, events = Steps(), no_events()

    async def scenario() -> None:
        async with (
            recorded(server.url) as client,
            make_agent(doc, steps=steps, events=events, client=client) as agent,
        ):
            await steps.until(1)
            agent.set_current_tasks(2)
            agent.set_condition("GPUHealthy", True, reason="NvmlOK")
            await steps.until(2)
            server.client.deregister(name)  # as the registry's GC (or a restart) would

            await steps.step()
            assert client.names()[-1] == "heartbeat"  # NotFound: a jittered pause first
            assert steps.delays[-1] == replay("renew", "renew", 1)[-1]
            await steps.step()
            assert client.names()[-3:] == ["heartbeat", "register", "status"]
            assert agent.registered
            assert kinds(events) == [AgentEventKind.REGISTERED, AgentEventKind.REREGISTERED]
            entry = server.get(name)
            status = entry.passport.status
            assert status.phase is Phase.RUNNING
            assert status.current_tasks == 2
            assert {c.type for c in status.conditions} == {"Ready", "GPUHealthy"}
            # Re-registered after that one short pause, then back to renewals.
            assert steps.delays == replay("renew", "renew", 1, "renew")

    asyncio.run(scenario())


def test_unreachable_registry_backs_off_0_2_doubling_to_7(server: Server) -> None:
    steps, events = Steps(), no_events()
    dead = f"http://127.0.0.1:{free_port()}"

    async def scenario() -> NodeAgent:
        agent = make_agent(unique("dead"), steps=steps, events=events, endpoints=dead)
        async with agent:
            await steps.until(1)
            for _ in range(8):
                await steps.step()
            assert agent.failures == 9
            assert not agent.registered
            assert agent.last_renewal is None
        return agent

    agent = asyncio.run(scenario())
    assert steps.delays == replay(*range(1, 10))
    assert all(0 <= d <= top for d, top in zip(steps.delays, CEILINGS, strict=True))
    # One line for the outage, not one per attempt; nothing to deregister.
    assert kinds(events) == [AgentEventKind.FAILING]
    assert "registration" in events[0].message
    assert agent.failures == 9


def test_changes_made_during_an_outage_are_delivered_on_recovery(server: Server) -> None:
    doc = unique("outage")
    name = doc["metadata"]["name"]
    steps, events = Steps(), no_events()
    switch = Switch()

    async def scenario() -> None:
        async with (
            recorded(server.url, switch) as client,
            make_agent(doc, steps=steps, events=events, client=client) as agent,
        ):
            await steps.until(1)
            renewed = agent.last_renewal
            switch.down = True
            await steps.step()
            await steps.step()
            assert agent.failures == 2
            assert steps.delays == replay("renew", 1, 2)
            assert agent.last_renewal == renewed

            agent.set_current_tasks(5)  # remembered: it does not cut the backoff short
            await asyncio.sleep(0.05)
            assert len(steps.delays) == 3
            assert server.get(name).passport.status.current_tasks == 0

            switch.down = False
            await steps.step()
            assert client.names()[-1] == "status"  # the recovery call carries it
            assert server.get(name).passport.status.current_tasks == 5
            assert agent.failures == 0
            assert steps.delays == replay("renew", 1, 2, "renew")
            assert kinds(events) == [
                AgentEventKind.REGISTERED,
                AgentEventKind.FAILING,
                AgentEventKind.RECOVERED,
            ]
            assert "renewal" in events[1].message

    asyncio.run(scenario())


def test_not_ready_survives_an_outage_the_registry_noticed(server: Server) -> None:
    """The registry writes Ready=Unknown while the node is silent and Ready=True when a
    heartbeat revives it; a node that said Ready=False must be heard again afterwards."""
    doc = unique("unready")
    name = doc["metadata"]["name"]
    steps, events = Steps(), no_events()
    switch = Switch()

    async def scenario() -> None:
        async with (
            recorded(server.url, switch) as client,
            make_agent(doc, steps=steps, events=events, client=client) as agent,
        ):
            await steps.until(1)
            agent.set_ready(False, reason="Overloaded")
            await steps.until(2)
            switch.down = True
            await steps.step()
            server.clock.advance(25)  # past not_ready_after (20 s)
            server.reconcile()
            assert server.get(name).passport.status.phase is Phase.NOT_READY
            assert ready_of(server.get(name)).status.value == "Unknown"

            switch.down = False
            await steps.step()
            entry = server.get(name)
            assert entry.passport.status.phase is Phase.RUNNING
            assert ready_of(entry).status.value == "False"
            assert ready_of(entry).reason == "Overloaded"
            server.reconcile()
            assert ready_of(server.get(name)).status.value == "False"

    asyncio.run(scenario())


class Scripted:
    """An AgentClient whose answers a test writes down; the registry's side is not needed."""

    endpoint = "http://scripted"

    def __init__(self, failures: dict[str, list[BaseException | None]]) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def _next(self, call: str) -> None:
        self.calls.append(call)
        script = self.failures.get(call)
        if script:
            problem = script.pop(0)
            if problem is not None:
                raise problem

    async def register(self, passport: NodePassport | Mapping[str, Any]) -> RegistryEntry:
        self._next("register")
        return None  # type: ignore[return-value]  # the agent does not read it

    async def heartbeat(self, name: str) -> datetime:
        self._next("heartbeat")
        return datetime.now()

    async def update_status(
        self,
        name: str,
        *,
        phase: Phase | str | None = None,
        conditions: Iterable[Condition | Mapping[str, Any]] | None = None,
        current_tasks: int | None = None,
    ) -> RegistryEntry:
        self._next("status")
        return None  # type: ignore[return-value]

    async def deregister(self, name: str) -> None:
        self._next("deregister")


def test_a_failed_running_report_is_retried_before_renewals() -> None:
    down = RegistryUnreachableError("no registry endpoint answered")
    client = Scripted({"status": [down, None]})
    steps, events = Steps(), no_events()

    async def scenario() -> None:
        async with make_agent(passport("scripted-01"), steps=steps, events=events, client=client):
            await steps.until(1)
            assert steps.delays == replay(1)
            await steps.step()

    asyncio.run(scenario())
    assert client.calls == ["register", "status", "status", "deregister"]
    # "registered" only once it is Running; no "recovered" on top of it.
    assert kinds(events) == [
        AgentEventKind.FAILING,
        AgentEventKind.REGISTERED,
        AgentEventKind.DEREGISTERED,
    ]


def test_a_registry_that_keeps_forgetting_is_not_hammered() -> None:
    lost = NotFoundError("no node is named 'scripted-02'")
    client = Scripted({"heartbeat": [lost, None], "status": [None, lost, lost, None]})
    steps, events = Steps(), no_events()

    async def scenario() -> None:
        async with make_agent(passport("scripted-02"), steps=steps, events=events, client=client):
            await steps.until(1)
            for _ in range(4):
                await steps.step()

    asyncio.run(scenario())
    # heartbeat: NotFound -> register after a jittered pause; its Running report: NotFound
    # again -> a longer one, each doubling its ceiling.
    assert client.calls == [
        *["register", "status", "heartbeat"],
        *["register", "status"] * 3,
        "deregister",
    ]
    assert steps.delays == replay("renew", 1, 2, 3, "renew")


def test_stop_is_idempotent_and_an_agent_runs_once(server: Server) -> None:
    doc = unique("once")
    steps, events = Steps(), no_events()

    async def scenario() -> None:
        agent = make_agent(doc, steps=steps, events=events, endpoints=server.url)
        await agent.aclose()  # before start: nothing to do, and it will not start
        with pytest.raises(RuntimeError, match="runs once"):
            await agent.start()

        agent = make_agent(doc, steps=steps, events=events, endpoints=server.url)
        async with agent:
            await steps.until(1)
            with pytest.raises(RuntimeError, match="aclose"):
                agent.stop()
        await agent.aclose()
        with pytest.raises(RuntimeError, match="runs once"):
            await agent.start()

    asyncio.run(scenario())
    assert kinds(events) == [AgentEventKind.REGISTERED, AgentEventKind.DEREGISTERED]
    assert server.absent(doc["metadata"]["name"])


def test_deregistering_an_unreachable_registry_is_reported_not_raised(server: Server) -> None:
    doc = unique("goodbye")
    steps, events = Steps(), no_events()
    switch = Switch()

    async def scenario() -> None:
        async with (
            recorded(server.url, switch) as client,
            make_agent(doc, steps=steps, events=events, client=client),
        ):
            await steps.until(1)
            switch.down = True

    asyncio.run(scenario())
    assert kinds(events) == [AgentEventKind.REGISTERED, AgentEventKind.DEREGISTRATION_FAILED]
    assert not server.absent(doc["metadata"]["name"])  # its lease will expire instead


# -- thread mode -----------------------------------------------------------------------


def test_thread_mode_runs_the_same_loop(server: Server) -> None:
    doc = unique("thread")
    name = doc["metadata"]["name"]
    steps, events = Steps(), no_events()
    agent = make_agent(doc, steps=steps, events=events, endpoints=server.url)
    with agent.running():
        steps.wait_for(1)
        assert agent.registered
        assert server.get(name).passport.status.phase is Phase.RUNNING
        agent.set_current_tasks(4)  # from this (another) thread
        steps.wait_for(2)
        assert server.get(name).passport.status.current_tasks == 4
        steps.release(2)
        steps.wait_for(4)
        assert agent.failures == 0
        server.client.deregister(name)
        steps.release(2)  # the renewal that hears NotFound, then the jittered pause after it
        steps.wait_for(6)
        assert server.get(name).passport.status.current_tasks == 4
        assert kinds(events) == [AgentEventKind.REGISTERED, AgentEventKind.REREGISTERED]
    assert server.absent(name)
    assert not agent.registered
    agent.stop()  # again: nothing happens
    with pytest.raises(RuntimeError, match="runs once"):
        agent.start_in_thread()
    assert [t.name for t in threading.enumerate() if t.name == f"node-agent-{name}"] == []


def test_thread_mode_backs_off_and_stops_promptly() -> None:
    steps, events = Steps(), no_events()
    dead = f"http://127.0.0.1:{free_port()}"
    agent = make_agent(unique("tdead"), steps=steps, events=events, endpoints=dead)
    agent.start_in_thread()
    try:
        steps.release(3)
        assert steps.wait_for(4) == replay(1, 2, 3, 4)
        assert agent.failures == 4
    finally:
        started = time.monotonic()
        agent.stop()  # cuts the (held) pause short
        assert time.monotonic() - started < 2
    agent.stop()
    assert kinds(events) == [AgentEventKind.FAILING]


def test_stop_before_start_in_thread_is_harmless() -> None:
    agent = NodeAgent(passport("never-01"), detect=False, interval=1)
    agent.stop()
    agent.stop()
    assert not agent.registered


# -- the public surface and the command's entry ----------------------------------------


def test_the_public_names_are_the_ones_meant() -> None:
    import node_registry.agent as agent_package

    assert sorted(agent_package.__all__) == [
        "AgentClient",
        "AgentEvent",
        "AgentEventKind",
        "NodeAgent",
        "SharedClient",
        "build_passport",
        "detect_resources",
    ]


def test_the_command_refuses_a_bad_passport_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from node_registry.cli.agent_command import main, run_agent

    doc = passport("cli-bad-01")
    doc["spec"]["maxConcurrentTasks"] = -1
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert run_agent(file, endpoints=None, token=None, interval=None, detect=False) == 1
    err = capsys.readouterr().err
    assert "spec.maxConcurrentTasks" in err
    assert main([str(file), "--server", "http://127.0.0.1:1", "--no-detect"]) == 1
    assert "spec.maxConcurrentTasks" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(passport("cli-good-01")), encoding="utf-8")
    assert run_agent(good, endpoints="ftp://x", token=None, interval=None) == 1
    assert "http://" in capsys.readouterr().err


def test_the_file_seeds_conditions_and_tasks_but_ready_belongs_to_the_runtime() -> None:
    doc = passport("seed-01")
    doc["status"] = {
        "phase": "Running",
        "currentTasks": 2,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Stale"},
            {"type": "DiskPressure", "status": "False", "reason": "DiskOK"},
        ],
    }
    agent = NodeAgent(doc, detect=False, interval=1)
    assert [(c.type, c.status.value) for c in agent.conditions] == [
        ("Ready", "True"),
        ("DiskPressure", "False"),
    ]
    assert agent.current_tasks == 2
    assert repr(agent) == "NodeAgent('seed-01', endpoints=['http://127.0.0.1:8080'])"


def test_stop_from_another_thread_stops_an_asyncio_agent(server: Server) -> None:
    doc = unique("other-thread")
    steps, events = Steps(), no_events()

    async def scenario() -> None:
        async with make_agent(doc, steps=steps, events=events, endpoints=server.url) as agent:
            await steps.until(1)
            await asyncio.to_thread(agent.stop, 5.0)
            assert not agent.registered

    asyncio.run(scenario())
    assert kinds(events) == [AgentEventKind.REGISTERED, AgentEventKind.DEREGISTERED]
    assert server.absent(doc["metadata"]["name"])
