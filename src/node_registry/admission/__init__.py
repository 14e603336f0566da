"""Admission: ValidatingAdmissionPolicy-style rules in CEL that a passport write must pass.

Pure and I/O-free apart from reading policy files: the registry builds an
``AdmissionRequest`` per write, calls ``Admission.admit`` and lets its error (422, 403)
become the response's Status.
"""

from node_registry.admission.expressions import ExpressionError, Limits, comprehension_depth
from node_registry.admission.policy import (
    Admission,
    AdmissionPolicy,
    AdmissionRequest,
    CompiledPolicy,
    Violation,
    compile_policy,
    read_policies,
    refusal,
)

__all__ = [
    "Admission",
    "AdmissionPolicy",
    "AdmissionRequest",
    "CompiledPolicy",
    "ExpressionError",
    "Limits",
    "Violation",
    "compile_policy",
    "comprehension_depth",
    "read_policies",
    "refusal",
]
