"""Watch responses: ``GET /nodes?watch=true`` as NDJSON (Kubernetes) or Server-Sent Events."""

from __future__ import annotations

from typing import Any

from fastapi.responses import StreamingResponse

from node_registry.selectors import Selector
from node_registry.server.context import ServerContext
from node_registry.server.streams import ndjson_frame, sse_frame, stream_events

WATCH_CONTENT: dict[str, Any] = {
    "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/WatchEventModel"}},
    "text/event-stream": {"schema": {"type": "string"}},
}


async def watch_response(
    ctx: ServerContext,
    *,
    since: int | None,
    kind: str | None,
    selector: Selector,
    sse: bool,
    bookmarks: bool,
    timeout: int | None,
) -> StreamingResponse:
    """The stream of changes after ``since`` (None: from now), filtered like a list."""
    registry = ctx.registry
    start = registry.sync.resource_version if since is None else since
    # Opened here, not in the generator, so a too-old version is a plain 410.
    opened = await registry.open_watch(start)
    metrics = ctx.metrics
    frames = stream_events(
        opened,
        start,
        kind=kind,
        selector=selector,
        frame=sse_frame if sse else ndjson_frame,
        bookmarks=bookmarks,
        bookmark_interval=ctx.settings.server.bookmark_interval_seconds,
        timeout=timeout,
        on_open=metrics.watch_streams.inc,
        on_close=metrics.watch_streams.dec,
    )
    media = "text/event-stream" if sse else "application/x-ndjson"
    return StreamingResponse(frames, media_type=media, headers={"Cache-Control": "no-cache"})
