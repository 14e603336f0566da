"""Which nodes a ``find_nodes(kind, selector)`` names: the one test every reader applies.

The informer's cache, a filtered watch on the server and the CLI's watch all decide "is this
node in the answer" here, so they cannot drift apart. The registry's index answers the same
question from its label index, and answers as this does.

A node's kind is compared by value: ``NodeType`` is a ``StrEnum`` of the passport layer, which
this layer does not import (``passport.kinds.parse_kind`` reads a kind from user input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from node_registry.selectors.selector import Labels, Selector

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NodeFilter:
    """``kind`` (a node type's value, None: any) and a label selector over effective labels."""

    kind: str | None = None
    selector: Selector = field(default_factory=Selector)

    def empty(self) -> bool:
        """True when every node passes: callers skip the test (and the labels) entirely."""
        return self.kind is None and self.selector.empty()

    def matches(self, node_kind: str, labels: Callable[[], Labels]) -> bool:
        """Whether a node of ``node_kind`` whose effective labels ``labels()`` returns passes.

        ``labels`` is called only when the selector needs them, so a caller that computes or
        memoizes them pays for that only when it must.
        """
        if self.kind is not None and node_kind != self.kind:
            return False
        return self.selector.empty() or self.selector.matches(labels())

    def select(
        self, items: Iterable[T], kind_of: Callable[[T], str], labels_of: Callable[[T], Labels]
    ) -> list[T]:
        """The ``items`` that pass, in order: ``matches`` over a whole collection, one test at
        a time (a cache answering a query over thousands of nodes; ``operator.attrgetter``
        makes the two readers cheap)."""
        found = list(items)
        if self.kind is not None:
            wanted = self.kind
            found = [item for item in found if kind_of(item) == wanted]
        if not self.selector.empty():
            match = self.selector.matches
            found = [item for item in found if match(labels_of(item))]
        return found
