"""Where the registry keeps things in etcd, and how each value is encoded.

Key layout under ``prefix`` (default ``/ai_team/registry``), readable with
``etcdctl get --prefix /ai_team/registry``:

- ``{prefix}/nodes/{node_id}``  → ``NodeRecord.to_dict()`` as JSON; its ``mod_revision`` is the
  node's resource version.
- ``{prefix}/names/{name}``     → the node_id holding the name, written in the same
  transaction as the node, so name uniqueness is enforced by etcd and not by a replica.
- ``{prefix}/leases/{node_id}`` → a small JSON lease record, attached to an etcd lease of
  ``lease_ttl`` seconds; the key's ``lease`` field is how any replica finds the lease.
- ``{prefix}/bindings/{name}``  → ``Binding.to_dict()``: the name a node deregistered itself
  from, written in the deletion's transaction and removed in the transaction that
  registers the name again; on an etcd lease of ``binding_ttl`` seconds, so names nobody
  comes back for do not pile up.
- ``{prefix}/objects/{kind}/{name}`` → registry objects other than nodes (the registered
  ``NodeType`` s) as JSON, on no lease: they outlive every replica.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import (
    Mapping,
)
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from node_registry.store.records import NodeRecord

log = logging.getLogger(__name__)

#: A JSON escape of a UTF-16 surrogate: a pair spells a character, a lone one cannot be sent.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True, slots=True)
class _Keys:
    prefix: str

    @property
    def nodes(self) -> bytes:
        return f"{self.prefix}/nodes/".encode()

    def node(self, node_id: str) -> bytes:
        return f"{self.prefix}/nodes/{node_id}".encode()

    def name(self, name: str) -> bytes:
        return f"{self.prefix}/names/{name}".encode()

    def lease(self, node_id: str) -> bytes:
        return f"{self.prefix}/leases/{node_id}".encode()

    def binding(self, name: str) -> bytes:
        return f"{self.prefix}/bindings/{name}".encode()

    @property
    def bindings(self) -> bytes:
        return f"{self.prefix}/bindings/".encode()

    @property
    def renewals(self) -> bytes:
        return f"{self.prefix}/renewals/".encode()

    def renewal(self, replica: str) -> bytes:
        return f"{self.prefix}/renewals/{replica}".encode()

    @property
    def controller(self) -> bytes:
        return f"{self.prefix}/controller".encode()

    @property
    def states(self) -> bytes:
        return f"{self.prefix}/state/".encode()

    def state(self, key: str) -> bytes:
        return f"{self.prefix}/state/{key}".encode()

    def objects(self, kind: str) -> bytes:
        return f"{self.prefix}/objects/{kind}/".encode()

    def object(self, kind: str, name: str) -> bytes:
        return f"{self.prefix}/objects/{kind}/{name}".encode()


def _prefix_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    end[-1] += 1  # prefixes here end in "/", never in 0xff
    return bytes(end)


def _encode(record: NodeRecord) -> bytes:
    return json.dumps(record.to_dict(), separators=(",", ":")).encode()


def _decode(value: bytes) -> NodeRecord:
    doc = json.loads(value)
    if _SURROGATE_ESCAPE.search(value):
        # JSON may spell a lone surrogate as an escape; a record holding one could never be
        # sent to a client (the registry refuses such input; this is an older or foreign one).
        json.dumps(doc, ensure_ascii=False).encode()
    return NodeRecord.from_dict(doc)


def _try_decode(value: bytes) -> tuple[NodeRecord | None, str]:
    """The record, or None and why it cannot be read (whatever is wrong with the value)."""
    try:
        return _decode(value), ""
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        # pydantic's ValidationError, JSON's and UTF-8's errors are ValueErrors.
        text = str(error).splitlines()
        return None, f"{type(error).__name__}: {'; '.join(line.strip() for line in text[:3])}"


def _stored_name(value: bytes) -> str | None:
    """The node name an unreadable record holds, when its JSON still says so."""
    try:
        name = json.loads(value)["passport"]["metadata"]["name"]
    except (ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _decode_renewals(value: bytes) -> dict[str, datetime]:
    """A digest's renewal times; what does not read as one is skipped, with a warning.

    A digest only refines renewal times (the seen-floor covers what it would have said),
    so one written by another version, or damaged, must not stop a replica.
    """
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        log.warning("a renewal digest is not a JSON object; skipped")
        return {}
    renewed: dict[str, datetime] = {}
    for node_id, at in doc.items():
        if isinstance(at, int | float) and not isinstance(at, bool):
            renewed[node_id] = datetime.fromtimestamp(at, UTC)
    if len(renewed) < len(doc):
        log.warning("a renewal digest had %d unreadable entries; skipped", len(doc) - len(renewed))
    return renewed


def _decode_state(value: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        log.warning("a published registry state is not a JSON object; ignored")
        return None
    return doc


def merge_latest(into: dict[str, datetime], renewed: Mapping[str, datetime]) -> None:
    for node_id, at in renewed.items():
        known = into.get(node_id)
        if known is None or at > known:
            into[node_id] = at
