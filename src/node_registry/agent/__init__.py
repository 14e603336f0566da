"""The node runtime: build a node's passport, keep it registered and alive, report status."""

from node_registry.agent.batching import SharedClient
from node_registry.agent.build import build_passport
from node_registry.agent.resources import detect_resources
from node_registry.agent.runtime import AgentClient, AgentEvent, AgentEventKind, NodeAgent

__all__ = [
    "AgentClient",
    "AgentEvent",
    "AgentEventKind",
    "NodeAgent",
    "SharedClient",
    "build_passport",
    "detect_resources",
]
