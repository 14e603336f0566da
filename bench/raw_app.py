"""The floor for bench_http.py: a raw ASGI app that answers the lease PUT with a constant.

No framework at all: it reads the body and answers 200 with a small JSON object, so what
it costs is uvicorn, httptools and the socket — what no Python route can go below.
"""

from __future__ import annotations

from typing import Any

BODY = b'{"kind":"Lease"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        message = await receive()  # lifespan: say yes to startup and shutdown
        while message["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
