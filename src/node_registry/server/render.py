"""Responses carrying nodes: JSON that fails closed for one node, never for every list.

The registry refuses what JSON cannot carry (a lone surrogate, a non-finite number) before
it is stored, so this is the second line: a record that got in anyway (an older version's,
a bug's) must cost the one node that holds it — left out of lists with an error logged, a
Kubernetes Status 500 naming it when asked for alone — rather than turn every list and
watch into a bare 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from node_registry.errors import RegistryError
from node_registry.kube.objects import dumps, object_bytes
from node_registry.registry import RegistryEntry

log = logging.getLogger("node_registry.server")

#: What Starlette's JSON encoding raises for a value JSON (or UTF-8) cannot carry.
UNSENDABLE = (UnicodeEncodeError, ValueError, TypeError)


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
        except UNSENDABLE as error:
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
            except UNSENDABLE as error:
                log.error(
                    "node %s left out of a list: it cannot be sent as JSON (%s); register it again",
                    _node_name(item),
                    error,
                )
                continue
            kept.append(item)
        return super().render({**content, "items": kept})


#: Items encoded between two turns of the event loop while a long list streams (~5 ms).
STREAM_CHUNK = 1000


def object_list_response(
    head: dict[str, Any], items: list[RegistryEntry], media_type: str
) -> Response:
    """A NodePassportList: ``head`` (apiVersion, kind, metadata) and ``items`` as objects.

    Each object's bytes come from its stored version (``object_bytes``), so a list of 50,000
    nodes joins bytes instead of building and encoding 50,000 documents; an item that
    cannot be sent is left out with an error logged, as ``NodesResponse`` does. A list
    longer than ``STREAM_CHUNK`` streams (as Kubernetes' streaming list encoding does),
    handing the event loop back between chunks: heartbeats do not wait for its end.
    """
    return encoded_list_response(head, "items", items, object_bytes, media_type)


def encoded_list_response(
    head: dict[str, Any],
    field: str,
    items: list[RegistryEntry],
    encode: Callable[[RegistryEntry], bytes],
    media_type: str,
) -> Response:
    """``head`` with ``field`` the JSON array of ``encode(item)`` per item (a Table's rows,
    a PartialObjectMetadataList's items), as ``object_list_response`` sends objects."""
    if len(items) <= STREAM_CHUNK:
        return Response(b"".join(_list_parts(head, field, items, encode)), media_type=media_type)
    return StreamingResponse(_streamed(head, field, items, encode), media_type=media_type)


def _list_parts(
    head: dict[str, Any],
    field: str,
    items: list[RegistryEntry],
    encode: Callable[[RegistryEntry], bytes],
) -> Iterator[bytes]:
    yield dumps(head)[:-1] + b',"' + field.encode() + b'":['
    first = True
    for start in range(0, len(items), STREAM_CHUNK):
        encoded = _encoded(items[start : start + STREAM_CHUNK], encode)
        if encoded:
            yield b"," + encoded if not first else encoded
            first = False
    yield b"]}"


async def _streamed(
    head: dict[str, Any],
    field: str,
    items: list[RegistryEntry],
    encode: Callable[[RegistryEntry], bytes],
) -> AsyncIterator[bytes]:
    for part in _list_parts(head, field, items, encode):
        yield part
        await asyncio.sleep(0)


def _encoded(items: list[RegistryEntry], encode: Callable[[RegistryEntry], bytes]) -> bytes:
    encoded = []
    for entry in items:
        try:
            encoded.append(encode(entry))
        except UNSENDABLE as error:
            log.error(
                "node %s left out of a list: it cannot be sent as JSON (%s); register it again",
                entry.name,
                error,
            )
    return b",".join(encoded)
