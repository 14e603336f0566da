"""Validating admission policies for passports, in the shape of Kubernetes'
ValidatingAdmissionPolicy, and their evaluation against one request.

A policy, read from YAML::

    apiVersion: ai_team.io/v1
    kind: ValidatingAdmissionPolicy
    metadata: {name: only-agents-generate-code}
    spec:
      failurePolicy: Fail                 # an expression that errors refuses (Ignore: skipped)
      matchConstraints: {operations: [CREATE, UPDATE]}
      matchConditions:                    # all true, or the policy does not apply
        - name: claims-code
          expression: object.spec.capabilities.exists(c, c.name == "code_generation")
      variables:                          # variables.<name> in later expressions
        - {name: kind, expression: object.metadata.nodeType}
      validations:
        - expression: variables.kind == "agent"
          messageExpression: '"node type " + variables.kind + " may not claim code_generation"'
          reason: Forbidden               # Invalid (422, the default), Forbidden (403), ...
          fieldPath: spec.capabilities

Expressions see ``object`` (the passport as a JSON dict), ``oldObject`` (the stored one, or
null), ``request`` (``operation``, ``name``, ``userInfo.username``, ``userInfo.role``) and
``variables``. As in Kubernetes, matchConditions run before variables and validations, a
``false`` validation is a violation with its message (``messageExpression`` first, then
``message``, then ``failed expression: <expression>``), and ``failurePolicy: Fail`` makes an
evaluation error a violation too: fail closed. A variable is evaluated once; an error in one
matters only to the expressions that use it. There are no bindings, params or audit
annotations: every loaded policy applies to every passport write it matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from node_registry import labels as label_syntax
from node_registry.admission.expressions import (
    DEFAULT_LIMITS,
    Activation,
    Expression,
    ExpressionError,
    Limits,
    compile_expression,
    context,
)
from node_registry.errors import (
    ConfigError,
    FieldError,
    ForbiddenError,
    RegistryError,
    TooLargeError,
    UnauthorizedError,
    ValidationError,
)
from node_registry.passport.versions import translate_pydantic_error

POLICY_API_VERSION = "ai_team.io/v1"
POLICY_KIND = "ValidatingAdmissionPolicy"
Operation = Literal["CREATE", "UPDATE", "DELETE"]
Reason = Literal["Invalid", "Forbidden", "Unauthorized", "RequestEntityTooLarge"]

_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MatchCondition(_Model):
    name: str = Field(min_length=1, max_length=63)
    expression: str = Field(min_length=1)


class Variable(_Model):
    name: str
    expression: str = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER_RE.fullmatch(value):
            raise ValueError("must be a CEL identifier (letters, digits, '_'; not first a digit)")
        return value


class Validation(_Model):
    expression: str = Field(min_length=1)
    message: str | None = None
    message_expression: str | None = Field(default=None, alias="messageExpression")
    reason: Reason = "Invalid"
    #: Where the violation points, a dotted path such as ``spec.capabilities``.
    field_path: str | None = Field(default=None, alias="fieldPath")

    @field_validator("message")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and "\n" in value.strip():
            raise ValueError("must be one line, as Kubernetes requires")
        return value

    @field_validator("field_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return value.removeprefix(".") if value else value


class MatchConstraints(_Model):
    operations: list[Operation | Literal["*"]] = Field(
        default_factory=lambda: ["CREATE", "UPDATE"],  # type: ignore[arg-type]
        min_length=1,
    )


class PolicySpec(_Model):
    failure_policy: Literal["Fail", "Ignore"] = Field(default="Fail", alias="failurePolicy")
    match_constraints: MatchConstraints = Field(
        default_factory=MatchConstraints, alias="matchConstraints"
    )
    match_conditions: list[MatchCondition] = Field(
        default_factory=list, alias="matchConditions", max_length=64
    )
    variables: list[Variable] = Field(default_factory=list, max_length=64)
    validations: list[Validation] = Field(min_length=1, max_length=64)

    @field_validator("variables")
    @classmethod
    def _unique(cls, value: list[Variable]) -> list[Variable]:
        names = [v.name for v in value]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"variable names must be unique; repeated: {', '.join(repeated)}")
        return value


class PolicyMetadata(_Model):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if errors := label_syntax.dns1123_subdomain_errors(value):
            raise ValueError("; ".join(errors))
        return value


class AdmissionPolicy(_Model):
    """One ``kind: ValidatingAdmissionPolicy`` document, before its expressions are compiled."""

    api_version: Literal["ai_team.io/v1"] = Field(alias="apiVersion")
    kind: Literal["ValidatingAdmissionPolicy"]
    metadata: PolicyMetadata
    spec: PolicySpec


@dataclass(frozen=True, slots=True)
class _CompiledValidation:
    validation: Validation
    expression: Expression
    message: Expression | None


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy with every expression compiled: nothing is parsed per request."""

    policy: AdmissionPolicy
    match_conditions: tuple[tuple[str, Expression], ...]
    variables: tuple[tuple[str, Expression], ...]
    validations: tuple[_CompiledValidation, ...]

    @property
    def name(self) -> str:
        return self.policy.metadata.name


