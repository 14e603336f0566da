"""Server-side apply (``kubectl apply --server-side``): field managers, ownership, conflicts.

A field manager applies its *intent*, a partial object: the fields it sets are its own from
then on (``metadata.managedFields``, operation ``Apply``, in Kubernetes' ``FieldsV1`` form), the
fields it set before and leaves out now are removed unless another manager owns them, and a
field another applier owns with a different value is a conflict (409) unless ``force`` takes
it over. Maps merge per key, lists with a merge key (``kube.patch.MERGE_KEYS``) per element
(``k:{"type":"Ready"}``), other lists and scalars are single fields.

Narrower than apiserver: only ``Apply`` operations are tracked; a plain update (``kubectl
label``, a node's registration) takes no ownership, so it never conflicts with an applier
and an applier's next apply sets its fields again. The identity (apiVersion, kind, name,
uid) is nobody's field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from node_registry.errors import ConflictError, FieldError, ValidationError
from node_registry.kube.meta import rfc3339
from node_registry.kube.patch import MERGE_KEYS, Path

#: Top-level fields and metadata fields no manager owns: the object's identity.
_UNOWNED_TOP = frozenset({"apiVersion", "kind"})
_UNOWNED_META = frozenset({"name", "uid", "managedFields", "resourceVersion"})
APPLY = "Apply"


class ApplyConflictError(ConflictError):
    reason = "Conflict"


def _key_step(key: str, value: Any) -> str:
    return "k:" + json.dumps({key: value}, separators=(",", ":"))


def fields_of(doc: dict[str, Any]) -> set[tuple[str, ...]]:
    """The fields ``doc`` sets, as FieldsV1 steps (leaves, and keyed list elements)."""
    out: set[tuple[str, ...]] = set()
    for key, value in doc.items():
        if key in _UNOWNED_TOP:
            continue
        owned = value
        if key == "metadata" and isinstance(value, dict):
            owned = {k: v for k, v in value.items() if k not in _UNOWNED_META}
            if not owned:
                continue
        _collect(owned, (f"f:{key}",), (key,), out)
    return out


def _collect(value: Any, steps: tuple[str, ...], path: Path, out: set[tuple[str, ...]]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _collect(item, (*steps, f"f:{key}"), (*path, key), out)
        return
    merge_key = MERGE_KEYS.get(path)
    if isinstance(value, list) and merge_key is not None:
        for item in value:
            if not isinstance(item, dict) or merge_key not in item:
                raise ValidationError(
                    "invalid apply configuration",
                    [FieldError(".".join(path), f"every element needs the key {merge_key!r}")],
                )
            item_steps = (*steps, _key_step(merge_key, item[merge_key]))
            out.add(item_steps)
            for key, sub in item.items():
                _collect(sub, (*item_steps, f"f:{key}"), (*path, key), out)
        return
    out.add(steps)


def to_fields_v1(fields: set[tuple[str, ...]]) -> dict[str, Any]:
    """The FieldsV1 document of ``fields`` (a node that is itself owned has ``"."``)."""
    tree: dict[str, Any] = {}
    for steps in sorted(fields):
        node = tree
        for step in steps:
            node = node.setdefault(step, {})
        if steps[-1].startswith("k:"):
            node["."] = {}
    return tree


def from_fields_v1(tree: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    if not isinstance(tree, dict):
        return out
    for step, sub in tree.items():
        if step == ".":
            out.add(prefix)
            continue
        here = (*prefix, step)
        if isinstance(sub, dict) and sub:
            out |= from_fields_v1(sub, here)
        else:
            out.add(here)
    return out


def _lookup(doc: Any, steps: tuple[str, ...]) -> Iterator[Any]:
    """The value at ``steps`` in ``doc`` (nothing when absent)."""
    node = doc
    for step in steps:
        if step.startswith("f:") and isinstance(node, dict) and step[2:] in node:
            node = node[step[2:]]
        elif step.startswith("k:") and isinstance(node, list):
            ((key, value),) = json.loads(step[2:]).items()
            found = [i for i in node if isinstance(i, dict) and i.get(key) == value]
            if not found:
                return
            node = found[0]
        else:
            return
    yield node


def _remove(doc: dict[str, Any], steps: tuple[str, ...]) -> None:
    parent: Any = doc
    for step in steps[:-1]:
        found = list(_lookup(parent, (step,)))
        if not found:
            return
        parent = found[0]
    last = steps[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        ((key, value),) = json.loads(last[2:]).items()
        parent[:] = [i for i in parent if not (isinstance(i, dict) and i.get(key) == value)]


def _merge(current: Any, applied: Any, path: Path) -> Any:
    if isinstance(applied, dict) and isinstance(current, dict):
        out = dict(current)
        for key, value in applied.items():
            out[key] = _merge(current.get(key), value, (*path, key))
        return out
    merge_key = MERGE_KEYS.get(path)
    if merge_key is not None and isinstance(applied, list) and isinstance(current, list):
        out_list = [copy.deepcopy(i) for i in current]
        for item in applied:
            index = next(
                (
                    i
                    for i, old in enumerate(out_list)
                    if isinstance(old, dict) and old.get(merge_key) == item.get(merge_key)
                ),
                None,
            )
            if index is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[index] = _merge(out_list[index], item, path)
        return out_list
    return copy.deepcopy(applied)


def _describe(steps: tuple[str, ...]) -> str:
    text = ""
    for step in steps:
        text += "." + step[2:] if step.startswith("f:") else f"[{step[2:]}]"
    return text


def managers_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    meta = doc.get("metadata")
    found = meta.get("managedFields") if isinstance(meta, dict) else None
    return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []


def server_side_apply(
    current: dict[str, Any],
    applied: dict[str, Any],
    *,
    manager: str,
    force: bool,
    now: datetime,
    api_version: str,
    subresource: str | None = None,
) -> dict[str, Any]:
    """``current`` (a passport document with its managedFields) after ``manager`` applied
    ``applied``; ``ApplyConflictError`` listing every conflict unless ``force``."""
    managers = managers_of(current)
    sets = {
        i: from_fields_v1(m.get("fieldsV1"))
        for i, m in enumerate(managers)
        if m.get("operation") == APPLY
    }
    mine_index = next(
        (
            i
            for i, m in enumerate(managers)
            if m.get("manager") == manager
            and m.get("operation") == APPLY
            and m.get("subresource") == subresource
        ),
        None,
    )
    before = sets.get(mine_index, set()) if mine_index is not None else set()
    wanted = fields_of(applied)
    conflicts: list[tuple[str, tuple[str, ...]]] = []
    for steps in sorted(wanted):
        value = list(_lookup(applied, steps))
        for index, owned in sets.items():
            if index == mine_index or steps not in owned:
                continue
            if list(_lookup(current, steps)) != value and not steps[-1].startswith("k:"):
                conflicts.append((str(managers[index].get("manager")), steps))
    if conflicts and not force:
        lines = "; ".join(f'conflict with "{m}": {_describe(s)}' for m, s in conflicts)
        count = len(conflicts)
        raise ApplyConflictError(
            f"Apply failed with {count} conflict{'s' if count > 1 else ''}: {lines}"
        )
    for _, steps in conflicts:  # forced: the fields change hands
        for owned in sets.values():
            owned.discard(steps)
    result = copy.deepcopy(current)
    others = set().union(*(s for i, s in sets.items() if i != mine_index)) if sets else set()
    for steps in sorted(before - wanted, key=len, reverse=True):
        if steps not in others:
            _remove(result, steps)
    result = dict(_merge(result, {k: v for k, v in applied.items() if k != "metadata"}, ()))
    for key in _UNOWNED_TOP:  # a create: the identity comes from the intent
        if key in applied:
            result.setdefault(key, applied[key])
    meta = dict(result.get("metadata") or {})
    applied_meta = applied.get("metadata") or {}
    for key in ("name", "uid"):
        if key in applied_meta:
            meta.setdefault(key, applied_meta[key])
    for key, value in applied_meta.items():
        if key not in _UNOWNED_META:
            meta[key] = _merge(meta.get(key), value, ("metadata", key))
    entry = {
        "manager": manager,
        "operation": APPLY,
        "apiVersion": api_version,
        "time": rfc3339(now),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(wanted),
    }
    if subresource:
        entry["subresource"] = subresource
    kept: list[dict[str, Any]] = []
    for i, m in enumerate(managers):
        if i == mine_index:
            continue
        if i in sets:
            if not sets[i]:
                continue  # a manager left with no field is dropped
            kept.append({**m, "fieldsV1": to_fields_v1(sets[i])})
        else:
            kept.append(m)
    meta["managedFields"] = [*kept, entry] if wanted else kept
    result["metadata"] = meta
    return result
