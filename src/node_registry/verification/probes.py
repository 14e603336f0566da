"""Probe definitions: which test task proves which capability, and how its answer is judged.

Seed 3.2: the node claims ``capability.code_generation``; the orchestrator sends it a test
task ("write Hello World in Python") and checks the result. A probe set, read from YAML::

    apiVersion: ai_team.io/v1
    kind: ProbeSet
    metadata: {name: default}
    probes:
      - name: hello-world-python
        capability: code_generation
        versions: ">=1.0,<2"            # optional: PEP 440 specifiers on the claimed version
        nodeTypes: [agent]              # optional: only nodes of these types
        task:                           # the JSON body sent to the node's endpoint
          capability: code_generation
          input: write hello world in python
        timeoutSeconds: 10
        expect:
          status: 200
          maxLatencySeconds: 5
          fields:                       # JSON field checks on the answer, all must hold
            - {path: output, matches: "(?i)hello,? world"}
            - {path: language, equals: python}

A check's ``path`` is dotted with list indexes (``choices[0].text``); it has exactly one of
``equals`` (any JSON value), ``contains`` (a substring, or a list element) and ``matches``
(a Python regular expression searched in a string). Returned code is only ever compared as
text: nothing a node answers is executed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from node_registry.errors import ConfigError
from node_registry.passport.models import Capability, NodePassport
from node_registry.passport.versions import translate_pydantic_error

_SEGMENT_RE = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
_INDEX_RE = re.compile(r"\[(\d+)\]")


def parse_path(path: str) -> tuple[str | int, ...]:
    """``choices[0].text`` as ``('choices', 0, 'text')``; ValueError if it is not one."""
    parts: list[str | int] = []
    for segment in path.split("."):
        match = _SEGMENT_RE.fullmatch(segment)
        if match is None:
            raise ValueError(f"{path!r} is not a field path such as output or choices[0].text")
        parts.append(match.group(1))
        parts.extend(int(i) for i in _INDEX_RE.findall(match.group(2)))
    return tuple(parts)


class _Model(BaseModel):
    # Probe files are configuration: a misspelt check silently ignored would pass anything.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FieldCheck(_Model):
    """One condition on one field of the node's JSON answer."""

    path: str
    equals: Any = None
    contains: Any = None
    matches: str | None = None

    _parts: tuple[str | int, ...] = PrivateAttr(default=())
    _pattern: re.Pattern[str] | None = PrivateAttr(default=None)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parse_path(value)
        return value

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> FieldCheck:
        given = [k for k in ("equals", "contains", "matches") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(
                f"a check needs exactly one of equals, contains, matches; got {given or 'none'}"
            )
        self._parts = parse_path(self.path)
        self._pattern = None if self.matches is None else re.compile(self.matches)
        return self

    @property
    def parts(self) -> tuple[str | int, ...]:
        return self._parts

    @property
    def pattern(self) -> re.Pattern[str] | None:
        return self._pattern


class Expectation(_Model):
    """What a passing answer looks like."""

    status: int = Field(default=200, ge=100, le=599)
    max_latency_seconds: float | None = Field(default=None, alias="maxLatencySeconds", gt=0)
    fields: list[FieldCheck] = Field(default_factory=list)


class Probe(_Model):
    """One test task for one capability."""

    name: str = Field(min_length=1, max_length=253)
    capability: str = Field(min_length=1)
    versions: str | None = None
    node_types: list[str] | None = Field(default=None, alias="nodeTypes", min_length=1)
    task: dict[str, Any]
    timeout_seconds: float = Field(default=10, alias="timeoutSeconds", gt=0, le=600)
    expect: Expectation = Field(default_factory=Expectation)

    @field_validator("versions")
    @classmethod
    def _specifiers(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                SpecifierSet(value)
            except InvalidSpecifier:
                raise ValueError(
                    f"{value!r} is not a version range such as '>=1.0,<2' (PEP 440)"
                ) from None
        return value

    def applies_to(self, passport: NodePassport, capability: Capability) -> bool:
        """Whether this probe tests ``capability`` as ``passport`` claims it."""
        if capability.name != self.capability:
            return False
        if self.node_types is not None and passport.metadata.node_type not in self.node_types:
            return False
        if self.versions is None:
            return True
        if capability.version is None:
            return False
        try:
            version = Version(capability.version)
        except InvalidVersion:
            return False
        return SpecifierSet(self.versions).contains(version, prereleases=True)


class ProbeSetMetadata(_Model):
    name: str = Field(min_length=1, max_length=253)


class ProbeSet(_Model):
    """Every probe the verifier knows, in the order they run for one capability."""

    api_version: Literal["ai_team.io/v1"] = Field(default="ai_team.io/v1", alias="apiVersion")
    kind: Literal["ProbeSet"] = "ProbeSet"
    metadata: ProbeSetMetadata = Field(default_factory=lambda: ProbeSetMetadata(name="probes"))
    probes: list[Probe] = Field(default_factory=list)

    @field_validator("probes")
    @classmethod
    def _unique(cls, value: list[Probe]) -> list[Probe]:
        names = [p.name for p in value]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"probe names must be unique; repeated: {', '.join(repeated)}")
        return value

    def for_capability(self, passport: NodePassport, capability: Capability) -> list[Probe]:
        return [p for p in self.probes if p.applies_to(passport, capability)]


def load_probes(doc: Mapping[str, Any] | ProbeSet, *, source: str = "probes") -> ProbeSet:
    """A probe set from a parsed document; ``ConfigError`` naming each bad field otherwise."""
    if isinstance(doc, ProbeSet):
        return doc
    try:
        return ProbeSet.model_validate(doc)
    except pydantic.ValidationError as exc:
        problems = "; ".join(map(str, translate_pydantic_error(exc)))
        raise ConfigError(f"{source}: invalid ProbeSet: {problems}") from None


def read_probes(path: str | Path) -> ProbeSet:
    """The probe set in a YAML file; ``ConfigError`` naming the file and field otherwise."""
    path = Path(path)
    try:
        doc: object = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read probes: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: a ProbeSet must be a mapping, not {type(doc).__name__}")
    return load_probes(doc, source=str(path))


def field_value(body: object, parts: Sequence[str | int]) -> tuple[bool, Any]:
    """``(True, value)`` at ``parts`` inside a parsed JSON ``body``, ``(False, None)`` if absent."""
    value = body
    for part in parts:
        if isinstance(part, int):
            if not (isinstance(value, list) and part < len(value)):
                return False, None
            value = value[part]
        else:
            if not (isinstance(value, Mapping) and part in value):
                return False, None
            value = value[part]
    return True, value
