"""The node runtime as real processes: ``node-registry serve`` and ``node-registry agent``.

Short timings (renew every 0.2 s, NotReady after 0.8 s, Offline after 1.5 s, removed 1 s
later) make every lifecycle transition observable in a few seconds. Every wait is bounded,
and every process is killed in ``finally`` whatever the test did. Times are compared on the
wall clock, which the server's ``lastSeen`` is written in too (same machine).
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import yaml

from conftest import passport
from live_server import free_port
from node_registry.client import RegistryClient
from node_registry.errors import NotFoundError, RegistryError
from node_registry.passport import Phase
from node_registry.registry.entry import RegistryEntry
from node_registry.store import HealthState
from processes import Proc, Processes, agent_command

INTERVAL = 0.2
NOT_READY_AFTER = 0.8
TTL = 1.5
GRACE = 1.0
CONFIG = {
    "heartbeat": {
        "interval_seconds": INTERVAL,
        "not_ready_after_seconds": NOT_READY_AFTER,
        "ttl_seconds": TTL,
        "grace_period_seconds": GRACE,
    },
    "controller": {"period_seconds": 0.1},
}
SERVE = [sys.executable, "-m", "node_registry", "serve", "--log-level", "warning"]
AGENT = agent_command(INTERVAL)
START_TIMEOUT = 20.0  # a cold interpreter on a busy 2-core machine
#: How late a transition may be observed: a controller period, a poll, a loaded machine.
LATE = 1.0
POLL = 0.02

T = TypeVar("T")


class Cluster(Processes):
    """The processes of one test; ``close`` kills whatever is still running."""

    agent_interval = INTERVAL

    def server(self, port: int, *, wait: bool = True) -> Proc:
        """``node-registry serve`` on ``port``; ``wait=False``: do not wait until it answers."""
        config = self.tmp / "registry.yaml"
        config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
        proc = self.spawn(f"serve-{port}", [*SERVE, "--config", str(config), "--port", str(port)])
        if wait:
            wait_healthy(proc, port)
        return proc


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def shared_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One registry for the tests that do not stop it (a server takes seconds to start)."""
    running = Cluster(tmp_path_factory.mktemp("shared"))
    try:
        port = free_port()
        running.server(port)
        yield port
    finally:
        running.close()


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def wait_until(what: str, check: Callable[[], T | None], timeout: float, *procs: Proc) -> T:
    """Poll ``check`` until it returns a value, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        for proc in procs:
            if proc.process.poll() is not None:
                pytest.fail(f"{what}: a process exited early:\n{proc.output()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.log.name}\n{p.output()}" for p in procs)
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{logs}")
        time.sleep(POLL)


def wait_healthy(proc: Proc, port: int) -> float:
    """Wait for /healthz; the wall-clock time it first answered."""

    def healthy() -> float | None:
        try:
            if httpx.get(f"{url_of(port)}/healthz", timeout=1).text == "ok":
                return time.time()
        except httpx.TransportError:
            pass
        return None

    return wait_until(f"the server on port {port}", healthy, START_TIMEOUT, proc)


def lookup(client: RegistryClient, name: str) -> RegistryEntry | None:
    try:
        return client.get(name)
    except NotFoundError:
        return None
    except RegistryError:
        return None  # unreachable for a moment: the caller's deadline decides


def gone(client: RegistryClient, name: str) -> bool | None:
    try:
        client.get(name)
    except NotFoundError:
        return True
    return None


def running_entry(client: RegistryClient, name: str) -> RegistryEntry | None:
    entry = lookup(client, name)
    if entry is None or entry.health_state is not HealthState.ALIVE:
        return None
    return entry if entry.passport.status.phase is Phase.RUNNING else None


def wait_running(client: RegistryClient, timeout: float, *agents: tuple[str, Proc]) -> float:
    """Wait until every named agent's node is ALIVE and Running; the wall-clock time."""
    for name, proc in agents:
        wait_until(f"{name} Running", functools.partial(running_entry, client, name), timeout, proc)
    return time.time()


