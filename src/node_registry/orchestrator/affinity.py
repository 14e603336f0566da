"""Node affinity: Kubernetes' ``NodeSelector`` terms, required and preferred, matched to nodes.

Ported from component-helpers ``scheduling/corev1/nodeaffinity/nodeaffinity.go``:

* ``nodeSelectorTerms`` are ORed; within a term, ``matchExpressions`` and ``matchFields`` are
  ANDed. A term with neither matches no node.
* ``matchExpressions`` are label requirements (In, NotIn, Exists, DoesNotExist, Gt, Lt) on the
  node's effective labels, built with ``node_registry.selectors`` — so NotIn and DoesNotExist
  match a node without the key, and Gt/Lt compare integers and quantities (``memory Gt 4Gi``).
* ``matchFields`` select on ``metadata.name`` only, with In or NotIn and exactly one value.
* A preferred term adds its ``weight`` (1 to 100) to every node it matches.

Deliberate difference: upstream parses terms lazily and a term it cannot parse simply matches
no node (``LazyErrorNodeSelector``), so a typo leaves a task pending with no word of why. Here
every term is checked when the requirements are read, and a bad one is a ``ValidationError``
naming the field — as the Kubernetes API server's validation would refuse it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from node_registry.errors import SelectorError
from node_registry.labels import dns1123_subdomain_errors
from node_registry.orchestrator.base import TaskModel
from node_registry.selectors import Selector, selector_from_dict

__all__ = [
    "NAME_FIELD",
    "NodeAffinity",
    "NodeSelector",
    "NodeSelectorRequirement",
    "NodeSelectorTerm",
    "PreferredSchedulingTerm",
]

#: The one node field ``matchFields`` can select on, as in Kubernetes.
NAME_FIELD = "metadata.name"

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]


class NodeSelectorRequirement(TaskModel):
    """``key operator values``, the ``NodeSelectorRequirement`` of Kubernetes."""

    key: str
    operator: Operator
    values: list[str] = Field(default_factory=list)


def _field_problems(index: int, requirement: NodeSelectorRequirement) -> list[str]:
    where = f"matchFields[{index}]"
    problems: list[str] = []
    if requirement.key != NAME_FIELD:
        problems.append(f"{where}.key: {requirement.key!r} is not a node field; only {NAME_FIELD}")
    if requirement.operator not in ("In", "NotIn"):
        problems.append(f"{where}.operator: must be In or NotIn for a node field")
    if len(requirement.values) != 1:
        problems.append(
            f"{where}.values: must be only one value when `operator` is 'In' or 'NotIn' "
            "for node field selector"
        )
    problems.extend(
        f"{where}.values[{i}]: {message}"
        for i, value in enumerate(requirement.values)
        for message in dns1123_subdomain_errors(value)
    )
    return problems


class NodeSelectorTerm(TaskModel):
    """An AND of label requirements and ``metadata.name`` requirements."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, alias="matchExpressions"
    )
    match_fields: list[NodeSelectorRequirement] = Field(default_factory=list, alias="matchFields")
    _labels: Selector | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compile(self) -> NodeSelectorTerm:
        problems: list[str] = []
        for index, requirement in enumerate(self.match_fields):
            problems.extend(_field_problems(index, requirement))
        if self.match_expressions:
            expressions = [r.model_dump() for r in self.match_expressions]
            try:
                self._labels = selector_from_dict({"matchExpressions": expressions})
            except SelectorError as exc:
                problems.extend(str(error) for error in exc.errors)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def label_selector(self) -> Selector | None:
        """``matchExpressions`` as a label selector; None when the term has none."""
        return self._labels

    def empty(self) -> bool:
        """A term with no requirement at all, which Kubernetes says matches no node."""
        return not self.match_expressions and not self.match_fields

    def matches(self, labels: Mapping[str, str], name: str) -> bool:
        """Whether a node with these effective labels and this name satisfies the term."""
        if self.empty():
            return False
        if self._labels is not None and not self._labels.matches(labels):
            return False
        for requirement in self.match_fields:
            equal = name == requirement.values[0]
            if equal != (requirement.operator == "In"):
                return False
        return True


class NodeSelector(TaskModel):
    """``nodeSelectorTerms``, ORed: a node matches when any term does."""

    node_selector_terms: list[NodeSelectorTerm] = Field(alias="nodeSelectorTerms", min_length=1)

    def matches(self, labels: Mapping[str, str], name: str) -> bool:
        return any(term.matches(labels, name) for term in self.node_selector_terms)


class PreferredSchedulingTerm(TaskModel):
    """A term the scheduler prefers: matching nodes gain ``weight`` (1 to 100)."""

    weight: int = Field(ge=1, le=100)
    preference: NodeSelectorTerm


class NodeAffinity(TaskModel):
    """Where the task may go (required) and where it would rather go (preferred, weighted)."""

    required: NodeSelector | None = Field(
        default=None, alias="requiredDuringSchedulingIgnoredDuringExecution"
    )
    preferred: list[PreferredSchedulingTerm] = Field(
        default_factory=list,
        alias="preferredDuringSchedulingIgnoredDuringExecution",
    )

    def preference_score(self, labels: Mapping[str, str], name: str) -> int:
        """The sum of the weights of the preferred terms the node matches."""
        return sum(t.weight for t in self.preferred if t.preference.matches(labels, name))
