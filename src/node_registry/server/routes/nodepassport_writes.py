"""NodePassport writes as apiserver takes them: create, update, patch, delete, deletecollection,
and the ``status`` subresource (``kubectl create/replace/apply/edit/patch/label/delete``).

Kubernetes' rules, and where the registry's own come in:

- POST is a registration: a name held by another uid is ``AlreadyExists`` (409); the same
  uid registering again replaces its passport (200), as ``register`` does, so a node
  restarting with its uid needs no other verb; a uid registered under another name is a
  409 naming that node (a create never renames).
- The main resource's PUT and PATCH change metadata and spec; the status they carry is
  ignored (the status subresource's rule). ``/status`` PUT and PATCH change the status only,
  count as the node's heartbeat, and the merged status is held to every passport limit (32
  conditions, 256 KiB). Neither writes what the registry owns: a patch that changes
  ``status.healthState``, ``lastSeen``, ``registeredAt``, ``schedulable`` or
  ``creationTimestamp`` is refused; a PUT's copy of them (a GET's, maybe stale) is ignored.
- ``metadata.resourceVersion`` in a PUT, in a patched object, or in DeleteOptions'
  ``preconditions`` (with ``uid``) is optimistic concurrency: 409 Conflict when it is not the
  stored version. Without one a patch is applied to the latest version, retried on a race.
- ``dryRun=All`` validates, authorizes and answers, and stores nothing.
- ``fieldValidation``: a write that brings in fields the schema does not declare is refused
  (``Strict``, 400), warned about in a ``Warning`` header (``Warn``, the default) or let be
  (``Ignore``). Fields the node's own passport already had are not the writer's doing.
- Auth: a node token writes only its own node (name and uid) and no protected label; a
  reader writes nothing; an admin writes everything, and its delete of a name no node holds
  frees the name a node left bound (a Success Status, as apiserver's for a delete of no
  object). A dry-run delete runs the admission policies that match DELETE.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from node_registry.admission.policy import Operation
from node_registry.errors import (
    BadRequestError,
    ConflictError,
    FieldError,
    ForbiddenError,
    NotFoundError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from node_registry.kube import openapi
from node_registry.kube.apply import server_side_apply
from node_registry.kube.discovery import GROUP_VERSION
from node_registry.kube.fields import parse_field_selector
from node_registry.kube.objects import entry_to_object, stamp_conditions
from node_registry.kube.patch import PatchType, added_unknown_fields, apply_patch, merge_patch
from node_registry.passport import NodePassport, load_passport
from node_registry.passport.models import API_GROUP
from node_registry.passport.objects import SERVER_STATUS, passport_of
from node_registry.registry import RegistryEntry, UserInfo
from node_registry.registry.policies import admit, refuse_registry_owned
from node_registry.server.auth import (
    Principal,
    Role,
    authorize_node_id,
    authorize_node_registration,
    authorize_node_write,
    restrict_protected_labels,
    user_info,
)
from node_registry.server.body import (
    media_type,
    off_the_loop_if_large,
    parse_document,
    read_document,
)
from node_registry.server.context import Caller, Ctx, NodeName, ServerContext
from node_registry.server.negotiation import kube_response
from node_registry.server.render import NodesResponse
from node_registry.server.routes.nodepassports import select
from node_registry.server.routes.params import LabelSelectorQuery, query_selector
from node_registry.store import HealthState

RESOURCE = "nodepassports"
STATUS = "status"
_MAX_MANAGER = 128


class AlreadyExistsError(ConflictError):
    reason = "AlreadyExists"


class FieldValidation(StrEnum):
    STRICT = "Strict"
    WARN = "Warn"
    IGNORE = "Ignore"


async def _name_errors(request: Request) -> None:
    request.state.resource = (RESOURCE, API_GROUP)


router = APIRouter(
    prefix=f"/apis/{GROUP_VERSION}",
    tags=[RESOURCE],
    dependencies=[Depends(_name_errors)],
)

DryRunQuery = Annotated[list[str] | None, Query(alias="dryRun", max_length=1)]
FieldValidationQuery = Annotated[FieldValidation, Query(alias="fieldValidation")]
FieldManagerQuery = Annotated[str | None, Query(alias="fieldManager", max_length=_MAX_MANAGER)]
FieldSelectorQuery = Annotated[str | None, Query(alias="fieldSelector", max_length=4096)]


def _object_body(*media: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{openapi.PREFIX}NodePassport"}
    return {"requestBody": {"required": True, "content": {m: {"schema": ref} for m in media}}}


_OBJECT_MEDIA = ("application/json", "application/yaml")
_OBJECT = kube_response("NodePassport", "The NodePassport as stored (or as it would be: dryRun)")
_LIST = kube_response("NodePassportList", "The NodePassports deleted")
_PATCH_MEDIA = tuple(p.value for p in PatchType)


@dataclasses.dataclass
class _Write:
    """What every write's query says, read once."""

    dry_run: bool
    validation: FieldValidation
    manager: str | None
    warnings: list[str] = dataclasses.field(default_factory=list)

    def check_unknown(self, before: Any, after: Any) -> None:
        self.warnings = []  # a retried change says what its last attempt found
        if self.validation is FieldValidation.IGNORE:
            return
        schemas = openapi.schemas()
        schema = schemas[f"{openapi.PREFIX}NodePassport"]
        found = added_unknown_fields(before, after, schema, schemas)
        if not found:
            return
        if self.validation is FieldValidation.STRICT:
            fields = ", ".join(f'unknown field "{f}"' for f in found)
            # apiserver's words; the message names every field already (no causes to repeat).
            raise BadRequestError(f"strict decoding error: {fields}")
        self.warnings = [f'unknown field "{f}"' for f in found]


