"""Who is calling and what they may do: bearer tokens with roles (Kubernetes' Node authorizer).

Roles: ``admin`` may do everything; ``reader`` may get, list, search and watch; ``node`` is
bound to one node name and may register, heartbeat, report status and deregister that node
only — nothing else, and never a label under the protected prefix (NodeRestriction);
``verifier`` may read as a reader does and write the verification subresource of any node
(the verifier's results: seed 3.2), and nothing else.

A node token binds the uid as well as the name (``authorize_node_registration``): it may
register its name only with the uid that name is bound to — the node registered under it,
or the one that deregistered itself from it (the registry remembers, see
``Registry.binding``) — and never a uid registered under another name, so it can neither
take over another node's record nor shed, by deregistering and coming back as a new uid,
the protected labels operators gave it. A token may also pin the uid (``uid:`` in the
tokens file). Uids are compared as UUIDs: any spelling of one is the same uid.
Without a tokens file every caller is an anonymous admin: for local use on loopback only.

The tokens file is read again when it changes (checked at most once a second, on a
request) and on SIGHUP (``node-registry serve``), so a token removed from it stops working
without a restart; a file that no longer reads keeps the tokens in force, with an error
logged. A file other users may read is warned about, at start and at every reload.
"""

from __future__ import annotations

import hashlib
import logging
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from uuid import UUID

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from node_registry.errors import ConfigError, ForbiddenError, UnauthorizedError
from node_registry.labels import dns1123_subdomain_errors
from node_registry.passport import NodePassport
from node_registry.passport.derived import derived_labels, effective_labels
from node_registry.registry.policies import UserInfo
from node_registry.store import Binding

log = logging.getLogger("node_registry.server")

#: How often a request may look at the tokens file for a change (one stat() call).
RELOAD_CHECK_SECONDS = 1.0


class Role(StrEnum):
    ADMIN = "admin"
    READER = "reader"
    NODE = "node"
    VERIFIER = "verifier"


class Action(StrEnum):
    READ = "read"
    WRITE_NODE = "write-node"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    node: str | None = None
    #: The node's uid, canonical (lower-case UUID text), when the tokens file pins it.
    uid: str | None = None

    def __str__(self) -> str:
        return f"{self.role.value} {self.name!r}" + (f" (node {self.node})" if self.node else "")


ANONYMOUS = Principal("anonymous", Role.ADMIN)


class _TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str = Field(min_length=16)
    role: Role
    name: str | None = None
    node: str | None = None
    uid: UUID | None = None

    @model_validator(mode="after")
    def _node_binding(self) -> _TokenEntry:
        if self.role is Role.NODE:
            if not self.node:
                raise ValueError("a token with role 'node' names its node: node: <name>")
            problems = dns1123_subdomain_errors(self.node)
            if problems:
                raise ValueError(f"node {self.node!r}: {'; '.join(problems)}")
        elif self.node or self.uid:
            raise ValueError(f"only role 'node' is bound to a node, not {self.role.value!r}")
        return self


class _TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[_TokenEntry] = Field(min_length=1)


