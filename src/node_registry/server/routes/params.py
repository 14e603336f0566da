"""Query parameters the list routes share: a label selector read as the caller wrote it."""

from __future__ import annotations

from node_registry.errors import FieldError, SelectorError
from node_registry.selectors import Selector, as_selector


def query_selector(text: str | None) -> Selector:
    try:
        return as_selector(text)
    except SelectorError as exc:
        # The parser cannot know it was given a query parameter; the caller should be told.
        raise SelectorError(
            exc.message, [FieldError(e.loc or "labelSelector", e.message) for e in exc.errors]
        ) from None
