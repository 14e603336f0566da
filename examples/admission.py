"""Admission policies in CEL: a walk-through (docs/admission.md).

Loads the policies in examples/policies/, admits the seed's coder agent, refuses a tool
that claims code_generation (403) and a gpu claim without a gpu (422), shows a node
changing its team label refused and an admin allowed, and a broken policy refused at load:

    python examples/admission.py
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from node_registry.admission import Admission, AdmissionRequest, compile_policy
from node_registry.errors import ConfigError, RegistryError, ValidationError

HERE = Path(__file__).resolve().parent

admission = Admission.from_path(HERE / "policies")
print("policies:", ", ".join(p.name for p in admission.policies))
coder = yaml.safe_load((HERE / "coder-agent.yaml").read_text(encoding="utf-8"))


def attempt(title: str, request: AdmissionRequest) -> None:
    try:
        admission.admit(request)
    except RegistryError as exc:
        print(f"{title}: {exc.status_code} {exc.reason}")
        causes = exc.errors if isinstance(exc, ValidationError) else [exc]
        for cause in causes:
            print(f"  {cause}")
    else:
        print(f"{title}: admitted")


attempt("ai-agent-coder-01 CREATE", AdmissionRequest("CREATE", coder))

tool = copy.deepcopy(coder)
tool["metadata"]["nodeType"] = "tool"
attempt("tool claiming code_generation", AdmissionRequest("CREATE", tool))

gpu = copy.deepcopy(coder)
gpu["spec"]["capabilities"].append({"name": "gpu_inference"})
gpu["spec"]["resources"]["gpu"] = "0"
gpu["metadata"]["labels"]["team/owner"] = "ai-writer"
attempt("gpu_inference with gpu 0", AdmissionRequest("CREATE", gpu))

old = copy.deepcopy(coder)
old["metadata"]["labels"]["team/owner"] = "ai-agent"
new = copy.deepcopy(old)
new["metadata"]["labels"]["team/owner"] = "ai"
attempt("node relabels its team", AdmissionRequest("UPDATE", new, old, role="node"))
attempt("admin relabels its team", AdmissionRequest("UPDATE", new, old, role="admin"))

broken = yaml.safe_load("""
apiVersion: ai_team.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: broken}
spec:
  validations:
    - expression: object.spec.capabilities.exists(c, c.name == )
""")
try:
    compile_policy(broken)
except ConfigError as exc:
    print(f"loading a broken policy: {exc}")
