"""Which passport versions this registry serves, the adapters that convert older ones to v1,
and ``load_passport``: the single entry point that turns untrusted input into a NodePassport.

Seed 3.3: ``ai_team.io/v1`` is served, and so are its compatible revisions (``ai_team.io/v1.1``:
new fields only, kept as sent); ``ai_team.io/v1alpha1`` — the flat layout of the first
prototypes — is converted to v1 by an adapter, as Kubernetes converts to its storage version;
anything else (``ai_team.io/v2``, another group or kind) is refused with the list of what is
served, so the node knows it must be upgraded or the registry must be.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from node_registry.errors import FieldError, TooLargeError, UnsupportedVersionError, ValidationError
from node_registry.passport import limits
from node_registry.passport.models import (
    API_GROUP,
    API_VERSION,
    KEY_DOMAIN,
    KIND,
    NodePassport,
    NodeType,
)

V1ALPHA1 = f"{API_GROUP}/v1alpha1"
CONVERTED_FROM_ANNOTATION = f"{KEY_DOMAIN}/converted-from"
M = TypeVar("M", bound=BaseModel)
_V1_REVISION_RE = re.compile(rf"{re.escape(API_GROUP)}/v1(\.[0-9]{{1,4}})?")


class PassportV1Alpha1(BaseModel):
    """The prototype layout: everything at the top level, capabilities as plain names."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: str = Field(alias="apiVersion")
    kind: str
    uid: str
    name: str
    node_type: NodeType = Field(alias="nodeType")
    labels: dict[str, str] = Field(default_factory=dict)
    capabilities: list[str] = Field(default_factory=list)
    resources: dict[str, str | int | float] = Field(default_factory=dict)
    endpoint: str | None = None
    max_concurrent_tasks: int | None = Field(default=None, alias="maxConcurrentTasks")


def _convert_v1alpha1(doc: Mapping[str, Any]) -> dict[str, Any]:
    old = _validate(PassportV1Alpha1, doc)
    converted: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "uid": old.uid,
            "name": old.name,
            "nodeType": old.node_type.value,
            "labels": old.labels,
            "annotations": {CONVERTED_FROM_ANNOTATION: V1ALPHA1},
        },
        "spec": {
            "capabilities": [{"name": name} for name in old.capabilities],
            "resources": old.resources,
        },
    }
    if old.endpoint is not None:
        converted["spec"]["endpoint"] = {
            "protocol": urlsplit(old.endpoint).scheme or "unknown",
            "address": old.endpoint,
        }
    if old.max_concurrent_tasks is not None:
        converted["spec"]["maxConcurrentTasks"] = old.max_concurrent_tasks
    return converted


#: apiVersion -> adapter producing a v1 document. Add an entry per retired version.
ADAPTERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    V1ALPHA1: _convert_v1alpha1,
}


def served_versions() -> list[str]:
    """Every apiVersion this registry accepts, the stored one first."""
    return [API_VERSION, f"{API_VERSION}.x", *ADAPTERS]


