"""Which (node, capability) claims are due for a probe now: a pure function of the nodes,
their last results, the policy and the time.

A claim is due when it was never verified, when its version or params changed since its
last result (a node that adds or changes a capability at runtime is probed again), when its
last result is older than ``reverify_after_seconds``, or when it failed and its retry
backoff (``retry_after_seconds`` doubling per failure in a row, up to
``retry_max_seconds``) has passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from node_registry.passport.models import NodePassport
from node_registry.passport.verification import (
    CapabilityVerification,
    VerificationPolicy,
    VerificationState,
)


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node as the verifier sees it: its passport, its resource version, its results."""

    passport: NodePassport
    results: Mapping[str, CapabilityVerification] = field(default_factory=dict)
    resource_version: str | None = None


class DueReason(StrEnum):
    NEVER_VERIFIED = "NeverVerified"
    CHANGED = "CapabilityChanged"
    EXPIRED = "Expired"
    RETRY = "RetryFailed"


@dataclass(frozen=True, slots=True)
class Due:
    """One claim to probe now, and why."""

    node_uid: str
    node_name: str
    capability: str
    reason: DueReason


def retry_delay(failures: int, policy: VerificationPolicy) -> timedelta:
    """How long after its last check a claim that failed ``failures`` times in a row waits."""
    seconds = policy.retry_after_seconds * 2 ** max(failures - 1, 0)
    return timedelta(seconds=min(seconds, policy.retry_max_seconds))


def next_check(result: CapabilityVerification, policy: VerificationPolicy) -> datetime:
    """When the claim ``result`` describes is due again, if the claim does not change."""
    if result.state == VerificationState.FAILED:
        return result.checked_at + retry_delay(result.consecutive_failures, policy)
    return result.checked_at + timedelta(seconds=policy.reverify_after_seconds)


def plan(nodes: Iterable[NodeView], now: datetime, policy: VerificationPolicy) -> list[Due]:
    """Every claim due at ``now``, node by node in the order given, claims in passport order."""
    due: list[Due] = []
    for node in nodes:
        passport = node.passport
        for cap in passport.spec.capabilities:
            result = node.results.get(cap.name)
            if result is None or result.node_uid != passport.node_id:
                reason: DueReason | None = DueReason.NEVER_VERIFIED
            elif not result.describes(cap):
                reason = DueReason.CHANGED
            elif now < next_check(result, policy):
                reason = None
            elif result.state == VerificationState.FAILED:
                reason = DueReason.RETRY
            else:
                reason = DueReason.EXPIRED
            if reason is not None:
                due.append(Due(passport.node_id, passport.metadata.name, cap.name, reason))
    return due
