"""Tests for node_registry.quantity: upstream's tables, our deliberate deviations, properties."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_registry.errors import ValidationError
from node_registry.quantity import (
    MAX_EXPONENT,
    MAX_QUANTITY_LENGTH,
    is_quantity,
    parse_quantity,
    quantity_or_none,
)


def dec(mantissa: int, exponent: int) -> Fraction:
    """Upstream's decQuantity(mantissa, exponent, _) as an exact value."""
    return Fraction(mantissa) * Fraction(10) ** exponent


# apimachinery pkg/api/resource/quantity_test.go, TestQuantityParse: the entries whose value Go
# keeps exactly (the rounding and capping entries are in DEVIATIONS below).
UPSTREAM_PARSE = [
    ("0", dec(0, 0)),
    ("0n", dec(0, 0)),
    ("0u", dec(0, 0)),
    ("0m", dec(0, 0)),
    ("0Ki", dec(0, 0)),
    ("0k", dec(0, 0)),
    ("0Mi", dec(0, 0)),
    ("0M", dec(0, 0)),
    ("0Gi", dec(0, 0)),
    ("0G", dec(0, 0)),
    ("0Ti", dec(0, 0)),
    ("0T", dec(0, 0)),
    ("1", dec(1, 0)),
    ("1Ki", dec(1024, 0)),
    ("8Ki", dec(8 * 1024, 0)),
    ("7Mi", dec(7 * 1024**2, 0)),
    ("6Gi", dec(6 * 1024**3, 0)),
    ("5Ti", dec(5 * 1024**4, 0)),
    ("4Pi", dec(4 * 1024**5, 0)),
    ("3Ei", dec(3 * 1024**6, 0)),
    ("10Ti", dec(10 * 1024**4, 0)),
    ("100Ti", dec(100 * 1024**4, 0)),
    ("5n", dec(5, -9)),
    ("4u", dec(4, -6)),
    ("3m", dec(3, -3)),
    ("9", dec(9, 0)),
    ("8k", dec(8, 3)),
    ("50k", dec(5, 4)),
    ("7M", dec(7, 6)),
    ("6G", dec(6, 9)),
    ("5T", dec(5, 12)),
    ("40T", dec(4, 13)),
    ("300T", dec(3, 14)),
    ("2P", dec(2, 15)),
    ("1E", dec(1, 18)),
    ("1E-3", dec(1, -3)),
    ("1e3", dec(1, 3)),
    ("1E6", dec(1, 6)),
    ("1e9", dec(1, 9)),
    ("1E12", dec(1, 12)),
    ("1e15", dec(1, 15)),
    ("1E18", dec(1, 18)),
    ("1e14", dec(1, 14)),
    ("1e13", dec(1, 13)),
    ("100.035k", dec(100035, 0)),
    ("0.001", dec(1, -3)),
    ("0.0005k", dec(5, -1)),
    ("0.005", dec(5, -3)),
    ("0.05", dec(5, -2)),
    ("0.5", dec(5, -1)),
    ("0.00050k", dec(5, -1)),
    ("0.00500", dec(5, -3)),
    ("0.05000", dec(5, -2)),
    ("0.50000", dec(5, -1)),
    ("0.5e0", dec(5, -1)),
    ("0.5e-1", dec(5, -2)),
    ("0.5e-2", dec(5, -3)),
    ("10.035M", dec(10035, 3)),
    ("1.2e3", dec(12, 2)),
    ("1.3E+6", dec(13, 5)),
    ("1.40e9", dec(14, 8)),
    ("1.53E12", dec(153, 10)),
    ("1.6e15", dec(16, 14)),
    ("1.7E18", dec(17, 17)),
    ("9.01", dec(901, -2)),
    ("8.1k", dec(81, 2)),
    ("7.123456M", dec(7123456, 0)),
    ("6.987654321G", dec(6987654321, 0)),
    ("5.444T", dec(5444, 9)),
    ("40.1T", dec(401, 11)),
    ("300.2T", dec(3002, 11)),
    ("2.5P", dec(25, 14)),
    ("1.01E", dec(101, 16)),
    ("12E", dec(12, 18)),
    ("100.035Ki", dec(10243584, -2)),
    ("0.5Mi", dec(512 * 1024, 0)),
    ("0.05Gi", dec(536870912, -1)),
    ("0.025Ti", dec(274877906944, -1)),
    (".001", dec(1, -3)),
    (".0001k", dec(100, -3)),
    ("1.", dec(1, 0)),
    ("1.G", dec(1, 9)),
]


