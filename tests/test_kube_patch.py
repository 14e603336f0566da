"""Pure tests of the write machinery of #11 phase 2: patches, unknown fields, server-side apply,
condition times, and ``Registry.rewrite`` (compare-and-swap of a change, dry run, identity)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conftest import passport
from node_registry import FakeClock, Registry
from node_registry.errors import (
    BadRequestError,
    RevisionConflictError,
    TooLargeError,
    ValidationError,
)
from node_registry.kube import openapi
from node_registry.kube.apply import (
    ApplyConflictError,
    fields_of,
    from_fields_v1,
    server_side_apply,
    to_fields_v1,
)
from node_registry.kube.objects import stamp_conditions
from node_registry.kube.patch import (
    PatchType,
    added_unknown_fields,
    apply_patch,
    merge_patch,
    strategic_merge,
    unknown_fields,
)
from node_registry.passport import NodePassport
from node_registry.store import HealthState

NOW = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)
DOC: dict[str, Any] = {
    "metadata": {"name": "a", "labels": {"zone": "eu", "team": "x"}},
    "spec": {"capabilities": [{"name": "python", "version": "1"}, {"name": "go"}]},
    "status": {
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "DiskPressure", "status": "False"},
        ]
    },
}


# -- merge and JSON patches -----------------------------------------------------------------


def test_merge_patch_merges_objects_deletes_nulls_replaces_lists() -> None:
    patched = merge_patch(DOC, {"metadata": {"labels": {"team": None, "new": "1"}}})
    assert patched["metadata"]["labels"] == {"zone": "eu", "new": "1"}
    replaced = merge_patch(DOC, {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert replaced["status"]["conditions"] == [{"type": "Ready", "status": "False"}]
    assert DOC["metadata"]["labels"] == {"zone": "eu", "team": "x"}  # the original untouched


def test_json_patch_applies_all_or_nothing_with_clear_errors() -> None:
    ops = [{"op": "replace", "path": "/metadata/labels/zone", "value": "us"}]
    assert apply_patch(PatchType.JSON, DOC, ops)["metadata"]["labels"]["zone"] == "us"
    with pytest.raises(ValidationError, match="does not apply"):
        apply_patch(PatchType.JSON, DOC, [{"op": "remove", "path": "/metadata/labels/nope"}])
    with pytest.raises(ValidationError, match="test failed"):
        apply_patch(PatchType.JSON, DOC, [{"op": "test", "path": "/metadata/name", "value": "b"}])
    with pytest.raises(BadRequestError, match="list of operations"):
        apply_patch(PatchType.JSON, DOC, {"op": "add"})
    with pytest.raises(BadRequestError) as refused:
        apply_patch(PatchType.JSON, DOC, [{"path": "/x"}])
    assert refused.value.errors[0].loc == "[0]"
    with pytest.raises(ValidationError) as failed:
        apply_patch(PatchType.JSON, DOC, [{"op": "add", "path": "/x", "value": 1}, {"op": "move"}])
    assert failed.value.errors[0].loc.startswith("[1] move")
    with pytest.raises(BadRequestError, match="JSON object"):
        apply_patch(PatchType.MERGE, DOC, [1])


# -- strategic merge -------------------------------------------------------------------------


def test_strategic_merge_merges_conditions_by_type_and_capabilities_by_name() -> None:
    patched = strategic_merge(
        DOC,
        {
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Busy"}]},
            "spec": {"capabilities": [{"name": "rust"}]},
        },
    )
    assert patched["status"]["conditions"] == [
        {"type": "Ready", "status": "False", "reason": "Busy"},
        {"type": "DiskPressure", "status": "False"},
    ]
    assert [c["name"] for c in patched["spec"]["capabilities"]] == ["python", "go", "rust"]


def test_strategic_merge_directives() -> None:
    deleted = strategic_merge(
        DOC, {"status": {"conditions": [{"type": "DiskPressure", "$patch": "delete"}]}}
    )
    assert [c["type"] for c in deleted["status"]["conditions"]] == ["Ready"]
    replaced = strategic_merge(
        DOC, {"spec": {"capabilities": [{"name": "c"}, {"$patch": "replace"}]}}
    )
    assert replaced["spec"]["capabilities"] == [{"name": "c"}]
    whole = strategic_merge(DOC, {"metadata": {"labels": {"only": "1", "$patch": "replace"}}})
    assert whole["metadata"]["labels"] == {"only": "1"}
    gone = strategic_merge(DOC, {"metadata": {"labels": {"$patch": "delete"}}})
    assert "labels" not in gone["metadata"]
    ordered = strategic_merge(
        DOC,
        {
            "spec": {
                "$setElementOrder/capabilities": [{"name": "go"}, {"name": "python"}],
                "capabilities": [{"name": "go", "version": "2"}],
            }
        },
    )
    assert ordered["spec"]["capabilities"] == [
        {"name": "go", "version": "2"},
        {"name": "python", "version": "1"},
    ]
    retained = strategic_merge(DOC, {"metadata": {"$retainKeys": ["name"], "name": "a"}})
    assert retained["metadata"] == {"name": "a"}
    primitive = strategic_merge(
        {"spec": {"tags": ["a", "b", "c"]}}, {"spec": {"$deleteFromPrimitiveList/tags": ["b"]}}
    )
    assert primitive["spec"]["tags"] == ["a", "c"]


def test_strategic_merge_refuses_elements_without_their_key() -> None:
    with pytest.raises(BadRequestError) as refused:
        strategic_merge(DOC, {"status": {"conditions": [{"status": "True"}]}})
    assert refused.value.errors[0].loc == "status.conditions[0]"
    assert "merge key 'type'" in refused.value.errors[0].message
    with pytest.raises(BadRequestError, match="unknown \\$patch directive"):
        strategic_merge(DOC, {"metadata": {"$patch": "explode"}})
    with pytest.raises(BadRequestError, match="JSON object"):
        strategic_merge(DOC, [])


# -- unknown fields ------------------------------------------------------------------------


def test_unknown_fields_follow_the_openapi_schema() -> None:
    schemas = openapi.schemas()
    schema = schemas[f"{openapi.PREFIX}NodePassport"]
    doc = passport("a") | {"extra": 1}
    doc["spec"]["capabilities"][0]["colour"] = "red"
    doc["spec"]["capabilities"][0]["params"] = {"free": {"form": True}}  # free-form: fine
    doc["metadata"]["labels"] = {"any": "key"}  # a map: fine
    assert unknown_fields(doc, schema, schemas) == ["spec.capabilities[0].colour", "extra"]
    # What the node's own passport already had is not the writer's doing.
    again = {**doc, "spec": {**doc["spec"], "bogus": True}}
    assert added_unknown_fields(doc, again, schema, schemas) == ["spec.bogus"]


# -- server-side apply -----------------------------------------------------------------------


def _apply(current: dict[str, Any], applied: dict[str, Any], manager: str, **kw: Any) -> Any:
    return server_side_apply(
        current, applied, manager=manager, force=kw.get("force", False), now=NOW, api_version="v1"
    )


def test_fields_v1_round_trips_and_names_keyed_elements() -> None:
    fields = fields_of({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": DOC["spec"]})
    assert ("f:metadata", "f:labels", "f:x") in fields
    assert ("f:spec", "f:capabilities", 'k:{"name":"go"}') in fields
    assert not any(step == "f:name" for steps in fields for step in steps[:2])  # identity
    tree = to_fields_v1(fields)
    assert tree["f:spec"]["f:capabilities"]['k:{"name":"go"}'] == {".": {}, "f:name": {}}
    assert from_fields_v1(tree) == fields


def test_apply_owns_fields_removes_dropped_ones_and_conflicts_with_others() -> None:
    first = _apply(DOC, {"metadata": {"labels": {"app": "web", "tier": "1"}}}, "alice")
    assert first["metadata"]["labels"] == {"zone": "eu", "team": "x", "app": "web", "tier": "1"}
    [owner] = first["metadata"]["managedFields"]
    assert (owner["manager"], owner["operation"]) == ("alice", "Apply")
    # alice leaves tier out: it goes; the labels she never set stay.
    second = _apply(first, {"metadata": {"labels": {"app": "web"}}}, "alice")
    assert second["metadata"]["labels"] == {"zone": "eu", "team": "x", "app": "web"}
    # bob sets alice's field to another value: a conflict, unless forced.
    with pytest.raises(ApplyConflictError) as conflict:
        _apply(second, {"metadata": {"labels": {"app": "api"}}}, "bob")
    assert str(conflict.value) == (
        'Apply failed with 1 conflict: conflict with "alice": .metadata.labels.app'
    )
    # The same value is shared ownership, not a conflict.
    shared = _apply(second, {"metadata": {"labels": {"app": "web"}}}, "bob")
    assert [m["manager"] for m in shared["metadata"]["managedFields"]] == ["alice", "bob"]
    forced = _apply(second, {"metadata": {"labels": {"app": "api"}}}, "bob", force=True)
    assert forced["metadata"]["labels"]["app"] == "api"
    assert [m["manager"] for m in forced["metadata"]["managedFields"]] == ["bob"]


def test_apply_merges_keyed_lists_per_element() -> None:
    applied = _apply(DOC, {"status": {"conditions": [{"type": "Net", "status": "True"}]}}, "a")
    assert [c["type"] for c in applied["status"]["conditions"]] == ["Ready", "DiskPressure", "Net"]
    with pytest.raises(ValidationError, match="invalid apply configuration"):
        _apply(DOC, {"status": {"conditions": [{"status": "True"}]}}, "a")


def test_condition_times_are_stamped_only_where_the_write_changed_them() -> None:
    before = [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Disk", "status": "False"},
    ]
    after = [
        {"type": "Ready", "status": "True", "reason": "Fine"},  # same status: time kept
        {"type": "Disk", "status": "False"},  # untouched
        {"type": "Net", "status": "True"},  # new
    ]
    stamped = stamp_conditions(before, after, NOW)
    assert stamped[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert stamped[0]["lastHeartbeatTime"] == "2026-12-04T01:00:00Z"
    assert stamped[1] == {"type": "Disk", "status": "False"}
    assert stamped[2]["lastTransitionTime"] == "2026-12-04T01:00:00Z"


# -- Registry.rewrite ------------------------------------------------------------------------


def _labelled(value: str) -> Any:
    def change(stored: NodePassport, revision: int) -> dict[str, Any]:
        doc = stored.to_dict()
        doc["metadata"]["labels"]["team"] = value
        return doc

    return change


def test_rewrite_is_a_compare_and_swap_of_the_change() -> None:
    clock = FakeClock()
    with Registry(clock=clock) as registry:
        entry = registry.register(passport("a"))
        changed = registry.rewrite(entry.node_id, _labelled("x"))
        assert changed.passport.metadata.labels["team"] == "x"
        assert changed.resource_version > entry.resource_version
        with pytest.raises(RevisionConflictError, match="the object has been modified"):
            registry.rewrite(
                entry.node_id, _labelled("y"), expected_revision=entry.resource_version
            )
        pinned = registry.rewrite(
            entry.node_id, _labelled("y"), expected_revision=changed.resource_version
        )
        assert pinned.passport.metadata.labels["team"] == "y"
        dry = registry.rewrite(entry.node_id, _labelled("z"), dry_run=True)
        assert dry.passport.metadata.labels["team"] == "z"
        assert registry.get(entry.node_id).passport.metadata.labels["team"] == "y"
        assert registry.resource_version == pinned.resource_version


def test_rewrite_keeps_health_unless_it_is_a_heartbeat() -> None:
    clock = FakeClock()
    with Registry(clock=clock) as registry:
        entry = registry.register(passport("a"))
        clock.advance(registry.ttl_seconds - 1)
        registry.reconcile()
        assert registry.get(entry.node_id).health_state is HealthState.NOT_READY
        labelled = registry.rewrite(entry.node_id, _labelled("x"))
        assert labelled.health_state is HealthState.NOT_READY  # an operator's label: no heartbeat
        reported = registry.rewrite(entry.node_id, _labelled("y"), heartbeat=True)
        assert reported.health_state is HealthState.ALIVE


def test_rewrite_refuses_identity_changes_and_limits() -> None:
    with Registry(clock=FakeClock()) as registry:
        entry = registry.register(passport("a"))

        def renamed(stored: NodePassport, revision: int) -> dict[str, Any]:
            return passport("b", uid=entry.node_id)

        with pytest.raises(ValidationError) as refused:
            registry.rewrite(entry.node_id, renamed)
        assert refused.value.errors[0].loc == "metadata.name"

        def many(stored: NodePassport, revision: int) -> dict[str, Any]:
            doc = stored.to_dict()
            doc["status"]["conditions"] = [{"type": f"C{i}", "status": "True"} for i in range(33)]
            return doc

        with pytest.raises(ValidationError, match="at most 32 items"):
            registry.rewrite(entry.node_id, many)

        def huge(stored: NodePassport, revision: int) -> dict[str, Any]:
            doc = stored.to_dict()
            doc["metadata"]["annotations"] = {"big": "x" * 300_000}
            return doc

        with pytest.raises((TooLargeError, ValidationError)):
            registry.rewrite(entry.node_id, huge)
        assert registry.get(entry.node_id).resource_version == entry.resource_version


def test_deregister_with_a_stale_revision_is_refused() -> None:
    with Registry(clock=FakeClock()) as registry:
        entry = registry.register(passport("a"))
        registry.rewrite(entry.node_id, _labelled("x"))
        for keep in (False, True):
            with pytest.raises(RevisionConflictError):
                registry.deregister(
                    entry.node_id, keep_binding=keep, expected_revision=entry.resource_version
                )
        current = registry.get(entry.node_id).resource_version
        registry.deregister(entry.node_id, expected_revision=current)
        assert registry.list_nodes().items == []
