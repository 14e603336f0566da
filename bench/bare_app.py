"""The baseline for bench_http.py: a FastAPI PUT on the lease path that does nothing.

It takes the same path parameter and JSON body as the real lease route and returns a small
JSON object, so the difference between the two is what the registry adds: auth, body
validation, the heartbeat itself, metrics and the Lease response.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

app = FastAPI()


@app.put("/apis/ai_team.io/v1/leases/{name}")
async def renew(name: str, request: Request) -> dict[str, Any]:
    await request.body()
    return {"kind": "Lease", "metadata": {"name": name}}
