"""The registry's decisions on one record: (record, now, input) -> the new record, or a refusal.

Pure functions: no store, no clock, no I/O. The procedures (``registry.writes``) call them
inside their compare-and-swap loops, the same way whichever driver runs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pydantic

from node_registry.errors import ConflictError, FieldError, RevisionConflictError, ValidationError
from node_registry.passport import (
    Condition,
    ConditionStatus,
    NodePassport,
    Phase,
    Status,
    limits,
    load_passport,
)
from node_registry.passport.verification import CapabilityVerification
from node_registry.passport.versions import translate_pydantic_error
from node_registry.registry.entry import RegistryEntry
from node_registry.registry.health import PHASE_OF
from node_registry.store import HealthState, NodeRecord

READY = "Ready"


def is_schedulable(entry: RegistryEntry) -> bool:
    """``only_healthy``: heartbeating, in phase Running, and not reporting itself unready."""
    return entry.health_state is HealthState.ALIVE and ready_to_work(entry.passport)


def ready_to_work(passport: NodePassport) -> bool:
    """What ``is_schedulable`` asks of the passport once the node is ALIVE: Running, and not
    reporting itself unready (fixed per stored version: encoders keep it)."""
    status = passport.status
    if status.phase is not Phase.RUNNING:
        return False
    ready = status.condition(READY)
    return ready is None or ready.status is not ConditionStatus.FALSE


def reported(
    old: NodeRecord,
    passport: NodePassport,
    now: datetime,
    verification: Mapping[str, CapabilityVerification],
) -> NodeRecord:
    """The node's own report (a registration, status, capabilities): it counts as a
    heartbeat, so the node is ALIVE; since when stays unless it was recorded silent."""
    changed_at = old.health_changed_at if old.health is HealthState.ALIVE else now
    return NodeRecord(
        passport,
        old.registered_at,
        HealthState.ALIVE,
        changed_at,
        verification=verification,
        generation=next_generation(old, passport),
    )


def kept_health(
    old: NodeRecord, passport: NodePassport, verification: Mapping[str, CapabilityVerification]
) -> NodeRecord:
    """A write that is not the node's report: health and its times stay as recorded."""
    return NodeRecord(
        passport,
        old.registered_at,
        old.health,
        old.health_changed_at,
        old.unready_since,
        verification,
        next_generation(old, passport),
    )


def next_generation(old: NodeRecord, passport: NodePassport) -> int:
    """Kubernetes' rule for resources with a status subresource: the generation grows with
    each change of the spec, never with status or metadata alone."""
    spec = passport.spec
    if spec is old.passport.spec or spec == old.passport.spec:
        return old.generation
    return old.generation + 1


def refuse_rename(old: NodeRecord, passport: NodePassport) -> None:
    """``register(rename=False)``: a uid registered under another name is not renamed."""
    if old.name != passport.metadata.name:
        raise ConflictError(
            f"uid {old.node_id} is registered as node {old.name!r}, not "
            f"{passport.metadata.name!r}; it is not renamed by registering"
        )


def with_health(record: NodeRecord, health: HealthState, now: datetime) -> NodeRecord:
    """The record with ``health`` recorded at ``now``; the node's own passport untouched."""
    unready_since = None if health is HealthState.ALIVE else record.unready_since or now
    return NodeRecord(
        record.passport,
        record.registered_at,
        health,
        now,
        unready_since,
        record.verification,
        record.generation,
    )


