"""What a passport write must pass besides its own validation: its node type, the CEL
admission policies, and the registry-owned parts a node may not write.

- ``NodeTypeCatalog`` is the set of node types the registry serves: the built-in ones, those
  of the ``node_types.path`` file, and those registered through the API, which are kept in
  the store (``put_object``) so they outlive the process. Other replicas on the same etcd
  learn of a type registered elsewhere when a passport names a type they do not know (one
  read of the store, then the type is known) and at every listing; a deleted type is
  forgotten by each replica at its next listing or restart.
- ``admit`` runs the admission policies on one write, with the stored passport as
  ``oldObject``: inside the write's compare-and-swap, so the policy judges what is replaced.
- Verification results are the verifier's: ``merge_results`` folds new ones into a record's,
  ``kept_results`` keeps those of the capabilities a passport still claims.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_registry.admission import Admission, AdmissionRequest
from node_registry.admission.policy import Operation
from node_registry.errors import (
    ConflictError,
    FieldError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from node_registry.passport import NodePassport
from node_registry.passport.types import (
    BUILTIN_TYPES,
    NodeTypeDefinition,
    NodeTypes,
    load_node_type,
    read_node_types,
)
from node_registry.passport.verification import LABEL_PREFIX, TRUSTED, CapabilityVerification
from node_registry.registry import steps
from node_registry.registry.steps import Steps
from node_registry.store import Store

log = logging.getLogger("node_registry")

#: The store's kind for registered node types (``{prefix}/objects/nodetypes/<name>`` on etcd).
NODE_TYPES = "nodetypes"


@dataclass(frozen=True, slots=True)
class UserInfo:
    """Who makes a write, as admission policies see it (``request.userInfo``)."""

    username: str | None = None
    role: str | None = None


class NodeTypeCatalog:
    """The node types one registry serves (see the module docstring); thread-safe."""

    def __init__(self, store: Store, *, path: Path | None = None) -> None:
        self._store = store
        self._lock = threading.Lock()
        # The built-ins and the file's: not stored, never deleted through the API.
        base = NodeTypes(BUILTIN_TYPES)
        configured = read_node_types(path) if path is not None else []
        self._configured = frozenset(d.name for d in configured)
        base = base.with_types(configured, replace=True)
        self._base = base
        self._types = base
        self.refresh()

    def __repr__(self) -> str:
        return f"NodeTypeCatalog({sorted(self._types)!r})"

    @property
    def types(self) -> NodeTypes:
        return self._types

    def source(self, name: str) -> str:
        """Where the type comes from: built-in, configured (the file) or registered."""
        if name in self._configured:
            return "configured"
        return "built-in" if name in self._base else "registered"

    def refresh(self) -> NodeTypes:
        """Read the registered types from the store again; an unreadable one is skipped."""
        return steps.run(self.refreshing(), self._store)

    def refreshing(self) -> Steps[NodeTypes]:
        """``refresh``, as steps (``registry.steps``)."""
        stored = []
        found = yield from steps.objects(NODE_TYPES)
        for name, doc in sorted(found.items()):
            try:
                stored.append(load_node_type(doc))
            except ValidationError as error:
                log.warning("the stored node type %r cannot be read (%s); skipped", name, error)
        types = self._base.with_types(
            [d for d in stored if d.name not in self._base], replace=False
        )
        with self._lock:
            self._types = types
        return types

    def definition(self, name: str) -> NodeTypeDefinition | None:
        """The type called ``name``; the store is asked once before saying there is none."""
        found = self._types.get(name)
        if found is None:
            found = self.refresh().get(name)
        return found

    def validate(self, passport: NodePassport) -> None:
        """Raise ``ValidationError`` (422, every field path) unless ``passport`` fits its type."""
        steps.run(self.validating(passport), self._store)

    def validating(self, passport: NodePassport) -> Steps[None]:
        """``validate``, as steps: a type not known here is looked up in the store first."""
        definition = self._types.get(passport.metadata.node_type)
        if definition is None:
            definition = (yield from self.refreshing()).get(passport.metadata.node_type)
        if definition is None:
            self._types.validate(passport)  # raises: names the registered types
            return
        spec = definition.spec
        if spec.type_schema is None and not spec.capabilities and spec.allow_unknown_capabilities:
            return  # a built-in type: nothing to check, and no document to build
        if problems := definition.errors(passport.to_dict()):
            raise ValidationError("the passport does not match its node type", problems)

    def creating(self, doc: Mapping[str, Any]) -> Steps[NodeTypeDefinition]:
        """Register a new type (``ConflictError`` if the name is taken); kept in the store."""
        definition = load_node_type(dict(doc))
        name = definition.name
        if name in self._base:
            raise ConflictError(
                f'nodetypes.ai_team.io "{name}" already exists (a built-in or configured type)'
            )
        if name in (yield from self.refreshing()):
            raise ConflictError(f'nodetypes.ai_team.io "{name}" already exists')
        dumped = definition.model_dump(mode="json", by_alias=True)
        yield from steps.put_object(NODE_TYPES, name, dumped)
        with self._lock:
            self._types = self._types.with_types([definition], replace=True)
        return definition

    def updating(self, name: str, patch: Mapping[str, Any]) -> Steps[NodeTypeDefinition]:
        """Apply a JSON merge patch (RFC 7386) to a registered type. Nodes already of it are
        not checked again (as a CRD's objects are not when its schema changes): their next
        write is."""
        if name in self._base:
            raise ForbiddenError(f"node type {name!r} is built in or configured: it is not changed")
        current = (yield from self.refreshing()).get(name)
        if current is None:
            raise NotFoundError(f'nodetypes.ai_team.io "{name}" not found')
        doc = merge_patch(current.model_dump(mode="json", by_alias=True, exclude_none=True), patch)
        definition = load_node_type(doc)
        if definition.name != name:
            raise ValidationError(
                "invalid NodeType", [FieldError("metadata.name", f"may not change from {name!r}")]
            )
        dumped = definition.model_dump(mode="json", by_alias=True)
        yield from steps.put_object(NODE_TYPES, name, dumped)
        with self._lock:
            self._types = self._types.with_types([definition], replace=True)
        return definition

    def deleting(self, name: str, *, in_use: int) -> Steps[NodeTypeDefinition]:
        """Forget a registered type; refused while ``in_use`` nodes are of it."""
        if name in self._base:
            raise ForbiddenError(f"node type {name!r} is built in or configured: it is not deleted")
        definition = (yield from self.refreshing()).get(name)
        if definition is None:
            raise NotFoundError(f'nodetypes.ai_team.io "{name}" not found')
        if in_use:
            raise ConflictError(
                f"node type {name!r} is the type of {in_use} registered node"
                f"{'s' if in_use > 1 else ''}: delete or re-register them first"
            )
        yield from steps.delete_object(NODE_TYPES, name)
        with self._lock:
            self._types = NodeTypes(d for d in self._types.values() if d.name != name)
        return definition


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, ``null`` removes, anything else
    (lists included) replaces."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def load_admission(path: Path | None) -> Admission:
    """The policies of ``admission.policies_path`` (none: an empty set that admits all)."""
    return Admission() if path is None else Admission.from_path(path)


def admit(
    admission: Admission,
    operation: Operation,
    new: NodePassport | None,
    old: NodePassport | None,
    user: UserInfo | None,
) -> None:
    """Raise the policies' refusal (422, 403, ...) of this write, if any."""
    if not admission.policies:
        return
    user = user or UserInfo()
    admission.admit(
        AdmissionRequest(
            operation=operation,
            object=None if new is None else new.to_dict(),
            old_object=None if old is None else old.to_dict(),
            username=user.username,
            role=user.role,
        )
    )


def refuse_registry_owned(passport: NodePassport, loc: str = "") -> None:
    """A node may not vouch for itself: verification labels and the Trusted condition are
    the registry's (written by the verifier through the verification subresource)."""
    problems = [
        FieldError(
            f"{loc}metadata.labels",
            f"label {key!r}: labels under {LABEL_PREFIX!r} are set by the registry from "
            "the verifier's results, not by nodes",
        )
        for key in passport.metadata.labels
        if key.startswith(LABEL_PREFIX)
    ]
    if passport.status.condition(TRUSTED) is not None:
        problems.append(
            FieldError(
                f"{loc}status.conditions",
                f"the {TRUSTED} condition is the registry's, from the verifier's results",
            )
        )
    if problems:
        raise ValidationError("invalid passport", problems)


def kept_results(
    passport: NodePassport, results: Mapping[str, CapabilityVerification]
) -> dict[str, CapabilityVerification]:
    """The results of the capabilities ``passport`` still claims, for its uid.

    A result whose claim changed (version, params) is kept: it is stale, and the labels
    read it as Unverified until the verifier probes the claim again.
    """
    if not results:
        return {}
    claimed = {cap.name for cap in passport.spec.capabilities}
    node_id = passport.node_id
    return {
        name: result
        for name, result in results.items()
        if name in claimed and result.node_uid == node_id
    }


def merge_results(
    passport: NodePassport,
    stored: Mapping[str, CapabilityVerification],
    new: Iterable[CapabilityVerification],
) -> dict[str, CapabilityVerification]:
    """``stored`` with ``new`` laid over it by capability; ``ValidationError`` naming each
    result that is not about this node or about a capability it does not claim."""
    claimed = {cap.name for cap in passport.spec.capabilities}
    merged = dict(kept_results(passport, stored))
    problems: list[FieldError] = []
    for index, result in enumerate(new):
        loc = f"results[{index}]"
        if result.node_uid != passport.node_id:
            problems.append(
                FieldError(
                    f"{loc}.nodeUid",
                    f"{result.node_uid} is not the uid of node {passport.metadata.name!r} "
                    f"({passport.node_id})",
                )
            )
        elif result.capability not in claimed:
            problems.append(
                FieldError(
                    f"{loc}.capability",
                    f"node {passport.metadata.name!r} does not claim {result.capability!r} "
                    f"(it claims: {', '.join(sorted(claimed)) or 'nothing'})",
                )
            )
        else:
            merged[result.capability] = result
    if problems:
        raise ValidationError("invalid verification", problems)
    return merged


__all__ = [
    "NODE_TYPES",
    "TRUSTED",
    "NodeTypeCatalog",
    "UserInfo",
    "admit",
    "kept_results",
    "load_admission",
    "merge_results",
    "refuse_registry_owned",
]
