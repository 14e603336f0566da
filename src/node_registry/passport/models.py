"""The NODE_PASSPORT v1 document (``apiVersion: ai_team.io/v1``) as pydantic models.

Every model keeps fields it does not know (``extra="allow"``): the registry stores the passport
as the node sent it (seed 2.4), so a node on a newer compatible revision loses nothing here.
Models are frozen because stored entries are shared between concurrent readers; a change is
a ``model_copy``.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from node_registry import labels as label_syntax
from node_registry.passport import limits
from node_registry.quantity import is_quantity

API_GROUP = "ai_team.io"
API_VERSION = f"{API_GROUP}/v1"
KIND = "NodePassport"
#: The API group ``ai_team.io`` has an underscore, which is not valid in a DNS subdomain, so
#: it cannot prefix a label or annotation key; keys the registry owns use this domain.
KEY_DOMAIN = "ai-team.io"

_CAPABILITY_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


class NodeType(StrEnum):
    """What kind of participant a node is (seed 1.1 and 2.4)."""

    AGENT = "agent"
    ORCHESTRATOR = "orchestrator"
    MONITORING = "monitoring"
    TOOL = "tool"
    STORAGE = "storage"
    GATEWAY = "gateway"
    EXTERNAL = "external"


_BUILTIN_TYPES = frozenset(NodeType)


def node_type_of(name: str) -> str:
    """``name`` as the registry hands it out: the ``NodeType`` member for a built-in type
    (so ``node_type is NodeType.AGENT`` holds, as before custom types), else the name."""
    return NodeType(name) if name in _BUILTIN_TYPES else name


class Phase(StrEnum):
    """The node's lifecycle phase (seed 2.3)."""

    PENDING = "Pending"
    RUNNING = "Running"
    NOT_READY = "NotReady"
    OFFLINE = "Offline"


