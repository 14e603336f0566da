"""CEL expressions: the one place the CEL library is used; its errors become ours here.

The library is ``common-expression-language`` (Python bindings of the Rust ``cel`` crate):
it keeps cel-go's semantics where Kubernetes relies on them (heterogeneous numeric equality,
``has()``, the macros, RE2 regexes), its errors carry a position and a caret, and it
evaluates ten passport rules in about 0.1 ms (docs/admission.md has the comparison with
cel-python). Kubernetes' string, set and math extension functions come from its ``stdlib``.

Cost. Kubernetes estimates an expression's worst-case cost from its typed AST; the binding
exposes no AST and cannot interrupt an evaluation (it holds the GIL until done). So the cost
is bounded ahead by two static limits — the length of the source and how deeply comprehension
macros (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) nest, since each level
multiplies the work by the size of a list — and each evaluation is timed: one over its time
budget is an error, which a policy with ``failurePolicy: Fail`` turns into a refusal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cel
from cel.stdlib import EXTENSIONS

#: cel-go's extension libraries that Kubernetes' CEL environment also enables.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: function
    for library in ("strings", "sets", "math")
    for name, function in EXTENSIONS[library].items()
}

_TOKENS = re.compile(
    r"""(?P<string>[rRbB]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))"""
    r"|(?P<macro>\.\s*(?:all|exists_one|exists|map|filter)\s*\()"
    r"|(?P<open>\()|(?P<close>\))"
)


def comprehension_depth(source: str) -> int:
    """How deeply comprehension macros nest in ``source`` (string literals skipped)."""
    opened: list[bool] = []  # per open parenthesis: did it start a comprehension?
    depth = deepest = 0
    for token in _TOKENS.finditer(source):
        if token.lastgroup == "macro":
            opened.append(True)
            depth += 1
            deepest = max(deepest, depth)
        elif token.lastgroup == "open":
            opened.append(False)
        elif token.lastgroup == "close" and opened and opened.pop():
            depth -= 1
    return deepest


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one expression: checked at compile time, and on each evaluation's time."""

    max_length: int = 4096
    max_comprehension_depth: int = 2
    max_evaluation_seconds: float = 0.05


DEFAULT_LIMITS = Limits()


class ExpressionError(Exception):
    """An expression did not compile, or failed while it was evaluated; ``str`` says why."""


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled CEL expression, evaluated against named values."""

    source: str
    program: cel.Program
    limits: Limits
    #: Seconds since an arbitrary point; a seam for tests, ``time.perf_counter`` otherwise.
    timer: Callable[[], float] = time.perf_counter

    def evaluate(self, context: Activation) -> Any:
        started = self.timer()
        try:
            value = self.program.execute(context)
        except (KeyError, IndexError) as exc:
            # The binding raises a bare KeyError('taints'); say it as cel-go does.
            raise ExpressionError(f"no such key: {exc.args[0] if exc.args else exc}") from None
        except Exception as exc:
            # The binding raises ValueError, TypeError, RuntimeError, ZeroDivisionError... for
            # runtime errors; nothing else happens inside a pure evaluation.
            raise ExpressionError(str(exc)) from None
        elapsed = self.timer() - started
        if elapsed > self.limits.max_evaluation_seconds:
            raise ExpressionError(
                f"evaluation took {elapsed * 1000:.1f} ms, over its budget of "
                f"{self.limits.max_evaluation_seconds * 1000:g} ms"
            )
        return value


def compile_expression(
    source: str, limits: Limits = DEFAULT_LIMITS, *, timer: Callable[[], float] = time.perf_counter
) -> Expression:
    """``source`` compiled; ``ExpressionError`` with the parser's message or the limit broken."""
    if len(source) > limits.max_length:
        raise ExpressionError(
            f"the expression is {len(source)} characters long, over the limit of "
            f"{limits.max_length}"
        )
    depth = comprehension_depth(source)
    if depth > limits.max_comprehension_depth:
        raise ExpressionError(
            f"comprehensions (all, exists, exists_one, map, filter) nest {depth} deep, over "
            f"the limit of {limits.max_comprehension_depth}: each level multiplies the cost"
        )
    try:
        program = cel.compile(source)
    except ValueError as exc:
        raise ExpressionError(str(exc)) from None
    return Expression(source, program, limits, timer)


#: The named values expressions see; converted to CEL values once, when it is built.
Activation = cel.Context


def context(values: Mapping[str, Any]) -> Activation:
    """The activation for one admission request: ``values`` and the extension functions."""
    return cel.Context(dict(values), FUNCTIONS)
