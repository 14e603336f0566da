"""A node kind named by a caller (``find_nodes(kind="agent")``), read and checked."""

from __future__ import annotations

from node_registry.errors import FieldError, ValidationError
from node_registry.passport.models import NodeType


def parse_kind(kind: str | NodeType | None) -> NodeType | None:
    """The node kind named by ``kind``; ``ValidationError`` naming the allowed ones."""
    if kind is None or isinstance(kind, NodeType):
        return kind
    try:
        return NodeType(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in NodeType)
        raise ValidationError(
            "unknown node kind", [FieldError("kind", f"{kind!r} is not one of: {allowed}")]
        ) from None
