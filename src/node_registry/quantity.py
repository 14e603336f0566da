"""Kubernetes ``resource.Quantity`` strings ("500m", "4Gi", "1.5e3") parsed to exact fractions.

Grammar, from apimachinery ``pkg/api/resource/quantity.go``::

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= <number> | <sign><number>          <sign> ::= "+" | "-"
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>   (an integer exponent)

"1E" is 10**18 (the decimalSI suffix) while "1E3" is 1000 (an exponent), as in Go.

Deliberate differences from the Go parser, all on inputs no one writes on purpose:

* The value is exact. Go rounds anything finer than 1n up to 1n ("0.9n" becomes "1n") and caps
  binarySI values at 2**63-1 ("9Ei"); we keep the written value, because we only compare.
* The number part is required. Go's scanner reads a missing number as zero, so it accepts "Ki",
  "m", "-", "." and "-."; the documented grammar does not, and a label value of "m" being 0 in a
  ``Gt``/``Lt`` comparison would be a surprise, so we refuse them.
* Inputs longer than ``MAX_QUANTITY_LENGTH`` characters and exponents beyond
  ±``MAX_EXPONENT`` are refused, so a hostile "1e999999999" cannot make us build a huge integer.
"""

from __future__ import annotations

import functools
import json
import re
from fractions import Fraction
from typing import Final

from node_registry.errors import ValidationError

__all__ = [
    "MAX_EXPONENT",
    "MAX_QUANTITY_LENGTH",
    "is_quantity",
    "parse_quantity",
    "quantity_or_none",
]

MAX_QUANTITY_LENGTH: Final = 256
MAX_EXPONENT: Final = 1000

_SUFFIX_MULTIPLIERS: Final[dict[str, Fraction]] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}

# Groups: sign, integer digits, fraction digits (after "<digits>."), fraction digits (".<digits>"),
# SI suffix, exponent. The SI alternative comes first so "1E" is exa; the regex backtracks to the
# exponent alternative for "1E3". \d would also accept non-ASCII digits, hence [0-9].
_QUANTITY_RE: Final = re.compile(
    r"([+-]?)(?:([0-9]+)(?:\.([0-9]*))?|\.([0-9]+))"
    r"(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?[0-9]+))?"
)
_NUMBER_PREFIX_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_EXPONENT_RE: Final = re.compile(r"[eE][+-]?[0-9]+")


def _quote(text: str) -> str:
    """Quote ``text`` with escapes, so a trailing newline or a control character is visible."""
    return json.dumps(text, ensure_ascii=False)


@functools.lru_cache(maxsize=4096)
def quantity_or_none(text: str) -> Fraction | None:
    """The exact value of ``text``, or None when it is not a quantity; never raises.

    This is the hot path of ``Gt``/``Lt`` selector matching, so it is cached and returns None
    instead of raising (invalid label values are an ordinary case there, not an error).
    """
    if len(text) > MAX_QUANTITY_LENGTH:
        return None
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        return None
    sign, whole, frac_after, frac_only, si_suffix, exponent = match.groups()
    fraction_digits = frac_after or frac_only or ""
    numerator = int((whole or "") + fraction_digits or "0")
    denominator = 10 ** len(fraction_digits)
    if sign == "-":
        numerator = -numerator
    value = Fraction(numerator, denominator)
    if exponent is not None:
        power = int(exponent)
        if abs(power) > MAX_EXPONENT:
            return None
        return value * Fraction(10) ** power
    return value * _SUFFIX_MULTIPLIERS[si_suffix or ""]


def is_quantity(text: str) -> bool:
    """Whether ``text`` is a Kubernetes quantity (full match: no surrounding whitespace)."""
    return quantity_or_none(text) is not None


def parse_quantity(text: str) -> Fraction:
    """The exact value of the quantity ``text``; ValidationError says why when it is not one."""
    value = quantity_or_none(text)
    if value is None:
        raise ValidationError(f"invalid quantity {_quote(text)}: {_why_not(text)}")
    return value


def _why_not(text: str) -> str:
    """Explain why ``quantity_or_none`` refused ``text``; only called on the error path."""
    if not text:
        return "the empty string is not a quantity"
    if len(text) > MAX_QUANTITY_LENGTH:
        return f"longer than {MAX_QUANTITY_LENGTH} characters"
    number = _NUMBER_PREFIX_RE.match(text)
    if number is None:
        return "it must start with a number such as 1, 1.5 or .5, optionally signed"
    suffix = text[number.end() :]
    if _EXPONENT_RE.fullmatch(suffix):
        return f"exponent {suffix[1:]} is outside ±{MAX_EXPONENT}"
    return (
        f"unknown suffix {_quote(suffix)}; expected one of n, u, m, k, M, G, T, P, E, "
        "Ki, Mi, Gi, Ti, Pi, Ei, an integer exponent such as e3, or none"
    )
