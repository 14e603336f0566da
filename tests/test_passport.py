"""NODE_PASSPORT v1 through ``load_passport`` and ``Registry.register``.

Every refusal is checked twice: the error names the field and the reason, and a registry that
refused the passport is left exactly as it was (no entry added, none changed, no revision used).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from conftest import DESIGN_EXAMPLE_YAML
from node_registry import (
    FakeClock,
    NodePassport,
    Registry,
    RegistryError,
    TooLargeError,
    UnsupportedVersionError,
    ValidationError,
    effective_labels,
    load_passport,
)
from node_registry.passport import limits
from node_registry.passport.versions import CONVERTED_FROM_ANNOTATION, V1ALPHA1, served_versions

UID = "7d0b6c1e-4a5b-4c3d-9e8f-0123456789ab"
UID_B = "11111111-2222-4333-8444-555555555555"
UID_NEW = "99999999-8888-4777-8666-555555555555"


def full_passport() -> dict[str, Any]:
    """The DESIGN.md passport as a fresh dict (tests mutate their copy)."""
    doc: dict[str, Any] = yaml.safe_load(DESIGN_EXAMPLE_YAML)
    return doc


def minimal_passport(uid: str = UID, name: str = "node-a", **sections: Any) -> dict[str, Any]:
    """Only the required fields, so label and name tests meet no derived label."""
    return {"metadata": {"uid": uid, "name": name, "nodeType": "agent"}, **sections}


def labelled(labels: dict[str, str], **sections: Any) -> dict[str, Any]:
    doc = minimal_passport(**sections)
    doc["metadata"]["labels"] = labels
    return doc


def second_passport() -> dict[str, Any]:
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {"uid": UID_B, "name": "tool-search-01", "nodeType": "tool"},
        "spec": {"capabilities": [{"name": "web_search"}], "resources": {"cpu": "500m"}},
    }


def refusal(doc: Any, expected: type[ValidationError] = ValidationError) -> ValidationError:
    """Load ``doc``, expecting ``expected`` (or a subclass); return the error."""
    with pytest.raises(expected) as info:
        load_passport(doc)
    return info.value


def assert_names(exc: ValidationError, loc: str, fragment: str) -> None:
    """``exc`` holds a FieldError at exactly ``loc`` whose message contains ``fragment``."""
    assert any(e.loc == loc and fragment in e.message for e in exc.errors), (
        f"no FieldError at {loc!r} mentioning {fragment!r} in {exc.errors!r}"
    )


def short_id(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(str(value))} chars)"


# -- a full passport -------------------------------------------------------------------


def test_full_passport_round_trips_unchanged() -> None:
    doc = full_passport()
    passport = load_passport(doc)
    assert passport.to_dict() == doc
    assert load_passport(passport).to_dict() == doc
    assert load_passport(json.loads(json.dumps(passport.to_dict()))) == passport


def test_full_passport_is_stored_as_sent() -> None:
    registry = Registry(clock=FakeClock())
    entry = registry.register(full_passport())
    assert entry.node_id == UID
    assert entry.passport.to_dict() == full_passport()
    assert registry.get(UID).passport.to_dict() == full_passport()


def test_typed_access_to_the_full_passport() -> None:
    passport = load_passport(full_passport())
    assert passport.metadata.name == "ai-agent-coder-01"
    assert passport.metadata.node_type == "agent"
    assert passport.spec.capabilities[0].params == {"languages": ["python", "go"]}
    assert passport.spec.endpoint is not None
    assert passport.spec.endpoint.queue == "agent.coder-01"
    assert passport.spec.max_concurrent_tasks == 4
    ready = passport.status.condition("Ready")
    assert ready is not None
    assert ready.status == "True"


def test_a_minimal_passport_gets_the_documented_defaults() -> None:
    passport = load_passport(minimal_passport())
    assert passport.to_dict() == {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {
            "uid": UID,
            "name": "node-a",
            "nodeType": "agent",
            "labels": {},
            "annotations": {},
        },
        "spec": {"capabilities": [], "resources": {}},
        "status": {"phase": "Pending", "conditions": [], "currentTasks": 0},
    }


UNKNOWN = {"nested": [1, "two", {"three": 3.5, "four": True}], "empty": {}}


def _at(doc: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    node: Any = doc
    for part in path:
        node = node[part]
    assert isinstance(node, dict)
    return node


@pytest.mark.parametrize(
    "path",
    [
        (),
        ("metadata",),
        ("spec",),
        ("spec", "capabilities", 0),
        ("spec", "capabilities", 0, "params"),
        ("spec", "endpoint"),
        ("status",),
        ("status", "conditions", 0),
    ],
    ids=lambda p: ".".join(map(str, p)) or "top",
)
def test_unknown_fields_are_kept_as_sent(path: tuple[str | int, ...]) -> None:
    doc = full_passport()
    _at(doc, path)["x-unknownField"] = copy.deepcopy(UNKNOWN)
    _at(doc, path)["anotherOne"] = "kept"
    stored = load_passport(doc).to_dict()
    assert _at(stored, path)["x-unknownField"] == UNKNOWN
    assert _at(stored, path)["anotherOne"] == "kept"
    assert stored == doc
    entry = Registry(clock=FakeClock()).register(doc)
    assert entry.passport.to_dict() == doc


def test_yaml_numbers_become_strings() -> None:
    text = DESIGN_EXAMPLE_YAML.replace('version: "1.0"', "version: 1.0").replace(
        'resources: {cpu: "4", memory: 8Gi, gpu: "1"}',
        "resources: {cpu: 4, memory: 8Gi, gpu: 1, ephemeral-storage: 1.5}",
    )
    doc = yaml.safe_load(text)
    assert doc["spec"]["resources"]["cpu"] == 4  # what YAML hands us
    passport = load_passport(doc)
    assert passport.spec.resources == {
        "cpu": "4",
        "memory": "8Gi",
        "gpu": "1",
        "ephemeral-storage": "1.5",
    }
    assert passport.spec.capabilities[0].version == "1.0"
    assert effective_labels(passport)["cpu"] == "4"


def test_yaml_timestamps_are_accepted() -> None:
    # PyYAML reads an unquoted timestamp as a datetime; the passport takes it as one.
    text = DESIGN_EXAMPLE_YAML.replace(
        'lastHeartbeatTime: "2026-01-01T00:00:00Z"', "lastHeartbeatTime: 2026-01-01T00:00:00Z"
    )
    doc = yaml.safe_load(text)
    assert not isinstance(doc["status"]["conditions"][0]["lastHeartbeatTime"], str)
    stored = load_passport(doc).to_dict()
    assert stored["status"]["conditions"][0]["lastHeartbeatTime"] == "2026-01-01T00:00:00Z"


def test_a_boolean_is_not_a_quantity() -> None:
    doc = minimal_passport(spec={"resources": {"gpu": True}})
    assert_names(refusal(doc), "spec.resources.gpu", "valid string")


@pytest.mark.parametrize(
    "written",
    [
        UID.upper(),
        UID.replace("-", ""),
        "{" + UID + "}",
        "urn:uuid:" + UID,
    ],
)
def test_uid_canonical_text_is_the_node_id(written: str) -> None:
    passport = load_passport(minimal_passport(uid=written))
    assert passport.node_id == UID
    assert passport.to_dict()["metadata"]["uid"] == UID
    registry = Registry(clock=FakeClock())
    registry.register(minimal_passport())
    entry = registry.register(minimal_passport(uid=written))
    assert entry.node_id == UID
    assert [e.node_id for e in registry.list_nodes().items] == [UID]  # the same node


# -- Kubernetes syntax: label keys, label values, names ---------------------------------
#
# Cases copied from Kubernetes' own tests of the functions labels.py ports:
# kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/util/validation/validation_test.go
# (commit 008b3652959ca58af8be3fb5b6ecfe9ae7638282): TestIsQualifiedName,
# TestIsValidLabelValue, TestIsDNS1123Subdomain. Extra cases follow each upstream list.

QUALIFIED_NAME_VALID = [
    "simple",
    "now-with-dashes",
    "1-starts-with-num",
    "1234",
    "simple/simple",
    "now-with-dashes/simple",
    "now-with-dashes/now-with-dashes",
    "now.with.dots/simple",
    "now-with.dashes-and.dots/simple",
    "1-num.2-num/3-num",
    "1234/5678",
    "1.2.3.4/5678",
    "Uppercase_Is_OK_123",
    "example.com/Uppercase_Is_OK_123",
    "requests.storage-foo",
    "a" * 63,
    "a" * 253 + "/" + "b" * 63,
    # ours
    "a",
    "example.com/" + "b" * 63,
    "ai-team.io/role",
]
QUALIFIED_NAME_INVALID = [
    "nospecialchars%^=@",
    "cantendwithadash-",
    "-cantstartwithadash-",
    "only/one/slash",
    "Example.com/abc",
    "example_com/abc",
    "example.com/",
    "/simple",
    "a" * 64,
    "a" * 254 + "/abc",
    # ours
    "",
    "app\n",
    "example.com/app\n",
    "example.com\n/app",
    "/a",
    "a//b",
    "a/b/c",
    "example.com/" + "b" * 64,
    "EXAMPLE.COM/app",
    "ai_team.io/role",  # the API group is not a DNS subdomain, so not a label prefix
    "space in/name",
    "with space",
    "ünïcode",
]
LABEL_VALUE_VALID = [
    "simple",
    "now-with-dashes",
    "1-starts-with-num",
    "end-with-num-1",
    "1234",
    "a" * 63,
    "",
    # ours
    "Mixed_Case.and-dash",
    "0.5",
]
LABEL_VALUE_INVALID = [
    "nospecialchars%^=@",
    "Tama-nui-te-rā.is.Māori.sun",
    "\\backslashes\\are\\bad",
    "-starts-with-dash",
    "ends-with-dash-",
    ".starts.with.dot",
    "ends.with.dot.",
    "a" * 64,
    # ours
    "app\n",
    "\napp",
    "a/b",
    "with space",
    ".5",
]
DNS1123_SUBDOMAIN_VALID = list(
    dict.fromkeys(
        [
            "a", "ab", "abc", "a1", "a-1", "a--1--2--b",
            "0", "01", "012", "1a", "1-a", "1--a--b--2",
            "a.a", "ab.a", "abc.a", "a1.a", "a-1.a", "a--1--2--b.a",
            "a.1", "ab.1", "abc.1", "a1.1", "a-1.1", "a--1--2--b.1",
            "0.a", "01.a", "012.a", "1a.a", "1-a.a", "1--a--b--2",
            "0.1", "01.1", "012.1", "1a.1", "1-a.1", "1--a--b--2.1",
            "a.b.c.d.e", "aa.bb.cc.dd.ee", "1.2.3.4.5", "11.22.33.44.55",
            "a" * 253,
        ]
    )
)  # fmt: skip
DNS1123_SUBDOMAIN_INVALID = list(
    dict.fromkeys(
        [
            "", "A", "ABC", "aBc", "A1", "A-1", "1-A",
            "-", "a-", "-a", "1-", "-1",
            "_", "a_", "_a", "a_b", "1_", "_1", "1_2",
            ".", "a.", ".a", "a..b", "1.", ".1", "1..2",
            " ", "a ", " a", "a b", "1 ", " 1", "1 2",
            "A.a", "aB.a", "ab.A", "A1.a", "a1.A",
            "A.1", "aB.1", "A1.1", "1A.1",
            "0.A", "01.A", "012.A", "1A.a", "1a.A",
            "A.B.C.D.E", "AA.BB.CC.DD.EE", "a.B.c.d.e", "aa.bB.cc.dd.ee",
            "a@b", "a,b", "a_b", "a;b",
            "a:b", "a%b", "a?b", "a$b",
            "a" * 254,
            # ours
            "Bad_Name", "node-a\n", "\nnode-a", "a/b",
        ]
    )
)  # fmt: skip


@pytest.mark.parametrize("key", QUALIFIED_NAME_VALID, ids=short_id)
def test_valid_label_keys(key: str) -> None:
    passport = load_passport(labelled({key: "v"}))
    assert passport.metadata.labels == {key: "v"}


@pytest.mark.parametrize("key", QUALIFIED_NAME_INVALID, ids=short_id)
def test_invalid_label_keys(key: str) -> None:
    exc = refusal(labelled({key: "v"}))
    assert_names(exc, "metadata.labels", f"key {key!r}")


@pytest.mark.parametrize("value", LABEL_VALUE_VALID, ids=short_id)
def test_valid_label_values(value: str) -> None:
    assert load_passport(labelled({"k": value})).metadata.labels == {"k": value}


@pytest.mark.parametrize("value", LABEL_VALUE_INVALID, ids=short_id)
def test_invalid_label_values(value: str) -> None:
    exc = refusal(labelled({"k": value}))
    assert_names(exc, "metadata.labels", f"value {value!r} of 'k'")


@pytest.mark.parametrize("key", QUALIFIED_NAME_INVALID, ids=short_id)
def test_annotation_keys_follow_label_key_rules(key: str) -> None:
    doc = minimal_passport()
    doc["metadata"]["annotations"] = {key: "any value at all: / %^=@ \n"}
    assert_names(refusal(doc), "metadata.annotations", f"key {key!r}")


def test_annotation_values_are_free_text() -> None:
    doc = minimal_passport()
    doc["metadata"]["annotations"] = {"example.com/note": "Any text: / %^=@ \n ünïcode"}
    assert load_passport(doc).metadata.annotations == doc["metadata"]["annotations"]


@pytest.mark.parametrize("name", DNS1123_SUBDOMAIN_VALID, ids=short_id)
def test_valid_names(name: str) -> None:
    assert load_passport(minimal_passport(name=name)).metadata.name == name


@pytest.mark.parametrize("name", DNS1123_SUBDOMAIN_INVALID, ids=short_id)
def test_invalid_names(name: str) -> None:
    exc = refusal(minimal_passport(name=name))
    assert any(e.loc == "metadata.name" for e in exc.errors), exc.errors


def test_name_length_message() -> None:
    assert_names(
        refusal(minimal_passport(name="a" * 254)),
        "metadata.name",
        "must be no more than 253 characters",
    )


# -- quantities and derived labels ------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "label"),
    [
        ("4", "4"),
        ("500m", "500m"),
        ("8Gi", "8Gi"),
        ("1.5G", "1.5G"),
        ("1e3", "1e3"),
        (".5", "0.5"),
        ("5.", "5"),
        ("+1", "1"),
        ("0", "0"),
        ("1Ki", "1Ki"),
        ("2E", "2E"),
        ("100n", "100n"),
        (4, "4"),
        (1.5, "1.5"),
    ],
    ids=short_id,
)
def test_valid_quantities(written: str | float, label: str) -> None:
    passport = load_passport(minimal_passport(spec={"resources": {"cpu": written}}))
    assert passport.spec.resources == {"cpu": str(written)}  # stored as written
    assert effective_labels(passport)["cpu"] == label  # a valid label value
    # A label spelled as the derived one agrees with it.
    load_passport(labelled({"cpu": label}, spec={"resources": {"cpu": written}}))


@pytest.mark.parametrize(
    "written",
    ["8GB", "-1", "abc", "1.2.3", "8Gi\n", " 8Gi", "8 Gi", "", "Gi", "1e", "0x10", "1e9999", -1],
    ids=short_id,
)
def test_invalid_quantities(written: str | int) -> None:
    exc = refusal(minimal_passport(spec={"resources": {"memory": written}}))
    assert_names(exc, "spec.resources", f"memory: {str(written)!r} is not a non-negative")


def test_resource_names_follow_label_key_rules() -> None:
    exc = refusal(minimal_passport(spec={"resources": {"Bad Name": "1"}}))
    assert_names(exc, "spec.resources", "key 'Bad Name'")
    ok = load_passport(minimal_passport(spec={"resources": {"nvidia.com/gpu": "2"}}))
    assert effective_labels(ok)["nvidia.com/gpu"] == "2"


def test_derived_labels_of_the_full_passport() -> None:
    assert effective_labels(load_passport(full_passport())) == {
        "zone": "eu-west-1",
        "capability.code_generation": "true",
        "cpu": "4",
        "memory": "8Gi",
        "gpu": "1",
    }


def test_derived_labels_are_not_written_into_the_passport() -> None:
    passport = load_passport(full_passport())
    assert passport.metadata.labels == {"zone": "eu-west-1"}
    assert passport.to_dict()["metadata"]["labels"] == {"zone": "eu-west-1"}


def test_selectors_see_derived_labels() -> None:
    registry = Registry(clock=FakeClock())
    registry.register(full_passport())
    registry.register(second_passport())
    found = registry.find_nodes(selector={"matchLabels": {"capability.code_generation": "true"}})
    assert [e.node_id for e in found] == [UID]
    found = registry.find_nodes(selector={"matchLabels": {"cpu": "500m"}})
    assert [e.node_id for e in found] == [UID_B]


@pytest.mark.parametrize(
    ("labels", "source"),
    [
        ({"capability.code_generation": "false"}, "spec.capabilities[0]"),
        ({"capability.code_generation": ""}, "spec.capabilities[0]"),
        ({"memory": "8G"}, "spec.resources.memory"),
        ({"cpu": "4000m"}, "spec.resources.cpu"),  # the same amount, another spelling
        ({"zone": "eu-west-1", "gpu": "2"}, "spec.resources.gpu"),
    ],
)
def test_a_label_contradicting_a_derived_one_is_refused(
    labels: dict[str, str], source: str
) -> None:
    doc = full_passport()
    doc["metadata"]["labels"] = labels
    exc = refusal(doc)
    (key,) = (k for k in labels if k != "zone")
    assert any(
        str(e).startswith("metadata.labels") and repr(key) in str(e) and source in str(e)
        for e in exc.errors
    ), exc.errors
    assert "contradicts" in str(exc)


def test_a_label_agreeing_with_a_derived_one_is_accepted() -> None:
    doc = full_passport()
    doc["metadata"]["labels"] = {"capability.code_generation": "true", "memory": "8Gi"}
    assert load_passport(doc).metadata.labels == doc["metadata"]["labels"]
    doc = labelled({"cpu": "0.5"}, spec={"resources": {"cpu": ".5"}})
    assert effective_labels(load_passport(doc))["cpu"] == "0.5"


# -- versions ---------------------------------------------------------------------------


def test_served_versions() -> None:
    assert served_versions() == ["ai_team.io/v1", "ai_team.io/v1.x", "ai_team.io/v1alpha1"]


def test_apiversion_and_kind_default_to_v1() -> None:
    passport = load_passport(minimal_passport())
    assert (passport.api_version, passport.kind) == ("ai_team.io/v1", "NodePassport")


@pytest.mark.parametrize("version", ["ai_team.io/v1.1", "ai_team.io/v1.2", "ai_team.io/v1.10"])
def test_compatible_v1_revisions_are_served_as_sent(version: str) -> None:
    doc = full_passport()
    doc["apiVersion"] = version
    doc["newTopLevelField"] = {"from": version}
    doc["spec"]["capabilities"][0]["inputModes"] = ["text", "image"]
    doc["metadata"]["ownerReferences"] = [{"kind": "Team", "name": "coders"}]
    passport = load_passport(doc)
    assert passport.to_dict() == doc
    assert passport.api_version == version
    entry = Registry(clock=FakeClock()).register(doc)
    assert entry.passport.to_dict() == doc


V1ALPHA1_DOC: dict[str, Any] = {
    "apiVersion": "ai_team.io/v1alpha1",
    "kind": "NodePassport",
    "uid": UID,
    "name": "ai-agent-coder-01",
    "nodeType": "agent",
    "labels": {"zone": "eu-west-1"},
    "capabilities": ["code_generation", "code_review"],
    "resources": {"cpu": 4, "memory": "8Gi"},
    "endpoint": "amqp://rabbit:5672/agent.coder-01",
    "maxConcurrentTasks": 2,
}


def test_v1alpha1_is_converted_to_v1() -> None:
    passport = load_passport(copy.deepcopy(V1ALPHA1_DOC))
    assert passport.to_dict() == {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {
            "uid": UID,
            "name": "ai-agent-coder-01",
            "nodeType": "agent",
            "labels": {"zone": "eu-west-1"},
            "annotations": {CONVERTED_FROM_ANNOTATION: V1ALPHA1},
        },
        "spec": {
            "capabilities": [
                {"name": "code_generation", "params": {}},
                {"name": "code_review", "params": {}},
            ],
            "resources": {"cpu": "4", "memory": "8Gi"},
            "endpoint": {"protocol": "amqp", "address": "amqp://rabbit:5672/agent.coder-01"},
            "maxConcurrentTasks": 2,
        },
        "status": {"phase": "Pending", "conditions": [], "currentTasks": 0},
    }
    assert CONVERTED_FROM_ANNOTATION == "ai-team.io/converted-from"
    assert effective_labels(passport)["capability.code_review"] == "true"


def test_v1alpha1_is_stored_as_v1() -> None:
    registry = Registry(clock=FakeClock())
    entry = registry.register(copy.deepcopy(V1ALPHA1_DOC))
    stored = registry.get(entry.node_id).passport
    assert stored.api_version == "ai_team.io/v1"
    assert stored.metadata.annotations == {CONVERTED_FROM_ANNOTATION: V1ALPHA1}
    # A converted passport reloads as the v1 it became.
    assert load_passport(stored.to_dict()) == stored


def test_v1alpha1_minimal_and_without_endpoint() -> None:
    doc = {
        "apiVersion": V1ALPHA1,
        "kind": "NodePassport",
        "uid": UID,
        "name": "n",
        "nodeType": "tool",
    }
    passport = load_passport(doc)
    assert passport.spec.endpoint is None
    assert passport.spec.capabilities == []


@pytest.mark.parametrize(
    ("change", "loc", "fragment"),
    [
        ({"metadata": {}}, "metadata", "Extra inputs are not permitted"),
        ({"capabilities": "code_generation"}, "capabilities", "valid list"),
        ({"name": "Bad_Name"}, "metadata.name", "RFC 1123"),
        ({"uid": "not-a-uuid"}, "metadata.uid", "UUID"),
        ({"resources": {"cpu": "8GB"}}, "spec.resources", "not a non-negative"),
        ({"capabilities": ["bad name"]}, "spec.capabilities[0].name", "alphanumeric"),
    ],
    ids=["v1-field-in-v1alpha1", "capabilities-str", "name", "uid", "quantity", "capability"],
)
def test_invalid_v1alpha1_is_refused_naming_the_field(
    change: dict[str, Any], loc: str, fragment: str
) -> None:
    assert_names(refusal(copy.deepcopy(V1ALPHA1_DOC) | change), loc, fragment)


@pytest.mark.parametrize(
    "version",
    [
        "ai_team.io/v2",
        "ai_team.io/v2alpha1",
        "ai_team.io/v1beta1",
        "ai_team.io/v1.1.1",
        "ai_team.io/V1",
        "ai_team.io/v1\n",
        " ai_team.io/v1",
        "other.io/v1",
        "v1",
        "",
    ],
    ids=short_id,
)
def test_unserved_versions_are_refused_naming_the_served_ones(version: str) -> None:
    doc = full_passport()
    doc["apiVersion"] = version
    exc = refusal(doc, UnsupportedVersionError)
    assert exc.status_code == 422
    assert exc.reason == "UnsupportedVersion"
    assert_names(exc, "apiVersion", f"{version!r} is not served")
    for served in served_versions():
        assert served in str(exc)


@pytest.mark.parametrize("kind", ["Node", "nodepassport", "", "Pod"])
def test_other_kinds_are_refused_naming_the_served_kind(kind: str) -> None:
    doc = full_passport()
    doc["kind"] = kind
    exc = refusal(doc, UnsupportedVersionError)
    assert_names(exc, "kind", f"{kind!r} is not served; expected 'NodePassport'")


def test_non_string_apiversion_is_refused() -> None:
    doc = full_passport()
    doc["apiVersion"] = 1
    assert_names(refusal(doc, UnsupportedVersionError), "apiVersion", "must be a string")


# -- malformed passports: refused, named, and the store untouched ----------------------

Mutation = Callable[[dict[str, Any]], Any]


def _parent(doc: Any, path: str) -> tuple[Any, str | int]:
    """The container holding dotted ``path`` (``spec.capabilities.0.name``) and the last key."""
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, int(last) if isinstance(node, list) else last


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> dict[str, Any]:
        node, key = _parent(doc, path)
        node[key] = value
        return doc

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> dict[str, Any]:
        node, key = _parent(doc, path)
        del node[key]
        return doc

    return mutate


def _deeply_nested(depth: int) -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(depth - 1):
        child: list[Any] = []
        node.append(child)
        node = child
    return root


PARAMS = "spec.capabilities.0.params"
MALFORMED: list[tuple[str, Mutation, str, str]] = [
    # wrong types
    ("label-value-int", _set("metadata.labels", {"zone": 1}), "metadata.labels.zone",
     "valid string"),
    ("label-value-bool", _set("metadata.labels", {"zone": True}), "metadata.labels.zone",
     "valid string"),
    ("labels-list", _set("metadata.labels", ["zone=eu"]), "metadata.labels", "valid dictionary"),
    ("capabilities-string", _set("spec.capabilities", "code_generation"), "spec.capabilities",
     "valid list"),
    ("capability-string", _set("spec.capabilities", ["code_generation"]),
     "spec.capabilities[0]", "valid dictionary"),
    ("max-concurrent-tasks-negative", _set("spec.maxConcurrentTasks", -1),
     "spec.maxConcurrentTasks", "greater than or equal to 0"),
    ("max-concurrent-tasks-float", _set("spec.maxConcurrentTasks", 2.5),
     "spec.maxConcurrentTasks", "valid integer"),
    ("current-tasks-string", _set("status.currentTasks", "x"), "status.currentTasks",
     "valid integer"),
    ("current-tasks-negative", _set("status.currentTasks", -1), "status.currentTasks",
     "greater than or equal to 0"),
    ("spec-list", _set("spec", []), "spec", "valid dictionary"),
    ("metadata-string", _set("metadata", "node"), "metadata", "valid dictionary"),
    ("endpoint-string", _set("spec.endpoint", "amqp://x"), "spec.endpoint", "valid dictionary"),
    ("endpoint-no-address", _delete("spec.endpoint.address"), "spec.endpoint.address",
     "Field required"),
    ("endpoint-empty-protocol", _set("spec.endpoint.protocol", ""), "spec.endpoint.protocol",
     "at least 1 character"),
    ("params-list", _set(PARAMS, [1]), "spec.capabilities[0].params", "valid dictionary"),
    ("capability-version-bool", _set("spec.capabilities.0.version", True),
     "spec.capabilities[0].version", "valid string"),
    # required fields
    ("no-metadata", _delete("metadata"), "metadata", "Field required"),
    ("no-uid", _delete("metadata.uid"), "metadata.uid", "Field required"),
    ("no-name", _delete("metadata.name"), "metadata.name", "Field required"),
    ("no-node-type", _delete("metadata.nodeType"), "metadata.nodeType", "Field required"),
    ("capability-no-name", _delete("spec.capabilities.0.name"), "spec.capabilities[0].name",
     "Field required"),
    # identity
    ("uid-not-uuid", _set("metadata.uid", "node-1"), "metadata.uid", "valid UUID"),
    ("uid-int", _set("metadata.uid", 12345), "metadata.uid", "UUID input should be a string"),
    ("uid-short", _set("metadata.uid", UID[:-1]), "metadata.uid", "valid UUID"),
    ("name-underscore", _set("metadata.name", "Bad_Name"), "metadata.name", "RFC 1123"),
    ("name-254", _set("metadata.name", "a" * 254), "metadata.name",
     "no more than 253 characters"),
    ("name-empty", _set("metadata.name", ""), "metadata.name", "RFC 1123"),
    ("name-int", _set("metadata.name", 7), "metadata.name", "valid string"),
    # Whether a well-formed name is a registered type is the registry's to say (test_nodetypes).
    ("node-type-not-a-name", _set("metadata.nodeType", "robot_1"), "metadata.nodeType",
     "a node type is a DNS-1123 label"),
    ("node-type-case", _set("metadata.nodeType", "Agent"), "metadata.nodeType",
     "a node type is a DNS-1123 label"),
    # rules across items
    ("capability-duplicate", _set("spec.capabilities", [{"name": "a"}, {"name": "a"}]),
     "spec.capabilities", "capability 'a' is listed more than once"),
    ("capability-bad-name", _set("spec.capabilities.0.name", "code generation"),
     "spec.capabilities[0].name", "alphanumeric"),
    ("capability-long-name",
     _set("spec.capabilities.0.name", "c" * (limits.MAX_CAPABILITY_NAME + 1)),
     "spec.capabilities[0].name", f"no more than {limits.MAX_CAPABILITY_NAME} characters"),
    ("condition-duplicate",
     _set("status.conditions", [{"type": "Ready", "status": "True"},
                                {"type": "Ready", "status": "False"}]),
     "status.conditions", "condition types must be unique; repeated: Ready"),
    ("condition-status-maybe", _set("status.conditions.0.status", "Maybe"),
     "status.conditions[0].status", "'True', 'False' or 'Unknown'"),
    ("condition-no-type", _delete("status.conditions.0.type"), "status.conditions[0].type",
     "Field required"),
    ("condition-bad-time", _set("status.conditions.0.lastHeartbeatTime", "yesterday"),
     "status.conditions[0].lastHeartbeatTime", "datetime"),
    ("phase-bogus", _set("status.phase", "Bogus"), "status.phase", "'Pending', 'Running'"),
    ("label-key-newline", _set("metadata.labels", {"app\n": "x"}), "metadata.labels",
     "key 'app\\n'"),
    ("label-contradicts-derived", _set("metadata.labels", {"memory": "16Gi"}), "",
     "metadata.labels: label 'memory'='16Gi' contradicts '8Gi' derived from spec.resources.memory"),
    ("quantity-invalid", _set("spec.resources.memory", "8GB"), "spec.resources",
     "memory: '8GB' is not a non-negative Kubernetes quantity"),
    # counts and sizes
    ("too-many-labels",
     _set("metadata.labels", {f"k{i}": "v" for i in range(limits.MAX_LABELS + 1)}),
     "metadata.labels", f"at most {limits.MAX_LABELS} items"),
    ("too-many-capabilities",
     _set("spec.capabilities", [{"name": f"c{i}"} for i in range(limits.MAX_CAPABILITIES + 1)]),
     "spec.capabilities", f"at most {limits.MAX_CAPABILITIES} items"),
    ("too-many-resources",
     _set("spec.resources", {f"r{i}": "1" for i in range(limits.MAX_RESOURCES + 1)}),
     "spec.resources", f"at most {limits.MAX_RESOURCES} items"),
    ("too-many-conditions",
     _set("status.conditions",
          [{"type": f"T{i}", "status": "True"} for i in range(limits.MAX_CONDITIONS + 1)]),
     "status.conditions", f"at most {limits.MAX_CONDITIONS} items"),
    ("annotations-too-big",
     _set("metadata.annotations", {"note": "x" * limits.MAX_ANNOTATIONS_BYTES}),
     "metadata.annotations", f"over the limit of {limits.MAX_ANNOTATIONS_BYTES} bytes"),
    # not JSON
    ("not-json-set", _set(PARAMS, {"tags": {"a", "b"}}), "spec.capabilities[0].params.tags",
     "type set is not JSON"),
    ("not-json-object", _set(PARAMS, {"handle": object()}), "spec.capabilities[0].params.handle",
     "type object is not JSON"),
    ("not-json-bytes", _set(PARAMS, {"blob": b"\xff"}), "spec.capabilities[0].params.blob",
     "type bytes is not JSON"),
    ("not-json-nan", _set(PARAMS, {"score": math.nan}), "spec.capabilities[0].params.score",
     "nan is not a JSON number"),
    ("not-json-inf", _set("spec.maxConcurrentTasks", math.inf), "spec.maxConcurrentTasks",
     "inf is not a JSON number"),
    ("not-json-int-key", _set(PARAMS, {"ports": {8080: "http"}}),
     "spec.capabilities[0].params.ports", "key 8080 is not a string"),
    ("not-json-too-deep", _set(PARAMS, {"deep": _deeply_nested(limits.MAX_NESTING_DEPTH)}),
     "spec.capabilities[0].params.deep" + "[0]" * (limits.MAX_NESTING_DEPTH - 5),
     f"nested deeper than {limits.MAX_NESTING_DEPTH} levels"),
    # not Unicode: JSON's "\ud800" reads as a lone surrogate, which no UTF-8 response carries
    ("surrogate-annotation", _set("metadata.annotations", {"note": "ok \ud800"}),
     "metadata.annotations.note", "lone surrogate '\\ud800' at character 3"),
    ("surrogate-label-key", _set("metadata.labels", {"zone\udc80": "x"}), "metadata.labels",
     "key 'zone\\udc80' is not valid Unicode"),
    ("surrogate-deep-param", _set(PARAMS, {"tags": [{"t": "\udfff"}]}),
     "spec.capabilities[0].params.tags[0].t", "lone surrogate"),
    ("surrogate-unknown-field", _set("spec.notes", "\ud83d"), "spec.notes", "lone surrogate"),
]  # fmt: skip


def _bad_documents() -> Iterator[Any]:
    yield from ([], ["metadata"], "apiVersion: ai_team.io/v1", None, 42, b"{}")


@pytest.fixture
def registry() -> Registry:
    """A registry holding two good nodes."""
    registry = Registry(clock=FakeClock())
    registry.register(full_passport())
    registry.register(second_passport())
    return registry


def snapshot(registry: Registry) -> tuple[int, list[tuple[dict[str, Any], int]]]:
    listed = registry.list_nodes()
    return listed.resource_version, [(e.to_dict(), e.resource_version) for e in listed.items]


def as_new_node(doc: dict[str, Any]) -> dict[str, Any]:
    doc["metadata"]["uid"] = UID_NEW
    doc["metadata"]["name"] = "ai-agent-new-01"
    return doc


@pytest.mark.parametrize(
    ("mutate", "loc", "fragment"),
    [pytest.param(m, loc, frag, id=case) for case, m, loc, frag in MALFORMED],
)
def test_malformed_passport_is_refused_naming_the_field(
    mutate: Mutation, loc: str, fragment: str
) -> None:
    exc = refusal(mutate(full_passport()))
    assert isinstance(exc, RegistryError)
    assert exc.status_code in (413, 422)
    assert_names(exc, loc, fragment)
    assert fragment in str(exc)  # the message alone says why


@pytest.mark.parametrize(
    ("mutate", "loc", "fragment"),
    [pytest.param(m, loc, frag, id=case) for case, m, loc, frag in MALFORMED],
)
@pytest.mark.parametrize("target", ["new-node", "re-registration"])
def test_malformed_passport_leaves_the_store_unchanged(
    registry: Registry, mutate: Mutation, loc: str, fragment: str, target: str
) -> None:
    before = snapshot(registry)
    doc = full_passport() if target == "re-registration" else as_new_node(full_passport())
    with pytest.raises(ValidationError) as info:
        registry.register(mutate(doc))
    assert_names(info.value, loc, fragment)
    assert snapshot(registry) == before


@pytest.mark.parametrize("doc", list(_bad_documents()), ids=short_id)
def test_a_non_mapping_is_refused(registry: Registry, doc: Any) -> None:
    before = snapshot(registry)
    exc = refusal(doc)
    assert_names(exc, "", f"got {type(doc).__name__}")
    assert "must be a mapping" in str(exc)
    with pytest.raises(ValidationError):
        registry.register(doc)
    assert snapshot(registry) == before


def _padded(total_bytes: int, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The passport (the full one by default) padded so its compact JSON is ``total_bytes``."""
    doc = doc if doc is not None else full_passport()
    doc["spec"]["capabilities"][0]["params"]["padding"] = ""
    base = len(json.dumps(doc, separators=(",", ":")).encode())
    doc["spec"]["capabilities"][0]["params"]["padding"] = "x" * (total_bytes - base)
    assert len(json.dumps(doc, separators=(",", ":")).encode()) == total_bytes
    return doc


