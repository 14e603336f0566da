"""Prometheus metrics of the service, in a collector registry of its own (no globals).

Node counts are kept by the registry's index as nodes change and read at scrape time (a
scrape costs the same at 100,000 nodes as at 10: no list); they count the health the
lifecycle controller recorded. Counters are bumped where the thing happens. Names follow Prometheus
conventions: ``node_registry_`` prefix, base units (seconds), ``_total`` on counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from node_registry.errors import StoreUnavailableError
from node_registry.passport import NodeType
from node_registry.registry import Registry
from node_registry.store import HealthState


class _RegistryCollector(Collector):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            counts = self._registry.node_counts()
        except StoreUnavailableError:
            counts = None  # no node counts rather than stale ones; the scrape still works
        yield GaugeMetricFamily(
            "node_registry_store_available",
            "1 while the store answers and this process's view of it is current.",
            value=0 if counts is None else 1,
        )
        yield GaugeMetricFamily(
            "node_registry_controller_leader",
            "1 while this process runs the lifecycle controller (one replica of many on etcd).",
            value=1 if self._registry.leading else 0,
        )
        if counts is not None:
            nodes = GaugeMetricFamily(
                "node_registry_nodes",
                "Registered nodes by kind and the health state the lifecycle controller "
                "recorded (at most one controller period behind a read's verdict).",
                labels=["kind", "health_state"],
            )
            # The built-in types always, at 0 too; custom ones as nodes of theirs appear.
            kinds = [k.value for k in NodeType]
            kinds += sorted({str(k) for k, _ in counts} - set(kinds))
            for kind in kinds:
                for state in HealthState:
                    nodes.add_metric([kind, state.value], counts.get((kind, state), 0))
            yield nodes
        yield GaugeMetricFamily(
            "node_registry_mass_failure_protection_active",
            "1 while mass-failure protection holds nodes NotReady instead of Offline.",
            value=1 if self._registry.protection_active else 0,
        )
        yield GaugeMetricFamily(
            "node_registry_resource_version",
            "The registry's current resource version.",
            value=self._registry.resource_version,
        )
        skipped = self._registry.skipped_records
        yield GaugeMetricFamily(
            "node_registry_skipped_records",
            "Stored node records this process skips now because it cannot read them "
            "(the log names each key).",
            value=len(skipped.keys),
        )
        yield CounterMetricFamily(
            "node_registry_unreadable_records",
            "Versions of stored node records found unreadable and skipped, each counted once.",
            value=skipped.found,
        )
        yield CounterMetricFamily(
            "node_registry_store_failovers",
            "Times this process left a failing etcd member for the next one.",
            value=self._registry.store_failovers,
        )


class Metrics:
    """Every metric the service exports."""

    def __init__(self, registry: Registry, collectors: CollectorRegistry | None = None) -> None:
        self.collectors = collectors or CollectorRegistry()
        reg = self.collectors
        self.registrations = Counter(
            "node_registry_registrations_total",
            "Successful registrations (first ones and re-registrations).",
            registry=reg,
        )
        self.heartbeats = Counter(
            "node_registry_heartbeats_total", "Lease renewals accepted.", registry=reg
        )
        self.refusals = Counter(
            "node_registry_refusals_total",
            "Requests refused, by Status reason (Invalid, Forbidden, NotFound, ...).",
            ["reason"],
            registry=reg,
        )
        self.transitions = Counter(
            "node_registry_health_transitions_total",
            "Health transitions recorded by the lifecycle controller.",
            ["from_state", "to_state"],
            registry=reg,
        )
        self.request_duration = Histogram(
            "node_registry_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=reg,
        )
        self.watch_streams = Gauge(
            "node_registry_watch_streams", "Open watch streams.", registry=reg
        )
        self.shed = Counter(
            "node_registry_requests_shed_total",
            "Requests answered 429 by load shedding, by priority level.",
            ["level"],
            registry=reg,
        )
        self.loop_lag = Gauge(
            "node_registry_event_loop_lag_seconds",
            "How late the server's event loop last ran a timer; past "
            "controller.saturation_lag_seconds the registry counts itself saturated.",
            registry=reg,
        )
        reg.register(_RegistryCollector(registry))


class TimingMiddleware:
    """Pure ASGI middleware: request latency by route template (no BaseHTTPMiddleware cost)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            key = (getattr(route, "path", None) or "unmatched", scope["method"])
            child = self._children.get(key)
            if child is None:
                # labels() takes a lock and builds a tuple key on every call; route
                # templates are few, so each child is looked up once.
                child = self._children[key] = self.metrics.request_duration.labels(*key)
            child.observe(time.perf_counter() - start)
