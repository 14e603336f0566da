"""Effective labels: a node's own labels plus those its passport implies.

Selectors match effective labels, so the seed's two examples work as written: every
capability is ``capability.<name>: "true"`` and every resource is ``<resource>: <quantity>``
(``memory: 8Gi``), which Gt/Lt compare as quantities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node_registry.passport.models import NodePassport

CAPABILITY_PREFIX = "capability."


def label_safe_quantity(quantity: str) -> str:
    """The quantity spelled as a valid label value: ``.5`` → ``0.5``, ``5.`` → ``5``, no ``+``.

    The quantity grammar allows these forms but label values must start and end with an
    alphanumeric character; the value they denote is unchanged.
    """
    text = quantity.removeprefix("+")
    if text.startswith("."):
        text = "0" + text
    head, dot, tail = text.partition(".")
    if dot and (not tail or not tail[0].isdigit()):
        text = head + tail
    return text


def derived_labels(passport: NodePassport) -> dict[str, tuple[str, str]]:
    """Labels implied by the passport, each with the field it comes from (for error messages)."""
    derived: dict[str, tuple[str, str]] = {}
    for index, cap in enumerate(passport.spec.capabilities):
        derived[CAPABILITY_PREFIX + cap.name] = ("true", f"spec.capabilities[{index}]")
    for name, quantity in passport.spec.resources.items():
        derived[name] = (label_safe_quantity(quantity), f"spec.resources.{name}")
    return derived


def effective_labels(passport: NodePassport) -> dict[str, str]:
    """What selectors see: the node's labels merged with the derived ones (they never disagree)."""
    merged = dict(passport.metadata.labels)
    merged.update((key, value) for key, (value, _) in derived_labels(passport).items())
    return merged
