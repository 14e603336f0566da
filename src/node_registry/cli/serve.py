"""``node-registry serve``: settings, the safety checks before binding, then uvicorn
(with the connection limits of ``server.serving``)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import signal
import socket
from pathlib import Path
from typing import Any

from node_registry.config import Settings, load_settings
from node_registry.errors import ConfigError
from node_registry.registry import AsyncRegistry
from node_registry.server import Authenticator, create_app
from node_registry.server.serving import (
    ConnectionGuard,
    ConnectionLimits,
    RegistryServer,
    uvicorn_config,
)
from node_registry.store import open_store_on_loop

GRACEFUL_SHUTDOWN_SECONDS = 5
#: File descriptors kept free beside the connections: the listening socket, logs, etcd.
FD_RESERVE = 64

log = logging.getLogger("node_registry")


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
    terminated = False
    previous = signal.signal(signal.SIGTERM, _unwind)
    try:
        _serve(settings, auth, log_level)
    except _Terminated:
        terminated = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        # Exit as killed by SIGTERM, as uvicorn means to: supervisors read the status.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


class _Terminated(BaseException):
    """SIGTERM, raised where the main thread runs, so every ``finally`` on the way runs."""


def _unwind(signum: int, frame: object) -> None:
    """SIGTERM's handler around uvicorn: the SIGTERM it re-raises unwinds the stack.

    uvicorn catches SIGTERM and SIGINT while it serves; once stopped, it restores the
    handlers it found and raises the signal again. SIGINT's default handler raises
    ``KeyboardInterrupt``, so the ``finally`` that closes the store (and, on etcd, releases
    the controller seat) ran; SIGTERM's default killed the process there and then, so the
    seat stayed held until its lease ran out (15 s by default): issue #10, item 10.
    """
    raise _Terminated


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


def _serve(settings: Settings, auth: Authenticator, level: str) -> None:
    """Serve until stopped, the store and the registry on the server's own event loop."""
    tls: dict[str, Any] = {}
    if settings.server.tls_certfile is not None:
        tls = {
            "ssl_certfile": str(settings.server.tls_certfile),
            "ssl_keyfile": str(settings.server.tls_keyfile),
        }
    limits = ConnectionLimits.from_settings(settings.server)
    limits = ConnectionLimits(
        max_connections=fit_descriptors(limits.max_connections),
        max_header_bytes=limits.max_header_bytes,
        header_timeout=limits.header_timeout,
        write_timeout=limits.write_timeout,
    )
    config = uvicorn_config(
        None,  # the app, made on the loop below: it needs the store opened there
        settings.server,
        ConnectionGuard(limits),
        log_level=level,
        access_log=False,
        # Watch streams are ended at shutdown (RegistryServer); this bounds the rest.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **tls,
    )

    async def serve() -> None:
        # On etcd the replica's feed, ticks and keepalives run on this loop, and every
        # write awaits etcd here: no thread pool, no second loop (issue #13).
        store = await open_store_on_loop(settings)
        try:
            registry = AsyncRegistry(store, settings=settings)
            config.app = create_app(registry, settings, authenticator=auth)
            await RegistryServer(config, on_shutdown=registry.end_watches).serve()
        finally:
            # On etcd: hands the controller seat to another replica now, not after its lease.
            await store.aio.close()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())


def fit_descriptors(connections: int) -> int:
    """Raise the soft file-descriptor limit to fit ``connections``; what fits if it can't."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitted = max(soft - FD_RESERVE, 8)
        log.warning(
            "server.max_connections is %d but the file descriptor limit is %d (hard): "
            "holding at most %d connections",
            connections,
            soft,
            fitted,
        )
        return fitted
    return connections
