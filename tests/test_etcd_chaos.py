"""Chaos on etcd (issue #10, items 8-10): members and replicas frozen, thawed and stopped.

Real processes only: a 3-member etcd cluster on loopback (or one member), two
``node-registry serve --store etcd://...`` replicas, signals sent by PID.

- SIGSTOP of an etcd follower the replicas talk to, then of the Raft leader: quorum holds,
  so ``/readyz``, lists and heartbeats keep working on both replicas; the disruption each
  sees (no 200, or a 200 that took long) stays under ``DISRUPTION`` seconds;
- SIGSTOP of the replica running the lifecycle controller past its seat's TTL, then
  SIGCONT: the other replica takes the seat, and the thawed one, with its stale view,
  writes nothing (its writes are fenced on the seat) while every node keeps heartbeating;
- SIGTERM of the controller's replica releases the seat at once: the survivor takes it
  over well before the seat's lease could run out.

Every wait is bounded, every process (etcd members included) is continued and stopped by
its PID in ``finally`` however the test ends. Without an etcd binary the tests skip.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import passport
from etcd_server import EtcdCluster, EtcdServer
from node_registry.client import RegistryClient
from node_registry.store import HealthState
from processes import Proc
from test_etcd_e2e import (
    NODES,
    Heartbeats,
    Procs,
    Timings,
    Watcher,
    controller_holder,
    holds_seat,
    leading,
    new_prefix,
    store_url,
    wait_ready,
    wait_until,
)

#: The longest a replica may answer anything but a prompt 200 while quorum holds.
DISRUPTION = 3.0
#: A poll slower than this counts as disruption for its whole duration.
PROMPT = 0.5
POLL = 0.05
#: Failover timings: a TTL long enough that a member's loss never makes a node NotReady.
CHAOS = Timings(not_ready_after=4.0, ttl=8.0, grace=2.0)
#: A seat lease of 15 s, the default's: the seat must pass on long before it runs out.
LONG_SEAT = Timings(not_ready_after=10.0, ttl=30.0, grace=5.0)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    running = Procs(tmp_path)
    try:
        yield running
    finally:
        for proc in running.procs:  # a frozen replica must take its SIGKILL
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGCONT)
        running.close()


def freeze(process: Proc | EtcdServer) -> None:
    popen = process.process
    assert popen is not None
    assert popen.poll() is None
    popen.send_signal(signal.SIGSTOP)


def thaw(process: Proc | EtcdServer) -> None:
    popen = process.process
    if popen is not None and popen.poll() is None:
        popen.send_signal(signal.SIGCONT)


@dataclass(frozen=True)
class Probe:
    at: float
    path: str
    status: int | None
    took: float


class Prober:
    """GETs ``/readyz`` and the node list of every replica every POLL seconds, in a thread."""

    def __init__(self, servers: list[Proc]) -> None:
        self.servers = servers
        self.probes: dict[str, list[Probe]] = {s.url: [] for s in servers}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(s.url,), daemon=True) for s in servers
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=DISRUPTION + 2) as client:
            while not self._stop.wait(POLL):
                for path in ("/readyz", NODES):
                    started = time.monotonic()
                    try:
                        status: int | None = client.get(path).status_code
                    except httpx.TransportError:
                        status = None
                    self.probes[url].append(
                        Probe(started, path, status, time.monotonic() - started)
                    )

    def mark(self) -> float:
        return time.monotonic()

    def disruption(self, url: str, since: float) -> float:
        """The longest stretch after ``since`` without a prompt 200 on ``url``."""
        worst, start = 0.0, None
        for probe in [p for p in self.probes[url] if p.at >= since]:
            good = probe.status == 200 and probe.took < PROMPT
            if not good:
                start = probe.at if start is None else start
                worst = max(worst, probe.at + probe.took - start)
            else:
                start = None
        return worst

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(DISRUPTION + 5)


def the_leader(a: Proc, b: Proc, procs: Procs) -> Proc:
    """The one of two replicas that runs the lifecycle controller, once exactly one does."""

    def only() -> Proc | None:
        flags = [leading(a), leading(b)]
        return (a if flags[0] else b) if flags.count(True) == 1 else None

    return wait_until("exactly one replica leads", only, 5, procs)


def two_replicas(etcd: EtcdServer, procs: Procs, timings: Timings) -> tuple[str, Proc, Proc]:
    """Two ready replicas on ``etcd`` under a new prefix: (prefix, the controller's, the other)."""
    prefix = new_prefix()
    url = store_url([etcd.endpoint], prefix)
    a, b = procs.serve("serve-a", url, timings), procs.serve("serve-b", url, timings)
    wait_ready(procs, a, b)
    leader = the_leader(a, b, procs)
    return prefix, leader, b if leader is a else a


def member_in_use(cluster: EtcdCluster, procs: Procs) -> EtcdServer:
    """The member carrying the most watch streams of the replicas (usually all of them)."""

    def busiest() -> EtcdServer | None:
        streams = {
            m.name: m.metric("etcd_debugging_mvcc_watch_stream_total") or 0 for m in cluster.members
        }
        name = max(streams, key=lambda n: streams[n])
        return next(m for m in cluster.members if m.name == name) if streams[name] else None

    return wait_until("a member carrying the replicas' watches", busiest, 10, procs)


# -- item 8: an etcd member frozen while quorum holds ---------------------------------------


def test_freezing_an_etcd_follower_then_the_leader_barely_disturbs_the_replicas(
    etcd_cluster: EtcdCluster, procs: Procs
) -> None:
    prefix = new_prefix()
    # Both replicas start on the same member (the first endpoint): the one to freeze.
    url = store_url(etcd_cluster.endpoints, prefix)
    a, b = procs.serve("serve-a", url, CHAOS), procs.serve("serve-b", url, CHAOS)
    wait_ready(procs, a, b)
    names = [f"chaos-{i}" for i in range(4)]
    with RegistryClient([a.url, b.url], retries=3, timeout=3) as client:
        for name in names:
            client.register(passport(name))
    heartbeats = [Heartbeats([a.url], names[:2]), Heartbeats([b.url], names[2:])]
    prober = Prober([a, b])
    frozen: list[EtcdServer] = []
    report: list[str] = []
    try:
        for round_name in ("follower", "leader"):
            used = member_in_use(etcd_cluster, procs)
            leader = wait_until("an etcd leader", etcd_cluster.leader, 10, procs)
            if round_name == "follower" and used is leader:
                others = [m for m in etcd_cluster.members if m is not used and m not in frozen]
                etcd_cluster.move_leader(others[0])
            if round_name == "leader" and used is not leader:
                etcd_cluster.move_leader(used)
            time.sleep(0.5)  # settled: any disruption from here on is the freeze's
            failures_before = sum(h.failures for h in heartbeats)
            since = prober.mark()
            freeze(used)
            frozen.append(used)
            time.sleep(DISRUPTION + 3)  # long enough to see a disruption of any length
            thaw(used)
            worst = {s.log.name: prober.disruption(s.url, since) for s in (a, b)}
            failed = sum(h.failures for h in heartbeats) - failures_before
            report.append(
                f"{round_name} {used.name} frozen: disruption {worst}, {failed} heartbeats failed"
            )
            assert all(d < DISRUPTION for d in worst.values()), (report, procs.logs())
            assert failed <= 2, (report, procs.logs())
            frozen.remove(used)
            wait_ready(procs, a, b, timeout=10)
        with RegistryClient(a.url, retries=3, timeout=3) as client:
            for name in names:  # nobody was ever judged silent
                assert client.get(name).health_state.value == "ALIVE"
    finally:
        prober.stop()
        for h in heartbeats:
            h.stop()
        for member in frozen:
            thaw(member)
    print("; ".join(report))


# -- item 9: a controller frozen past its seat's lease, then thawed --------------------------


@dataclass(frozen=True)
class PausedTimings(Timings):
    """A 2 s seat; saturation only after 30 s of loop lag, so the thawed controller does not
    excuse itself as saturated: only the fence stands between its stale view and etcd."""

    def config(self) -> dict[str, Any]:
        doc = super().config()
        doc["controller"]["saturation_lag_seconds"] = 30
        doc["store"]["etcd_period_seconds"] = 0.5
        return doc


PAUSED = PausedTimings(not_ready_after=1.5, ttl=4.0, grace=2.0)


def test_a_controller_frozen_past_its_seat_writes_nothing_when_thawed(
    etcd: EtcdServer, procs: Procs
) -> None:
    _, paused, other = two_replicas(etcd, procs, PAUSED)
    names = [f"chaos-{i}" for i in range(8)]
    with RegistryClient(other.url, retries=3, timeout=3) as client:
        for name in names:
            client.register(passport(name))
        start = client.list_nodes().resource_version
    # Renewed through the other replica only: the frozen one's view of them goes stale.
    heartbeats = Heartbeats([other.url], names)
    watcher = Watcher(other.url, start)
    try:
        time.sleep(1.0)
        freeze(paused)
        frozen_at = time.monotonic()
        wait_until("the other replica takes the seat", lambda: leading(other) or None, 10, procs)
        took = time.monotonic() - frozen_at
        # Frozen longer than the TTL: in its view every node is long silent (Offline).
        time.sleep(max(0.0, PAUSED.ttl + 0.5 - (time.monotonic() - frozen_at)))
        thaw(paused)
        wait_until(
            "the thawed replica gives the seat up", lambda: not leading(paused) or None, 10, procs
        )
        time.sleep(1.5)  # its controller's passes after the thaw, and their writes, if any
        with RegistryClient(other.url, retries=3, timeout=3) as client:
            phases = {e.name: e.passport.status.phase.value for e in client.list_nodes().items}
    finally:
        heartbeats.stop()
        watcher.close()
    unhealthy = [
        (e.type.value, e.entry.name, e.entry.health_state.value)
        for e in watcher.events
        if e.entry.health_state is not HealthState.ALIVE
    ]
    assert not unhealthy, (unhealthy, procs.logs())
    assert set(phases.values()) == {"Running"}, phases
    refused = paused.output().count("lifecycle controller pass stopped")
    print(
        f"seat taken over {took:.2f} s after the freeze; the thawed controller's passes "
        f"refused: {refused}; no node recorded unhealthy"
    )


# -- item 10: SIGTERM hands the controller's seat over at once -------------------------------


def test_sigterm_of_the_controllers_replica_hands_its_seat_over_at_once(
    etcd: EtcdServer, procs: Procs
) -> None:
    prefix, leader, survivor = two_replicas(etcd, procs, LONG_SEAT)
    assert holds_seat(controller_holder(etcd, prefix), leader)
    leader.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    wait_until("the survivor takes the seat", lambda: leading(survivor) or None, 10, procs)
    takeover = time.monotonic() - sent
    assert holds_seat(controller_holder(etcd, prefix), survivor)
    assert leader.process.wait(10) == -signal.SIGTERM, leader.output()
    seat_ttl = LONG_SEAT.seat_ttl
    assert takeover < seat_ttl / 3, (takeover, seat_ttl)
    print(f"SIGTERM: seat taken over after {takeover:.2f} s (its lease: {seat_ttl} s)")
