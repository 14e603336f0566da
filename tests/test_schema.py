"""The exported JSON Schema of the passport: the committed copy is current, and it is usable."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import DESIGN_EXAMPLE_YAML
from node_registry import load_passport
from node_registry.passport.schema import SCHEMA_ID, passport_json_schema, render

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "passport.schema.json"
PASSPORT_DOC = ROOT / "docs" / "passport.md"
REGENERATE = "python -m node_registry.passport.schema > docs/passport.schema.json"


# The same, as a hand-written YAML file often has it: numbers where the model wants text.
YAML_NUMBERS = DESIGN_EXAMPLE_YAML.replace('version: "1.0"', "version: 1.0").replace(
    'cpu: "4"', "cpu: 4"
)


def test_the_committed_schema_is_current() -> None:
    assert COMMITTED.exists(), f"docs/passport.schema.json is missing; run: {REGENERATE}"
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        f"docs/passport.schema.json is out of date with the models; run: {REGENERATE}"
    )


def test_the_committed_schema_is_pretty_sorted_json() -> None:
    text = COMMITTED.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_the_schema_names_what_it_describes() -> None:
    schema = passport_json_schema()
    assert schema["$id"] == SCHEMA_ID == "urn:ai-team:schema:ai_team.io/v1:NodePassport"
    assert schema["title"] == "NodePassport (ai_team.io/v1)"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["metadata"]
    assert schema["properties"]["apiVersion"]["default"] == "ai_team.io/v1"


def test_the_schema_uses_wire_names_and_keeps_unknown_fields() -> None:
    schema = passport_json_schema()
    defs = schema["$defs"]
    assert "nodeType" in defs["Metadata"]["properties"]
    assert "maxConcurrentTasks" in defs["Spec"]["properties"]
    assert "currentTasks" in defs["Status"]["properties"]
    assert "lastHeartbeatTime" in defs["Condition"]["properties"]
    assert schema["additionalProperties"] is True
    for name in ("Metadata", "Spec", "Capability", "Endpoint", "Status", "Condition"):
        assert defs[name]["additionalProperties"] is True, name


def test_the_schema_describes_the_input_side() -> None:
    # mode="validation": quantities and versions may be written as numbers (YAML `cpu: 4`).
    spec = passport_json_schema()["$defs"]["Spec"]["properties"]
    accepted = {t["type"] for t in spec["resources"]["additionalProperties"]["anyOf"]}
    assert accepted == {"string", "number"}


def _docs_example() -> dict[str, Any]:
    text = PASSPORT_DOC.read_text(encoding="utf-8")
    match = re.search(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert match is not None, "docs/passport.md has no ```yaml example"
    doc: dict[str, Any] = yaml.safe_load(match.group(1))
    return doc


def test_the_docs_example_is_a_valid_passport_stored_as_written() -> None:
    doc = _docs_example()
    assert load_passport(doc).to_dict() == doc


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(yaml.safe_load(DESIGN_EXAMPLE_YAML), id="design"),
        pytest.param(yaml.safe_load(YAML_NUMBERS), id="yaml-numbers"),
        pytest.param(None, id="docs"),
    ],
)
def test_examples_satisfy_the_schema(doc: dict[str, Any] | None) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = doc if doc is not None else _docs_example()
    load_passport(doc)  # the registry accepts it ...
    validator_cls = jsonschema.Draft202012Validator
    validator_cls.check_schema(passport_json_schema())
    validator = validator_cls(passport_json_schema(), format_checker=validator_cls.FORMAT_CHECKER)
    assert list(validator.iter_errors(doc)) == []  # ... and so does the schema


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("metadata", "nodeType"), "Robot_1"),
        (("metadata", "uid"), "not-a-uuid"),
        (("spec", "maxConcurrentTasks"), -1),
        (("status", "phase"), "Bogus"),
        (("spec", "capabilities"), "code_generation"),
    ],
    ids=["node-type", "uid", "max-tasks", "phase", "capabilities"],
)
def test_the_schema_refuses_what_the_registry_refuses(path: tuple[str, str], value: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = yaml.safe_load(DESIGN_EXAMPLE_YAML)
    doc[path[0]][path[1]] = value
    validator_cls = jsonschema.Draft202012Validator
    validator = validator_cls(passport_json_schema(), format_checker=validator_cls.FORMAT_CHECKER)
    assert list(validator.iter_errors(doc)) != []
