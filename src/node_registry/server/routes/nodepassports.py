"""NodePassports in Kubernetes shape: get, list and watch (``kubectl get np``, client-go).

``/apis/ai_team.io/v1/nodepassports`` serves the registry's nodes as NodePassport objects
(``node_registry.kube.objects``), as a ``Table`` when Accept asks for one (``kubectl get``),
filtered by label and field selectors (``find_nodes``' kind, selector, only_healthy and
only_verified: ``kube.fields``), paginated with ``limit``/``continue``, and
watched as NDJSON in ``application/json`` with Kubernetes' semantics: no resourceVersion (or
``0``) sends the current nodes as ADDED first; a health transition is a MODIFIED; BOOKMARKs
only when asked (``allowWatchBookmarks``). A node token reads only its own node (kubectl reads
an object before it patches it). The writes are ``nodepassport_writes``'.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from node_registry.clock import Clock
from node_registry.errors import NotFoundError
from node_registry.kube.discovery import GROUP_VERSION
from node_registry.kube.fields import FieldSelector, parse_field_selector
from node_registry.kube.meta import META_GROUP_VERSION
from node_registry.kube.objects import (
    dumps,
    entry_to_object,
    list_head,
    metadata_bytes,
    object_bytes,
)
from node_registry.kube.table import (
    COLUMN_DEFINITIONS,
    IncludeObject,
    nodes_table,
    row_bytes,
    row_object,
    table_head,
)
from node_registry.passport.models import API_GROUP, KIND
from node_registry.passport.verification import strict_labels, trusted
from node_registry.registry import EventType, NodeList, RegistryEntry, WatchEvent
from node_registry.registry.aio import SELECT_CHUNK
from node_registry.selectors import Selector
from node_registry.server.auth import (
    Principal,
    Role,
    authorize_node_id,
    authorize_node_write,
    authorize_read,
)
from node_registry.server.context import Caller, Ctx, NodeName, ServerContext
from node_registry.server.negotiation import Shape, content_type, kube_response, negotiate
from node_registry.server.render import (
    UNSENDABLE,
    NodesResponse,
    encoded_list_response,
    object_list_response,
)
from node_registry.server.routes.params import (
    ContinueQuery,
    LabelSelectorQuery,
    LimitQuery,
    ResourceVersionQuery,
    TimeoutQuery,
    query_selector,
)
from node_registry.server.streams import Encoding, EntryFilter, ndjson_frame, stream_events

RESOURCE = "nodepassports"


async def _name_errors(request: Request) -> None:
    # Errors of these routes name the resource as apiserver's do (details.kind, .group).
    request.state.resource = (RESOURCE, API_GROUP)


router = APIRouter(
    prefix=f"/apis/{GROUP_VERSION}",
    tags=[RESOURCE],
    dependencies=[Depends(_name_errors)],
)
_SERVED = frozenset({Shape.TABLE, Shape.METADATA, Shape.METADATA_LIST})

FieldSelectorQuery = Annotated[str | None, Query(alias="fieldSelector", max_length=4096)]
IncludeObjectQuery = Annotated[IncludeObject, Query(alias="includeObject")]


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f'{RESOURCE}.{API_GROUP} "{name}" not found')


def _get(ctx: ServerContext, name: str) -> RegistryEntry:
    try:
        return ctx.registry.sync.get_by_name(name)
    except NotFoundError:
        raise _not_found(name) from None


def _authorize_get(caller: Principal, ctx: ServerContext, name: str) -> RegistryEntry:
    """Readers read every node; a node token its own (name and uid), as its lease: kubectl
    reads an object before it patches, labels or edits it."""
    if caller.role is Role.NODE:
        authorize_node_write(caller, name)
        entry = _get(ctx, name)
        authorize_node_id(caller, entry.node_id)
        return entry
    authorize_read(caller)
    return _get(ctx, name)


def _respond(doc: dict[str, Any], shape: Shape) -> JSONResponse:
    return NodesResponse(doc, media_type=content_type(shape))


def _metadata_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = row_object(obj, IncludeObject.METADATA)
    assert meta is not None
    return meta


@router.get(
    f"/{RESOURCE}/{{name}}",
    summary="Get one NodePassport (a Table when Accept asks for one)",
    responses=kube_response("NodePassport", "A NodePassport, or a Table when Accept asks"),
)
async def get_nodepassport(
    name: NodeName,
    request: Request,
    caller: Caller,
    ctx: Ctx,
    include_object: IncludeObjectQuery = IncludeObject.METADATA,
) -> Response:
    entry = _authorize_get(caller, ctx, name)
    shape = negotiate(request.headers.get("accept"), _SERVED)
    if shape is Shape.TABLE:
        table = nodes_table([entry], ctx.clock.now(), include=include_object)
        return _respond(table, shape)
    obj = entry_to_object(entry)
    if shape in (Shape.METADATA, Shape.METADATA_LIST):
        return _respond(_metadata_of(obj), Shape.METADATA)
    return _respond(obj, Shape.OBJECT)


@router.get(
    f"/{RESOURCE}/{{name}}/status",
    summary="Get a NodePassport's status subresource",
    responses=kube_response("NodePassport", "The NodePassport"),
)
async def get_nodepassport_status(name: NodeName, caller: Caller, ctx: Ctx) -> Response:
    return _respond(entry_to_object(_authorize_get(caller, ctx, name)), Shape.OBJECT)


@router.get(
    f"/{RESOURCE}",
    summary="List NodePassports, or watch them with watch=true",
    responses=kube_response(
        "NodePassportList", "A NodePassportList, a Table when Accept asks, or a watch stream"
    ),
)
async def list_nodepassports(
    request: Request,
    caller: Caller,
    ctx: Ctx,
    label_selector: LabelSelectorQuery = None,
    field_selector: FieldSelectorQuery = None,
    limit: LimitQuery = None,
    continue_: ContinueQuery = None,
    watch: bool = False,
    resource_version: ResourceVersionQuery = None,
    timeout_seconds: TimeoutQuery = None,
    allow_watch_bookmarks: Annotated[bool, Query(alias="allowWatchBookmarks")] = False,
    include_object: IncludeObjectQuery = IncludeObject.METADATA,
) -> Response:
    authorize_read(caller)
    selector = query_selector(label_selector)
    fields = parse_field_selector(field_selector)
    shape = negotiate(request.headers.get("accept"), _SERVED)
    if watch:
        return await _watch(
            ctx,
            since=int(resource_version) if resource_version else None,
            selector=selector,
            fields=fields,
            table=include_object if shape is Shape.TABLE else None,
            bookmarks=allow_watch_bookmarks,
            timeout=timeout_seconds,
        )
    if continue_:
        # The token's snapshot was filtered by the first page's selectors.
        page = ctx.pages.next(continue_, limit)
    else:
        found = await select(ctx, selector, fields)
        page = ctx.pages.first(found.items, found.resource_version, limit)
    # Every shape joins bytes its nodes' stored versions keep: rows, metadata, objects.
    if shape is Shape.TABLE:
        now = ctx.clock.now()
        head = table_head(page.resource_version, page.continue_token, page.remaining)
        rows = functools.partial(_row, now=now, include=include_object)
        return encoded_list_response(head, "rows", page.items, rows, content_type(shape))
    head = list_head(page.resource_version, page.continue_token, page.remaining)
    if shape not in (Shape.METADATA, Shape.METADATA_LIST):
        return object_list_response(head, page.items, content_type(Shape.OBJECT))
    head = {**head, "apiVersion": META_GROUP_VERSION, "kind": "PartialObjectMetadataList"}
    media = content_type(Shape.METADATA_LIST)
    return encoded_list_response(head, "items", page.items, metadata_bytes, media)


def _row(entry: RegistryEntry, *, now: datetime, include: IncludeObject) -> bytes:
    return row_bytes(entry, now, include)


async def select(ctx: ServerContext, selector: Selector, fields: FieldSelector) -> NodeList:
    """The nodes (label, field) selectors pick, with the version they were read at; built
    and filtered a chunk at a time, the loop handed back between chunks."""
    found = await ctx.registry.select(selector=selector, only_verified=fields.only_verified)
    if fields.empty():
        return found
    items = found.items
    kept: list[RegistryEntry] = []
    for start in range(0, len(items), SELECT_CHUNK):
        if start:
            await asyncio.sleep(0)
        kept += [e for e in items[start : start + SELECT_CHUNK] if fields.matches(e)]
    return NodeList(kept, found.resource_version)


def _verified(selector: Selector, fields: FieldSelector) -> EntryFilter:
    """A watch's ``select(only_verified=True)``: trusted nodes, the selector matching the
    labels with only Verified claims (as ``Registry.select`` reads them)."""

    def wanted(entry: RegistryEntry) -> bool:
        labels = entry.labels
        if not trusted(labels) or not fields.matches(entry):
            return False
        return selector.empty() or selector.matches(strict_labels(labels))

    return wanted


# -- watch -----------------------------------------------------------------------------------


def _event_type(kind: EventType) -> str:
    # Kubernetes has no HEALTH_CHANGED: a transition is a MODIFIED whose healthState changed.
    return EventType.MODIFIED.value if kind is EventType.HEALTH_CHANGED else kind.value


def _object_event(event: WatchEvent) -> dict[str, Any]:
    return {"type": _event_type(event.type), "object": entry_to_object(event.entry)}


def _bookmark(resource_version: int) -> dict[str, Any]:
    return {
        "type": "BOOKMARK",
        "object": {
            "apiVersion": GROUP_VERSION,
            "kind": KIND,
            "metadata": {"resourceVersion": str(resource_version)},
        },
    }


#: ``{"type":"…","object":`` per event type, before the object's bytes.
_FRAME_HEADS = {t: b'{"type":"' + _event_type(t).encode() + b'","object":' for t in EventType}


def _object_frame(event: WatchEvent) -> bytes:
    """The event's line from its stored version's cached JSON (``object_bytes``), which a
    list of that version reuses; a node that cannot be sent so is encoded whole, as before."""
    try:
        return _FRAME_HEADS[event.type] + object_bytes(event.entry) + b"}\n"
    except UNSENDABLE:
        return ndjson_frame(_object_event(event), event.resource_version)


OBJECT_ENCODING = Encoding(_object_event, _bookmark, _object_frame)


_TABLE_ENCODINGS: dict[tuple[IncludeObject, int], Encoding] = {}


def table_encoding(include: IncludeObject, clock: Clock) -> Encoding:
    """Table watch events (``kubectl get -w``): each event's object a one-row Table.

    One per (include, clock): streams share an encoding's frames only if it is the same one.
    """
    key = (include, id(clock))
    found = _TABLE_ENCODINGS.get(key)
    if found is None:
        found = _TABLE_ENCODINGS[key] = _table_encoding(include, clock)
    return found


_TABLE_EVENT_HEAD = dumps({"apiVersion": META_GROUP_VERSION, "kind": "Table"})[:-1]
_TABLE_EVENT_COLUMNS = b',"columnDefinitions":' + dumps(COLUMN_DEFINITIONS) + b',"rows":['


def _table_encoding(include: IncludeObject, clock: Clock) -> Encoding:
    def event(ev: WatchEvent) -> dict[str, Any]:
        table = nodes_table([ev.entry], clock.now(), include=include)
        table["metadata"] = {"resourceVersion": str(ev.resource_version)}
        return {"type": _event_type(ev.type), "object": table}

    def frame(ev: WatchEvent) -> bytes:
        # ``event``'s document, its row joined from the bytes a list of the version reuses.
        try:
            row = row_bytes(ev.entry, clock.now(), include)
        except UNSENDABLE:
            return ndjson_frame(event(ev), ev.resource_version)
        version = b',"metadata":{"resourceVersion":"' + str(ev.resource_version).encode()
        return (
            b"".join(
                (_FRAME_HEADS[ev.type], _TABLE_EVENT_HEAD, version, b'"}', _TABLE_EVENT_COLUMNS)
            )
            + row
            + b"]}}\n"
        )

    def bookmark(resource_version: int) -> dict[str, Any]:
        return {
            "type": "BOOKMARK",
            "object": {
                "apiVersion": META_GROUP_VERSION,
                "kind": "Table",
                "metadata": {"resourceVersion": str(resource_version)},
                "columnDefinitions": [],
                "rows": [],
            },
        }

    return Encoding(event, bookmark, frame)


def _added_frames(items: list[RegistryEntry], encoding: Encoding) -> Iterator[bytes]:
    """The current nodes as ADDED lines; objects from their stored versions' cached JSON."""
    for entry in items:
        event = WatchEvent(EventType.ADDED, entry, entry.resource_version)
        if encoding.ndjson is not None:
            yield encoding.ndjson(event)
        else:
            yield ndjson_frame(encoding.event(event), 0)


