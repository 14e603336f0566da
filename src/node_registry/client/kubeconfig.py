"""Connection settings from a kubeconfig, as kubectl reads them: server, token, CA, TLS checks.

Files: ``--kubeconfig`` (one file, which must exist), else ``KUBECONFIG`` (a list joined by
``os.pathsep``; files that do not exist are skipped), else ``~/.kube/config``. Several files
merge as kubectl merges them: the first file to set ``current-context`` wins, and the first
to define a cluster, user or context of a name wins. Paths in a file (``certificate-authority``,
``tokenFile``) are relative to that file.

``resolve`` applies the CLI's precedence (flags > environment > kubeconfig). A kubeconfig is
read when it was named (``--kubeconfig``, ``--context``, ``KUBECONFIG``), or when no server was
given at all and ``~/.kube/config`` exists; its token goes only to the server it names unless a
kubeconfig was named explicitly, so a person's cluster credentials never reach a registry they
pointed at with ``--server`` alone.

Every problem is a ``ConfigError`` naming the file and the missing or bad piece.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from node_registry.client.settings import TOKEN_ENV, URL_ENV
from node_registry.errors import ConfigError

KUBECONFIG_ENV = "KUBECONFIG"
#: Ways a kubeconfig user may authenticate that the registry's clients do not speak.
_UNSUPPORTED_AUTH = ("client-certificate", "client-certificate-data", "exec", "auth-provider")

Verify = bool | str | ssl.SSLContext


@dataclass(frozen=True, slots=True)
class KubeContext:
    """What one context of a kubeconfig says about reaching its cluster."""

    name: str
    server: str
    token: str | None = None
    #: A CA bundle path, or a context built from certificate-authority-data; True: system CAs.
    verify: Verify = True
    #: The file(s) it came from, for messages.
    source: str = ""


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the CLI connects and with what: the result of ``resolve``."""

    server: str | None
    token: str | None
    verify: Verify = True
    #: The kubeconfig context used, if any (for messages).
    context: KubeContext | None = field(default=None, compare=False)


@dataclass
class _Merged:
    files: list[Path]
    current_context: tuple[str, Path] | None = None
    clusters: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    users: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    contexts: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return os.pathsep.join(str(f) for f in self.files)


def kubeconfig_files(
    explicit: str | Path | None, env: Mapping[str, str] | None = None
) -> list[Path]:
    """The files to read, in merge order (see the module docstring); may be empty."""
    env = os.environ if env is None else env
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"kubeconfig {path}: no such file")
        return [path]
    listed = env.get(KUBECONFIG_ENV)
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p and Path(p).is_file()]
    home = env.get("HOME")
    default = (Path(home) if home else Path.home()) / ".kube" / "config"
    return [default] if default.is_file() else []


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"kubeconfig {path}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path}: not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path}: not a kubeconfig (a YAML mapping)")
    return doc


def _named(doc: dict[str, Any], section: str, key: str, path: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    items = doc.get(section) or []
    if not isinstance(items, list):
        raise ConfigError(f"kubeconfig {path}: {section} must be a list")
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"kubeconfig {path}: {section}[{index}] has no name")
        body = item.get(key) or {}
        if not isinstance(body, dict):
            raise ConfigError(
                f"kubeconfig {path}: {section}[{index}] ({name}): {key} must be a map"
            )
        found.setdefault(name, body)
    return found


def _merge(files: list[Path]) -> _Merged:
    merged = _Merged(files)
    for path in files:
        doc = _read(path)
        current = doc.get("current-context")
        if current and merged.current_context is None:
            merged.current_context = (str(current), path)
        for section, key, target in (
            ("clusters", "cluster", merged.clusters),
            ("users", "user", merged.users),
            ("contexts", "context", merged.contexts),
        ):
            for name, body in _named(doc, section, key, path).items():
                target.setdefault(name, (body, path))
    return merged


