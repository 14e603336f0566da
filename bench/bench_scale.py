"""Linear stalls at 10k-100k nodes: lists, /metrics, GC, matchLabels, heartbeats beside them.

For each size, a server process (pinned to CPU 0) stores that many seeded-random passports
in process (``bench_registry.make_passports``), starts the real app under uvicorn and, on its
own loop before any load, measures: the CPU of a full NodePassport list and of every page of
a paginated one (``limit=500``), of a ``/metrics`` scrape, a full garbage collection's pause,
``find_nodes`` with a ~1 % matchLabels selector, and a Table list (``kubectl get``'s shape,
first and again). Then this process (pinned to CPU 1, raw asyncio sockets) renews leases open
loop for ``--seconds`` twice: alone, then beside a full list every 2 s, a scrape every second
and a full collection in the server every 2 s; the server records every collection of the
oldest generation it runs (``gc.callbacks``). Last, the server writes a label on every node
while one watcher follows (``mass_change``): the CPU of the writes and of the watch delivering
them, then of the first list after them.

``--before SRC`` runs each size a second time, interleaved, with another tree's
``node_registry`` (e.g. ``git archive main src | tar -x -C /tmp/before``): a before/after of
the same command in one run.

    python bench/bench_scale.py --sizes 10000,50000,100000 --seconds 8 \\
        --before /tmp/before/src --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadgen import API, ROOT, Connection, Tally, free_port, lease, open_loop, pin_self, pinned
from loadgen import request as raw_request
from sections import write_section

BENCH = Path(__file__).resolve().parent
#: Long enough that no node registered at the start turns NotReady during the run.
HEARTBEAT = {
    "interval_seconds": 300,
    "not_ready_after_seconds": 600,
    "ttl_seconds": 900,
    "grace_period_seconds": 60,
}
RENEWALS_PER_SECOND = 500
PAGE = 500
#: During the loaded phase the server runs a full collection this often (seconds).
COLLECT_EVERY = 2.0
CONTINUE = re.compile(rb'"continue":"([^"]+)"')

# -- the server process -------------------------------------------------------------------


async def _asgi(app: Any, path: str, accept: str | None = None) -> tuple[int, int, bytes]:
    """GET ``path`` straight through the ASGI app: (status, body bytes, the body's start)."""
    status, size, head = 0, 0, b""
    asked = [False]
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        # The request once; then, as a server does, nothing until the client leaves.
        if not asked[0]:
            asked[0] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size, head
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if not head:
                head = body[:1024]
            size += len(body)

    await app(_get_scope(path, accept), receive, send)
    done.set()
    return status, size, head


async def _watch_until(app: Any, path: str, count: int, opened: asyncio.Event) -> int:
    """Watch ``path`` through the ASGI app until ``count`` events arrived; how many did."""
    events = [0]
    enough = asyncio.Event()
    asked = [False]

    async def receive() -> dict[str, Any]:
        if not asked[0]:
            asked[0] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            opened.set()
        elif message["type"] == "http.response.body":
            events[0] += message.get("body", b"").count(b"\n")
            if events[0] >= count:
                enough.set()

    await app(_get_scope(path), receive, send)
    return events[0]


def _get_scope(path: str, accept: str | None = None) -> dict[str, Any]:
    """The ASGI scope of ``GET path`` from loopback."""
    target, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"bench")] + ([(b"accept", accept.encode())] if accept else []),
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "root_path": "",
    }


TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
#: Label value written on every node by the mass change.
ROLLOUT = "rollout"