async def _watch(
    ctx: ServerContext,
    *,
    since: int | None,
    selector: Selector,
    fields: FieldSelector,
    table: IncludeObject | None,
    bookmarks: bool,
    timeout: int | None,
) -> StreamingResponse:
    registry = ctx.registry
    encoding = OBJECT_ENCODING if table is None else table_encoding(table, ctx.clock)
    wanted: EntryFilter | None = None if fields.empty() else fields.matches
    initial: Iterable[bytes] = ()
    if not since:
        # Kubernetes' "get state and start at most recent": the nodes now, as ADDED, then
        # every change after the version they were read at.
        found = await select(ctx, selector, fields)
        since = found.resource_version
        initial = _added_frames(found.items, encoding)
    if fields.only_verified:
        # The strict reading of the labels is the filter's: the shared lenient one is off.
        wanted, selector = _verified(selector, fields), Selector()
    opened = await registry.open_watch(since)
    frames = stream_events(
        opened,
        since,
        kind=None,
        selector=selector,
        frame=ndjson_frame,
        bookmarks=bookmarks,
        bookmark_interval=ctx.settings.server.bookmark_interval_seconds,
        timeout=timeout,
        on_open=ctx.metrics.watch_streams.inc,
        on_close=ctx.metrics.watch_streams.dec,
        encoding=encoding,
        wanted=wanted,
        initial=initial,
    )
    media = content_type(Shape.TABLE if table is not None else Shape.OBJECT)
    return StreamingResponse(frames, media_type=media, headers={"Cache-Control": "no-cache"})
