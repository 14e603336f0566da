"""Node types as registered objects (seed 3.5, a CRD-like model): ``kind: NodeType``.

A node type says what a passport of that type may hold, as a Kubernetes
CustomResourceDefinition does for its objects::

    apiVersion: ai_team.io/v1
    kind: NodeType
    metadata: {name: gpu-worker}
    spec:
      description: A GPU box that runs inference
      schema:
        openAPIV3Schema:                    # applies to the passport's spec
          type: object
          required: [resources]
          properties: {resources: {type: object, required: [gpu]}}
      capabilities:
        gpu_inference:
          versions: ["1.0", "1.1"]
          paramsSchema:
            type: object
            properties: {models: {type: array, items: {type: string}}}
      allowUnknownCapabilities: false

Schemas are JSON Schema draft 2020-12 restricted to the keywords whose meaning a
Kubernetes structural schema shares (``SUPPORTED_KEYWORDS``): no references, no
conditionals, no pattern properties, so a type is self-contained and cheap to check. A
schema using anything else is refused when the type is loaded, naming the keyword and
where it stands. Unknown fields are kept, never pruned: passports are stored as sent.

The seven built-in types (``BUILTIN_TYPES``) accept any spec and any capability, so every
passport valid today stays valid. ``NodeTypes`` is the set a registry serves; its
``validate`` checks a v1 passport document against its type. The passport model's
``nodeType`` is still a closed enum; the registry's wiring opens it to ``NodeTypes`` names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from node_registry import labels as label_syntax
from node_registry.errors import ConfigError, ConflictError, FieldError, ValidationError
from node_registry.passport.models import NodePassport, NodeType
from node_registry.passport.versions import translate_pydantic_error

NODE_TYPE_KIND = "NodeType"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: Draft 2020-12 keywords with the meaning Kubernetes' structural schemas give them.
SUPPORTED_KEYWORDS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "default",
        "examples",
        "enum",
        "const",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxProperties",
        "minProperties",
        "required",
        "items",
        "properties",
        "additionalProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
    }
)

#: Why the common unsupported keywords are refused; others get the generic message.
_REFUSED_BECAUSE = {
    "$ref": "references are not supported: a node type's schema is self-contained, as a CRD's",
    "$defs": "definitions are not supported: a node type's schema is self-contained",
    "definitions": "definitions are not supported: a node type's schema is self-contained",
    "nullable": "OpenAPI's nullable is not draft 2020-12: write type: [<type>, 'null']",
    "patternProperties": "not supported (as in Kubernetes structural schemas)",
    "if": "conditionals are not supported: use oneOf/anyOf",
    "then": "conditionals are not supported: use oneOf/anyOf",
    "else": "conditionals are not supported: use oneOf/anyOf",
}
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def json_path(parts: Iterable[int | str], prefix: str = "") -> str:
    """``('languages', 1)`` as ``languages[1]``, after ``prefix`` (a dotted path) if any."""
    text = prefix
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _schema_problems(schema: object, loc: str) -> Iterator[FieldError]:
    """Keywords outside ``SUPPORTED_KEYWORDS``, anywhere in ``schema``; shapes are left to
    the meta-schema check."""
    if not isinstance(schema, Mapping):
        return
    for key, value in schema.items():
        where = f"{loc}.{key}"
        if key == "$schema" and loc.endswith("Schema"):
            if value != SCHEMA_DIALECT:
                yield FieldError(where, f"only {SCHEMA_DIALECT} is supported, not {value!r}")
            continue
        if key not in SUPPORTED_KEYWORDS:
            because = _REFUSED_BECAUSE.get(key) or (
                f"not supported (supported: {', '.join(sorted(SUPPORTED_KEYWORDS))})"
            )
            yield FieldError(where, f"keyword {key!r}: {because}")
            continue
        if key == "properties" and isinstance(value, Mapping):
            for name, sub in value.items():
                yield from _schema_problems(sub, f"{where}.{name}")
        elif key in {"additionalProperties", "not"}:
            yield from _schema_problems(value, where)
        elif key == "items":
            if isinstance(value, list):
                yield FieldError(where, "must be one schema (the tuple form is not supported)")
            else:
                yield from _schema_problems(value, where)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                yield from _schema_problems(sub, f"{where}[{index}]")


def compile_schema(schema: Mapping[str, Any], loc: str) -> jsonschema.protocols.Validator:
    """A validator for ``schema``; ``ValidationError`` at ``loc`` if it is not one we serve."""
    problems = list(_schema_problems(schema, loc))
    if not problems:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            problems.append(FieldError(json_path(exc.absolute_path, loc), exc.message))
    if problems:
        raise ValidationError("invalid schema", problems)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _schema_errors(
    validator: jsonschema.protocols.Validator, instance: Any, loc: str
) -> list[FieldError]:
    return [
        FieldError(json_path(error.absolute_path, loc), error.message)
        for error in validator.iter_errors(instance)
    ]


class _Model(BaseModel):
    # Definitions are configuration: a misspelt key silently ignored would loosen a type.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CapabilityDefinition(_Model):
    """What a capability of this type may declare: its versions and a schema for its params."""

    params_schema: dict[str, Any] | None = Field(
        default=None,
        alias="paramsSchema",
        description="A JSON Schema (draft 2020-12) the capability's params must satisfy",
    )
    versions: list[str] | None = Field(
        default=None, min_length=1, description="The versions a passport may claim"
    )


class TypeSchema(_Model):
    """The schema of the passport's ``spec`` (CRD: ``versions[].schema.openAPIV3Schema``)."""

    open_api_v3_schema: dict[str, Any] = Field(
        alias="openAPIV3Schema",
        description="A JSON Schema (draft 2020-12, structural keywords) for the passport's spec",
    )


