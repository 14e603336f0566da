"""In-process benchmark of the Registry: register, heartbeat and find_nodes at 10,000 nodes.

A benchmark, not a test: it measures the real ``Registry`` on the default in-memory store with
``SystemClock``, prints a table, and with ``--write`` replaces its own section of
``docs/benchmarks.md`` (between the ``bench_registry`` markers). See ``bench/README.md``.

    python bench/bench_registry.py [--nodes 10000] [--seconds 2] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import shlex
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node_registry import Registry, RegistryEntry, SystemClock
from sections import write_section

# -- the synthetic fleet ------------------------------------------------------------------------

KINDS: tuple[tuple[str, int], ...] = (
    ("agent", 60),
    ("tool", 15),
    ("storage", 5),
    ("gateway", 5),
    ("orchestrator", 5),
    ("monitoring", 5),
    ("external", 5),
)
ZONES = (
    "eu-west-1a",
    "eu-west-1b",
    "eu-west-1c",
    "us-east-1a",
    "us-east-1b",
    "us-east-1c",
    "ap-south-1a",
    "ap-south-1b",
)
TEAMS = (
    "search",
    "billing",
    "research",
    "platform",
    "support",
    "growth",
    "security",
    "data",
    "infra",
    "mobile",
    "web",
    "ml",
)
ENVS: tuple[tuple[str, int], ...] = (("prod", 60), ("staging", 25), ("dev", 15))
CAPABILITIES = (
    "python",
    "code_generation",
    "code_review",
    "sql",
    "web_search",
    "summarization",
    "translation",
    "image_generation",
    "speech_to_text",
    "text_to_speech",
    "embedding",
    "planning",
    "data_analysis",
    "testing",
    "documentation",
    "shell",
    "git",
    "docker",
    "kubernetes",
    "terraform",
    "rust",
    "javascript",
    "go",
    "java",
    "math",
    "vision",
    "ocr",
    "retrieval",
    "scheduling",
    "alerting",
)
CPUS = ("500m", "1", "2", "4", "8", "16")
MEMORIES = ("512Mi", "1Gi", "2Gi", "4Gi", "8Gi", "16Gi", "32Gi", "64Gi")
GPUS = ("1", "2", "4", "8")


def _weighted(rng: random.Random, choices: Sequence[tuple[str, int]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def make_passports(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` valid v1 passport documents, the same for the same seed."""
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = []
    for i in range(count):
        kind = _weighted(rng, KINDS)
        name = f"{kind}-{i:05d}"
        resources = {"cpu": rng.choice(CPUS), "memory": rng.choice(MEMORIES)}
        if rng.random() < 0.2:
            resources["gpu"] = rng.choice(GPUS)
        capabilities = rng.sample(CAPABILITIES, rng.randint(3, 6))
        status: dict[str, Any] = {"phase": "Running" if rng.random() < 0.95 else "Pending"}
        if rng.random() < 0.02:
            status["conditions"] = [{"type": "Ready", "status": "False", "reason": "Overloaded"}]
        docs.append(
            {
                "apiVersion": "ai_team.io/v1",
                "kind": "NodePassport",
                "metadata": {
                    "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "name": name,
                    "nodeType": kind,
                    "labels": {
                        "zone": rng.choice(ZONES),
                        "team": rng.choice(TEAMS),
                        "env": _weighted(rng, ENVS),
                    },
                },
                "spec": {
                    "capabilities": [
                        {"name": c, "version": f"1.{rng.randint(0, 9)}"} for c in capabilities
                    ],
                    "resources": resources,
                    "endpoint": {
                        "protocol": "mindbus",
                        "address": "amqp://bus:5672",
                        "queue": name,
                    },
                    "maxConcurrentTasks": rng.choice((1, 2, 4, 8)),
                },
                "status": status,
            }
        )
    return docs


# The selectors, as a caller passes them (parsing is part of each find_nodes call).


