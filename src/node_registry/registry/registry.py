"""The embedded registry: register, heartbeat, report status, find, watch; and its lifecycle.

Design decisions, each from a lesson of Kubernetes or its peers:

- Health is computed from the lease and the clock on every read (``lifecycle.judge``, the
  one health rule), so no reader sees a dead node as healthy because the controller lagged.
  The lifecycle controller (``lifecycle``) only *records* transitions (``status.phase``,
  the ``Ready`` condition), emits the events and removes expired entries.
- Durations are measured on the clock's monotonic time (``clock.steady``): a step of the
  wall clock judges no node.
- A heartbeat renews the lease and nothing else: no passport rewrite, no new revision, no
  event (Kubernetes split Lease from Node status for this). Only a heartbeat that revives a
  node recorded NotReady/Offline writes, once, to record the recovery.
- On a store shared by several registry processes (etcd), only the one the store elects
  runs the lifecycle controller; every process still computes health on every read.
- Every read-modify-write is a compare-and-swap on the record's revision, retried on conflict.
- A node that leaves by itself (graceful deregistration) or is removed for silence keeps its
  name bound to its uid, with the protected labels operators gave it (``binding``), for
  ``store.binding_retention_seconds``: whoever may register that name then can tell the
  node coming back from another uid taking its name, and give it its labels back. An admin
  deleting the node forgets both.
"""

from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from uuid import UUID

import pydantic

from node_registry.admission import Admission
from node_registry.clock import Clock, steady
from node_registry.config import Settings, load_settings
from node_registry.errors import (
    ConflictError,
    FieldError,
    NotFoundError,
    RegistryError,
    RevisionConflictError,
    ValidationError,
)
from node_registry.passport import (
    Capability,
    Condition,
    ConditionStatus,
    NodePassport,
    NodeType,
    Phase,
    Status,
    limits,
    load_passport,
)
from node_registry.passport.derived import CAPABILITY_PREFIX
from node_registry.passport.kinds import parse_kind
from node_registry.passport.types import NodeTypeDefinition
from node_registry.passport.verification import (
    CapabilityVerification,
    strict_labels,
    trusted,
)
from node_registry.passport.versions import translate_pydantic_error
from node_registry.registry.entry import (
    EventType,
    NodeList,
    RegistryCondition,
    RegistryEntry,
    WatchEvent,
)
from node_registry.registry.health import PHASE_OF, HealthPolicy
from node_registry.registry.index import NodeIndex
from node_registry.registry.lifecycle import Lifecycle
from node_registry.registry.policies import (
    NodeTypeCatalog,
    UserInfo,
    admit,
    kept_results,
    load_admission,
    merge_results,
    refuse_registry_owned,
)
from node_registry.registry.watch import AsyncWatch, Watch, WatchHub, event_type
from node_registry.selectors import Operator, Selector, as_selector
from node_registry.store import (
    Binding,
    HealthState,
    MemoryStore,
    NodeRecord,
    SkippedRecords,
    Store,
    StoreEvent,
    Versioned,
)

log = logging.getLogger("node_registry")

READY = "Ready"
_CAS_ATTEMPTS = 16
_BY_NAME = operator.attrgetter("record.name")

SelectorInput = str | Mapping[str, Any] | Selector | None
#: Requirements that labels keep meeting when keys are only added to them: the strict
#: labels of a query counting Verified claims only are a subset of the indexed ones.
_POSITIVE = frozenset(
    {
        Operator.EQUALS,
        Operator.DOUBLE_EQUALS,
        Operator.IN,
        Operator.EXISTS,
        Operator.GREATER_THAN,
        Operator.LESS_THAN,
    }
)


def is_schedulable(entry: RegistryEntry) -> bool:
    """``only_healthy``: heartbeating, in phase Running, and not reporting itself unready."""
    if entry.health_state is not HealthState.ALIVE:
        return False
    status = entry.passport.status
    if status.phase is not Phase.RUNNING:
        return False
    ready = status.condition(READY)
    return ready is None or ready.status is not ConditionStatus.FALSE


