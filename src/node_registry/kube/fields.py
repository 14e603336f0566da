"""Field selectors (``fieldSelector=metadata.name=a,status.healthState!=ALIVE``) on NodePassports.

Kubernetes' syntax (``fields.ParseSelector``): terms joined by ``,``, each ``field=value``,
``field==value`` or ``field!=value``; ``\\``, ``\\,`` and ``\\=`` escape in values; every term
must hold. Only the fields in ``FIELDS`` can be selected; any other is refused with
apiserver's own words (``field label not supported: X``), never ignored, so a caller never
takes an unfiltered answer for a filtered one.

``status.schedulable`` is the object's own field: what ``find_nodes(only_healthy=True)``
selects. ``status.verification.required=true`` is ``find_nodes(only_verified=True)`` (#12):
it selects no field but how the label selector is read (only Verified claims match
``capability.<name>``) and keeps only trusted nodes. It is a field selector rather than a
query parameter of our own because apiserver ignores query parameters it does not know
(a client would silently get the unfiltered answer) and ``kubectl --field-selector`` can
send it. Boolean fields take ``true`` or ``false`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from node_registry.errors import BadRequestError, FieldError
from node_registry.registry.entry import RegistryEntry
from node_registry.registry.registry import is_schedulable

#: The term that asks for ``find_nodes(only_verified=True)``: selects the reading, not a field.
VERIFIED_FIELD = "status.verification.required"
#: Selectable fields and how each is read off an entry.
FIELDS: dict[str, Callable[[RegistryEntry], str]] = {
    "metadata.name": lambda e: e.name,
    "metadata.nodeType": lambda e: str(e.node_kind),
    "status.healthState": lambda e: e.health_state.value,
    "status.phase": lambda e: e.passport.status.phase.value,
    "status.schedulable": lambda e: "true" if is_schedulable(e) else "false",
    VERIFIED_FIELD: lambda e: "true",
}
_BOOLEAN = frozenset({"status.schedulable", VERIFIED_FIELD})
#: Longest operator first, as Kubernetes' splitTerm tries them at each position.
_OPERATORS = ("!=", "==", "=")
_ESCAPABLE = "\\,="
MAX_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str

    def matches(self, entry: RegistryEntry) -> bool:
        if self.field == VERIFIED_FIELD:
            return True  # the selection reads labels strictly instead (``only_verified``)
        return (FIELDS[self.field](entry) == self.value) is self.equal

    @property
    def truth(self) -> bool:
        """What a boolean term asks for: ``f=true`` and ``f!=false`` ask True."""
        return (self.value == "true") is self.equal

    def __str__(self) -> str:
        value = "".join("\\" + c if c in _ESCAPABLE else c for c in self.value)
        return f"{self.field}{'=' if self.equal else '!='}{value}"


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def empty(self) -> bool:
        """True when no entry is filtered out (``only_verified`` alone filters nothing here)."""
        return all(r.field == VERIFIED_FIELD for r in self.requirements)

    @property
    def only_verified(self) -> bool:
        return any(r.field == VERIFIED_FIELD and r.truth for r in self.requirements)

    def matches(self, entry: RegistryEntry) -> bool:
        return all(r.matches(entry) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _invalid(text: str, why: str) -> BadRequestError:
    return BadRequestError(f"invalid field selector {text!r}", [FieldError("fieldSelector", why)])


def _split_terms(text: str) -> list[str]:
    """Split on commas not escaped by a backslash; the escapes themselves are kept."""
    terms, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ",":
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return terms


def _unescape(text: str, value: str) -> str:
    out, escaped = [], False
    for char in value:
        if escaped:
            if char not in _ESCAPABLE:
                raise _invalid(text, f"invalid escape sequence \\{char} in value {value!r}")
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            raise _invalid(text, f"{char!r} in value {value!r} must be escaped with a backslash")
        else:
            out.append(char)
    if escaped:
        raise _invalid(text, f"value {value!r} ends in a lone backslash")
    return "".join(out)


def _split_term(term: str) -> tuple[str, str, str] | None:
    for index in range(len(term)):
        for op in _OPERATORS:
            if term.startswith(op, index):
                return term[:index], op, term[index + len(op) :]
    return None


def parse_field_selector(text: str | None) -> FieldSelector:
    """The selector ``text`` says; ``BadRequestError`` for bad syntax or an unknown field."""
    if not text:
        return FieldSelector()
    if len(text) > MAX_LENGTH:
        raise _invalid(text[:64] + "...", f"{len(text)} characters; at most {MAX_LENGTH}")
    requirements: list[FieldRequirement] = []
    for term in _split_terms(text):
        if not term:
            continue
        split = _split_term(term)
        if split is None:
            raise _invalid(text, f"can't understand {term!r}: use field=value or field!=value")
        field, op, raw = split
        field = field.strip()
        if field not in FIELDS:
            raise BadRequestError(f"field label not supported: {field}")
        requirement = FieldRequirement(field, op != "!=", _unescape(text, raw))
        if field in _BOOLEAN and requirement.value not in ("true", "false"):
            raise _invalid(text, f"{field} is true or false, not {requirement.value!r}")
        requirements.append(requirement)
    asked = {r.truth for r in requirements if r.field == VERIFIED_FIELD}
    if len(asked) > 1:
        raise _invalid(text, f"{VERIFIED_FIELD} is asked both true and false")
    return FieldSelector(tuple(requirements))
