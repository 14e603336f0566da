"""The verifier: send each claimed capability's probes to the node and judge the answers.

Seed 3.2, steps 2 to 5. Capabilities are probed concurrently, at most ``concurrency`` probes in
flight across all nodes; the probes of one capability run in order and the first that fails
decides. Every probe has its own timeout and every node a budget for all of its probes, so a
round always ends. ``judge`` is pure: it turns one answer into a verdict.

Nothing a node answers is executed: checks compare the answer's JSON fields as data.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx

from node_registry.clock import Clock, SystemClock
from node_registry.passport.models import Capability, Endpoint, NodePassport
from node_registry.passport.verification import (
    CapabilityVerification,
    NodeVerification,
    VerificationPolicy,
    VerificationState,
    params_digest,
)
from node_registry.verification.planner import NodeView, plan
from node_registry.verification.probes import FieldCheck, Probe, ProbeSet, field_value
from node_registry.verification.sink import ResultSink
from node_registry.verification.transport import (
    HttpTransport,
    ProbeResponse,
    Transport,
    TransportError,
)

_SHOWN = 120  # characters of an unexpected value quoted in a message


@dataclass(frozen=True, slots=True)
class Verdict:
    """One probe's outcome: passed, or the reason and message of its failure."""

    passed: bool
    reason: str
    message: str


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _check(check: FieldCheck, body: object) -> str | None:
    """Why ``check`` fails on ``body``, or None when it holds."""
    found, value = field_value(body, check.parts)
    if not found:
        return f"check {check.path}: the answer has no field {check.path}"
    if "equals" in check.model_fields_set:
        if value != check.equals or type(value) is not type(check.equals):
            return f"check {check.path}: expected {check.equals!r}, got {_shown(value)}"
        return None
    if "contains" in check.model_fields_set:
        if isinstance(value, str) and isinstance(check.contains, str):
            held = check.contains in value
        else:
            held = isinstance(value, list) and check.contains in value
        if not held:
            return f"check {check.path} did not contain {check.contains!r} (got {_shown(value)})"
        return None
    assert check.pattern is not None
    if not isinstance(value, str) or check.pattern.search(value) is None:
        return f"check {check.path} did not match /{check.pattern.pattern}/ (got {_shown(value)})"
    return None


def judge(probe: Probe, response: ProbeResponse, latency: float) -> Verdict:
    """The verdict on one answer: status first, then latency, then the field checks."""
    expect = probe.expect
    if response.status != expect.status:
        return Verdict(False, "HTTPStatus", f"HTTP {response.status}, expected {expect.status}")
    if expect.max_latency_seconds is not None and latency > expect.max_latency_seconds:
        return Verdict(
            False,
            "TooSlow",
            f"answered in {latency:.2f} s, over the bound of {expect.max_latency_seconds:g} s",
        )
    if expect.fields:
        try:
            body = json.loads(response.body)
        except ValueError:
            return Verdict(False, "InvalidResponse", "the answer is not JSON")
        for check in expect.fields:
            if (problem := _check(check, body)) is not None:
                return Verdict(False, "CheckFailed", problem)
    return Verdict(True, "Passed", f"probe {probe.name} passed")


