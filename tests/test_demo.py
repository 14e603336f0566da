"""``node-registry demo``: the whole walkthrough as a newcomer runs it, in a real subprocess."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

DEMO_TIMEOUT = 40


def _run(*args: str, timeout: float = DEMO_TIMEOUT) -> subprocess.CompletedProcess[str]:
    script = shutil.which("node-registry", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "node_registry"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_REGISTRY_")}
    env.update(COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def test_demo_shows_registrations_failures_and_a_final_table() -> None:
    result = _run("demo", "--agents", "8", "--seconds", "8")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert re.search(r"registry serving on http://127\.0\.0\.1:\d+ ", out), out

    events = [line.split() for line in out.splitlines() if re.match(r"\s*\d+\.\ds  [A-Z]", line)]
    added = {e[2] for e in events if e[1] == "ADDED"}
    assert len(added) == 8, out
    to_not_ready = {
        e[2] for e in events if e[1] == "HEALTH_CHANGED" and e[3:6] == ["ALIVE", "->", "NOT_READY"]
    }
    to_offline = {
        e[2]
        for e in events
        if e[1] == "HEALTH_CHANGED" and e[3:6] == ["NOT_READY", "->", "OFFLINE"]
    }
    deleted = {e[2] for e in events if e[1] == "DELETED"}
    assert len(to_not_ready) == 2, out  # 20 % of 8, killed abruptly
    assert to_offline == to_not_ready, out
    assert len(deleted) == 1, out  # the one that left gracefully
    assert not deleted & to_offline

    table = out[out.index("\nNAME ") + 1 :].splitlines()
    assert table[0].split() == ["NAME", "KIND", "HEALTH", "PHASE", "TASKS", "AGE"]
    final = {row.split()[0]: row.split()[1:4] for row in table[1:8]}
    assert set(final) == added - deleted, out
    for name in to_offline:
        assert final[name][1:] == ["OFFLINE", "Offline"], out
    for name in added - deleted - to_offline:
        assert final[name][1:] == ["ALIVE", "Running"], out
    assert "5 of 7 schedulable now" in out
    assert out.rstrip().endswith("demo finished; the registry and its agents are stopped")


def test_demo_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run("demo", "--port", str(port), timeout=20)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
