"""The registry's reads: entries judged at an instant, selections, listings and watches.

Every read answers from the index (the store's records, fed by its watch) and computes
health from the lease and the clock on the spot (``lifecycle.judge``, the one health
rule): no I/O, so the sync and the async registry share them as they are. A store whose
view may be stale (etcd out of reach) refuses them (``check_view``: 503) rather than
answer from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from node_registry.clock import SteadyClock
from node_registry.config import Settings
from node_registry.errors import FieldError, NotFoundError, ValidationError
from node_registry.passport import NodePassport, NodeType
from node_registry.passport.derived import CAPABILITY_PREFIX
from node_registry.passport.kinds import parse_kind
from node_registry.passport.verification import strict_labels, trusted
from node_registry.registry import decide
from node_registry.registry.decide import is_schedulable
from node_registry.registry.entry import (
    EventType,
    NodeList,
    RegistryCondition,
    RegistryEntry,
    WatchEvent,
)
from node_registry.registry.index import NodeIndex, Scan
from node_registry.registry.lifecycle import Lifecycle, Verdict
from node_registry.registry.policies import NodeTypeCatalog
from node_registry.registry.watch import AsyncWatch, Watch, WatchHub, event_type
from node_registry.selectors import Operator, Selector, as_selector
from node_registry.store import (
    HealthState,
    NodeRecord,
    SkippedRecords,
    Store,
    StoreEvent,
    Versioned,
)

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
#: The lifecycle's verdict on a node at one instant (``Lifecycle.judge``).
Judge = Callable[[NodeRecord], Verdict]


@dataclass(frozen=True, slots=True)
class Selection:
    """A selection taken at one instant and revision, its entries still to build: ``entries``
    builds those of ``scan.nodes[start:stop]`` (filtered, judged at that instant), so a
    caller can build 100,000 of them a slice at a time, in list order."""

    scan: Scan
    build: Callable[[list[Versioned]], list[RegistryEntry]]

    def __len__(self) -> int:
        return len(self.scan.nodes)

    @property
    def revision(self) -> int:
        return self.scan.revision

    def entries(self, start: int, stop: int) -> list[RegistryEntry]:
        nodes = self.scan.nodes
        if start or stop < len(nodes):
            nodes = nodes[start:stop]
        keep = self.scan.keep
        return self.build(nodes if keep is None else [v for v in nodes if keep(v)])


class Reads:
    """The read half of ``Registry`` (which provides these attributes)."""

    settings: Settings
    node_types: NodeTypeCatalog
    _store: Store
    _clock: SteadyClock
    _index: NodeIndex
    _lifecycle: Lifecycle

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
        selection = self.selection(kind, selector, only_healthy, only_verified)
        return NodeList(selection.entries(0, len(selection)), selection.revision)

    def selection(
        self,
        kind: str | NodeType | None = None,
        selector: SelectorInput = None,
        only_healthy: bool = False,
        only_verified: bool = False,
    ) -> Selection:
        """``select``'s answer taken now, built by the caller a slice at a time (the async
        registry hands its event loop back between slices)."""
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
            scan = self._strict_scan(wanted_kind, parsed, only_verified)
        else:
            scan = self._index.scan(wanted_kind, parsed)
        return Selection(scan, self._builder(now, only_healthy))

    def _builder(
        self, now: datetime, only_healthy: bool
    ) -> Callable[[list[Versioned]], list[RegistryEntry]]:
        verdict = self._lifecycle.judge(now)
        if not only_healthy:
            return lambda found: self._entries(found, now, verdict)
        return lambda found: [e for e in self._entries(found, now, verdict) if is_schedulable(e)]

    def _strict_scan(self, kind: str | None, selector: Selector, only_verified: bool) -> Scan:
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
        scan = self._index.scan(kind, loose)
        narrowed = scan.keep

        def keep(versioned: Versioned) -> bool:
            if narrowed is not None and not narrowed(versioned):
                return False
            labels = versioned.record.labels
            if only_verified and not trusted(labels):
                return False
            return selector.empty() or selector.matches(strict_labels(labels))

        return Scan(scan.nodes, keep, scan.revision)

    def list_nodes(self) -> NodeList:
        """Every node, and the resource version to watch from without missing a change."""
        self._store.check_view()
        versioned, revision = self._index.snapshot()  # in list order
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

    def conditions(self) -> list[RegistryCondition]:
        """Conditions of the registry itself (mass-failure protection)."""
        return [self._lifecycle.protection_now()]

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

    @property
    def store_failovers(self) -> int:
        """Times the store left a failing etcd member for another (for the metrics)."""
        return self._store.failovers

    def get_alive_nodes(self) -> list[NodePassport]:
        """Passports of the nodes whose health is ALIVE now."""
        return [e.passport for e in self.find_nodes() if e.health_state is HealthState.ALIVE]

    def _entry(self, versioned: Versioned, now: datetime) -> RegistryEntry:
        return self._entries([versioned], now)[0]

    def _entries(
        self, found: list[Versioned], now: datetime, verdict: Judge | None = None
    ) -> list[RegistryEntry]:
        """Entries as of ``now``: the lifecycle's judge (``verdict``, made at ``now`` if not
        given) applied to every node found."""
        if verdict is None:
            verdict = self._lifecycle.judge(now)
        alive = HealthState.ALIVE
        require = self.settings.verification.require
        entries: list[RegistryEntry] = []
        append = entries.append
        for versioned in found:
            record = versioned.record
            seen, _, health, _ = verdict(record)
            memo = versioned.memo
            append(
                RegistryEntry(
                    record.node_id,
                    record.kind,
                    record.passport if record.health is alive else _shown_in(record, memo),
                    seen,
                    health,
                    record.registered_at,
                    versioned.revision,
                    record.verification,
                    require,
                    memo,
                    record.generation,
                )
            )
        return entries

    def _event(self, event: StoreEvent) -> WatchEvent:
        # Events are history: an entry shows the health recorded at that revision.
        record = event.record
        kind = event_type(event)
        # A DELETED event's record is no stored version: nothing to share its memo with.
        memo = None if kind is EventType.DELETED else event.memo
        entry = self._recorded_entry(record, event.revision, memo)
        if kind is EventType.ADDED or event.prev is None:
            return WatchEvent(kind, entry, event.revision)
        previous = None
        if kind is not EventType.DELETED:
            previous = self._recorded_entry(event.prev, event.revision)
        return WatchEvent(kind, entry, event.revision, event.prev.health, previous)

    def _recorded_entry(
        self, record: NodeRecord, revision: int, memo: dict[Any, Any] | None = None
    ) -> RegistryEntry:
        return RegistryEntry(
            node_id=record.node_id,
            node_kind=record.passport.metadata.node_type,
            passport=decide.shown(record) if memo is None else _shown_in(record, memo),
            last_seen=self._store.renewed_at(record.node_id) or record.registered_at,
            health_state=record.health,
            registered_at=record.registered_at,
            resource_version=revision,
            verification=record.verification,
            require_verified=self.settings.verification.require,
            memo=memo,
            generation=record.generation,
        )


def _shown_in(record: NodeRecord, memo: dict[Any, Any]) -> NodePassport:
    """``decide.shown`` of a stored version's record, made once per version (kept in its
    ``memo``): the same passport object on every read and watch event of it, so what
    encoders keep for it (``RegistryEntry.memo``) stays valid."""
    if record.health is HealthState.ALIVE:
        return record.passport
    shown: NodePassport | None = memo.get(decide.shown)
    if shown is None:
        shown = memo[decide.shown] = decide.shown(record)
    return shown
