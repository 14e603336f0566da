"""The registry's writes as procedures (``registry.steps``): the compare-and-swap loops,
admission and fencing, written once for the sync and the async driver.

Every read-modify-write is a compare-and-swap on the record's revision, retried on
conflict (apiserver's GuaranteedUpdate). The record to compare against comes from the
index first (``current``): on a shared store the index lags by a watch delay, and a stale
guess costs one failed compare-and-swap, while asking the store every time costs a round
trip per write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Mapping
from datetime import datetime
from typing import Any

import pydantic

from node_registry.admission import Admission
from node_registry.clock import SteadyClock
from node_registry.config import Settings
from node_registry.errors import (
    ConflictError,
    FieldError,
    NotFoundError,
    RevisionConflictError,
    ValidationError,
)
from node_registry.passport import Capability, Condition, NodePassport, Phase, load_passport
from node_registry.passport.types import NodeTypeDefinition
from node_registry.passport.verification import CapabilityVerification
from node_registry.passport.versions import translate_pydantic_error
from node_registry.registry import decide, steps
from node_registry.registry.index import NodeIndex
from node_registry.registry.lifecycle import Lifecycle
from node_registry.registry.policies import (
    NodeTypeCatalog,
    UserInfo,
    admit,
    kept_results,
    merge_results,
    refuse_registry_owned,
)
from node_registry.registry.steps import Steps
from node_registry.selectors import Selector
from node_registry.store import Binding, HealthState, NodeRecord, Versioned

log = logging.getLogger("node_registry")

CAS_ATTEMPTS = 16

#: A change of one stored record at an instant: the new record, or None for no write;
#: or steps giving it, when deciding needs the store (a node type not known here).
Change = Callable[[NodeRecord, datetime], NodeRecord | Steps[NodeRecord | None] | None]


def _busy(node_id: str) -> ConflictError:
    return ConflictError(f"node {node_id} is being changed concurrently; try again")


class Writes:
    """The procedures of one registry, over its index, clock, lifecycle and policies."""

    def __init__(
        self,
        *,
        settings: Settings,
        clock: SteadyClock,
        index: NodeIndex,
        lifecycle: Lifecycle,
        node_types: NodeTypeCatalog,
        admission: Admission,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.index = index
        self.lifecycle = lifecycle
        self.node_types = node_types
        self.admission = admission

    # -- the node's own writes ----------------------------------------------------------

    def register(
        self,
        passport: NodePassport | Mapping[str, Any],
        *,
        rename: bool = True,
        user: UserInfo | None = None,
    ) -> Steps[Versioned]:
        checked = load_passport(passport)
        decide.refuse_registry_phases(checked.status.phase, "status.phase")
        refuse_registry_owned(checked)
        yield from self.node_types.validating(checked)
        node_id = checked.node_id
        for attempt in range(CAS_ATTEMPTS):
            now = self.clock.now()
            current = yield from self.current(node_id, attempt, absent_is_a_guess=True)
            try:
                if current is None:
                    admit(self.admission, "CREATE", checked, None, user)
                    record = NodeRecord(checked, now, HealthState.ALIVE, now)
                    revision = yield from steps.create(record, renewed_at=now)
                else:
                    old = current.record
                    if not rename:
                        decide.refuse_rename(old, checked)
                    admit(self.admission, "UPDATE", checked, old.passport, user)
                    kept = kept_results(checked, old.verification)
                    record = decide.reported(old, checked, now, kept)
                    revision = yield from steps.update(
                        record, expected_revision=current.revision, renewed_at=now
                    )
            except (RevisionConflictError, NotFoundError):
                continue  # changed or deregistered meanwhile: look again, create if gone
            return Versioned(record, revision)
        raise _busy(node_id)

    def heartbeat(self, node_id: str) -> Steps[datetime]:
        now = self.clock.now()
        yield from steps.renew(node_id, now)
        current = self.index.get(node_id)
        if current is not None and current.record.health is not HealthState.ALIVE:
            yield from self.record_health(node_id)
        return now

    def update_status(
        self,
        node_id: str,
        *,
        phase: Phase | str | None = None,
        conditions: Iterable[Condition | Mapping[str, Any]] | None = None,
        current_tasks: int | None = None,
        user: UserInfo | None = None,
    ) -> Steps[Versioned]:
        update: dict[str, Any] = {}
        if phase is not None:
            update["phase"] = phase
        if current_tasks is not None:
            update["currentTasks"] = current_tasks
        given = decide.validate_status_update(update, conditions)

        def change(record: NodeRecord, now: datetime) -> NodeRecord:
            passport = decide.status_reported(record, given, now)
            refuse_registry_owned(passport)
            admit(self.admission, "UPDATE", passport, record.passport, user)
            return decide.reported(record, passport, now, record.verification)

        return (yield from self.modify(node_id, change, renew=True))

    def set_capabilities(
        self,
        node_id: str,
        capabilities: Iterable[Capability | Mapping[str, Any]],
        *,
        user: UserInfo | None = None,
    ) -> Steps[Versioned]:
        given = [
            c.model_dump(by_alias=True, exclude_none=True) if isinstance(c, Capability) else c
            for c in capabilities
        ]

        def change(record: NodeRecord, now: datetime) -> Steps[NodeRecord]:
            doc = record.passport.to_dict()
            doc["spec"]["capabilities"] = given
            try:
                passport = load_passport(doc)
            except ValidationError as exc:
                raise type(exc)("invalid capabilities", exc.errors) from None
            refuse_registry_owned(passport)
            yield from self.node_types.validating(passport)
            admit(self.admission, "UPDATE", passport, record.passport, user)
            # A heartbeat too, as a status report: a node recorded silent is back.
            return decide.reported(
                record, passport, now, kept_results(passport, record.verification)
            )

        return (yield from self.modify(node_id, change, renew=True))

    def record_verification(
        self,
        node_id: str,
        results: Iterable[CapabilityVerification | Mapping[str, Any]],
        *,
        replace: bool = False,
    ) -> Steps[Versioned]:
        checked: list[CapabilityVerification] = []
        problems: list[FieldError] = []
        for index, result in enumerate(results):
            try:
                checked.append(CapabilityVerification.model_validate(result))
            except pydantic.ValidationError as exc:
                problems.extend(translate_pydantic_error(exc, prefix=f"results[{index}]"))
        if problems:
            raise ValidationError("invalid verification", problems)

        def change(record: NodeRecord, now: datetime) -> NodeRecord:
            stored = {} if replace else record.verification
            merged = merge_results(record.passport, stored, checked)
            return decide.kept_health(record, record.passport, merged)

        return (yield from self.modify(node_id, change))

    def rewrite(
        self,
        node_id: str,
        change: Callable[[NodePassport, int], NodePassport | Mapping[str, Any]],
        *,
        expected_revision: int | None = None,
        heartbeat: bool = False,
        dry_run: bool = False,
        user: UserInfo | None = None,
    ) -> Steps[Versioned]:
        for attempt in range(CAS_ATTEMPTS):
            now = self.clock.now()
            current = yield from self.registered(node_id, attempt)
            if expected_revision is not None and current.revision != expected_revision:
                if attempt == 0:
                    continue  # the index may lag the store: ask the store itself
                raise decide.modified(current.record.name)
            old = current.record
            passport = decide.checked_merge(load_passport(change(old.passport, current.revision)))
            decide.refuse_registry_phases(passport.status.phase, "status.phase")
            decide.refuse_identity_change(old, passport)
            refuse_registry_owned(passport)
            yield from self.node_types.validating(passport)
            admit(self.admission, "UPDATE", passport, old.passport, user)
            kept = kept_results(passport, old.verification)
            if heartbeat:
                record = decide.reported(old, passport, now, kept)
            else:
                record = decide.kept_health(old, passport, kept)
            if dry_run:
                return Versioned(record, current.revision)
            try:
                revision = yield from steps.update(
                    record,
                    expected_revision=current.revision,
                    renewed_at=now if heartbeat else None,
                )
            except RevisionConflictError:
                if expected_revision is not None:
                    raise decide.modified(old.name) from None
                continue
            return Versioned(record, revision)
        raise _busy(node_id)

    def deregister(
        self,
        node_id: str,
        *,
        keep_binding: bool = False,
        expected_revision: int | None = None,
        user: UserInfo | None = None,
    ) -> Steps[None]:
        if self.admission.policies:
            known = yield from self.current(node_id, 0, absent_is_a_guess=False)
            if known is not None:
                admit(self.admission, "DELETE", None, known.record.passport, user)
        if not keep_binding:
            yield from steps.delete(node_id, expected_revision=expected_revision)
            return
        for attempt in range(CAS_ATTEMPTS):
            current = yield from self.registered(node_id, attempt)
            if expected_revision is not None and current.revision != expected_revision:
                if attempt == 0:
                    continue
                raise decide.modified(current.record.name)
            keep = self.binding_of(current.record, self.clock.now())
            try:
                yield from steps.delete(node_id, expected_revision=current.revision, keep=keep)
            except RevisionConflictError:
                if expected_revision is not None:
                    raise decide.modified(current.record.name) from None
                continue  # its labels changed meanwhile: remember the new ones
            return
        raise _busy(node_id)

    def delete_node_type(self, name: str) -> Steps[NodeTypeDefinition]:
        in_use = len(self.index.select(name, Selector(()))[0])
        return (yield from self.node_types.deleting(name, in_use=in_use))

    # -- the lifecycle controller's ------------------------------------------------------

    def reconcile(self) -> Steps[None]:
        snapshot, _ = self.index.snapshot()
        yield from self.lifecycle.reconciling(snapshot, self.record_health, self.remove_expired)

    def record_health(self, node_id: str, fenced: bool = False) -> Steps[Versioned]:
        """Record the node's current health, if it changed (readers see it in status).

        ``fenced``: the lifecycle controller's write (see ``Store``), not a heartbeat's.
        """

        def change(record: NodeRecord, now: datetime) -> NodeRecord | None:
            target = self.lifecycle.judge(now, controller=fenced)(record)[2]
            if target is record.health:
                return None
            log.info(
                "node %s (%s): %s -> %s", record.name, node_id, record.health.value, target.value
            )
            return decide.with_health(record, target, now)

        return (yield from self.modify(node_id, change, fenced=fenced))

    def remove_expired(self, record: NodeRecord, revision: int, now: datetime) -> Steps[None]:
        """The controller removes a node past TTL + grace period, keeping its binding."""
        keep = self.binding_of(record, now)
        yield from steps.delete(record.node_id, expected_revision=revision, keep=keep, fenced=True)
        log.info("removed node %s (%s): lease expired", record.name, record.node_id)

    # -- the loop and its guess ---------------------------------------------------------

    def modify(
        self,
        node_id: str,
        change: Change,
        *,
        renew: bool = False,
        fenced: bool = False,
    ) -> Steps[Versioned]:
        """Compare-and-swap ``change`` onto the stored record, retrying on conflict."""
        for attempt in range(CAS_ATTEMPTS):
            now = self.clock.now()
            current = yield from self.registered(node_id, attempt)
            decided = change(current.record, now)
            record = (yield from decided) if isinstance(decided, Generator) else decided
            if record is None:
                return current
            try:
                revision = yield from steps.update(
                    record,
                    expected_revision=current.revision,
                    renewed_at=now if renew else None,
                    fenced=fenced,
                )
            except RevisionConflictError:
                continue
            return Versioned(record, revision)
        raise _busy(node_id)

    def current(
        self, node_id: str, attempt: int, *, absent_is_a_guess: bool
    ) -> Steps[Versioned | None]:
        """The record to compare-and-swap against: the index first, the store after a miss.

        Absence is a usable guess only where the write that follows checks it (a create);
        elsewhere an unknown node is looked up.
        """
        if attempt == 0:
            known = self.index.get(node_id)
            if known is not None or absent_is_a_guess:
                return known
        return (yield from steps.get(node_id))

    def registered(self, node_id: str, attempt: int) -> Steps[Versioned]:
        """``current`` for a write of a node that must be there: ``NotFoundError`` if not."""
        current = yield from self.current(node_id, attempt, absent_is_a_guess=False)
        if current is None:
            raise NotFoundError(f"node {node_id!r} is not registered")
        return current

    def binding_of(self, record: NodeRecord, now: datetime) -> Binding:
        prefix = self.settings.server.protected_label_prefix
        labels = {k: v for k, v in record.passport.metadata.labels.items() if k.startswith(prefix)}
        effective = {k: v for k, v in record.labels.items() if k.startswith(prefix)}
        return Binding(record.name, record.node_id, labels, now, effective)
