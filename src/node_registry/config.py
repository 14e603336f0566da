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
from pydantic import BaseModel, ConfigDict, Field, model_validator
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


class ProtectionSettings(_Section):
    """Mass-failure protection: when this many nodes go silent together, blame the registry.

    Kubernetes treats a zone as disrupted at 55 % unhealthy nodes (and more than two);
    Eureka's self-preservation starts below 85 % of expected renewals.
    """

    enabled: bool = True
    unhealthy_fraction: float = Field(default=0.55, gt=0, le=1)
    min_unhealthy_nodes: int = Field(default=3, ge=1)


class WatchSettings(_Section):
    """How many past events a watcher can resume from before it is told to re-list."""

    history_size: int = Field(default=10_000, ge=1)


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
