"""Rules written once (#13, #14): the kind+selector filter and the retry backoff each have one
home, and everything that filters nodes or waits to retry goes through it."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from conftest import passport
from node_registry import FakeClock, Registry
from node_registry.client.backoff import backoff, ceiling
from node_registry.errors import ValidationError
from node_registry.passport import NodeType, effective_labels, load_passport
from node_registry.passport.kinds import parse_kind
from node_registry.selectors import NodeFilter, as_selector

SRC = Path(__file__).resolve().parent.parent / "src" / "node_registry"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text(encoding="utf-8") for p in SRC.rglob("*.py")}


def test_the_filter_answers_as_the_registry() -> None:
    registry = Registry(clock=FakeClock())
    docs = [
        passport("coder-01"),
        passport("coder-02", labels={"zone": "us-east-1"}, resources={"memory": "2Gi"}),
        passport("db-01", kind="storage", capabilities=("sql",)),
        passport("gw-01", kind="gateway", capabilities=()),
    ]
    for doc in docs:
        registry.register(doc)
    passports = [load_passport(doc) for doc in docs]
    for kind in (None, "agent", "storage", NodeType.GATEWAY):
        for selector in (None, "zone=eu-west-1", "memory>4Gi", "!capability.sql", "tier"):
            wanted = parse_kind(kind)
            test = NodeFilter(None if wanted is None else wanted.value, as_selector(selector))
            mine = [
                p.metadata.name
                for p in passports
                if test.matches(p.metadata.node_type, lambda p=p: effective_labels(p))
            ]
            theirs = [e.name for e in registry.find_nodes(kind=kind, selector=selector)]
            assert mine == theirs, (kind, selector)
            selected = test.select(passports, lambda p: p.metadata.node_type, effective_labels)
            assert [p.metadata.name for p in selected] == theirs
    assert NodeFilter().empty()
    assert not NodeFilter("agent").empty()
    with pytest.raises(ValidationError, match="unknown node kind"):
        parse_kind("Not_A_Kind")  # neither a built-in type nor a name one could be


def test_labels_are_read_only_when_the_selector_needs_them() -> None:
    def labels() -> dict[str, str]:
        raise AssertionError("labels read")

    assert NodeFilter("agent").matches("agent", labels)
    assert not NodeFilter("agent", as_selector("zone=x")).matches("tool", labels)


def test_no_module_filters_nodes_by_kind_and_labels_on_its_own() -> None:
    # The copies #13 found compared a node's kind and ran a selector over its labels side by
    # side (informer, CLI watch, server streams); they all call NodeFilter now. The registry's
    # index selects by kind from its own sets, as an index must.
    own_test = re.compile(r"node_kind (is not|is|!=|==) (kind|wanted)\b")
    offenders = [
        name
        for name, text in _sources().items()
        if own_test.search(text) and name != "selectors/filter.py"
    ]
    assert offenders == []


def test_one_backoff_for_client_informer_and_agent() -> None:
    doubling = re.compile(r"2\.0 ?\*\* ?")
    assert [name for name, text in _sources().items() if doubling.search(text)] == [
        "client/backoff.py"
    ]
    rng = random.Random(1)
    assert [ceiling(n) for n in (1, 2, 6, 7, 10**6)] == [0.2, 0.4, 6.4, 7.0, 7.0]
    assert [ceiling(n, base=1.0, cap=3.0) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]
    assert all(0.0 <= backoff(3, rng=rng) <= 0.8 for _ in range(100))
    replay = random.Random(1)
    assert backoff(3, rng=random.Random(1)) == replay.uniform(0.0, 0.8)