def _loc(parts: tuple[int | str, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def translate_pydantic_error(
    exc: pydantic.ValidationError, *, prefix: str = ""
) -> list[FieldError]:
    """pydantic's errors as ours, with dotted field paths in the wire (camelCase) names."""
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = _loc(tuple(err["loc"]))
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        message = err["msg"].removeprefix("Value error, ")
        out.append(FieldError(loc, message))
    return out


def _validate(model: type[M], doc: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(doc)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"invalid {model.__name__}", translate_pydantic_error(exc)) from None


#: Values JSON holds, plus those YAML and Python callers pass for timestamps and uids.
_JSON_LEAVES = (str, int, float, bool, type(None), date, UUID)


def _text_problem(text: str) -> str | None:
    """Why ``text`` cannot be sent as UTF-8 (a lone surrogate, from ``"\\ud800"`` in JSON), or None.

    Python strings may hold surrogates that no UTF-8 (hence no JSON response) can carry; one
    stored would make every response that includes it fail.
    """
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return (
            f"is not valid Unicode: a lone surrogate {text[exc.start]!a} at character "
            f"{exc.start} (UTF-8 cannot encode it)"
        )
    return None


_INTEGER_BOUND = 10**limits.MAX_INTEGER_DIGITS


def _json_problem(doc: Mapping[str, Any]) -> FieldError | None:
    """Where ``doc`` holds something a JSON document cannot (the first such place), or None."""
    stack: list[tuple[Any, str, int]] = [(doc, "", 1)]
    while stack:
        value, loc, depth = stack.pop()
        if isinstance(value, Mapping | list | tuple):
            if depth > limits.MAX_NESTING_DEPTH:
                return FieldError(loc, f"nested deeper than {limits.MAX_NESTING_DEPTH} levels")
            if isinstance(value, Mapping):
                for key in value:
                    if not isinstance(key, str):
                        return FieldError(loc, f"key {key!r} is not a string")
                    problem = _text_problem(key)
                    if problem is not None:
                        return FieldError(loc, f"key {key!a} {problem}")
                children = [(f"{loc}.{k}" if loc else k, v) for k, v in value.items()]
            else:
                children = [(f"{loc}[{i}]", v) for i, v in enumerate(value)]
            stack.extend((v, where, depth + 1) for where, v in reversed(children))
        elif isinstance(value, str):
            problem = _text_problem(value)
            if problem is not None:
                return FieldError(loc, problem)
        elif isinstance(value, int) and abs(value) >= _INTEGER_BOUND:
            digits = len(str(abs(value))) if value.bit_length() < 14_000 else "thousands of"
            return FieldError(
                loc, f"an integer of {digits} digits; at most {limits.MAX_INTEGER_DIGITS}"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            return FieldError(loc, f"{value!r} is not a JSON number")
        elif not isinstance(value, _JSON_LEAVES):
            return FieldError(loc, f"a value of type {type(value).__name__} is not JSON")
    return None


def _json_default(value: object) -> object:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)  # UUID: _json_problem let nothing else through


def _size_of(doc: Mapping[str, Any]) -> int:
    problem = _json_problem(doc)
    if problem is not None:
        raise ValidationError("the passport is not a JSON document", [problem])
    return len(json.dumps(doc, separators=(",", ":"), default=_json_default).encode())


def load_passport(doc: Mapping[str, Any] | NodePassport) -> NodePassport:
    """Validate untrusted input and return a v1 passport, converting known older versions.

    Raises ``UnsupportedVersionError`` for a version or kind not served, ``TooLargeError``
    for a document over ``limits.MAX_PASSPORT_BYTES`` and ``ValidationError`` naming each bad
    field otherwise. Never touches any store.
    """
    if isinstance(doc, NodePassport):
        # Python mode, so a value JSON cannot hold is refused below instead of crashing here.
        doc = doc.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(doc, Mapping):
        raise ValidationError(
            "a passport must be a mapping (a JSON object)",
            [FieldError("", f"got {type(doc).__name__}")],
        )
    size = _size_of(doc)
    if size > limits.MAX_PASSPORT_BYTES:
        raise TooLargeError(
            "the passport is too large",
            [FieldError("", f"{size} bytes as JSON, limit {limits.MAX_PASSPORT_BYTES}")],
        )
    api_version = doc.get("apiVersion", API_VERSION)
    kind = doc.get("kind", KIND)
    if kind != KIND:
        raise UnsupportedVersionError(
            "unsupported kind", [FieldError("kind", f"{kind!r} is not served; expected {KIND!r}")]
        )
    if not isinstance(api_version, str):
        raise UnsupportedVersionError(
            "unsupported apiVersion", [FieldError("apiVersion", "must be a string")]
        )
    adapter = ADAPTERS.get(api_version)
    if adapter is not None:
        doc = adapter(doc)
    elif not _V1_REVISION_RE.fullmatch(api_version):
        raise UnsupportedVersionError(
            "unsupported apiVersion",
            [
                FieldError(
                    "apiVersion",
                    f"{api_version!r} is not served; this registry serves "
                    f"{', '.join(served_versions())} (upgrade the node or the registry)",
                )
            ],
        )
    return _validate(NodePassport, doc)