async def mass_change(app: Any, store: Any, registry: Any) -> dict[str, Any]:
    """A label written on every node (a rollout) while one watcher follows, then the first
    list: the CPU of the writes and the watch delivering them, then of that list."""
    from node_registry.store import NodeRecord

    since = registry.sync.resource_version
    stored, _ = store.list()
    nodes = list(stored.values())
    opened = asyncio.Event()
    path = f"{API}/nodepassports?watch=true&resourceVersion={since}"
    watcher = asyncio.create_task(_watch_until(app, path, len(nodes), opened))
    await opened.wait()
    start = time.process_time()
    for i, versioned in enumerate(nodes):
        record = versioned.record
        labels = {**record.passport.metadata.labels, ROLLOUT: "2"}
        metadata = record.passport.metadata.model_copy(update={"labels": labels})
        passport = record.passport.model_copy(update={"metadata": metadata})
        store.update(
            NodeRecord(passport, record.registered_at), expected_revision=versioned.revision
        )
        if i % 1000 == 999:
            await asyncio.sleep(0)  # as writes arriving over time: the watch keeps up
    delivered = await watcher
    changes = time.process_time() - start
    full = f"{API}/nodepassports"
    return {
        "changed": len(nodes),
        "delivered": delivered,
        "change_and_watch_cpu": changes,
        "list_after_change_cpu": await _cpu(lambda: _asgi(app, full), 1),
        "list_after_change_again_cpu": await _cpu(lambda: _asgi(app, full), 1),
        "rss_after_change_mib": _rss_mib(),
    }