def test_a_passport_at_the_size_limit_is_accepted() -> None:
    load_passport(_padded(limits.MAX_PASSPORT_BYTES))


@pytest.mark.parametrize("target", ["new-node", "re-registration"])
def test_an_oversized_passport_is_too_large(registry: Registry, target: str) -> None:
    before = snapshot(registry)
    doc = full_passport() if target == "re-registration" else as_new_node(full_passport())
    doc = _padded(limits.MAX_PASSPORT_BYTES + 1, doc)
    exc = refusal(doc, TooLargeError)
    assert exc.status_code == 413
    assert_names(exc, "", f"{limits.MAX_PASSPORT_BYTES + 1} bytes as JSON, limit")
    with pytest.raises(TooLargeError):
        registry.register(doc)
    assert snapshot(registry) == before


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.labels", {f"k{i}": "v" for i in range(limits.MAX_LABELS)}),
        ("spec.capabilities", [{"name": f"c{i}"} for i in range(limits.MAX_CAPABILITIES)]),
        ("spec.resources", {f"r{i}": "1" for i in range(limits.MAX_RESOURCES)}),
        ("spec.capabilities.0.name", "c" * limits.MAX_CAPABILITY_NAME),
        (PARAMS, {"deep": _deeply_nested(limits.MAX_NESTING_DEPTH - 5)}),
        ("metadata.annotations", {"note": "x" * (limits.MAX_ANNOTATIONS_BYTES - len("note"))}),
    ],
    ids=["labels", "capabilities", "resources", "capability-name", "nesting", "annotations"],
)
def test_limits_are_inclusive(path: str, value: Any) -> None:
    load_passport(_set(path, value)(full_passport()))