def one_percent_labels(docs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The zone + team pair whose nodes are closest to 1 % of the fleet (about 100 of 10,000)."""
    counts = Counter(
        (doc["metadata"]["labels"]["zone"], doc["metadata"]["labels"]["team"]) for doc in docs
    )
    wanted = len(docs) / 100
    zone, team = min(sorted(counts), key=lambda pair: abs(counts[pair] - wanted))
    return {"zone": zone, "team": team}


def as_not_in(labels: dict[str, str]) -> dict[str, Any]:
    """The same nodes as ``matchLabels: labels`` (every node has a zone and a team), written
    with NotIn so the index cannot narrow anything: the index's speed-up on one result set."""
    every = {"zone": ZONES, "team": TEAMS}
    return {
        "matchExpressions": [
            {"key": key, "operator": "NotIn", "values": [v for v in every[key] if v != value]}
            for key, value in labels.items()
        ]
    }


THREE_EXPRESSIONS: dict[str, Any] = {
    "matchExpressions": [
        {"key": "zone", "operator": "In", "values": list(ZONES[:3])},
        {"key": "memory", "operator": "Gt", "values": ["4Gi"]},
        {"key": "capability.python", "operator": "Exists"},
    ]
}
# NotIn narrows nothing and every node has ``memory``: all nodes are candidates.
UNINDEXED: dict[str, Any] = {
    "matchExpressions": [
        {"key": "zone", "operator": "NotIn", "values": list(ZONES[:2])},
        {"key": "memory", "operator": "Gt", "values": ["16Gi"]},
    ]
}

# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Throughput:
    name: str
    rates: list[float]  # calls per second, one per repetition
    calls: int
    target: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.median >= self.target


@dataclass
class Latency:
    name: str
    samples_ns: list[int]
    results: int
    target_ms: float | None = None

    def _quantile(self, q: float) -> float:
        ordered = sorted(self.samples_ns)
        # Nearest rank: the smallest sample with at least q of the samples at or below it.
        rank = max(1, math.ceil(len(ordered) * q))
        return ordered[rank - 1] / 1e6

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ns) / 1e6

    @property
    def p90_ms(self) -> float:
        return self._quantile(0.90)

    @property
    def p99_ms(self) -> float:
        return self._quantile(0.99)

    @property
    def met(self) -> bool | None:
        return None if self.target_ms is None else self.median_ms <= self.target_ms


