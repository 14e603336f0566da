"""``node-registry serve``: settings, the safety checks before binding, then uvicorn."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
from pathlib import Path
from typing import Any

import uvicorn

from node_registry.config import Settings, load_settings
from node_registry.errors import ConfigError
from node_registry.registry import AsyncRegistry
from node_registry.server import Authenticator, create_app
from node_registry.store import open_store

GRACEFUL_SHUTDOWN_SECONDS = 5


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def build_settings(config: Path | None, server: dict[str, Any], store_url: str | None) -> Settings:
    base = load_settings(config)
    overrides: dict[str, Any] = {"server": {**base.server.model_dump(), **server}}
    if store_url is not None:
        overrides["store"] = {"url": store_url}
    return load_settings(config, **overrides)


def check_exposure(settings: Settings, auth: Authenticator) -> None:
    """Refuse an open registry on a network address unless explicitly asked for."""
    server = settings.server
    if auth.enabled or is_loopback(server.host) or server.allow_insecure:
        return
    raise ConfigError(
        f"refusing to serve without tokens on {server.host!r}, which is not a loopback "
        "address: give --tokens-file (or server.tokens_file), bind 127.0.0.1, or pass "
        "--allow-insecure if you really mean an open registry"
    )


def run_server(
    *,
    config: Path | None,
    server: dict[str, Any],
    store_url: str | None,
    log_level: str = "info",
) -> None:
    settings = build_settings(config, server, store_url)
    auth = Authenticator.from_file(settings.server.tokens_file)
    check_exposure(settings, auth)
    if not auth.enabled:
        logging.getLogger("node_registry").warning(
            "no tokens file: every caller is an anonymous admin (loopback use only)"
        )
    _reload_on_sighup(auth)
    store = open_store(settings)
    try:
        _serve(AsyncRegistry(store, settings=settings), settings, auth, log_level)
    finally:
        # On etcd: hands the controller seat to another replica now, not after its lease.
        store.close()


def _reload_on_sighup(auth: Authenticator) -> None:
    """``kill -HUP`` reads the tokens file again (it is also read again when it changes)."""

    def handler(signum: int, frame: object) -> None:
        # Python runs this between two bytecodes of the main thread, which runs the event
        # loop: the reload is handed to the loop rather than run in the middle of a request.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # before the server started
            auth.reload()
            return
        loop.call_soon_threadsafe(auth.reload)

    if auth.enabled:
        signal.signal(signal.SIGHUP, handler)


def _serve(registry: AsyncRegistry, settings: Settings, auth: Authenticator, level: str) -> None:
    app = create_app(registry, settings, authenticator=auth)
    tls: dict[str, Any] = {}
    if settings.server.tls_certfile is not None:
        tls = {
            "ssl_certfile": str(settings.server.tls_certfile),
            "ssl_keyfile": str(settings.server.tls_keyfile),
        }
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=level,
        access_log=False,
        # Watch streams (and dashboards) never end by themselves; don't let them hold a
        # shutdown forever.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **tls,
    )