class ConditionStatus(StrEnum):
    """Kubernetes condition status: Unknown means the registry has lost touch with the node."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


def _number_to_str(value: object) -> object:
    # YAML reads `cpu: 4` or `version: 1.0` as numbers; Kubernetes accepts numbers for
    # quantities too, so they become their decimal text. Booleans are not numbers here.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


# The JSON Schema (validation mode) must accept the numbers the validator accepts.
NumberOrStr = Annotated[str, BeforeValidator(_number_to_str, json_schema_input_type=str | float)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        populate_by_name=True,
        validate_default=False,
    )


def _check_label_map(value: dict[str, str], *, what: str) -> dict[str, str]:
    problems: list[str] = []
    for key, val in value.items():
        problems.extend(f"key {key!r}: {m}" for m in label_syntax.qualified_name_errors(key))
        if what == "labels":
            problems.extend(
                f"value {val!r} of {key!r}: {m}" for m in label_syntax.label_value_errors(val)
            )
    if problems:
        raise ValueError("; ".join(problems))
    return value


def check_resource_map(value: dict[str, str]) -> dict[str, str]:
    """Resource names are label keys and amounts non-negative quantities; ValueError if not."""
    problems: list[str] = []
    for key, quantity in value.items():
        problems.extend(f"key {key!r}: {m}" for m in label_syntax.qualified_name_errors(key))
        if not is_quantity(quantity) or quantity.startswith("-"):
            problems.append(
                f"{key}: {quantity!r} is not a non-negative Kubernetes quantity "
                "(such as 4, 500m, 8Gi, 1.5G)"
            )
    if problems:
        raise ValueError("; ".join(problems))
    return value


def check_label_map(value: dict[str, str]) -> dict[str, str]:
    """Label keys and values in Kubernetes syntax; ValueError naming each bad one if not."""
    return _check_label_map(value, what="labels")


class Capability(_Model):
    """One thing the node can do; it is selectable as the label ``capability.<name>=true``."""

    name: str = Field(description="The capability's name (letters, digits, '-', '_', '.')")
    version: NumberOrStr | None = Field(
        default=None, description="The version the node implements, e.g. 1.0"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Free-form parameters (languages, models, limits)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > limits.MAX_CAPABILITY_NAME:
            raise ValueError(f"must be no more than {limits.MAX_CAPABILITY_NAME} characters")
        if not _CAPABILITY_NAME_RE.fullmatch(value):
            raise ValueError(
                "must consist of alphanumeric characters, '-', '_' or '.', and start and end "
                "with an alphanumeric character (it becomes the label capability.<name>)"
            )
        return value


class Endpoint(_Model):
    """Where the node takes work: a MindBus queue, an HTTP URL, a gRPC address."""

    protocol: str = Field(
        min_length=1, max_length=63, description="How to reach the node: mindbus, http, grpc..."
    )
    address: str = Field(
        min_length=1, max_length=2048, description="Where: an AMQP URL, an HTTP URL, host:port"
    )
    queue: str | None = Field(
        default=None, max_length=255, description="The MindBus queue the node consumes, if any"
    )


class Metadata(_Model):
    """Identity: a stable UUID chosen by the node, a unique DNS-1123 name, kind, labels."""

    uid: UUID = Field(description="The node's stable identity, chosen by the node (a UUID)")
    name: str = Field(description="The node's unique name (a DNS-1123 subdomain)")
    # A name, not the enum: custom node types (``kind: NodeType``, docs/nodetypes.md) join
    # the built-in ones; the registry checks the name is a registered type on every write.
    node_type: str = Field(
        alias="nodeType",
        description="What kind of participant the node is: a built-in type (agent, "
        "orchestrator, tool...) or a registered NodeType (gpu-worker)",
        json_schema_extra={"pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=limits.MAX_LABELS,
        description="Labels to select the node by (label selectors match these, with the "
        "ones the registry derives from the passport)",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Non-identifying notes, not selectable"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        errors = label_syntax.dns1123_subdomain_errors(value)
        if errors:
            raise ValueError("; ".join(errors))
        return value

    @field_validator("node_type")
    @classmethod
    def _node_type(cls, value: str) -> str:
        if value in _BUILTIN_TYPES:
            return node_type_of(value)
        if errors := label_syntax.dns1123_label_errors(value):
            raise ValueError("a node type is a DNS-1123 label: " + "; ".join(errors))
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_label_map(value, what="labels")

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        size = sum(len(k) + len(v) for k, v in value.items())
        if size > limits.MAX_ANNOTATIONS_BYTES:
            raise ValueError(
                f"total size {size} is over the limit of {limits.MAX_ANNOTATIONS_BYTES} bytes"
            )
        return _check_label_map(value, what="annotations")


class TaintEffect(StrEnum):
    """What a taint does to tasks that do not tolerate it (Kubernetes' three effects)."""

    #: No new task is placed on the node; running ones stay.
    NO_SCHEDULE = "NoSchedule"
    #: The scheduler avoids the node when it can (a score, not a filter).
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    #: No new task is placed, and running ones are evicted (after their tolerationSeconds).
    NO_EXECUTE = "NoExecute"


class Taint(_Model):
    """A Kubernetes node taint: it repels every task that does not tolerate it.

    ``value`` may be omitted (Kubernetes reads it as ""); it is kept absent so the passport is
    stored as sent. ``timeAdded`` is when a NoExecute taint appeared: the orchestrator counts
    a toleration's ``tolerationSeconds`` from it.
    """

    key: str = Field(description="The taint's key (a label key)")
    value: str | None = Field(default=None, description="The taint's value (a label value)")
    effect: TaintEffect = Field(description="NoSchedule, PreferNoSchedule or NoExecute")
    time_added: datetime | None = Field(
        default=None,
        alias="timeAdded",
        description="When a NoExecute taint appeared (tolerationSeconds count from it)",
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if errors := label_syntax.qualified_name_errors(value):
            raise ValueError("; ".join(errors))
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: str | None) -> str | None:
        if value is not None and (errors := label_syntax.label_value_errors(value)):
            raise ValueError("; ".join(errors))
        return value

    def __str__(self) -> str:
        """Kubernetes' ``Taint.ToString``: ``key=value:effect``, ``key:effect`` with no value."""
        value = f"={self.value}" if self.value else ""
        return f"{self.key}{value}:{self.effect.value}"


class Spec(_Model):
    """What the node offers: capabilities, resources (Kubernetes quantities), endpoint."""

    capabilities: list[Capability] = Field(
        default_factory=list,
        max_length=limits.MAX_CAPABILITIES,
        description="What the node can do; each is selectable as capability.<name>=true",
    )
    resources: dict[str, NumberOrStr] = Field(
        default_factory=dict,
        max_length=limits.MAX_RESOURCES,
        description="What the node has, as Kubernetes quantities (cpu: 4, memory: 8Gi)",
    )
    endpoint: Endpoint | None = Field(default=None, description="Where the node takes work")
    max_concurrent_tasks: int | None = Field(
        default=None,
        alias="maxConcurrentTasks",
        ge=0,
        description="How many tasks the node runs at once at most",
    )
    # None rather than []: a passport sent without taints is stored and returned without them.
    taints: list[Taint] | None = Field(
        default=None,
        max_length=limits.MAX_TAINTS,
        description="Kubernetes node taints: they repel tasks that do not tolerate them",
    )

    @field_validator("capabilities")
    @classmethod
    def _unique_capabilities(cls, value: list[Capability]) -> list[Capability]:
        seen: set[str] = set()
        for cap in value:
            if cap.name in seen:
                raise ValueError(f"capability {cap.name!r} is listed more than once")
            seen.add(cap.name)
        return value

    @field_validator("taints")
    @classmethod
    def _unique_taints(cls, value: list[Taint] | None) -> list[Taint] | None:
        # As Kubernetes' validateNodeTaints: one taint per (key, effect), so a toleration's
        # tolerationSeconds never has two start times to choose from.
        seen: dict[tuple[str, TaintEffect], int] = {}
        for index, taint in enumerate(value or ()):
            pair = (taint.key, taint.effect)
            if pair in seen:
                raise ValueError(
                    f"taints[{index}] repeats taints[{seen[pair]}] ({taint.key}:"
                    f"{taint.effect.value}): taints must be unique by key and effect pair"
                )
            seen[pair] = index
        return value

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: dict[str, str]) -> dict[str, str]:
        return check_resource_map(value)