def test_killed_agent_turns_not_ready_then_offline_then_disappears(
    cluster: Cluster, shared_port: int
) -> None:
    port = shared_port
    victim = cluster.agent("victim-01", url_of(port))
    witness = cluster.agent("witness-01", url_of(port))
    with RegistryClient(url_of(port), retries=0, timeout=2) as client:
        wait_running(client, START_TIMEOUT, ("victim-01", victim), ("witness-01", witness))
        victim.process.send_signal(signal.SIGKILL)
        killed = time.time()
        victim.process.wait(timeout=10)

        seen: dict[HealthState | None, float] = {}
        last_seen = 0.0
        deadline = time.monotonic() + TTL + GRACE + 5
        while None not in seen:
            assert time.monotonic() < deadline, f"observed {seen} only"
            try:
                entry = client.get("victim-01")
            except NotFoundError:
                seen.setdefault(None, time.time())
            except RegistryError:
                pass  # a slow answer is not an answer that the node is gone
            else:
                last_seen = entry.last_seen.timestamp()
                seen.setdefault(entry.health_state, time.time())
            time.sleep(POLL)
        witness_entry = client.get("witness-01")

    assert HealthState.NOT_READY in seen, seen
    assert HealthState.OFFLINE in seen, seen
    # Measured from its last heartbeat (the registry's lastSeen) ...
    not_ready = seen[HealthState.NOT_READY] - last_seen
    offline = seen[HealthState.OFFLINE] - last_seen
    gone = seen[None] - last_seen
    assert NOT_READY_AFTER - 0.05 <= not_ready <= NOT_READY_AFTER + LATE, seen
    assert TTL - 0.05 <= offline <= TTL + LATE, seen
    assert TTL + GRACE - 0.05 <= gone <= TTL + GRACE + LATE, seen
    # ... and from the kill, which came about one (jittered) interval after it.
    assert 0 <= killed - last_seen <= INTERVAL * 1.1 + LATE, (killed, last_seen)
    assert seen[HealthState.NOT_READY] - killed <= NOT_READY_AFTER + LATE, (killed, seen)
    # The other agent was never affected.
    assert witness_entry.health_state is HealthState.ALIVE
    assert witness_entry.passport.status.phase is Phase.RUNNING


def test_sigterm_deregisters_at_once(cluster: Cluster, shared_port: int) -> None:
    port = shared_port
    agent = cluster.agent("graceful-01", url_of(port))
    with RegistryClient(url_of(port), retries=0, timeout=2) as client:
        wait_running(client, START_TIMEOUT, ("graceful-01", agent))
        agent.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        wait_until("the node to be gone", lambda: gone(client, "graceful-01"), 1.0)
        assert time.monotonic() - stopped <= 1.0
    assert agent.process.wait(timeout=5) == 0
    lines = agent.output().splitlines()
    assert any(" registered: graceful-01 " in line for line in lines), lines
    assert any(" deregistered: graceful-01 " in line for line in lines), lines


def test_agents_register_again_after_the_registry_restarts(cluster: Cluster) -> None:
    port = free_port()
    server = cluster.server(port)
    names = ["restart-01", "restart-02"]
    agents = [(name, cluster.agent(name, url_of(port))) for name in names]
    with RegistryClient(url_of(port), retries=0, timeout=2) as client:
        wait_running(client, START_TIMEOUT, *agents)
        server.process.kill()
        killed = time.time()
        server.process.wait(timeout=10)
        restarted = cluster.server(port)  # the same port; an empty in-memory registry
        ready = time.time()
        downtime = ready - killed
        # The next attempt comes at most one backoff step after the registry is back, and the
        # steps double, so a step is never longer than the outage so far (plus the first 0.2).
        bound = INTERVAL * 1.1 + min(7.0, downtime + 0.2) + LATE
        back = wait_running(client, bound, *agents)
        assert restarted.process.poll() is None
    assert back - ready <= bound
    for name, proc in agents:
        lines = proc.output().splitlines()
        assert any(f" failing: renewal of {name} " in line for line in lines), lines
        assert any(f" re-registered: {name} " in line for line in lines), lines


def test_agent_fails_over_to_the_second_endpoint(cluster: Cluster, shared_port: int) -> None:
    port_a, port_b = free_port(), shared_port
    server_a = cluster.server(port_a)
    agent = cluster.agent("failover-01", url_of(port_a), url_of(port_b))
    with (
        RegistryClient(url_of(port_a), retries=0, timeout=2) as on_a,
        RegistryClient(url_of(port_b), retries=0, timeout=2) as on_b,
    ):
        wait_running(on_a, START_TIMEOUT, ("failover-01", agent))
        with pytest.raises(NotFoundError):  # two memory:// registries share nothing
            on_b.get("failover-01")

        server_a.process.kill()
        killed = time.monotonic()
        server_a.process.wait(timeout=10)
        # B does not know the node (NotFound), so the agent registers there — at once.
        first = wait_until(
            "the node on B", lambda: running_entry(on_b, "failover-01"), INTERVAL + LATE, agent
        )
        assert time.monotonic() - killed <= INTERVAL * 1.1 + LATE
        # ... and keeps renewing through B: still ALIVE well past not_ready_after and TTL.
        time.sleep(TTL + INTERVAL)
        later = running_entry(on_b, "failover-01")
        assert later is not None
        assert later.last_seen > first.last_seen
        assert later.registered_at == first.registered_at  # renewed, not registered again
    lines = agent.output().splitlines()
    assert any(" re-registered: failover-01 " in line for line in lines), lines
    assert agent.process.poll() is None


def test_a_bad_passport_file_exits_1_naming_the_field(cluster: Cluster) -> None:
    doc = passport("bad-file-01")
    doc["metadata"]["labels"] = {"zone": "not a label value"}
    file = cluster.tmp / "bad.yaml"
    file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    proc = cluster.spawn("bad", [*AGENT, "-f", str(file), "--server", url_of(free_port())])
    assert proc.process.wait(timeout=START_TIMEOUT) == 1
    assert "metadata.labels" in proc.output()
