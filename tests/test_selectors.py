"""Tests for node_registry.selectors: upstream's tables, our Gt/Lt extension, properties."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_registry.errors import SelectorError
from node_registry.quantity import is_quantity, parse_quantity
from node_registry.selectors import (
    MAX_REQUIREMENTS,
    MAX_SELECTOR_LENGTH,
    MAX_TOTAL_VALUES,
    MAX_VALUES,
    Labels,
    Operator,
    Requirement,
    Selector,
    as_selector,
    compare_values,
    parse_selector,
    selector_from_dict,
)
from node_registry.selectors.selector import _lex, _Token

IN = Operator.IN
NOT_IN = Operator.NOT_IN
EQUALS = Operator.EQUALS
DOUBLE_EQUALS = Operator.DOUBLE_EQUALS
NOT_EQUALS = Operator.NOT_EQUALS
EXISTS = Operator.EXISTS
DOES_NOT_EXIST = Operator.DOES_NOT_EXIST
GT = Operator.GREATER_THAN
LT = Operator.LESS_THAN


def req(key: str, operator: Operator, *values: str) -> Requirement:
    return Requirement(key, operator, values)


def sel(*requirements: Requirement) -> Selector:
    return Selector(requirements)


# ---------------------------------------------------------------------------------------------
# apimachinery pkg/labels/selector_test.go, TestSelectorParse

GOOD_STRINGS = [
    "x=a,y=b,z=c",
    "",
    "x!=a,y=b",
    "x=",
    "x= ",
    "x=,z= ",
    "x= ,z= ",
    "!x",
    "x>1",
    "x>1,z<5",
]
BAD_STRINGS = ["x=a||y=b", "x==a==b", "!x=a", "x<a"]


@pytest.mark.parametrize("text", GOOD_STRINGS)
def test_upstream_selector_parse_good(text: str) -> None:
    assert str(parse_selector(text)) == text.replace(" ", "")


@pytest.mark.parametrize("text", BAD_STRINGS)
def test_upstream_selector_parse_bad(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


# selector_test.go, TestDeterministicParse
def test_upstream_deterministic_parse() -> None:
    assert str(parse_selector("x=a,a=x")) == str(parse_selector("a=x,x=a")) == "a=x,x=a"
    assert parse_selector("x=a,a=x") == parse_selector("a=x,x=a")


# selector_test.go, TestEverything, TestNilMapIsValid, TestSetIsEmpty
def test_upstream_everything() -> None:
    everything = Selector()
    assert everything.matches({"x": "y"})
    assert everything.matches({})
    assert everything.empty()
    assert str(everything) == ""
    assert parse_selector("") == everything
    assert not parse_selector("x").empty()


# selector_test.go, TestSelectorMatches
SELECTOR_MATCHES: list[tuple[str, dict[str, str], bool]] = [
    ("", {"x": "y"}, True),
    ("x=y", {"x": "y"}, True),
    ("x=y,z=w", {"x": "y", "z": "w"}, True),
    ("x!=y,z!=w", {"x": "z", "z": "a"}, True),
    ("notin=in", {"notin": "in"}, True),  # in and notin in exactMatch
    ("x", {"x": "z"}, True),
    ("!x", {"y": "z"}, True),
    ("x>1", {"x": "2"}, True),
    ("x<1", {"x": "0"}, True),
    ("x=z", {}, False),
    ("x=y", {"x": "z"}, False),
    ("x=y,z=w", {"x": "w", "z": "w"}, False),
    ("x!=y,z!=w", {"x": "z", "z": "w"}, False),
    ("x", {"y": "z"}, False),
    ("!x", {"x": "z"}, False),
    ("x>1", {"x": "0"}, False),
    ("x<1", {"x": "2"}, False),
    ("foo=bar", {"foo": "bar", "baz": "blah"}, True),
    ("baz=blah", {"foo": "bar", "baz": "blah"}, True),
    ("foo=bar,baz=blah", {"foo": "bar", "baz": "blah"}, True),
    ("foo=blah", {"foo": "bar", "baz": "blah"}, False),
    ("baz=bar", {"foo": "bar", "baz": "blah"}, False),
    ("foo=bar,foobar=bar,baz=blah", {"foo": "bar", "baz": "blah"}, False),
]


@pytest.mark.parametrize(("text", "labels", "expected"), SELECTOR_MATCHES)
def test_upstream_selector_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


# selector_test.go, TestSetMatches (SelectorFromSet is matchLabels here)
@pytest.mark.parametrize(
    "match_labels", [{}, {"foo": "bar"}, {"baz": "blah"}, {"foo": "bar", "baz": "blah"}]
)
def test_upstream_set_matches(match_labels: dict[str, str]) -> None:
    selector = selector_from_dict({"matchLabels": match_labels})
    assert selector.matches({"foo": "bar", "baz": "blah"})


# selector_test.go, TestLexer
@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("", _Token.END_OF_STRING),
        (",", _Token.COMMA),
        ("notin", _Token.NOT_IN),
        ("in", _Token.IN),
        ("=", _Token.EQUALS),
        ("==", _Token.DOUBLE_EQUALS),
        (">", _Token.GREATER_THAN),
        ("<", _Token.LESS_THAN),
        # the lexer returns the longest valid token found
        ("!", _Token.DOES_NOT_EXIST),
        ("!=", _Token.NOT_EQUALS),
        ("(", _Token.OPEN_PAR),
        (")", _Token.CLOSED_PAR),
        # non-"special" characters are part of an identifier
        ("~", _Token.IDENTIFIER),
        ("||", _Token.IDENTIFIER),
    ],
)
def test_upstream_lexer(text: str, token: _Token) -> None:
    first_token, literal, position = _lex(text)[0]
    assert (first_token, literal, position) == (token, text, 0)


T = _Token
# selector_test.go, TestLexerSequence and TestParserLookahead (the scanned items end with EOS)
LEXER_SEQUENCES: list[tuple[str, list[_Token]]] = [
    ("key in ( value )", [T.IDENTIFIER, T.IN, T.OPEN_PAR, T.IDENTIFIER, T.CLOSED_PAR]),
    ("key notin ( value )", [T.IDENTIFIER, T.NOT_IN, T.OPEN_PAR, T.IDENTIFIER, T.CLOSED_PAR]),
    (
        "key in ( value1, value2 )",
        [T.IDENTIFIER, T.IN, T.OPEN_PAR, T.IDENTIFIER, T.COMMA, T.IDENTIFIER, T.CLOSED_PAR],
    ),
    ("key", [T.IDENTIFIER]),
    ("!key", [T.DOES_NOT_EXIST, T.IDENTIFIER]),
    ("()", [T.OPEN_PAR, T.CLOSED_PAR]),
    ("", []),
    ("x in (),y", [T.IDENTIFIER, T.IN, T.OPEN_PAR, T.CLOSED_PAR, T.COMMA, T.IDENTIFIER]),
    (
        "== != (), = notin",
        [T.DOUBLE_EQUALS, T.NOT_EQUALS, T.OPEN_PAR, T.CLOSED_PAR, T.COMMA, T.EQUALS, T.NOT_IN],
    ),
    ("key>2", [T.IDENTIFIER, T.GREATER_THAN, T.IDENTIFIER]),
    ("key<1", [T.IDENTIFIER, T.LESS_THAN, T.IDENTIFIER]),
    # ours: longest match among runs of special symbols, and the four whitespace characters
    ("!==", [T.NOT_EQUALS, T.EQUALS]),
    ("=!", [T.EQUALS, T.DOES_NOT_EXIST]),
    ("((", [T.OPEN_PAR, T.OPEN_PAR]),
    ("\ta\r\nb", [T.IDENTIFIER, T.IDENTIFIER]),
    ("a\u00a0b", [T.IDENTIFIER]),  # a no-break space is not a separator upstream either
]


@pytest.mark.parametrize(("text", "tokens"), LEXER_SEQUENCES)
def test_upstream_lexer_sequence(text: str, tokens: list[_Token]) -> None:
    items = _lex(text)
    assert [token for token, _, _ in items] == [*tokens, T.END_OF_STRING]
    # Literals sit at their positions in the text.
    for _, literal, position in items:
        assert text[position : position + len(literal)] == literal


# selector_test.go, TestSetSelectorParser: (input, expected selector); None means invalid.
SET_SELECTOR_PARSER: list[tuple[str, Selector | None]] = [
    ("", sel()),
    ("\rx", sel(req("x", EXISTS))),
    (
        "this-is-a-dns.domain.com/key-with-dash",
        sel(req("this-is-a-dns.domain.com/key-with-dash", EXISTS)),
    ),
    (
        "this-is-another-dns.domain.com/key-with-dash in (so,what)",
        sel(req("this-is-another-dns.domain.com/key-with-dash", IN, "so", "what")),
    ),
    (
        "0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)",
        sel(req("0.1.2.domain/99", NOT_IN, "10.10.100.1", "tick.tack.clock")),
    ),
    ("foo  in\t (abc)", sel(req("foo", IN, "abc"))),
    ("x notin\n (abc)", sel(req("x", NOT_IN, "abc"))),
    ("x  notin\t\t\t(abc,def)", sel(req("x", NOT_IN, "abc", "def"))),
    ("x in (abc,def)", sel(req("x", IN, "abc", "def"))),
    ("x in (abc,)", sel(req("x", IN, "abc", ""))),
    ("x in ()", sel(req("x", IN, ""))),
    (
        "x notin (abc,,def),bar,z in (),w",
        sel(
            req("bar", EXISTS),
            req("w", EXISTS),
            req("x", NOT_IN, "abc", "", "def"),
            req("z", IN, ""),
        ),
    ),
    ("x,y in (a)", sel(req("y", IN, "a"), req("x", EXISTS))),
    ("x=a", sel(req("x", EQUALS, "a"))),
    ("x>1", sel(req("x", GT, "1"))),
    ("x<7", sel(req("x", LT, "7"))),
    ("x=a,y!=b", sel(req("x", EQUALS, "a"), req("y", NOT_EQUALS, "b"))),
    (
        "x=a,y!=b,z in (h,i,j)",
        sel(req("x", EQUALS, "a"), req("y", NOT_EQUALS, "b"), req("z", IN, "h", "i", "j")),
    ),
    ("x=a||y=b", None),
    ("x,,y", None),
    (",x,y", None),
    ("x nott in (y)", None),
    ("x notin ( )", sel(req("x", NOT_IN, ""))),
    ("x notin (, a)", sel(req("x", NOT_IN, "", "a"))),
    ("a in (xyz),", None),
    ("a in (xyz)b notin ()", None),
    ("a ", sel(req("a", EXISTS))),
    ("a in (x,y,notin, z,in)", sel(req("a", IN, "in", "notin", "x", "y", "z"))),
    ("a in (xyz abc)", None),  # no comma
    ("a notin(", None),  # badly formed
    ("a (", None),  # cpar
    ("(", None),  # opar
]


@pytest.mark.parametrize(("text", "expected"), SET_SELECTOR_PARSER)
def test_upstream_set_selector_parser(text: str, expected: Selector | None) -> None:
    if expected is None:
        with pytest.raises(SelectorError):
            parse_selector(text)
    else:
        assert parse_selector(text) == expected


# selector_test.go, TestRequirementConstructor
REQUIREMENT_CONSTRUCTOR: list[tuple[str, Operator, tuple[str, ...], bool]] = [
    ("x", IN, (), False),
    ("x", NOT_IN, (), False),
    ("x", IN, ("foo",), True),
    ("x", NOT_IN, ("foo",), True),
    ("x", EXISTS, (), True),
    ("x", DOES_NOT_EXIST, (), True),
    ("1foo", IN, ("bar",), True),
    ("1234", IN, ("bar",), True),
    ("y", GT, ("1",), True),
    ("z", LT, ("6",), True),
    ("foo", GT, ("bar",), False),
    ("barz", LT, ("blah",), False),
    ("a" * 254, EXISTS, (), False),  # breaks the DNS rule that len(key) <= 253
    # ours: the remaining NewRequirement rules
    ("x", EQUALS, ("a", "b"), False),
    ("x", NOT_EQUALS, (), False),
    ("x", EXISTS, ("a",), False),
    ("x", GT, ("1", "2"), False),
    ("x", GT, ("-1",), False),  # "-1" is not a valid label value, upstream refuses it too
    ("x", GT, ("4Gi",), True),  # the quantity extension
    ("x", IN, ("bad value",), False),
    ("x/y/z", EXISTS, (), False),
    ("", EXISTS, (), False),
]


@pytest.mark.parametrize(("key", "operator", "values", "valid"), REQUIREMENT_CONSTRUCTOR)
def test_upstream_requirement_constructor(
    key: str, operator: Operator, values: tuple[str, ...], valid: bool
) -> None:
    if valid:
        requirement = Requirement(key, operator, values)
        assert (requirement.key, requirement.operator) == (key, operator)
    else:
        with pytest.raises(SelectorError):
            Requirement(key, operator, values)


def test_requirement_errors_name_the_field() -> None:
    with pytest.raises(SelectorError) as caught:
        Requirement("Bad Key", IN, ())
    assert [error.loc for error in caught.value.errors] == ["key", "values"]
    with pytest.raises(SelectorError) as caught:
        Requirement("x", GT, ("many",))
    assert [error.loc for error in caught.value.errors] == ["values[0]"]
    assert "integer or a quantity" in caught.value.errors[0].message
    with pytest.raises(SelectorError, match="unknown operator"):
        Requirement("x", "like", ())  # type: ignore[arg-type]
    with pytest.raises(SelectorError, match="sequence of strings"):
        Requirement("x", IN, "ab")  # type: ignore[arg-type]


def test_requirement_normalises_set_values_and_accepts_operator_strings() -> None:
    requirement = Requirement("x", "in", ("b", "a", "b"))  # type: ignore[arg-type]
    assert requirement.operator is IN
    assert requirement.values == ("a", "b")
    assert requirement == req("x", IN, "a", "b")
    assert hash(requirement) == hash(req("x", IN, "b", "a"))
    assert req("x", EQUALS, "a") != req("x", DOUBLE_EQUALS, "a")


# selector_test.go, TestToString
TO_STRING: list[tuple[Selector, str]] = [
    (
        sel(req("x", IN, "abc", "def"), req("y", NOT_IN, "jkl"), req("z", EXISTS)),
        "x in (abc,def),y notin (jkl),z",
    ),
    (
        sel(req("x", NOT_IN, "abc", "def"), req("y", NOT_EQUALS, "jkl"), req("z", DOES_NOT_EXIST)),
        "x notin (abc,def),y!=jkl,!z",
    ),
    (
        sel(req("x", NOT_IN, "abc"), req("y", IN, "jkl", "mno"), req("z", NOT_IN, "")),
        "x notin (abc),y in (jkl,mno),z notin ()",
    ),
    (
        sel(
            req("x", EQUALS, "abc"),
            req("y", DOUBLE_EQUALS, "jkl"),
            req("z", NOT_EQUALS, "a"),
            req("z", EXISTS),
        ),
        "x=abc,y==jkl,z!=a,z",
    ),
    (sel(req("x", GT, "2"), req("y", LT, "8"), req("z", EXISTS)), "x>2,y<8,z"),
    # ours
    (sel(req("memory", GT, "4Gi")), "memory>4Gi"),
    (sel(req("x", IN, "b", "", "a")), "x in (,a,b)"),
    (sel(req("x", EQUALS, "")), "x="),
]


@pytest.mark.parametrize(("selector", "text"), TO_STRING)
def test_upstream_to_string(selector: Selector, text: str) -> None:
    assert str(selector) == text
    assert parse_selector(text) == selector


# selector_test.go, TestRequirementSelectorMatching
REQUIREMENT_SELECTOR_MATCHING: list[tuple[dict[str, str], Selector, bool]] = [
    ({"x": "foo", "y": "baz"}, sel(req("x", IN, "foo"), req("y", NOT_IN, "alpha")), True),
    ({"x": "foo", "y": "baz"}, sel(req("x", IN, "foo"), req("y", IN, "alpha")), False),
    ({"y": ""}, sel(req("x", NOT_IN, ""), req("y", EXISTS)), True),
    ({"y": ""}, sel(req("x", DOES_NOT_EXIST), req("y", EXISTS)), True),
    ({"y": ""}, sel(req("x", NOT_IN, ""), req("y", DOES_NOT_EXIST)), False),
    ({"y": "baz"}, sel(req("x", IN, "")), False),
    ({"z": "2"}, sel(req("z", GT, "1")), True),
    ({"z": "v2"}, sel(req("z", GT, "1")), False),
]


@pytest.mark.parametrize(("labels", "selector", "expected"), REQUIREMENT_SELECTOR_MATCHING)
def test_upstream_requirement_selector_matching(
    labels: dict[str, str], selector: Selector, expected: bool
) -> None:
    assert selector.matches(labels) is expected
    assert all(r.matches(labels) for r in selector.requirements) is expected


# selector_test.go, TestAdd: requirements are kept sorted by key
def test_upstream_add_sorts_by_key() -> None:
    selector = sel(req("key2", EQUALS, "value2"), req("key", IN, "value"))
    assert [r.key for r in selector.requirements] == ["key", "key2"]
    assert selector == sel(req("key", IN, "value"), req("key2", EQUALS, "value2"))


def test_same_key_requirements_keep_their_order() -> None:
    selector = parse_selector("z!=a,a=x,z")
    assert str(selector) == "a=x,z!=a,z"
    assert str(parse_selector("z,a=x,z!=a")) == "a=x,z,z!=a"
    assert parse_selector(str(selector)) == selector


# selector_test.go, TestValidatedSelectorFromSet
def test_upstream_validated_selector_from_set() -> None:
    assert selector_from_dict({"matchLabels": {"key": "val"}}) == sel(req("key", EQUALS, "val"))
    too_long = "axahm2EJ8Phiephe2eixohbee9eGeiyees1thuozi1xoh0GiuH3diewi8iem7Nui"
    with pytest.raises(SelectorError) as caught:
        selector_from_dict({"matchLabels": {"Key": too_long}})
    (error,) = caught.value.errors
    assert error.loc == "matchLabels.Key"
    assert f'invalid label value "{too_long}"' in error.message
    assert "must be no more than 63 characters" in error.message


# selector_test.go, TestRequiresExactMatch, as index terms
def test_index_terms() -> None:
    selector = parse_selector("a=1,b==2,c in (3,4),d,e!=5,f notin (6),!g,mem>4Gi,cpu<8,h in (),i=")
    assert selector.index_terms() == [
        ("a", frozenset({"1"})),
        ("b", frozenset({"2"})),
        ("c", frozenset({"3", "4"})),
        ("cpu", None),
        ("d", None),
        ("h", frozenset({""})),
        ("i", frozenset({""})),
        ("mem", None),
    ]
    assert Selector().index_terms() == []


# apimachinery pkg/apis/meta/v1/helpers_test.go, TestLabelSelectorAsSelector
MATCH_LABELS = {"foo": "bar"}
MATCH_EXPRESSIONS = [{"key": "baz", "operator": "In", "values": ["qux", "norf"]}]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({}, ""),
        ({"matchLabels": MATCH_LABELS}, "foo=bar"),
        ({"matchExpressions": MATCH_EXPRESSIONS}, "baz in (norf,qux)"),
        (
            {"matchLabels": MATCH_LABELS, "matchExpressions": MATCH_EXPRESSIONS},
            "baz in (norf,qux),foo=bar",
        ),
        # ours: null fields are absent fields, and every operator spelling
        ({"matchLabels": None, "matchExpressions": None}, ""),
        (
            {
                "matchExpressions": [
                    {"key": "a", "operator": "NotIn", "values": ["x"]},
                    {"key": "b", "operator": "Exists"},
                    {"key": "c", "operator": "DoesNotExist", "values": []},
                    {"key": "d", "operator": "Gt", "values": ["1"]},
                    {"key": "e", "operator": "Lt", "values": ["500m"]},
                ]
            },
            "a notin (x),b,!c,d>1,e<500m",
        ),
    ],
)
def test_upstream_label_selector_as_selector(obj: Mapping[str, object], expected: str) -> None:
    before = repr(obj)
    selector = selector_from_dict(obj)
    assert str(selector) == expected
    assert selector == parse_selector(expected)
    assert repr(obj) == before  # the input is not modified


def test_upstream_label_selector_exists_with_values_is_an_error() -> None:
    obj = {"matchExpressions": [{"key": "baz", "operator": "Exists", "values": ["qux", "norf"]}]}
    with pytest.raises(SelectorError) as caught:
        selector_from_dict(obj)
    (error,) = caught.value.errors
    assert error.loc == "matchExpressions[0].values"
    assert "'Exists' takes no values, got 2" in error.message


# ---------------------------------------------------------------------------------------------
# The seed examples, verbatim.

CAPABILITIES = {"matchLabels": {"capability.code_generation": "true", "capability.python": "true"}}
ZONE_AND_MEMORY = {
    "matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["eu-west-1"]},
        {"key": "memory", "operator": "Gt", "values": ["4Gi"]},
    ]
}


def test_seed_match_labels() -> None:
    selector = selector_from_dict(CAPABILITIES)
    assert str(selector) == "capability.code_generation=true,capability.python=true"
    both = {"capability.code_generation": "true", "capability.python": "true", "zone": "x"}
    assert selector.matches(both)
    assert not selector.matches({"capability.python": "true"})
    assert not selector.matches({**both, "capability.python": "false"})


@pytest.mark.parametrize(
    ("memory", "expected"), [("8Gi", True), ("2Gi", False), ("4Gi", False), ("4097Mi", True)]
)
def test_seed_zone_and_memory(memory: str, expected: bool) -> None:
    selector = selector_from_dict(ZONE_AND_MEMORY)
    assert selector.matches({"zone": "eu-west-1", "memory": memory}) is expected
    assert not selector.matches({"zone": "us-east-1", "memory": memory})
    assert str(selector) == "memory>4Gi,zone in (eu-west-1)"
    assert as_selector(str(selector)) == selector


# ---------------------------------------------------------------------------------------------
# Gt/Lt with quantities (ours).


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("m>4Gi", {"m": "4294967297"}, True),  # plain integers are quantities
        ("m>4Gi", {"m": "4294967296"}, False),  # strict
        ("m<4Gi", {"m": "4294967295"}, True),
        ("m>4G", {"m": "4Gi"}, True),  # 4*2**30 > 4*10**9
        ("m<4G", {"m": "4Gi"}, False),
        ("cpu>500m", {"cpu": "1"}, True),
        ("cpu<500m", {"cpu": "0.25"}, True),
        ("cpu<1", {"cpu": "999m"}, True),
        ("cpu>1", {"cpu": "1000m"}, False),
        ("n>99999999999999999999", {"n": "100000000000000000000"}, True),  # beyond int64
        ("n>1e3", {"n": "1001"}, True),
        ("n>7", {"n": "007"}, False),  # Go's ParseInt reads "007" as 7, so do we
        ("n>7", {"n": "v8"}, False),  # not a quantity: never matches
        ("n<7", {"n": "v8"}, False),
        ("n<7", {"n": ""}, False),
        ("n<7", {"n": "Gi"}, False),
        ("n<7", {}, False),  # a missing key never matches
        ("n>7", {}, False),
    ],
)
def test_gt_lt_compare_quantities(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


def test_gt_lt_non_quantity_label_values_are_cached_as_misses() -> None:
    selector = parse_selector("n>1")
    for _ in range(3):
        assert not selector.matches({"n": "not-a-number"})
        assert selector.matches({"n": "2"})


@pytest.mark.parametrize(
    ("label_value", "bound", "expected"),
    [
        ("8Gi", "4Gi", 1),
        ("4Gi", "4096Mi", 0),
        ("2Gi", "4Gi", -1),
        ("1", "1000m", 0),
        ("10", "9", 1),
        ("v2", "1", None),
        ("1", "v2", None),
        ("", "1", None),
    ],
)
def test_compare_values(label_value: str, bound: str, expected: int | None) -> None:
    assert compare_values(label_value, bound) == expected


# ---------------------------------------------------------------------------------------------
# Error reporting: the type, the offending part, the position.


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x in (a", "found 'end of string', expected: ',' or ')' at position 7"),
        ("x=a)", "found ')', expected: ',' or 'end of string' at position 3"),
        ("a (", "found '(', expected: in, notin, =, ==, !=, >, < at position 2"),
        ("(", "found '(', expected: !, identifier, or 'end of string' at position 0"),
        ("x,,y", "found ',', expected: identifier after ',' at position 2"),
        ("a in (xyz),", "found 'end of string', expected: identifier after ',' at position 11"),
        ("a in (xyz abc)", "found 'abc', expected: ',' or ')' at position 10"),
        ("a notin(", "found 'end of string', expected: ',', ')' or identifier at position 8"),
        ("x=(a)", "found '(', expected: identifier at position 2"),
        ("!", "found 'end of string', expected: identifier at position 1"),
        ("a,Bad_", 'invalid label key "Bad_"'),
        ("a/b/c", 'invalid label key "a/b/c"'),
        ("x<a", "operator '<' compares numbers"),
        ("x<a", 'got "a" in requirement "x<a" at position 0'),
        ("k>-1", 'invalid label value "-1"'),
        ("x=a||y=b", 'invalid label value "a||y"'),
        ("x\x00,y", 'invalid label key "x\\u0000"'),  # NUL does not end the input (ours)
    ],
)
def test_parse_errors_name_the_offending_part(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(text)
    error = caught.value
    assert error.message.startswith("invalid label selector ")
    assert str(error).startswith(error.message)
    assert message in str(error)
    assert error.status_code == 400


def test_parse_error_quotes_the_whole_selector() -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector("zone in (eu,us),memory>lots")
    assert caught.value.message == 'invalid label selector "zone in (eu,us),memory>lots"'


INVALID_OBJECTS: list[tuple[object, list[str], str]] = [
    (
        {"matchLabels": {"capability.python": True}},
        ["matchLabels.capability.python"],
        "must be a string, got bool (quote it",
    ),
    (
        {"matchLabels": {"capability.python": "yes please"}},
        ["matchLabels.capability.python"],
        'invalid label value "yes please"',
    ),
    ({"matchLabels": {"bad key": "x"}}, ["matchLabels.bad key"], 'invalid label key "bad key"'),
    ({"matchLabels": ["x"]}, ["matchLabels"], "must be an object, got list"),
    ({"matchLabel": {}}, ["matchLabel"], "unknown field"),
    ({"matchExpressions": {"key": "x"}}, ["matchExpressions"], "must be a list, got dict"),
    (
        {"matchExpressions": [{"key": "x", "operator": "In", "values": []}]},
        ["matchExpressions[0].values"],
        "operator 'In' needs at least one value",
    ),
    (
        {"matchExpressions": [{"key": "x", "operator": "NotIn"}]},
        ["matchExpressions[0].values"],
        "operator 'NotIn' needs at least one value",
    ),
    (
        {
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]},
                {"key": "memory", "operator": "Gt", "values": ["lots"]},
            ]
        },
        ["matchExpressions[1].values[0]"],
        'must be an integer or a quantity such as 4Gi, got "lots"',
    ),
    (
        {"matchExpressions": [{"key": "m", "operator": "Lt", "values": ["1", "2"]}]},
        ["matchExpressions[0].values"],
        "operator 'Lt' takes exactly one value, got 2",
    ),
    (
        {"matchExpressions": [{"key": "m", "operator": "Gt"}]},
        ["matchExpressions[0].values"],
        "operator 'Gt' takes exactly one value, got 0",
    ),
    (
        {"matchExpressions": [{"key": "m", "operator": "DoesNotExist", "values": ["a"]}]},
        ["matchExpressions[0].values"],
        "operator 'DoesNotExist' takes no values, got 1",
    ),
    (
        {"matchExpressions": [{"key": "m", "operator": "in", "values": ["a"]}]},
        ["matchExpressions[0].operator"],
        'unsupported operator "in"; expected one of In, NotIn, Exists, DoesNotExist, Gt, Lt',
    ),
    (
        {"matchExpressions": [{"operator": "Exists"}]},
        ["matchExpressions[0].key"],
        "required",
    ),
    (
        {"matchExpressions": [{"key": "m"}]},
        ["matchExpressions[0].operator"],
        "required",
    ),
    (
        {"matchExpressions": [{"key": "Bad Key", "operator": "Exists"}]},
        ["matchExpressions[0].key"],
        'invalid label key "Bad Key"',
    ),
    (
        {"matchExpressions": [{"key": "m", "operator": "In", "values": "abc"}]},
        ["matchExpressions[0].values"],
        "must be a list, got str",
    ),
    (
        {"matchExpressions": [{"key": "m", "operator": "In", "values": [8]}]},
        ["matchExpressions[0].values[0]"],
        "must be a string, got int",
    ),
    (
        {"matchExpressions": [{"key": "m", "operator": "Exists", "value": "x"}]},
        ["matchExpressions[0].value"],
        "unknown field",
    ),
    ({"matchExpressions": ["m"]}, ["matchExpressions[0]"], "must be an object, got str"),
    ("zone=a", [""], "must be an object, got str"),
]


@pytest.mark.parametrize(("obj", "locs", "message"), INVALID_OBJECTS)
def test_invalid_objects_name_the_part(obj: object, locs: list[str], message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        selector_from_dict(obj)  # type: ignore[arg-type]
    error = caught.value
    assert [e.loc for e in error.errors] == locs
    assert message in error.errors[0].message
    assert message in str(error)


def test_invalid_object_reports_every_problem() -> None:
    with pytest.raises(SelectorError) as caught:
        selector_from_dict(
            {
                "matchLabels": {"ok": "yes", "bad": 1},
                "matchExpressions": [
                    {"key": "a", "operator": "Exists"},
                    {"key": "b", "operator": "Gt", "values": ["x"]},
                    {"key": "c", "operator": "Nope"},
                ],
                "extra": True,
            }
        )
    assert [e.loc for e in caught.value.errors] == [
        "extra",
        "matchLabels.bad",
        "matchExpressions[1].values[0]",
        "matchExpressions[2].operator",
    ]


# ---------------------------------------------------------------------------------------------
# Bounds: whatever the form, a selector costs a bounded amount to parse and to match.


def _absent(count: int) -> str:
    return ",".join(f"!k{i}" for i in range(count))


def _expressions(count: int, values: int = 0) -> dict[str, object]:
    operator = "In" if values else "DoesNotExist"
    return {
        "matchExpressions": [
            {"key": f"k{i}", "operator": operator, "values": [f"v{j}" for j in range(values)]}
            for i in range(count)
        ]
    }


def test_selectors_at_the_bounds_are_accepted() -> None:
    assert len(parse_selector(_absent(MAX_REQUIREMENTS)).requirements) == MAX_REQUIREMENTS
    values = ",".join(f"v{i}" for i in range(MAX_VALUES))
    assert len(parse_selector(f"zone in ({values})").requirements[0].values) == MAX_VALUES
    assert len(selector_from_dict(_expressions(MAX_REQUIREMENTS)).requirements) == 64
    per = MAX_TOTAL_VALUES // 4
    assert sum(len(r.values) for r in selector_from_dict(_expressions(4, per)).requirements) == (
        MAX_TOTAL_VALUES
    )


def _selector_of(requirements: tuple[Requirement, ...]) -> Selector:
    return Selector(requirements)


def _in_requirement(values: tuple[str, ...]) -> Requirement:
    return Requirement("zone", IN, values)


@pytest.mark.parametrize(
    ("build", "given", "loc", "message"),
    [
        (parse_selector, _absent(MAX_REQUIREMENTS + 1), "",
         f"more than {MAX_REQUIREMENTS} requirements at position"),
        (parse_selector, "zone in (" + ",".join("v" * 400) + ")", "",
         f"400 values; at most {MAX_VALUES} in one requirement"),
        (parse_selector, "x" * (MAX_SELECTOR_LENGTH + 1), "",
         f"{MAX_SELECTOR_LENGTH + 1} characters; at most {MAX_SELECTOR_LENGTH}"),
        (selector_from_dict, _expressions(23_000), "matchExpressions",
         f"23000 requirements; at most {MAX_REQUIREMENTS}"),
        (selector_from_dict, {"matchLabels": {f"k{i}": "v" for i in range(65)}},
         "matchLabels", f"65 requirements; at most {MAX_REQUIREMENTS}"),
        (selector_from_dict, _expressions(1, 100_000), "matchExpressions",
         f"100000 values in all; at most {MAX_TOTAL_VALUES}"),
        (selector_from_dict, _expressions(5, MAX_VALUES), "matchExpressions",
         f"{5 * MAX_VALUES} values in all; at most {MAX_TOTAL_VALUES}"),
        (_selector_of, tuple(req(f"k{i}", EXISTS) for i in range(65)), "requirements",
         f"65 requirements; at most {MAX_REQUIREMENTS}"),
        (_in_requirement, tuple(f"v{i}" for i in range(300)), "values",
         f"300 values; at most {MAX_VALUES}"),
    ],
    ids=["string-requirements", "string-values", "string-length", "object-expressions",
         "object-labels", "object-values", "object-total-values", "selector", "requirement"],
)  # fmt: skip
def test_selectors_over_the_bounds_are_refused_cheaply(
    build: Callable[[Any], object], given: Any, loc: str, message: str
) -> None:
    start = time.thread_time()
    with pytest.raises(SelectorError) as caught:
        build(given)
    # Counted before anything is parsed or validated one by one (CPU time of this thread).
    assert time.thread_time() - start < 0.05
    assert any(e.loc == loc and message in e.message for e in caught.value.errors), caught.value


# ---------------------------------------------------------------------------------------------
# as_selector and value semantics.


def test_as_selector_accepts_every_form() -> None:
    selector = parse_selector("zone=a")
    assert as_selector(None) == Selector()
    assert as_selector(None).matches({"anything": "at all"})
    assert as_selector("") == Selector()
    assert as_selector(selector) is selector
    assert as_selector("zone=a") == selector
    assert as_selector({"matchLabels": {"zone": "a"}}) == selector
    with pytest.raises(SelectorError, match="expected a string, an object or a Selector"):
        as_selector(42)  # type: ignore[arg-type]
    with pytest.raises(SelectorError, match="must be a string"):
        parse_selector(None)  # type: ignore[arg-type]


def test_selector_rejects_non_requirements() -> None:
    with pytest.raises(SelectorError, match="not a Requirement"):
        Selector(("x=a",))  # type: ignore[arg-type]


def test_selectors_pickle_and_hash() -> None:
    selector = selector_from_dict(ZONE_AND_MEMORY)
    copy = pickle.loads(pickle.dumps(selector))
    assert copy == selector
    assert hash(copy) == hash(selector)
    assert copy.matches({"zone": "eu-west-1", "memory": "8Gi"})
    assert not copy.matches({"zone": "eu-west-1", "memory": "4Gi"})
    assert "_steps" not in repr(selector)


def test_requirement_matches_on_its_own() -> None:
    assert req("x", NOT_EQUALS, "a").matches({})
    assert req("x", NOT_IN, "a").matches({})
    assert req("x", DOES_NOT_EXIST).matches({})
    assert not req("x", EQUALS, "a").matches({})
    assert not req("x", IN, "a").matches({})
    assert req("x", IN, "a", "b").matches({"x": "b"})
    assert not req("x", NOT_IN, "a", "b").matches({"x": "b"})
    assert str(req("x", DOUBLE_EQUALS, "a")) == "x==a"


# ---------------------------------------------------------------------------------------------
# Properties.

name_parts = st.one_of(
    st.sampled_from(["x", "y", "zone", "in", "notin", "a.b", "A_1"]),
    st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True),
)
prefixes = st.lists(
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True), min_size=1, max_size=3
).map(".".join)
keys = st.one_of(name_parts, st.builds(lambda p, n: f"{p}/{n}", prefixes, name_parts))
label_values = st.one_of(
    st.sampled_from(["", "a", "b", "in", "notin", "true"]),
    st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True),
)
si_suffixes = st.sampled_from(
    ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
)
quantities = st.one_of(
    st.integers(min_value=0, max_value=10**20).map(str),
    st.builds(lambda n, s: f"{n}{s}", st.integers(min_value=0, max_value=4096), si_suffixes),
    st.builds(
        lambda n, f, s: f"{n}.{f}{s}",
        st.integers(min_value=0, max_value=99),
        st.integers(min_value=0, max_value=999),
        si_suffixes,
    ),
    st.builds(
        lambda n, e: f"{n}e{e}",
        st.integers(min_value=1, max_value=99),
        st.integers(min_value=-12, max_value=12),
    ),
)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    key = draw(keys)
    operator = draw(st.sampled_from(list(Operator)))
    values: list[str]
    if operator in (IN, NOT_IN):
        values = draw(st.lists(label_values, min_size=1, max_size=4))
    elif operator in (EXISTS, DOES_NOT_EXIST):
        values = []
    elif operator in (GT, LT):
        values = [draw(quantities)]
    else:
        values = [draw(label_values)]
    return Requirement(key, operator, tuple(values))


selectors = st.lists(requirements(), max_size=5).map(lambda rs: Selector(tuple(rs)))


@st.composite
def selectors_and_labels(draw: st.DrawFn) -> tuple[Selector, dict[str, str]]:
    """A selector and label sets built from its own keys and values, so matches are common."""
    selector = draw(selectors)
    own_keys = [r.key for r in selector.requirements]
    own_values = [v for r in selector.requirements for v in r.values]
    key_choice = st.sampled_from(own_keys) | keys if own_keys else keys
    value_choice = st.one_of(
        *([st.sampled_from(own_values)] if own_values else []), label_values, quantities
    )
    labels = draw(st.dictionaries(key_choice, value_choice, max_size=6))
    return selector, labels


def oracle_matches(selector: Selector, labels: Labels) -> bool:
    """A direct reading of upstream Requirement.Matches plus our quantity rule."""
    for requirement in selector.requirements:
        present = requirement.key in labels
        value = labels.get(requirement.key, "")
        operator = requirement.operator
        if operator in (EQUALS, DOUBLE_EQUALS, IN):
            ok = present and value in requirement.values
        elif operator in (NOT_EQUALS, NOT_IN):
            ok = not present or value not in requirement.values
        elif operator is EXISTS:
            ok = present
        elif operator is DOES_NOT_EXIST:
            ok = not present
        else:
            bound = parse_quantity(requirement.values[0])
            ok = present and is_quantity(value)
            if ok:
                number = parse_quantity(value)
                ok = number > bound if operator is GT else number < bound
        if not ok:
            return False
    return True


@given(selectors)
def test_property_string_round_trip(selector: Selector) -> None:
    text = str(selector)
    parsed = parse_selector(text)
    assert parsed == selector
    assert str(parsed) == text
    assert as_selector(text) == selector


@given(selectors_and_labels())
def test_property_parsed_selector_matches_like_the_original(
    case: tuple[Selector, dict[str, str]],
) -> None:
    selector, labels = case
    parsed = parse_selector(str(selector))
    expected = oracle_matches(selector, labels)
    assert selector.matches(labels) is expected
    assert parsed.matches(labels) is expected
    assert all(r.matches(labels) for r in selector.requirements) is expected


@given(selectors_and_labels())
def test_property_index_terms_hold_for_every_match(case: tuple[Selector, dict[str, str]]) -> None:
    selector, labels = case
    if selector.matches(labels):
        for key, values in selector.index_terms():
            assert key in labels
            assert values is None or labels[key] in values


@given(st.text(alphabet="ab =!(),<>in\t", max_size=16))
def test_property_parser_only_raises_selector_errors(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorError:
        return  # refusing is fine; any other exception type fails the test
    assert parse_selector(str(selector)) == selector