async def _cpu(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Median CPU seconds of ``call`` (process time: the loop is stalled that long)."""
    spent = []
    for _ in range(repeat):
        start = time.process_time()
        await call()
        spent.append(time.process_time() - start)
    return statistics.median(spent)


async def _paginated(app: Any) -> None:
    path = f"{API}/nodepassports?limit={PAGE}"
    token: str | None = None
    while True:
        status, _, head = await _asgi(app, path if token is None else f"{path}&continue={token}")
        assert status == 200, status
        # The list's metadata comes first: the token is read there, not by parsing the page.
        found = CONTINUE.search(head)
        if found is None:
            return
        token = found.group(1).decode()


def _collections(pauses: list[float]) -> None:
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(callback)


TEMPLATES = 2000


def names(size: int, seed: int) -> list[str]:
    """The nodes' names: a template's kind and the node's number."""
    from bench_registry import make_passports

    kinds = [doc["metadata"]["nodeType"] for doc in make_passports(TEMPLATES, seed)]
    return [f"{kinds[i % TEMPLATES]}-{i:06d}" for i in range(size)]


def fleet(size: int, seed: int) -> list[Any]:
    """``size`` passports: ``TEMPLATES`` validated ones (``make_passports``), each copied
    with its own name, uid and labels (zone, team, env drawn as ``make_passports`` does)
    without validating it again: 100,000 validations would take minutes of the budget."""
    import random
    import uuid

    from bench_registry import ENVS, TEAMS, ZONES, _weighted, make_passports
    from node_registry.passport import load_passport

    templates = [load_passport(doc) for doc in make_passports(TEMPLATES, seed)]
    rng = random.Random(seed + 1)
    passports = []
    for i, name in enumerate(names(size, seed)):
        template = templates[i % TEMPLATES]
        labels = {"zone": rng.choice(ZONES), "team": rng.choice(TEAMS), "env": _weighted(rng, ENVS)}
        uid = uuid.UUID(int=rng.getrandbits(128), version=4)
        metadata = template.metadata.model_copy(update={"name": name, "uid": uid, "labels": labels})
        # Shallow: a copy shares its template's spec objects, so a full GC walks fewer
        # objects than with as many passports registered one by one (the report says so).
        passports.append(template.model_copy(update={"metadata": metadata}))
    return passports


async def serve(size: int, port: int, seed: int) -> None:
    from collections import Counter
    from datetime import UTC, datetime

    import uvicorn

    from node_registry.config import load_settings
    from node_registry.registry import AsyncRegistry
    from node_registry.server import create_app
    from node_registry.store import MemoryStore, NodeRecord

    # Lag-based shedding off: the stalls are what is measured, not how reads are refused.
    server = {"port": port, "shed_reads_lag_seconds": 3600.0}
    # The mass change's watcher may fall the whole change behind: it must not be dropped.
    watch = {"history_size": size + 10_000, "backlog_events": size + 10_000}
    settings = load_settings(None, heartbeat=HEARTBEAT, server=server, watch=watch)
    store = MemoryStore()
    registry = AsyncRegistry(store, settings=settings)
    started = time.perf_counter()
    passports = fleet(size, seed)
    now = datetime.now(UTC)
    for passport in passports:
        store.create(NodeRecord(passport, now), renewed_at=now)
    loaded = time.perf_counter() - started
    pairs = Counter((p.metadata.labels["zone"], p.metadata.labels["team"]) for p in passports)
    zone, team = min(sorted(pairs), key=lambda pair: abs(pairs[pair] - size / 100))
    app = create_app(registry, settings)
    config = uvicorn.Config(app, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    selector = {"matchLabels": {"zone": zone, "team": team}}
    full = f"{API}/nodepassports"
    heavy = 1 if size > 20_000 else 3
    found = registry.sync.find_nodes(selector=selector)
    match_times = []
    for _ in range(200):
        start = time.perf_counter()
        registry.sync.find_nodes(selector=selector)
        match_times.append(time.perf_counter() - start)
    figures = {
        "size": size,
        "load_seconds": loaded,
        "list_cpu_first": await _cpu(lambda: _asgi(app, full), 1),
        "list_cpu": await _cpu(lambda: _asgi(app, full), heavy),
        "list_bytes": (await _asgi(app, full))[1],
        "paginated_cpu": await _cpu(lambda: _paginated(app), heavy),
        "metrics_cpu": await _cpu(lambda: _asgi(app, "/metrics"), 5),
        "gc_pause": await _cpu(_collect, 3),
        "tracked_objects": len(gc.get_objects()),
        "match_ms": statistics.median(match_times) * 1000,
        "match_results": len(found),
        "table_cpu_first": await _cpu(lambda: _asgi(app, full, TABLE), 1),
        "table_cpu": await _cpu(lambda: _asgi(app, full, TABLE), heavy),
        "rss_mib": _rss_mib(),
    }
    pauses: list[float] = []
    _collections(pauses)
    collecting = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, collecting.set)
    collector = asyncio.create_task(_collect_every(COLLECT_EVERY, collecting))

    changing: list[asyncio.Task[None]] = []

    def report() -> None:
        # Asked for before SIGTERM: uvicorn re-raises that one once stopped, which ends
        # the process before anything after ``serve()`` would run.
        print("GC " + json.dumps({"pauses": pauses, "rss_mib": _rss_mib()}), flush=True)
        collector.cancel()  # the mass change is measured without scheduled collections
        changing.append(asyncio.create_task(_report_mass_change()))

    async def _report_mass_change() -> None:
        figures = await mass_change(app, store, registry)
        print("MASS " + json.dumps(figures), flush=True)

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, report)
    print("READY " + json.dumps(figures), flush=True)
    await task
    collector.cancel()


async def _collect() -> None:
    gc.collect()


async def _collect_every(seconds: float, start: asyncio.Event) -> None:
    """Once ``start`` is set, a full collection every ``seconds``: what a registry under
    writes runs now and then, here on a schedule so that both trees pay the same number."""
    await start.wait()
    while True:
        await asyncio.sleep(seconds)
        gc.collect()


def _rss_mib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


# -- this process: the load ---------------------------------------------------------------


async def _read_loop(port: int, path: str, every: float, stop: asyncio.Event, tally: Tally) -> None:
    conn = Connection(port)
    raw = raw_request("GET", path)
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + every
        start = loop.time()
        try:
            async with asyncio.timeout(60):
                status, _ = await conn.call(raw)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            tally.errors += 1
            conn.close()
        else:
            tally.latencies.append(loop.time() - start)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, due - loop.time()))
    conn.close()


