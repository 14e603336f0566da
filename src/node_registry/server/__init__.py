"""The registry as an HTTP service (FastAPI): routes, auth, limits, watch streams, metrics."""

from node_registry.server.app import create_app
from node_registry.server.auth import Authenticator, Principal, Role
from node_registry.server.metrics import Metrics

__all__ = ["Authenticator", "Metrics", "Principal", "Role", "create_app"]
