"""The node passport: models, versions and adapters, derived labels."""

from node_registry.passport.derived import effective_labels
from node_registry.passport.models import (
    API_VERSION,
    KIND,
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
    Taint,
    TaintEffect,
)
from node_registry.passport.versions import load_passport, served_versions

__all__ = [
    "API_VERSION",
    "KIND",
    "Capability",
    "Condition",
    "ConditionStatus",
    "Endpoint",
    "Metadata",
    "NodePassport",
    "NodeType",
    "Phase",
    "Spec",
    "Status",
    "Taint",
    "TaintEffect",
    "effective_labels",
    "load_passport",
    "served_versions",
]
