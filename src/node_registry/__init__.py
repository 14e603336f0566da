"""AI_TEAM Node Registry: node passports, heartbeats as leases, label selectors, watch.

The public surface is what ``__all__`` lists; everything else may change without notice.
"""

import importlib
from typing import TYPE_CHECKING, Any

from node_registry.clock import Clock, FakeClock, SystemClock
from node_registry.config import Settings, load_settings
from node_registry.errors import (
    BadRequestError,
    ConfigError,
    ConflictError,
    FieldError,
    NotFoundError,
    RegistryError,
    RevisionCompactedError,
    RevisionConflictError,
    SelectorError,
    StoreUnavailableError,
    TooLargeError,
    TooManyRequestsError,
    UnsupportedVersionError,
    ValidationError,
)
from node_registry.passport import (
    Capability,
    Condition,
    ConditionStatus,
    Endpoint,
    Metadata,
    NodePassport,
    NodeType,
    Phase,
    Spec,
    Status,
    effective_labels,
    load_passport,
)
from node_registry.selectors import Selector, parse_selector, selector_from_dict

if TYPE_CHECKING:
    from node_registry.registry import (
        AsyncRegistry,
        EventType,
        HealthState,
        NodeList,
        Registry,
        RegistryCondition,
        RegistryEntry,
        WatchEvent,
    )
    from node_registry.store import MemoryStore

__version__ = "0.1.0"

#: Loaded on first use: a program that only uses the client (``node_registry.client``) or the
#: node runtime never loads the embedded registry and its store.
_LAZY = {
    "AsyncRegistry": "node_registry.registry",
    "EventType": "node_registry.registry",
    "HealthState": "node_registry.registry",
    "NodeList": "node_registry.registry",
    "Registry": "node_registry.registry",
    "RegistryCondition": "node_registry.registry",
    "RegistryEntry": "node_registry.registry",
    "WatchEvent": "node_registry.registry",
    "MemoryStore": "node_registry.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncRegistry",
    "BadRequestError",
    "Capability",
    "Clock",
    "Condition",
    "ConditionStatus",
    "ConfigError",
    "ConflictError",
    "Endpoint",
    "EventType",
    "FakeClock",
    "FieldError",
    "HealthState",
    "MemoryStore",
    "Metadata",
    "NodeList",
    "NodePassport",
    "NodeType",
    "NotFoundError",
    "Phase",
    "Registry",
    "RegistryCondition",
    "RegistryEntry",
    "RegistryError",
    "RevisionCompactedError",
    "RevisionConflictError",
    "Selector",
    "SelectorError",
    "Settings",
    "Spec",
    "Status",
    "StoreUnavailableError",
    "SystemClock",
    "TooLargeError",
    "TooManyRequestsError",
    "UnsupportedVersionError",
    "ValidationError",
    "WatchEvent",
    "__version__",
    "effective_labels",
    "load_passport",
    "load_settings",
    "parse_selector",
    "selector_from_dict",
]
