"""The embedded registry, the sync driver: register, heartbeat, report status, find, watch.

Its writes are the procedures of ``registry.writes`` run on the store (``steps.run``), its
reads those of ``registry.queries``; it runs the lifecycle controller in a thread.

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
- Every read-modify-write is a compare-and-swap on the record's revision, retried on
  conflict; decided without I/O (``registry.decide``), so the async driver shares it.
- A node that leaves by itself (graceful deregistration) or is removed for silence keeps its
  name bound to its uid, with the protected labels operators gave it (``binding``), for
  ``store.binding_retention_seconds``: whoever may register that name then can tell the
  node coming back from another uid taking its name, and give it its labels back. An admin
  deleting the node forgets both.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from node_registry.admission import Admission
from node_registry.clock import Clock, steady
from node_registry.config import Settings, load_settings
from node_registry.errors import RegistryError
from node_registry.passport import Capability, Condition, NodePassport, Phase
from node_registry.passport.types import NodeTypeDefinition
from node_registry.passport.verification import CapabilityVerification
from node_registry.registry.decide import is_schedulable
from node_registry.registry.entry import RegistryEntry
from node_registry.registry.health import HealthPolicy
from node_registry.registry.index import NodeIndex
from node_registry.registry.lifecycle import Lifecycle
from node_registry.registry.policies import NodeTypeCatalog, UserInfo, load_admission
from node_registry.registry.queries import Reads, SelectorInput
from node_registry.registry.steps import run
from node_registry.registry.writes import Writes
from node_registry.store import Binding, HealthState, MemoryStore, Store, Versioned

log = logging.getLogger("node_registry")

__all__ = ["Registry", "SelectorInput", "is_schedulable"]


class Registry(Reads):
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
        #: The node types passports may name (built-in, configured, registered).
        self.node_types = NodeTypeCatalog(self._store, path=self.settings.node_types.path)
        self._index = NodeIndex()
        #: The writes as procedures, for this registry's driver and ``AsyncRegistry``'s.
        self.writes = Writes(
            settings=self.settings,
            clock=self._clock,
            index=self._index,
            lifecycle=self._lifecycle,
            node_types=self.node_types,
            admission=admission or load_admission(self.settings.admission.policies_path),
        )
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

    @property
    def admission(self) -> Admission:
        """The CEL policies every write passes (``admission.policies_path``, or given)."""
        return self.writes.admission

    @property
    def store(self) -> Store:
        """The store this registry runs on."""
        return self._store

    @property
    def clock(self) -> Clock:
        """The clock the registry reads (monotonic: see ``clock.steady``)."""
        return self._clock

    def entry(self, versioned: Versioned) -> RegistryEntry:
        """The entry of a record a write just stored, judged now."""
        return self._entry(versioned, self._clock.now())

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
        return self.entry(
            run(self.writes.register(passport, rename=rename, user=user), self._store)
        )

    def heartbeat(self, node_id: str) -> datetime:
        """Renew the node's lease and return the renew time.

        ``NotFoundError`` tells the node runtime to register again.
        """
        # ``writes.heartbeat`` spelled out: the hot path of every node, without the driver.
        now = self._clock.now()
        self._store.renew(node_id, now)
        current = self._index.get(node_id)
        if current is not None and current.record.health is not HealthState.ALIVE:
            run(self.writes.record_health(node_id), self._store)
        return now

    def heartbeat_if_local(self, node_id: str) -> datetime | None:
        """``heartbeat(node_id)`` when it needs no store round trip (``heartbeat_is_local``);
        None, and nothing done, otherwise. One index lookup: the async hot path's."""
        current = self._index.get(node_id)
        if current is None or current.record.health is not HealthState.ALIVE:
            return None
        now = self._clock.now()
        self._store.renew(node_id, now)
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
        steps = self.writes.update_status(
            node_id, phase=phase, conditions=conditions, current_tasks=current_tasks, user=user
        )
        return self.entry(run(steps, self._store))

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
        steps = self.writes.rewrite(
            node_id,
            change,
            expected_revision=expected_revision,
            heartbeat=heartbeat,
            dry_run=dry_run,
            user=user,
        )
        return self.entry(run(steps, self._store))

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
        steps = self.writes.deregister(
            node_id, keep_binding=keep_binding, expected_revision=expected_revision, user=user
        )
        run(steps, self._store)

    def binding(self, name: str) -> Binding | None:
        """The uid ``name`` stays bound to since its node left, and the labels to give back;
        None when no node left it within ``store.binding_retention_seconds``."""
        return self.current_binding(self._store.binding(name))

    def current_binding(self, binding: Binding | None) -> Binding | None:
        """``binding`` unless older than ``store.binding_retention_seconds``."""
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
        return self.entry(
            run(self.writes.set_capabilities(node_id, capabilities, user=user), self._store)
        )

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
        steps = self.writes.record_verification(node_id, results, replace=replace)
        return self.entry(run(steps, self._store))

    def register_node_type(self, doc: Mapping[str, Any]) -> NodeTypeDefinition:
        """Register a custom node type (``kind: NodeType``); it is kept in the store."""
        created: NodeTypeDefinition = run(self.node_types.creating(doc), self._store)
        return created

    def patch_node_type(self, name: str, patch: Mapping[str, Any]) -> NodeTypeDefinition:
        """Change a registered node type with a JSON merge patch (RFC 7386)."""
        patched: NodeTypeDefinition = run(self.node_types.updating(name, patch), self._store)
        return patched

    def delete_node_type(self, name: str) -> NodeTypeDefinition:
        """Delete a registered node type; ``ConflictError`` while nodes are of it."""
        deleted: NodeTypeDefinition = run(self.writes.delete_node_type(name), self._store)
        return deleted

    # -- the registry itself ------------------------------------------------------------

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

    # -- the seed's MVP names (2.2.1) -----------------------------------------------------

    @property
    def ttl_seconds(self) -> float:
        return self.settings.heartbeat.ttl_seconds

    def register_node(self, passport: NodePassport | Mapping[str, Any]) -> RegistryEntry:
        return self.register(passport)

    def update_heartbeat(self, node_id: str | UUID) -> None:
        # The seed passes passport.metadata.uid, which the passport model holds as a UUID.
        self.heartbeat(str(node_id))

    # -- the lifecycle controller -------------------------------------------------------

    def reconcile(self) -> None:
        """One controller pass: protection check, transitions recorded, expired entries removed.

        Its writes are fenced (see ``lifecycle``): on etcd, a pass run by a replica that
        does not hold the controller's seat stops at its first write.
        """
        run(self.writes.reconcile(), self._store)

    def controller_pass(self) -> bool:
        """``reconcile`` if this registry runs the lifecycle controller; whether it does.

        The controller's loops call this every period, so a seat taken over is noticed.
        """
        if self.observe_leading():
            self.reconcile()
            return True
        return False

    def observe_leading(self) -> bool:
        """Whether this registry runs the lifecycle controller now, told to the lifecycle."""
        leading = self._store.leading
        self._lifecycle.observe_leading(leading)
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
