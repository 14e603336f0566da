"""``node-registry verify``: the reference verifier, a client of the registry (seed 3.2).

One round lists the nodes (``nodepassports``, their stored results included), plans what is
due (never verified, changed since, expired, failed and past its backoff), probes it and
records the results through ``nodepassports/NAME/verification`` — which needs a
``verifier`` (or ``admin``) token. Between rounds it watches nodepassports: a node added,
or one whose claims changed (``add_capability``, a re-registration), starts the next round
at once; otherwise the next round starts when the earliest result falls due, or after
``interval`` seconds at the most. A result the registry refuses (the node deregistered, or
changed its claims meanwhile) is reported and planned again from the next listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

import httpx

from node_registry.client import AsyncRegistryClient
from node_registry.client.objects import RegistryEntry
from node_registry.clock import Clock, SystemClock
from node_registry.errors import ForbiddenError, RegistryError, UnauthorizedError
from node_registry.verification import (
    NodeVerification,
    NodeView,
    VerificationPolicy,
    Verifier,
    next_check,
    plan,
)

log = logging.getLogger("node_registry.verify")

Report = Callable[[str], None]


class RegistrySink:
    """Records each node's results in the registry (the ``verification`` subresource)."""

    def __init__(self, client: AsyncRegistryClient, report: Report) -> None:
        self._client = client
        self._report = report
        self.recorded = 0

    async def record(self, verification: NodeVerification) -> None:
        name = verification.node_name
        try:
            await self._client.record_verification(name, verification.results)
        except (ForbiddenError, UnauthorizedError):
            raise  # the wrong token: no later round would do better
        except (RegistryError, httpx.HTTPError) as error:
            # Gone, changed meanwhile, or the registry away: the next listing plans it again.
            self._report(f"{name}: not recorded ({error}); planned again next round")
            return
        self.recorded += 1
        for r in verification.results:
            self._report(f"{name} {r.capability} {r.state.value} {r.reason}: {r.message}")


def _views(entries: list[RegistryEntry]) -> list[NodeView]:
    return [NodeView(e.passport, e.verification, str(e.resource_version)) for e in entries]


def _next_due(views: list[NodeView], policy: VerificationPolicy) -> datetime | None:
    """When the earliest current result falls due again, if its claim does not change."""
    times = [
        next_check(result, policy)
        for view in views
        for result in view.results.values()
        if any(result.describes(cap) for cap in view.passport.spec.capabilities)
    ]
    return min(times, default=None)


async def run_verifier(
    client: AsyncRegistryClient,
    verifier: Verifier,
    policy: VerificationPolicy,
    *,
    once: bool = False,
    interval: float = 30.0,
    rounds: int | None = None,
    report: Report = print,
    clock: Clock | None = None,
) -> int:
    """Verify rounds until cancelled (``once``: one; ``rounds``: that many); the number of
    node results recorded."""
    clock = clock or SystemClock()
    sink = RegistrySink(client, report)
    done = 0
    while True:
        try:
            listed = await client.list_nodes()
        except (RegistryError, httpx.HTTPError) as error:
            if once:
                raise
            # A verifier outlives the registry's outages: the next round lists again.
            report(f"cannot list the nodes ({error}); next round in {interval:g}s")
            await asyncio.sleep(interval)
            continue
        views = _views(listed.items)
        due = plan(views, clock.now(), policy)
        if due:
            report(f"round {done + 1}: {len(due)} due")
            await verifier.run_due(views, sink, policy)
        done += 1
        if once or (rounds is not None and done >= rounds):
            return sink.recorded
        wait = interval
        next_due = _next_due(views, policy)
        if next_due is not None:
            wait = max(0.0, min(interval, (next_due - clock.now()).total_seconds()))
        await _until_due(client, listed.resource_version, wait, policy, clock)


async def _until_due(
    client: AsyncRegistryClient,
    since: int,
    wait: float,
    policy: VerificationPolicy,
    clock: Clock,
) -> None:
    """Return after ``wait`` seconds, or as soon as a watched change makes a claim due."""
    if wait <= 0:
        return

    async def watch() -> None:
        async for kind, entry in client.passport_changes(since, timeout_seconds=max(1, int(wait))):
            if kind == "DELETED":
                continue
            if plan([NodeView(entry.passport, entry.verification)], clock.now(), policy):
                return

    with contextlib.suppress(TimeoutError, RegistryError, httpx.HTTPError):
        async with asyncio.timeout(wait):
            await watch()