class Authenticator:
    """Maps a bearer token to its principal.

    Tokens are kept and looked up by their SHA-256 digest: one dict lookup per request
    whatever the number of node tokens, and lookup timing reveals nothing about the tokens
    themselves (an attacker cannot steer the digest's bytes). See the module docstring for
    reloading; ``ticks`` is the monotonic clock that spaces the checks (tests move it).
    """

    def __init__(
        self,
        principals: dict[bytes, Principal] | None,
        *,
        path: Path | None = None,
        ticks: Callable[[], float] = time.monotonic,
    ) -> None:
        self._principals = principals
        self._path = path
        self._ticks = ticks
        self._checked_at = ticks()
        self._version: tuple[int, int, int] | None = None

    @property
    def enabled(self) -> bool:
        return self._principals is not None

    @classmethod
    def from_file(
        cls, path: Path | None, *, ticks: Callable[[], float] = time.monotonic
    ) -> Authenticator:
        if path is None:
            return cls(None)
        version = _version(path)  # before reading: a change while it is read is seen later
        authenticator = cls(_load(path), path=path, ticks=ticks)
        authenticator._version = version
        return authenticator

    def reload(self) -> bool:
        """Read the tokens file again; False (tokens unchanged, error logged) if it fails."""
        if self._path is None:
            return False
        self._checked_at = self._ticks()
        self._version = _version(self._path)
        try:
            principals = _load(self._path)
        except ConfigError as error:
            log.error("tokens file not reloaded, the tokens in force stay: %s", error)
            return False
        self._principals = principals
        log.warning("tokens file %s reloaded: %d tokens", self._path, len(principals))
        return True

    def _reload_if_changed(self) -> None:
        if self._path is None or self._ticks() - self._checked_at < RELOAD_CHECK_SECONDS:
            return
        self._checked_at = self._ticks()
        if _version(self._path) != self._version:
            self.reload()

    def authenticate(self, authorization: str | None) -> Principal:
        self._reload_if_changed()
        principals = self._principals
        if principals is None:
            return ANONYMOUS
        if not authorization:
            raise UnauthorizedError("this registry requires a bearer token (Authorization header)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
        found = principals.get(_digest(token.strip()))
        if found is None:
            raise UnauthorizedError("unknown bearer token")
        return found


def _version(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed file: inode (editors and ``mv`` replace it), size, mtime."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quote of the line: it may hold a token."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return type(error).__name__


def _load(path: Path) -> dict[bytes, Principal]:
    try:
        mode = path.stat().st_mode
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"tokens file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "tokens file %s can be read by %s (mode %s): anyone who can read it can use its "
            "tokens; chmod 600 it",
            path,
            "every user" if mode & stat.S_IROTH else "its group",
            oct(stat.S_IMODE(mode)),
        )
    try:
        parsed = _TokensFile.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid tokens file {path}: {problems}") from None
    principals: dict[bytes, Principal] = {}
    for index, entry in enumerate(parsed.tokens):
        digest = _digest(entry.token)
        if digest in principals:
            raise ConfigError(f"invalid tokens file {path}: tokens[{index}] is a duplicate")
        name = entry.name or entry.node or f"{entry.role.value}-{index}"
        uid = str(entry.uid) if entry.uid is not None else None
        principals[digest] = Principal(name, entry.role, entry.node, uid)
    return principals


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def user_info(principal: Principal) -> UserInfo:
    """The caller as admission policies see it (``request.userInfo``)."""
    return UserInfo(principal.name, principal.role.value)


def authorize_read(principal: Principal) -> None:
    if principal.role is Role.NODE:
        raise ForbiddenError(
            f"{principal} may only register, heartbeat, update and deregister its own node"
        )


def authorize_node_write(principal: Principal, name: str) -> None:
    """May ``principal`` change the node called ``name``?"""
    if principal.role is Role.ADMIN:
        return
    if principal.role in (Role.READER, Role.VERIFIER):
        raise ForbiddenError(f"{principal} may not change nodes")
    if principal.node != name:
        raise ForbiddenError(f"{principal} may not change node {name!r}, only {principal.node!r}")


def authorize_verification(principal: Principal) -> None:
    """May ``principal`` record verification results? Only a verifier or an admin: a node
    never vouches for its own capabilities."""
    if principal.role not in (Role.ADMIN, Role.VERIFIER):
        raise ForbiddenError(
            f"{principal} may not write verification results: only a verifier or an admin may"
        )


def authorize_admin(principal: Principal, what: str) -> None:
    if principal.role is not Role.ADMIN:
        raise ForbiddenError(f"{principal} may not {what}: only an admin may")


def authorize_node_id(principal: Principal, node_id: str) -> None:
    """May ``principal``, allowed to change the node by its name, change this uid's record?

    Only a token that pins a uid can say no here (the name was checked already).
    """
    if principal.uid is not None and principal.uid != node_id:
        raise ForbiddenError(f"{principal} is bound to uid {principal.uid}, not {node_id}")


def authorize_node_registration(
    principal: Principal,
    passport: NodePassport,
    *,
    stored_name: str | None,
    holder: str | None,
    binding: Binding | None,
) -> None:
    """May ``principal`` register ``passport``? Its name, and its uid, must be the token's.

    ``stored_name`` is the name the passport's uid is registered under now, ``holder`` the
    uid registered under the passport's name now, ``binding`` what the name's last node left
    when it deregistered itself. All uids here are canonical (``NodePassport.node_id``).
    """
    name, uid = passport.metadata.name, passport.node_id
    authorize_node_write(principal, name)
    if principal.role is not Role.NODE:
        return
    authorize_node_id(principal, uid)
    if stored_name is not None and stored_name != name:
        raise ForbiddenError(
            f"uid {uid} is registered as node {stored_name!r}: {principal} may not take "
            "over another node's record"
        )
    bound = holder if holder is not None else (binding.node_id if binding else None)
    if bound is not None and bound != uid:
        how = "is registered under it" if holder is not None else "deregistered itself from it"
        raise ForbiddenError(
            f"name {name!r} is bound to uid {bound}, which {how}: {principal} may register "
            f"it only with that uid (an admin can free the name: DELETE nodepassports/{name})"
        )


def restrict_protected_labels(
    passport: NodePassport, existing: NodePassport | None, binding: Binding | None, prefix: str
) -> NodePassport:
    """NodeRestriction: a node keeps the protected labels operators gave it and adds none.

    They are the ones of its record (``existing``), or, coming back after it deregistered
    itself, the ones its name's ``binding`` kept. Resources count too: each is also a label
    selectors match (``<resource>: <quantity>``), so a node may only repeat a protected one
    that is already there.
    """
    if existing is not None:
        labels = existing.metadata.labels
        stored_effective = effective_labels(existing)
    elif binding is not None:
        labels, stored_effective = binding.labels, binding.effective
    else:
        labels = stored_effective = {}
    stored = {k: v for k, v in labels.items() if k.startswith(prefix)}
    sent = {k: v for k, v in passport.metadata.labels.items() if k.startswith(prefix)}
    changed = sorted(k for k, v in sent.items() if stored.get(k) != v)
    changed += sorted(
        f"{k} (from {source})"
        for k, (v, source) in derived_labels(passport).items()
        if k.startswith(prefix) and k not in sent and stored_effective.get(k) != v
    )
    if changed:
        raise ForbiddenError(
            f"labels under {prefix!r} are set by the registry and operators, not by nodes: "
            f"{', '.join(changed)}"
        )
    if stored.keys() - sent.keys():
        metadata = passport.metadata.model_copy(
            update={"labels": {**passport.metadata.labels, **stored}}
        )
        passport = passport.model_copy(update={"metadata": metadata})
    return passport