class StatusUpdate(pydantic.BaseModel):
    """What a status report may change (the status subresource)."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    phase: Phase | None = None
    current_tasks: int | None = pydantic.Field(default=None, alias="currentTasks", ge=0)
    conditions: list[Condition] | None = None


def validate_status_update(
    update: dict[str, Any], conditions: Iterable[Condition | Mapping[str, Any]] | None
) -> StatusUpdate:
    if conditions is not None:
        update["conditions"] = [
            c.model_dump(by_alias=True) if isinstance(c, Condition) else c for c in conditions
        ]
    try:
        checked = StatusUpdate.model_validate(update)
        if checked.conditions is not None:
            Status.model_validate({"conditions": checked.conditions})
    except pydantic.ValidationError as exc:
        raise ValidationError(
            "invalid status update", translate_pydantic_error(exc, prefix="status")
        ) from None
    if checked.phase is not None:
        refuse_registry_phases(checked.phase, "status.phase")
    return checked


def status_reported(record: NodeRecord, given: StatusUpdate, now: datetime) -> NodePassport:
    """The stored passport with the report merged in (conditions by type)."""
    status = record.passport.status
    fields: dict[str, Any] = {}
    if given.phase is not None:
        fields["phase"] = given.phase
    if given.current_tasks is not None:
        fields["current_tasks"] = given.current_tasks
    if given.conditions is not None:
        fields["conditions"] = merge_conditions(status.conditions, given.conditions, now)
    new_status = status.model_copy(update=fields)
    return checked_merge(record.passport.model_copy(update={"status": new_status}))


def refuse_registry_phases(phase: Phase, loc: str) -> None:
    if phase is Phase.OFFLINE:
        raise ValidationError(
            "invalid status", [FieldError(loc, "Offline is recorded by the registry only")]
        )


def modified(name: str) -> RevisionConflictError:
    # apiserver's words for a failed optimistic-concurrency write: clients match on them.
    return RevisionConflictError(
        f"Operation cannot be fulfilled on node {name!r}: the object has been modified; "
        "please apply your changes to the latest version and try again"
    )


def refuse_identity_change(old: NodeRecord, passport: NodePassport) -> None:
    problems = []
    if passport.node_id != old.node_id:
        problems.append(FieldError("metadata.uid", f"field is immutable (is {old.node_id})"))
    if passport.metadata.name != old.name:
        problems.append(FieldError("metadata.name", f"field is immutable (is {old.name!r})"))
    if problems:
        raise ValidationError("the node's identity cannot change", problems)


def checked_merge(passport: NodePassport) -> NodePassport:
    """The passport after a status merge, held to every limit a registration is held to.

    ``model_copy`` validates nothing, and a merge adds to what is stored: without this, two
    updates of 32 new condition types store 64, which no reader (and no etcd replica
    decoding it) accepts afterwards.
    """
    conditions = passport.status.conditions
    if len(conditions) > limits.MAX_CONDITIONS:
        raise ValidationError(
            "invalid status update",
            [
                FieldError(
                    "status.conditions",
                    f"at most {limits.MAX_CONDITIONS} conditions; merging this update by type "
                    f"would make {len(conditions)} (update the types already there, or "
                    "re-register the node to replace its conditions)",
                )
            ],
        )
    try:
        return load_passport(passport)
    except ValidationError as exc:
        raise type(exc)("invalid status update", exc.errors) from None


def merge_conditions(
    existing: list[Condition], given: list[Condition], now: datetime
) -> list[Condition]:
    merged = {c.type: c for c in existing}
    for cond in given:
        old = merged.get(cond.type)
        fields: dict[str, Any] = {}
        if cond.last_transition_time is None:
            unchanged = old is not None and old.status is cond.status
            fields["last_transition_time"] = (
                old.last_transition_time if unchanged and old is not None else now
            )
        if cond.last_heartbeat_time is None:
            fields["last_heartbeat_time"] = now
        merged[cond.type] = cond.model_copy(update=fields)
    return list(merged.values())


_UNREADY: dict[HealthState, tuple[str, str]] = {
    HealthState.NOT_READY: ("NodeStatusUnknown", "The node stopped renewing its lease."),
    HealthState.OFFLINE: ("NodeOffline", "The node's lease expired; it is out of the active set."),
}


def shown(record: NodeRecord) -> NodePassport:
    """The passport as readers see it while the registry has lost touch with the node.

    The controller's verdict is laid over the node's own status (phase NotReady/Offline,
    Ready=Unknown, as Kubernetes' node lifecycle controller sets it) rather than written
    into it: when heartbeats resume, the node's own report — Ready=False included — shows
    again unchanged, and no heartbeat ever claims readiness for a node.
    """
    if record.health is HealthState.ALIVE:
        return record.passport
    reason, message = _UNREADY[record.health]
    status = record.passport.status
    ready = Condition(
        type=READY,
        status=ConditionStatus.UNKNOWN,
        reason=reason,
        message=message,
        lastTransitionTime=record.unready_since,
    )
    others = [c for c in status.conditions if c.type != READY]
    shown = status.model_copy(
        update={"phase": PHASE_OF[record.health], "conditions": [ready, *others]}
    )
    return record.passport.model_copy(update={"status": shown})
