"""Client settings shared by the sync and async clients: endpoints, token, retry policy."""

from __future__ import annotations

import os
import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from node_registry.client.backoff import CAP, backoff
from node_registry.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "NODE_REGISTRY_URL"
TOKEN_ENV = "NODE_REGISTRY_TOKEN"
#: Kubernetes' client backoff tops out at a few seconds; so does ours between rounds.
MAX_DELAY = CAP
#: A watch that hears nothing (no event, no BOOKMARK) this long is presumed dead and is
#: reopened: three of the server's default 30 s bookmark intervals, so a half-open
#: connection cannot hang a watcher forever.
WATCH_IDLE_TIMEOUT = 90.0


def tls_verify(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    """httpx's ``verify`` from a flag, a CA bundle path or a context (paths are deprecated)."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


@dataclass(frozen=True, slots=True)
class ClientSettings:
    endpoints: tuple[str, ...]
    token: str | None
    timeout: float
    retries: int
    backoff: float

    @classmethod
    def build(
        cls,
        endpoints: str | Sequence[str] | None,
        token: str | None,
        timeout: float,
        retries: int,
        backoff: float,
    ) -> ClientSettings:
        """Arguments first, then ``NODE_REGISTRY_URL`` (comma-separated) and ``_TOKEN``."""
        raw = endpoints if endpoints is not None else os.environ.get(URL_ENV) or DEFAULT_URL
        urls = [u.strip().rstrip("/") for u in (raw.split(",") if isinstance(raw, str) else raw)]
        urls = [u for u in urls if u]
        if not urls:
            raise ConfigError("no registry endpoint given")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"registry endpoint {url!r} must start with http:// or https://")
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ConfigError("timeout must be positive; retries and backoff not negative")
        return cls(
            endpoints=tuple(urls),
            token=token if token is not None else os.environ.get(TOKEN_ENV) or None,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
        )

    def tls(self, verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
        """One TLS setting shared by every endpoint's connection pool, built once.

        httpx would otherwise load the CA bundle for each client it makes (~70 ms apiece,
        even for plain http://); with no https:// endpoint no TLS happens at all.
        """
        if not any(url.startswith("https://") for url in self.endpoints):
            return False
        if verify is True:
            return httpx.create_ssl_context()
        return tls_verify(verify)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The pause before round ``attempt`` (1, 2, ...): full jitter under a doubling cap."""
        return backoff(attempt, base=self.backoff, cap=MAX_DELAY, rng=rng)
