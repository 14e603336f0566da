"""The lifecycle controller: each node's health at an instant, and the passes recording it.

Readers and the controller judge with one rule (``judge``, ``HealthPolicy``'s table with
what the registry knows of its own blindness); the controller then records transitions,
removes expired entries and decides mass-failure protection. Decisions, each from a
lesson of Kubernetes or its peers:

- Mass-failure protection (Kubernetes' zone disruption, Eureka's self-preservation): when a
  large share of nodes goes silent in the same pass, the registry assumes the fault is its
  own, keeps them NOT_READY, marks none Offline and removes none until heartbeats return.
- Entries the registry did not see heartbeat (restored from a store when it starts) count as
  seen at start-up (kubernetes#32510), never as long dead; so do all entries after the
  registry lost its shared store for a while (nodes could not heartbeat through it), and
  after its server reported saturation (it shed renewals, or its event loop lagged: it
  could not hear nodes, Eureka's self-preservation). This seen-floor never revives a node
  recorded silent before it: only a heartbeat does that.
- No time counts as seen after now: a renewal stamped in the future (a replica whose clock
  runs ahead) makes a node look alive until now, not for as long as that clock is ahead.
- A controller that takes the seat from another (on etcd) counts every node as seen when
  it took the seat: renewals the last controller's replica served may never have been
  published (it was paused, or died), so none is recorded NotReady within
  not_ready_after, Offline within one TTL, or removed within TTL + grace period of the
  takeover. Readers keep judging from the renewals they know.
- Every write of a pass is fenced: on etcd it holds only while this process holds the
  controller's seat, so a controller paused past its seat's lease (SIGSTOP, a VM
  migration) writes nothing from its stale view when it resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from node_registry.clock import SteadyClock
from node_registry.config import Settings
from node_registry.errors import (
    NotFoundError,
    NotLeadingError,
    RegistryError,
    RevisionConflictError,
)
from node_registry.registry import steps
from node_registry.registry.entry import RegistryCondition
from node_registry.registry.health import HealthPolicy, Thresholds, protection_engaged
from node_registry.registry.steps import Steps
from node_registry.store import Coordination, HealthState, NodeRecord, Versioned

log = logging.getLogger("node_registry")

MASS_FAILURE_PROTECTION = "MassFailureProtection"
SEVERITY = {HealthState.ALIVE: 0, HealthState.NOT_READY: 1, HealthState.OFFLINE: 2}


def judge(
    now: datetime,
    thresholds: Thresholds,
    *,
    floor: datetime,
    protected: bool,
    renewed_at: Callable[[str], datetime | None],
) -> Callable[[NodeRecord], Verdict]:
    """The verdict on any node at ``now``: the one health rule, for readers and controller.

    - ``seen`` is the node's last renewal (its registration if none), never later than now;
    - the lifecycle table (``HealthPolicy.health``, written out here as comparisons with
      the two instants of ``thresholds``) is applied to ``seen``, or to ``floor`` if later:
      no node counts as silent since before it (the registry's own blindness);
    - the floor never revives a node recorded silent before it (only a heartbeat does);
    - under protection no node *becomes* Offline; one recorded Offline before stays so.

    Made once per read or pass, a closure over locals: queries judge thousands of nodes,
    and this costs half what a method does per node.
    """
    alive_after, online_after = thresholds.alive_after, thresholds.online_after
    severity = SEVERITY
    alive, not_ready, offline = HealthState.ALIVE, HealthState.NOT_READY, HealthState.OFFLINE

    def verdict(record: NodeRecord) -> Verdict:
        seen = renewed_at(record.node_id) or record.registered_at
        if seen > now:  # noqa: PLR1730 (min() costs twice this on the hot path)
            seen = now
        counted = seen if seen > floor else floor
        if counted > alive_after:
            health = alive
        elif counted > online_after:
            health = not_ready
        else:
            health = offline
        recorded = record.health
        if recorded is not alive and seen <= alive_after and severity[recorded] > severity[health]:
            health = recorded
        if protected and health is offline and recorded is not offline:
            return seen, health, not_ready, counted
        return seen, health, health, counted

    return verdict


def unsettled(
    snapshot: Sequence[Versioned],
    alive_after: datetime,
    *,
    floor: datetime,
    renewed_at: Callable[[str], datetime | None],
) -> list[Versioned]:
    """The nodes of ``snapshot`` a controller pass must judge in full, in snapshot order.

    A node recorded ALIVE and seen (as ``judge`` counts it, floor included) after
    ``alive_after`` is ALIVE by ``judge`` whatever the protection: the pass neither records
    nor removes it, and counts it healthy. That is nearly every node at nearly every pass,
    so this loop is the pass's whole cost for them: a full verdict each cost the event loop
    150 ms per pass at 100,000 nodes (this loop: a third of it).
    """
    alive = HealthState.ALIVE
    if floor > alive_after:  # every node counts as seen since the floor: ALIVE if recorded so
        return [v for v in snapshot if v.record.health is not alive]
    pending: list[Versioned] = []
    for versioned in snapshot:
        record = versioned.record
        if record.health is alive:
            seen = renewed_at(record.node_id) or record.registered_at
            # alive_after is before now (not_ready_after > 0): seen, capped at now, is after.
            if seen > alive_after:
                continue
        pending.append(versioned)
    return pending


#: One node's verdict (``judge``), a plain tuple (queries build thousands):
#: its last renewal (or registration; never later than now); its health by the table (the
#: controller's verdict); what readers are told (that, capped by mass-failure protection);
#: and the last-seen time that counts for its removal (the seen-floor, if later).
Verdict = tuple[datetime, HealthState, HealthState, datetime]


#: When a node last renewed its lease (``Storage.renewed_at``; None: not since start-up).
RenewedAt = Callable[[str], datetime | None]
#: Records a node's current health (a compare-and-swap; ``fenced``: the controller's).
RecordHealth = Callable[[str, bool], Versioned]
#: Removes an expired node whose record is at a revision, keeping its name's binding.
Remove = Callable[[NodeRecord, int, datetime], None]
#: The same two, as steps (``registry.steps``).
RecordingHealth = Callable[[str, bool], Steps[Versioned]]
Removing = Callable[[NodeRecord, int, datetime], Steps[None]]


class Lifecycle:
    """The lifecycle state of one registry: what it knows of its own blindness, the
    protection it decided, its time as controller; and the controller's pass."""

    def __init__(
        self,
        coordination: Coordination,
        renewed_at: RenewedAt,
        settings: Settings,
        clock: SteadyClock,
        policy: HealthPolicy,
    ) -> None:
        # Of the storage it needs one read; its writes go through the registry's callbacks.
        self._coordination = coordination
        self._renewed_at = renewed_at
        self._settings = settings
        self._clock = clock
        self._policy = policy
        self.started_at = clock.now()
        self._protection = self._protection_off = RegistryCondition(
            MASS_FAILURE_PROTECTION, False, "NodesHeartbeating", "", self.started_at
        )
        #: The last time the server could not hear nodes (``report_saturation``).
        self.saturated_at: datetime | None = None
        # A seat taken later than start-up is taken over from another controller: that
        # controller counts every node as seen when it took the seat (module docstring).
        self._took_over = not coordination.leading
        #: When this registry took the controller's seat over from another (None: it did not).
        self.took_seat_at: datetime | None = None
        self._leading = False

    # -- judging ------------------------------------------------------------------------

    def judge(self, now: datetime, *, controller: bool = False) -> Callable[[NodeRecord], Verdict]:
        """The verdict at ``now`` (see ``judge``); ``controller``: the lifecycle controller's
        (after a takeover it counts every node as seen then: see the module docstring)."""
        return judge(
            now,
            self._policy.thresholds(now),
            floor=self._floor(controller),
            protected=self.protection_now().status,
            renewed_at=self._renewed_at,
        )

    def _floor(self, controller: bool) -> datetime:
        floor = self._seen_floor()
        if controller and self.took_seat_at is not None and self.took_seat_at > floor:
            floor = self.took_seat_at
        return floor

    def _seen_floor(self) -> datetime:
        floor = self.started_at
        for blind_until in (self._coordination.resumed_at, self.saturated_at):
            if blind_until is not None and blind_until > floor:
                floor = blind_until
        return floor

    def report_saturation(self) -> None:
        self.saturated_at = self._clock.now()

    def protection_now(self) -> RegistryCondition:
        """Protection as the controller decided it: here, or published by another replica."""
        if self._coordination.leading:
            return self._protection
        shared = self._coordination.shared_state(MASS_FAILURE_PROTECTION)
        if shared is None:
            return self._protection_off  # nothing published, or its controller died
        try:
            return RegistryCondition.from_dict(shared)
        except (KeyError, TypeError, ValueError):
            log.warning("the published mass-failure protection is unreadable; ignored")
            return self._protection_off

    # -- the controller -----------------------------------------------------------------

    def observe_leading(self, leading: bool) -> None:
        """Whether this registry holds the controller's seat now (the controller's loop
        asks every period): from a seat taken over on, every node counts as seen then."""
        if leading and not self._leading and self._took_over:
            self.took_seat_at = self._clock.now()
            log.warning(
                "took the lifecycle controller over: every node counts as seen now (renewals "
                "the last controller's replica served may be unpublished)"
            )
        if not leading:
            self._took_over = True
        self._leading = leading

    def reconcile(
        self, snapshot: Sequence[Versioned], record_health: RecordHealth, remove: Remove
    ) -> None:
        """One pass: protection check, transitions recorded, expired entries removed."""

        def recording(node_id: str, fenced: bool) -> Steps[Versioned]:
            return record_health(node_id, fenced)
            yield  # a generator: its only step is the callback's

        def removing(record: NodeRecord, revision: int, now: datetime) -> Steps[None]:
            remove(record, revision, now)
            yield from ()

        steps.run(self.reconciling(snapshot, recording, removing), self._coordination)

    def reconciling(
        self, snapshot: Sequence[Versioned], record_health: RecordingHealth, remove: Removing
    ) -> Steps[None]:
        """``reconcile`` as steps: the writes are the procedures given, the publication
        of protection a call of the coordination's."""
        now = self._clock.now()
        judged_with = self.protection_now().status
        pending = unsettled(
            snapshot,
            self._policy.thresholds(now).alive_after,
            floor=self._floor(controller=True),
            renewed_at=self._renewed_at,
        )
        verdict = self.judge(now, controller=True)
        verdicts = [verdict(versioned.record) for versioned in pending]
        # The settled nodes are ALIVE, hence considered and healthy.
        considered, unhealthy = len(snapshot) - len(pending), 0
        for versioned, (_, health, _, _) in zip(pending, verdicts, strict=True):
            if versioned.record.health is not HealthState.OFFLINE:
                considered += 1
                unhealthy += health is not HealthState.ALIVE
        protection = self._settings.protection
        protected = protection.enabled and protection_engaged(
            unhealthy=unhealthy,
            considered=considered,
            fraction=protection.unhealthy_fraction,
            min_unhealthy=protection.min_unhealthy_nodes,
        )
        self._set_protection(protected, unhealthy, considered, now)
        yield from self._share_protection()
        if self.protection_now().status != judged_with:  # capped as just decided
            verdict = self.judge(now, controller=True)
            verdicts = [verdict(versioned.record) for versioned in pending]
        try:
            for versioned, (_, health, shown, counted) in zip(pending, verdicts, strict=True):
                record, revision = versioned.record, versioned.revision
                try:
                    if shown is not record.health:
                        # Recorded before any removal, so watchers see Offline, then DELETED.
                        revision = (yield from record_health(record.node_id, True)).revision
                    if (
                        not protected
                        and health is HealthState.OFFLINE
                        and self._policy.expired(counted, now)
                    ):
                        yield from remove(record, revision, now)
                except (RevisionConflictError, NotFoundError):
                    # Changed or removed since the snapshot: the next pass sees the new state.
                    continue
        except NotLeadingError as refused:
            log.warning("lifecycle controller pass stopped: %s", refused)

    def _share_protection(self) -> Steps[None]:
        """Publish the controller's protection decision for the other replicas, if changed."""
        if not self._coordination.leading:
            return  # a pass run by hand on another replica must not overrule the controller
        doc = self._protection.to_dict()
        if self._coordination.shared_state(MASS_FAILURE_PROTECTION) == doc:
            return
        try:
            yield from steps.publish_state(MASS_FAILURE_PROTECTION, doc)
        except RegistryError as error:
            log.warning("could not publish mass-failure protection (%s); next pass", error)

    def _set_protection(self, active: bool, unhealthy: int, considered: int, now: datetime) -> None:
        if active == self._protection.status:
            return
        if active:
            reason = "MassHeartbeatLoss"
            message = (
                f"{unhealthy} of {considered} nodes stopped heartbeating at once; assuming the "
                "fault is on the registry's side: no node is marked Offline or removed"
            )
            log.warning("mass-failure protection engaged: %s", message)
        else:
            reason = "NodesHeartbeating"
            message = f"{considered - unhealthy} of {considered} nodes heartbeating"
            log.warning("mass-failure protection released: %s", message)
        self._protection = RegistryCondition(MASS_FAILURE_PROTECTION, active, reason, message, now)


__all__ = ["MASS_FAILURE_PROTECTION", "SEVERITY", "Lifecycle", "Verdict", "judge", "unsettled"]