class Condition(_Model):
    """A Kubernetes-style condition; ``Ready`` is the one the registry itself maintains."""

    type: str = Field(min_length=1, max_length=316, description="The condition's type (Ready...)")
    status: ConditionStatus = Field(description="True, False or Unknown")
    reason: str | None = Field(
        default=None, max_length=1024, description="Why, in one CamelCase word"
    )
    message: str | None = Field(default=None, max_length=32768, description="Why, for people")
    last_heartbeat_time: datetime | None = Field(
        default=None, alias="lastHeartbeatTime", description="When the node last reported it"
    )
    last_transition_time: datetime | None = Field(
        default=None, alias="lastTransitionTime", description="When the status last changed"
    )


class Status(_Model):
    """Runtime status: written by the node (status updates) and by the lifecycle controller."""

    phase: Phase = Field(
        default=Phase.PENDING, description="The lifecycle phase: Pending, Running, NotReady..."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=limits.MAX_CONDITIONS,
        description="Kubernetes-style conditions, one per type (Ready is the registry's)",
    )
    current_tasks: int = Field(
        default=0, alias="currentTasks", ge=0, description="Tasks the node runs now"
    )

    @field_validator("conditions")
    @classmethod
    def _unique_types(cls, value: list[Condition]) -> list[Condition]:
        types = [c.type for c in value]
        dupes = sorted({t for t in types if types.count(t) > 1})
        if dupes:
            raise ValueError(f"condition types must be unique; repeated: {', '.join(dupes)}")
        return value

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class NodePassport(_Model):
    """NODE_PASSPORT v1: ``apiVersion``, ``kind``, ``metadata``, ``spec``, ``status``."""

    api_version: str = Field(
        default=API_VERSION,
        alias="apiVersion",
        description="The passport's version: ai_team.io/v1 (older ones are converted)",
    )
    kind: str = Field(default=KIND, description="NodePassport")
    metadata: Metadata = Field(description="Who the node is: uid, name, type, labels")
    spec: Spec = Field(
        default_factory=Spec, description="What the node offers: capabilities, resources"
    )
    status: Status = Field(
        default_factory=Status, description="How the node is: phase, conditions, tasks"
    )

    @model_validator(mode="after")
    def _labels_agree_with_derived(self) -> NodePassport:
        # A label that contradicts what the passport itself declares would make selectors
        # answer differently depending on which of the two they happened to read.
        from node_registry.passport.derived import derived_labels

        problems = [
            f"label {key!r}={self.metadata.labels[key]!r} contradicts {value!r} derived "
            f"from {source}"
            for key, (value, source) in derived_labels(self).items()
            if key in self.metadata.labels and self.metadata.labels[key] != value
        ]
        if problems:
            raise ValueError("metadata.labels: " + "; ".join(problems))
        return self

    @property
    def node_id(self) -> str:
        """The registry key: the canonical text of ``metadata.uid``."""
        return str(self.metadata.uid)

    def to_dict(self) -> dict[str, Any]:
        """The passport as a JSON-ready dict with the wire field names."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
