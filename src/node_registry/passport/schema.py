"""The JSON Schema of NODE_PASSPORT v1, exported for tools outside Python (editors, CI, nodes).

The schema is generated from the pydantic models, so it never drifts from them; the copy in
``docs/passport.schema.json`` is checked against this function by ``tests/test_schema.py``.
Regenerate it with::

    python -m node_registry.passport.schema > docs/passport.schema.json

The schema describes shapes, types, enums and counts. The finer rules (label and name syntax,
quantities, unique capability names and condition types, labels agreeing with derived ones,
size limits) are only enforced by ``load_passport``: a document the schema accepts may still
be refused by the registry, never the other way round.
"""

from __future__ import annotations

import json
from typing import Any

from node_registry.passport.models import API_VERSION, KIND, NodePassport

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = f"urn:ai-team:schema:{API_VERSION}:{KIND}"


def passport_json_schema() -> dict[str, Any]:
    """The JSON Schema a passport sent to the registry must satisfy (the input side)."""
    schema = NodePassport.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = SCHEMA_DIALECT
    schema["$id"] = SCHEMA_ID
    schema["title"] = f"{KIND} ({API_VERSION})"
    return schema


def render() -> str:
    """The schema as committed: indented JSON, sorted keys, a trailing newline."""
    return json.dumps(passport_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
