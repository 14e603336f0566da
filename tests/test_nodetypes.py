"""Node types as registered objects (seed 3.5): definitions, their schemas, passports checked
against their type with precise field paths."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import DESIGN_EXAMPLE_YAML, passport
from node_registry.errors import ConfigError, ConflictError, FieldError, ValidationError
from node_registry.passport import NodeType, load_passport
from node_registry.passport.types import (
    BUILTIN_TYPES,
    NodeTypes,
    load_node_type,
    read_node_types,
)

ROOT = Path(__file__).resolve().parent.parent

GPU_WORKER = yaml.safe_load("""
apiVersion: ai_team.io/v1
kind: NodeType
metadata: {name: gpu-worker}
spec:
  description: A GPU box that runs inference and generates code
  schema:
    openAPIV3Schema:
      type: object
      required: [resources]
      properties:
        resources: {type: object, required: [gpu]}
        maxConcurrentTasks: {type: integer, maximum: 8}
  capabilities:
    code_generation:
      versions: ["1.0", "1.1"]
      paramsSchema:
        type: object
        properties:
          languages: {type: array, items: {enum: [python, go]}}
        additionalProperties: false
    gpu_inference: {}
  allowUnknownCapabilities: false
""")


def gpu_passport(**spec: Any) -> dict[str, Any]:
    doc = passport("gpu-01", capabilities=("code_generation",), resources={"gpu": "1"})
    doc["metadata"]["nodeType"] = "gpu-worker"
    doc["spec"]["capabilities"][0]["params"] = {"languages": ["python"]}
    doc["spec"].update(spec)
    return doc


@pytest.fixture
def types() -> NodeTypes:
    return NodeTypes().with_types([load_node_type(GPU_WORKER)])


def test_the_builtin_types_are_the_seven_kinds_and_accept_todays_passports() -> None:
    assert [t.name for t in BUILTIN_TYPES] == [k.value for k in NodeType]
    builtin = NodeTypes()
    docs = [passport(f"n-{k.value}", kind=k.value) for k in NodeType]
    docs.append(yaml.safe_load(DESIGN_EXAMPLE_YAML))
    docs.append(yaml.safe_load((ROOT / "examples" / "coder-agent.yaml").read_text()))
    for doc in docs:
        builtin.validate(doc)
        builtin.validate(load_passport(doc))  # a NodePassport is checked as its wire dict


def test_a_passport_that_fits_its_type_is_valid(types: NodeTypes) -> None:
    assert types.errors(gpu_passport()) == []


def test_every_broken_rule_is_reported_at_its_field(types: NodeTypes) -> None:
    doc = gpu_passport(resources={"cpu": "4"}, maxConcurrentTasks=16)
    doc["spec"]["capabilities"] = [
        {"name": "code_generation", "version": "2.0", "params": {"languages": ["go", "cobol"]}},
        {"name": "gpu_inference"},
        {"name": "web_search"},
    ]
    with pytest.raises(ValidationError) as caught:
        types.validate(doc)
    assert caught.value.status_code == 422
    assert list(caught.value.errors) == [
        FieldError("spec.resources", "'gpu' is a required property"),
        FieldError("spec.maxConcurrentTasks", "16 is greater than the maximum of 8"),
        FieldError(
            "spec.capabilities[0].version",
            "'2.0' is not a version of 'code_generation' in node type 'gpu-worker' "
            "(one of: 1.0, 1.1)",
        ),
        FieldError(
            "spec.capabilities[0].params.languages[1]", "'cobol' is not one of ['python', 'go']"
        ),
        FieldError(
            "spec.capabilities[2].name",
            "capability 'web_search' is not defined by node type 'gpu-worker' "
            "(it defines: code_generation, gpu_inference)",
        ),
    ]


def test_params_absent_are_checked_as_an_empty_object(types: NodeTypes) -> None:
    definition = load_node_type(
        {
            "metadata": {"name": "strict"},
            "spec": {"capabilities": {"x": {"paramsSchema": {"required": ["model"]}}}},
        }
    )
    doc = passport("s-01", capabilities=("x",))
    doc["metadata"]["nodeType"] = "strict"
    assert NodeTypes([definition]).errors(doc) == [
        FieldError("spec.capabilities[0].params", "'model' is a required property")
    ]


def test_a_required_version_must_be_given(types: NodeTypes) -> None:
    doc = gpu_passport()
    del doc["spec"]["capabilities"][0]["version"]
    assert [e.loc for e in types.errors(doc)] == ["spec.capabilities[0].version"]


def test_unknown_capabilities_pass_when_the_type_allows_them(types: NodeTypes) -> None:
    loose = copy.deepcopy(GPU_WORKER)
    loose["spec"]["allowUnknownCapabilities"] = True
    doc = gpu_passport()
    doc["spec"]["capabilities"].append({"name": "web_search"})
    assert types.with_types([load_node_type(loose)], replace=True).errors(doc) == []
    assert [e.loc for e in types.errors(doc)] == ["spec.capabilities[1].name"]


def test_an_unregistered_node_type_is_refused_with_the_registered_ones(types: NodeTypes) -> None:
    doc = gpu_passport()
    doc["metadata"]["nodeType"] = "quantum"
    assert types.errors(doc) == [
        FieldError(
            "metadata.nodeType",
            "'quantum' is not a registered node type (registered: agent, external, gateway, "
            "gpu-worker, monitoring, orchestrator, storage, tool)",
        )
    ]


@pytest.mark.parametrize(
    ("schema", "loc", "message"),
    [
        ({"$ref": "#/$defs/x"}, "spec.schema.openAPIV3Schema.$ref", "references are not"),
        (
            {"properties": {"a": {"type": "string", "nullable": True}}},
            "spec.schema.openAPIV3Schema.properties.a.nullable",
            "write type: [<type>, 'null']",
        ),
        ({"patternProperties": {"^x": {}}}, "spec.schema.openAPIV3Schema.patternProperties", ""),
        ({"if": {"type": "object"}}, "spec.schema.openAPIV3Schema.if", "conditionals"),
        (
            {"x-kubernetes-preserve-unknown-fields": True},
            "spec.schema.openAPIV3Schema.x-kubernetes-preserve-unknown-fields",
            "not supported (supported: ",
        ),
        ({"items": [{}, {}]}, "spec.schema.openAPIV3Schema.items", "tuple form"),
        (
            {"allOf": [{"type": "object"}, {"dependentRequired": {}}]},
            "spec.schema.openAPIV3Schema.allOf[1].dependentRequired",
            "not supported",
        ),
        ({"$schema": "http://json-schema.org/draft-04/schema#"}, "", "only https://json-schema"),
        ({"type": "objectx"}, "spec.schema.openAPIV3Schema.type", "not valid under any"),
        (
            {"properties": {"n": {"minLength": -1}}},
            "spec.schema.openAPIV3Schema.properties.n.minLength",
            "-1 is less than the minimum of 0",
        ),
    ],
)
def test_a_schema_outside_the_supported_subset_is_refused_at_load(
    schema: dict[str, Any], loc: str, message: str
) -> None:
    doc = {"metadata": {"name": "t"}, "spec": {"schema": {"openAPIV3Schema": schema}}}
    with pytest.raises(ValidationError) as caught:
        load_node_type(doc)
    (error,) = caught.value.errors
    assert error.loc == (loc or "spec.schema.openAPIV3Schema.$schema")
    assert message in error.message


def test_a_params_schema_is_checked_at_its_capability() -> None:
    doc = {
        "metadata": {"name": "t"},
        "spec": {"capabilities": {"x": {"paramsSchema": {"type": 7}}}},
    }
    with pytest.raises(ValidationError) as caught:
        load_node_type(doc)
    assert [e.loc for e in caught.value.errors] == ["spec.capabilities.x.paramsSchema.type"]


def test_the_definition_itself_is_strict() -> None:
    with pytest.raises(ValidationError) as caught:
        load_node_type(
            {"kind": "NodeKind", "metadata": {"name": "GPU_worker"}, "spec": {"shema": {}}}
        )
    assert [e.loc for e in caught.value.errors] == ["kind", "metadata.name", "spec.shema"]


def test_names_are_unique_unless_replacing(types: NodeTypes) -> None:
    with pytest.raises(ConflictError, match="'agent' already exists"):
        types.with_types([load_node_type({"metadata": {"name": "agent"}})])
    strict_agent = load_node_type(
        {"metadata": {"name": "agent"}, "spec": {"allowUnknownCapabilities": False}}
    )
    replaced = types.with_types([strict_agent], replace=True)
    assert replaced["agent"] is strict_agent
    assert [e.loc for e in replaced.errors(passport("a-01"))] == [
        "spec.capabilities[0].name",
        "spec.capabilities[1].name",
    ]
    assert types["agent"] is not strict_agent  # with_types returns a new set


def test_node_types_are_read_from_a_yaml_file(tmp_path: Path) -> None:
    file = tmp_path / "types.yaml"
    other = {"metadata": {"name": "tool-box"}}
    file.write_text(yaml.safe_dump_all([GPU_WORKER, other]), encoding="utf-8")
    assert [t.name for t in read_node_types(file)] == ["gpu-worker", "tool-box"]
    file.write_text(yaml.safe_dump_all([other, {"metadata": {"name": "Bad"}}]), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"types\.yaml: document 1: invalid NodeType: metadata"):
        read_node_types(file)


def test_the_walk_through_output_in_the_docs_is_current() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "nodetypes.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    doc = (ROOT / "docs" / "nodetypes.md").read_text(encoding="utf-8")
    match = re.search(r"\$ python examples/nodetypes.py\n(.*?)```", doc, re.DOTALL)
    assert match is not None, "docs/nodetypes.md has no output block for the walk-through"
    assert match.group(1) == completed.stdout, "docs/nodetypes.md: paste the script's output"
    shown = re.search(r"```yaml\n# examples/nodetypes/gpu-worker.yaml\n(.*?)```", doc, re.DOTALL)
    assert shown is not None
    assert yaml.safe_load(shown.group(1)) == yaml.safe_load(
        (ROOT / "examples" / "nodetypes" / "gpu-worker.yaml").read_text()
    )
