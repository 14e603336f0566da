"""Capability verification by probe tasks: a walk-through (docs/verification.md).

Two copies of the example agent (examples/probe_agent.py) run on loopback ports, one
answering correctly and one with ``--wrong``; the verifier probes both with
examples/probes.yaml, records the results, says which node is trusted, and plans the next
rounds as time passes and a capability changes. Real HTTP, simulated time (``FakeClock``),
so the output is the same on every run:

    python examples/verification.py
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from node_registry import FakeClock
from node_registry.passport import NodePassport, load_passport
from node_registry.verification import (
    MemorySink,
    NodeView,
    VerificationPolicy,
    Verifier,
    is_trusted,
    plan,
    read_probes,
    verification_labels,
)

HERE = Path(__file__).resolve().parent


def _load_agent() -> Any:
    spec = importlib.util.spec_from_file_location("probe_agent", HERE / "probe_agent.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


probe_agent = _load_agent()


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port; yields its /tasks URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/tasks"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def show_plan(title: str, nodes: list[NodeView], clock: FakeClock, policy: Any) -> None:
    due = plan(nodes, clock.now(), policy)
    print(f"{title}: {len(due)} due")
    for item in due:
        print(f"  {item.node_name:<14} {item.capability:<16} {item.reason}")


async def main() -> None:
    clock = FakeClock()
    policy = VerificationPolicy(reverify_after_seconds=3600, retry_after_seconds=60)
    probes = read_probes(HERE / "probes.yaml")
    sink = MemorySink()
    with (
        running(probe_agent.create_app()) as right,
        running(probe_agent.create_app(wrong=True)) as wrong,
    ):
        passports: list[NodePassport] = [
            load_passport(probe_agent.passport("ai-agent-right", right)),
            load_passport(probe_agent.passport("ai-agent-wrong", wrong)),
        ]

        def views() -> list[NodeView]:
            return [NodeView(p, sink.results_for(p.node_id), "1") for p in passports]

        show_plan("t=0s", views(), clock, policy)
        async with Verifier(probes, clock=clock) as verifier:
            print("\nround 1")
            for verification in await verifier.run_due(views(), sink, policy):
                for r in verification.results:
                    print(f"  {r.node_name:<14} {r.capability:<16} {r.state:<8} {r.reason:<11}"
                          f" {r.message}")
            print()
            for p in passports:
                results = sink.results_for(p.node_id)
                print(f"{p.metadata.name}: trusted={is_trusted(p, results, policy)}")
                for key, value in verification_labels(p, results, policy).items():
                    print(f"  {key}={value}")
            print()
            clock.advance(30)
            show_plan("t=30s", views(), clock, policy)
            clock.advance(30)
            show_plan("t=60s", views(), clock, policy)
            print("\nround 2")
            for verification in await verifier.run_due(views(), sink, policy):
                for r in verification.results:
                    print(f"  {r.node_name:<14} {r.capability:<16} {r.state:<8} {r.reason:<11}"
                          f" failures in a row: {r.consecutive_failures}")
            # The right agent adds Go to code_generation's params: that claim is due again.
            doc = passports[0].to_dict()
            doc["spec"]["capabilities"][0]["params"]["languages"].append("go")
            passports[0] = load_passport(doc)
            print()
            show_plan("t=60s, after ai-agent-right changed its params", views(), clock, policy)


if __name__ == "__main__":
    asyncio.run(main())
