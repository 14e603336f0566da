"""Admission policies in CEL: loading and compiling, evaluation as Kubernetes'
ValidatingAdmissionPolicy does it, fail-closed errors, cost bounds, and the Status errors."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import passport
from node_registry.admission import (
    Admission,
    AdmissionRequest,
    Limits,
    Violation,
    compile_policy,
    comprehension_depth,
    read_policies,
    refusal,
)
from node_registry.errors import (
    ConfigError,
    FieldError,
    ForbiddenError,
    TooLargeError,
    UnauthorizedError,
    ValidationError,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "policies"


def policy(*validations: dict[str, Any], name: str = "p", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"validations": list(validations), **spec},
    }


def review(doc: dict[str, Any], obj: dict[str, Any], **request: Any) -> list[Violation]:
    return Admission([compile_policy(doc)]).review(AdmissionRequest("CREATE", obj, **request))


def coder() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / "coder-agent.yaml").read_text())


@pytest.fixture(scope="module")
def examples() -> Admission:
    return Admission.from_path(EXAMPLES)


# --- the example policies -------------------------------------------------------------------


def test_the_example_policies_admit_the_seed_passports(examples: Admission) -> None:
    assert [p.name for p in examples.policies] == [
        "gpu-capability-needs-gpu-resource",
        "only-agents-generate-code",
        "team-labels-match-name-prefix",
    ]
    for obj in (
        coder(),
        passport("ai-agent-coder-02"),
        passport("tool-01", kind="tool", capabilities=("python",)),
    ):
        examples.admit(AdmissionRequest("CREATE", obj))


def test_only_agents_may_claim_code_generation(examples: Admission) -> None:
    tool = coder()
    tool["metadata"]["nodeType"] = "tool"
    with pytest.raises(ForbiddenError) as caught:
        examples.admit(AdmissionRequest("CREATE", tool))
    assert caught.value.status_code == 403
    assert str(caught.value) == (
        "ValidatingAdmissionPolicy 'only-agents-generate-code' denied request: node type tool "
        "may not claim code_generation: only agents may"
    )
    without = copy.deepcopy(tool)
    without["spec"]["capabilities"] = [{"name": "python"}]
    examples.admit(AdmissionRequest("CREATE", without))  # matchConditions: not claimed


def test_a_gpu_capability_needs_a_gpu_resource(examples: Admission) -> None:
    doc = coder()
    doc["spec"]["capabilities"].append({"name": "gpu_inference"})
    doc["spec"]["resources"]["gpu"] = "0"
    with pytest.raises(ValidationError) as caught:
        examples.admit(AdmissionRequest("CREATE", doc))
    assert caught.value.status_code == 422
    assert list(caught.value.errors) == [
        FieldError(
            "spec.resources.gpu",
            "ValidatingAdmissionPolicy 'gpu-capability-needs-gpu-resource' denied request: "
            "capabilities gpu_inference need a gpu resource above 0 in spec.resources",
        )
    ]
    del doc["spec"]["resources"]["gpu"]
    assert len(examples.review(AdmissionRequest("CREATE", doc))) == 1


def test_team_labels_must_match_the_name_and_only_admins_change_them(
    examples: Admission,
) -> None:
    doc = coder()
    doc["metadata"]["labels"]["team/owner"] = "ai-writer"
    (violation,) = examples.review(AdmissionRequest("CREATE", doc))
    assert violation.field_path == "metadata.labels"
    old = coder()
    old["metadata"]["labels"]["team/owner"] = "ai-agent"
    new = coder()
    update = AdmissionRequest("UPDATE", new, old, username="ai-agent-coder-01", role="node")
    (violation,) = examples.review(update)
    assert violation.message == "only an admin may change a node's team/ labels"
    assert violation.reason == "Forbidden"
    admin = AdmissionRequest("UPDATE", new, old, username="ops", role="admin")
    assert examples.review(admin) == []


# --- evaluation semantics ---------------------------------------------------------------------


def test_a_false_validation_gives_its_message_in_kubernetes_order() -> None:
    base = {"expression": "object.metadata.name == 'x'"}
    dynamic = {**base, "message": "static", "messageExpression": "'name ' + object.metadata.name"}
    assert review(policy(dynamic), coder())[0].message == "name ai-agent-coder-01"
    # An erring or multi-line messageExpression falls back to the message, then the default.
    broken = {**base, "message": "static", "messageExpression": "object.nope"}
    assert review(policy(broken), coder())[0].message == "static"
    multiline = {**base, "messageExpression": "'a\\nb'"}
    assert review(policy(multiline), coder())[0].message == (
        "failed expression: object.metadata.name == 'x'"
    )


def test_evaluation_errors_refuse_unless_the_policy_ignores_them() -> None:
    rule = {"expression": "size(object.spec.taints) == 0"}
    (violation,) = review(policy(rule), coder())
    assert violation.message == (
        "expression 'size(object.spec.taints) == 0' resulted in error: no such key: taints"
    )
    assert review(policy(rule, failurePolicy="Ignore"), coder()) == []
    guarded = {"expression": "!has(object.spec.taints) || size(object.spec.taints) == 0"}
    assert review(policy(guarded), coder()) == []


def test_a_validation_must_be_a_bool() -> None:
    (violation,) = review(policy({"expression": "size(object.spec.capabilities)"}), coder())
    assert "must evaluate to bool, not int" in violation.message


def test_match_conditions_gate_the_policy_and_fail_closed() -> None:
    deny = {"expression": "false", "message": "no"}
    never = [{"name": "never", "expression": "object.metadata.nodeType == 'tool'"}]
    assert review(policy(deny, matchConditions=never), coder()) == []
    broken = [{"name": "broken", "expression": "object.metadata.missing == 1"}]
    (violation,) = review(policy(deny, matchConditions=broken), coder())
    assert violation.message == "matchCondition 'broken' resulted in error: no such key: missing"
    assert review(policy(deny, matchConditions=broken, failurePolicy="Ignore"), coder()) == []


def test_operations_select_the_requests() -> None:
    deny = {"expression": "false"}
    assert len(review(policy(deny), coder())) == 1
    only_updates = policy(deny, matchConstraints={"operations": ["UPDATE"]})
    assert review(only_updates, coder()) == []
    admission = Admission([compile_policy(policy(deny))])
    assert admission.review(AdmissionRequest("DELETE", None, coder())) == []
    everything = Admission([compile_policy(policy(deny, matchConstraints={"operations": ["*"]}))])
    assert len(everything.review(AdmissionRequest("DELETE", None, coder()))) == 1


def test_variables_build_on_each_other_and_their_errors_show_where_they_started() -> None:
    variables = [
        {"name": "caps", "expression": "object.spec.capabilities.map(c, c.name)"},
        {"name": "count", "expression": "size(variables.caps)"},
        {"name": "broken", "expression": "object.spec.nothing"},
    ]
    uses = {"expression": "variables.count == 2 && 'python' in variables.caps"}
    assert review(policy(uses, variables=variables), coder()) == []
    (violation,) = review(
        policy({"expression": "variables.broken == 1"}, variables=variables), coder()
    )
    assert violation.message == "variable 'broken' resulted in error: no such key: nothing"
    # Variables are the policy's own: the next policy does not see them.
    other = policy({"expression": "variables.count == 2"}, name="q")
    both = Admission([compile_policy(policy(uses, variables=variables)), compile_policy(other)])
    (leaked,) = both.review(AdmissionRequest("CREATE", coder()))
    assert leaked.policy == "q"


def test_request_and_old_object_are_visible() -> None:
    rule = {
        "expression": "oldObject == null || request.userInfo.role == 'admin' || "
        "oldObject.metadata.nodeType == object.metadata.nodeType",
        "message": "nodeType is immutable",
        "reason": "Forbidden",
    }
    admission = Admission([compile_policy(policy(rule))])
    changed = coder()
    changed["metadata"]["nodeType"] = "tool"
    assert admission.review(AdmissionRequest("CREATE", changed)) == []
    as_node = AdmissionRequest("UPDATE", changed, coder(), role="node")
    assert [v.message for v in admission.review(as_node)] == ["nodeType is immutable"]
    named = {"expression": "request.name == 'ai-agent-coder-01' && request.operation == 'CREATE'"}
    assert review(policy(named), coder()) == []


def test_cel_semantics_the_policies_rely_on() -> None:
    # cel-go's (so Kubernetes') heterogeneous equality, has(), the string extensions, RE2.
    rules = [
        "1 == 1.0 && 1 == 1u",
        "!has(object.spec.taints) && has(object.spec.endpoint)",
        "object.metadata.name.split('-').size() == 4",
        "object.metadata.labels.team.upperAscii() == 'PLATFORM'",
        "object.metadata.name.matches('^ai-agent-[a-z]+-[0-9]{2}$')",
        "'gpu' in object.spec.resources && object.spec.resources.all(k, k.size() > 2)",
    ]
    assert review(policy(*({"expression": r} for r in rules)), coder()) == []


# --- compiling and loading ---------------------------------------------------------------------


def test_a_broken_expression_is_a_config_error_naming_policy_field_and_position() -> None:
    doc = policy({"expression": "object.spec.capabilities.exists(c, c.name == )"}, name="broken")
    with pytest.raises(ConfigError) as caught:
        compile_policy(doc)
    message = str(caught.value)
    assert message.startswith("admission policy 'broken': spec.validations[0].expression: ")
    assert "1:46: Syntax error: mismatched input ')'" in message
    assert message.endswith("expression: object.spec.capabilities.exists(c, c.name == )")


def test_a_broken_message_expression_or_match_condition_is_refused_too() -> None:
    bad_message = policy({"expression": "true", "messageExpression": "'a' +"})
    with pytest.raises(ConfigError, match=r"spec\.validations\[0\]\.messageExpression: "):
        compile_policy(bad_message)
    bad_condition = policy(
        {"expression": "true"}, matchConditions=[{"name": "m", "expression": "("}]
    )
    with pytest.raises(ConfigError, match=r"spec\.matchConditions\[0\]\.expression: "):
        compile_policy(bad_condition)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"spec": {"validations": []}}, "spec.validations"),
        ({"spec": {"validations": [{"expression": "true", "reasn": "x"}]}}, "reasn"),
        ({"spec": {"validations": [{"expression": "true", "reason": "Teapot"}]}}, "reason"),
        ({"kind": "MutatingAdmissionPolicy"}, "kind"),
        ({"metadata": {"name": "Not_A_Name"}}, "metadata.name"),
        (
            {
                "spec": {
                    "validations": [{"expression": "true"}],
                    "variables": [{"name": "a", "expression": "1"}] * 2,
                }
            },
            "variable names must be unique; repeated: a",
        ),
        (
            {
                "spec": {
                    "validations": [{"expression": "true"}],
                    "variables": [{"name": "1a", "expression": "1"}],
                }
            },
            "CEL identifier",
        ),
    ],
)
def test_a_malformed_policy_is_a_config_error_naming_the_field(
    change: dict[str, Any], where: str
) -> None:
    doc = {**policy({"expression": "true"}), **change}
    with pytest.raises(ConfigError, match="admission policy") as caught:
        compile_policy(doc)
    assert where in str(caught.value)


def test_policies_are_read_from_a_file_or_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "two.yaml"
    file.write_text(yaml.safe_dump_all([policy({"expression": "true"}, name=n) for n in "ab"]))
    assert [p.name for p in read_policies(file)] == ["a", "b"]
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(policy({"expression": "true"}, name="a")))
    with pytest.raises(ConfigError, match="admission policy names repeated: a"):
        read_policies(tmp_path)
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(policy({"expression": "1 +"}, name="c")))
    with pytest.raises(ConfigError, match=r"more\.yaml: admission policy 'c': spec\.validations"):
        read_policies(tmp_path)


# --- cost bounds ------------------------------------------------------------------------------


def test_comprehension_depth_counts_nested_macros_and_skips_strings() -> None:
    assert comprehension_depth("object.metadata.name == 'x'") == 0
    assert comprehension_depth("a.all(x, x > 0) && b.exists(y, y == 1)") == 1
    assert comprehension_depth("a.all(x, b.exists(y, y == x))") == 2
    assert comprehension_depth("a.map(x, x.filter(y, y.all(z, z)))") == 3
    assert comprehension_depth("a.all(x, '.map(' == x)") == 1
    assert comprehension_depth('f(a).exists_one(x, "(" + ")" == x)') == 1


def test_expressions_over_the_static_limits_are_refused_at_load() -> None:
    nested = "object.spec.capabilities.all(a, object.spec.capabilities.all(b, "
    nested += "object.spec.capabilities.all(c, a == b || b == c)))"
    with pytest.raises(ConfigError, match="nest 3 deep, over the limit of 2"):
        compile_policy(policy({"expression": nested}))
    compile_policy(policy({"expression": nested}), Limits(max_comprehension_depth=3))
    long = " && ".join(["true"] * 1000)
    with pytest.raises(ConfigError, match="characters long, over the limit of 4096"):
        compile_policy(policy({"expression": long}))


def test_an_evaluation_over_its_time_budget_is_a_refusal() -> None:
    # 2 levels over 150 items: 22,500 iterations, tens of milliseconds in the binding.
    doc = coder()
    doc["spec"]["capabilities"][0]["params"] = {"items": list(range(150))}
    expression = (
        "object.spec.capabilities[0].params.items.all(a, "
        "object.spec.capabilities[0].params.items.exists(b, a == b))"
    )
    tight = compile_policy(policy({"expression": expression}), Limits(max_evaluation_seconds=1e-4))
    (violation,) = Admission([tight]).review(AdmissionRequest("CREATE", doc))
    assert "over its budget of 0.1 ms" in violation.message
    roomy = compile_policy(policy({"expression": expression}), Limits(max_evaluation_seconds=5))
    assert Admission([roomy]).review(AdmissionRequest("CREATE", doc)) == []


# --- violations as Status errors ------------------------------------------------------------------


def test_refusal_maps_the_first_reason_to_its_status() -> None:
    assert refusal([]) is None
    invalid = Violation("p", "bad name", "Invalid", "metadata.name")
    error = refusal([invalid, Violation("q", "no field path")])
    assert isinstance(error, ValidationError)
    assert (error.status_code, error.reason) == (422, "Invalid")
    assert list(error.errors) == [
        FieldError("metadata.name", "ValidatingAdmissionPolicy 'p' denied request: bad name"),
        FieldError("", "ValidatingAdmissionPolicy 'q' denied request: no field path"),
    ]
    forbidden = refusal([Violation("p", "agents only", "Forbidden"), invalid])
    assert isinstance(forbidden, ForbiddenError)
    assert str(forbidden) == (
        "ValidatingAdmissionPolicy 'p' denied request: agents only; "
        "ValidatingAdmissionPolicy 'p' denied request: bad name"
    )
    assert isinstance(refusal([Violation("p", "m", "Unauthorized")]), UnauthorizedError)
    too_large = refusal([Violation("p", "m", "RequestEntityTooLarge")])
    assert isinstance(too_large, TooLargeError)
    assert too_large.status_code == 413


def test_the_walk_through_output_in_the_docs_is_current() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "admission.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    doc = (ROOT / "docs" / "admission.md").read_text(encoding="utf-8")
    match = re.search(r"\$ python examples/admission.py\n(.*?)```", doc, re.DOTALL)
    assert match is not None, "docs/admission.md has no output block for the walk-through"
    assert match.group(1) == completed.stdout, "docs/admission.md: paste the script's output"
