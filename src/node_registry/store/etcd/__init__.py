"""The etcd backend: the registry's nodes kept in etcd, shared by any number of replicas.

- ``keys``: where each thing is kept under the prefix, and how values are encoded;
- ``connection``: calls that fail over between etcd's members, within one timeout; its
  parts: ``members`` (TLS, one client per member, leaving a failed one), ``keepalives``
  (every lease keepalive on one stream), ``translate`` (etcd's errors to ours, one place);
- ``seat``: what replicas coordinate through etcd (renewal digests, the controller's
  seat, its published state, the replicas' leases);
- ``nodes``: ``EtcdStore``, the async store of node records and their watch; its parts:
  ``bindings`` (a deregistered node's name, kept for it), ``heartbeats`` (each node's
  lease), ``objects`` (what is kept besides the nodes);
- ``replica``: ``EtcdReplica``, one registry process's ``Store``: a cache fed by etcd's
  watch, heartbeats batched, the seat held or sought; sync, and awaited (``aio``).
  Its parts, one module each: ``cache`` (the node records, fed by the watch),
  ``renewals`` (heartbeats: digests, lease keepalives), ``coordinator`` (its lease, the
  seat, compaction), ``shared`` (published state, objects), ``view`` (whether its view is
  current), ``loop`` (the loop it runs on), ``awaited`` (its ``aio``).
"""

from node_registry.store.etcd.connection import (
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_LEASE_TTL,
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
)
from node_registry.store.etcd.keys import merge_latest
from node_registry.store.etcd.members import EtcdTLS
from node_registry.store.etcd.nodes import EtcdStore
from node_registry.store.etcd.replica import EtcdReplica

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "EtcdReplica",
    "EtcdStore",
    "EtcdTLS",
    "merge_latest",
]
