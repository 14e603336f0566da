"""Kubernetes' own test tables for topology spread constraints, run against ours.

From ``pkg/scheduler/framework/plugins/podtopologyspread``: the filter cases of
``filtering_test.go`` (TestSingleConstraint, TestMultipleConstraints) and the score cases of
``scoring_test.go`` (TestPodTopologySpreadScore), each with its upstream name as the test id.
Existing pods become placements with the same labels. Left out: the namespace and
terminating-pod cases (tasks have neither) and system-default spreading (a service selector).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from node_registry.orchestrator import Placement, load_requirements
from node_registry.orchestrator.plugins import (
    REASON_SPREAD,
    REASON_SPREAD_LABEL,
    TopologySpreadFilter,
    TopologySpreadScore,
    node_infos,
)
from nodes import node

HOSTNAME = "kubernetes.io/hostname"
FOO = {"matchExpressions": [{"key": "foo", "operator": "Exists"}]}
BAR = {"matchExpressions": [{"key": "bar", "operator": "Exists"}]}
OK = None


def _task(*constraints: tuple[int, str, str], labels: Mapping[str, str] | None = None,
          selector: Mapping[str, Any] = FOO, **extra: Any) -> dict[str, Any]:  # fmt: skip
    spread = [
        {"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when, "labelSelector": selector}
        for skew, key, when in constraints
    ]
    return {"labels": dict(labels or {"foo": ""}), "topologySpreadConstraints": spread, **extra}


def _pods(**counts: int) -> list[Placement]:
    """``node_a=2`` is two matching tasks on node-a."""
    return [
        Placement(f"p-{name}-{i}", name.replace("_", "-"), {"labels": {"foo": ""}})
        for name, count in counts.items()
        for i in range(count)
    ]


def _zoned(*names: str) -> dict[str, dict[str, str]]:
    zones = {"node-a": "zone1", "node-b": "zone1", "node-x": "zone2", "node-y": "zone2"}
    return {n: {"zone": zones[n], "node": n} for n in names}


FOUR = _zoned("node-a", "node-b", "node-x", "node-y")
DNS = "DoNotSchedule"
SA = "ScheduleAnyway"

# filtering_test.go: TestSingleConstraint and TestMultipleConstraints
FILTER = [
    pytest.param(_task((1, "zone", DNS)), FOUR, [],
                 {"node-a": OK, "node-b": OK, "node-x": OK, "node-y": OK},
                 id="no existing pods"),
    pytest.param(_task((1, "zone", DNS), selector=BAR),
                 FOUR, [], {"node-a": OK, "node-b": OK, "node-x": OK, "node-y": OK},
                 id="no existing pods, incoming pod doesn't match itself"),
    pytest.param(_task((1, "zone", DNS)), FOUR, _pods(node_a=2, node_b=1, node_y=3),
                 {"node-a": OK, "node-b": OK, "node-x": OK, "node-y": OK},
                 id="pods spread across zones as 3/3, all nodes fit"),
    pytest.param(_task((1, "zone", DNS)),
                 {**FOUR, "node-b": {"zon": "zone1", "node": "node-b"}},
                 _pods(node_a=1, node_b=1, node_x=1, node_y=1),
                 {"node-a": OK, "node-b": REASON_SPREAD_LABEL, "node-x": REASON_SPREAD,
                  "node-y": REASON_SPREAD},
                 id="pods spread across zones as 1/2 due to absence of label 'zone' on node-b"),
    pytest.param(_task((1, "rack", DNS)), _zoned("node-a", "node-x"), [],
                 {"node-a": REASON_SPREAD_LABEL, "node-x": REASON_SPREAD_LABEL},
                 id="pod cannot be scheduled as all nodes don't have label 'rack'"),
    pytest.param(_task((1, "node", DNS)), FOUR, _pods(node_a=2, node_b=1, node_y=3),
                 {"node-a": REASON_SPREAD, "node-b": REASON_SPREAD, "node-x": OK,
                  "node-y": REASON_SPREAD},
                 id="pods spread across nodes as 2/1/0/3, only node-x fits"),
    pytest.param(_task((2, "node", DNS)), FOUR, _pods(node_a=2, node_b=1, node_y=3),
                 {"node-a": REASON_SPREAD, "node-b": OK, "node-x": OK, "node-y": REASON_SPREAD},
                 id="pods spread across nodes as 2/1/0/3, maxSkew is 2, node-b and node-x fit"),
    pytest.param(_task((1, "node", DNS), labels={"bar": ""}), FOUR,
                 _pods(node_a=2, node_b=1, node_y=3),
                 {"node-a": REASON_SPREAD, "node-b": OK, "node-x": OK, "node-y": REASON_SPREAD},
                 id="pods spread across nodes as 2/1/0/3, but pod doesn't match itself"),
    # Upstream runs only this plugin here, so node-b and node-x (which NodeAffinity refuses)
    # still pass it; node-a fitting shows their domains are not counted.
    pytest.param(_task((1, "node", DNS), affinity={"nodeAffinity": {
                     "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                         {"matchExpressions": [{"key": "node", "operator": "In",
                                                "values": ["node-a", "node-y"]}]}]}}}),
                 FOUR, _pods(node_a=2, node_b=1, node_y=3),
                 {"node-a": OK, "node-b": OK, "node-x": OK, "node-y": REASON_SPREAD},
                 id="incoming pod has nodeAffinity, pods spread as 2/~1~/~0~/3, hence node-a fits"),
    pytest.param(_task((1, "zone", DNS), (1, "node", DNS)), FOUR,
                 _pods(node_a=2, node_b=1, node_y=3),
                 {"node-a": REASON_SPREAD, "node-b": REASON_SPREAD, "node-x": OK,
                  "node-y": REASON_SPREAD},
                 id="two Constraints on zone and node, spreads = [3/3, 2/1/0/3]"),
    pytest.param(_task((1, "zone", DNS), (1, "node", DNS)), FOUR,
                 _pods(node_a=2, node_b=1, node_y=4),
                 {"node-a": REASON_SPREAD, "node-b": REASON_SPREAD, "node-x": REASON_SPREAD,
                  "node-y": REASON_SPREAD},
                 id="two Constraints on zone and node, spreads = [3/4, 2/1/0/4]"),
]  # fmt: skip


@pytest.mark.parametrize(("task", "nodes", "pods", "want"), FILTER)
def test_topology_spread_filter(
    task: dict[str, Any],
    nodes: dict[str, dict[str, str]],
    pods: list[Placement],
    want: dict[str, str | None],
) -> None:
    infos = node_infos([node(name, labels) for name, labels in nodes.items()], pods)
    plugin = TopologySpreadFilter(load_requirements(task), infos)
    got = {info.name: (plugin.filter(info) or [None])[0] for info in infos}
    assert got == want


def _hosts(*names: str, zones: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    return {n: {HOSTNAME: n, **({"zone": zones[n]} if zones else {})} for n in names}


# scoring_test.go: TestPodTopologySpreadScore (nodes that passed the filters, nodes that did
# not, existing pods, normalised scores).
SCORE = [
    pytest.param(_task((1, HOSTNAME, SA)), _hosts("node-a", "node-b"), {}, [],
                 {"node-a": 100, "node-b": 100}, id="one constraint on node, no existing pods"),
    pytest.param(_task((1, HOSTNAME, SA)), _hosts("node-a"), _hosts("node-b"),
                 _pods(node_a=2, node_b=1), {"node-a": 100},
                 id="one constraint on node, only one node is candidate"),
    pytest.param(_task((1, HOSTNAME, SA)), _hosts("node-a", "node-b"), {},
                 _pods(node_a=1, node_b=1), {"node-a": 100, "node-b": 100},
                 id="one constraint on node, all nodes have the same number of matching pods"),
    pytest.param(_task((1, HOSTNAME, SA)), _hosts("node-a", "node-b", "node-c", "node-d"), {},
                 _pods(node_a=2, node_b=1, node_d=3),
                 {"node-a": 20, "node-b": 60, "node-c": 100, "node-d": 0},
                 id="one constraint on node, all 4 nodes are candidates"),
    pytest.param(_task((2, HOSTNAME, SA)), _hosts("node-a", "node-b", "node-c", "node-d"), {},
                 _pods(node_a=2, node_b=1, node_d=3),
                 {"node-a": 33, "node-b": 66, "node-c": 100, "node-d": 16},
                 id="one constraint on node, all 4 nodes are candidates, maxSkew=2"),
    pytest.param(_task((3, HOSTNAME, SA)), _hosts("node-a", "node-b", "node-c", "node-d"), {},
                 _pods(node_a=4, node_b=3, node_c=2, node_d=1),
                 {"node-a": 44, "node-b": 66, "node-c": 77, "node-d": 100},
                 id="one constraint on node, all 4 nodes are candidates, maxSkew=3"),
    pytest.param(_task((1, HOSTNAME, SA)), _hosts("node-a", "node-b", "node-x"),
                 _hosts("node-y"), _pods(node_a=4, node_b=2, node_x=1, node_y=3),
                 {"node-a": 33, "node-b": 83, "node-x": 100},
                 id="one constraint on node, 3 out of 4 nodes are candidates"),
    pytest.param(_task((1, HOSTNAME, SA)),
                 {**_hosts("node-a"), "node-b": {"n": "node-b"}, **_hosts("node-x")},
                 _hosts("node-y"), _pods(node_a=4, node_b=2, node_x=1, node_y=3),
                 {"node-a": 16, "node-b": 0, "node-x": 100},
                 id="one constraint on node, 3 out of 4 nodes are candidates, one node doesn't "
                 "match topology key"),
    pytest.param(_task((1, "zone", SA)),
                 _hosts("node-a", "node-b", "node-x", zones={"node-a": "zone1", "node-b": "zone1",
                                                             "node-x": "zone2"}),
                 _hosts("node-y", zones={"node-y": "zone2"}),
                 _pods(node_a=4, node_b=2, node_x=1, node_y=3),
                 {"node-a": 75, "node-b": 75, "node-x": 100},
                 id="one constraint on zone, 3 out of 4 nodes are candidates"),
]  # fmt: skip


@pytest.mark.parametrize(("task", "feasible", "failed", "pods", "want"), SCORE)
def test_topology_spread_score(
    task: dict[str, Any],
    feasible: dict[str, dict[str, str]],
    failed: dict[str, dict[str, str]],
    pods: list[Placement],
    want: dict[str, int],
) -> None:
    infos = node_infos([node(n, labels) for n, labels in {**feasible, **failed}.items()], pods)
    candidates = [info for info in infos if info.name in feasible]
    plugin = TopologySpreadScore(load_requirements(task), infos, candidates)
    scores = plugin.normalize(candidates, [plugin.score(info) for info in candidates])
    assert dict(zip([i.name for i in candidates], scores, strict=True)) == want
