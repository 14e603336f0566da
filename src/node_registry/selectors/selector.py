"""Kubernetes label selectors: the kubectl ``-l`` syntax, ``LabelSelector`` objects, matching.

Ported from apimachinery ``pkg/labels/selector.go`` (Requirement, lexer, parser),
``pkg/apis/meta/v1/helpers.go`` (LabelSelectorAsSelector) and the node-affinity
``NodeSelectorRequirement`` operators ``Gt``/``Lt``. Semantics kept from upstream:

* ``!=``, ``notin`` and ``!key`` match when the key is absent; ``=``, ``==``, ``in``, ``exists``,
  ``>`` and ``<`` need the key present.
* ``x in ()`` and ``x=`` mean the empty value; ``in``/``notin`` values are a sorted set.
* Keys are checked as qualified names, every value as a label value (so a ``Gt`` bound of "-1"
  is refused, as upstream refuses it), and requirements are kept sorted by key.

Gt/Lt extension (ours). Kubernetes compares int64 integers only; we compare Kubernetes quantities
(``node_registry.quantity``), so ``memory Gt 4Gi`` matches ``memory=8Gi``. The rule:

* The bound (the requirement's single value) must be an integer or a quantity, else
  ``SelectorError`` when the selector is built. It is parsed once, exactly (as an integer
  numerator and denominator, so matching compares integers, not Fractions).
* At match time the label value is parsed as a quantity. Plain integers are quantities, so
  integer-against-integer is exactly Kubernetes' comparison (without the int64 limit).
* A missing key, or a label value that is not a quantity (e.g. "v2", "Gi"), never matches:
  upstream likewise refuses label values that do not parse as integers. The comparison is strict.

Other deliberate differences from upstream:

* ``as_selector(None)`` is the empty selector (matches everything); upstream's
  ``LabelSelectorAsSelector(nil)`` is ``Nothing()``. A registry query without a selector lists all.
* ``matchExpressions`` also accepts ``Gt``/``Lt`` (``LabelSelector`` upstream only has In, NotIn,
  Exists, DoesNotExist; node affinity has all six).
* A NUL character is an ordinary character. Go's lexer treats byte 0 as end of input and silently
  ignores the rest of the selector ("x\\x00,y" parses as "x"); we refuse it as a bad key instead.
* Requirements with the same key keep their written order (a stable sort; Go's is not stable),
  so ``parse_selector(str(s)) == s`` holds exactly.
* Object selectors report every problem at once, each with a ``FieldError`` loc such as
  ``matchExpressions[1].values``; string selectors report the first problem and its position.
* Selectors are bounded (upstream bounds only the request): at most ``MAX_REQUIREMENTS``
  requirements, ``MAX_VALUES`` values in one and ``MAX_TOTAL_VALUES`` in all, and
  ``MAX_SELECTOR_LENGTH`` characters written out. Matching costs nodes x requirements;
  without a bound, one query of 23,000 requirements held a server's event loop for seconds.
  Counts are checked before anything is parsed or validated one by one.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn, TypeAlias

from node_registry.errors import FieldError, SelectorError
from node_registry.labels import label_value_errors, qualified_name_errors
from node_registry.quantity import quantity_or_none

__all__ = [
    "MAX_REQUIREMENTS",
    "MAX_SELECTOR_LENGTH",
    "MAX_TOTAL_VALUES",
    "MAX_VALUES",
    "Labels",
    "Operator",
    "Requirement",
    "Selector",
    "as_selector",
    "compare_values",
    "parse_selector",
    "selector_from_dict",
]

Labels: TypeAlias = Mapping[str, str]

#: Requirements in one selector (``matchLabels`` entries and ``matchExpressions`` together). A
#: node carries at most 64 labels, 128 capabilities and 32 resources, and a search of 64
#: requirements over 10,000 nodes takes about 50 ms on the machine of docs/benchmarks.md.
MAX_REQUIREMENTS: Final = 64
#: Values of one ``in``/``notin`` requirement, and of all requirements together.
MAX_VALUES: Final = 256
MAX_TOTAL_VALUES: Final = 1024
#: The kubectl form written out; the HTTP API's ``labelSelector`` parameter takes 4,096.
MAX_SELECTOR_LENGTH: Final = 16 * 1024


class Operator(enum.StrEnum):
    """A requirement's operator; the values are upstream's ``selection.Operator`` spellings."""

    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


# Matching runs on small int opcodes instead of the enum: one int compare per branch, and a
# selector's steps are plain tuples, which keeps Selector.matches a tight, picklable loop.
# Numbered from cheapest to dearest to check, which is the order a selector evaluates them in.
_OP_IN: Final = 0
_OP_EXISTS: Final = 1
_OP_NOT_IN: Final = 2
_OP_NOT_EXISTS: Final = 3
_OP_GT: Final = 4
_OP_LT: Final = 5

_OPCODES: Final[dict[Operator, int]] = {
    Operator.EQUALS: _OP_IN,
    Operator.DOUBLE_EQUALS: _OP_IN,
    Operator.IN: _OP_IN,
    Operator.NOT_EQUALS: _OP_NOT_IN,
    Operator.NOT_IN: _OP_NOT_IN,
    Operator.EXISTS: _OP_EXISTS,
    Operator.DOES_NOT_EXIST: _OP_NOT_EXISTS,
    Operator.GREATER_THAN: _OP_GT,
    Operator.LESS_THAN: _OP_LT,
}

_SET_OPERATORS: Final = frozenset({Operator.IN, Operator.NOT_IN})
_EXACT_OPERATORS: Final = frozenset({Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS})
_UNARY_OPERATORS: Final = frozenset({Operator.EXISTS, Operator.DOES_NOT_EXIST})
_NUMERIC_OPERATORS: Final = frozenset({Operator.GREATER_THAN, Operator.LESS_THAN})

_SYMBOLS: Final[dict[Operator, str]] = {
    Operator.EQUALS: "=",
    Operator.DOUBLE_EQUALS: "==",
    Operator.NOT_EQUALS: "!=",
    Operator.GREATER_THAN: ">",
    Operator.LESS_THAN: "<",
}

# The LabelSelectorRequirement / NodeSelectorRequirement spellings.
_OBJECT_OPERATORS: Final[dict[str, Operator]] = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
    "Gt": Operator.GREATER_THAN,
    "Lt": Operator.LESS_THAN,
}

# (opcode, key, values, Gt/Lt bound numerator, bound denominator). The bound is kept as two ints
# because Fraction's comparison operators run in Python and cost about a microsecond each, while
# comparing cross products of small ints costs tens of nanoseconds.
_Step: TypeAlias = tuple[int, str, frozenset[str], int, int]

# Label values already read as quantities, as (numerator, denominator), None when not one. A plain
# dict read is several times cheaper than an lru_cache hit; clearing it when full bounds memory.
_RATIO_CACHE_SIZE: Final = 4096
_ratio_cache: dict[str, tuple[int, int] | None] = {}
# A cache-miss sentinel of the cached type: no quantity has denominator 0.
_UNCACHED: Final = (0, 0)


def _ratio(text: str) -> tuple[int, int] | None:
    """``text`` as a quantity in lowest terms, or None; fills the cache that matching reads."""
    value = quantity_or_none(text)
    ratio = None if value is None else (value.numerator, value.denominator)
    if len(_ratio_cache) >= _RATIO_CACHE_SIZE:
        _ratio_cache.clear()
    _ratio_cache[text] = ratio
    return ratio


def _quote(text: str) -> str:
    """Quote with escapes, as Go's %q would, so whitespace and control characters show."""
    return json.dumps(text, ensure_ascii=False)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _requirement_problems(
    key: object, operator: Operator, values: Sequence[object], spelling: str
) -> list[tuple[str, str]]:
    """Upstream NewRequirement's checks, as (relative loc, message) pairs; empty when valid.

    ``spelling`` is the operator as the user wrote it ("In", ">", ...), so messages quote it.
    """
    problems: list[tuple[str, str]] = []
    if len(values) > MAX_VALUES:  # before any value is looked at
        return [("values", f"{len(values)} values; at most {MAX_VALUES} in one requirement")]
    if not isinstance(key, str):
        problems.append(("key", f"must be a string, got {_type_name(key)}"))
    elif errors := qualified_name_errors(key):
        problems.append(("key", f"invalid label key {_quote(key)}: {'; '.join(errors)}"))

    count = len(values)
    if operator in _SET_OPERATORS:
        if count == 0:
            problems.append(("values", f"operator {spelling!r} needs at least one value"))
    elif operator in _EXACT_OPERATORS:
        if count != 1:
            problems.append(
                ("values", f"operator {spelling!r} takes exactly one value, got {count}")
            )
    elif operator in _UNARY_OPERATORS:
        if count != 0:
            problems.append(("values", f"operator {spelling!r} takes no values, got {count}"))
    elif count != 1:
        problems.append(("values", f"operator {spelling!r} takes exactly one value, got {count}"))

    for index, value in enumerate(values):
        loc = f"values[{index}]"
        if not isinstance(value, str):
            problems.append((loc, f"must be a string, got {_type_name(value)}"))
            continue
        if errors := label_value_errors(value):
            problems.append((loc, f"invalid label value {_quote(value)}: {'; '.join(errors)}"))
        elif operator in _NUMERIC_OPERATORS and quantity_or_none(value) is None:
            problems.append(
                (
                    loc,
                    f"operator {spelling!r} compares numbers: the value must be an integer "
                    f"or a quantity such as 4Gi, got {_quote(value)}",
                )
            )
    return problems


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``key operator values`` term; construction validates it like upstream NewRequirement.

    ``in``/``notin`` values are stored sorted and deduplicated, as upstream's string sets are,
    so equal requirements compare equal however their values were written.
    """

    key: str
    operator: Operator
    values: tuple[str, ...] = ()
    _step: _Step = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            operator = Operator(self.operator)
        except ValueError:
            raise SelectorError(
                "invalid requirement",
                [FieldError("operator", f"unknown operator {_quote(str(self.operator))}")],
            ) from None
        if isinstance(self.values, str):
            # A bare string would otherwise be split into one value per character.
            raise SelectorError(
                "invalid requirement", [FieldError("values", "must be a sequence of strings")]
            )
        values = tuple(self.values)
        if problems := _requirement_problems(self.key, operator, values, operator.value):
            raise SelectorError(
                f"invalid requirement for key {_quote(str(self.key))}",
                [FieldError(loc, message) for loc, message in problems],
            )
        if operator in _SET_OPERATORS:
            values = tuple(sorted(set(values)))
        bound = quantity_or_none(values[0]) if operator in _NUMERIC_OPERATORS else None
        numerator, denominator = (0, 1) if bound is None else (bound.numerator, bound.denominator)
        step = (_OPCODES[operator], self.key, frozenset(values), numerator, denominator)
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "_step", step)

    def matches(self, labels: Labels) -> bool:
        """Whether ``labels`` satisfy this requirement (absent keys: see the module docstring)."""
        return _run_steps((self._step,), labels)

    def __str__(self) -> str:
        """Upstream Requirement.String(): ``k``, ``!k``, ``k=v``, ``k in (a,b)``, ``k>5``..."""
        operator = self.operator
        if operator is Operator.EXISTS:
            return self.key
        if operator is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if operator in _SET_OPERATORS:
            return f"{self.key} {operator.value} ({','.join(self.values)})"
        return f"{self.key}{_SYMBOLS[operator]}{self.values[0]}"


def _run_steps(steps: tuple[_Step, ...], labels: Labels) -> bool:
    get = labels.get
    for opcode, key, values, bound_numerator, bound_denominator in steps:
        value = get(key)
        if opcode == _OP_IN:
            if value is None or value not in values:
                return False
        elif opcode == _OP_EXISTS:
            if value is None:
                return False
        elif opcode == _OP_NOT_IN:
            if value is not None and value in values:
                return False
        elif opcode == _OP_NOT_EXISTS:
            if value is not None:
                return False
        else:
            if value is None:
                return False
            ratio = _ratio_cache.get(value, _UNCACHED)
            if ratio is _UNCACHED:
                ratio = _ratio(value)
            if ratio is None:
                return False
            # a/b > c/d with positive denominators is a*d > c*b.
            left = ratio[0] * bound_denominator
            right = bound_numerator * ratio[1]
            if (left <= right) if opcode == _OP_GT else (left >= right):
                return False
    return True


def _step_cost(step: _Step) -> int:
    """Cheap checks first, so a failing label set rarely reaches a quantity comparison."""
    return step[0]


def _by_key(requirement: Requirement) -> str:
    return requirement.key


def _too_many_requirements(count: int, loc: str) -> SelectorError:
    return SelectorError(
        "label selector too large",
        [FieldError(loc, f"{count} requirements; at most {MAX_REQUIREMENTS}")],
    )


def _too_many_values(count: int, loc: str) -> SelectorError:
    return SelectorError(
        "label selector too large",
        [FieldError(loc, f"{count} values in all; at most {MAX_TOTAL_VALUES}")],
    )


@dataclass(frozen=True, slots=True)
class Selector:
    """An AND of requirements, kept sorted by key; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()
    _steps: tuple[_Step, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        requirements = tuple(self.requirements)
        for requirement in requirements:
            if not isinstance(requirement, Requirement):
                raise SelectorError(
                    "invalid selector",
                    [FieldError("requirements", f"not a Requirement: {requirement!r}")],
                )
        if len(requirements) > MAX_REQUIREMENTS:
            raise _too_many_requirements(len(requirements), "requirements")
        total = sum(len(r.values) for r in requirements)
        if total > MAX_TOTAL_VALUES:
            raise _too_many_values(total, "requirements")
        requirements = tuple(sorted(requirements, key=_by_key))
        object.__setattr__(self, "requirements", requirements)
        # Evaluation order does not change the result (an AND), only how soon a miss is found.
        steps = sorted((r._step for r in requirements), key=_step_cost)
        object.__setattr__(self, "_steps", tuple(steps))

    def matches(self, labels: Labels) -> bool:
        """Whether ``labels`` satisfy every requirement."""
        return _run_steps(self._steps, labels)

    def empty(self) -> bool:
        """Whether this selector restricts nothing (it then matches every label set)."""
        return not self.requirements

    def __str__(self) -> str:
        """The kubectl form; ``parse_selector(str(s)) == s``."""
        return ",".join(str(requirement) for requirement in self.requirements)

    def index_terms(self) -> list[tuple[str, frozenset[str] | None]]:
        """What a matching label set must contain, for narrowing candidates with an index.

        ``(key, values)`` for ``=``, ``==`` and ``in`` (the key must be present with one of those
        values); ``(key, None)`` for ``exists``, ``>`` and ``<`` (the key must be present).
        ``!=``, ``notin`` and ``!`` also match label sets without the key, so they add nothing.
        Candidates found this way still have to be checked with ``matches``.
        """
        terms: list[tuple[str, frozenset[str] | None]] = []
        for requirement in self.requirements:
            opcode, key, values = requirement._step[:3]
            if opcode == _OP_IN:
                terms.append((key, values))
            elif opcode in (_OP_EXISTS, _OP_GT, _OP_LT):
                terms.append((key, None))
        return terms


# ---------------------------------------------------------------------------------------------
# The string syntax: a port of upstream's Lexer and Parser.


class _Token(enum.IntEnum):
    END_OF_STRING = enum.auto()
    CLOSED_PAR = enum.auto()
    COMMA = enum.auto()
    DOES_NOT_EXIST = enum.auto()
    DOUBLE_EQUALS = enum.auto()
    EQUALS = enum.auto()
    GREATER_THAN = enum.auto()
    IDENTIFIER = enum.auto()
    IN = enum.auto()
    LESS_THAN = enum.auto()
    NOT_EQUALS = enum.auto()
    NOT_IN = enum.auto()
    OPEN_PAR = enum.auto()


_STRING_TO_TOKEN: Final[dict[str, _Token]] = {
    ")": _Token.CLOSED_PAR,
    ",": _Token.COMMA,
    "!": _Token.DOES_NOT_EXIST,
    "==": _Token.DOUBLE_EQUALS,
    "=": _Token.EQUALS,
    ">": _Token.GREATER_THAN,
    "in": _Token.IN,
    "<": _Token.LESS_THAN,
    "!=": _Token.NOT_EQUALS,
    "notin": _Token.NOT_IN,
    "(": _Token.OPEN_PAR,
}

_TOKEN_TO_OPERATOR: Final[dict[_Token, Operator]] = {
    _Token.IN: Operator.IN,
    _Token.NOT_IN: Operator.NOT_IN,
    _Token.EQUALS: Operator.EQUALS,
    _Token.DOUBLE_EQUALS: Operator.DOUBLE_EQUALS,
    _Token.NOT_EQUALS: Operator.NOT_EQUALS,
    _Token.GREATER_THAN: Operator.GREATER_THAN,
    _Token.LESS_THAN: Operator.LESS_THAN,
}

# Upstream's isWhitespace and isSpecialSymbol: only these four characters separate tokens; any
# other character (including non-ASCII spaces) is part of an identifier and fails validation.
_WHITESPACE: Final = " \t\r\n"
_SPECIAL: Final = "=!(),><"
_SKIP_WHITESPACE_RE: Final = re.compile(f"[{_WHITESPACE}]*")
_IDENTIFIER_RE: Final = re.compile(f"[^{_WHITESPACE}{re.escape(_SPECIAL)}]+")
# Upstream scans the longest run of special symbols that is still a token; since every single
# special symbol is a token, that is a two-character token when one starts here, else one char.
_TWO_CHAR_TOKENS: Final = frozenset({"==", "!="})

_Item: TypeAlias = tuple[_Token, str, int]  # (token, literal, position in the text)


def _lex(text: str) -> list[_Item]:
    """Upstream Lexer.Lex in a loop (Parser.scan): every token, ending with END_OF_STRING."""
    items: list[_Item] = []
    position = 0
    length = len(text)
    while True:
        skipped = _SKIP_WHITESPACE_RE.match(text, position)
        position = skipped.end() if skipped else position
        if position >= length:
            items.append((_Token.END_OF_STRING, "", position))
            return items
        if text[position] in _SPECIAL:
            literal = text[position : position + 2]
            if literal not in _TWO_CHAR_TOKENS:
                literal = text[position]
            items.append((_STRING_TO_TOKEN[literal], literal, position))
        else:
            identifier = _IDENTIFIER_RE.match(text, position)
            # The character here is neither whitespace nor special, so the match is non-empty.
            literal = identifier.group() if identifier else text[position]
            items.append((_STRING_TO_TOKEN.get(literal, _Token.IDENTIFIER), literal, position))
        position += len(literal)


def _shown(token: _Token, literal: str) -> str:
    return "'end of string'" if token is _Token.END_OF_STRING else f"'{literal}'"


class _Parser:
    """Upstream's recursive-descent Parser, raising SelectorError with the failing position.

    Lookahead and consume take ``values``: in a value position upstream reads the keywords
    ``in`` and ``notin`` as plain identifiers (``x in (in,notin)``, ``notin=in``).
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._items = _lex(text)
        self._position = 0

    def _fail(self, message: str, position: int) -> NoReturn:
        raise SelectorError(
            f"invalid label selector {_quote(self._text)}",
            [FieldError("", f"{message} at position {position}")],
        )

    def _lookahead(self, *, values: bool) -> _Item:
        token, literal, position = self._items[self._position]
        if values and token in (_Token.IN, _Token.NOT_IN):
            token = _Token.IDENTIFIER
        return token, literal, position

    def _consume(self, *, values: bool) -> _Item:
        item = self._lookahead(values=values)
        # END_OF_STRING is last: stay on it rather than run off the list.
        self._position = min(self._position + 1, len(self._items) - 1)
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token, literal, position = self._lookahead(values=True)
            if token is _Token.END_OF_STRING:
                return requirements
            if token not in (_Token.IDENTIFIER, _Token.DOES_NOT_EXIST):
                self._fail(
                    f"found {_shown(token, literal)}, expected: !, identifier, or 'end of string'",
                    position,
                )
            if len(requirements) == MAX_REQUIREMENTS:
                self._fail(f"more than {MAX_REQUIREMENTS} requirements", position)
            requirements.append(self._parse_requirement())
            token, literal, position = self._consume(values=True)
            if token is _Token.END_OF_STRING:
                return requirements
            if token is not _Token.COMMA:
                self._fail(
                    f"found {_shown(token, literal)}, expected: ',' or 'end of string'", position
                )
            token, literal, position = self._lookahead(values=True)
            if token not in (_Token.IDENTIFIER, _Token.DOES_NOT_EXIST):
                self._fail(
                    f"found {_shown(token, literal)}, expected: identifier after ','", position
                )

    def _parse_requirement(self) -> Requirement:
        start = self._lookahead(values=True)[2]
        key, operator = self._parse_key_and_infer_operator()
        if operator is not None:
            return self._build(key, operator, [], operator.value, start)
        operator, spelling = self._parse_operator()
        exact = operator not in _SET_OPERATORS
        values = self._parse_exact_value() if exact else self._parse_values()
        return self._build(key, operator, values, spelling, start)

    def _build(
        self, key: str, operator: Operator, values: list[str], spelling: str, start: int
    ) -> Requirement:
        if problems := _requirement_problems(key, operator, values, spelling):
            end = self._items[self._position - 1]
            written = self._text[start : end[2] + len(end[1])]
            self._fail(f"{problems[0][1]} in requirement {_quote(written)}", start)
        return Requirement(key, operator, tuple(values))

    def _parse_key_and_infer_operator(self) -> tuple[str, Operator | None]:
        operator: Operator | None = None
        token, literal, position = self._consume(values=True)
        if token is _Token.DOES_NOT_EXIST:
            operator = Operator.DOES_NOT_EXIST
            token, literal, position = self._consume(values=True)
        if token is not _Token.IDENTIFIER:
            self._fail(f"found {_shown(token, literal)}, expected: identifier", position)
        if errors := qualified_name_errors(literal):
            self._fail(f"invalid label key {_quote(literal)}: {'; '.join(errors)}", position)
        following = self._lookahead(values=True)[0]
        if operator is None and following in (_Token.END_OF_STRING, _Token.COMMA):
            operator = Operator.EXISTS
        return literal, operator

    def _parse_operator(self) -> tuple[Operator, str]:
        token, literal, position = self._consume(values=False)
        operator = _TOKEN_TO_OPERATOR.get(token)
        if operator is None:
            self._fail(
                f"found {_shown(token, literal)}, expected: in, notin, =, ==, !=, >, <", position
            )
        return operator, literal

    def _parse_values(self) -> list[str]:
        token, literal, position = self._consume(values=True)
        if token is not _Token.OPEN_PAR:
            self._fail(f"found {_shown(token, literal)}, expected: '('", position)
        token, literal, position = self._lookahead(values=True)
        if token is _Token.CLOSED_PAR:
            # "x in ()" is the set holding the empty value.
            self._consume(values=True)
            return [""]
        if token not in (_Token.IDENTIFIER, _Token.COMMA):
            self._fail(
                f"found {_shown(token, literal)}, expected: ',', ')' or identifier", position
            )
        values = self._parse_identifiers_list()
        # The list returns only when a ')' is next.
        self._consume(values=True)
        return values

    def _parse_identifiers_list(self) -> list[str]:
        """Comma-separated, possibly empty values: "(a,,b)", "(,a)" and "(a,)" hold ""."""
        values: list[str] = []
        while True:
            token, literal, position = self._consume(values=True)
            if token is _Token.IDENTIFIER:
                values.append(literal)
                token, literal, position = self._lookahead(values=True)
                if token is _Token.CLOSED_PAR:
                    return values
                if token is not _Token.COMMA:
                    self._fail(f"found {_shown(token, literal)}, expected: ',' or ')'", position)
            elif token is _Token.COMMA:
                if not values:
                    values.append("")
                following = self._lookahead(values=True)[0]
                if following is _Token.CLOSED_PAR:
                    values.append("")
                    return values
                if following is _Token.COMMA:
                    self._consume(values=True)
                    values.append("")
            else:
                self._fail(
                    f"found {_shown(token, literal)}, expected: ',', or identifier", position
                )

    def _parse_exact_value(self) -> list[str]:
        token = self._lookahead(values=True)[0]
        if token in (_Token.END_OF_STRING, _Token.COMMA):
            return [""]
        token, literal, position = self._consume(values=True)
        if token is not _Token.IDENTIFIER:
            self._fail(f"found {_shown(token, literal)}, expected: identifier", position)
        return [literal]


def parse_selector(text: str) -> Selector:
    """Parse the kubectl ``-l`` syntax, e.g. ``"zone in (a,b),!spot,memory>4Gi"``.

    The empty string is the empty selector. Raises SelectorError quoting the selector, the
    offending token and its position.
    """
    if not isinstance(text, str):
        raise SelectorError(
            "invalid label selector", [FieldError("", f"must be a string, got {_type_name(text)}")]
        )
    if len(text) > MAX_SELECTOR_LENGTH:
        raise SelectorError(
            "label selector too large",
            [FieldError("", f"{len(text)} characters; at most {MAX_SELECTOR_LENGTH}")],
        )
    return Selector(tuple(_Parser(text).parse()))


# ---------------------------------------------------------------------------------------------
# The object form: metav1.LabelSelector, with node affinity's Gt/Lt.

_SELECTOR_FIELDS: Final = ("matchLabels", "matchExpressions")
_EXPRESSION_FIELDS: Final = ("key", "operator", "values")
_YAML_HINT: Final = " (quote it: YAML reads unquoted true, 8 or 1.5 as a non-string)"


def _not_a_string(value: object) -> str:
    hint = _YAML_HINT if isinstance(value, bool | int | float) else ""
    return f"must be a string, got {_type_name(value)}{hint}"


def _match_labels(raw: object, errors: list[FieldError]) -> list[Requirement]:
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        errors.append(FieldError("matchLabels", f"must be an object, got {_type_name(raw)}"))
        return []
    requirements: list[Requirement] = []
    for key, value in raw.items():
        loc = f"matchLabels.{key}"
        if not isinstance(key, str):
            errors.append(FieldError(loc, f"label key {_not_a_string(key)}"))
            continue
        if not isinstance(value, str):
            errors.append(FieldError(loc, _not_a_string(value)))
            continue
        problems = _requirement_problems(key, Operator.EQUALS, [value], "matchLabels")
        if problems:
            errors.extend(FieldError(loc, message) for _, message in problems)
            continue
        requirements.append(Requirement(key, Operator.EQUALS, (value,)))
    return requirements


def _match_expression(raw: object, loc: str, errors: list[FieldError]) -> Requirement | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(loc, f"must be an object, got {_type_name(raw)}"))
        return None
    count = len(errors)
    expected = ", ".join(_EXPRESSION_FIELDS)
    errors.extend(
        FieldError(f"{loc}.{name}", f"unknown field; expected one of {expected}")
        for name in raw
        if name not in _EXPRESSION_FIELDS
    )
    key = raw.get("key")
    if "key" not in raw:
        errors.append(FieldError(f"{loc}.key", "required"))
    elif not isinstance(key, str):
        errors.append(FieldError(f"{loc}.key", _not_a_string(key)))
    spelling = raw.get("operator")
    operator = _OBJECT_OPERATORS.get(spelling) if isinstance(spelling, str) else None
    if "operator" not in raw:
        errors.append(FieldError(f"{loc}.operator", "required"))
    elif operator is None:
        errors.append(
            FieldError(
                f"{loc}.operator",
                f"unsupported operator {json.dumps(spelling)}; expected one of "
                f"{', '.join(_OBJECT_OPERATORS)}",
            )
        )
    values = raw.get("values")
    if values is None:
        values = []
    elif isinstance(values, str) or not isinstance(values, Sequence):
        errors.append(FieldError(f"{loc}.values", f"must be a list, got {_type_name(values)}"))
        values = None
    elif len(values) > MAX_VALUES:
        errors.append(FieldError(f"{loc}.values", f"{len(values)} values; at most {MAX_VALUES}"))
        values = None
    else:
        for index, value in enumerate(values):
            if not isinstance(value, str):
                errors.append(FieldError(f"{loc}.values[{index}]", _not_a_string(value)))
                values = None
    if len(errors) > count or operator is None or values is None or not isinstance(key, str):
        return None
    problems = _requirement_problems(key, operator, values, str(spelling))
    if problems:
        errors.extend(FieldError(f"{loc}.{where}", message) for where, message in problems)
        return None
    return Requirement(key, operator, tuple(values))


def _check_counts(obj: Mapping[str, object]) -> None:
    """Refuse a selector object over the bounds before any of its parts is looked at."""
    labels, expressions = obj.get("matchLabels"), obj.get("matchExpressions")
    count = len(labels) if isinstance(labels, Mapping) else 0
    values = count
    if isinstance(expressions, Sequence) and not isinstance(expressions, str):
        count += len(expressions)
        for raw in expressions[: MAX_REQUIREMENTS + 1]:
            listed = raw.get("values") if isinstance(raw, Mapping) else None
            if isinstance(listed, Sequence) and not isinstance(listed, str):
                values += len(listed)
    where = (
        "matchExpressions" if isinstance(expressions, Sequence) and expressions else "matchLabels"
    )
    if count > MAX_REQUIREMENTS:
        raise _too_many_requirements(count, where)
    if values > MAX_TOTAL_VALUES:
        raise _too_many_values(values, where)


def selector_from_dict(obj: Mapping[str, object]) -> Selector:
    """Build a selector from ``{"matchLabels": {...}, "matchExpressions": [...]}``.

    ``matchLabels`` entries are ``=`` requirements; expressions take the operators In, NotIn,
    Exists, DoesNotExist, Gt and Lt. Every problem is reported in one SelectorError, each as a
    FieldError whose loc names the part, e.g. ``matchExpressions[1].values``.
    """
    if not isinstance(obj, Mapping):
        raise SelectorError(
            "invalid label selector",
            [FieldError("", f"must be an object, got {_type_name(obj)}")],
        )
    errors: list[FieldError] = [
        FieldError(str(name), f"unknown field; expected one of {', '.join(_SELECTOR_FIELDS)}")
        for name in obj
        if name not in _SELECTOR_FIELDS
    ]
    _check_counts(obj)
    requirements = _match_labels(obj.get("matchLabels"), errors)
    expressions = obj.get("matchExpressions")
    if expressions is not None:
        if isinstance(expressions, str) or not isinstance(expressions, Sequence):
            errors.append(
                FieldError("matchExpressions", f"must be a list, got {_type_name(expressions)}")
            )
        else:
            for index, raw in enumerate(expressions):
                requirement = _match_expression(raw, f"matchExpressions[{index}]", errors)
                if requirement is not None:
                    requirements.append(requirement)
    if errors:
        raise SelectorError("invalid label selector", errors)
    return Selector(tuple(requirements))


def as_selector(value: str | Mapping[str, object] | Selector | None) -> Selector:
    """Accept any selector form: None or "" is the empty selector (it matches everything)."""
    if value is None:
        return Selector()
    if isinstance(value, Selector):
        return value
    if isinstance(value, str):
        return parse_selector(value)
    if isinstance(value, Mapping):
        return selector_from_dict(value)
    raise SelectorError(
        "invalid label selector",
        [FieldError("", f"expected a string, an object or a Selector, got {_type_name(value)}")],
    )


def compare_values(label_value: str, bound: str) -> int | None:
    """The Gt/Lt comparison: -1, 0 or 1 as ``label_value`` is below, equal to or above ``bound``.

    Both are read as quantities (integers included); None when either is not one, which is the
    "never matches" case of the module docstring.
    """
    left = quantity_or_none(label_value)
    right = quantity_or_none(bound)
    if left is None or right is None:
        return None
    return (left > right) - (left < right)
