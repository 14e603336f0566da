"""Backends chosen by URL: ``memory://`` today; ``etcd://host:2379[,host:2379]/prefix`` next."""

from __future__ import annotations

from urllib.parse import urlsplit

from node_registry.errors import ConfigError
from node_registry.store.base import Store
from node_registry.store.memory import MemoryStore

SCHEMES = ("memory",)


def open_store(url: str, *, history_size: int) -> Store:
    """The store a URL names; ``ConfigError`` for a scheme this build cannot serve."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore(history_size=history_size)
    raise ConfigError(
        f"store URL {url!r}: scheme {scheme!r} is not available; "
        f"supported: {', '.join(s + '://' for s in SCHEMES)}"
    )