def test_a_passport_object_with_a_non_json_value_is_refused_not_crashed() -> None:
    # A NodePassport built directly skips load_passport; registering it must still refuse.
    built = NodePassport.model_validate(_set(PARAMS, {"tags": {"a"}})(full_passport()))
    exc = refusal(built)
    assert_names(exc, "spec.capabilities[0].params.tags", "type set is not JSON")


def test_good_reregistration_does_change_the_snapshot(registry: Registry) -> None:
    # The guard for the tests above: a change that is accepted is visible in the snapshot.
    before = snapshot(registry)
    doc = full_passport()
    doc["metadata"]["labels"]["zone"] = "eu-west-2"
    registry.register(doc)
    after = snapshot(registry)
    assert after != before
    assert after[0] > before[0]


def test_offline_phase_is_not_registrable(registry: Registry) -> None:
    before = snapshot(registry)
    doc = full_passport()
    doc["status"]["phase"] = "Offline"
    load_passport(doc)  # a valid passport ...
    with pytest.raises(ValidationError) as info:
        registry.register(doc)  # ... that only the registry may put in phase Offline
    assert_names(info.value, "status.phase", "Offline is recorded by the registry only")
    assert snapshot(registry) == before


# -- status updates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "loc", "fragment"),
    [
        ({"phase": "Offline"}, "status.phase", "Offline is recorded by the registry only"),
        ({"phase": "Bogus"}, "status.phase", "'Pending', 'Running', 'NotReady' or 'Offline'"),
        ({"phase": "running"}, "status.phase", "'Running'"),
        ({"current_tasks": -1}, "status.currentTasks", "greater than or equal to 0"),
        ({"current_tasks": "x"}, "status.currentTasks", "valid integer"),
        ({"conditions": [{"status": "True"}]}, "status.conditions[0].type", "Field required"),
        ({"conditions": [{"type": "Ready", "status": "Maybe"}]},
         "status.conditions[0].status", "'True', 'False' or 'Unknown'"),
        ({"conditions": [{"type": "Ready", "status": "True"},
                         {"type": "Ready", "status": "False"}]},
         "status.conditions", "repeated: Ready"),
        ({"conditions": [{"type": "", "status": "True"}]}, "status.conditions[0].type",
         "at least 1 character"),
    ],
    ids=["offline", "bogus", "lowercase", "tasks-negative", "tasks-string", "condition-no-type",
         "condition-maybe", "condition-duplicate", "condition-empty-type"],
)  # fmt: skip
def test_bad_status_update_is_refused_and_changes_nothing(
    registry: Registry, update: dict[str, Any], loc: str, fragment: str
) -> None:
    before = snapshot(registry)
    with pytest.raises(ValidationError) as info:
        registry.update_status(UID, **update)
    assert_names(info.value, loc, fragment)
    assert snapshot(registry) == before