def compile_policy(doc: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> CompiledPolicy:
    """A policy document compiled; ``ConfigError`` naming the policy, the field and, for an
    expression, the CEL error with its position."""
    raw_name = doc.get("metadata", {}).get("name") if isinstance(doc, Mapping) else None
    label = f"admission policy {raw_name!r}" if isinstance(raw_name, str) else "admission policy"
    try:
        policy = AdmissionPolicy.model_validate(doc)
    except pydantic.ValidationError as exc:
        problems = "; ".join(map(str, translate_pydantic_error(exc)))
        raise ConfigError(f"{label}: {problems}") from None

    def build(source: str, where: str) -> Expression:
        try:
            return compile_expression(source, limits)
        except ExpressionError as exc:
            raise ConfigError(f"{label}: {where}: {exc}\n  expression: {source}") from None

    spec = policy.spec
    return CompiledPolicy(
        policy=policy,
        match_conditions=tuple(
            (c.name, build(c.expression, f"spec.matchConditions[{i}].expression"))
            for i, c in enumerate(spec.match_conditions)
        ),
        variables=tuple(
            (v.name, build(v.expression, f"spec.variables[{i}].expression"))
            for i, v in enumerate(spec.variables)
        ),
        validations=tuple(
            _CompiledValidation(
                v,
                build(v.expression, f"spec.validations[{i}].expression"),
                None
                if v.message_expression is None
                else build(v.message_expression, f"spec.validations[{i}].messageExpression"),
            )
            for i, v in enumerate(spec.validations)
        ),
    )


def read_policies(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> list[CompiledPolicy]:
    """Every policy in a YAML file (``---`` between them) or in the ``*.yaml`` files of a
    directory, compiled; ``ConfigError`` names the file and the policy otherwise."""
    path = Path(path)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    policies: list[CompiledPolicy] = []
    for file in files:
        try:
            docs = [d for d in yaml.safe_load_all(file.read_text("utf-8")) if d is not None]
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{file}: cannot read admission policies: {exc}") from None
        for doc in docs:
            try:
                policies.append(compile_policy(doc, limits))
            except ConfigError as exc:
                raise ConfigError(f"{file}: {exc}") from None
    names = [p.name for p in policies]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{path}: admission policy names repeated: {', '.join(repeated)}")
    return policies


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """One write of a passport, as admission sees it."""

    operation: Operation
    #: The passport as a JSON dict (None on DELETE); ``old_object`` the stored one, if any.
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None = None
    username: str | None = None
    role: str | None = None

    def activation(self) -> dict[str, Any]:
        named = self.object or self.old_object or {}
        metadata = named.get("metadata")
        return {
            "object": self.object,
            "oldObject": self.old_object,
            "request": {
                "operation": self.operation,
                "name": metadata.get("name") if isinstance(metadata, Mapping) else None,
                "userInfo": {"username": self.username, "role": self.role},
            },
        }


@dataclass(frozen=True, slots=True)
class Violation:
    """One refusal by one policy; ``reason`` picks the HTTP status (Invalid is 422)."""

    policy: str
    message: str
    reason: Reason = "Invalid"
    field_path: str | None = None

    def __str__(self) -> str:
        return f"ValidatingAdmissionPolicy {self.policy!r} denied request: {self.message}"


@dataclass(frozen=True, slots=True)
class _Run:
    """One policy evaluated against one request."""

    compiled: CompiledPolicy
    #: The request's activation, converted to CEL values once and shared by its policies.
    activation: Activation
    variable_errors: dict[str, str] = field(default_factory=dict)

    @property
    def fail_closed(self) -> bool:
        return self.compiled.policy.spec.failure_policy == "Fail"

    def boolean(self, expression: Expression) -> bool:
        value = expression.evaluate(self.activation)
        if not isinstance(value, bool):
            raise ExpressionError(f"must evaluate to bool, not {type(value).__name__}")
        return value

    def error_message(self, expression: Expression, error: ExpressionError) -> str:
        # An error in a variable shows where it started, not as a missing key downstream.
        for name, message in self.variable_errors.items():
            if re.search(rf"\bvariables\.{name}\b", expression.source):
                return f"variable {name!r} resulted in error: {message}"
        return f"expression {expression.source!r} resulted in error: {error}"


def _message(run: _Run, check: _CompiledValidation) -> str:
    if check.message is not None:
        try:
            text = check.message.evaluate(run.activation)
        except ExpressionError:
            text = None
        # Kubernetes falls back to the static message on errors, blank or multi-line text.
        if isinstance(text, str) and text.strip() and "\n" not in text.strip():
            return text.strip()
    return check.validation.message or f"failed expression: {check.expression.source}"


def _review_one(
    compiled: CompiledPolicy, request: AdmissionRequest, activation: Activation
) -> list[Violation]:
    operations = compiled.policy.spec.match_constraints.operations
    if "*" not in operations and request.operation not in operations:
        return []
    run = _Run(compiled, activation)
    # matchConditions do not see variables in Kubernetes; nor here, not even the last policy's.
    activation.add_variable("variables", {})
    for name, condition in compiled.match_conditions:
        try:
            if not run.boolean(condition):
                return []
        except ExpressionError as exc:
            if not run.fail_closed:
                return []
            return [Violation(compiled.name, f"matchCondition {name!r} resulted in error: {exc}")]
    variables: dict[str, Any] = {}
    for name, expression in compiled.variables:
        try:
            variables[name] = expression.evaluate(activation)
        except ExpressionError as exc:
            run.variable_errors[name] = str(exc)
        else:
            activation.add_variable("variables", variables)
    violations = []
    for check in compiled.validations:
        rule = check.validation
        try:
            if run.boolean(check.expression):
                continue
            message = _message(run, check)
        except ExpressionError as exc:
            if not run.fail_closed:
                continue
            message = run.error_message(check.expression, exc)
        violations.append(Violation(compiled.name, message, rule.reason, rule.field_path))
    return violations


class Admission:
    """The admission policies a registry enforces: ``review`` a request, or ``admit`` it."""

    def __init__(self, policies: Iterable[CompiledPolicy] = ()) -> None:
        self.policies: tuple[CompiledPolicy, ...] = tuple(policies)

    @classmethod
    def from_path(cls, path: str | Path, limits: Limits = DEFAULT_LIMITS) -> Admission:
        return cls(read_policies(path, limits))

    def __repr__(self) -> str:
        return f"Admission({[p.name for p in self.policies]!r})"

    def review(self, request: AdmissionRequest) -> list[Violation]:
        """Every violation, in policy order; an empty list admits the request."""
        activation = context(request.activation())
        return [v for policy in self.policies for v in _review_one(policy, request, activation)]

    def admit(self, request: AdmissionRequest) -> None:
        """Return if every policy admits ``request``; raise what ``refusal`` builds otherwise."""
        if error := refusal(self.review(request)):
            raise error


_STATUS: dict[Reason, type[RegistryError]] = {
    "Invalid": ValidationError,
    "RequestEntityTooLarge": TooLargeError,
    "Forbidden": ForbiddenError,
    "Unauthorized": UnauthorizedError,
}


def refusal(violations: Sequence[Violation]) -> RegistryError | None:
    """The error the registry answers with: the first violation's reason picks the status,
    as in Kubernetes; a 422 carries every violation as a cause with its field path."""
    if not violations:
        return None
    error_class = _STATUS[violations[0].reason]
    if issubclass(error_class, ValidationError):
        causes = [FieldError(v.field_path or "", str(v)) for v in violations]
        return error_class("admission denied the passport", causes)
    return error_class("; ".join(map(str, violations)))
