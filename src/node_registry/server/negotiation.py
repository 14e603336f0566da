"""What a Kubernetes client asks for in ``Accept``: a Table, metadata only, aggregated discovery.

Kubernetes names the shape of a response in media type parameters
(``application/json;as=Table;v=v1;g=meta.k8s.io``); clients list the shapes they take in order
of preference and end with plain ``application/json`` as the fallback. The first one listed
that the registry serves wins; anything else is answered as plain JSON (the object itself), as
every client of this API reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from node_registry.kube.discovery import AGGREGATED_V2
from node_registry.kube.openapi import PREFIX as OPENAPI_PREFIX

JSON = "application/json"


def kube_response(kind: str, description: str) -> dict[int | str, dict[str, Any]]:
    """A route's 200 in /openapi.json: ``kind`` under the name /openapi/v3 gives it.

    The group's schemas join /openapi.json under those names (``io.ai_team.v1.Lease``), as
    their pydantic names would clash with the passport's own models of the same names.
    """
    ref = {"$ref": f"#/components/schemas/{OPENAPI_PREFIX}{kind}"}
    return {200: {"description": description, "content": {JSON: {"schema": ref}}}}


class Shape(StrEnum):
    OBJECT = "Object"
    TABLE = "Table"
    METADATA = "PartialObjectMetadata"
    METADATA_LIST = "PartialObjectMetadataList"
    DISCOVERY = "APIGroupDiscoveryList"


#: (as, group, version) of each shape served in media type parameters.
_SHAPES = {
    ("Table", "meta.k8s.io", "v1"): Shape.TABLE,
    ("PartialObjectMetadata", "meta.k8s.io", "v1"): Shape.METADATA,
    ("PartialObjectMetadataList", "meta.k8s.io", "v1"): Shape.METADATA_LIST,
    ("APIGroupDiscoveryList", "apidiscovery.k8s.io", "v2"): Shape.DISCOVERY,
}


@dataclass(frozen=True, slots=True)
class MediaRange:
    type: str
    params: dict[str, str]


def media_ranges(accept: str | None) -> list[MediaRange]:
    """The ranges of an Accept header in the order given (kubectl orders; it sends no q)."""
    ranges: list[MediaRange] = []
    for part in (accept or "").split(","):
        media, *raw_params = part.split(";")
        media = media.strip().lower()
        if not media:
            continue
        params: dict[str, str] = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(media, params))
    return ranges


def negotiate(accept: str | None, served: frozenset[Shape]) -> Shape:
    """The first shape asked for among ``served``; the object when none is (or none is asked)."""
    for media in media_ranges(accept):
        if media.type not in (JSON, "*/*", "application/*"):
            continue
        wanted = media.params.get("as")
        if wanted is None:
            return Shape.OBJECT
        shape = _SHAPES.get((wanted, media.params.get("g", ""), media.params.get("v", "")))
        if shape is not None and shape in served:
            return shape
    return Shape.OBJECT


def content_type(shape: Shape) -> str:
    """The Content-Type a response of ``shape`` carries (what client-go decodes it by)."""
    if shape is Shape.DISCOVERY:
        return AGGREGATED_V2
    if shape is Shape.OBJECT:
        return JSON
    return f"{JSON};as={shape.value};g=meta.k8s.io;v=v1"
