"""Admission in CEL: ten passport rules per registration, our binding against cel-python.

    python bench/bench_admission.py --write docs/benchmarks.md

Measures, on the seed's coder-agent passport: compiling one expression, and evaluating the
ten rules of one registration — through ``Admission.review`` (common-expression-language,
the library the registry uses, the passport converted to CEL values once per request) and
through cel-python 0.5.0 (the pure-Python alternative, from the bench extra), side by side
in the same run. Target: well under 1 ms per rule.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from node_registry.admission import Admission, AdmissionRequest, compile_policy
from sections import write_section

ROOT = Path(__file__).resolve().parent.parent

RULES = [
    'object.spec.capabilities.exists(c, c.name == "code_generation") ? '
    'object.metadata.nodeType == "agent" : true',
    '!object.spec.capabilities.exists(c, c.name == "gpu_inference") || '
    '"gpu" in object.spec.resources',
    'object.metadata.labels.all(k, !k.startsWith("team/") || '
    "object.metadata.name.startsWith(object.metadata.labels[k]))",
    'object.metadata.name.matches("^[a-z0-9-]+$")',
    "size(object.spec.capabilities) <= 32",
    "oldObject == null || oldObject.metadata.nodeType == object.metadata.nodeType",
    'request.operation == "CREATE" || request.userInfo.role == "admin"',
    'has(object.spec.endpoint) && object.spec.endpoint.protocol in ["mindbus", "http", "grpc"]',
    'object.spec.capabilities.all(c, !has(c.version) || c.version.matches("^[0-9.]+$"))',
    'object.spec.capabilities.map(c, c.name).filter(n, n.startsWith("code")).size() <= 4',
]


def timed(call: Callable[[], Any], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return sorted(samples)


def row(name: str, samples: list[float], per: int) -> str:
    median = statistics.median(samples) * 1000
    p99 = samples[int(len(samples) * 0.99)] * 1000
    return f"| {name} | {median:.3f} | {p99:.3f} | {median / per:.4f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--write", type=Path, help="replace this benchmark's section there")
    args = parser.parse_args()
    passport = yaml.safe_load((ROOT / "examples" / "coder-agent.yaml").read_text())
    request = AdmissionRequest("CREATE", passport, username="ops", role="admin")
    doc = {
        "apiVersion": "ai_team.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "bench"},
        "spec": {"validations": [{"expression": r} for r in RULES]},
    }
    admission = Admission([compile_policy(doc)])
    assert admission.review(request) == [], "every rule must hold on the seed passport"
    rows = [
        row(
            "common-expression-language 0.10 (`Admission.review`)",
            timed(lambda: admission.review(request), args.repeat),
            len(RULES),
        )
    ]
    compile_ours = timed(lambda: compile_policy(doc), 50)
    compiles = [
        f"common-expression-language: {statistics.median(compile_ours) * 1000 / len(RULES):.3f} ms"
    ]
    try:
        import celpy
        from celpy.adapter import json_to_cel
    except ImportError:
        rows.append("| cel-python 0.5.0 | not installed (`pip install -e '.[bench]'`) | | |")
    else:
        env = celpy.Environment()
        programs = [env.program(env.compile(r)) for r in RULES]
        activation = request.activation()

        def cel_python() -> None:
            values = {k: json_to_cel(v) for k, v in activation.items()}
            for program in programs:
                assert program.evaluate(values)

        rows.append(
            row("cel-python 0.5.0 (pure Python)", timed(cel_python, args.repeat // 4), len(RULES))
        )
        compile_py = timed(lambda: [env.program(env.compile(r)) for r in RULES], 20)
        compiles.append(f"cel-python: {statistics.median(compile_py) * 1000 / len(RULES):.3f} ms")
    body = "\n".join(
        [
            "## Admission: 10 CEL rules per registration (`bench/bench_admission.py`)",
            "",
            "The seed's coder-agent passport against ten typical rules (macros, regexes, map",
            "keys, `oldObject`, `request`); both libraries in the same run.",
            "",
            "| library | median ms (10 rules) | p99 ms | ms per rule |",
            "|---|---|---|---|",
            *rows,
            "",
            "Compiling, per expression: " + "; ".join(compiles) + ".",
        ]
    )
    print(body)
    if args.write:
        write_section(args.write, "bench_admission", body)


if __name__ == "__main__":
    main()
