"""Kubernetes' own test tables for node affinity and node selectors, run against ours.

Each case keeps its upstream name as the test id; the comment above each table names the
upstream file. Deliberate differences, each kept as a case:

* a selector or term upstream cannot parse matches no node there; here it is refused when the
  requirements are read, with the field that is wrong (``ValidationError``);
* ``matchFields`` values are node names, which API validation checks as DNS names
  (``ValidateNodeName``); the helper tests skip validation and use ``host_1``, so those cases
  use ``host-1`` here. Nodes without a name in upstream cases are named ``node``.
* Cases built on the scheduler's ``AddedAffinity`` argument (a profile setting we do not
  have) are left out: "Matches added affinity and Pod's node affinity", "Matches added
  affinity but not Pod's node affinity", "Doesn't match added affinity", and the scoring
  cases "added affinity" and "added affinity and pod has default affinity".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from node_registry import ValidationError
from node_registry.orchestrator import schedule
from node_registry.orchestrator.affinity import NodeSelector, NodeSelectorTerm
from node_registry.orchestrator.base import load
from node_registry.orchestrator.plugins import REASON_AFFINITY
from nodes import node

Doc = Mapping[str, Any]


def _in(key: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": list(values)}


def _op(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def _name_in(value: str) -> dict[str, Any]:
    return _in("metadata.name", value)


def _terms(*terms: Doc) -> dict[str, Any]:
    return {"nodeSelectorTerms": list(terms)}


# staging/src/k8s.io/component-helpers/scheduling/corev1/helpers_test.go: TestMatchNodeSelectorTerms
MATCH_TERMS = [
    pytest.param(
        _terms({"matchExpressions": [_in("label_1", "label_1_val")]}),
        {"label_1": "label_1_val"},
        "",
        True,
        id="node label matches matchExpressions terms",
    ),
    pytest.param(
        _terms({"matchFields": [_name_in("host-1")]}),
        {},
        "host-1",
        True,
        id="node field matches matchFields terms",
    ),
    pytest.param(
        _terms({"matchFields": [_name_in("host-1")]}),
        {"metadata.name": "host-1"},
        "not-host-1",
        False,
        id="fieldSelectorTerm with node labels",
    ),
    pytest.param(
        _terms({"matchExpressions": [_in("metadata.name", "host_1")]}),
        {},
        "host-1",
        False,
        id="labelSelectorTerm with node fields",
    ),
    pytest.param(
        _terms(
            {
                "matchExpressions": [_in("label_1", "label_1_val")],
                "matchFields": [_name_in("host-1")],
            }
        ),
        {},
        "host-1",
        False,
        id="labelSelectorTerm and fieldSelectorTerm was set, but only node fields",
    ),
    pytest.param(
        _terms(
            {
                "matchExpressions": [_in("label_1", "label_1_val")],
                "matchFields": [_name_in("host-1")],
            }
        ),
        {"label_1": "label_1_val"},
        "host-1",
        True,
        id="labelSelectorTerm and fieldSelectorTerm was set, both node fields and labels "
        "(both matched)",
    ),
    pytest.param(
        _terms(
            {
                "matchExpressions": [_in("label_1", "label_1_val")],
                "matchFields": [_name_in("host-1")],
            }
        ),
        {"label_1": "label_1_val-failed"},
        "host-1",
        False,
        id="labelSelectorTerm and fieldSelectorTerm was set, both node fields and labels "
        "(one mismatched)",
    ),
    pytest.param(
        _terms(
            {"matchExpressions": [_in("label_1", "label_1_val")]},
            {"matchFields": [_name_in("host-1")]},
        ),
        {"label_1": "label_1_val-failed"},
        "host-1",
        True,
        id="multi-selector was set, both node fields and labels (one mismatched)",
    ),
]


@pytest.mark.parametrize(("selector", "labels", "name", "matches"), MATCH_TERMS)
def test_match_node_selector_terms(
    selector: Doc, labels: dict[str, str], name: str, matches: bool
) -> None:
    assert load(NodeSelector, selector, what="node selector").matches(labels, name) is matches


# The same file: its two cases that upstream answers "no match" because it cannot parse them.
REFUSED_SELECTORS = [
    pytest.param({"nodeSelectorTerms": []}, "nodeSelectorTerms", id="nil terms"),
    pytest.param(
        _terms({"matchFields": [_in("metadata.name", "host-1", "host-2")]}),
        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
        id="invalid node field requirement",
    ),
    # pkg/apis/core/v1/helper/helpers_test.go spells this case's value "host_1, host_2".
    pytest.param(
        _terms({"matchFields": [_name_in("host_1, host_2")]}),
        "lowercase RFC 1123 subdomain",
        id="invalid node field requirement (helper's spelling)",
    ),
]


@pytest.mark.parametrize(("selector", "message"), REFUSED_SELECTORS)
def test_unparseable_selectors_are_refused(selector: Doc, message: str) -> None:
    with pytest.raises(ValidationError, match="invalid node selector") as caught:
        load(NodeSelector, selector, what="node selector")
    assert message in str(caught.value)


# pkg/apis/core/v1/helper/helpers_test.go: TestNodeSelectorRequirementsAsSelector
AS_SELECTOR = [
    pytest.param([], None, id="empty requirements are labels.Nothing()"),
    pytest.param([_in("foo", "bar", "baz")], "foo in (bar,baz)", id="foo in (baz,bar)"),
    pytest.param([{"key": "foo", "operator": "Gt", "values": ["1"]}], "foo>1", id="foo>1"),
    pytest.param([{"key": "bar", "operator": "Lt", "values": ["7"]}], "bar<7", id="bar<7"),
]


@pytest.mark.parametrize(("expressions", "selector"), AS_SELECTOR)
def test_node_selector_requirements_as_selector(
    expressions: list[Doc], selector: str | None
) -> None:
    term = load(NodeSelectorTerm, {"matchExpressions": expressions}, what="term")
    if selector is None:
        assert term.label_selector is None
        assert not term.matches({"foo": "bar"}, "node")  # Nothing() matches nothing
    else:
        assert str(term.label_selector) == selector


def test_exists_with_values_is_refused() -> None:
    # The same table: {Key: foo, Operator: Exists, Values: [bar, baz]} expects an error.
    expression = {"key": "foo", "operator": "Exists", "values": ["bar", "baz"]}
    with pytest.raises(ValidationError, match="takes no values"):
        load(NodeSelectorTerm, {"matchExpressions": [expression]}, what="term")


def _required(*terms: Doc) -> dict[str, Any]:
    required = {"requiredDuringSchedulingIgnoredDuringExecution": _terms(*terms)}
    return {"affinity": {"nodeAffinity": required}}


# pkg/scheduler/framework/plugins/nodeaffinity/node_affinity_test.go: TestNodeAffinity
# (pod spec, node labels, node name, fits). Upstream's "...even if PreFilter is not called"
# cases are the same checks without the PreFilter step we do not have.
FILTER = [
    pytest.param({"nodeSelector": {"foo": "bar"}}, {}, "node", False, id="missing labels"),
    pytest.param({"nodeSelector": {"foo": "bar"}}, {"foo": "bar"}, "node", True, id="same labels"),
    pytest.param(
        {"nodeSelector": {"foo": "bar"}},
        {"foo": "bar", "baz": "blah"},
        "node",
        True,
        id="node labels are superset",
    ),
    pytest.param(
        {"nodeSelector": {"foo": "bar", "baz": "blah"}},
        {"foo": "bar"},
        "node",
        False,
        id="node labels are subset",
    ),
    pytest.param(
        _required({"matchExpressions": [_in("foo", "bar", "value2")]}),
        {"foo": "bar"},
        "node",
        True,
        id="Pod with matchExpressions using In operator that matches the existing node",
    ),
    pytest.param(
        _required({"matchExpressions": [_op("kernel-version", "Gt", "0204")]}),
        {"kernel-version": "0206"},
        "node",
        True,
        id="Pod with matchExpressions using Gt operator that matches the existing node",
    ),
    pytest.param(
        _required({"matchExpressions": [_op("mem-type", "NotIn", "DDR", "DDR2")]}),
        {"mem-type": "DDR3"},
        "node",
        True,
        id="Pod with matchExpressions using NotIn operator that matches the existing node",
    ),
    pytest.param(
        _required({"matchExpressions": [{"key": "GPU", "operator": "Exists"}]}),
        {"GPU": "NVIDIA-GRID-K1"},
        "node",
        True,
        id="Pod with matchExpressions using Exists operator that matches the existing node",
    ),
    pytest.param(
        _required({"matchExpressions": [_in("foo", "value1", "value2")]}),
        {"foo": "bar"},
        "node",
        False,
        id="Pod with affinity that don't match node's labels won't schedule onto the node",
    ),
    pytest.param(
        _required({"matchExpressions": []}),
        {"foo": "bar"},
        "node",
        False,
        id="Pod with empty MatchExpressions is not a valid value will match no objects "
        "and won't schedule onto the node",
    ),
    pytest.param(
        {}, {"foo": "bar"}, "node", True, id="Pod with no Affinity will schedule onto a node"
    ),
    pytest.param(
        {"affinity": {"nodeAffinity": {}}},
        {"foo": "bar"},
        "node",
        True,
        id="Pod with Affinity but nil NodeSelector will schedule onto a node",
    ),
    pytest.param(
        _required(
            {
                "matchExpressions": [
                    {"key": "GPU", "operator": "Exists"},
                    _op("GPU", "NotIn", "AMD", "INTER"),
                ]
            }
        ),
        {"GPU": "NVIDIA-GRID-K1"},
        "node",
        True,
        id="Pod with multiple matchExpressions ANDed that matches the existing node",
    ),
    pytest.param(
        _required(
            {"matchExpressions": [{"key": "GPU", "operator": "Exists"}, _in("GPU", "AMD", "INTER")]}
        ),
        {"GPU": "NVIDIA-GRID-K1"},
        "node",
        False,
        id="Pod with multiple matchExpressions ANDed that doesn't match the existing node",
    ),
    pytest.param(
        _required(
            {"matchExpressions": [_in("foo", "bar", "value2")]},
            {"matchExpressions": [_in("diffkey", "wrong", "value2")]},
        ),
        {"foo": "bar"},
        "node",
        True,
        id="Pod with multiple NodeSelectorTerms ORed in affinity, matches the node's "
        "labels and will schedule onto the node",
    ),
    pytest.param(
        {
            "nodeSelector": {"foo": "bar"},
            **_required({"matchExpressions": [{"key": "foo", "operator": "Exists"}]}),
        },
        {"foo": "bar"},
        "node",
        True,
        id="Pod with an Affinity and a PodSpec.NodeSelector(the old thing that we are "
        "deprecating) both are satisfied, will schedule onto the node",
    ),
    pytest.param(
        {
            "nodeSelector": {"foo": "bar"},
            **_required({"matchExpressions": [{"key": "foo", "operator": "Exists"}]}),
        },
        {"foo": "barrrrrr"},
        "node",
        False,
        id="Pod with an Affinity matches node's labels but the PodSpec.NodeSelector(the "
        "old thing that we are deprecating) is not satisfied, won't schedule onto the node",
    ),
    pytest.param(
        _required({"matchFields": [_name_in("node1")]}),
        {},
        "node1",
        True,
        id="Pod with matchFields using In operator that matches the existing node",
    ),
    pytest.param(
        _required({"matchFields": [_name_in("node1")]}),
        {},
        "node2",
        False,
        id="Pod with matchFields using In operator that does not match the existing node",
    ),
    pytest.param(
        _required(
            {"matchFields": [_name_in("node1"), _name_in("node2")]},
            {"matchExpressions": [_in("foo", "bar")]},
        ),
        {"foo": "bar"},
        "node2",
        True,
        id="Pod with two terms: matchFields does not match, but matchExpressions matches",
    ),
    pytest.param(
        _required({"matchFields": [_name_in("node1")], "matchExpressions": [_in("foo", "bar")]}),
        {"foo": "bar"},
        "node2",
        False,
        id="Pod with one term: matchFields does not match, but matchExpressions matches",
    ),
    pytest.param(
        _required({"matchFields": [_name_in("node1")], "matchExpressions": [_in("foo", "bar")]}),
        {"foo": "bar"},
        "node1",
        True,
        id="Pod with one term: both matchFields and matchExpressions match",
    ),
    pytest.param(
        _required(
            {"matchFields": [_name_in("node1")]},
            {"matchExpressions": [_in("foo", "not-match-to-bar")]},
        ),
        {"foo": "bar"},
        "node2",
        False,
        id="Pod with two terms: both matchFields and matchExpressions do not match",
    ),
    pytest.param(
        _required({"matchFields": [_name_in("node1")]}, {"matchFields": [_name_in("node2")]}),
        {},
        "node2",
        True,
        id="Pod with two terms of node.Name affinity",
    ),
    pytest.param(
        _required({"matchFields": [_name_in("node1"), _name_in("node2")]}),
        {"foo": "bar"},
        "node2",
        False,
        id="Pod with two conflicting mach field requirements",
    ),
]


@pytest.mark.parametrize(("task", "labels", "name", "fits"), FILTER)
def test_node_affinity_filter(task: Doc, labels: dict[str, str], name: str, fits: bool) -> None:
    decision = schedule([node(name, labels)], task)
    assert (decision.node is not None) is fits
    assert decision.rejected == ({} if fits else {name: (REASON_AFFINITY,)})


def test_an_invalid_value_in_an_affinity_term_is_refused() -> None:
    # TestNodeAffinity: "Pod with an invalid value in Affinity term won't be scheduled onto the
    # node" -- upstream leaves the pod pending; here the requirements are refused, saying where.
    task = _required({"matchExpressions": [_op("foo", "NotIn", "invalid value: ___@#$%^")]})
    with pytest.raises(ValidationError) as caught:
        schedule([node("node", {"foo": "bar"})], task)
    (error,) = caught.value.errors
    assert error.loc == (
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
    )
    assert (
        'matchExpressions[0].values[0]: invalid label value "invalid value: ___@#$%^"'
        in error.message
    )


def _preferred(*weighted: tuple[int, list[Doc]]) -> dict[str, Any]:
    terms = [{"weight": w, "preference": {"matchExpressions": e}} for w, e in weighted]
    return {
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms}}
    }


AFFINITY1 = _preferred((2, [_in("foo", "bar")]))
AFFINITY2 = _preferred(
    (2, [_in("foo", "bar")]),
    (4, [_in("key", "value")]),
    (5, [_in("foo", "bar"), _in("key", "value"), _in("az", "az1")]),
)
LABEL1 = {"foo": "bar"}
LABEL2 = {"key": "value"}
LABEL3 = {"az": "az1"}
LABEL4 = {"abc": "az11", "def": "az22"}
LABEL5 = {"foo": "bar", "key": "value", "az": "az1"}

# pkg/scheduler/framework/plugins/nodeaffinity/node_affinity_test.go: TestNodeAffinityPriority
PRIORITY = [
    pytest.param(
        {},
        {"node1": LABEL1, "node2": LABEL2, "node3": LABEL3},
        {"node1": 0, "node2": 0, "node3": 0},
        id="all nodes are same priority as NodeAffinity is nil",
    ),
    pytest.param(
        AFFINITY1,
        {"node1": LABEL4, "node2": LABEL2, "node3": LABEL3},
        {"node1": 0, "node2": 0, "node3": 0},
        id="no node matches preferred scheduling requirements in NodeAffinity of pod so "
        "all nodes' priority is zero",
    ),
    pytest.param(
        AFFINITY1,
        {"node1": LABEL1, "node2": LABEL2, "node3": LABEL3},
        {"node1": 100, "node2": 0, "node3": 0},
        id="only node1 matches the preferred scheduling requirements of pod",
    ),
    pytest.param(
        AFFINITY2,
        {"node1": LABEL1, "node5": LABEL5, "node2": LABEL2},
        {"node1": 18, "node5": 100, "node2": 36},
        id="all nodes matches the preferred scheduling requirements of pod but with "
        "different priorities ",
    ),
]


@pytest.mark.parametrize(("task", "nodes", "scores"), PRIORITY)
def test_node_affinity_priority(
    task: Doc, nodes: dict[str, dict[str, str]], scores: dict[str, int]
) -> None:
    decision = schedule([node(name, labels) for name, labels in nodes.items()], task)
    assert {s.name: s.scores["NodeAffinity"] for s in decision.ranking} == scores


def test_preferred_weights_are_kubernetes_range() -> None:
    for weight in (0, 101):
        with pytest.raises(ValidationError, match="weight"):
            schedule([node("node")], _preferred((weight, [_in("foo", "bar")])))


def test_affinity_sees_effective_labels_and_compares_quantities() -> None:
    # Ours: node labels are effective labels, so capabilities and resources are selectable and
    # Gt/Lt compare quantities (8Gi > 4Gi), which Kubernetes' int64 comparison cannot.
    big = node("big", resources={"memory": "8Gi"})
    small = node("small", resources={"memory": "2Gi"})
    task = _required({"matchExpressions": [{"key": "memory", "operator": "Gt", "values": ["4Gi"]}]})
    decision = schedule([big, small], task)
    assert decision.node is big
    assert decision.rejected == {"small": (REASON_AFFINITY,)}


def test_match_fields_not_in_refuses_only_the_named_node() -> None:
    # Ours: upstream's tables have no NotIn field case; OneTermNotEqualSelector semantics.
    not_n1 = _terms({"matchFields": [_op("metadata.name", "NotIn", "n1")]})
    selector = load(NodeSelector, not_n1, what="node selector")
    assert not selector.matches({}, "n1")
    assert selector.matches({}, "n2")
