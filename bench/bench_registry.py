"""In-process benchmark of the Registry: register, heartbeat and find_nodes at 10,000 nodes.

A benchmark, not a test: it measures the real ``Registry`` on the default in-memory store with
``SystemClock``, prints a table, and with ``--write`` replaces its own section of
``docs/benchmarks.md`` (between the ``bench_registry`` markers). See ``bench/README.md``.

    python bench/bench_registry.py [--nodes 10000] [--seconds 2] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node_registry import Registry, RegistryEntry, SystemClock

SECTION_START = "<!-- bench_registry:start -->"
SECTION_END = "<!-- bench_registry:end -->"

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
MATCH_LABELS: dict[str, Any] = {"matchLabels": {"zone": ZONES[0], "team": TEAMS[0]}}
# The same nodes as MATCH_LABELS (every node has a zone and a team), written so the index
# cannot narrow anything: the index's speed-up on an identical result set.
MATCH_LABELS_AS_NOT_IN: dict[str, Any] = {
    "matchExpressions": [
        {"key": "zone", "operator": "NotIn", "values": list(ZONES[1:])},
        {"key": "team", "operator": "NotIn", "values": list(TEAMS[1:])},
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
        rank = max(1, -(-len(ordered) * q // 1))
        return ordered[int(rank) - 1] / 1e6

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


def measure_heartbeat(
    registry: Registry, ids: Sequence[str], seconds: float, repetitions: int, target: float
) -> Throughput:
    heartbeat = registry.heartbeat
    began = time.perf_counter()
    for node_id in ids:  # calibration pass (also a warm-up)
        heartbeat(node_id)
    one_pass = time.perf_counter() - began
    passes = max(1, round(seconds / repetitions / one_pass))
    rates: list[float] = []
    for _ in range(repetitions):
        began = time.perf_counter()
        for _ in range(passes):
            for node_id in ids:
                heartbeat(node_id)
        rates.append(passes * len(ids) / (time.perf_counter() - began))
    return Throughput("heartbeat(node_id)", rates, passes * len(ids) * repetitions, target)


def measure_latency(
    name: str,
    call: Callable[[], Sequence[RegistryEntry]],
    seconds: float,
    *,
    min_calls: int,
    max_calls: int,
    target_ms: float | None = None,
) -> Latency:
    results = len(call())  # warm-up; also fills the quantity cache Gt/Lt read
    for _ in range(2):
        call()
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    while len(samples) < max_calls and (len(samples) < min_calls or clock() < deadline):
        began = clock()
        call()
        samples.append(clock() - began)
    return Latency(name, samples, results, target_ms)


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
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpus = f"{os.cpu_count()}" + (f" ({affinity} usable)" if affinity != os.cpu_count() else "")
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": cpus,
        "processor": platform.processor() or uname.machine,
        "cpu model": model or "unknown",
        "system": f"{uname.system} {uname.release} {uname.machine}",
    }


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def render(
    command: str,
    date: str,
    facts: dict[str, str],
    nodes: int,
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
        f"{nodes:,} seeded-random passports (7 kinds, 8 zones, 12 teams, 3–6 capabilities of 30, "
        "cpu/memory/gpu quantities), the real `Registry` on the default in-memory store with "
        "`SystemClock`, no controller thread. Selectors are passed as dicts, so parsing is "
        "part of every `find_nodes` call.",
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
        "| Latency | Median | p90 | p99 | Results | Calls | Target (median) | Met |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for lat in latencies:
        target = "—" if lat.target_ms is None else f"≤ {lat.target_ms:g} ms"
        lines.append(
            f"| {lat.name} | {_ms(lat.median_ms)} | {_ms(lat.p90_ms)} | {_ms(lat.p99_ms)} "
            f"| {lat.results:,} | {len(lat.samples_ns):,} | {target} | {_verdict(lat.met)} |"
        )
    lines += ["", "| Ratio (same run) | Value |", "|---|---:|"]
    lines += [f"| {label} | {value} |" for label, value in ratios]
    return "\n".join(lines)


def write_section(path: Path, section: str, cpus: str) -> None:
    """Replace this benchmark's section of ``path``, leaving the rest of the file as it is."""
    block = f"{SECTION_START}\n{section}\n{SECTION_END}"
    if path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        text = (
            "# Benchmarks\n\n"
            f"Figures are from one run on a shared {cpus.split()[0]}-core machine and are noisy: "
            "compare ratios from the same run rather than absolute numbers across runs.\n"
        )
    start = text.find(SECTION_START)
    end = text.find(SECTION_END, start + 1) if start >= 0 else -1
    if start >= 0 and end >= 0:
        text = text[:start] + block + text[end + len(SECTION_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


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


def profile_hot_paths(registry: Registry, ids: Sequence[str], seconds: float) -> None:
    """pyinstrument over heartbeat and the two indexed find_nodes calls (inflates tiny calls)."""
    from pyinstrument import Profiler

    cases: list[tuple[str, Callable[[], object]]] = [
        ("heartbeat", lambda: renew_all(registry, ids)),
        ("find_nodes matchLabels", lambda: registry.find_nodes(selector=MATCH_LABELS)),
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
    registry = Registry(clock=SystemClock())
    gc.collect()
    try:
        registered = measure_register(registry, docs)
        ids = [entry.node_id for entry in registry.list_nodes().items]
        rng = random.Random(args.seed)
        rng.shuffle(ids)  # round-robin in an order unrelated to names or insertion

        gc.collect()
        heartbeat = measure_heartbeat(registry, ids, seconds, repetitions=7, target=100_000)

        def latency(
            name: str,
            call: Callable[[], Sequence[RegistryEntry]],
            target_ms: float | None = None,
            max_calls: int = 5_000,
        ) -> Latency:
            renew_all(registry, ids)  # every lease fresh, whatever the run's length
            gc.collect()
            return measure_latency(
                name, call, seconds, min_calls=30, max_calls=max_calls, target_ms=target_ms
            )

        find = registry.find_nodes
        labels = latency(
            "a. `find_nodes` matchLabels zone+team (~1 %)",
            lambda: find(selector=MATCH_LABELS),
            target_ms=1.0,
        )
        labels_scan = latency(
            "a′. the same nodes as NotIn zone, NotIn team (no index help)",
            lambda: find(selector=MATCH_LABELS_AS_NOT_IN),
        )
        three = latency(
            "b. `find_nodes` zone In (3) + memory Gt 4Gi + capability.python Exists",
            lambda: find(selector=THREE_EXPRESSIONS),
            target_ms=20.0,
        )
        unindexed = latency(
            "c. `find_nodes` zone NotIn (2) + memory Gt 16Gi (worst case: no index help)",
            lambda: find(selector=UNINDEXED),
            target_ms=20.0,
        )
        orchestrator = latency(
            "d. `find_nodes(kind=\"agent\", selector=a, only_healthy=True)`",
            lambda: find(kind="agent", selector=MATCH_LABELS, only_healthy=True),
        )
        listed = latency(
            "e. `list_nodes()` (all nodes, reference)",
            lambda: registry.list_nodes().items,
            max_calls=200,
        )
        if labels_scan.results != labels.results:
            print(f"warning: a′ found {labels_scan.results}, a found {labels.results}")

        latencies = [labels, labels_scan, three, unindexed, orchestrator, listed]
        per_entry_us = listed.median_ms * 1000 / max(1, listed.results)
        ratios = [
            (
                "a′ / a: the label index's speed-up on the same result set",
                f"{labels_scan.median_ms / labels.median_ms:.1f}×",
            ),
            (
                "c / b: unindexed vs indexed expression selector",
                f"{unindexed.median_ms / three.median_ms:.1f}×",
            ),
            ("d / a: kind + only_healthy on top of matchLabels", f"{orchestrator.median_ms / labels.median_ms:.2f}×"),
            (
                "heartbeat / register throughput",
                f"{heartbeat.median / registered.median:.0f}×",
            ),
            ("`list_nodes` cost per entry returned", f"{per_entry_us:.2f} µs"),
        ]
        section = render(
            command, date, facts, args.nodes, [registered, heartbeat], latencies, ratios
        )
        print(section)
        if args.write is not None:
            write_section(args.write, section, facts["cpus"])
            print(f"\nwrote the {SECTION_START} section of {args.write}")
        if args.profile:
            profile_hot_paths(registry, ids, seconds)
    finally:
        registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