class Verifier:
    """Probes nodes' claimed capabilities with the probes of a ``ProbeSet``.

    ``transports`` maps an endpoint protocol to its transport; by default ``http`` and
    ``https`` share one ``HttpTransport`` on a client the verifier owns (``aclose`` it, or use
    ``async with``). ``clock`` stamps ``checkedAt``; ``timer`` (monotonic seconds) measures
    latency — both seams for tests.
    """

    def __init__(
        self,
        probes: ProbeSet,
        *,
        clock: Clock | None = None,
        transports: Mapping[str, Transport] | None = None,
        concurrency: int = 8,
        node_timeout_seconds: float = 120.0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.probes = probes
        self._clock = clock or SystemClock()
        self._timer = timer
        self._client: httpx.AsyncClient | None = None
        if transports is None:
            # Probes go to the node's own address, never through a proxy from the environment.
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
            http = HttpTransport(self._client)
            transports = {"http": http, "https": http}
        self._transports = dict(transports)
        self._limit = asyncio.Semaphore(concurrency)
        self._node_timeout = node_timeout_seconds

    def __repr__(self) -> str:
        return f"Verifier(probes={len(self.probes.probes)}, transports={sorted(self._transports)})"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def verify_node(
        self,
        passport: NodePassport,
        *,
        resource_version: str | None = None,
        capabilities: Iterable[str] | None = None,
        previous: Mapping[str, CapabilityVerification] | None = None,
    ) -> NodeVerification:
        """Probe ``capabilities`` (default: every claim) of one node; ``previous`` results
        carry the count of failures in a row forward."""
        wanted = None if capabilities is None else set(capabilities)
        claims = [c for c in passport.spec.capabilities if wanted is None or c.name in wanted]
        deadline = asyncio.get_running_loop().time() + self._node_timeout
        results = await asyncio.gather(
            *(
                self._verify_claim(passport, cap, resource_version, (previous or {}), deadline)
                for cap in claims
            )
        )
        return NodeVerification(
            node_uid=passport.node_id,
            node_name=passport.metadata.name,
            resource_version=resource_version,
            results=tuple(results),
        )

    async def run_due(
        self,
        nodes: Iterable[NodeView],
        sink: ResultSink,
        policy: VerificationPolicy,
    ) -> list[NodeVerification]:
        """One round: plan what is due now, probe it, record each node's results."""
        views = list(nodes)
        due = plan(views, self._clock.now(), policy)
        by_node: dict[str, set[str]] = {}
        for item in due:
            by_node.setdefault(item.node_uid, set()).add(item.capability)
        rounds = [
            self.verify_node(
                view.passport,
                resource_version=view.resource_version,
                capabilities=by_node[view.passport.node_id],
                previous=view.results,
            )
            for view in views
            if view.passport.node_id in by_node
        ]
        done = await asyncio.gather(*rounds)
        for verification in done:
            await sink.record(verification)
        return list(done)

    async def _verify_claim(
        self,
        passport: NodePassport,
        cap: Capability,
        resource_version: str | None,
        previous: Mapping[str, CapabilityVerification],
        deadline: float,
    ) -> CapabilityVerification:
        probe_name: str | None = None
        latency: float | None = None
        probes = self.probes.for_capability(passport, cap)
        endpoint = passport.spec.endpoint
        transport = self._transports.get(endpoint.protocol) if endpoint is not None else None
        if not probes:
            state, reason = VerificationState.UNKNOWN, "NoProbe"
            message = f"no probe for {cap.name} {cap.version or ''}".rstrip()
            message += f" on node type {passport.metadata.node_type}"
        elif endpoint is None or transport is None:
            state, reason = VerificationState.UNKNOWN, "NoTransport"
            protocol = endpoint.protocol if endpoint is not None else None
            message = (
                f"no transport for endpoint protocol {protocol!r} "
                f"(have: {', '.join(sorted(self._transports))})"
                if endpoint is not None
                else "the node has no endpoint"
            )
        else:
            state, reason, message = VerificationState.VERIFIED, "Passed", ""
            for probe in probes:
                probe_name = probe.name
                verdict, latency = await self._run_probe(probe, endpoint, transport, deadline)
                message = verdict.message
                if not verdict.passed:
                    state, reason = VerificationState.FAILED, verdict.reason
                    break
            if state == VerificationState.VERIFIED:
                message = f"{len(probes)} probe{'s' if len(probes) > 1 else ''} passed"
        last = previous.get(cap.name)
        failures = 0
        if state == VerificationState.FAILED:
            failures = 1
            if last is not None and last.state == VerificationState.FAILED:
                failures += last.consecutive_failures
        return CapabilityVerification(
            node_uid=passport.node_id,
            node_name=passport.metadata.name,
            capability=cap.name,
            state=state,
            reason=reason,
            message=message,
            checked_at=self._clock.now(),
            probe=probe_name,
            capability_version=cap.version,
            params_digest=params_digest(cap.params),
            resource_version=resource_version,
            latency_seconds=latency,
            consecutive_failures=failures,
        )

    async def _run_probe(
        self, probe: Probe, endpoint: Endpoint, transport: Transport, deadline: float
    ) -> tuple[Verdict, float | None]:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Verdict(False, "Timeout", self._over_budget()), None
        timeout = min(probe.timeout_seconds, remaining)
        async with self._limit:
            started = self._timer()
            try:
                # The transport bounds its own I/O; this bounds a transport that does not.
                async with asyncio.timeout(timeout):
                    response = await transport.send(endpoint, probe.task, timeout=timeout)
            except TimeoutError:
                over = timeout < probe.timeout_seconds
                message = self._over_budget() if over else f"no answer within {timeout:g} s"
                return Verdict(False, "Timeout", message), None
            except TransportError as exc:
                return Verdict(False, exc.reason, str(exc)), None
            latency = self._timer() - started
        return judge(probe, response, latency), latency

    def _over_budget(self) -> str:
        return f"the node's probes ran over their budget of {self._node_timeout:g} s"
