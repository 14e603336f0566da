"""Child processes of end-to-end tests: started with a clean environment, logged, killed by PID.

Shared by the tests that run real ``node-registry serve`` and ``agent`` processes
(``test_agent_e2e``, ``test_etcd_e2e``); each adds its own ways to start them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from conftest import passport


def agent_command(interval: float) -> list[str]:
    return [sys.executable, "-m", "node_registry", "agent", "--interval", str(interval)]


def child_env() -> dict[str, str]:
    # Nothing from the environment running the tests steers the processes.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_REGISTRY_")}
    env.update(PYTHONUNBUFFERED="1", NO_COLOR="1", COLUMNS="1000")
    return env


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL by PID, as a crash, and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class Processes:
    """The processes of one test, each logging to a file; ``close`` kills what still runs."""

    tmp: Path
    procs: list[Proc] = field(default_factory=list)
    #: Seconds between an agent's renewals (each test module sets its own).
    agent_interval: ClassVar[float]

    def spawn(self, label: str, args: list[str]) -> Proc:
        log = self.tmp / f"{label}-{time.monotonic_ns()}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=self.tmp
            )
        proc = Proc(process, log)
        self.procs.append(proc)
        return proc

    def agent(self, name: str, *urls: str) -> Proc:
        """``node-registry agent`` for a passport named ``name`` (phase Pending)."""
        file = self.tmp / f"{name}.yaml"
        file.write_text(yaml.safe_dump(passport(name, phase="Pending")), encoding="utf-8")
        args = [*agent_command(self.agent_interval), "-f", str(file), "--server", ",".join(urls)]
        return self.spawn(name, args)

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.output()}" for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            if proc.process.poll() is None:
                proc.process.kill()
        for proc in self.procs:
            proc.process.wait(timeout=10)
