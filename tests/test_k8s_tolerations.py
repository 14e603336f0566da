"""Kubernetes' own test tables for taints and tolerations, run against ours.

Each case keeps its upstream name as the test id; the comment above each table names the
upstream file. Node names are lower-cased (``nodeA`` -> ``nodea``) because ours are DNS names.
Cases for the alpha ``Gt``/``Lt`` toleration operators (Kubernetes 1.35, feature gate
TaintTolerationComparisonOperators) are kept as cases that must be refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_registry import ValidationError
from node_registry.orchestrator import schedule
from node_registry.orchestrator.taints import (
    Toleration,
    find_untolerated_taint,
)
from node_registry.orchestrator.task import load_requirements
from node_registry.passport.models import Taint, TaintEffect
from nodes import node

Doc = Mapping[str, Any]

NS = "NoSchedule"
PNS = "PreferNoSchedule"
NE = "NoExecute"


def toleration(**doc: Any) -> Toleration:
    return load_requirements({"tolerations": [doc]}).tolerations[0]


def taint(key: str, value: str | None = None, effect: str = NS) -> Taint:
    return Taint.model_validate({"key": key, "value": value, "effect": effect})


# staging/src/k8s.io/api/core/v1/toleration_test.go: TestTolerationToleratesTaint
TOLERATES_TAINT = [
    pytest.param(
        {"key": "foo", "operator": "Exists", "effect": NS},
        taint("foo"),
        True,
        id="toleration and taint have the same key and effect, and operator is Exists, "
        "and taint has no value, expect tolerated",
    ),
    pytest.param(
        {"key": "foo", "operator": "Exists", "effect": NS},
        taint("foo", "bar"),
        True,
        id="toleration and taint have the same key and effect, and operator is Exists, "
        "and taint has some value, expect tolerated",
    ),
    pytest.param(
        {"key": "", "operator": "Exists", "effect": NS},
        taint("foo", "bar"),
        True,
        id="toleration and taint have the same effect, toleration has empty key and operator "
        "is Exists, means match all taints, expect tolerated",
    ),
    pytest.param(
        {"key": "foo", "operator": "Equal", "value": "bar", "effect": NS},
        taint("foo", "bar"),
        True,
        id="toleration and taint have the same key, effect and value, and operator is Equal, "
        "expect tolerated",
    ),
    pytest.param(
        {"key": "foo", "operator": "Equal", "value": "value1", "effect": NS},
        taint("foo", "value2"),
        False,
        id="toleration and taint have the same key and effect, but different values, and "
        "operator is Equal, expect not tolerated",
    ),
    pytest.param(
        {"key": "foo", "operator": "Equal", "value": "bar", "effect": NS},
        taint("foo", "bar", NE),
        False,
        id="toleration and taint have the same key and value, but different effects, and "
        "operator is Equal, expect not tolerated",
    ),
]


@pytest.mark.parametrize(("doc", "the_taint", "tolerated"), TOLERATES_TAINT)
def test_toleration_tolerates_taint(doc: Doc, the_taint: Taint, tolerated: bool) -> None:
    assert toleration(**doc).tolerates(the_taint) is tolerated


# staging/src/k8s.io/api/core/v1/toleration_test.go: the Gt/Lt cases of
# TestTolerationToleratesTaint (alpha upstream; refused here, naming the served operators).
ALPHA_OPERATORS = [
    pytest.param("Gt", "950", id="toleration with Gt operator - taint value less than "
                 "toleration value, expect not tolerated"),
    pytest.param("Gt", "750", id="toleration with Gt operator - taint value greater than "
                 "toleration value, expect tolerated"),
    pytest.param("Lt", "800", id="toleration with Lt operator - taint value greater than "
                 "toleration value, expect not tolerated"),
    pytest.param("Lt", "950", id="toleration with Lt operator - taint value less than "
                 "toleration value, expect tolerated"),
    pytest.param("Gt", "950", id="toleration with Gt operator and taint with equal numeric "
                 "value, expect not tolerated"),
    pytest.param("Gt", "950", id="toleration with Gt operator and taint with non-numeric "
                 "value, expect not tolerated"),
    pytest.param("Gt", "-100", id="toleration with Gt operator and negative numeric values - "
                 "taint value less than threshold, expect not tolerated"),
    pytest.param("Gt", "9223372036854775806", id="toleration with Gt operator and large int64 "
                 "values - taint value less than threshold, expect not tolerated"),
]  # fmt: skip


@pytest.mark.parametrize(("operator", "value"), ALPHA_OPERATORS)
def test_alpha_comparison_operators_are_refused(operator: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        toleration(key="node.kubernetes.io/sla", operator=operator, value=value, effect=NS)
    assert caught.value.errors[0].loc == "tolerations[0].operator"
    assert "'Equal' or 'Exists'" in str(caught.value)


def _all(_: Taint) -> bool:
    return True


def _none(_: Taint) -> bool:
    return False


def _no_execute(t: Taint) -> bool:
    return t.effect is TaintEffect.NO_EXECUTE


# pkg/apis/core/v1/helper/helpers_test.go: TestTolerationsTolerateTaintsWithFilter, and the
# same cases in staging/src/k8s.io/component-helpers/scheduling/corev1/helpers_test.go:
# TestFindMatchingUntoleratedTaint (whose Gt/Lt cases are the alpha ones above).
WITH_FILTER = [
    pytest.param([], [], _all, True, id="empty tolerations tolerate empty taints"),
    pytest.param(
        [{"key": "foo", "operator": "Exists", "effect": NS}],
        [],
        _all,
        True,
        id="non-empty tolerations tolerate empty taints",
    ),
    pytest.param(
        [{"key": "foo", "operator": "Exists", "effect": NS}],
        [taint("foo")],
        _all,
        True,
        id="tolerations match all taints, expect tolerated",
    ),
    pytest.param(
        [{"key": "foo", "operator": "Exists", "effect": NS}],
        [taint("bar")],
        _none,
        True,
        id="tolerations don't match taints, but no taints apply to the filter, expect tolerated",
    ),
    pytest.param(
        [{"key": "foo", "operator": "Exists", "effect": NS}],
        [taint("bar")],
        None,
        False,
        id="no filterFunc indicated, means all taints apply to the filter, tolerations don't "
        "match taints, expect untolerated",
    ),
    pytest.param(
        [{"key": "foo", "operator": "Exists", "effect": NE}],
        [taint("foo", effect=NE), taint("bar")],
        _no_execute,
        True,
        id="tolerations match taints, expect tolerated",
    ),
]


@pytest.mark.parametrize(("docs", "taints", "only", "tolerated"), WITH_FILTER)
def test_tolerations_tolerate_taints_with_filter(
    docs: list[Doc], taints: list[Taint], only: Callable[[Taint], bool] | None, tolerated: bool
) -> None:
    tolerations = load_requirements({"tolerations": docs}).tolerations
    assert (find_untolerated_taint(taints, tolerations, only) is None) is tolerated


UNTOLERATED = "node(s) had untolerated taint {dedicated: user1}"


# pkg/scheduler/framework/plugins/tainttoleration/taint_toleration_test.go:
# TestTaintTolerationFilter (the Equal/Exists cases). Upstream's reason today is
# "node(s) had untolerated taint(s)"; ours names the taint, as upstream's did before 1.32.
FILTER = [
    pytest.param(
        [],
        [{"key": "dedicated", "value": "user1", "effect": NS}],
        UNTOLERATED,
        id="A pod having no tolerations can't be scheduled onto a node with nonempty taints",
    ),
    pytest.param(
        [{"key": "dedicated", "value": "user1", "effect": NS}],
        [{"key": "dedicated", "value": "user1", "effect": NS}],
        None,
        id="A pod which can be scheduled on a dedicated node assigned to user1 with effect "
        "NoSchedule",
    ),
    pytest.param(
        [{"key": "dedicated", "operator": "Equal", "value": "user2", "effect": NS}],
        [{"key": "dedicated", "value": "user1", "effect": NS}],
        UNTOLERATED,
        id="A pod which can't be scheduled on a dedicated node assigned to user2 with effect "
        "NoSchedule",
    ),
    pytest.param(
        [{"key": "foo", "operator": "Exists", "effect": NS}],
        [{"key": "foo", "value": "bar", "effect": NS}],
        None,
        id="A pod can be scheduled onto the node, with a toleration uses operator Exists that "
        "tolerates the taints on the node",
    ),
    pytest.param(
        [
            {"key": "dedicated", "operator": "Equal", "value": "user2", "effect": NS},
            {"key": "foo", "operator": "Exists", "effect": NS},
        ],
        [
            {"key": "dedicated", "value": "user2", "effect": NS},
            {"key": "foo", "value": "bar", "effect": NS},
        ],
        None,
        id="A pod has multiple tolerations, node has multiple taints, all the taints are "
        "tolerated, pod can be scheduled onto the node",
    ),
    pytest.param(
        [{"key": "foo", "operator": "Equal", "value": "bar", "effect": PNS}],
        [{"key": "foo", "value": "bar", "effect": NS}],
        "node(s) had untolerated taint {foo: bar}",
        id="A pod has a toleration that keys and values match the taint on the node, but "
        "(non-empty) effect doesn't match, can't be scheduled onto the node",
    ),
    pytest.param(
        [{"key": "foo", "operator": "Equal", "value": "bar"}],
        [{"key": "foo", "value": "bar", "effect": NS}],
        None,
        id="The pod has a toleration that keys and values match the taint on the node, the "
        "effect of toleration is empty, and the effect of taint is NoSchedule. Pod can be "
        "scheduled onto the node",
    ),
    pytest.param(
        [{"key": "dedicated", "operator": "Equal", "value": "user2", "effect": NS}],
        [{"key": "dedicated", "value": "user1", "effect": PNS}],
        None,
        id="The pod has a toleration that key and value don't match the taint on the node, but "
        "the effect of taint on node is PreferNoSchedule. Pod can be scheduled onto the node",
    ),
    pytest.param(
        [],
        [{"key": "dedicated", "value": "user1", "effect": PNS}],
        None,
        id="The pod has no toleration, but the effect of taint on node is PreferNoSchedule. "
        "Pod can be scheduled onto the node",
    ),
]


@pytest.mark.parametrize(("tolerations", "taints", "reason"), FILTER)
def test_taint_toleration_filter(
    tolerations: list[Doc], taints: list[Doc], reason: str | None
) -> None:
    decision = schedule([node("nodea", taints=taints)], {"tolerations": tolerations})
    if reason is None:
        assert decision.node is not None
        assert decision.rejected == {}
    else:
        assert decision.node is None
        assert decision.rejected == {"nodea": (reason,)}


def _prefer(key: str, value: str) -> dict[str, str]:
    return {"key": key, "value": value, "effect": PNS}


# pkg/scheduler/framework/plugins/tainttoleration/taint_toleration_test.go:
# TestTaintTolerationScore (the Equal/Exists cases); the scores are normalised, 0 to 100.
SCORE = [
    pytest.param(
        [{"key": "foo", "operator": "Equal", "value": "bar", "effect": PNS}],
        {"nodea": [_prefer("foo", "bar")], "nodeb": [_prefer("foo", "blah")]},
        {"nodea": 100, "nodeb": 0},
        id="node with taints tolerated by the pod, gets a higher score than those node with "
        "intolerable taints",
    ),
    pytest.param(
        [
            {"key": "cpu-type", "operator": "Equal", "value": "arm64", "effect": PNS},
            {"key": "disk-type", "operator": "Equal", "value": "ssd", "effect": PNS},
        ],
        {
            "nodea": [],
            "nodeb": [_prefer("cpu-type", "arm64")],
            "nodec": [_prefer("cpu-type", "arm64"), _prefer("disk-type", "ssd")],
        },
        {"nodea": 100, "nodeb": 100, "nodec": 100},
        id="the nodes that all of their taints are tolerated by the pod, get the same score, "
        "no matter how many tolerable taints a node has",
    ),
    pytest.param(
        [{"key": "foo", "operator": "Equal", "value": "bar", "effect": PNS}],
        {
            "nodea": [],
            "nodeb": [_prefer("cpu-type", "arm64")],
            "nodec": [_prefer("cpu-type", "arm64"), _prefer("disk-type", "ssd")],
        },
        {"nodea": 100, "nodeb": 50, "nodec": 0},
        id="the more intolerable taints a node has, the lower score it gets.",
    ),
    pytest.param(
        [
            {"key": "cpu-type", "operator": "Equal", "value": "arm64", "effect": NS},
            {"key": "disk-type", "operator": "Equal", "value": "ssd", "effect": NS},
        ],
        {
            "nodea": [],
            "nodeb": [{"key": "cpu-type", "value": "arm64", "effect": NS}],
            "nodec": [_prefer("cpu-type", "arm64"), _prefer("disk-type", "ssd")],
        },
        {"nodea": 100, "nodeb": 100, "nodec": 0},
        id="only taints and tolerations that have effect PreferNoSchedule are checked by "
        "taints-tolerations priority function",
    ),
    pytest.param(
        [],
        {"nodea": [], "nodeb": [_prefer("cpu-type", "arm64")]},
        {"nodea": 100, "nodeb": 0},
        id="Default behaviour No taints and tolerations, lands on node with no taints",
    ),
]


@pytest.mark.parametrize(("tolerations", "taints", "scores"), SCORE)
def test_taint_toleration_score(
    tolerations: list[Doc], taints: dict[str, list[Doc]], scores: dict[str, int]
) -> None:
    nodes = [node(name, taints=node_taints) for name, node_taints in taints.items()]
    decision = schedule(nodes, {"tolerations": tolerations})
    assert {s.name: s.scores["TaintToleration"] for s in decision.ranking} == scores


# pkg/apis/core/validation/validation.go: ValidateTolerations, one rule per case.
INVALID_TOLERATIONS = [
    pytest.param({"operator": "Equal", "value": "x"},
                 "operator: must be Exists when `key` is empty"),
    pytest.param({"key": "a", "effect": NS, "tolerationSeconds": 5},
                 "effect: must be 'NoExecute' when `tolerationSeconds` is set"),
    pytest.param({"key": "a", "operator": "Exists", "value": "x"},
                 "value: must be empty when `operator` is 'Exists'"),
    pytest.param({"key": "a", "value": "-x-"}, "value: a valid label value"),
    pytest.param({"key": "a/b/c", "operator": "Exists"}, "key: a qualified name"),
    pytest.param({"key": "a", "effect": "Sometimes"}, "Input should be 'NoSchedule'"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "message"), INVALID_TOLERATIONS)
def test_invalid_tolerations_are_refused_naming_the_rule(doc: Doc, message: str) -> None:
    with pytest.raises(ValidationError, match="invalid task requirements") as caught:
        load_requirements({"tolerations": [doc]})
    assert caught.value.errors[0].loc.startswith("tolerations[0]")
    assert message in str(caught.value)


def test_an_empty_operator_means_equal_as_upstream() -> None:
    assert toleration(key="a", operator="", value="b").tolerates(taint("a", "b"))
    assert not toleration(key="a", operator="", value="b").tolerates(taint("a", "c"))


def test_an_omitted_taint_value_is_the_empty_value() -> None:
    assert toleration(key="a", operator="Equal", value="").tolerates(taint("a"))
    assert toleration(key="a", operator="Equal", value="").tolerates(taint("a", ""))


_keys = st.sampled_from(["a", "b", "example.com/c", "dedicated"])
_values = st.sampled_from(["", "x", "y", "gpu"])
_effects = st.sampled_from(list(TaintEffect))
_taints = st.builds(
    lambda k, v, e: Taint.model_validate({"key": k, "value": v, "effect": e}),
    _keys,
    _values,
    _effects,
)


@given(_taints)
def test_property_exists_with_an_empty_key_and_no_effect_tolerates_every_taint(t: Taint) -> None:
    assert toleration(operator="Exists").tolerates(t)


@given(_taints, _effects)
def test_property_exists_with_an_empty_key_tolerates_exactly_its_effect(
    t: Taint, effect: TaintEffect
) -> None:
    assert toleration(operator="Exists", effect=effect.value).tolerates(t) is (t.effect is effect)


@given(_taints, _keys, _values, st.none() | _effects)
def test_property_equal_tolerates_only_its_own_key_value_and_effect(
    t: Taint, key: str, value: str, effect: TaintEffect | None
) -> None:
    doc: dict[str, Any] = {"key": key, "operator": "Equal", "value": value}
    if effect is not None:
        doc["effect"] = effect.value
    expected = t.key == key and (t.value or "") == value and effect in (None, t.effect)
    assert toleration(**doc).tolerates(t) is expected


@given(_taints, _keys)
def test_property_exists_with_a_key_tolerates_every_value_and_effect_of_that_key(
    t: Taint, key: str
) -> None:
    assert toleration(key=key, operator="Exists").tolerates(t) is (t.key == key)


@given(_taints)
def test_property_a_taint_copied_into_a_toleration_is_tolerated(t: Taint) -> None:
    copied = toleration(key=t.key, value=t.value or "", effect=t.effect.value)
    assert copied.tolerates(t)
    assert find_untolerated_taint([t], [copied]) is None
