"""The registry's read cache: every node by id, with inverted indexes on labels and kind.

client-go's Indexer, in short: ``find_nodes`` with ``matchLabels`` intersects the sets of the
few nodes carrying each label instead of matching all N nodes. An intersection of two or
more ``key=value`` terms costs its smallest operand (a zone's nodes, N/8) however few match
them all; so each one computed is kept, live, for the next query with the same terms (an
orchestrator asks the same few selectors over and over): the writes feeding the cache update
it, and a repeated matchLabels query costs the size of its result, not of N. Label values
that are quantities are also kept sorted per key, so ``Gt``/``Lt`` (``memory > 16Gi``)
narrow the candidates by bisection instead of a scan. The cache is fed by the store's change
events in revision order, so it is exactly the store's state at ``revision``.

The nodes are also kept in name order (``ordered``): a list is read in that order, and
sorting 100,000 nodes per read would hold the event loop for one block that grows as
``N log N``; a new name costs one bisection and one move of the pointers after it.
"""

from __future__ import annotations

import bisect
import operator
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

from node_registry.quantity import quantity_or_none
from node_registry.selectors import Operator, Requirement, Selector
from node_registry.store.base import ChangeType, StoreEvent, Versioned
from node_registry.store.records import HealthState

K = TypeVar("K")
V = TypeVar("V")
_NUMERIC = frozenset({Operator.GREATER_THAN, Operator.LESS_THAN})
#: Sorts after every node id (UUID text), so bisect_right on (bound, _LAST_ID) skips all
#: entries equal to the bound: Gt is strict.
_LAST_ID = "\U0010ffff"
#: Intersections of matchLabels terms kept live; the least recently asked goes first.
MAX_KEPT = 256
#: Candidates always sorted at once, however many nodes there are. Past this, and past
#: ``1 / SCAN_SHARE`` of all nodes, they are picked from the name-ordered nodes instead, in as
#: many steps as a caller likes (``Scan``): a scan costs every node a set lookup, so for an
#: answer a small share of the nodes the sort of that answer (in C) is the cheaper block and
#: a selection's cost grows with its answer, not with the registry (#14); past that share
#: the scan costs little more and no single block grows with N.
SORT_AT_ONCE = 1000
SCAN_SHARE = 8


#: A list's order: by name, then id (two nodes may hold one name between two events); an
#: attrgetter, as sorting and bisecting call it in C.
order_key: Callable[[Versioned], tuple[str, str]] = operator.attrgetter(
    "record.name", "record.node_id"
)


@dataclass(frozen=True, slots=True)
class Scan:
    """A selection taken at ``revision``, still to be filtered: ``nodes`` in list order,
    each kept when ``keep`` is None or says so. Filtering is left to the caller, who may do
    it all at once (``select``) or a slice at a time between turns of an event loop."""

    nodes: list[Versioned]
    keep: Callable[[Versioned], bool] | None
    revision: int

    def found(self) -> list[Versioned]:
        keep = self.keep
        return self.nodes if keep is None else [v for v in self.nodes if keep(v)]


