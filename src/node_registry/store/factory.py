"""Backends chosen by URL: ``memory://`` (embedded) or ``etcd://host:2379[,host:2379]/prefix``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from node_registry.clock import Clock
from node_registry.config import Settings
from node_registry.errors import ConfigError
from node_registry.store.base import Store
from node_registry.store.memory import MemoryStore

if TYPE_CHECKING:
    from node_registry.store.etcd.nodes import EtcdStore

SCHEMES = ("memory", "etcd")
ETCD_PORT = 2379
#: etcd refuses leases shorter than about 2 s.
MIN_LEASE_SECONDS = 2


def open_store(settings: Settings, *, clock: Clock | None = None) -> Store:
    """The store ``settings.store.url`` names; ``ConfigError`` for a URL it cannot serve.

    For etcd this connects and loads the nodes, so an unreachable etcd fails here with
    ``StoreUnavailableError`` rather than at the first request. The etcd replica runs on
    a loop thread of its own: for sync callers (``Registry``).
    """
    if _scheme(settings) == "memory":
        return _memory(settings)
    etcd, options = _etcd_parts(settings, clock)
    from node_registry.store.etcd.replica import EtcdReplica

    return EtcdReplica(etcd, **options)


async def open_store_on_loop(settings: Settings, *, clock: Clock | None = None) -> Store:
    """``open_store`` for an asyncio program (``serve``): the etcd replica runs on the
    running loop, so ``AsyncRegistry`` awaits etcd there with no thread or loop between.
    Close it with ``await store.aio.close()`` on that loop."""
    if _scheme(settings) == "memory":
        return _memory(settings)
    etcd, options = _etcd_parts(settings, clock)
    from node_registry.store.etcd.replica import EtcdReplica

    return await EtcdReplica.open(etcd, **options)


def _scheme(settings: Settings) -> str:
    url = settings.store.url
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ConfigError(
            f"store URL {url!r}: scheme {scheme!r} is not available; "
            f"supported: {', '.join(s + '://' for s in SCHEMES)}"
        )
    return scheme


def _memory(settings: Settings) -> MemoryStore:
    return MemoryStore(
        history_size=settings.watch.history_size,
        binding_ttl=settings.store.binding_retention_seconds,
    )


def parse_etcd_url(url: str) -> tuple[list[str], str]:
    """``etcd://h1:2379,h2/prefix`` → (["h1:2379", "h2:2379"], "/prefix"); ConfigError if bad."""
    parts = urlsplit(url)
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(
            f"store URL {url!r}: etcd URLs take endpoints and a key prefix only; give TLS and "
            "credentials as store.etcd_* settings"
        )
    endpoints: list[str] = []
    for raw in parts.netloc.split(","):
        item = raw.strip()
        host, colon, port = item.rpartition(":")
        if not colon or item.endswith("]"):  # no port (an IPv6 address in brackets included)
            host, port = item, ""
        if not host:
            raise ConfigError(f"store URL {url!r}: endpoint {item!r} has no host")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"store URL {url!r}: endpoint {item!r} has an invalid port")
        endpoints.append(f"{host}:{port or ETCD_PORT}")
    prefix = parts.path.rstrip("/")
    return endpoints, prefix


def _etcd_parts(settings: Settings, clock: Clock | None) -> tuple[EtcdStore, dict[str, Any]]:
    """The etcd client the URL and settings describe, and the replica's options."""
    try:
        from node_registry.store.etcd import DEFAULT_PREFIX, EtcdStore, EtcdTLS
    except ImportError as error:
        raise ConfigError(
            f"the etcd backend needs its extra: pip install 'ai-team-node-registry[etcd]' ({error})"
        ) from None
    endpoints, prefix = parse_etcd_url(settings.store.url)
    store = settings.store
    heartbeat = settings.heartbeat
    tls = None
    if store.etcd_ca_file is not None or store.etcd_cert_file is not None:
        tls = EtcdTLS(store.etcd_ca_file, store.etcd_cert_file, store.etcd_key_file)
    password = store.etcd_password.get_secret_value() if store.etcd_password else None
    etcd = EtcdStore(
        endpoints,
        prefix=prefix or DEFAULT_PREFIX,
        timeout=store.etcd_timeout_seconds,
        attempt_timeout=store.etcd_attempt_timeout_seconds,
        # A node's etcd lease outlives the registry's whole verdict (ttl, then grace), so
        # the lease key vanishing is never what decides a node's fate.
        lease_ttl=max(
            MIN_LEASE_SECONDS, math.ceil(heartbeat.ttl_seconds + heartbeat.grace_period_seconds)
        ),
        binding_ttl=store.binding_retention_seconds,
        tls=tls,
        username=store.etcd_username,
        password=password,
        clock=clock,
    )
    return etcd, {
        "history_size": settings.watch.history_size,
        # A dead controller's seat frees after this; half the TTL leaves the next
        # controller time to record transitions within one TTL.
        "seat_ttl": max(MIN_LEASE_SECONDS, math.ceil(heartbeat.ttl_seconds / 2)),
        "period": store.etcd_period_seconds,
        "compaction_interval": store.etcd_compaction_interval_seconds,
        "clock": clock,
    }
