"""Health as a pure function of (last heartbeat, now, policy): the lifecycle table of DESIGN.md.

| silent for                      | state     | phase    |
|---------------------------------|-----------|----------|
| < not_ready_after               | ALIVE     | Running  |
| >= not_ready_after, < ttl       | NOT_READY | NotReady |
| >= ttl                          | OFFLINE   | Offline  |
| >= ttl + grace_period           | removed   |          |

Nothing here reads a clock or a store, so readers, the controller and tests share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from node_registry.config import HeartbeatSettings
from node_registry.passport import Phase
from node_registry.store.records import HealthState

PHASE_OF: dict[HealthState, Phase] = {
    HealthState.ALIVE: Phase.RUNNING,
    HealthState.NOT_READY: Phase.NOT_READY,
    HealthState.OFFLINE: Phase.OFFLINE,
}


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """The heartbeat thresholds as timedeltas, ready for arithmetic on the hot path."""

    not_ready_after: timedelta
    ttl: timedelta
    grace_period: timedelta

    @classmethod
    def from_settings(cls, heartbeat: HeartbeatSettings) -> HealthPolicy:
        return cls(
            not_ready_after=timedelta(seconds=heartbeat.not_ready_after_seconds),
            ttl=timedelta(seconds=heartbeat.ttl_seconds),
            grace_period=timedelta(seconds=heartbeat.grace_period_seconds),
        )

    def health(self, last_seen: datetime, now: datetime) -> HealthState:
        """The state of a node last heard from at ``last_seen``: the table alone.

        ``lifecycle.judge`` applies it to every node read or judged, written out there as
        comparisons with ``thresholds(now)`` (a call per node would double a query's cost),
        with what the registry knows of its own blindness around it.
        """
        return self.thresholds(now).health(last_seen)

    def thresholds(self, now: datetime) -> Thresholds:
        """The table as instants at ``now``: what judging many nodes at once compares."""
        return Thresholds(now - self.not_ready_after, now - self.ttl)

    def expired(self, last_seen: datetime, now: datetime) -> bool:
        """Whether the entry is past TTL + grace period and is to be removed."""
        return now - last_seen >= self.ttl + self.grace_period


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The lifecycle table at one instant: a node is ALIVE if seen after ``alive_after``
    (silent for less than not_ready_after), NOT_READY if seen after ``online_after``."""

    alive_after: datetime
    online_after: datetime

    def health(self, last_seen: datetime) -> HealthState:
        if last_seen > self.alive_after:
            return HealthState.ALIVE
        if last_seen > self.online_after:
            return HealthState.NOT_READY
        return HealthState.OFFLINE


def protection_engaged(
    *, unhealthy: int, considered: int, fraction: float, min_unhealthy: int
) -> bool:
    """Mass-failure rule: enough nodes, and a large enough share of them, silent at once.

    ``considered`` excludes nodes already recorded Offline before this pass: they went
    silent earlier, one by one, and must not keep the registry in protection forever.
    """
    return considered > 0 and unhealthy >= min_unhealthy and unhealthy / considered >= fraction
