"""A real uvicorn server on a free loopback port, for end-to-end HTTP tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from node_registry import AsyncRegistry, FakeClock, Settings, load_settings
from node_registry.server import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_app(
    clock: FakeClock | None = None, settings: Settings | None = None, **overrides: Any
) -> FastAPI:
    """An app over a fresh in-memory registry; ``overrides`` are load_settings() sections.

    Lag-based shedding is off unless a test sets it: an in-process server shares the GIL
    with the test's own clients and browser driver, so its loop lag measures the test, and
    a loaded CI machine would turn page loads into 429s.
    """
    server = {"shed_reads_lag_seconds": 3600.0, **overrides.pop("server", {})}
    settings = settings or load_settings(server=server, **overrides)
    return create_app(AsyncRegistry(clock=clock, settings=settings), settings)


@contextlib.contextmanager
def serve(app: FastAPI, *, port: int | None = None, **config: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread; yields the base URL; stops it on exit.

    ``port`` reuses an address (a restarted server); ``config`` goes to ``uvicorn.Config``
    (e.g. ``ssl_certfile``/``ssl_keyfile``).
    """
    port = port or free_port()
    scheme = "https" if "ssl_certfile" in config else "http"
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **config
        )
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
