"""Settings of the registry: ``config/node_registry.yaml``, overridden by environment variables.

Precedence, highest first: keyword arguments, ``NODE_REGISTRY_<SECTION>__<KEY>`` environment
variables (``NODE_REGISTRY_HEARTBEAT__TTL_SECONDS=45``), the YAML file, the defaults below.
A wrong value is refused at start-up with a ``ConfigError`` naming the key, never tolerated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from node_registry.errors import ConfigError

ENV_PREFIX = "NODE_REGISTRY_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeartbeatSettings(_Section):
    """Seed 2.3: how often nodes renew their lease and when silence turns into NotReady/Offline."""

    interval_seconds: float = Field(default=10, gt=0)
    not_ready_after_seconds: float = Field(default=20, gt=0)
    ttl_seconds: float = Field(default=30, gt=0)
    grace_period_seconds: float = Field(default=60, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.interval_seconds < self.not_ready_after_seconds:
            raise ValueError(
                f"interval_seconds ({self.interval_seconds}) must be less than "
                f"not_ready_after_seconds ({self.not_ready_after_seconds}), or every node "
                "would turn NotReady between two heartbeats"
            )
        if not self.not_ready_after_seconds < self.ttl_seconds:
            raise ValueError(
                f"ttl_seconds ({self.ttl_seconds}) must be greater than "
                f"not_ready_after_seconds ({self.not_ready_after_seconds})"
            )
        return self


class ControllerSettings(_Section):
    """The lifecycle controller's pass period (Kubernetes' node-monitor-period is 5 s)."""

    period_seconds: float = Field(default=5, gt=0)
    #: The registry's own event loop running this late counts as the registry being
    #: saturated: it could not hear nodes, so no node counts as silent for that time.
    saturation_lag_seconds: float = Field(default=1, gt=0)


class ProtectionSettings(_Section):
    """Mass-failure protection: when this many nodes go silent together, blame the registry.

    Kubernetes treats a zone as disrupted at 55 % unhealthy nodes (and more than two);
    Eureka's self-preservation starts below 85 % of expected renewals.
    """

    enabled: bool = True
    unhealthy_fraction: float = Field(default=0.55, gt=0, le=1)
    min_unhealthy_nodes: int = Field(default=3, ge=1)


class WatchSettings(_Section):
    """How far back a watcher can resume, and how far behind it may fall before it is dropped."""

    #: Past events kept: a watch may start from any version this recent (else 410, re-list).
    history_size: int = Field(default=10_000, ge=1)
    #: A watcher this many events behind the newest is dropped with 410 (an ERROR event)
    #: rather than buffered for: Kubernetes drops a watcher whose channel is full.
    backlog_events: int = Field(default=1_000, ge=1)


class StoreSettings(_Section):
    """Where nodes are kept, as a URL: ``memory://`` (the default) or ``etcd://host:2379/prefix``.

    ``etcd://host1:2379,host2:2379/ai_team/registry`` names every member of an etcd cluster
    (calls fail over between them) and the key prefix (default ``/ai_team/registry``). The
    ``etcd_*`` keys below matter only for etcd.
    """

    url: str = "memory://"
    #: A node that deregisters itself keeps its name this long: only its uid may register
    #: the name again, and gets back the protected labels operators gave it (a week).
    binding_retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    #: A call to etcd that takes longer counts as etcd being unreachable (503).
    etcd_timeout_seconds: float = Field(default=5, gt=0)
    #: With several etcd endpoints: a member that does not answer one attempt within this
    #: is left for the next member, and the call is tried there (within the timeout).
    etcd_attempt_timeout_seconds: float = Field(default=1, gt=0)
    #: How often a replica publishes the renewals it served and checks the controller seat.
    etcd_period_seconds: float = Field(default=1, gt=0)
    #: The elected replica compacts etcd's history to what it was this long ago (as the
    #: Kubernetes API server does every 5 minutes); 0 leaves compaction to etcd's own
    #: --auto-compaction-retention.
    etcd_compaction_interval_seconds: float = Field(default=300, ge=0)
    #: TLS to etcd: the CA of etcd's certificate; with cert and key, client-certificate auth.
    etcd_ca_file: Path | None = None
    etcd_cert_file: Path | None = None
    etcd_key_file: Path | None = None
    #: etcd's own authentication (``etcdctl user add``); the password best from the
    #: environment: NODE_REGISTRY_STORE__ETCD_PASSWORD.
    etcd_username: str | None = None
    etcd_password: SecretStr | None = None

    @model_validator(mode="after")
    def _etcd_pairs(self) -> Self:
        if (self.etcd_cert_file is None) != (self.etcd_key_file is None):
            raise ValueError("etcd_cert_file and etcd_key_file go together: give both or neither")
        if (self.etcd_username is None) != (self.etcd_password is None):
            raise ValueError("etcd_username and etcd_password go together: give both or neither")
        return self


class ServerSettings(_Section):
    """``node-registry serve``: address, access, limits of the HTTP API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: YAML file of bearer tokens and roles; none: no authentication (loopback only).
    tokens_file: Path | None = None
    #: Serve without tokens on a non-loopback address anyway (never in production).
    allow_insecure: bool = False
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    #: Request bodies above this are refused with 413. A passport is at most 256 KiB as
    #: JSON; YAML and whitespace get room, and it stays under etcd's 1.5 MiB request limit.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Labels under this prefix belong to the registry and operators; nodes may not set them.
    protected_label_prefix: str = "registry.ai-team.io/"
    #: How long a paginated list's snapshot stays readable through its continue token.
    list_snapshot_ttl_seconds: float = Field(default=300, gt=0)
    #: An idle watch stream gets a BOOKMARK this often, so its resume point stays fresh.
    bookmark_interval_seconds: float = Field(default=30, gt=0)
    #: Connections held at once. At the limit a new one replaces the longest-idle one;
    #: only when all are busy with a request is it refused (503). Kept below the file
    #: descriptor limit, which ``serve`` raises to fit.
    max_connections: int = Field(default=4096, ge=8, le=1_000_000)
    #: A request line and headers larger than this are refused (431).
    max_header_bytes: int = Field(default=64 * 1024, ge=4096, le=16 * 1024 * 1024)
    #: A request head not complete this long after it began is refused (408): slowloris.
    header_timeout_seconds: float = Field(default=10, gt=0)
    #: A connection whose client reads nothing this long while a response waits is cut.
    write_timeout_seconds: float = Field(default=30, gt=0)
    #: An idle keep-alive connection is closed after this long.
    keep_alive_seconds: int = Field(default=5, ge=1)
    #: Requests in progress at once per priority level; one more is answered 429 with
    #: Retry-After (Kubernetes' API priority and fairness). Node writes (lease renewals,
    #: status, registration) have the most seats, so reads are shed first.
    max_node_writes_inflight: int = Field(default=512, ge=1)
    max_reads_inflight: int = Field(default=64, ge=1)
    #: Everything else: /metrics, the dashboard's files, the API documents.
    max_other_inflight: int = Field(default=16, ge=1)
    #: Open watch streams at once (each holds a connection); one more gets 429.
    max_watch_streams: int = Field(default=2048, ge=1)
    #: While the event loop runs this late, every request but node writes and probes is
    #: answered 429: on one event loop a request waits in its queue, not on a seat, so
    #: the queue's delay is what says the registry is full.
    shed_reads_lag_seconds: float = Field(default=0.25, gt=0)
    #: Leases one ``POST leaserenewals`` may renew (a host running many agents batches
    #: their heartbeats); more is refused (422). The body limit applies as well.
    max_renewals_per_request: int = Field(default=1000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: give both or neither")
        return self


class AdmissionSettings(_Section):
    """CEL admission policies (docs/admission.md) every passport write must pass."""

    #: A YAML file of ``ValidatingAdmissionPolicy`` documents, or a directory of them
    #: (``*.yaml``); none: every write is admitted.
    policies_path: Path | None = None


class VerificationSettings(_Section):
    """How the verifier's results count (docs/verification.md)."""

    #: Whether only Verified claims match ``capability.<name>``: false counts claims not
    #: (yet) verified too; a Failed claim never counts either way.
    require: bool = False


class NodeTypeSettings(_Section):
    """Custom node types (docs/nodetypes.md), beside the ones registered through the API."""

    #: A YAML file of ``NodeType`` documents loaded at start-up (not stored: the file is
    #: read again at every start); types registered through the API are kept in the store.
    path: Path | None = None


class Settings(BaseSettings):
    """Every knob of the registry, validated as a whole."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    protection: ProtectionSettings = Field(default_factory=ProtectionSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    verification: VerificationSettings = Field(default_factory=VerificationSettings)
    node_types: NodeTypeSettings = Field(default_factory=NodeTypeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file (set per load by load_settings) ranks below the environment.
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)


def _check_yaml(path: Path) -> None:
    # YamlConfigSettingsSource reads a broken or non-mapping file silently as empty or fails
    # deep inside; check the file first so the error names it.
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings; ``path`` is the YAML file (none: defaults and environment)."""
    file = Path(path) if path is not None else None
    if file is not None:
        _check_yaml(file)
    # A subclass per load carries the file in its config, so concurrent loads don't share it.
    bound: type[Settings] = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": file}}
    )
    try:
        return bound(**overrides)
    except pydantic.ValidationError as exc:
        where = f" (file {file}, or NODE_REGISTRY_* environment variables)" if file else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid registry configuration{where}: {problems}") from None
