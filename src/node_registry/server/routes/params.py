"""Query parameters the list routes share, and a label selector read as the caller wrote it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

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


LabelSelectorQuery = Annotated[str | None, Query(alias="labelSelector", max_length=4096)]
LimitQuery = Annotated[int | None, Query(ge=1, le=10_000)]
ContinueQuery = Annotated[str | None, Query(alias="continue", max_length=512)]
ResourceVersionQuery = Annotated[
    str | None, Query(alias="resourceVersion", max_length=20, pattern=r"^[0-9]*$")
]
TimeoutQuery = Annotated[int | None, Query(alias="timeoutSeconds", ge=1, le=86_400)]
