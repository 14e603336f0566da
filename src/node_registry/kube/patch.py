"""Patches of NodePassport objects: JSON merge, JSON Patch, strategic merge; unknown fields.

What ``kubectl patch``, ``label``, ``annotate``, ``edit`` and ``apply`` send, applied as
apiserver applies them, to plain JSON documents (no I/O, no registry):

- ``application/merge-patch+json`` (RFC 7386): objects merge, ``null`` deletes, lists replace;
- ``application/json-patch+json`` (RFC 6902): the ``jsonpatch`` library, its errors translated;
- ``application/strategic-merge-patch+json``: a merge patch whose lists with a merge key
  (``MERGE_KEYS``: conditions by ``type``, capabilities by ``name``, as the Node type's
  ``patchMergeKey``) merge element by element, with apimachinery's directives ``$patch``
  (``replace``, ``delete``, ``merge``), ``$retainKeys``, ``$setElementOrder/<list>`` and
  ``$deleteFromPrimitiveList/<list>``. Other lists are atomic: replaced, as in a merge patch.

``unknown_fields`` reads the group's OpenAPI schema (the one ``kubectl explain`` shows) for the
fields ``fieldValidation=Strict|Warn`` speaks of. The passport keeps fields it does not know
(seed 2.4), so only fields a write *adds* are reported (``added_unknown_fields``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import jsonpatch
import jsonpointer

from node_registry.errors import BadRequestError, FieldError, ValidationError

Path = tuple[str, ...]

#: Lists merged element by element in a strategic merge (and owned per element by a field
#: manager), with the key that names an element. Every other list is atomic.
MERGE_KEYS: dict[Path, str] = {
    ("status", "conditions"): "type",
    ("spec", "capabilities"): "name",
}


class PatchType(StrEnum):
    JSON = "application/json-patch+json"
    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"


def _invalid_patch(why: str, loc: str = "") -> BadRequestError:
    return BadRequestError("invalid patch", [FieldError(loc, why)])


# -- JSON merge patch (RFC 7386) ---------------------------------------------------------


def merge_patch(original: Any, patch: Any) -> Any:
    """``original`` with RFC 7386's ``patch`` applied; neither argument is changed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- JSON Patch (RFC 6902) ---------------------------------------------------------------


def json_patch(original: dict[str, Any], patch: Any) -> Any:
    """``original`` with RFC 6902's operations applied in order (all or none).

    One at a time, so an error names the operation that failed (its index and path).
    """
    if not isinstance(patch, list):
        raise _invalid_patch(f"a JSON patch is a list of operations, not {type(patch).__name__}")
    for index, op in enumerate(patch):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise _invalid_patch("each operation is an object with an 'op'", f"[{index}]")
    doc: Any = original
    for index, op in enumerate(patch):
        where = f"[{index}] {op['op']} {op.get('path', '')}".rstrip()
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise ValidationError(
                "the JSON patch's test failed", [FieldError(where, str(exc))]
            ) from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise ValidationError(
                "the JSON patch does not apply", [FieldError(where, str(exc))]
            ) from None
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise _invalid_patch(f"{type(exc).__name__}: {exc}", where) from None
    return doc


# -- strategic merge patch -----------------------------------------------------------------

_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"


class _Deleted:
    """What a map with ``$patch: delete`` merges into: its key goes."""


_DELETED = _Deleted()


def strategic_merge(original: Any, patch: Any, path: Path = ()) -> Any:
    """``original`` with a strategic merge ``patch`` applied (see the module docstring)."""
    if not isinstance(patch, dict):
        raise _invalid_patch(
            f"a strategic merge patch is a JSON object, not {type(patch).__name__}", _dotted(path)
        )
    merged = _merge_map(original if isinstance(original, dict) else {}, patch, path)
    return {} if merged is _DELETED else merged


