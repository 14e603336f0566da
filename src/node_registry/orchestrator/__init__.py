"""An example consumer of the registry: scheduling lives in the Orchestrator, not the registry."""

from node_registry.orchestrator import scheduler

__all__ = ["scheduler"]
