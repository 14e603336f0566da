"""Taints in the passport (``spec.taints``): validated as Kubernetes validates node taints."""

from __future__ import annotations

import re
from typing import Any

import pytest

from conftest import passport
from node_registry import ValidationError, load_passport
from node_registry.passport import limits


def test_a_passport_without_taints_is_stored_without_them() -> None:
    doc = passport("n1")
    assert "taints" not in load_passport(doc).to_dict()["spec"]


def test_taints_are_stored_as_sent() -> None:
    doc = passport("n1")
    doc["spec"]["taints"] = [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        {"key": "dedicated", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"},
    ]
    assert load_passport(doc).to_dict()["spec"]["taints"] == doc["spec"]["taints"]


@pytest.mark.parametrize(
    ("taint", "message"),
    [
        ({"key": "a/b/c", "effect": "NoSchedule"}, "spec.taints[0].key: a qualified name"),
        ({"key": "a", "value": "-x", "effect": "NoSchedule"}, "spec.taints[0].value"),
        ({"key": "a", "effect": "Sometimes"}, "spec.taints[0].effect: Input should be"),
        ({"key": "a"}, "spec.taints[0].effect: Field required"),
    ],
    ids=["key", "value", "effect", "no-effect"],
)
def test_bad_taints_are_refused_naming_the_field(taint: dict[str, Any], message: str) -> None:
    doc = passport("n1")
    doc["spec"]["taints"] = [taint]
    with pytest.raises(ValidationError, match=re.escape(message)):
        load_passport(doc)


def test_taints_are_unique_by_key_and_effect() -> None:
    doc = passport("n1")
    doc["spec"]["taints"] = [
        {"key": "a", "value": "x", "effect": "NoSchedule"},
        {"key": "a", "value": "y", "effect": "NoExecute"},  # another effect: allowed
        {"key": "a", "value": "z", "effect": "NoSchedule"},
    ]
    with pytest.raises(ValidationError, match=r"taints\[2\] repeats taints\[0\] \(a:NoSchedule\)"):
        load_passport(doc)


def test_taints_have_a_limit() -> None:
    doc = passport("n1")
    doc["spec"]["taints"] = [
        {"key": f"k{i}", "effect": "NoSchedule"} for i in range(limits.MAX_TAINTS + 1)
    ]
    with pytest.raises(ValidationError, match=re.escape("spec.taints: List should have at most")):
        load_passport(doc)


def test_the_schema_refuses_a_bad_effect() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from node_registry.passport.schema import passport_json_schema

    doc = passport("n1")
    doc["spec"]["taints"] = [{"key": "a", "effect": "Sometimes"}]
    validator = jsonschema.Draft202012Validator(passport_json_schema())
    assert list(validator.iter_errors(doc)) != []
    doc["spec"]["taints"] = [
        {"key": "a", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}
    ]
    assert list(validator.iter_errors(doc)) == []
