"""Who is calling and what they may do: bearer tokens with roles (Kubernetes' Node authorizer).

Roles: ``admin`` may do everything; ``reader`` may get, list, search and watch; ``node`` is
bound to one node name and may register, heartbeat, report status and deregister that node
only — nothing else, and never a label under the protected prefix (NodeRestriction).
Without a tokens file every caller is an anonymous admin: for local use on loopback only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from node_registry.errors import ConfigError, ForbiddenError, UnauthorizedError
from node_registry.labels import dns1123_subdomain_errors


class Role(StrEnum):
    ADMIN = "admin"
    READER = "reader"
    NODE = "node"


class Action(StrEnum):
    READ = "read"
    WRITE_NODE = "write-node"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    node: str | None = None

    def __str__(self) -> str:
        return f"{self.role.value} {self.name!r}" + (f" (node {self.node})" if self.node else "")


ANONYMOUS = Principal("anonymous", Role.ADMIN)


class _TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str = Field(min_length=16)
    role: Role
    name: str | None = None
    node: str | None = None

    @model_validator(mode="after")
    def _node_binding(self) -> _TokenEntry:
        if self.role is Role.NODE:
            if not self.node:
                raise ValueError("a token with role 'node' names its node: node: <name>")
            problems = dns1123_subdomain_errors(self.node)
            if problems:
                raise ValueError(f"node {self.node!r}: {'; '.join(problems)}")
        elif self.node:
            raise ValueError(f"only role 'node' is bound to a node, not {self.role.value!r}")
        return self


class _TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[_TokenEntry] = Field(min_length=1)


class Authenticator:
    """Maps a bearer token to its principal.

    Tokens are kept and looked up by their SHA-256 digest: one dict lookup per request
    whatever the number of node tokens, and lookup timing reveals nothing about the tokens
    themselves (an attacker cannot steer the digest's bytes).
    """

    def __init__(self, principals: dict[bytes, Principal] | None) -> None:
        self._principals = principals

    @property
    def enabled(self) -> bool:
        return self._principals is not None

    @classmethod
    def from_file(cls, path: Path | None) -> Authenticator:
        if path is None:
            return cls(None)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"tokens file {path} is not valid YAML: {exc}") from None
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
            principals[digest] = Principal(name, entry.role, entry.node)
        return cls(principals)

    def authenticate(self, authorization: str | None) -> Principal:
        if self._principals is None:
            return ANONYMOUS
        if not authorization:
            raise UnauthorizedError("this registry requires a bearer token (Authorization header)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
        found = self._principals.get(_digest(token.strip()))
        if found is None:
            raise UnauthorizedError("unknown bearer token")
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def authorize_read(principal: Principal) -> None:
    if principal.role is Role.NODE:
        raise ForbiddenError(
            f"{principal} may only register, heartbeat, update and deregister its own node"
        )


def authorize_node_write(principal: Principal, name: str) -> None:
    """May ``principal`` change the node called ``name``?"""
    if principal.role is Role.ADMIN:
        return
    if principal.role is Role.READER:
        raise ForbiddenError(f"{principal} may not change nodes")
    if principal.node != name:
        raise ForbiddenError(f"{principal} may not change node {name!r}, only {principal.node!r}")