@pytest.mark.parametrize(("text", "expected"), UPSTREAM_PARSE)
def test_upstream_parse_table(text: str, expected: Fraction) -> None:
    assert parse_quantity(text) == expected
    # Upstream also parses every entry with an explicit sign.
    assert parse_quantity("+" + text) == expected
    assert parse_quantity("-" + text) == -expected
    assert is_quantity(text)


# Entries of the same upstream table where Go rounds to 1n or caps binarySI at 2**63-1; we keep
# the exact written value (see the module docstring), so these pin the difference down.
DEVIATIONS = [
    ("3.001n", Fraction(3001, 10**12)),  # Go: 4n
    ("1.1E-9", Fraction(11, 10**10)),  # Go: 2n
    ("0.0000000001", Fraction(1, 10**10)),  # Go: 1n
    ("0.9n", Fraction(9, 10**10)),  # Go: 1n
    ("0.00000012345", Fraction(12345, 10**11)),  # Go: 124n
    ("9Ei", Fraction(9 * 2**60)),  # Go: 2**63-1
    ("9223372036854775807Ki", Fraction((2**63 - 1) * 1024)),  # Go: 2**63-1
    ("0.000000000001Ki", Fraction(1024, 10**12)),  # Go: 2n
]


@pytest.mark.parametrize(("text", "expected"), DEVIATIONS)
def test_exact_where_upstream_rounds(text: str, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


# quantity_test.go, TestQuantityString: each canonical form next to an equal alternate spelling.
UPSTREAM_EQUAL_SPELLINGS = [
    ("1Gi", "1024Mi"),
    ("300Mi", "307200Ki"),
    ("1001Gi", "1025024Mi"),
    ("1Ti", "1024Gi"),
    ("5", "5000m"),
    ("500m", "0.5"),
    ("1G", "1000M"),
    ("1G", "0.001T"),
    ("1m", "1000u"),
    ("1080m", "1.08"),
    ("1080m", "1080000000n"),
    ("1e21", "1000E"),
    ("5e21", "5000E"),
    ("1e24", "1000000E"),
    ("1e9", ".001e12"),
    ("1e-3", "0.001e0"),
    ("1e-9", "1000e-12"),
    ("0", "00"),
    # TestQuantityParseEmit
    ("1Gi", "1024Mi"),
    ("1G", "1000M"),
    ("1024m", ".001Ki"),
    ("1024u", ".000001Ki"),
    ("1024n", ".000000001Ki"),
]


@pytest.mark.parametrize(("canonical", "alternate"), UPSTREAM_EQUAL_SPELLINGS)
def test_upstream_equal_spellings(canonical: str, alternate: str) -> None:
    assert parse_quantity(canonical) == parse_quantity(alternate)


# quantity_test.go, TestQuantityCmp
@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [("0", "0", 0), ("100m", "50m", 1), ("50m", "100m", -1), ("10000T", "100Gi", 1)],
)
def test_upstream_cmp(left: str, right: str, expected: int) -> None:
    a, b = parse_quantity(left), parse_quantity(right)
    assert (a > b) - (a < b) == expected


def test_e_is_exa_alone_and_an_exponent_with_digits() -> None:
    assert parse_quantity("1E") == 10**18
    assert parse_quantity("1E3") == 1000
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("2E-2") == Fraction(1, 50)


