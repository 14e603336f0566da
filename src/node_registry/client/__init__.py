"""Clients of the registry service: sync and async on one I/O-free core, and informers."""

from node_registry.client.aio import AsyncRegistryClient
from node_registry.client.informer import AsyncInformer, Informer, NodeCache
from node_registry.client.objects import (
    EventType,
    HealthTracker,
    NodeList,
    RegistryEntry,
    Renewals,
    WatchEvent,
)
from node_registry.client.sync import RegistryClient

__all__ = [
    "AsyncInformer",
    "AsyncRegistryClient",
    "EventType",
    "HealthTracker",
    "Informer",
    "NodeCache",
    "NodeList",
    "RegistryClient",
    "RegistryEntry",
    "Renewals",
    "WatchEvent",
]
