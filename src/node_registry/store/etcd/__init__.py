"""The etcd backend: the registry's nodes kept in etcd, shared by any number of replicas.

- ``keys``: where each thing is kept under the prefix, and how values are encoded;
- ``connection``: the members, failover between them, etcd's errors translated to ours;
- ``seat``: what replicas coordinate through etcd (renewal digests, the controller's
  seat, its published state, the replicas' leases);
- ``nodes``: ``EtcdStore``, the async store of node records, bindings and objects;
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
    EtcdTLS,
)
from node_registry.store.etcd.keys import merge_latest
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