def _relative(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base.parent / path


def _verify(cluster: dict[str, Any], path: Path, where: str) -> Verify:
    if cluster.get("insecure-skip-tls-verify"):
        return False
    data = cluster.get("certificate-authority-data")
    if data:
        try:
            pem = base64.b64decode(str(data), validate=True).decode("ascii")
            return ssl.create_default_context(cadata=pem)
        except (binascii.Error, UnicodeDecodeError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"kubeconfig {path}: {where}: certificate-authority-data is not a base64 PEM "
                f"CA bundle ({exc})"
            ) from None
    ca = cluster.get("certificate-authority")
    if ca:
        ca_path = _relative(str(ca), path)
        if not ca_path.is_file():
            raise ConfigError(
                f"kubeconfig {path}: {where}: certificate-authority {ca_path}: no such file"
            )
        return str(ca_path)
    return True


def _token(user: dict[str, Any], path: Path, where: str) -> str | None:
    token = user.get("token")
    if token:
        return str(token)
    token_file = user.get("tokenFile")
    if token_file:
        file = _relative(str(token_file), path)
        try:
            return file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(
                f"kubeconfig {path}: {where}: tokenFile {file}: cannot read it: {exc.strerror}"
            ) from None
    other = [key for key in _UNSUPPORTED_AUTH if user.get(key)]
    if other:
        raise ConfigError(
            f"kubeconfig {path}: {where} authenticates with {', '.join(other)}, which the "
            "registry's clients do not support: give it a token (or tokenFile)"
        )
    return None


def load_context(
    explicit: str | Path | None = None,
    context: str | None = None,
    env: Mapping[str, str] | None = None,
) -> KubeContext | None:
    """The named (or current) context of the kubeconfig; None when there is no kubeconfig."""
    files = kubeconfig_files(explicit, env)
    if not files:
        if context:
            raise ConfigError(
                f"no kubeconfig to find context {context!r} in (give --kubeconfig, set "
                f"{KUBECONFIG_ENV}, or write ~/.kube/config)"
            )
        return None
    merged = _merge(files)
    if context is None:
        if merged.current_context is None:
            raise ConfigError(
                f"kubeconfig {merged.source}: no current-context is set; give --context "
                f"(contexts: {', '.join(sorted(merged.contexts)) or 'none'})"
            )
        context = merged.current_context[0]
    if context not in merged.contexts:
        raise ConfigError(
            f"kubeconfig {merged.source}: context {context!r} not found "
            f"(contexts: {', '.join(sorted(merged.contexts)) or 'none'})"
        )
    body, path = merged.contexts[context]
    cluster_name = body.get("cluster")
    if not cluster_name:
        raise ConfigError(f"kubeconfig {path}: context {context!r} names no cluster")
    if cluster_name not in merged.clusters:
        raise ConfigError(
            f"kubeconfig {merged.source}: cluster {cluster_name!r} of context {context!r} not found"
        )
    cluster, cluster_path = merged.clusters[cluster_name]
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"kubeconfig {cluster_path}: cluster {cluster_name!r} has no server")
    token: str | None = None
    user_name = body.get("user")
    if user_name:
        if user_name not in merged.users:
            raise ConfigError(
                f"kubeconfig {merged.source}: user {user_name!r} of context {context!r} not found"
            )
        user, user_path = merged.users[user_name]
        token = _token(user, user_path, f"user {user_name!r}")
    return KubeContext(
        name=context,
        server=str(server).rstrip("/"),
        token=token,
        verify=_verify(cluster, cluster_path, f"cluster {cluster_name!r}"),
        source=merged.source,
    )


def resolve(
    *,
    server: str | None,
    token: str | None,
    certificate_authority: str | None = None,
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Connection:
    """The CLI's connection: flags (and their environment variables) over the kubeconfig.

    ``server``/``token`` are what the flags or ``NODE_REGISTRY_URL``/``_TOKEN`` gave (None:
    neither did); see the module docstring for when the kubeconfig is read.
    """
    env = os.environ if env is None else env
    named = bool(kubeconfig or context or env.get(KUBECONFIG_ENV))
    kube = load_context(kubeconfig, context, env) if named or not server else None
    if kube is None:
        return Connection(server, token, certificate_authority or True)
    return Connection(
        server or kube.server,
        token if token is not None else kube.token,
        certificate_authority or kube.verify,
        kube,
    )


__all__ = [
    "KUBECONFIG_ENV",
    "TOKEN_ENV",
    "URL_ENV",
    "Connection",
    "KubeContext",
    "kubeconfig_files",
    "load_context",
    "resolve",
]
