"""Membership baselines on a real etcd: OpenStack tooz's group API, and the same done by hand
with the raw aetcd client, measured on the same local etcd in one run.

A benchmark, not a test: it measures and prints. ``measure_tooz`` and ``measure_raw`` return
their figures as dicts, so another bench can run our own registry's etcd backend beside them
on the same server (see ``bench/README.md``).

    python bench/bench_etcd_baselines.py [--members 1000] [--rounds 1]

tooz: the only tooz etcd driver that works with etcd 3.5 here is ``etcd3+http://HOST:PORT``
(``tooz.drivers.etcd3gw``: JSON over etcd's gRPC gateway, via etcd3gw and requests). tooz 7+
has no ``etcd3://`` driver, and python-etcd3 (``etcd3`` 0.12.0), which it used, installs but
fails to import with protobuf >= 4 ("Descriptors cannot be created directly"); tooz 7's
``etcd://`` driver speaks etcd's v2 API, which etcd 3.5 does not serve by default (404 on
``/v2/keys``), and tooz 9 dropped it. Each member is its own coordinator (one per process is
tooz's design: one member id, one membership lease, one HTTP session each), created with
``executor=synchronous`` so that 1,000 members in one process do not mean 1,000 idle pool
threads each waking every second (futurist's ``MAX_IDLE_FOR``) and fighting the main thread for
the GIL; a real member process has one such thread and the hand-off costs microseconds against
the milliseconds measured here. The reader (the "find" side) is one more coordinator with tooz's
default threaded executor. What one tooz call does on the wire:

- ``start()``: GET ``/version`` (API discovery, once per client) + a lease grant.
- ``join_group``: a range read of the WHOLE group (every member with its capabilities) to check
  that the group exists and the member does not, then a txn put with the lease; so a join
  costs O(group size) and N joins O(N^2): the rate falls as the group grows.
- ``heartbeat()``: one POST ``/v3/lease/keepalive`` (the gateway opens a keepalive stream per
  request). It returns a timeout, not whether the lease was alive: on an expired lease it grants
  a new one and does not re-join, so the member silently left its groups.
- ``get_members``: a range read of the group WITH values; ``get_member_capabilities``: one GET
  per member. ``get_members_with_capabilities`` is the same read in one range.

Raw: one aetcd client (one gRPC channel), per member a lease grant + a put of a JSON value with
the lease (join), ``refresh_lease`` (a new keepalive stream per call: aetcd has no long-lived
keepalive), a prefix get of all members decoded from JSON (find); and optionally one long-lived
``LeaseKeepAlive`` stream on aetcd's raw stub, one request and its reply at a time.

The ``__main__`` starts etcd with ``tests/etcd_server.py`` and pins it to one CPU and itself to
another (``--no-pin`` not to). Loopback only; every request carries a timeout and every phase
checks a wall-clock budget; every lease is revoked at the end of each measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

DEFAULT_MEMBERS = 1000
MAX_MEMBERS = 5000
DEFAULT_BUDGET_S = 120.0
REQUEST_TIMEOUT_S = 5
TOOZ_HEARTBEAT_PASSES = 2
RAW_HEARTBEAT_PASSES = 3
FIND_REPEATS = 5
TOOZ_FULL_FIND_REPEATS = 2
MAX_MESSAGE = 64 * 1024 * 1024

KINDS = ("agent", "agent", "agent", "tool", "storage", "gateway", "orchestrator")
ZONES = ("eu-west-1a", "eu-west-1b", "eu-west-1c", "us-east-1a", "us-east-1b", "ap-south-1a")
TEAMS = ("search", "billing", "research", "platform", "support", "ml")
ENVS = ("prod", "staging", "dev")

Figures = dict[str, float]


# -- shared helpers -------------------------------------------------------------------------------


class Budget:
    """A wall-clock limit for one measurement; ``check`` raises once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.1, self.deadline - time.monotonic())

    def check(self, phase: str) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"{phase}: over the {self.seconds:.0f} s budget")