class NodeTypeSpec(_Model):
    """What a passport of the type may hold (as a CRD's versions[].schema)."""

    description: str = Field(default="", description="What nodes of this type are, for people")
    # "schema" shadows a BaseModel attribute, hence the alias.
    type_schema: TypeSchema | None = Field(
        default=None, alias="schema", description="The schema of the passport's spec"
    )
    capabilities: dict[str, CapabilityDefinition] = Field(
        default_factory=dict,
        description="The capabilities the type defines: their versions and params schema",
    )
    allow_unknown_capabilities: bool = Field(
        default=True,
        alias="allowUnknownCapabilities",
        description="Whether a passport may claim capabilities the type does not define",
    )


class NodeTypeMetadata(_Model):
    name: str = Field(description="The type's name: the value of a passport's metadata.nodeType")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if errors := label_syntax.dns1123_label_errors(value):
            raise ValueError("; ".join(errors))
        return value


class NodeTypeDefinition(_Model):
    """One ``kind: NodeType`` object, its schemas compiled once when it is loaded."""

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["NodeType"] = "NodeType"
    metadata: NodeTypeMetadata = Field(description="The type's name (a DNS-1123 label)")
    spec: NodeTypeSpec = Field(
        default_factory=NodeTypeSpec,
        description="What a passport of this type may hold: schemas, capabilities",
    )

    _spec_validator: jsonschema.protocols.Validator | None = PrivateAttr(default=None)
    _params_validators: dict[str, jsonschema.protocols.Validator] = PrivateAttr(
        default_factory=dict
    )

    def model_post_init(self, context: Any, /) -> None:
        problems: list[FieldError] = []
        if self.spec.type_schema is not None:
            try:
                self._spec_validator = compile_schema(
                    self.spec.type_schema.open_api_v3_schema, "spec.schema.openAPIV3Schema"
                )
            except ValidationError as exc:
                problems.extend(exc.errors)
        for name, cap in self.spec.capabilities.items():
            if cap.params_schema is None:
                continue
            try:
                self._params_validators[name] = compile_schema(
                    cap.params_schema, f"spec.capabilities.{name}.paramsSchema"
                )
            except ValidationError as exc:
                problems.extend(exc.errors)
        if problems:
            raise _SchemaRefused(problems)

    @property
    def name(self) -> str:
        return self.metadata.name

    def errors(self, doc: Mapping[str, Any]) -> list[FieldError]:
        """What is wrong with the v1 passport document ``doc`` for this type (empty: valid)."""
        spec = doc.get("spec") or {}
        found: list[FieldError] = []
        if self._spec_validator is not None:
            found.extend(_schema_errors(self._spec_validator, spec, "spec"))
        capabilities = spec.get("capabilities") if isinstance(spec, Mapping) else None
        if not isinstance(capabilities, list):
            return found
        for index, cap in enumerate(capabilities):
            if isinstance(cap, Mapping):
                found.extend(self._capability_errors(cap, f"spec.capabilities[{index}]"))
        return found

    def _capability_errors(self, cap: Mapping[str, Any], loc: str) -> list[FieldError]:
        name = cap.get("name")
        definition = self.spec.capabilities.get(name) if isinstance(name, str) else None
        if definition is None:
            if self.spec.allow_unknown_capabilities:
                return []
            defined = ", ".join(sorted(self.spec.capabilities)) or "none"
            return [
                FieldError(
                    f"{loc}.name",
                    f"capability {name!r} is not defined by node type {self.name!r} "
                    f"(it defines: {defined})",
                )
            ]
        found: list[FieldError] = []
        version = cap.get("version")
        if (
            definition.versions is not None
            and (str(version) if version is not None else None) not in definition.versions
        ):
            found.append(
                FieldError(
                    f"{loc}.version",
                    f"{version!r} is not a version of {name!r} in node type {self.name!r} "
                    f"(one of: {', '.join(definition.versions)})",
                )
            )
        validator = self._params_validators.get(str(name))
        if validator is not None:
            found.extend(_schema_errors(validator, cap.get("params") or {}, f"{loc}.params"))
        return found


