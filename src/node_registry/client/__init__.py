"""Clients of the registry service: sync and async, on one I/O-free core."""

from node_registry.client.aio import AsyncRegistryClient
from node_registry.client.sync import RegistryClient

__all__ = ["AsyncRegistryClient", "RegistryClient"]