def measure_register(registry: Registry, docs: list[dict[str, Any]]) -> Throughput:
    """Register every passport once, timed in chunks (the registry grows as it goes)."""
    chunk = max(1, len(docs) // 10)
    rates: list[float] = []
    register = registry.register
    for start in range(0, len(docs), chunk):
        part = docs[start : start + chunk]
        began = time.perf_counter()
        for doc in part:
            register(doc)
        rates.append(len(part) / (time.perf_counter() - began))
    return Throughput("register()", rates, len(docs))


def renew_all(registry: Registry, ids: Sequence[str]) -> None:
    """One heartbeat per node, so every lease is fresh (health is read from the clock)."""
    for node_id in ids:
        registry.heartbeat(node_id)


@dataclass
class Loop:
    name: str
    one_pass: Callable[[], None]
    calls_per_pass: int
    target: float | None = None


def measure_rates(loops: Sequence[Loop], seconds: float, repetitions: int) -> list[Throughput]:
    """Calls/s of each loop, ``repetitions`` times, interleaved; ``seconds`` per loop in all."""
    passes: list[int] = []
    for loop in loops:
        began = time.perf_counter()
        loop.one_pass()  # calibration (also a warm-up)
        passes.append(max(1, round(seconds / repetitions / (time.perf_counter() - began))))
    rates: list[list[float]] = [[] for _ in loops]
    for _ in range(repetitions):
        for loop, count, measured in zip(loops, passes, rates, strict=True):
            began = time.perf_counter()
            for _ in range(count):
                loop.one_pass()
            measured.append(count * loop.calls_per_pass / (time.perf_counter() - began))
    return [
        Throughput(loop.name, measured, count * loop.calls_per_pass * repetitions, loop.target)
        for loop, count, measured in zip(loops, passes, rates, strict=True)
    ]


@dataclass
class Case:
    name: str
    call: Callable[[], Sequence[RegistryEntry]]
    target_ms: float | None = None
    max_calls: int = 5_000


def measure_latencies(
    cases: Sequence[Case],
    seconds: float,
    *,
    rounds: int,
    min_calls: int,
    before_round: Callable[[], None],
) -> list[Latency]:
    """Time every call of every case, interleaved: ``rounds`` rounds, each giving each case
    ``seconds / rounds``, so a burst of noise on a shared machine does not hit one case only."""
    results = [len(case.call()) for case in cases]  # warm-up; fills the quantity cache too
    samples: list[list[int]] = [[] for _ in cases]
    clock = time.perf_counter_ns
    budget = int(seconds / rounds * 1e9)
    least = math.ceil(min_calls / rounds)
    for _ in range(rounds):
        before_round()
        for case, taken in zip(cases, samples, strict=True):
            case.call()  # untimed: the first call after another case's
            most = math.ceil(case.max_calls / rounds)
            deadline = clock() + budget
            calls = 0
            while calls < most and (calls < least or clock() < deadline):
                began = clock()
                case.call()
                taken.append(clock() - began)
                calls += 1
    return [
        Latency(case.name, taken, found, case.target_ms)
        for case, taken, found in zip(cases, samples, results, strict=True)
    ]


# -- reporting ------------------------------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    uname = platform.uname()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    usable = f" ({affinity} usable)" if affinity not in (None, os.cpu_count()) else ""
    cpus = f"{os.cpu_count()}{usable}"
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": cpus,
        "processor": platform.processor() or uname.machine,
        "cpu model": model or "unknown",
        "system": f"{uname.system} {uname.release} {uname.machine}",
        "load average at start": load,
    }


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def render(
    *,
    command: str,
    date: str,
    facts: dict[str, str],
    nodes: int,
    gc_note: str,
    throughputs: list[Throughput],
    latencies: list[Latency],
    ratios: list[tuple[str, str]],
) -> str:
    """The markdown section (also what is printed)."""
    lines = [
        "## Registry, in process (`bench/bench_registry.py`)",
        "",
        f"Command: `{command}`  ",
        f"Date: {date}  ",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in facts.items()),
        "",
        f"{nodes:,} seeded-random passports (7 kinds, 8 zones, 12 teams, 3-6 capabilities of 30, "
        "cpu/memory/gpu quantities), the real `Registry` on the default in-memory store with "
        "`SystemClock`, no controller thread. Selectors are passed as dicts, so parsing is "
        "part of every `find_nodes` call. Garbage collection stays on: "
        f"{gc_note}, which is what shows in the tail latencies. Cases are interleaved in rounds "
        "so noise spreads over all of them; Min is the best single call, the cost without "
        "interference.",
        "",
        "| Throughput | Median | Min | Max | Calls | Target | Met |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in throughputs:
        target = "—" if t.target is None else f"≥ {_rate(t.target)}"
        lines.append(
            f"| `{t.name}` | {_rate(t.median)} | {_rate(min(t.rates))} | {_rate(max(t.rates))} "
            f"| {t.calls:,} | {target} | {_verdict(t.met)} |"
        )
    lines += [
        "",
        "| Latency | Median | p90 | p99 | Min | Results | Calls | Target (median) | Met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for lat in latencies:
        target = "—" if lat.target_ms is None else f"≤ {lat.target_ms:g} ms"
        lines.append(
            f"| {lat.name} | {_ms(lat.median_ms)} | {_ms(lat.p90_ms)} | {_ms(lat.p99_ms)} "
            f"| {_ms(min(lat.samples_ns) / 1e6)} | {lat.results:,} | {len(lat.samples_ns):,} "
            f"| {target} | {_verdict(lat.met)} |"
        )
    lines += ["", "| Ratio (same run) | Value |", "|---|---:|"]
    lines += [f"| {label} | {value} |" for label, value in ratios]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=10_000, help="fleet size (default 10000)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="time budget per measurement, in seconds (default 2)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="random seed of the fleet")
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile the hot paths with pyinstrument and print the call trees",
    )
    return parser.parse_args(argv)