class Registry:
    """The Node Registry, in-process; thread-safe. The in-memory store is the default.

    ``with Registry() as registry:`` (or ``start()``/``stop()``) also runs the lifecycle
    controller in a background thread every ``controller.period_seconds``; without it, reads
    still report current health and ``reconcile()`` runs one controller pass by hand.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._store: Store = store or MemoryStore(
            history_size=self.settings.watch.history_size,
            binding_ttl=self.settings.store.binding_retention_seconds,
        )
        # Every instant the registry reads moves with monotonic time (see ``clock.steady``).
        self._clock = steady(clock)
        self._policy = HealthPolicy.from_settings(self.settings.heartbeat)
        self._lifecycle = Lifecycle(
            self._store, self._store.renewed_at, self.settings, self._clock, self._policy
        )
        #: The CEL policies every write passes (``admission.policies_path``, or given).
        self.admission = admission or load_admission(self.settings.admission.policies_path)
        #: The node types passports may name (built-in, configured, registered).
        self.node_types = NodeTypeCatalog(self._store, path=self.settings.node_types.path)
        self._index = NodeIndex()
        nodes, revision = self._store.list()
        self._index.load(nodes, revision)
        self._cancel_feed = self._store.watch(revision, self._index.apply)
        self._controller: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_config(
        cls, path: str | Path, *, store: Store | None = None, clock: Clock | None = None
    ) -> Registry:
        """A registry configured by a YAML file (``config/node_registry.yaml``) and environment."""
        return cls(store, settings=load_settings(path), clock=clock)

    def __repr__(self) -> str:
        return f"Registry(store={self._store!r}, clock={self._clock!r})"

    # -- writes -------------------------------------------------------------------------

    def register(
        self,
        passport: NodePassport | Mapping[str, Any],
        *,
        rename: bool = True,
        user: UserInfo | None = None,
    ) -> RegistryEntry:
        """Store the passport (validated, converted to v1) and count it as a heartbeat.

        Re-registering a uid replaces its passport and keeps ``registered_at``; a different
        uid with a name already taken is a ``ConflictError``. ``rename=False``: so is a uid
        registered under another name (a node may not rename itself, nor take over another
        node's record), checked in the same compare-and-swap as the write.

        The passport must fit its node type (``node_types``) and pass the admission
        policies (``CREATE``, or ``UPDATE`` with the stored passport as ``oldObject``);
        the verifier's results of the claims it keeps stay with it.
        """
        checked = load_passport(passport)
        _refuse_registry_phases(checked.status.phase, "status.phase")
        refuse_registry_owned(checked)
        self.node_types.validate(checked)
        node_id = checked.node_id
        for attempt in range(_CAS_ATTEMPTS):
            now = self._clock.now()
            current = self._current(node_id, attempt, absent_is_a_guess=True)
            try:
                if current is None:
                    admit(self.admission, "CREATE", checked, None, user)
                    record = NodeRecord(checked, now, HealthState.ALIVE, now)
                    revision = self._store.create(record, renewed_at=now)
                else:
                    old = current.record
                    if not rename and old.name != checked.metadata.name:
                        raise ConflictError(
                            f"uid {node_id} is registered as node {old.name!r}, not "
                            f"{checked.metadata.name!r}; it is not renamed by registering"
                        )
                    admit(self.admission, "UPDATE", checked, old.passport, user)
                    changed_at = old.health_changed_at if old.health is HealthState.ALIVE else now
                    record = NodeRecord(
                        checked,
                        old.registered_at,
                        HealthState.ALIVE,
                        changed_at,
                        verification=kept_results(checked, old.verification),
                    )
                    revision = self._store.update(
                        record, expected_revision=current.revision, renewed_at=now
                    )
            except (RevisionConflictError, NotFoundError):
                continue  # changed or deregistered meanwhile: look again, create if gone
            return self._entry(Versioned(record, revision), now)
        raise ConflictError(f"node {node_id} is being changed concurrently; try again")

    def heartbeat(self, node_id: str) -> datetime:
        """Renew the node's lease and return the renew time.

        ``NotFoundError`` tells the node runtime to register again.
        """
        now = self._clock.now()
        self._store.renew(node_id, now)
        current = self._index.get(node_id)
        if current is not None and current.record.health is not HealthState.ALIVE:
            self._record_health(node_id)
        return now

    def heartbeat_is_local(self, node_id: str) -> bool:
        """Whether ``heartbeat(node_id)`` needs no store round trip (the usual case).

        True when the node is known here and recorded alive: the renewal is then recorded
        in memory (etcd hears of it in a batch); otherwise the heartbeat may look the node
        up or record its recovery, which are store writes.
        """
        current = self._index.get(node_id)
        return current is not None and current.record.health is HealthState.ALIVE

    def update_status(
        self,
        node_id: str,
        *,
        phase: Phase | str | None = None,
        conditions: Iterable[Condition | Mapping[str, Any]] | None = None,
        current_tasks: int | None = None,
        user: UserInfo | None = None,
    ) -> RegistryEntry:
        """The node reports its status (the status subresource); it counts as a heartbeat.

        ``conditions`` are merged by type; a condition whose status changed gets
        ``lastTransitionTime`` now unless the node gave one.
        """
        update: dict[str, Any] = {}
        if phase is not None:
            update["phase"] = phase
        if current_tasks is not None:
            update["currentTasks"] = current_tasks
        given = _validate_status_update(update, conditions)
        if given.phase is not None:
            _refuse_registry_phases(given.phase, "status.phase")

        def change(record: NodeRecord, now: datetime) -> NodeRecord:
            status = record.passport.status
            fields: dict[str, Any] = {}
            if given.phase is not None:
                fields["phase"] = given.phase
            if given.current_tasks is not None:
                fields["current_tasks"] = given.current_tasks
            if given.conditions is not None:
                fields["conditions"] = _merge_conditions(status.conditions, given.conditions, now)
            new_status = status.model_copy(update=fields)
            passport = _checked_merge(record.passport.model_copy(update={"status": new_status}))
            refuse_registry_owned(passport)
            admit(self.admission, "UPDATE", passport, record.passport, user)
            changed_at = record.health_changed_at if record.health is HealthState.ALIVE else now
            return NodeRecord(
                passport,
                record.registered_at,
                HealthState.ALIVE,
                changed_at,
                verification=record.verification,
            )

        return self._modify(node_id, change, renew=True)

    def rewrite(
        self,
        node_id: str,
        change: Callable[[NodePassport, int], NodePassport | Mapping[str, Any]],
        *,
        expected_revision: int | None = None,
        heartbeat: bool = False,
        dry_run: bool = False,
        user: UserInfo | None = None,
    ) -> RegistryEntry:
        """Replace the node's passport with ``change(stored passport, its revision)``.

        Kubernetes' update and patch (apiserver's GuaranteedUpdate): ``change`` sees the
        passport as stored — the node's own status, without the controller's overlay — and
        runs again when a concurrent write wins the compare-and-swap, unless
        ``expected_revision`` pins the version the caller read (optimistic concurrency:
        ``RevisionConflictError`` when it is not the stored one). The result is held to every
        limit a registration is; uid and name never change. ``heartbeat``: the write is the
        node's own report and counts as a heartbeat (ALIVE, lease renewed); otherwise health
        and lease stay as they were. ``dry_run``: validated and returned, nothing stored.
        The result must fit its node type and pass the admission policies (an ``UPDATE``
        with the stored passport as ``oldObject``); the verifier's results of the claims it
        keeps stay with it.
        """
        for attempt in range(_CAS_ATTEMPTS):
            now = self._clock.now()
            current = self._current(node_id, attempt, absent_is_a_guess=False)
            if current is None:
                raise NotFoundError(f"node {node_id!r} is not registered")
            if expected_revision is not None and current.revision != expected_revision:
                if attempt == 0:
                    continue  # the index may lag the store: ask the store itself
                raise _modified(current.record.name)
            old = current.record
            passport = _checked_merge(load_passport(change(old.passport, current.revision)))
            _refuse_registry_phases(passport.status.phase, "status.phase")
            _refuse_identity_change(old, passport)
            refuse_registry_owned(passport)
            self.node_types.validate(passport)
            admit(self.admission, "UPDATE", passport, old.passport, user)
            kept = kept_results(passport, old.verification)
            if heartbeat:
                changed_at = old.health_changed_at if old.health is HealthState.ALIVE else now
                record = NodeRecord(
                    passport, old.registered_at, HealthState.ALIVE, changed_at, verification=kept
                )
            else:
                record = NodeRecord(
                    passport,
                    old.registered_at,
                    old.health,
                    old.health_changed_at,
                    old.unready_since,
                    kept,
                )
            if dry_run:
                return self._entry(Versioned(record, current.revision), now)
            try:
                revision = self._store.update(
                    record,
                    expected_revision=current.revision,
                    renewed_at=now if heartbeat else None,
                )
            except RevisionConflictError:
                if expected_revision is not None:
                    raise _modified(old.name) from None
                continue
            return self._entry(Versioned(record, revision), now)
        raise ConflictError(f"node {node_id} is being changed concurrently; try again")

    def deregister(
        self,
        node_id: str,
        *,
        keep_binding: bool = False,
        expected_revision: int | None = None,
        user: UserInfo | None = None,
    ) -> None:
        """Remove the node now; ``NotFoundError`` if it is not registered.

        ``keep_binding``: the node leaves by itself (graceful shutdown), so its name stays
        bound to it (see ``binding``); otherwise (an operator's delete) the name is free.
        Admission policies that match ``DELETE`` see the stored passport as ``oldObject``.
        ``expected_revision``: only if that is the stored version (a delete precondition).
        """
        if self.admission.policies:
            known = self._current(node_id, 0, absent_is_a_guess=False)
            if known is not None:
                admit(self.admission, "DELETE", None, known.record.passport, user)
        if not keep_binding:
            self._store.delete(node_id, expected_revision=expected_revision)
            return
        for attempt in range(_CAS_ATTEMPTS):
            current = self._current(node_id, attempt, absent_is_a_guess=False)
            if current is None:
                raise NotFoundError(f"node {node_id!r} is not registered")
            if expected_revision is not None and current.revision != expected_revision:
                if attempt == 0:
                    continue
                raise _modified(current.record.name)
            keep = self._binding_of(current.record, self._clock.now())
            try:
                self._store.delete(node_id, expected_revision=current.revision, keep=keep)
            except RevisionConflictError:
                if expected_revision is not None:
                    raise _modified(current.record.name) from None
                continue  # its labels changed meanwhile: remember the new ones
            return
        raise ConflictError(f"node {node_id} is being changed concurrently; try again")

    def binding(self, name: str) -> Binding | None:
        """The uid ``name`` stays bound to since its node left, and the labels to give back;
        None when no node left it within ``store.binding_retention_seconds``."""
        binding = self._store.binding(name)
        if binding is None:
            return None
        retention = timedelta(seconds=self.settings.store.binding_retention_seconds)
        if binding.released_at + retention < self._clock.now():
            return None
        return binding

    def release(self, name: str) -> bool:
        """Forget the binding of ``name`` (an operator frees the name); whether there was one."""
        return self._store.forget(name)

    def set_capabilities(
        self,
        node_id: str,
        capabilities: Iterable[Capability | Mapping[str, Any]],
        *,
        user: UserInfo | None = None,
    ) -> RegistryEntry:
        """Replace the node's ``spec.capabilities`` at runtime, without re-registering.

        Held to everything a registration is (passport limits, node type, admission as an
        ``UPDATE``); watchers see a MODIFIED. Results of the claims it keeps unchanged stay
        Verified; an added or changed claim is Unverified until the verifier probes it. It
        counts as a heartbeat, as a status report does.
        """
        given = [
            c.model_dump(by_alias=True, exclude_none=True) if isinstance(c, Capability) else c
            for c in capabilities
        ]

        def change(record: NodeRecord, now: datetime) -> NodeRecord:
            doc = record.passport.to_dict()
            doc["spec"]["capabilities"] = given
            try:
                passport = load_passport(doc)
            except ValidationError as exc:
                raise type(exc)("invalid capabilities", exc.errors) from None
            refuse_registry_owned(passport)
            self.node_types.validate(passport)
            admit(self.admission, "UPDATE", passport, record.passport, user)
            # A heartbeat too, as a status report: a node recorded silent is back.
            changed_at = record.health_changed_at if record.health is HealthState.ALIVE else now
            return NodeRecord(
                passport,
                record.registered_at,
                HealthState.ALIVE,
                changed_at,
                verification=kept_results(passport, record.verification),
            )

        return self._modify(node_id, change, renew=True)

    def record_verification(
        self,
        node_id: str,
        results: Iterable[CapabilityVerification | Mapping[str, Any]],
        *,
        replace: bool = False,
    ) -> RegistryEntry:
        """Store the verifier's results with the node (merged by capability), as
        registry-owned status: ``status.verification`` of the object, the
        ``verification.ai-team.io/*`` labels, the Trusted condition. Watchers see a MODIFIED.

        ``ValidationError`` for a result that is malformed, about another uid, or about a
        capability the node does not claim (it changed meanwhile: plan again).
        ``replace``: these are all the results; the node's others are dropped.
        """
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
            return NodeRecord(
                record.passport,
                record.registered_at,
                record.health,
                record.health_changed_at,
                record.unready_since,
                merged,
            )

        return self._modify(node_id, change)

    def register_node_type(self, doc: Mapping[str, Any]) -> NodeTypeDefinition:
        """Register a custom node type (``kind: NodeType``); it is kept in the store."""
        return self.node_types.create(doc)

    def patch_node_type(self, name: str, patch: Mapping[str, Any]) -> NodeTypeDefinition:
        """Change a registered node type with a JSON merge patch (RFC 7386)."""
        return self.node_types.update(name, patch)

    def delete_node_type(self, name: str) -> NodeTypeDefinition:
        """Delete a registered node type; ``ConflictError`` while nodes are of it."""
        in_use = len(self._index.select(name, Selector(()))[0])
        return self.node_types.delete(name, in_use=in_use)

    # -- reads --------------------------------------------------------------------------

    def get(self, node_id: str) -> RegistryEntry:
        self._store.check_view()
        current = self._index.get(node_id)
        if current is None:
            raise NotFoundError(f"node {node_id!r} is not registered")
        return self._entry(current, self._clock.now())

    def get_by_name(self, name: str) -> RegistryEntry:
        return self.get(self.id_of(name))

    def id_of(self, name: str) -> str:
        """The node id registered under ``name``; ``NotFoundError`` when there is none."""
        self._store.check_view()
        node_id = self._index.id_of(name)
        if node_id is None:
            raise NotFoundError(f"no node is named {name!r}")
        return node_id

    def find_nodes(
        self,
        kind: str | NodeType | None = None,
        selector: SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> list[RegistryEntry]:
        """Seed 2.5: nodes of ``kind`` matching ``selector``, optionally only schedulable ones.

        ``selector`` is the structured form (``{"matchLabels": ..., "matchExpressions": ...}``)
        or the ``kubectl -l`` string; it matches effective labels and the verification
        labels (``verification.ai-team.io/<capability>=Verified``). A Failed claim never
        matches ``capability.<name>``; with ``only_verified`` (or ``verification.require``)
        only Verified ones do, and ``only_verified`` also skips untrusted nodes (one of their
        claims Failed). Sorted by name.
        """
        return self.select(kind, selector, only_healthy, only_verified).items

    def select(
        self,
        kind: str | NodeType | None = None,
        selector: SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> NodeList:
        """``find_nodes`` with the resource version its answer was taken at (list + watch)."""
        wanted_kind = parse_kind(kind)
        if wanted_kind is not None and self.node_types.definition(wanted_kind) is None:
            registered = ", ".join(sorted(self.node_types.types))
            raise ValidationError(
                "unknown node kind",
                [
                    FieldError(
                        "kind", f"{wanted_kind!r} is not a node type (registered: {registered})"
                    )
                ],
            )
        parsed = as_selector(selector)
        self._store.check_view()
        now = self._clock.now()
        strict = only_verified or self.settings.verification.require
        if strict:
            found, revision = self._strict_select(wanted_kind, parsed, only_verified)
        else:
            found, revision = self._index.select(wanted_kind, parsed)
        found.sort(key=_BY_NAME)
        entries = self._entries(found, now)
        if only_healthy:
            entries = [e for e in entries if is_schedulable(e)]
        return NodeList(entries, revision)

    def _strict_select(
        self, kind: str | None, selector: Selector, only_verified: bool
    ) -> tuple[list[Versioned], int]:
        """Select counting only Verified claims: the index narrows by every requirement a
        node matching the strict labels also meets on the indexed ones — all but negative
        ones on ``capability.*`` (dropping a claim can make ``!capability.x`` match) — then
        the whole selector matches the strict labels."""
        loose = Selector(
            tuple(
                r
                for r in selector.requirements
                if r.operator in _POSITIVE or not r.key.startswith(CAPABILITY_PREFIX)
            )
        )
        found, revision = self._index.select(kind, loose)
        kept = []
        for versioned in found:
            labels = versioned.record.labels
            if only_verified and not trusted(labels):
                continue
            if selector.empty() or selector.matches(strict_labels(labels)):
                kept.append(versioned)
        return kept, revision

    def list_nodes(self) -> NodeList:
        """Every node, and the resource version to watch from without missing a change."""
        self._store.check_view()
        versioned, revision = self._index.snapshot()
        versioned.sort(key=_BY_NAME)
        now = self._clock.now()
        return NodeList(self._entries(versioned, now), revision)

    def node_counts(self) -> dict[tuple[str, HealthState], int]:
        """Nodes by (kind, health recorded by the lifecycle controller), without a scan.

        A read judges health from the clock (``list_nodes``); this counts what the
        controller last recorded, at most one controller period behind that judgement.
        """
        self._store.check_view()
        return self._index.counts()

    def watch(self, since: int | None = None) -> Watch:
        """Changes after resource version ``since`` (None: from now on).

        ``RevisionCompactedError`` when ``since`` is older than the kept history: list again.
        """
        self._store.check_view()
        start = self._store.revision if since is None else since
        self._store.check_watchable(start)
        return Watch(self._store.watch, start, self._event, self.settings.watch.history_size)

    def async_watch(self, since: int | None = None, *, checked: bool = False) -> AsyncWatch:
        """``watch`` for asyncio: ``async for event in ...``; call it inside the event loop.

        ``checked``: ``check_watchable(since)`` was called already (``AsyncRegistry`` does it
        in its I/O pool), so opening does not wait on the store.
        """
        hub = self.watch_hub(since, checked=checked, private=True)
        return hub.attach(hub.floor)

    def watch_hub(
        self, since: int | None = None, *, checked: bool = False, private: bool = False
    ) -> WatchHub:
        """One store subscription from ``since`` for any number of async watchers.

        ``private``: it serves one watch and closes with it. Call inside the event loop.
        """
        self._store.check_view()
        start = self._store.revision if since is None else since
        if not checked:
            self._store.check_watchable(start)
        watch = self.settings.watch
        return WatchHub(
            self._store.watch,
            start,
            self._event,
            history=watch.history_size,
            backlog=watch.backlog_events,
            private=private,
        )

    def check_watchable(self, since: int) -> None:
        """Raise ``RevisionCompactedError`` unless a watch from ``since`` can replay history.

        On etcd this may be a round trip (a version outside the replica's cache).
        """
        self._store.check_view()
        self._store.check_watchable(since)

    def report_saturation(self) -> None:
        """The registry could not hear nodes just now (its server shed a renewal, or its
        event loop lagged): no node counts as silent for any time before now.

        Like the return of a lost store, it spares nodes from verdicts the registry's own
        blindness would cause and revives none recorded silent before.
        """
        self._lifecycle.report_saturation()

    @property
    def saturated_at(self) -> datetime | None:
        """When the server last reported saturation (None: never)."""
        return self._lifecycle.saturated_at

    def conditions(self) -> list[RegistryCondition]:
        """Conditions of the registry itself (mass-failure protection)."""
        return [self._lifecycle.protection_now()]

    def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store answers."""
        self._store.ping()

    @property
    def leading(self) -> bool:
        """Whether this registry runs the lifecycle controller (always, unless on etcd)."""
        return self._store.leading

    @property
    def blocking(self) -> bool:
        """Whether writes wait on the network (an etcd store); see ``AsyncRegistry``."""
        return self._store.blocking

    @property
    def protection_active(self) -> bool:
        return self._lifecycle.protection_now().status

    @property
    def resource_version(self) -> int:
        return self._store.revision

    @property
    def skipped_records(self) -> SkippedRecords:
        """Stored records this process skips because it cannot read them (for the metrics)."""
        return self._store.skipped

    # -- the seed's MVP names (2.2.1) -----------------------------------------------------

    @property
    def ttl_seconds(self) -> float:
        return self.settings.heartbeat.ttl_seconds

    def register_node(self, passport: NodePassport | Mapping[str, Any]) -> RegistryEntry:
        return self.register(passport)

    def update_heartbeat(self, node_id: str | UUID) -> None:
        # The seed passes passport.metadata.uid, which the passport model holds as a UUID.
        self.heartbeat(str(node_id))

    def get_alive_nodes(self) -> list[NodePassport]:
        """Passports of the nodes whose health is ALIVE now."""
        return [e.passport for e in self.find_nodes() if e.health_state is HealthState.ALIVE]

    # -- the lifecycle controller -------------------------------------------------------

    def reconcile(self) -> None:
        """One controller pass: protection check, transitions recorded, expired entries removed.

        Its writes are fenced (see ``lifecycle``): on etcd, a pass run by a replica that
        does not hold the controller's seat stops at its first write.
        """
        snapshot, _ = self._index.snapshot()
        self._lifecycle.reconcile(snapshot, self._record_health, self._remove_expired)

    def controller_pass(self) -> bool:
        """``reconcile`` if this registry runs the lifecycle controller; whether it does.

        The controller's loops call this every period, so a seat taken over is noticed.
        """
        leading = self._store.leading
        self._lifecycle.observe_leading(leading)
        if leading:
            self.reconcile()
        return leading

    def start(self) -> None:
        """Run the lifecycle controller in a daemon thread."""
        if self._controller is not None:
            return
        self._stop.clear()
        self._controller = threading.Thread(
            target=self._run_controller, name="node-registry-controller", daemon=True
        )
        self._controller.start()

    def stop(self) -> None:
        """Stop the controller thread (if running) and detach from the store."""
        self._stop.set()
        if self._controller is not None:
            self._controller.join()
            self._controller = None

    def close(self) -> None:
        self.stop()
        self._cancel_feed()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run_controller(self) -> None:
        period = self.settings.controller.period_seconds
        while not self._stop.wait(period):
            try:
                self.controller_pass()
            except RegistryError:
                log.exception("lifecycle controller pass failed; retrying next period")

    # -- internals ----------------------------------------------------------------------

    def _binding_of(self, record: NodeRecord, now: datetime) -> Binding:
        prefix = self.settings.server.protected_label_prefix
        labels = {k: v for k, v in record.passport.metadata.labels.items() if k.startswith(prefix)}
        effective = {k: v for k, v in record.labels.items() if k.startswith(prefix)}
        return Binding(record.name, record.node_id, labels, now, effective)

    def _entry(self, versioned: Versioned, now: datetime) -> RegistryEntry:
        return self._entries([versioned], now)[0]

    def _entries(self, found: list[Versioned], now: datetime) -> list[RegistryEntry]:
        """Entries as of ``now``: the lifecycle's judge applied to every node found."""
        verdict = self._lifecycle.judge(now)
        alive = HealthState.ALIVE
        require = self.settings.verification.require
        entries: list[RegistryEntry] = []
        append = entries.append
        for versioned in found:
            record = versioned.record
            seen, _, health, _ = verdict(record)
            append(
                RegistryEntry(
                    record.node_id,
                    record.kind,
                    record.passport if record.health is alive else _shown_of(versioned),
                    seen,
                    health,
                    record.registered_at,
                    versioned.revision,
                    record.verification,
                    require,
                    versioned.memo,
                )
            )
        return entries

    def _event(self, event: StoreEvent) -> WatchEvent:
        # Events are history: an entry shows the health recorded at that revision.
        record = event.record
        entry = self._recorded_entry(record, event.revision)
        kind = event_type(event)
        if kind is EventType.ADDED or event.prev is None:
            return WatchEvent(kind, entry, event.revision)
        previous = None
        if kind is not EventType.DELETED:
            previous = self._recorded_entry(event.prev, event.revision)
        return WatchEvent(kind, entry, event.revision, event.prev.health, previous)

    def _recorded_entry(self, record: NodeRecord, revision: int) -> RegistryEntry:
        return RegistryEntry(
            node_id=record.node_id,
            node_kind=record.passport.metadata.node_type,
            passport=record.passport if record.health is HealthState.ALIVE else _shown(record),
            last_seen=self._store.renewed_at(record.node_id) or record.registered_at,
            health_state=record.health,
            registered_at=record.registered_at,
            resource_version=revision,
            verification=record.verification,
            require_verified=self.settings.verification.require,
        )

    def _modify(
        self,
        node_id: str,
        change: Callable[[NodeRecord, datetime], NodeRecord | None],
        *,
        renew: bool = False,
    ) -> RegistryEntry:
        return self._entry(self._modify_versioned(node_id, change, renew=renew), self._clock.now())

    def _modify_versioned(
        self,
        node_id: str,
        change: Callable[[NodeRecord, datetime], NodeRecord | None],
        *,
        renew: bool = False,
        fenced: bool = False,
    ) -> Versioned:
        """Compare-and-swap ``change`` onto the stored record, retrying on conflict."""
        for attempt in range(_CAS_ATTEMPTS):
            now = self._clock.now()
            current = self._current(node_id, attempt, absent_is_a_guess=False)
            if current is None:
                raise NotFoundError(f"node {node_id!r} is not registered")
            record = change(current.record, now)
            if record is None:
                return current
            try:
                revision = self._store.update(
                    record,
                    expected_revision=current.revision,
                    renewed_at=now if renew else None,
                    fenced=fenced,
                )
            except RevisionConflictError:
                continue
            return Versioned(record, revision)
        raise ConflictError(f"node {node_id} is being changed concurrently; try again")

    def _current(self, node_id: str, attempt: int, *, absent_is_a_guess: bool) -> Versioned | None:
        """The record to compare-and-swap against: the index first, the store after a miss.

        On a shared store the index lags by a watch delay; a stale guess costs one failed
        compare-and-swap (a create is one against absence), while asking the store every
        time costs a round trip per write. Absence is a usable guess only where the write
        that follows checks it (a create); elsewhere an unknown node is looked up.
        """
        if attempt == 0:
            known = self._index.get(node_id)
            if known is not None or absent_is_a_guess:
                return known
        return self._store.get(node_id)

    def _record_health(self, node_id: str, fenced: bool = False) -> Versioned:
        """Record the node's current health, if it changed (readers see it in status).

        ``fenced``: the lifecycle controller's write (see ``Store``), not a heartbeat's.
        """

        def change(record: NodeRecord, now: datetime) -> NodeRecord | None:
            target = self._lifecycle.judge(now, controller=fenced)(record)[2]
            if target is record.health:
                return None
            log.info(
                "node %s (%s): %s -> %s", record.name, node_id, record.health.value, target.value
            )
            return _with_health(record, target, now)

        return self._modify_versioned(node_id, change, fenced=fenced)

    def _remove_expired(self, record: NodeRecord, revision: int, now: datetime) -> None:
        """The controller removes a node past TTL + grace period, keeping its binding."""
        keep = self._binding_of(record, now)
        self._store.delete(record.node_id, expected_revision=revision, keep=keep, fenced=True)
        log.info("removed node %s (%s): lease expired", record.name, record.node_id)


class _StatusUpdate(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    phase: Phase | None = None
    current_tasks: int | None = pydantic.Field(default=None, alias="currentTasks", ge=0)
    conditions: list[Condition] | None = None


def _validate_status_update(
    update: dict[str, Any], conditions: Iterable[Condition | Mapping[str, Any]] | None
) -> _StatusUpdate:
    if conditions is not None:
        update["conditions"] = [
            c.model_dump(by_alias=True) if isinstance(c, Condition) else c for c in conditions
        ]
    try:
        checked = _StatusUpdate.model_validate(update)
        if checked.conditions is not None:
            Status.model_validate({"conditions": checked.conditions})
    except pydantic.ValidationError as exc:
        raise ValidationError(
            "invalid status update", translate_pydantic_error(exc, prefix="status")
        ) from None
    return checked


def _refuse_registry_phases(phase: Phase, loc: str) -> None:
    if phase is Phase.OFFLINE:
        raise ValidationError(
            "invalid status", [FieldError(loc, "Offline is recorded by the registry only")]
        )


def _modified(name: str) -> RevisionConflictError:
    # apiserver's words for a failed optimistic-concurrency write: clients match on them.
    return RevisionConflictError(
        f"Operation cannot be fulfilled on node {name!r}: the object has been modified; "
        "please apply your changes to the latest version and try again"
    )


def _refuse_identity_change(old: NodeRecord, passport: NodePassport) -> None:
    problems = []
    if passport.node_id != old.node_id:
        problems.append(FieldError("metadata.uid", f"field is immutable (is {old.node_id})"))
    if passport.metadata.name != old.name:
        problems.append(FieldError("metadata.name", f"field is immutable (is {old.name!r})"))
    if problems:
        raise ValidationError("the node's identity cannot change", problems)


def _checked_merge(passport: NodePassport) -> NodePassport:
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


def _merge_conditions(
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


def _with_health(record: NodeRecord, health: HealthState, now: datetime) -> NodeRecord:
    """The record with ``health`` recorded at ``now``; the node's own passport untouched."""
    unready_since = None if health is HealthState.ALIVE else record.unready_since or now
    return NodeRecord(
        record.passport, record.registered_at, health, now, unready_since, record.verification
    )


def _shown_of(versioned: Versioned) -> NodePassport:
    """``_shown`` of the version's record, made once per version: the same passport object
    on every read, so what encoders keep for it (``RegistryEntry.memo``) stays valid."""
    shown: NodePassport | None = versioned.memo.get(_shown)
    if shown is None:
        shown = versioned.memo[_shown] = _shown(versioned.record)
    return shown


def _shown(record: NodeRecord) -> NodePassport:
    """The passport as readers see it while the registry has lost touch with the node.

    The controller's verdict is laid over the node's own status (phase NotReady/Offline,
    Ready=Unknown, as Kubernetes' node lifecycle controller sets it) rather than written
    into it: when heartbeats resume, the node's own report — Ready=False included — shows
    again unchanged, and no heartbeat ever claims readiness for a node.
    """
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