class _SchemaRefused(Exception):
    # Not a ValueError: pydantic would fold that into one error with no field path.

    def __init__(self, problems: list[FieldError]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def load_node_type(doc: Mapping[str, Any] | NodeTypeDefinition) -> NodeTypeDefinition:
    """Untrusted input as a ``NodeTypeDefinition``; ``ValidationError`` naming each bad field."""
    if isinstance(doc, NodeTypeDefinition):
        return doc
    if not isinstance(doc, Mapping):
        raise ValidationError(
            "a node type must be a mapping", [FieldError("", f"got {type(doc).__name__}")]
        )
    try:
        return NodeTypeDefinition.model_validate(doc)
    except _SchemaRefused as exc:
        raise ValidationError("invalid NodeType", exc.problems) from None
    except pydantic.ValidationError as exc:
        raise ValidationError("invalid NodeType", translate_pydantic_error(exc)) from None


#: Today's seven kinds of node: any spec, any capability, so every valid passport stays valid.
BUILTIN_TYPES: tuple[NodeTypeDefinition, ...] = tuple(
    NodeTypeDefinition(
        metadata=NodeTypeMetadata(name=kind.value),
        spec=NodeTypeSpec(description=f"built-in node type {kind.value!r} (seed 1.1)"),
    )
    for kind in NodeType
)


class NodeTypes(Mapping[str, NodeTypeDefinition]):
    """The node types a registry serves, by name: the built-ins plus registered ones."""

    def __init__(self, definitions: Iterable[NodeTypeDefinition] = BUILTIN_TYPES) -> None:
        self._types: dict[str, NodeTypeDefinition] = {}
        for definition in definitions:
            if definition.name in self._types:
                raise ConflictError(f"node type {definition.name!r} is defined twice")
            self._types[definition.name] = definition

    def __getitem__(self, name: str) -> NodeTypeDefinition:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def __repr__(self) -> str:
        return f"NodeTypes({sorted(self._types)!r})"

    def with_types(
        self, definitions: Iterable[NodeTypeDefinition], *, replace: bool = False
    ) -> NodeTypes:
        """A new set with ``definitions`` added; an existing name is a ``ConflictError``
        unless ``replace`` (an operator tightening a built-in type)."""
        merged = dict(self._types)
        for definition in definitions:
            if definition.name in merged and not replace:
                raise ConflictError(f"node type {definition.name!r} already exists")
            merged[definition.name] = definition
        return NodeTypes(merged.values())

    def errors(self, doc: Mapping[str, Any] | NodePassport) -> list[FieldError]:
        """What is wrong with a v1 passport document for its ``metadata.nodeType``."""
        if isinstance(doc, NodePassport):
            doc = doc.to_dict()
        metadata = doc.get("metadata")
        node_type = metadata.get("nodeType") if isinstance(metadata, Mapping) else None
        definition = self._types.get(node_type) if isinstance(node_type, str) else None
        if definition is None:
            return [
                FieldError(
                    "metadata.nodeType",
                    f"{node_type!r} is not a registered node type "
                    f"(registered: {', '.join(sorted(self._types))})",
                )
            ]
        return definition.errors(doc)

    def validate(self, doc: Mapping[str, Any] | NodePassport) -> None:
        """Raise ``ValidationError`` (422) with every field path that breaks the node type."""
        if problems := self.errors(doc):
            raise ValidationError("the passport does not match its node type", problems)


def read_node_types(path: str | Path) -> list[NodeTypeDefinition]:
    """Every ``NodeType`` in a YAML file (``---`` between them); ``ConfigError`` names the
    file, the document and the field otherwise."""
    path = Path(path)
    try:
        docs: Sequence[Any] = [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read node types: {exc}") from None
    definitions = []
    for index, doc in enumerate(docs):
        try:
            definitions.append(load_node_type(doc))
        except ValidationError as exc:
            raise ConfigError(f"{path}: document {index}: {exc}") from None
    return definitions
