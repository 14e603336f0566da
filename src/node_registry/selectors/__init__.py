"""Label selectors for finding nodes: Kubernetes syntax and semantics, plus quantity Gt/Lt."""

from __future__ import annotations

from node_registry.selectors.selector import (
    Labels,
    Operator,
    Requirement,
    Selector,
    as_selector,
    compare_values,
    parse_selector,
    selector_from_dict,
)

__all__ = [
    "Labels",
    "Operator",
    "Requirement",
    "Selector",
    "as_selector",
    "compare_values",
    "parse_selector",
    "selector_from_dict",
]
