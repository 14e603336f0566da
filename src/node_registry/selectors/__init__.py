"""Label selectors for finding nodes: Kubernetes syntax and semantics, plus quantity Gt/Lt."""

from __future__ import annotations

from node_registry.selectors.filter import NodeFilter
from node_registry.selectors.selector import (
    MAX_REQUIREMENTS,
    MAX_SELECTOR_LENGTH,
    MAX_TOTAL_VALUES,
    MAX_VALUES,
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
    "MAX_REQUIREMENTS",
    "MAX_SELECTOR_LENGTH",
    "MAX_TOTAL_VALUES",
    "MAX_VALUES",
    "Labels",
    "NodeFilter",
    "Operator",
    "Requirement",
    "Selector",
    "as_selector",
    "compare_values",
    "parse_selector",
    "selector_from_dict",
]