async def _write_options(
    dry_run: DryRunQuery = None,
    field_validation: FieldValidationQuery = FieldValidation.WARN,
    field_manager: FieldManagerQuery = None,
) -> _Write:
    # async on purpose: FastAPI runs a plain def dependency in a worker thread, a thread hop
    # on every write (a fifth of a registration's server CPU, #14).
    if dry_run and dry_run != ["All"]:
        raise BadRequestError(
            "invalid dryRun", [FieldError("dryRun", f"{dry_run[0]!r}; the only value is All")]
        )
    return _Write(bool(dry_run), field_validation, field_manager)


WriteOptions = Annotated[_Write, Depends(_write_options)]


def _respond(doc: dict[str, Any], write: _Write, status_code: int = 200) -> JSONResponse:
    response = NodesResponse(doc, status_code=status_code)
    for warning in write.warnings:
        # RFC 7234's Warning, as apiserver sends it: code 299, agent "-", quoted text.
        response.headers.append("Warning", '299 - "' + _header_text(warning) + '"')
    return response


def _header_text(text: str) -> str:
    """``text`` as a quoted-string's content: printable ASCII, the rest escaped (a field name
    is the caller's text, and a header carries neither newlines nor, in HTTP/1.1, UTF-8)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode() for c in escaped)


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f'{RESOURCE}.{API_GROUP} "{name}" not found')


def _conflict(name: str) -> ConflictError:
    return ConflictError(
        f'Operation cannot be fulfilled on {RESOURCE}.{API_GROUP} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again"
    )


def _get(ctx: ServerContext, name: str) -> RegistryEntry:
    try:
        return ctx.registry.sync.get_by_name(name)
    except NotFoundError:
        raise _not_found(name) from None


def _authorize_node(caller: Principal, name: str, entry: RegistryEntry) -> None:
    authorize_node_write(caller, name)
    authorize_node_id(caller, entry.node_id)


def _as_object(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise BadRequestError(f"{what} must be a JSON object", [FieldError("", type(doc).__name__)])
    return doc


def _revision(text: Any, loc: str) -> int | None:
    if text in (None, ""):
        return None
    if not isinstance(text, str) or not text.isdigit():
        raise BadRequestError("invalid resourceVersion", [FieldError(loc, f"{text!r}")])
    return int(text)


def _check_name(doc: dict[str, Any], name: str) -> None:
    meta = doc.get("metadata")
    given = meta.get("name") if isinstance(meta, dict) else None
    if given is not None and given != name:
        raise BadRequestError(
            f"the name of the object ({given}) does not match the name on the URL ({name})",
            [FieldError("metadata.name", f"{given!r} is not {name!r}")],
        )


def _refuse_owned_changes(before: dict[str, Any], after: Any) -> None:
    """A patch may not write what the registry owns (the module docstring)."""
    problems = []
    old_status, new_status = before.get("status") or {}, _section(after, "status")
    for field in SERVER_STATUS:
        if new_status.get(field) != old_status.get(field):
            problems.append(
                FieldError(f"status.{field}", "set by the registry, not writable by a client")
            )
    old_meta, new_meta = before.get("metadata") or {}, _section(after, "metadata")
    if new_meta.get("creationTimestamp") != old_meta.get("creationTimestamp"):
        problems.append(FieldError("metadata.creationTimestamp", "set by the registry"))
    if problems:
        raise ValidationError("the patch changes fields the registry owns", problems)


def _section(doc: Any, name: str) -> dict[str, Any]:
    found = doc.get(name) if isinstance(doc, dict) else None
    return found if isinstance(found, dict) else {}


def _compose(
    stored: NodePassport, written: dict[str, Any], *, subresource: str | None, now: datetime
) -> dict[str, Any]:
    """The passport to store: ``written``'s metadata and spec, or only its status (``/status``);
    managedFields kept unless the write (an apply) set them."""
    base = stored.to_dict()
    if subresource == STATUS:
        status = dict(_section(written, "status"))
        conditions = status.get("conditions")
        if isinstance(conditions, list):
            before = _section(base, "status").get("conditions") or []
            status["conditions"] = stamp_conditions(before, conditions, now)
        result = {**base, "status": status}
        managed = _section(written, "metadata").get("managedFields")
        if managed is not None:
            result["metadata"] = {**base["metadata"], "managedFields": managed}
        return result
    result = {k: v for k, v in written.items() if k != "status"}
    if "status" in base:
        result["status"] = base["status"]
    meta = dict(_section(written, "metadata"))
    meta.setdefault("uid", base["metadata"]["uid"])
    if "managedFields" not in meta and "managedFields" in base["metadata"]:
        meta["managedFields"] = base["metadata"]["managedFields"]
    result["metadata"] = meta
    return result


def _restricted(
    ctx: ServerContext, caller: Principal, passport: NodePassport, stored: NodePassport
) -> NodePassport:
    if caller.role is not Role.NODE:
        return passport
    prefix = ctx.settings.server.protected_label_prefix
    return restrict_protected_labels(passport, stored, None, prefix)


def _object_at(entry: RegistryEntry, stored: NodePassport, revision: int) -> dict[str, Any]:
    """The object a patch applies to: the stored passport at ``revision``, with the registry's
    fields as the caller saw them (no controller overlay: the node's own status)."""
    return entry_to_object(dataclasses.replace(entry, passport=stored, resource_version=revision))


# -- create ----------------------------------------------------------------------------------


@router.post(
    f"/{RESOURCE}",
    status_code=201,
    summary="Create (register) a NodePassport; the same uid again re-registers it",
    responses={**_OBJECT, 201: _OBJECT[200]},
    openapi_extra=_object_body(*_OBJECT_MEDIA),
)
async def create_nodepassport(
    request: Request, caller: Caller, ctx: Ctx, write: WriteOptions
) -> Response:
    if caller.role is Role.READER:
        authorize_node_write(caller, "")
    doc = _as_object(await read_document(request), "a NodePassport")
    passport_doc = passport_of(doc)
    write.check_unknown(None, doc)
    size = len(await request.body())
    passport = await off_the_loop_if_large(functools.partial(load_passport, passport_doc), size)
    entry, created = await _register(ctx, caller, passport, size=size, dry_run=write.dry_run)
    return _respond(entry_to_object(entry), write, 201 if created else 200)


async def _register(
    ctx: ServerContext,
    caller: Principal,
    passport: NodePassport,
    *,
    size: int | None,
    dry_run: bool,
) -> tuple[RegistryEntry, bool]:
    registry = ctx.registry
    name = passport.metadata.name
    authorize_node_write(caller, name)
    try:
        holder: str | None = registry.sync.id_of(name)
    except NotFoundError:
        holder = None
    existing = registry.sync.get(holder).passport if holder is not None else None
    if caller.role is Role.NODE:  # authorization first: a refused node learns nothing more
        try:
            stored_name: str | None = registry.sync.get(passport.node_id).name
        except NotFoundError:
            stored_name = None
        binding = None if holder is not None else await registry.binding(name)
        authorize_node_registration(
            caller, passport, stored_name=stored_name, holder=holder, binding=binding
        )
        passport = restrict_protected_labels(
            passport, existing, binding, ctx.settings.server.protected_label_prefix
        )
    if holder is not None and holder != passport.node_id:
        raise AlreadyExistsError(f'{RESOURCE}.{API_GROUP} "{name}" already exists')
    if dry_run:
        now = ctx.clock.now()
        current = registry.sync.get(holder) if holder is not None else None
        # What the registration would check (#12): the registry's own fields, the node
        # type, the admission policies.
        refuse_registry_owned(passport)
        registry.sync.node_types.validate(passport)
        operation: Operation = "CREATE" if current is None else "UPDATE"
        old = current.passport if current is not None else None
        admit(registry.sync.admission, operation, passport, old, user_info(caller))
        entry = RegistryEntry(
            passport.node_id,
            passport.metadata.node_type,
            passport,
            now,
            HealthState.ALIVE,
            current.registered_at if current else now,
            current.resource_version if current else 0,
        )
        return entry, holder is None
    # Never a rename: a uid registered under another name is that node, not a new one
    # (409 naming it), whoever creates.
    # ``size``: a passport from a small body is validated again on the loop, as it was here.
    entry = await registry.register(passport, rename=False, user=user_info(caller), size=size)
    ctx.metrics.registrations.inc()
    return entry, holder is None


# -- update ----------------------------------------------------------------------------------


async def _replace(
    name: str,
    request: Request,
    caller: Principal,
    ctx: ServerContext,
    write: _Write,
    subresource: str | None,
) -> Response:
    authorize_node_write(caller, name)
    entry = _get(ctx, name)
    _authorize_node(caller, name, entry)
    doc = _as_object(await read_document(request), "a NodePassport")
    _check_name(doc, name)
    expected = _revision(
        _section(doc, "metadata").get("resourceVersion"), "metadata.resourceVersion"
    )

    def change(stored: NodePassport, revision: int) -> NodePassport:
        before = _object_at(entry, stored, revision)
        write.check_unknown(before, doc)
        new = _compose(stored, passport_of(doc), subresource=subresource, now=ctx.clock.now())
        return _restricted(ctx, caller, load_passport(new), stored)

    return await _rewrite(ctx, entry, change, write, subresource, expected, user_info(caller))


async def _rewrite(
    ctx: ServerContext,
    entry: RegistryEntry,
    change: Callable[[NodePassport, int], NodePassport],
    write: _Write,
    subresource: str | None,
    expected: int | None = None,
    user: UserInfo | None = None,
) -> Response:
    try:
        updated = await ctx.registry.rewrite(
            entry.node_id,
            change,
            expected_revision=expected,
            heartbeat=subresource == STATUS,
            dry_run=write.dry_run,
            user=user,
        )
    except NotFoundError:
        raise _not_found(entry.name) from None
    except ConflictError as exc:
        if exc.reason == "ResourceVersionConflict":
            raise _conflict(entry.name) from None
        raise
    return _respond(entry_to_object(updated), write)


@router.put(
    f"/{RESOURCE}/{{name}}",
    summary="Replace a NodePassport's metadata and spec (its status is ignored)",
    responses=_OBJECT,
    openapi_extra=_object_body(*_OBJECT_MEDIA),
)
async def replace_nodepassport(
    name: NodeName, request: Request, caller: Caller, ctx: Ctx, write: WriteOptions
) -> Response:
    return await _replace(name, request, caller, ctx, write, None)


@router.put(
    f"/{RESOURCE}/{{name}}/status",
    summary="Replace a NodePassport's status: the node's report (counts as a heartbeat)",
    responses=_OBJECT,
    openapi_extra=_object_body(*_OBJECT_MEDIA),
)
async def replace_nodepassport_status(
    name: NodeName, request: Request, caller: Caller, ctx: Ctx, write: WriteOptions
) -> Response:
    return await _replace(name, request, caller, ctx, write, STATUS)


# -- patch -----------------------------------------------------------------------------------


def _patch_type(request: Request) -> PatchType:
    kind = media_type(request)
    try:
        return PatchType(kind)
    except ValueError:
        served = ", ".join(p.value for p in PatchType)
        raise UnsupportedMediaTypeError(
            "unsupported patch type", [FieldError("Content-Type", f"{kind!r}; served: {served}")]
        ) from None


async def _patch(
    name: str,
    request: Request,
    caller: Principal,
    ctx: ServerContext,
    write: _Write,
    subresource: str | None,
    force: bool,
) -> Response:
    kind = _patch_type(request)
    authorize_node_write(caller, name)
    raw = await request.body()
    if not raw.strip():
        raise BadRequestError("empty patch", [FieldError("", "a patch document is required")])
    patch = parse_document(raw, yaml_body=kind is PatchType.APPLY)
    if kind is PatchType.APPLY:
        if not write.manager:
            raise BadRequestError(
                "PATCH requests of type apply must supply a fieldManager",
                [FieldError("fieldManager", "required for apply patches")],
            )
        applied = _as_object(patch, "an apply configuration")
        _check_name(applied, name)
        try:
            entry = _get(ctx, name)
        except NotFoundError:
            return await _apply_create(ctx, caller, applied, write)
    else:
        entry = _get(ctx, name)
    _authorize_node(caller, name, entry)

    def change(stored: NodePassport, revision: int) -> NodePassport:
        before = _object_at(entry, stored, revision)
        if kind is PatchType.APPLY:
            # What the check sees of an apply: the object with the intent merged in.
            write.check_unknown(before, merge_patch(before, applied))
            applied_doc = passport_of(applied)
            if subresource == STATUS:
                applied_doc = {"metadata": {}, "status": _section(applied_doc, "status")}
            elif "status" in applied_doc:
                applied_doc = {k: v for k, v in applied_doc.items() if k != "status"}
            result = server_side_apply(
                stored.to_dict(),
                applied_doc,
                manager=str(write.manager),
                force=force,
                now=ctx.clock.now(),
                api_version=GROUP_VERSION,
                subresource=subresource,
            )
            new = _compose(stored, result, subresource=subresource, now=ctx.clock.now())
        else:
            patched = apply_patch(kind, copy.deepcopy(before), patch)
            if not isinstance(patched, dict):
                raise ValidationError(
                    "the patch does not leave an object",
                    [FieldError("", f"the result is a {type(patched).__name__}")],
                )
            given = _revision(_section(patched, "metadata").get("resourceVersion"), "metadata")
            if given is not None and given != revision:
                raise _conflict(name)
            _refuse_owned_changes(before, patched)
            write.check_unknown(before, patched)
            new = _compose(
                stored, passport_of(patched), subresource=subresource, now=ctx.clock.now()
            )
        return _restricted(ctx, caller, load_passport(new), stored)

    return await _rewrite(ctx, entry, change, write, subresource, user=user_info(caller))


async def _apply_create(
    ctx: ServerContext, caller: Principal, applied: dict[str, Any], write: _Write
) -> Response:
    """Server-side apply of a node not there yet: a create, the applier owning its fields."""
    write.check_unknown(None, applied)
    doc = server_side_apply(
        {},
        passport_of(applied),
        manager=str(write.manager),
        force=True,
        now=ctx.clock.now(),
        api_version=GROUP_VERSION,
    )
    passport = await anyio.to_thread.run_sync(load_passport, doc)
    entry, created = await _register(ctx, caller, passport, size=None, dry_run=write.dry_run)
    return _respond(entry_to_object(entry), write, 201 if created else 200)


_PATCH_SUMMARY = "JSON merge, JSON, strategic merge or apply (server-side) patch of a NodePassport"


@router.patch(
    f"/{RESOURCE}/{{name}}",
    summary=_PATCH_SUMMARY + " (its metadata and spec)",
    responses=_OBJECT,
    openapi_extra=_object_body(*_PATCH_MEDIA),
)
async def patch_nodepassport(
    name: NodeName,
    request: Request,
    caller: Caller,
    ctx: Ctx,
    write: WriteOptions,
    force: bool = False,
) -> Response:
    return await _patch(name, request, caller, ctx, write, None, force)


@router.patch(
    f"/{RESOURCE}/{{name}}/status",
    summary=_PATCH_SUMMARY + "'s status (counts as the node's heartbeat)",
    responses=_OBJECT,
    openapi_extra=_object_body(*_PATCH_MEDIA),
)
async def patch_nodepassport_status(
    name: NodeName,
    request: Request,
    caller: Caller,
    ctx: Ctx,
    write: WriteOptions,
    force: bool = False,
) -> Response:
    return await _patch(name, request, caller, ctx, write, STATUS, force)


# -- delete ----------------------------------------------------------------------------------


async def _delete_options(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    return _as_object(parse_document(raw, yaml_body=False), "DeleteOptions")


@router.delete(
    f"/{RESOURCE}/{{name}}",
    summary="Delete a NodePassport (preconditions: uid, resourceVersion)",
    responses=_OBJECT,
)
async def delete_nodepassport(
    name: NodeName, request: Request, caller: Caller, ctx: Ctx, write: WriteOptions
) -> Response:
    authorize_node_write(caller, name)
    options = await _delete_options(request)
    if options.get("dryRun") not in (None, [], ["All"]):
        raise BadRequestError("invalid dryRun", [FieldError("dryRun", "the only value is All")])
    write.dry_run = write.dry_run or bool(options.get("dryRun"))
    try:
        entry = _get(ctx, name)
    except NotFoundError:
        # An admin deleting a name no node holds frees the name its node left bound.
        if caller.role is Role.ADMIN and not write.dry_run and await ctx.registry.release(name):
            return _respond(_released(name), write)
        raise
    _authorize_node(caller, name, entry)
    preconditions = options.get("preconditions") or {}
    if not isinstance(preconditions, dict):
        raise BadRequestError("invalid preconditions", [FieldError("preconditions", "an object")])
    uid = preconditions.get("uid")
    if uid is not None and uid != entry.node_id:
        raise ConflictError(
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: {entry.node_id}"
        )
    expected = _revision(preconditions.get("resourceVersion"), "preconditions.resourceVersion")
    if expected is not None and expected != entry.resource_version:
        raise ConflictError(
            f"Precondition failed: ResourceVersion in precondition: {expected}, "
            f"ResourceVersion in object meta: {entry.resource_version}"
        )
    if write.dry_run:
        # What the delete would check: the admission policies that match DELETE (#12).
        stored = ctx.registry.sync.get(entry.node_id).passport
        admit(ctx.registry.sync.admission, "DELETE", None, stored, user_info(caller))
    else:
        try:
            # A node leaving by itself keeps its name and labels for when it comes back.
            await ctx.registry.deregister(
                entry.node_id,
                keep_binding=caller.role is Role.NODE,
                expected_revision=expected,
                user=user_info(caller),
            )
        except NotFoundError:
            raise _not_found(name) from None
        except ConflictError:
            raise _conflict(name) from None
    # The object as it was, as apiserver answers the delete of a custom resource.
    return _respond(entry_to_object(entry), write)


def _released(name: str) -> dict[str, Any]:
    """apiserver's answer to a delete that removed no object: a Success Status."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success",
        "message": f"name {name} released",
        "details": {"name": name, "group": API_GROUP, "kind": RESOURCE},
    }


@router.delete(
    f"/{RESOURCE}",
    summary="Delete every NodePassport the label and field selectors match",
    responses=_LIST,
)
async def delete_nodepassports(
    caller: Caller,
    ctx: Ctx,
    write: WriteOptions,
    label_selector: LabelSelectorQuery = None,
    field_selector: FieldSelectorQuery = None,
) -> Response:
    if caller.role is not Role.ADMIN:
        raise ForbiddenError(f"{caller} may not delete a collection of nodes")
    selector = query_selector(label_selector)
    fields = parse_field_selector(field_selector)
    deleted = (await select(ctx, selector, fields)).items
    if not write.dry_run:
        for entry in deleted:
            try:
                await ctx.registry.deregister(entry.node_id, user=user_info(caller))
            except NotFoundError:
                continue  # gone meanwhile: what was asked for
    doc = {
        "apiVersion": GROUP_VERSION,
        "kind": "NodePassportList",
        "metadata": {"resourceVersion": str(ctx.registry.sync.resource_version)},
        "items": [entry_to_object(e) for e in deleted],
    }
    return _respond(doc, write)
