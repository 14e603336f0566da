"""Where nodes are kept: the store contract and its backends."""

from node_registry.store.base import (
    Binding,
    ChangeType,
    Coordination,
    SkippedRecords,
    Storage,
    Store,
    StoreEvent,
    Versioned,
)
from node_registry.store.factory import open_store, open_store_on_loop
from node_registry.store.memory import MemoryStore
from node_registry.store.records import HealthState, NodeRecord

__all__ = [
    "Binding",
    "ChangeType",
    "Coordination",
    "HealthState",
    "MemoryStore",
    "NodeRecord",
    "SkippedRecords",
    "Storage",
    "Store",
    "StoreEvent",
    "Versioned",
    "open_store",
    "open_store_on_loop",
]
