"""Verification results, the policy that reads them, and what they mean for finding nodes.

They live with the passport, below the registry: the registry stores them with the node
(registry-owned status, written through the ``verification`` subresource) and matches
selectors on them; the verifier (``node_registry.verification``) produces them.

A ``CapabilityVerification`` is what the verifier records per (node, capability): the state
(Verified, Failed, or Unknown when no probe or transport could test it), a reason and a
message as a Kubernetes condition has them, when it was checked, the probe, and what it
verified: the claimed version, a digest of the params and the passport's resource version.
A result whose version or params no longer match the claim is stale: the claim is
unverified again until it is probed.

The functions at the end are the seams for the registry's ``find_nodes``: which claims count
(``counted_capabilities``), whether the node is trusted, and the labels selectors see
(``verification_labels``, ``matchable_labels``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from node_registry.passport.derived import CAPABILITY_PREFIX, effective_labels
from node_registry.passport.models import KEY_DOMAIN, Capability, NodePassport

#: ``verification.ai-team.io/<capability>: Verified|Failed|Unknown|Unverified``.
LABEL_PREFIX = f"verification.{KEY_DOMAIN}/"
TRUSTED_LABEL = f"{LABEL_PREFIX}trusted"


class VerificationState(StrEnum):
    VERIFIED = "Verified"
    FAILED = "Failed"
    #: No probe applies, or none can reach the node's endpoint: nothing was learnt.
    UNKNOWN = "Unknown"


#: The condition the registry shows from the verifier's results (never a node's to write).
TRUSTED = "Trusted"

#: A claim with no current result (never probed, or changed since): only for labels.
UNVERIFIED = "Unverified"


def params_digest(params: Mapping[str, Any]) -> str:
    """A short digest of a capability's params (canonical JSON), to notice they changed."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CapabilityVerification(BaseModel):
    """One capability of one node, as last probed. JSON-ready (camelCase) for storage."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    node_uid: str = Field(alias="nodeUid")
    node_name: str = Field(alias="nodeName")
    capability: str
    state: VerificationState
    #: CamelCase, for machines: Passed, Timeout, HTTPStatus, CheckFailed, TooSlow, ...
    reason: str
    message: str
    checked_at: datetime = Field(alias="checkedAt")
    probe: str | None = None
    capability_version: str | None = Field(default=None, alias="capabilityVersion")
    params_digest: str = Field(alias="paramsDigest")
    #: The passport's resourceVersion (or generation) this result verified.
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    latency_seconds: float | None = Field(default=None, alias="latencySeconds")
    #: Failures in a row, this one included; drives the retry backoff.
    consecutive_failures: int = Field(default=0, alias="consecutiveFailures", ge=0)

    def describes(self, capability: Capability) -> bool:
        """Whether this result is about the claim as it stands (same version and params)."""
        return (
            self.capability == capability.name
            and self.capability_version == capability.version
            and self.params_digest == params_digest(capability.params)
        )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class NodeVerification(BaseModel):
    """One node's results from one verification round."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    node_uid: str = Field(alias="nodeUid")
    node_name: str = Field(alias="nodeName")
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    results: tuple[CapabilityVerification, ...]

    def by_capability(self) -> dict[str, CapabilityVerification]:
        return {r.capability: r for r in self.results}


class VerificationPolicy(BaseModel):
    """How the verifier schedules probes, and how results are used for matching."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: A result older than this is probed again (a node can regress).
    reverify_after_seconds: float = Field(default=24 * 3600, gt=0)
    #: A failed capability is retried after this, doubling per failure in a row ...
    retry_after_seconds: float = Field(default=60, gt=0)
    #: ... up to this.
    retry_max_seconds: float = Field(default=3600, gt=0)
    #: Whether a claim that is not (yet) verified still matches ``capability.<name>``.
    #: Failed claims never do; ``only_verified`` queries count Verified ones only.
    unverified_capabilities_count: bool = True
    #: Whether one failed claim makes the whole node untrusted (seed 3.2, step 5).
    untrusted_on_failure: bool = True


def current_results(
    passport: NodePassport, results: Mapping[str, CapabilityVerification]
) -> dict[str, CapabilityVerification]:
    """The results that describe ``passport``'s claims as they stand, by capability name."""
    current = {}
    for cap in passport.spec.capabilities:
        result = results.get(cap.name)
        if result is not None and result.node_uid == passport.node_id and result.describes(cap):
            current[cap.name] = result
    return current