def profile_hot_paths(
    registry: Registry, ids: Sequence[str], labels: dict[str, Any], seconds: float
) -> None:
    """pyinstrument over heartbeat and the two indexed find_nodes calls.

    pyinstrument hooks every Python call, which inflates calls of a microsecond or two; the
    shares are still indicative. ``py-spy record`` (see bench/README.md) does not perturb.
    """
    from pyinstrument import Profiler

    cases: list[tuple[str, Callable[[], object]]] = [
        ("heartbeat", lambda: renew_all(registry, ids)),
        (
            "find_nodes matchLabels",
            lambda: registry.find_nodes(selector={"matchLabels": labels}),
        ),
        ("find_nodes 3 expressions", lambda: registry.find_nodes(selector=THREE_EXPRESSIONS)),
    ]
    for name, call in cases:
        renew_all(registry, ids)
        profiler = Profiler(interval=0.0002)
        deadline = time.perf_counter() + seconds
        profiler.start()
        while time.perf_counter() < deadline:
            call()
        profiler.stop()
        print(f"\n### profile: {name}\n")
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seconds: float = args.seconds
    command = "python bench/bench_registry.py " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine_facts()

    docs = make_passports(args.nodes, args.seed)
    labels = one_percent_labels(docs)
    match_labels = {"matchLabels": labels}
    match_labels_as_not_in = as_not_in(labels)
    clock = SystemClock()
    registry = Registry(clock=clock)
    gc.collect()
    try:
        registered = measure_register(registry, docs)
        ids = [entry.node_id for entry in registry.list_nodes().items]
        began = time.perf_counter()
        gc.collect()
        gc_note = (
            f"one full collection of the {len(gc.get_objects()):,} tracked objects took "
            f"{(time.perf_counter() - began) * 1000:.0f} ms"
        )
        random.Random(args.seed).shuffle(ids)  # round-robin in an order unrelated to names

        heartbeat = registry.heartbeat
        now = clock.now

        def heartbeat_pass() -> None:
            for node_id in ids:
                heartbeat(node_id)

        def clock_pass() -> None:
            for _ in ids:
                now()

        gc.collect()
        beats, clock_reads = measure_rates(
            [
                Loop("heartbeat(node_id)", heartbeat_pass, len(ids), target=100_000),
                Loop("SystemClock.now() alone (reference)", clock_pass, len(ids)),
            ],
            seconds,
            repetitions=7,
        )

        def fresh_leases() -> None:
            renew_all(registry, ids)  # every lease fresh, however long the run
            gc.collect()

        find = registry.find_nodes
        shown = ", ".join(f"{k}={v}" for k, v in labels.items())
        cases = [
            Case(
                f"a. `find_nodes` matchLabels {shown} (~1 %)",
                lambda: find(selector=match_labels),
                target_ms=1.0,
            ),
            Case(
                "a-scan. the same nodes as zone NotIn (7) + team NotIn (11): no index help",
                lambda: find(selector=match_labels_as_not_in),
                target_ms=20.0,  # an unindexed selector (c) with a small result
            ),
            Case(
                "b. `find_nodes` zone In (3) + memory Gt 4Gi + capability.python Exists",
                lambda: find(selector=THREE_EXPRESSIONS),
                target_ms=20.0,
            ),
            Case(
                "c. `find_nodes` zone NotIn (2) + memory Gt 16Gi: narrowed by the quantity index",
                lambda: find(selector=UNINDEXED),
                target_ms=20.0,
            ),
            Case(
                'd. `find_nodes(kind="agent", selector=a, only_healthy=True)`',
                lambda: find(kind="agent", selector=match_labels, only_healthy=True),
            ),
            Case(
                "e. `list_nodes()`, every node (reference)",
                lambda: registry.list_nodes().items,
                max_calls=200,
            ),
        ]
        latencies = measure_latencies(
            cases, seconds, rounds=4, min_calls=30, before_round=fresh_leases
        )
        by_labels, by_labels_scan, three, unindexed, orchestrator, listed = latencies
        if by_labels_scan.results != by_labels.results:
            print(f"warning: a-scan found {by_labels_scan.results} nodes, a {by_labels.results}")

        per_entry_us = listed.median_ms * 1000 / max(1, listed.results)
        ratios = [
            (
                "a-scan / a: the label index's speed-up on the same result set",
                f"{by_labels_scan.median_ms / by_labels.median_ms:.1f}x",
            ),
            (
                "c / b: NotIn + Gt (quantity index) vs the label-indexed expression selector",
                f"{unindexed.median_ms / three.median_ms:.1f}x",
            ),
            (
                "d / a: kind + only_healthy on top of the matchLabels selector",
                f"{orchestrator.median_ms / by_labels.median_ms:.2f}x",
            ),
            (
                "share of a heartbeat spent reading the clock",
                f"{beats.median / clock_reads.median:.0%}",
            ),
            ("`list_nodes` cost per entry returned", f"{per_entry_us:.1f} µs"),
        ]
        section = render(
            command=command,
            date=date,
            facts=facts,
            nodes=args.nodes,
            gc_note=gc_note,
            throughputs=[registered, beats, clock_reads],
            latencies=latencies,
            ratios=ratios,
        )
        print(section)
        if args.write is not None:
            write_section(args.write, "bench_registry", section)
            print(f"\nwrote the bench_registry section of {args.write}")
        if args.profile:
            profile_hot_paths(registry, ids, labels, seconds)
    finally:
        registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
