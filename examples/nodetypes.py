"""Custom node types: a walk-through (docs/nodetypes.md).

Loads examples/nodetypes/gpu-worker.yaml next to the seven built-in types, checks a
passport that fits it and one that breaks it in five places, then a type whose schema uses
a keyword a node type may not:

    python examples/nodetypes.py
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

from node_registry.errors import ValidationError
from node_registry.passport.types import NodeTypes, load_node_type, read_node_types

HERE = Path(__file__).resolve().parent

types = NodeTypes().with_types(read_node_types(HERE / "nodetypes" / "gpu-worker.yaml"))
print("node types:", ", ".join(sorted(types)))

good = {
    "apiVersion": "ai_team.io/v1",
    "kind": "NodePassport",
    "metadata": {
        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, "gpu-01")),
        "name": "gpu-01",
        "nodeType": "gpu-worker",
    },
    "spec": {
        "capabilities": [
            {"name": "code_generation", "version": "1.1", "params": {"languages": ["python"]}},
            {"name": "gpu_inference", "params": {"models": ["llama-3-8b"]}},
        ],
        "resources": {"gpu": "2", "memory": "64Gi"},
        "endpoint": {"protocol": "http", "address": "http://gpu-01:8000/tasks"},
        "maxConcurrentTasks": 4,
    },
}
types.validate(good)
print("gpu-01: valid")

bad = copy.deepcopy(good)
bad["spec"]["resources"]["gpu"] = "0"
bad["spec"]["maxConcurrentTasks"] = 16
bad["spec"]["capabilities"][0] = {
    "name": "code_generation",
    "version": "2.0",
    "params": {"languages": ["python", "cobol"]},
}
bad["spec"]["capabilities"].append({"name": "web_search"})
try:
    types.validate(bad)
except ValidationError as exc:
    print(f"gpu-01 (broken): {exc.status_code} {exc.reason}: {exc.message}")
    for error in exc.errors:
        print(f"  {error}")

try:
    load_node_type(
        {
            "metadata": {"name": "edge-box"},
            "spec": {
                "schema": {
                    "openAPIV3Schema": {
                        "properties": {"region": {"type": "string", "nullable": True}},
                        "$ref": "#/$defs/base",
                    }
                }
            },
        }
    )
except ValidationError as exc:
    print(f"edge-box: {exc.message}")
    for error in exc.errors:
        print(f"  {error}")
