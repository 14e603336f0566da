"""HTTP benchmark: lease renewals (heartbeats) per second against `node-registry serve`,
measured in the same run as a bare FastAPI PUT that does nothing (bench/bare_app.py).

Each server is a separate process pinned to CPU 0; the load generator (wrk, from Debian's
`wrk` package) is a third process pinned to CPU 1, so server and load never share a core.
The two servers are measured alternately, several rounds, and compared by their medians.
Every renewal must answer 200 and be counted by the registry's own heartbeat metric.

    python bench/bench_http.py --nodes 1000 --duration 8 --rounds 3 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from loadgen import free_port, pinned
from sections import write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def section_name(store: str) -> str:
    """This run's section of the markdown file: one per kind of store (memory, etcd)."""
    scheme = store.split(":", 1)[0]
    return "bench_http" if scheme == "memory" else f"bench_http_{scheme}"


LEASE_PATH = "/apis/ai_team.io/v1/leases/"

LUA = """
local names = {}
for i = 0, %(nodes)d - 1 do names[i + 1] = string.format("bench-node-%%05d", i) end
local i = 0
local headers = {["Content-Type"] = "application/json"}
request = function()
  i = i %% #names + 1
  local name = names[i]
  return wrk.format("PUT", "%(path)s" .. name, headers,
    '{"apiVersion":"ai_team.io/v1","kind":"Lease","spec":{"holderIdentity":"' .. name .. '"}}')
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%%d non2xx=%%d errors=%%d p50=%%d p99=%%d\\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Run:
    server: str
    rate: float
    requests: int
    non2xx: int
    errors: int
    p50_ms: float
    p99_ms: float


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        pinned(0, command), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if process.poll() is not None:
                detail = process.stderr.read().decode() if process.stderr else "died"
                raise RuntimeError(detail) from None
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"server on port {port} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def register(base: str, nodes: int) -> None:
    with httpx.Client(base_url=base, timeout=10) as client:
        for i in range(nodes):
            name = f"bench-node-{i:05d}"
            doc = {
                "apiVersion": "ai_team.io/v1",
                "kind": "NodePassport",
                "metadata": {
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                    "name": name,
                    "nodeType": "agent",
                    "labels": {"zone": f"zone-{i % 4}"},
                },
                "spec": {
                    "capabilities": [{"name": "code_generation"}, {"name": "python"}],
                    "resources": {"cpu": "4", "memory": "8Gi"},
                },
                "status": {"phase": "Running"},
            }
            client.post("/apis/ai_team.io/v1/nodepassports", json=doc).raise_for_status()


def heartbeats_counted(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    match = re.search(r"^node_registry_heartbeats_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def load(base: str, script: Path, duration: float, connections: int, server: str) -> Run:
    command = pinned(
        1,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            base,
        ],
    )
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    rate = float(re.search(r"Requests/sec:\s+(\S+)", out.stdout).group(1))  # type: ignore[union-attr]
    fields = dict(
        pair.split("=")
        for pair in re.search(r"RESULT (.*)", out.stdout).group(1).split()  # type: ignore[union-attr]
    )
    return Run(
        server=server,
        rate=rate,
        requests=int(fields["requests"]),
        non2xx=int(fields["non2xx"]),
        errors=int(fields["errors"]),
        p50_ms=int(fields["p50"]) / 1000,
        p99_ms=int(fields["p99"]) / 1000,
    )


def machine_facts() -> str:
    return (
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs "
        f"({platform.machine()}), {platform.system()} {platform.release()}"
    )


def render(runs: list[Run], args: argparse.Namespace, counted_ok: bool) -> str:
    def median(server: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs if r.server == server)

    bare, ours = median("bare", "rate"), median("registry", "rate")
    ratio = ours / bare
    where = "" if args.store.startswith("memory") else f", on {args.store.split(':', 1)[0]}"
    lines = [
        f"## HTTP: lease renewals (heartbeats) vs a bare FastAPI PUT{where}",
        "",
        f"`python bench/bench_http.py --nodes {args.nodes} --duration {args.duration:g} "
        f"--rounds {args.rounds} --connections {args.connections} --store {args.store}` — "
        f"{datetime.now(UTC):%Y-%m-%d}, {machine_facts()}.",
        "",
        "Each server is its own uvicorn process (uvloop, httptools, no access log) pinned to "
        f"CPU 0; wrk runs pinned to CPU 1. The registry serves the store `{args.store}` with "
        f"{args.nodes} registered nodes, renewed round-robin; the bare app answers the same "
        "PUT with a constant. The two alternate, "
        f"{args.rounds} rounds of {args.duration:g} s each."
        + (
            ""
            if args.store.startswith("memory")
            else " The store's server (one etcd member on loopback) runs unpinned beside them."
        ),
        "",
        "| server | round | renewals/s | p50 | p99 | non-2xx | socket errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rounds: dict[str, int] = {}
    for run in runs:
        rounds[run.server] = rounds.get(run.server, 0) + 1
        lines.append(
            f"| {run.server} | {rounds[run.server]} | {run.rate:,.0f} | {run.p50_ms:.2f} ms | "
            f"{run.p99_ms:.2f} ms | {run.non2xx} | {run.errors} |"
        )
    lines += [
        "",
        "| median | renewals/s | p50 | p99 |",
        "|---|---:|---:|---:|",
        f"| bare FastAPI PUT | {bare:,.0f} | {median('bare', 'p50_ms'):.2f} ms | "
        f"{median('bare', 'p99_ms'):.2f} ms |",
        f"| registry lease renewal | {ours:,.0f} | {median('registry', 'p50_ms'):.2f} ms | "
        f"{median('registry', 'p99_ms'):.2f} ms |",
        "",
        f"Registry / bare: **{ratio:.0%}** (target ≥ 70 %: "
        f"{'met' if ratio >= 0.7 else 'missed'}); target ≥ 5,000 heartbeats/s per process: "
        f"{'met' if ours >= 5000 else 'missed'} — {ours * 10:,.0f} nodes at a 10 s interval. "
        f"Every renewal the registry answered was counted by `node_registry_heartbeats_total`: "
        f"{'yes' if counted_ok else 'NO'}.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    parser.add_argument(
        "--store",
        default="memory://",
        help="the registry's store, e.g. etcd://127.0.0.1:2379/bench (etcd must be running)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2

    python = sys.executable
    bare_port, our_port = free_port(), free_port()
    uvicorn_flags = ["--no-access-log", "--log-level", "warning", "--host", "127.0.0.1"]
    bare = start(
        [python, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port), *uvicorn_flags],
        bare_port,
    )
    ours = start(
        [
            python,
            "-m",
            "node_registry",
            "serve",
            "--store",
            args.store,
            "--port",
            str(our_port),
            "--log-level",
            "warning",
        ],
        our_port,
    )
    runs: list[Run] = []
    try:
        our_base = f"http://127.0.0.1:{our_port}"
        register(our_base, args.nodes)
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "lease.lua"
            script.write_text(LUA % {"nodes": args.nodes, "path": LEASE_PATH})
            before = heartbeats_counted(our_base)
            for _ in range(args.rounds):
                for name, port in (("bare", bare_port), ("registry", our_port)):
                    run = load(
                        f"http://127.0.0.1:{port}", script, args.duration, args.connections, name
                    )
                    runs.append(run)
                    print(
                        f"{name:>8}: {run.rate:9,.0f}/s  p50 {run.p50_ms:6.2f} ms  "
                        f"p99 {run.p99_ms:6.2f} ms  non-2xx {run.non2xx}  errors {run.errors}",
                        flush=True,
                    )
            answered = sum(r.requests - r.non2xx for r in runs if r.server == "registry")
            counted = heartbeats_counted(our_base) - before
    finally:
        stop(bare)
        stop(ours)
    # wrk may count a request cut off at the end of a round; allow one per connection.
    counted_ok = abs(counted - answered) <= args.connections * args.rounds
    section = render(runs, args, counted_ok)
    print(section)
    if args.write:
        write_section(args.write, section_name(args.store), section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