async def _renew(port: int, names: list[str], seconds: float) -> Tally:
    count = int(seconds * RENEWALS_PER_SECOND)
    beats = [(i / RENEWALS_PER_SECOND, lease(names[i * 7919 % len(names)])) for i in range(count)]
    tally = Tally()
    await open_loop(port, beats, tally, connections=32, timeout=30)
    return tally


async def load(port: int, names: list[str], seconds: float, server: int) -> dict[str, Any]:
    quiet = await _renew(port, names, seconds)
    os.kill(server, signal.SIGUSR1)  # full collections from now on, beside the reads
    stop = asyncio.Event()
    lists, scrapes = Tally(), Tally()
    readers = [
        asyncio.create_task(_read_loop(port, f"{API}/nodepassports", 2.0, stop, lists)),
        asyncio.create_task(_read_loop(port, "/metrics", 1.0, stop, scrapes)),
    ]
    busy = await _renew(port, names, seconds)
    stop.set()
    await asyncio.gather(*readers)
    return {"quiet": _summary(quiet), "busy": _summary(busy), "lists": _summary(lists),
            "scrapes": _summary(scrapes)}  # fmt: skip


def _summary(tally: Tally) -> dict[str, Any]:
    return {
        "count": len(tally.latencies),
        "p50": tally.p50(),
        "p99": tally.pct(0.99),
        "max": tally.pct(1.0),
        "timeouts": tally.timeouts,
        "errors": tally.errors,
        "non_2xx": len(tally.latencies) - tally.ok(),
    }


def run_one(size: int, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_REGISTRY_")}
    env["PYTHONPATH"] = f"{src}{os.pathsep}{BENCH}"
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(size)]
    command += ["--port", str(port), "--seed", str(args.seed)]
    process = subprocess.Popen(
        pinned(0, command), stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"server for {size} nodes did not start: {line!r}")
        figures: dict[str, Any] = json.loads(line.removeprefix("READY "))
        load_run = load(port, names(size, args.seed), args.seconds, process.pid)
        figures["load"] = asyncio.run(load_run)
        process.send_signal(signal.SIGUSR2)
        line = process.stdout.readline()
        if line.startswith("GC "):
            figures["gc"] = json.loads(line.removeprefix("GC "))
        line = process.stdout.readline()
        if line.startswith("MASS "):
            figures["mass"] = json.loads(line.removeprefix("MASS "))
        process.terminate()
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return figures


# -- the report ---------------------------------------------------------------------------