def _merge_map(original: dict[str, Any], patch: dict[str, Any], path: Path) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETED
    if directive == "replace":
        return _without_directives({k: v for k, v in patch.items() if k != "$patch"})
    if directive not in (None, "merge"):
        raise _invalid_patch(f"unknown $patch directive {directive!r}", _dotted(path))
    result = dict(original)
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith(_ORDER):
            continue
        if key.startswith(_DELETE_FROM):
            name = key[len(_DELETE_FROM) :]
            if not isinstance(value, list) or not isinstance(result.get(name, []), list):
                raise _invalid_patch(f"{key} takes a list of values", _dotted(path))
            result[name] = [v for v in result.get(name, []) if v not in value]
            continue
        sub = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            merged = _merge_map(current if isinstance(current, dict) else {}, value, sub)
            if merged is _DELETED:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and sub in MERGE_KEYS:
            current = result.get(key)
            result[key] = _merge_list(current if isinstance(current, list) else [], value, sub)
        else:
            result[key] = _without_directives(value)
    for key, order in patch.items():
        if key.startswith(_ORDER):
            name = key[len(_ORDER) :]
            if isinstance(result.get(name), list) and isinstance(order, list):
                result[name] = _ordered(result[name], order, (*path, name))
    retain = patch.get("$retainKeys")
    if retain is not None:
        if not isinstance(retain, list):
            raise _invalid_patch("$retainKeys takes a list of keys", _dotted(path))
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: list[Any], patch: list[Any], path: Path) -> list[Any]:
    key = MERGE_KEYS[path]
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_without_directives(i) for i in patch if not _is_directive(i)]
    result = [copy.deepcopy(item) for item in original]
    for index, item in enumerate(patch):
        if not isinstance(item, dict) or key not in item:
            raise _invalid_patch(
                f"every element needs the merge key {key!r}", f"{_dotted(path)}[{index}]"
            )
        found = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if found is not None:
                del result[found]
            continue
        base = result[found] if found is not None else {}
        merged = _merge_map(base, {k: v for k, v in item.items() if k != "$patch"}, path)
        if found is None:
            result.append(merged)
        else:
            result[found] = merged
    return result


def _ordered(items: list[Any], order: list[Any], path: Path) -> list[Any]:
    """``items`` in the order ``$setElementOrder`` gives; the others after, as they were."""
    key = MERGE_KEYS.get(path)

    def identity(item: Any) -> Any:
        return json.dumps(item.get(key) if key and isinstance(item, dict) else item)

    rank = {identity(item): i for i, item in enumerate(order)}
    return sorted(items, key=lambda item: rank.get(identity(item), len(rank)))


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {"$patch"}


def _without_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_directives(v)
            for k, v in value.items()
            if not (k.startswith("$patch") or k == "$retainKeys" or k.startswith(_ORDER))
        }
    if isinstance(value, list):
        return [_without_directives(v) for v in value]
    return value


def apply_patch(kind: PatchType, original: dict[str, Any], patch: Any) -> Any:
    """``original`` with ``patch`` of ``kind`` applied (not ``APPLY``: see ``kube.apply``)."""
    if kind is PatchType.JSON:
        return json_patch(original, patch)
    if kind is PatchType.MERGE:
        if not isinstance(patch, dict):
            raise _invalid_patch(f"a merge patch is a JSON object, not {type(patch).__name__}")
        return merge_patch(original, patch)
    return strategic_merge(original, patch)


# -- unknown fields -------------------------------------------------------------------------


def _dotted(path: Path) -> str:
    return ".".join(path)


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    while True:
        ref = schema.get("$ref")
        if ref is None and len(schema.get("allOf", ())) == 1:
            ref = schema["allOf"][0].get("$ref")
        if not isinstance(ref, str):
            return schema
        schema = schemas[ref.rsplit("/", 1)[-1]]


def _unknown(value: Any, schema: dict[str, Any], schemas: dict[str, Any], at: str) -> Iterator[str]:
    schema = _resolve(schema, schemas)
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{at}.{key}" if at else key
            if isinstance(properties, dict):
                if key in properties:
                    yield from _unknown(item, properties[key], schemas, where)
                else:
                    yield where
            elif isinstance(extra, dict):
                yield from _unknown(item, extra, schemas, where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _unknown(item, schema["items"], schemas, f"{at}[{index}]")


def unknown_fields(doc: Any, schema: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    """Fields of ``doc`` its ``schema`` does not declare (``spec.foo``, ``spec.x[0].y``)."""
    return list(_unknown(doc, schema, schemas, ""))


def added_unknown_fields(
    before: Any, after: Any, schema: dict[str, Any], schemas: dict[str, Any]
) -> list[str]:
    """Unknown fields ``after`` has that ``before`` had not: what a write brings in."""
    known = set(unknown_fields(before, schema, schemas)) if before is not None else set()
    return [f for f in unknown_fields(after, schema, schemas) if f not in known]
