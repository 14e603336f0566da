"""The base of the task-side models and ``load``, which turns untrusted input into one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict

from node_registry.errors import ValidationError
from node_registry.passport.versions import translate_pydantic_error

M = TypeVar("M", bound="TaskModel")


class TaskModel(BaseModel):
    """Frozen, camelCase on the wire, and strict about fields.

    Unknown fields are refused (passports keep them; a task's requirements are read, not
    stored): a misspelt ``toleration`` silently ignored would put a task where it must not go.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def load(model: type[M], doc: M | Mapping[str, Any], *, what: str) -> M:
    """``doc`` validated as ``model``; a ``ValidationError`` naming each bad field otherwise."""
    if isinstance(doc, model):
        return doc
    try:
        return model.model_validate(doc)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"invalid {what}", translate_pydantic_error(exc)) from None