def render(results: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    command = f"python bench/bench_scale.py --sizes {args.sizes} --seconds {args.seconds:g}"
    if args.before:
        command += " --before BEFORE/src"
    lines = [
        "## Linear stalls at scale (`bench/bench_scale.py`)",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average at start {args.load_average}.",
        "",
        "The server process (pinned to CPU 0) stores N seeded-random passports in process "
        f"({TEMPLATES:,} validated ones from `bench_registry.make_passports`, copied with their "
        "own names, uids and labels; a copy shares its template's spec objects, so a full "
        "GC walks about half the objects of as many passports registered one by one, and the "
        "*before* GC pauses are understated), "
        "serves the real app under uvicorn, and measures on its own loop before any load: "
        f"CPU of a full NodePassport list, of all pages of one with `limit={PAGE}`, of a "
        "`/metrics` scrape, a full `gc.collect()` pause, `find_nodes` with a ~1 % matchLabels "
        f"selector (median of 200). Then {RENEWALS_PER_SECOND} lease renewals/s, open loop "
        f"over 32 connections, for {args.seconds:g} s alone and {args.seconds:g} s beside a "
        "full list every 2 s, a scrape every second and a full `gc.collect()` in the server "
        f"every {COLLECT_EVERY:g} s (load generator pinned to CPU 1). "
        "Lag-based shedding of reads is off, so every list is served and its stall shows. "
        "*before* is the tree given with `--before`, *after* this branch, interleaved per size.",
        "",
        "| N | code | first list CPU | list CPU again | all pages CPU | /metrics CPU "
        "| full GC pause | objects a full GC walks | matchLabels | results | µs per result | RSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results:
        per = r["match_ms"] * 1000 / max(r["match_results"], 1)
        lines.append(
            f"| {r['size']:,} | {name} | {r['list_cpu_first'] * 1000:,.0f} ms "
            f"| {r['list_cpu'] * 1000:,.0f} ms "
            f"| {r['paginated_cpu'] * 1000:,.0f} ms | {r['metrics_cpu'] * 1000:,.1f} ms "
            f"| {r['gc_pause'] * 1000:,.0f} ms | {r['tracked_objects']:,} "
            f"| {r['match_ms']:.3f} ms | {r['match_results']:,} | {per:.2f} | "
            f"{r['rss_mib']:,.0f} MiB |"
        )
    lines += [
        "",
        "Heartbeats (lease renewals) alone, then beside lists, scrapes and full collections; "
        "the server's collections of the oldest generation (the scheduled ones included):",
        "",
        "| N | code | alone p50 | p99 | beside lists p50 | p99 | max | timeouts "
        "| lists done | list p50 | scrapes | scrape p50 | gen-2 GCs | longest GC |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results:
        q, b = r["load"]["quiet"], r["load"]["busy"]
        lists, scrapes = r["load"]["lists"], r["load"]["scrapes"]
        pauses = r.get("gc", {}).get("pauses", [])
        longest = f"{max(pauses) * 1000:,.0f} ms" if pauses else "—"
        lines.append(
            f"| {r['size']:,} | {name} | {q['p50']:.1f} ms | {q['p99']:.1f} ms "
            f"| {b['p50']:.1f} ms | {b['p99']:,.1f} ms | {b['max']:,.1f} ms | {b['timeouts']} "
            f"| {lists['count']} | {lists['p50']:,.0f} ms | {scrapes['count']} "
            f"| {scrapes['p50']:,.1f} ms | {len(pauses)} | {longest} |"
        )
    return "\n".join(lines + render_second_pass(results))


def render_second_pass(results: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Issue #14's second pass: Table lists, and the first list after a mass change."""
    if not all("mass" in r and "table_cpu" in r for _, r in results):
        return []
    lines = [
        "",
        "Table lists (`Accept: application/json;as=Table`, `kubectl get`'s), after the JSON "
        "lists above; then, after the loaded phase, a label written on every node while one "
        "watcher follows from before it (the writes and the watch's delivery of every event), "
        "and the first JSON list after it:",
        "",
        "| N | code | Table list CPU first | again | change + watch CPU | events delivered "
        "| first list after the change | again | RSS after the lists | after the change |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results:
        m = r["mass"]
        lines.append(
            f"| {r['size']:,} | {name} | {r['table_cpu_first'] * 1000:,.0f} ms "
            f"| {r['table_cpu'] * 1000:,.0f} ms | {m['change_and_watch_cpu'] * 1000:,.0f} ms "
            f"| {m['delivered']:,} | {m['list_after_change_cpu'] * 1000:,.0f} ms "
            f"| {m['list_after_change_again_cpu'] * 1000:,.0f} ms | {r['rss_mib']:,.0f} MiB "
            f"| {m['rss_after_change_mib']:,.0f} MiB |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--before", type=Path, help="another tree's src/ to compare with")
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port, args.seed))
        return 0
    pin_self(1)
    args.load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results: list[tuple[str, dict[str, Any]]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        variants = [("before", args.before)] if args.before else []
        for name, src in [*variants, ("after", ROOT / "src")]:
            results.append((name, run_one(size, src, args)))
            print(json.dumps(results[-1]), file=sys.stderr)
            if args.json:  # kept as it goes: a run cut short keeps what it measured
                args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    section = render(results, args)
    print(section)
    if args.write:
        write_section(args.write, "bench_scale", section)
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    sys.exit(code)
