"""A node kind named by a caller (``find_nodes(kind="agent")``), read and checked."""

from __future__ import annotations

from node_registry import labels as label_syntax
from node_registry.errors import FieldError, ValidationError
from node_registry.passport.models import NodeType, node_type_of


def parse_kind(kind: str | NodeType | None) -> str | None:
    """The node kind named by ``kind``: a ``NodeType`` member for a built-in type, else the
    name of a custom one (docs/nodetypes.md); ``ValidationError`` if it cannot be a type's
    name. Whether a custom type is registered is the registry's to say (``Registry.select``)."""
    if kind is None or isinstance(kind, NodeType):
        return kind
    if not isinstance(kind, str) or (problems := label_syntax.dns1123_label_errors(kind)):
        shown = "; ".join(problems) if isinstance(kind, str) else f"not {type(kind).__name__}"
        raise ValidationError(
            "unknown node kind",
            [FieldError("kind", f"{kind!r} is not a node type name (a DNS-1123 label): {shown}")],
        )
    return node_type_of(kind)
