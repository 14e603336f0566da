"""Responses carrying nodes: JSON that fails closed for one node, never for every list.

The registry refuses what JSON cannot carry (a lone surrogate, a non-finite number) before
it is stored, so this is the second line: a record that got in anyway (an older version's,
a bug's) must cost the one node that holds it — left out of lists with an error logged, a
Kubernetes Status 500 naming it when asked for alone — rather than turn every list and
watch into a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse

from node_registry.errors import RegistryError

log = logging.getLogger("node_registry.server")

#: What Starlette's JSON encoding raises for a value JSON (or UTF-8) cannot carry.
_UNSENDABLE = (UnicodeEncodeError, ValueError, TypeError)


def _node_name(doc: Any) -> str:
    try:
        return str(doc["metadata"]["name"])
    except (KeyError, TypeError):
        return "?"


class NodesResponse(JSONResponse):
    """A NodePassport, or a list of them under ``items``, as JSON; see the module docstring."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except _UNSENDABLE as error:
            items = content.get("items") if isinstance(content, dict) else None
            if not isinstance(items, list):
                raise RegistryError(
                    f"node {_node_name(content)} cannot be sent as JSON ({error}); "
                    "it is stored with a value JSON cannot carry: register it again"
                ) from None
        kept = []
        for item in items:
            try:
                super().render(item)
            except _UNSENDABLE as error:
                log.error(
                    "node %s left out of a list: it cannot be sent as JSON (%s); register it again",
                    _node_name(item),
                    error,
                )
                continue
            kept.append(item)
        return super().render({**content, "items": kept})