class NodeIndex:
    """Nodes by id, plus id sets per ``(label key, value)``, per label key and per kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, Versioned] = {}
        self._by_label: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        self._by_key: defaultdict[str, set[str]] = defaultdict(set)
        self._by_kind: defaultdict[str, set[str]] = defaultdict(set)
        self._by_name: dict[str, str] = {}
        #: Every node, in ``order_key`` order.
        self._ordered: list[Versioned] = []
        self._numeric: dict[str, list[tuple[Fraction, str]]] = {}
        self._counts: Counter[tuple[str, HealthState]] = Counter()
        #: Live intersections of equality terms, least recently used first, and the kept
        #: term sets by each of their terms (what a write of a label must update).
        self._kept: OrderedDict[frozenset[tuple[str, str]], set[str]] = OrderedDict()
        self._kept_by_term: defaultdict[tuple[str, str], set[frozenset[tuple[str, str]]]] = (
            defaultdict(set)
        )
        self.revision = 0

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, node_id: str) -> Versioned | None:
        return self._nodes.get(node_id)

    def id_of(self, name: str) -> str | None:
        """The node id registered under ``name`` (names are unique)."""
        return self._by_name.get(name)

    def counts(self) -> dict[tuple[str, HealthState], int]:
        """Nodes by (kind, recorded health), kept as the cache changes: no scan of N nodes."""
        with self._lock:
            return {key: count for key, count in self._counts.items() if count}

    def load(self, nodes: dict[str, Versioned], revision: int) -> None:
        with self._lock:
            for versioned in nodes.values():
                self._add(versioned, in_order=False)
            self._ordered = sorted(self._nodes.values(), key=order_key)
            self.revision = revision

    def apply(self, event: StoreEvent) -> None:
        """Bring the cache to ``event.revision``; events must arrive in revision order."""
        with self._lock:
            if event.revision <= self.revision:
                return
            old = self._nodes.get(event.record.node_id)
            deleted = event.type is ChangeType.DELETED
            # A version under the same name takes its predecessor's place in the order.
            renamed = deleted or old is None or old.record.name != event.record.name
            if old is not None:
                self._remove(old, in_order=renamed)
            if not deleted:
                # The event's memo: what the watch fan-out encodes of this version, a list
                # of it reuses (and the other way round).
                versioned = Versioned(event.record, event.revision, event.memo)
                self._add(versioned, in_order=renamed)
                if not renamed:
                    at = bisect.bisect_left(self._ordered, order_key(versioned), key=order_key)
                    self._ordered[at] = versioned
            self.revision = event.revision

    def snapshot(self) -> tuple[list[Versioned], int]:
        """Every node, in list order, and the revision they were taken at."""
        with self._lock:
            return list(self._ordered), self.revision

    def select(self, kind: str | None, selector: Selector) -> tuple[list[Versioned], int]:
        """Nodes of ``kind`` whose effective labels match ``selector``, in list order, and
        the revision of the state they were taken from (one snapshot: a watch from it
        misses nothing)."""
        scan = self.scan(kind, selector)
        return scan.found(), scan.revision

    def scan(self, kind: str | None, selector: Selector) -> Scan:
        """``select`` with the filtering left to do: a copy of pointers under the lock, and
        candidates sorted when few (``SORT_AT_ONCE``, ``SCAN_SHARE``), else every node in name
        order to filter in the caller's steps."""
        with self._lock:
            revision = self.revision
            candidates = self._candidates(kind, selector)
            sort_at_once = max(SORT_AT_ONCE, len(self._ordered) // SCAN_SHARE)
            if candidates is None or len(candidates) > sort_at_once:
                nodes = list(self._ordered)
            else:
                nodes = sorted((self._nodes[i] for i in candidates), key=order_key)
        # Records are immutable, so the full match runs outside the lock and never holds
        # up the writers feeding the cache.
        exact = candidates is not None and _exact(selector)
        match = None if selector.empty() or exact else selector.matches
        if candidates is not None and len(nodes) != len(candidates):
            among = candidates
            if match is None:
                return Scan(nodes, lambda v: v.record.node_id in among, revision)
            matches = match
            return Scan(
                nodes, lambda v: v.record.node_id in among and matches(v.record.labels), revision
            )
        if match is None:
            return Scan(nodes, None, revision)
        matching = match
        return Scan(nodes, lambda v: matching(v.record.labels), revision)

    def _candidates(self, kind: str | None, selector: Selector) -> set[str] | None:
        # The smallest sets first: intersection costs the size of the smaller operand.
        sets: list[set[str]] = []
        if kind is not None:
            sets.append(self._by_kind.get(kind, set()))
        for requirement in selector.requirements:
            if requirement.operator in _NUMERIC:
                sets.append(self._numeric_range(requirement.key, requirement))
        terms = selector.index_terms()
        equal = [(key, next(iter(values))) for key, values in terms if values and len(values) == 1]
        if len(equal) > 1:
            sets.append(self._intersection(frozenset(equal)))
        for key, values in terms:
            if values is None:
                sets.append(self._by_key.get(key, set()))
            elif len(values) == 1:
                if len(equal) == 1:
                    sets.append(self._by_label.get((key, next(iter(values))), set()))
            else:
                union: set[str] = set()
                for value in values:
                    union |= self._by_label.get((key, value), set())
                sets.append(union)
        if not sets:
            return None
        sets.sort(key=len)
        if len(sets[0]) == len(self._nodes):
            return None  # every node qualifies: scan them all rather than copy the set
        result = set(sets[0])
        for other in sets[1:]:
            result &= other
            if not result:
                break
        return result

    def _intersection(self, terms: frozenset[tuple[str, str]]) -> set[str]:
        """Ids of the nodes carrying every label of ``terms``: kept live once computed."""
        kept = self._kept.get(terms)
        if kept is not None:
            self._kept.move_to_end(terms)
            return kept
        operands = sorted((self._by_label.get(term, set()) for term in terms), key=len)
        kept = operands[0].intersection(*operands[1:])
        self._kept[terms] = kept
        for term in terms:
            self._kept_by_term[term].add(terms)
        if len(self._kept) > MAX_KEPT:
            dropped, _ = self._kept.popitem(last=False)
            for term in dropped:
                _discard(self._kept_by_term, term, dropped)
        return kept

    def _numeric_range(self, key: str, requirement: Requirement) -> set[str]:
        """Ids of the nodes whose ``key`` is a quantity beyond the Gt/Lt bound."""
        bound = quantity_or_none(requirement.values[0])
        ordered = self._numeric.get(key, [])
        if bound is None:  # cannot happen: selectors check their bounds
            return {node_id for _, node_id in ordered}
        if requirement.operator is Operator.GREATER_THAN:
            start = bisect.bisect_right(ordered, (bound, _LAST_ID))
            return {node_id for _, node_id in ordered[start:]}
        end = bisect.bisect_left(ordered, (bound, ""))
        return {node_id for _, node_id in ordered[:end]}

    def _add(self, versioned: Versioned, *, in_order: bool = True) -> None:
        record = versioned.record
        node_id = record.node_id
        self._nodes[node_id] = versioned
        if in_order:
            bisect.insort(self._ordered, versioned, key=order_key)
        self._by_name[record.name] = node_id
        for item in record.labels.items():
            self._by_label[item].add(node_id)
            self._by_key[item[0]].add(node_id)
            number = quantity_or_none(item[1])
            if number is not None:
                bisect.insort(self._numeric.setdefault(item[0], []), (number, node_id))
        self._by_kind[record.passport.metadata.node_type].add(node_id)
        self._counts[record.kind, record.health] += 1
        if self._kept:
            labels = record.labels
            for item in labels.items():
                for terms in self._kept_by_term.get(item, ()):
                    if all(labels.get(k) == v for k, v in terms):
                        self._kept[terms].add(node_id)

    def _remove(self, versioned: Versioned, *, in_order: bool = True) -> None:
        record = versioned.record
        node_id = record.node_id
        del self._nodes[node_id]
        if in_order:
            at = bisect.bisect_left(self._ordered, order_key(versioned), key=order_key)
            del self._ordered[at]
        if self._by_name.get(record.name) == node_id:
            del self._by_name[record.name]
        for item in record.labels.items():
            _discard(self._by_label, item, node_id)
            _discard(self._by_key, item[0], node_id)
            number = quantity_or_none(item[1])
            if number is not None:
                ordered = self._numeric[item[0]]
                del ordered[bisect.bisect_left(ordered, (number, node_id))]
                if not ordered:
                    del self._numeric[item[0]]
        _discard(self._by_kind, record.passport.metadata.node_type, node_id)
        self._counts[record.kind, record.health] -= 1
        if self._kept:
            for item in record.labels.items():
                for terms in self._kept_by_term.get(item, ()):
                    self._kept[terms].discard(node_id)


def _exact(selector: Selector) -> bool:
    """Whether the candidates are the answer: the selector is only ``key=value`` terms (two
    or more: the kept intersection), which the candidates' labels all carry."""
    terms = selector.index_terms()
    return (
        len(terms) > 1
        and len(terms) == len(selector.requirements)
        and all(values is not None and len(values) == 1 for _, values in terms)
    )


def _discard(index: defaultdict[K, set[V]], key: K, member: V) -> None:
    # Drop emptied sets so label churn does not grow the index forever.
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]