def claim_states(
    passport: NodePassport, results: Mapping[str, CapabilityVerification]
) -> dict[str, str]:
    """Each claimed capability's state: Verified, Failed, Unknown or Unverified."""
    current = current_results(passport, results)
    return {
        cap.name: current[cap.name].state.value if cap.name in current else UNVERIFIED
        for cap in passport.spec.capabilities
    }


def is_trusted(
    passport: NodePassport,
    results: Mapping[str, CapabilityVerification],
    policy: VerificationPolicy,
) -> bool:
    """False when the policy untrusts on failure and a current claim has Failed."""
    if not policy.untrusted_on_failure:
        return True
    return VerificationState.FAILED.value not in claim_states(passport, results).values()


def counted_capabilities(
    passport: NodePassport,
    results: Mapping[str, CapabilityVerification],
    policy: VerificationPolicy,
    *,
    only_verified: bool = False,
) -> list[str]:
    """The claims that count for matching: Verified always, Failed never, the rest when the
    policy says unverified claims count (and the query did not ask ``only_verified``)."""
    lenient = policy.unverified_capabilities_count and not only_verified
    return [
        name
        for name, state in claim_states(passport, results).items()
        if state == VerificationState.VERIFIED or (lenient and state != VerificationState.FAILED)
    ]


def verification_labels(
    passport: NodePassport,
    results: Mapping[str, CapabilityVerification],
    policy: VerificationPolicy,
) -> dict[str, str]:
    """Labels a selector can ask for: ``verification.ai-team.io/code_generation=Verified``,
    ``verification.ai-team.io/trusted=true``."""
    labels = {LABEL_PREFIX + name: state for name, state in claim_states(passport, results).items()}
    labels[TRUSTED_LABEL] = "true" if is_trusted(passport, results, policy) else "false"
    return labels


def matchable_labels(
    passport: NodePassport,
    results: Mapping[str, CapabilityVerification],
    policy: VerificationPolicy,
    *,
    only_verified: bool = False,
) -> dict[str, str]:
    """What ``find_nodes`` matches a selector against once verification is wired in: the
    effective labels without the ``capability.<name>`` of claims that do not count, plus the
    verification labels. ``only_verified`` also wants ``is_trusted`` (the caller checks).

    A ``capability.<name>`` label the node set by hand without a counted claim goes too:
    otherwise a label would vouch for what no probe tested."""
    counted = {
        CAPABILITY_PREFIX + name
        for name in counted_capabilities(passport, results, policy, only_verified=only_verified)
    }
    labels = {
        key: value
        for key, value in effective_labels(passport).items()
        if key in counted or not key.startswith(CAPABILITY_PREFIX)
    }
    labels.update(verification_labels(passport, results, policy))
    return labels


def registry_labels(
    passport: NodePassport, results: Mapping[str, CapabilityVerification]
) -> dict[str, str]:
    """The labels the registry indexes a node by: its effective labels, without the
    ``capability.<name>`` of a Failed claim (a failed claim never counts), plus the
    verification labels (a Failed claim untrusts the node).

    Whether unverified claims count is a policy of each query (``verification.require``,
    ``only_verified``): ``strict_labels`` drops them from these."""
    labels = effective_labels(passport)
    if not results:
        # No result at all (most nodes): every claim is Unverified; no digest to compute.
        for cap in passport.spec.capabilities:
            labels[LABEL_PREFIX + cap.name] = UNVERIFIED
        labels[TRUSTED_LABEL] = "true"
        return labels
    states = claim_states(passport, results)
    for name, state in states.items():
        if state == VerificationState.FAILED:
            labels.pop(CAPABILITY_PREFIX + name, None)
        labels[LABEL_PREFIX + name] = state
    labels[TRUSTED_LABEL] = "false" if VerificationState.FAILED in states.values() else "true"
    return labels


def strict_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """``registry_labels`` as a query that counts only Verified claims sees them: every
    ``capability.<name>`` whose claim is not Verified is gone (a hand-set one too)."""
    return {
        key: value
        for key, value in labels.items()
        if not key.startswith(CAPABILITY_PREFIX)
        or labels.get(LABEL_PREFIX + key[len(CAPABILITY_PREFIX) :]) == VerificationState.VERIFIED
    }


def trusted(labels: Mapping[str, str]) -> bool:
    """Whether ``registry_labels`` say no current claim has Failed."""
    return labels.get(TRUSTED_LABEL) != "false"