# quantity_test.go, TestQuantityParse "invalid" list, then Go-accepted inputs we refuse on purpose
# (a missing number), then inputs that are simply not in the grammar.
INVALID = [
    "1.1.M",
    "1+1.0M",
    "0.1mi",
    "0.1am",
    "aoeu",
    ".5i",
    "1i",
    "-3.01i",
    "-3.01e-",
    " 1",
    "1 ",
    "",
    "Non-Numeric",  # TestQuantityParseNonNumericPanic
    "Ki",
    "m",
    "-",
    "+",
    ".",
    "-.",
    "1e",
    "1e+",
    "1e1.5",
    "1K",
    "1ki",
    "1KiB",
    "1Gi\n",
    "\n1",
    "1_000",
    "1,5",
    "0x10",
    "inf",
    "NaN",
    "1e3Ki",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: Go only reads ASCII digits
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text: str) -> None:
    assert not is_quantity(text)
    assert quantity_or_none(text) is None
    with pytest.raises(ValidationError) as caught:
        parse_quantity(text)
    assert str(caught.value).startswith("invalid quantity ")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1ki", 'invalid quantity "1ki": unknown suffix "ki"'),
        ("1Gi\n", 'invalid quantity "1Gi\\n": unknown suffix "Gi\\n"'),
        ("", 'invalid quantity "": the empty string is not a quantity'),
        ("Ki", 'invalid quantity "Ki": it must start with a number'),
        ("1e5000", f'invalid quantity "1e5000": exponent 5000 is outside ±{MAX_EXPONENT}'),
    ],
)
def test_error_message_quotes_text_and_reason(text: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=r"^invalid quantity") as caught:
        parse_quantity(text)
    assert str(caught.value).startswith(reason)


def test_limits_refuse_hostile_input() -> None:
    assert parse_quantity(f"1e{MAX_EXPONENT}") == 10**MAX_EXPONENT
    assert parse_quantity(f"1e-{MAX_EXPONENT}") == Fraction(1, 10**MAX_EXPONENT)
    assert not is_quantity(f"1e{MAX_EXPONENT + 1}")
    assert not is_quantity("1e99999999999999999999")
    longest = "1" * MAX_QUANTITY_LENGTH
    assert parse_quantity(longest) == int(longest)
    with pytest.raises(ValidationError, match="longer than"):
        parse_quantity(longest + "1")


def test_validation_error_is_the_registry_error_type() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_quantity("lots")
    assert caught.value.status_code == 422


# An independent oracle: decimal.Decimal reads the number (and the e/E exponent form) itself,
# and the SI multipliers are written out here rather than taken from the module.
ORACLE_MULTIPLIERS: dict[str, int | Fraction] = {
    "": 1,
    "n": Fraction(1, 1000**3),
    "u": Fraction(1, 1000**2),
    "m": Fraction(1, 1000),
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "E": 1000**6,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}

digits = st.text(alphabet="0123456789", min_size=1, max_size=12)
numbers = st.one_of(
    digits,
    st.builds(lambda a, b: f"{a}.{b}", digits, digits),
    st.builds(lambda a: f"{a}.", digits),
    st.builds(lambda b: f".{b}", digits),
)
signs = st.sampled_from(["", "+", "-"])


@given(sign=signs, number=numbers, suffix=st.sampled_from(sorted(ORACLE_MULTIPLIERS)))
def test_property_si_suffixes_match_oracle(sign: str, number: str, suffix: str) -> None:
    text = f"{sign}{number}{suffix}"
    expected = Fraction(Decimal(sign + number)) * ORACLE_MULTIPLIERS[suffix]
    assert parse_quantity(text) == expected
    assert is_quantity(text)


@given(
    sign=signs,
    number=numbers,
    e=st.sampled_from(["e", "E"]),
    exponent_sign=signs,
    exponent=st.integers(min_value=0, max_value=40),
)
def test_property_exponents_match_oracle(
    sign: str, number: str, e: str, exponent_sign: str, exponent: int
) -> None:
    text = f"{sign}{number}{e}{exponent_sign}{exponent}"
    assert parse_quantity(text) == Fraction(Decimal(text))


@given(st.text(max_size=12))
def test_property_is_quantity_agrees_with_parse(text: str) -> None:
    value = quantity_or_none(text)
    assert is_quantity(text) is (value is not None)
    if value is None:
        with pytest.raises(ValidationError):
            parse_quantity(text)
    else:
        assert parse_quantity(text) == value
