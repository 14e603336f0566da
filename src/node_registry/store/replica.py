"""``EtcdReplica``, where it was before the etcd backend became a package (``store.etcd``)."""

from node_registry.store.etcd.replica import EtcdReplica

__all__ = ["EtcdReplica"]