def member_capabilities(members: int, seed: int = 7) -> list[dict[str, Any]]:
    """One capabilities dict per member, the same for the same seed."""
    rng = random.Random(seed)
    return [
        {
            "kind": rng.choice(KINDS),
            "gpu": rng.choice((0, 0, 0, 1, 2)),
            "labels": {
                "zone": rng.choice(ZONES),
                "team": rng.choice(TEAMS),
                "env": rng.choice(ENVS),
            },
        }
        for _ in range(members)
    ]


def _check_members(members: int) -> None:
    if not 1 <= members <= MAX_MEMBERS:
        raise ValueError(f"members must be in 1..{MAX_MEMBERS}, not {members}")


def _lease_ttl(budget: Budget) -> int:
    # No lease may expire while the measurement runs (tooz would silently drop the member);
    # every lease is revoked at the end, so a long TTL leaves nothing behind.
    return int(budget.seconds) + 30


class _Timer:
    """Wall and client-CPU time summed over timed sections."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self._wall0 = 0.0
        self._cpu0 = 0.0

    def __enter__(self) -> _Timer:
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._wall0
        self.cpu += time.process_time() - self._cpu0


def _per_s(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# -- tooz -----------------------------------------------------------------------------------------


def tooz_url(endpoint: str, *, membership_ttl: int) -> str:
    """The tooz backend URL for an etcd at ``host:port`` (the etcd3gw driver)."""
    return (
        f"etcd3+http://{endpoint}?timeout={REQUEST_TIMEOUT_S}"
        f"&lock_timeout={membership_ttl}&membership_timeout={membership_ttl}"
    )


def measure_tooz(
    endpoint: str, members: int = DEFAULT_MEMBERS, *, budget_s: float = DEFAULT_BUDGET_S
) -> Figures:
    """tooz's group API on the etcd at ``endpoint`` ("127.0.0.1:PORT"), ``members`` coordinators.

    Keys: ``start_per_s`` (coordinator start: API discovery + lease grant), ``join_per_s``
    (join_group with capabilities, over the whole growing group), ``join_first_per_s`` and
    ``join_last_per_s`` (first and last tenth of the joins), ``heartbeat_per_s`` (median over
    passes of one heartbeat per member), ``find_ms`` (get_members + get_member_capabilities for
    every member, median), ``find_one_range_ms`` (get_members_with_capabilities, median),
    ``join_cpu_us`` / ``heartbeat_cpu_us`` (client CPU per call), ``members``.
    """
    from tooz import coordination

    _check_members(members)
    budget = Budget(budget_s)
    url = tooz_url(endpoint, membership_ttl=_lease_ttl(budget))
    group = f"bench-{uuid.uuid4().hex[:8]}".encode()
    caps = member_capabilities(members)
    ids = [f"member-{i:05d}".encode() for i in range(members)]
    figures: Figures = {"members": float(members)}

    reader = coordination.get_coordinator(url, b"bench-reader")
    reader.start()
    coordinators: list[Any] = []
    try:
        reader.create_group(group).get(timeout=REQUEST_TIMEOUT_S)

        # Start and join, one member after the other (as N processes coming up would).
        start, join = _Timer(), _Timer()
        tenth = max(1, members // 10)
        join_walls: list[float] = []
        for i, (member_id, cap) in enumerate(zip(ids, caps, strict=True)):
            if i % 50 == 0:
                budget.check("tooz join")
            with start:
                coordinator = coordination.get_coordinator(url, member_id, executor="synchronous")
                coordinator.start()
            coordinators.append(coordinator)
            before = join.wall
            with join:
                coordinator.join_group(group, cap).get(timeout=REQUEST_TIMEOUT_S)
            join_walls.append(join.wall - before)
        figures["start_per_s"] = _per_s(members, start.wall)
        figures["join_per_s"] = _per_s(members, join.wall)
        figures["join_first_per_s"] = _per_s(tenth, sum(join_walls[:tenth]))
        figures["join_last_per_s"] = _per_s(tenth, sum(join_walls[-tenth:]))
        figures["join_cpu_us"] = join.cpu / members * 1e6

        # Heartbeat: each member refreshes its own membership lease.
        rates, cpu = [], []
        for _ in range(TOOZ_HEARTBEAT_PASSES):
            budget.check("tooz heartbeat")
            beat = _Timer()
            with beat:
                for coordinator in coordinators:
                    coordinator.heartbeat()
            rates.append(_per_s(members, beat.wall))
            cpu.append(beat.cpu / members * 1e6)
        figures["heartbeat_per_s"] = statistics.median(rates)
        figures["heartbeat_cpu_us"] = statistics.median(cpu)

        # Find: every member with its capabilities, as a reader would.
        def full_read() -> dict[bytes, Any]:
            found = reader.get_members(group).get(timeout=REQUEST_TIMEOUT_S)
            return {
                member: reader.get_member_capabilities(group, member).get(timeout=REQUEST_TIMEOUT_S)
                for member in found
            }

        def one_range() -> dict[bytes, Any]:
            return reader.get_members_with_capabilities(group).get(timeout=REQUEST_TIMEOUT_S)

        full = _latencies_ms(full_read, TOOZ_FULL_FIND_REPEATS, budget, "tooz find", ids, caps)
        figures["find_ms"] = statistics.median(full)
        ranged = _latencies_ms(one_range, FIND_REPEATS, budget, "tooz find", ids, caps)
        figures["find_one_range_ms"] = statistics.median(ranged)
    finally:
        _tooz_teardown(reader, coordinators, group)
    return figures


def _latencies_ms(
    read: Callable[[], dict[bytes, Any]],
    repeats: int,
    budget: Budget,
    phase: str,
    ids: list[bytes],
    caps: list[dict[str, Any]],
) -> list[float]:
    """Time ``read`` ``repeats`` times; every read must return every member, intact."""
    expected = dict(zip(ids, caps, strict=True))
    samples: list[float] = []
    for _ in range(repeats):
        budget.check(phase)
        began = time.perf_counter()
        found = read()
        samples.append((time.perf_counter() - began) * 1e3)
        if found != expected:
            raise RuntimeError(f"{phase}: read {len(found)} members, expected {len(expected)}")
    return samples


def _tooz_teardown(reader: Any, coordinators: list[Any], group: bytes) -> None:
    """Revoke every membership lease (tooz's stop() does not: the leases would expire later
    and their revocation would land in the next measurement), then stop everything."""
    from tooz import ToozError

    for coordinator in coordinators:
        lease = coordinator._membership_lease
        try:
            if lease is not None:
                lease.revoke()
        except Exception as error:  # etcd is gone or broken: do not wait out N timeouts
            print(f"tooz teardown: revoke failed, stopping revokes: {error}", file=sys.stderr)
            break
    # The revoke took each member key with it; stop() would still leave_group, which reads the
    # whole group first (another O(N) read per member): forget the group, then stop.
    for coordinator in coordinators:
        coordinator._joined_groups.clear()
        try:
            coordinator.stop()
        except ToozError as error:
            print(f"tooz teardown: stop failed: {error}", file=sys.stderr)
        coordinator.client.session.close()
    try:
        reader.delete_group(group).get(timeout=REQUEST_TIMEOUT_S)
    except ToozError as error:
        print(f"tooz teardown: delete_group failed: {error}", file=sys.stderr)
    lease = reader._membership_lease
    if lease is not None:
        lease.revoke()
    reader.stop()
    reader.client.session.close()


# -- raw aetcd ------------------------------------------------------------------------------------


def measure_raw(
    endpoint: str,
    members: int = DEFAULT_MEMBERS,
    *,
    keepalive_stream: bool = True,
    budget_s: float = DEFAULT_BUDGET_S,
) -> Figures:
    """The same membership by hand with aetcd; see ``measure_raw_async`` for the keys."""
    return asyncio.run(
        measure_raw_async(endpoint, members, keepalive_stream=keepalive_stream, budget_s=budget_s)
    )


async def measure_raw_async(
    endpoint: str,
    members: int = DEFAULT_MEMBERS,
    *,
    keepalive_stream: bool = True,
    budget_s: float = DEFAULT_BUDGET_S,
) -> Figures:
    """Raw etcd membership with one aetcd client on ``endpoint`` ("127.0.0.1:PORT").

    Keys: ``join_per_s`` (lease grant + put of the JSON capabilities with the lease),
    ``heartbeat_per_s`` (aetcd ``refresh_lease``, a new keepalive stream per call; median over
    passes), ``heartbeat_stream_per_s`` (one long-lived LeaseKeepAlive stream, if
    ``keepalive_stream``), ``find_ms`` (prefix get of all members + JSON decode, median),
    ``join_cpu_us`` / ``heartbeat_cpu_us`` (client CPU per call), ``members``.
    """
    import aetcd  # type: ignore[import-untyped]  # aetcd 1.0.0 ships no py.typed marker
    import aetcd.rpc  # type: ignore[import-untyped]

    _check_members(members)
    budget = Budget(budget_s)
    ttl = _lease_ttl(budget)
    host, port = endpoint.rsplit(":", 1)
    prefix = f"/bench/members/{uuid.uuid4().hex[:8]}/".encode()
    caps = member_capabilities(members)
    ids = [f"member-{i:05d}".encode() for i in range(members)]
    figures: Figures = {"members": float(members)}

    client = aetcd.Client(
        host=host,
        port=int(port),
        timeout=REQUEST_TIMEOUT_S,
        options={"grpc.max_receive_message_length": MAX_MESSAGE},
    )
    leases: list[int] = []
    try:
        await client.connect()

        join = _Timer()
        for i, (member_id, cap) in enumerate(zip(ids, caps, strict=True)):
            if i % 50 == 0:
                budget.check("raw join")
            with join:
                lease = await client.lease(ttl)
                await client.put(prefix + member_id, json.dumps(cap).encode(), lease=lease.id)
            leases.append(int(lease.id))
        figures["join_per_s"] = _per_s(members, join.wall)
        figures["join_cpu_us"] = join.cpu / members * 1e6

        rates, cpu = [], []
        for _ in range(RAW_HEARTBEAT_PASSES):
            budget.check("raw heartbeat")
            beat = _Timer()
            with beat:
                for lease_id in leases:
                    reply = await client.refresh_lease(lease_id)
                    if reply is None or reply.TTL <= 0:
                        raise RuntimeError(f"raw heartbeat: lease {lease_id} is gone")
            rates.append(_per_s(members, beat.wall))
            cpu.append(beat.cpu / members * 1e6)
        figures["heartbeat_per_s"] = statistics.median(rates)
        figures["heartbeat_cpu_us"] = statistics.median(cpu)

        if keepalive_stream:
            budget.check("raw keepalive stream")
            figures["heartbeat_stream_per_s"] = await _keepalive_stream(
                client, aetcd.rpc, leases, budget
            )

        expected = dict(zip(ids, caps, strict=True))
        samples: list[float] = []
        for _ in range(FIND_REPEATS):
            budget.check("raw find")
            began = time.perf_counter()
            result = await client.get_prefix(prefix)
            found = {kv.key[len(prefix) :]: json.loads(kv.value) for kv in result.kvs}
            samples.append((time.perf_counter() - began) * 1e3)
            if found != expected:
                raise RuntimeError(f"raw find: read {len(found)} members, expected {members}")
        figures["find_ms"] = statistics.median(samples)
    finally:
        await _raw_teardown(client, leases)
    return figures


async def _keepalive_stream(client: Any, rpc: Any, leases: list[int], budget: Budget) -> float:
    """Keepalives/s on one LeaseKeepAlive stream kept open, one request and reply at a time."""
    call = client.leasestub.LeaseKeepAlive(timeout=budget.remaining(), metadata=client.metadata)
    try:
        began = time.perf_counter()
        for lease_id in leases:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            reply = await call.read()
            if reply is None or reply.TTL <= 0:
                raise RuntimeError(f"keepalive stream: lease {lease_id} is gone")
        elapsed = time.perf_counter() - began
        await call.done_writing()
    finally:
        call.cancel()
    return _per_s(len(leases), elapsed)


async def _raw_teardown(client: Any, leases: list[int]) -> None:
    """Revoke every lease (their keys go with them), 64 at a time, then close the client."""
    try:
        for start in range(0, len(leases), 64):
            await asyncio.gather(*(client.revoke_lease(i) for i in leases[start : start + 64]))
    finally:
        await client.close()


# -- the run --------------------------------------------------------------------------------------

ROWS: tuple[tuple[str, str, str], ...] = (
    # label, key, unit ("/s": higher is better, "ms" or "us": lower is better)
    ("join, ops/s", "join_per_s", "/s"),
    ("join, first 10 % of the group", "join_first_per_s", "/s"),
    ("join, last 10 % of the group", "join_last_per_s", "/s"),
    ("join, client CPU µs/op", "join_cpu_us", "us"),
    ("heartbeat, ops/s", "heartbeat_per_s", "/s"),
    ("heartbeat, one keepalive stream, ops/s", "heartbeat_stream_per_s", "/s"),
    ("heartbeat, client CPU µs/op", "heartbeat_cpu_us", "us"),
    ("find all + capabilities, ms", "find_ms", "ms"),
    ("find in one range read, ms", "find_one_range_ms", "ms"),
    ("coordinator start, ops/s", "start_per_s", "/s"),
)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def format_table(tooz: Figures, raw: Figures) -> str:
    """A Markdown table: tooz, raw, and how many times better raw is."""
    lines = [
        "| | tooz (etcd3+http) | raw aetcd | raw vs tooz |",
        "|---|---:|---:|---:|",
    ]
    for label, key, unit in ROWS:
        a, b = tooz.get(key), raw.get(key)
        if a is None and b is None:
            continue
        if key in {"find_ms", "find_one_range_ms"} and b is None:
            b = raw.get("find_ms")  # the raw find is always one range read
        ratio = "—"
        if a is not None and b is not None and a > 0 and b > 0:
            ratio = f"{(b / a if unit == '/s' else a / b):,.1f}x"
        elif key == "heartbeat_stream_per_s" and b is not None:
            ratio = f"{b / tooz['heartbeat_per_s']:,.1f}x tooz's heartbeat"
        lines.append(f"| {label} | {_fmt(a, unit)} | {_fmt(b, unit)} | {ratio} |")
    return "\n".join(lines)


def _versions(endpoint: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{endpoint}/version", timeout=2) as response:
            etcd = json.loads(response.read())["etcdserver"]
    except (OSError, ValueError, KeyError):
        etcd = "?"
    libs = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("tooz", "etcd3gw", "requests", "aetcd", "grpcio", "protobuf")
    )
    return f"etcd {etcd}; Python {platform.python_version()}; {libs}"


def pin(etcd_pid: int) -> str:
    """etcd on one CPU (every thread of it), this process on another, when there are two."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    for task in Path(f"/proc/{etcd_pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpus[0]})
    os.sched_setaffinity(0, {cpus[1]})  # threads started from now on inherit it
    return f"etcd pinned to CPU {cpus[0]}, the client to CPU {cpus[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS)
    parser.add_argument("--rounds", type=int, default=1, help="raw then tooz, this many times")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="s per measure")
    parser.add_argument("--no-stream", action="store_true", help="skip the keepalive stream")
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the OS")
    args = parser.parse_args(argv)
    _check_members(args.members)
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be in 1..10")

    sys.path.insert(0, str(ROOT / "tests"))
    from etcd_server import running_etcd

    began = time.perf_counter()
    with running_etcd() as etcd:
        assert etcd.process is not None
        placement = "not pinned" if args.no_pin else pin(etcd.process.pid)
        print(
            f"{_versions(etcd.endpoint)}; {args.members:,} members on {etcd.endpoint}; {placement}"
        )
        print()
        for round_ in range(1, args.rounds + 1):
            raw = measure_raw(
                etcd.endpoint,
                args.members,
                keepalive_stream=not args.no_stream,
                budget_s=args.budget,
            )
            tooz = measure_tooz(etcd.endpoint, args.members, budget_s=args.budget)
            print(f"round {round_}")
            print(format_table(tooz, raw))
            print()
    print(f"{time.perf_counter() - began:.1f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
