"""List pagination that stays consistent across pages (``limit`` + ``continue``).

Kubernetes serves every page of a list from the first page's resource version (etcd keeps
old revisions). Entries are immutable here, so a snapshot of the first page's result costs a
list of references; later pages read that snapshot through an opaque continue token until
it expires (410 Expired: list again), exactly the client-go contract.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from node_registry.errors import BadRequestError, FieldError, RevisionCompactedError
from node_registry.registry.entry import RegistryEntry

MAX_SNAPSHOTS = 256


@dataclass(frozen=True, slots=True)
class _Snapshot:
    items: list[RegistryEntry]
    resource_version: int
    expires: float


@dataclass(frozen=True, slots=True)
class Page:
    items: list[RegistryEntry]
    resource_version: int
    continue_token: str | None
    remaining: int | None


class Paginator:
    """Holds list snapshots for continue tokens; at most ``MAX_SNAPSHOTS``, oldest dropped."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, items: list[RegistryEntry], resource_version: int, limit: int | None) -> Page:
        if limit is None or limit >= len(items):
            return Page(items, resource_version, None, None)
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._expire()
            self._snapshots[key] = _Snapshot(items, resource_version, time.monotonic() + self._ttl)
            while len(self._snapshots) > MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        return self._page(key, items, resource_version, 0, limit)

    def next(self, token: str, limit: int | None) -> Page:
        key, offset = _decode(token)
        with self._lock:
            self._expire()
            snapshot = self._snapshots.get(key)
        if snapshot is None:
            raise RevisionCompactedError(
                "the continue token has expired or is unknown; list again without it"
            )
        return self._page(key, snapshot.items, snapshot.resource_version, offset, limit)

    def _page(
        self, key: str, items: list[RegistryEntry], rv: int, offset: int, limit: int | None
    ) -> Page:
        end = len(items) if limit is None else offset + limit
        chunk = items[offset:end]
        if end >= len(items):
            with self._lock:
                self._snapshots.pop(key, None)
            return Page(chunk, rv, None, None)
        return Page(chunk, rv, _encode(key, end), len(items) - end)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._snapshots.items() if s.expires <= now]:
            del self._snapshots[key]


def _encode(key: str, offset: int) -> str:
    raw = json.dumps({"k": key, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str) -> tuple[str, int]:
    try:
        padded = token + "=" * (-len(token) % 4)
        doc = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key, offset = doc["k"], doc["o"]
        if not isinstance(key, str) or not isinstance(offset, int) or offset < 0:
            raise ValueError(doc)
    except (ValueError, KeyError, TypeError):
        raise BadRequestError(
            "invalid continue token", [FieldError("continue", "not a token this registry issued")]
        ) from None
    return key, offset
