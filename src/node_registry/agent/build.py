"""The node's passport as the runtime registers it: the file (or dict) merged with detection.

Values written in the file win over detected ones: the file is the operator's word, detection
only fills what it leaves out. A detected resource is also left out when the file already
uses its name as a label, because every resource is a derived label too (``memory: 8Gi``)
and a passport whose label and resource disagree is refused.

Everything is validated with ``load_passport`` here, before the runtime does any I/O, so a
bad file fails at start-up with a ``ValidationError`` naming the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from node_registry.errors import FieldError, ValidationError
from node_registry.passport import NodePassport, load_passport

#: What a passport can be built from: a YAML/JSON file, a document, or a passport.
PassportSource = str | os.PathLike[str] | Mapping[str, Any] | NodePassport


def read_passport_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The one document in a YAML or JSON file; ``ValidationError`` saying what is wrong."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(
            f"cannot read passport file {file}", [FieldError("", str(exc.strerror or exc))]
        ) from None
    try:
        if file.suffix == ".json":
            documents = [json.loads(text)]
        else:
            documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(
            f"passport file {file} is not valid YAML/JSON", [FieldError("", str(exc))]
        ) from None
    if len(documents) != 1:
        raise ValidationError(
            f"passport file {file} must hold one document",
            [FieldError("", f"found {len(documents)}")],
        )
    doc = documents[0]
    if not isinstance(doc, dict):
        raise ValidationError(
            f"passport file {file} must hold a mapping",
            [FieldError("", f"got {type(doc).__name__}")],
        )
    return doc


def merge_resources(passport: NodePassport, detected: Mapping[str, str]) -> NodePassport:
    """``passport`` with detected resources added where the file says nothing of them."""
    written = passport.spec.resources
    labels = passport.metadata.labels
    added = {k: v for k, v in detected.items() if k not in written and k not in labels}
    if not added:
        return passport
    doc = passport.to_dict()
    doc.setdefault("spec", {})["resources"] = {**written, **added}
    # Validated again: a detected name or quantity is input like any other.
    return load_passport(doc)


def build_passport(
    source: PassportSource, *, detected: Mapping[str, str] | None = None
) -> NodePassport:
    """Read and validate ``source``, then merge ``detected`` resources (the file wins)."""
    if isinstance(source, NodePassport | Mapping):
        passport = load_passport(source)
    else:
        passport = load_passport(read_passport_file(source))
    return merge_resources(passport, detected) if detected else passport
