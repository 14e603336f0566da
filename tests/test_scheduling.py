"""The scheduler as a whole: fit, load, anti-affinity, health taints, explanations, eviction.

Kubernetes' own tables for tolerations, node affinity and spreading are in test_k8s_*.py;
these cover what those tables do not, and the walk-through in docs/scheduling.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import passport
from node_registry import FakeClock, HealthState, Registry, ValidationError
from node_registry.orchestrator import (
    Placement,
    Scheduler,
    evictions,
    load_requirements,
    schedule,
    scheduler,
)
from node_registry.orchestrator.taints import NOT_READY_TAINT_KEY, UNREACHABLE_TAINT_KEY
from nodes import T0, node

ROOT = Path(__file__).resolve().parents[1]


def _anti(*terms: dict[str, Any], preferred: bool = False) -> dict[str, Any]:
    key = "preferred" if preferred else "required"
    terms_by_kind = {f"{key}DuringSchedulingIgnoredDuringExecution": list(terms)}
    return {"affinity": {"taskAntiAffinity": terms_by_kind}}


# --- load: currentTasks / maxConcurrentTasks ---------------------------------------------------


def test_select_best_prefers_the_smaller_share_of_slots_used() -> None:
    # 4 of 8 slots used (half) loses to 1 of 4 (a quarter), though it has more free slots.
    half = node("half", max_tasks=8, current=4)
    quarter = node("quarter", max_tasks=4, current=1)
    assert scheduler.select_best([half, quarter]) is quarter


def test_a_full_node_never_fits_and_says_so() -> None:
    full = node("full", max_tasks=2, current=2)
    closed = node("closed", max_tasks=0)
    decision = schedule([full, closed])
    assert decision.node is None
    assert decision.message() == "0/2 nodes are available: 2 Too many tasks."


def test_a_node_without_a_limit_is_never_full_and_scores_as_empty() -> None:
    unlimited = node("unlimited", max_tasks=None, current=50)
    empty = node("empty", max_tasks=4)
    decision = schedule([unlimited, empty])
    assert [s.scores["LeastLoaded"] for s in decision.ranking] == [100, 100]
    assert decision.node is empty  # a tie, broken by name


def test_placements_count_when_the_node_has_not_reported_them_yet() -> None:
    lagging = node("lagging", max_tasks=2, current=0)
    other = node("other", max_tasks=4, current=1)
    placed = [Placement("t1", "lagging"), Placement("t2", "lagging")]
    decision = schedule([lagging, other], placements=placed)
    assert decision.rejected == {"lagging": ("Too many tasks",)}
    assert decision.node is other


# --- resources ---------------------------------------------------------------------------------


def test_requests_fit_against_declared_minus_allocated() -> None:
    small = node("small", resources={"cpu": "2", "memory": "4Gi"})
    big = node("big", resources={"cpu": "8", "memory": "16Gi"})
    task = {"resources": {"requests": {"cpu": "1500m", "memory": "3Gi"}}}
    assert schedule([small, big], task).rejected == {}
    # 12Gi already allocated on big by the orchestrator's own tasks: 4Gi left, not enough.
    placed = [Placement("t1", "big", {"resources": {"requests": {"memory": "12Gi"}}})]
    decision = schedule([big], {"resources": {"requests": {"memory": "5Gi"}}}, placements=placed)
    assert decision.message() == "0/1 nodes are available: 1 Insufficient memory."


def test_an_undeclared_resource_is_insufficient_and_a_zero_request_is_not_checked() -> None:
    plain = node("plain", resources={"cpu": "4"})
    decision = schedule([plain], {"resources": {"requests": {"nvidia.com/gpu": "1", "cpu": "4"}}})
    assert decision.rejected == {"plain": ("Insufficient nvidia.com/gpu",)}
    assert schedule([plain], {"resources": {"requests": {"nvidia.com/gpu": "0"}}}).node is plain


def test_bad_requests_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"resources.requests: memory: '-1Gi'"):
        load_requirements({"resources": {"requests": {"memory": "-1Gi"}}})


# --- anti-affinity -----------------------------------------------------------------------------

ZONES = {"a1": "zone-a", "a2": "zone-a", "b1": "zone-b", "n": ""}


def _zone_nodes() -> list[Any]:
    return [node(name, {"zone": z} if z else {}) for name, z in ZONES.items()]


def test_required_anti_affinity_keeps_away_from_a_domain_with_matching_tasks() -> None:
    placed = [Placement("db-1", "a1", {"labels": {"app": "db"}})]
    task = {"labels": {"app": "db"}, **_anti({"labelSelector": "app=db", "topologyKey": "zone"})}
    decision = schedule(_zone_nodes(), task, placements=placed)
    # a2 shares zone-a with db-1; n has no zone label, so the term does not apply to it.
    assert decision.rejected == {
        "a1": ("node(s) didn't match task anti-affinity rules",),
        "a2": ("node(s) didn't match task anti-affinity rules",),
    }
    assert {s.name for s in decision.ranking} == {"b1", "n"}


def test_a_running_tasks_anti_affinity_keeps_newcomers_away() -> None:
    # Symmetry, as upstream: the running task's required term refuses the newcomer.
    lonely = {
        "labels": {"app": "cache"},
        **_anti({"labelSelector": "app=web", "topologyKey": "zone"}),
    }
    placed = [Placement("cache-1", "b1", lonely)]
    decision = schedule(_zone_nodes(), {"labels": {"app": "web"}}, placements=placed)
    assert decision.rejected == {
        "b1": ("node(s) didn't satisfy existing tasks anti-affinity rules",)
    }
    assert schedule(_zone_nodes(), {"labels": {"app": "api"}}, placements=placed).rejected == {}


def test_preferred_anti_affinity_scores_domains_by_matching_tasks() -> None:
    placed = [
        Placement("w1", "a1", {"labels": {"app": "web"}}),
        Placement("w2", "a2", {"labels": {"app": "web"}}),
        Placement("w3", "b1", {"labels": {"app": "web"}}),
    ]
    term = {"weight": 10, "taskAffinityTerm": {"labelSelector": "app=web", "topologyKey": "zone"}}
    task = {"labels": {"app": "web"}, **_anti(term, preferred=True)}
    decision = schedule(_zone_nodes(), task, placements=placed)
    scores = {s.name: s.scores["TaskAntiAffinity"] for s in decision.ranking}
    # zone-a costs 20, zone-b 10, no zone 0: scaled min to max.
    assert scores == {"a1": 0, "a2": 0, "b1": 50, "n": 100}
    assert decision.node is not None
    assert decision.node.name == "n"


# --- spreading, beyond the upstream tables -----------------------------------------------------


def _spread(when: str = "DoNotSchedule", **extra: Any) -> dict[str, Any]:
    constraint = {
        "maxSkew": 1,
        "topologyKey": "zone",
        "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": {"group": "g"}},
        **extra,
    }
    return {"labels": {"group": "g"}, "topologySpreadConstraints": [constraint]}


def test_min_domains_treats_the_global_minimum_as_zero() -> None:
    # One zone exists, with one task; minDomains 2 means a missing second domain counts as 0.
    nodes = [node("a1", {"zone": "zone-a"})]
    placed = [Placement("t1", "a1", {"labels": {"group": "g"}})]
    assert schedule(nodes, _spread(), placements=placed).node is not None
    decision = schedule(nodes, _spread(minDomains=2), placements=placed)
    assert decision.rejected == {"a1": ("node(s) didn't match task topology spread constraints",)}


def test_node_taints_policy_honor_leaves_out_domains_the_task_cannot_use() -> None:
    tainted = node("b1", {"zone": "zone-b"}, taints=[{"key": "x", "effect": "NoSchedule"}])
    nodes = [node("a1", {"zone": "zone-a"}), tainted]
    placed = [Placement("t1", "a1", {"labels": {"group": "g"}})]
    # Ignore (the default): zone-b counts with 0 tasks, so a1 would make the skew 2.
    assert "a1" in schedule(nodes, _spread(), placements=placed).rejected
    # Honor: zone-b is not a domain for this task, so a1 is fine.
    assert schedule(nodes, _spread(nodeTaintsPolicy="Honor"), placements=placed).node is nodes[0]


def test_schedule_anyway_prefers_the_emptier_domain_but_refuses_nothing() -> None:
    nodes = [node("a1", {"zone": "zone-a"}), node("b1", {"zone": "zone-b"})]
    placed = [Placement(f"t{i}", "a1", {"labels": {"group": "g"}}) for i in range(3)]
    decision = schedule(nodes, _spread("ScheduleAnyway"), placements=placed)
    assert decision.rejected == {}
    assert decision.node is nodes[1]


@pytest.mark.parametrize(
    ("requirements", "message"),
    [
        (_spread("ScheduleAnyway", minDomains=2),
         "minDomains: can only be used with whenUnsatisfiable DoNotSchedule"),
        ({"topologySpreadConstraints": _spread()["topologySpreadConstraints"] * 2},
         "zone, DoNotSchedule must be unique"),
        ({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                         "whenUnsatisfiable": "DoNotSchedule"}]},
         "topologySpreadConstraints[0].labelSelector: Field required"),
        (_spread(labelSelector="a in (b"),
         'topologySpreadConstraints[0]: labelSelector: invalid label selector "a in (b"'),
        (_anti({"labelSelector": "app=db", "topologyKey": "-bad-"}), "topologyKey"),
        ({"labels": {"app": "-x-"}}, "labels: value '-x-' of 'app'"),
        ({"nodeSelector": {"a/b/c": "x"}}, "nodeSelector: key 'a/b/c'"),
        ({"tolerashuns": []}, "tolerashuns: Extra inputs are not permitted"),
    ],
    ids=["min-domains", "duplicate", "no-selector", "bad-selector", "topology-key", "labels",
         "node-selector", "unknown-field"],
)  # fmt: skip
def test_bad_requirements_are_refused_naming_the_field(
    requirements: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        load_requirements(requirements)


# --- health taints and NoExecute eviction ------------------------------------------------------


def test_a_not_ready_or_offline_node_repels_tasks_that_do_not_tolerate_it() -> None:
    nodes = [
        node("quiet", health=HealthState.NOT_READY),
        node("gone", health=HealthState.OFFLINE),
        node("up"),
    ]
    decision = schedule(nodes)
    assert decision.rejected == {
        "quiet": (f"node(s) had untolerated taint {{{NOT_READY_TAINT_KEY}: }}",),
        "gone": (f"node(s) had untolerated taint {{{UNREACHABLE_TAINT_KEY}: }}",),
    }
    brave = {"tolerations": [{"key": NOT_READY_TAINT_KEY, "operator": "Exists"}]}
    assert "quiet" not in schedule(nodes, brave).rejected


def _tolerate(key: str, seconds: int | None, effect: str = "NoExecute") -> dict[str, Any]:
    doc: dict[str, Any] = {"key": key, "operator": "Exists", "effect": effect}
    if seconds is not None:
        doc["tolerationSeconds"] = seconds
    return doc


def test_no_execute_evicts_at_once_after_toleration_seconds_or_never() -> None:
    taint = {"key": "maintenance", "effect": "NoExecute", "timeAdded": T0.isoformat()}
    tainted = node("n1", taints=[taint])
    running = [
        Placement("plain", "n1"),
        Placement("patient", "n1", {"tolerations": [_tolerate("maintenance", 300)]}),
        Placement("stubborn", "n1", {"tolerations": [_tolerate("maintenance", None)]}),
        Placement("hasty", "n1", {"tolerations": [_tolerate("maintenance", -5)]}),
        Placement("elsewhere", "n2"),
    ]
    found = evictions(tainted, running, now=T0 + timedelta(seconds=10))
    assert [(e.task, e.at - T0) for e in found] == [
        ("hasty", timedelta(0)),
        ("plain", timedelta(seconds=10)),
        ("patient", timedelta(seconds=300)),
    ]
    due = [e.task for e in found if e.due(T0 + timedelta(seconds=10))]
    assert due == ["hasty", "plain"]
    assert all(str(e.taint) == "maintenance:NoExecute" for e in found)


def test_no_schedule_taints_evict_nothing() -> None:
    tainted = node("n1", taints=[{"key": "maintenance", "effect": "NoSchedule"}])
    assert evictions(tainted, [Placement("plain", "n1")], now=T0) == []


def test_eviction_uses_the_first_matching_toleration_as_upstream() -> None:
    # GetMatchingTolerations takes the first toleration that matches a taint, not the longest.
    tainted = node("n1", taints=[{"key": "m", "effect": "NoExecute", "timeAdded": T0.isoformat()}])
    first_short = {"tolerations": [_tolerate("m", 60), _tolerate("m", None)]}
    first_forever = {"tolerations": [_tolerate("m", None), _tolerate("m", 60)]}
    running = [Placement("a", "n1", first_short), Placement("b", "n1", first_forever)]
    found = evictions(tainted, running, now=T0)
    assert [(e.task, e.at - T0) for e in found] == [("a", timedelta(seconds=60))]


def test_a_taint_without_time_added_counts_from_now() -> None:
    tainted = node("n1", taints=[{"key": "m", "effect": "NoExecute"}])
    now = T0 + timedelta(hours=1)
    running = [Placement("a", "n1", {"tolerations": [_tolerate("m", 60)]})]
    (found,) = evictions(tainted, running, now=now)
    assert found.at == now + timedelta(seconds=60)
    assert not found.due(now)


def test_a_silent_node_evicts_its_tasks_after_their_toleration(clock: FakeClock) -> None:
    registry = Registry(clock=clock)
    entry = registry.register(passport("n1"))
    other = registry.register(passport("n2"))
    patient = {"tolerations": [_tolerate(UNREACHABLE_TAINT_KEY, 60)]}
    running = [Placement("plain", "n1"), Placement("patient", "n1", patient)]
    assert evictions(registry.get(entry.node_id), running, now=clock.now()) == []
    for _ in range(4):  # n1 silent for 40 s: NotReady at 20 s, Offline at 30 s
        clock.advance(10)
        registry.heartbeat(other.node_id)
        registry.reconcile()
    silent = registry.get(entry.node_id)
    assert silent.health_state is HealthState.OFFLINE
    became_unready = silent.passport.status.condition("Ready")
    assert became_unready is not None
    assert became_unready.last_transition_time is not None
    found = evictions(silent, running, now=clock.now())
    assert [(e.task, e.due(clock.now())) for e in found] == [("plain", True), ("patient", False)]
    assert found[1].at == became_unready.last_transition_time + timedelta(seconds=60)


# --- the decision and its explanation ----------------------------------------------------------


def test_the_fit_error_counts_reasons_like_kubernetes() -> None:
    nodes = [
        node("a", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        node("b", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]),
        node("c", resources={"memory": "1Gi"}),
        node("d", resources={"memory": "2Gi"}, max_tasks=1, current=1),
        node("e", {"zone": "x"}),
    ]
    decision = schedule(
        nodes, {"nodeSelector": {"zone": "y"}, "resources": {"requests": {"memory": "4Gi"}}}
    )
    assert decision.node is None
    assert decision.message() == (
        "0/5 nodes are available: 1 Too many tasks, 2 node(s) had untolerated taint "
        "{dedicated: gpu}, 5 Insufficient memory, 5 node(s) didn't match the task's node "
        "affinity/selector."
    )
    assert decision.rejected["d"] == (
        "node(s) didn't match the task's node affinity/selector",
        "Too many tasks",
        "Insufficient memory",
    )


def test_no_candidates_at_all() -> None:
    decision = schedule([])
    assert (decision.node, decision.message()) == (None, "0/0 nodes are available.")
    assert scheduler.select_best([]) is None


def test_a_decision_names_the_winner_and_the_refused() -> None:
    decision = schedule([node("a", current=2), node("b"), node("c", max_tasks=1, current=1)])
    assert decision.message() == "b (score 400); 2/3 nodes are feasible; refused: 1 Too many tasks."
    assert [(s.name, s.total) for s in decision.ranking] == [("b", 400), ("a", 350)]


def test_weights_change_the_outcome_and_zero_turns_a_score_off() -> None:
    loaded = node("loaded", {"disk": "ssd"}, current=3)
    idle = node("idle")
    ssd = {"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
    prefer_ssd = {
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [ssd]}}
    }
    assert schedule([loaded, idle], prefer_ssd).node is loaded  # NodeAffinity 2x100 > 75
    spread_out = Scheduler(weights={"NodeAffinity": 0})
    assert spread_out.select_best([loaded, idle], prefer_ssd) is idle
    assert "NodeAffinity" not in spread_out.schedule([idle], prefer_ssd).ranking[0].scores


def test_bad_weights_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Scheduler(weights={"Nope": 1, "LeastLoaded": -1})
    assert [e.loc for e in caught.value.errors] == ["weights.Nope", "weights.LeastLoaded"]


def test_placements_accept_the_dict_form_and_refuse_bad_input() -> None:
    assert Placement("t", "n", {"labels": {"a": "b"}}).requirements.labels == {"a": "b"}
    with pytest.raises(ValidationError, match="invalid task requirements"):
        Placement("t", "n", {"labels": {"a": "-"}})


_node_specs = st.lists(
    st.tuples(
        st.sampled_from(["zone-a", "zone-b", None]),
        st.integers(0, 4),  # current tasks, of 4
        st.sampled_from([None, "NoSchedule", "PreferNoSchedule"]),
        st.sampled_from(["2Gi", "8Gi"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(_node_specs, st.randoms(use_true_random=False))
def test_property_the_choice_is_feasible_best_and_independent_of_order(
    specs: list[tuple[str | None, int, str | None, str]], rng: Any
) -> None:
    nodes = [
        node(
            f"n{i}",
            {"zone": zone} if zone else {},
            current=current,
            taints=[{"key": "t", "effect": effect}] if effect else [],
            resources={"memory": memory},
        )
        for i, (zone, current, effect, memory) in enumerate(specs)
    ]
    task = {"resources": {"requests": {"memory": "4Gi"}}, **_spread("ScheduleAnyway")}
    decision = schedule(nodes, task)
    assert len(decision.ranking) + len(decision.rejected) == len(nodes) == decision.considered
    assert all(reasons for reasons in decision.rejected.values())
    if decision.node is not None:
        assert decision.node.name not in decision.rejected
        assert decision.ranking[0].total == max(s.total for s in decision.ranking)
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    again = schedule(shuffled, task)
    assert again.node == decision.node
    assert [s.name for s in again.ranking] == [s.name for s in decision.ranking]


# --- the walk-through --------------------------------------------------------------------------


def test_the_walk_through_output_in_the_docs_is_current() -> None:
    script = ROOT / "examples" / "scheduling.py"
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    doc = (ROOT / "docs" / "scheduling.md").read_text(encoding="utf-8")
    match = re.search(r"\$ python examples/scheduling.py\n(.*?)```", doc, re.DOTALL)
    assert match is not None, "docs/scheduling.md has no output block for the walk-through"
    assert match.group(1) == result.stdout, (
        "docs/scheduling.md is out of date with examples/scheduling.py; paste its output"
    )