def test_a_status_merge_is_held_to_the_passport_limits(registry: Registry) -> None:
    # Conditions merge by type, so updates within the limit each can add up past it.
    first = [{"type": f"First{i}", "status": "True"} for i in range(limits.MAX_CONDITIONS - 1)]
    registry.update_status(UID, conditions=first)
    before = snapshot(registry)
    more = [{"type": f"More{i}", "status": "True"} for i in range(limits.MAX_CONDITIONS)]
    with pytest.raises(ValidationError) as info:
        registry.update_status(UID, conditions=more)
    assert_names(info.value, "status.conditions", f"at most {limits.MAX_CONDITIONS} conditions")
    assert f"would make {2 * limits.MAX_CONDITIONS}" in str(info.value)  # Ready is there too
    assert snapshot(registry) == before
    # Types already there still update, and the record stays readable as a passport.
    entry = registry.update_status(UID, conditions=[{"type": "First0", "status": "False"}])
    assert len(entry.passport.status.conditions) == limits.MAX_CONDITIONS
    NodePassport.model_validate(entry.passport.to_dict())


@pytest.mark.parametrize(
    ("condition", "error", "loc", "fragment"),
    [
        ({"type": "Note", "status": "True", "detail": "\ud800"}, ValidationError,
         "status.conditions[1].detail", "lone surrogate"),
        ({"type": "Note", "status": "True", "detail": {"deep": _deeply_nested(70)}},
         ValidationError, "status.conditions[1].detail.deep" + "[0]" * 59,
         f"nested deeper than {limits.MAX_NESTING_DEPTH} levels"),
        ({"type": "Note", "status": "True", "detail": "x" * limits.MAX_PASSPORT_BYTES},
         TooLargeError, "", f"limit {limits.MAX_PASSPORT_BYTES}"),
    ],
    ids=["surrogate", "too-deep", "too-large"],
)  # fmt: skip
def test_a_status_update_the_passport_could_not_hold_changes_nothing(
    registry: Registry,
    condition: dict[str, Any],
    error: type[ValidationError],
    loc: str,
    fragment: str,
) -> None:
    before = snapshot(registry)
    with pytest.raises(error) as info:
        registry.update_status(UID, conditions=[condition])
    assert_names(info.value, loc, fragment)
    assert snapshot(registry) == before


def test_good_status_update_is_recorded(registry: Registry) -> None:
    before = snapshot(registry)
    entry = registry.update_status(
        UID, phase="Running", current_tasks=2, conditions=[{"type": "Ready", "status": "True"}]
    )
    assert entry.passport.status.phase == "Running"
    assert entry.passport.status.current_tasks == 2
    assert snapshot(registry) != before
