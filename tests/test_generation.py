"""metadata.generation: 1 at registration, one more per spec change, kept across restarts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from conftest import BACKENDS, MakeRegistry, passport
from node_registry.kube.objects import entry_to_object, object_bytes
from node_registry.passport import NodePassport
from node_registry.registry import Registry
from node_registry.store.records import NodeRecord


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


NOW = datetime(2026, 12, 4, tzinfo=UTC)


def _generation(registry: Registry, node_id: str) -> int:
    return registry.get(node_id).generation


def test_the_generation_counts_spec_changes_only(make_registry: MakeRegistry) -> None:
    registry = make_registry()
    first = NodePassport.model_validate(passport("gen-01"))
    node_id = registry.register(first).node_id
    assert _generation(registry, node_id) == 1
    registry.heartbeat(node_id)
    registry.update_status(node_id, current_tasks=2)
    assert _generation(registry, node_id) == 1  # status is not the spec
    registry.register(first)  # the same passport again: no change of the spec
    assert _generation(registry, node_id) == 1
    registry.set_capabilities(node_id, [{"name": "code_generation"}, {"name": "review"}])
    assert _generation(registry, node_id) == 2
    registry.set_capabilities(node_id, [{"name": "code_generation"}, {"name": "review"}])
    assert _generation(registry, node_id) == 2
    doc = first.to_dict()
    doc["spec"]["endpoint"] = {"protocol": "http", "address": "http://127.0.0.1:9999"}
    registry.register(NodePassport.model_validate(doc))
    assert _generation(registry, node_id) == 3
    registry.reconcile()  # the controller's writes keep it
    assert _generation(registry, node_id) == 3
    entry = registry.get(node_id)
    assert entry_to_object(entry)["metadata"]["generation"] == 3
    assert json.loads(object_bytes(entry))["metadata"]["generation"] == 3


def test_the_generation_is_stored_and_old_records_read_as_the_first() -> None:
    stored = NodeRecord(NodePassport.model_validate(passport("gen-02")), NOW).to_dict()
    record = NodeRecord.from_dict({**stored, "generation": 7})
    assert record.generation == 7
    assert NodeRecord.from_dict(record.to_dict()).generation == 7
    old = record.to_dict()
    del old["generation"]
    assert NodeRecord.from_dict(old).generation == 1
