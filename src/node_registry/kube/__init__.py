"""The registry's Kubernetes API: group ``ai_team.io/v1``'s wire shapes, for server and client.

Pure (no I/O): the objects (``objects``), meta.k8s.io shapes (``meta``), discovery documents
(``discovery``), server-side printing (``table``), field selectors (``fields``), the OpenAPI
documents (``openapi``), patches and unknown fields (``patch``) and server-side apply
(``apply``) that make kubectl and the official clients work against the registry.
"""

from node_registry.kube.discovery import GROUP_VERSION, RESOURCES
from node_registry.kube.fields import FieldSelector, parse_field_selector
from node_registry.kube.objects import (
    Lease,
    NodePassportList,
    NodePassportObject,
    entry_to_object,
    list_to_object,
    object_to_entry,
)
from node_registry.kube.table import IncludeObject, nodes_table

__all__ = [
    "GROUP_VERSION",
    "RESOURCES",
    "FieldSelector",
    "IncludeObject",
    "Lease",
    "NodePassportList",
    "NodePassportObject",
    "entry_to_object",
    "list_to_object",
    "nodes_table",
    "object_to_entry",
    "parse_field_selector",
]
