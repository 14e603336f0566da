"""Capability verification by probe tasks (seed 3.2), the orchestrator's side.

``read_probes`` loads the probes; ``plan`` says which claims are due; a ``Verifier`` sends
the probes and judges the answers; a ``ResultSink`` records the results; the functions of
``results`` say which claims count, whether a node is trusted and which labels selectors
see. The registry side (storing results as status only a verifier may write, ``find_nodes(
only_verified=True)``, ``node-registry verify``) is wired on top of these.
"""

from node_registry.passport.verification import (
    LABEL_PREFIX,
    TRUSTED_LABEL,
    UNVERIFIED,
    CapabilityVerification,
    NodeVerification,
    VerificationPolicy,
    VerificationState,
    claim_states,
    counted_capabilities,
    current_results,
    is_trusted,
    matchable_labels,
    verification_labels,
)
from node_registry.verification.planner import Due, DueReason, NodeView, next_check, plan
from node_registry.verification.probes import (
    Expectation,
    FieldCheck,
    Probe,
    ProbeSet,
    load_probes,
    read_probes,
)
from node_registry.verification.runner import Verdict, Verifier, judge
from node_registry.verification.sink import MemorySink, ResultSink
from node_registry.verification.transport import (
    HttpTransport,
    ProbeResponse,
    Transport,
    TransportError,
)

__all__ = [
    "LABEL_PREFIX",
    "TRUSTED_LABEL",
    "UNVERIFIED",
    "CapabilityVerification",
    "Due",
    "DueReason",
    "Expectation",
    "FieldCheck",
    "HttpTransport",
    "MemorySink",
    "NodeVerification",
    "NodeView",
    "Probe",
    "ProbeResponse",
    "ProbeSet",
    "ResultSink",
    "Transport",
    "TransportError",
    "Verdict",
    "VerificationPolicy",
    "VerificationState",
    "Verifier",
    "claim_states",
    "counted_capabilities",
    "current_results",
    "is_trusted",
    "judge",
    "load_probes",
    "matchable_labels",
    "next_check",
    "plan",
    "read_probes",
    "verification_labels",
]
