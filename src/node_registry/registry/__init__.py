"""The registry: its sync and async drivers, the procedures and decisions they share,
entries, health rules, the lifecycle controller and watch."""

from node_registry.registry.aio import AsyncRegistry
from node_registry.registry.entry import (
    EventType,
    NodeList,
    RegistryCondition,
    RegistryEntry,
    WatchEvent,
)
from node_registry.registry.health import HealthPolicy
from node_registry.registry.policies import UserInfo
from node_registry.registry.registry import Registry, is_schedulable
from node_registry.registry.watch import AsyncWatch, Watch
from node_registry.store import HealthState

__all__ = [
    "AsyncRegistry",
    "AsyncWatch",
    "EventType",
    "HealthPolicy",
    "HealthState",
    "NodeList",
    "Registry",
    "RegistryCondition",
    "RegistryEntry",
    "UserInfo",
    "Watch",
    "WatchEvent",
    "is_schedulable",
]
