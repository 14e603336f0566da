"""``load_settings``: defaults, the shipped file, environment and keyword overrides, refusals."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from node_registry import ConfigError, FakeClock, Registry, RegistryError, Settings, load_settings

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "node_registry.yaml"

# Seed 2.3: heartbeat every 10 s, NotReady after 20 s, Offline after 30 s (TTL), removed 60 s later.
SEED_HEARTBEAT = {
    "interval_seconds": 10,
    "not_ready_after_seconds": 20,
    "ttl_seconds": 30,
    "grace_period_seconds": 60,
}
DEFAULTS: dict[str, Any] = {
    "heartbeat": SEED_HEARTBEAT,
    "controller": {"period_seconds": 5, "saturation_lag_seconds": 1},
    "protection": {"enabled": True, "unhealthy_fraction": 0.55, "min_unhealthy_nodes": 3},
    "watch": {"history_size": 10_000, "backlog_events": 1_000},
    "store": {
        "url": "memory://",
        "binding_retention_seconds": 604800,
        "etcd_timeout_seconds": 5,
        "etcd_attempt_timeout_seconds": 1,
        "etcd_period_seconds": 1,
        "etcd_compaction_interval_seconds": 300,
        "etcd_ca_file": None,
        "etcd_cert_file": None,
        "etcd_key_file": None,
        "etcd_username": None,
        "etcd_password": None,
    },
    "server": {
        "host": "127.0.0.1",
        "port": 8080,
        "tokens_file": None,
        "allow_insecure": False,
        "tls_certfile": None,
        "tls_keyfile": None,
        "max_body_bytes": 1024 * 1024,
        "protected_label_prefix": "registry.ai-team.io/",
        "list_snapshot_ttl_seconds": 300,
        "bookmark_interval_seconds": 30,
        "max_connections": 4096,
        "max_header_bytes": 64 * 1024,
        "header_timeout_seconds": 10,
        "write_timeout_seconds": 30,
        "keep_alive_seconds": 5,
        "max_node_writes_inflight": 512,
        "max_reads_inflight": 64,
        "max_other_inflight": 16,
        "max_watch_streams": 2048,
        "shed_reads_lag_seconds": 0.25,
        "max_renewals_per_request": 1000,
    },
    # #12: CEL admission, how verification results count, custom node types from a file.
    "admission": {"policies_path": None},
    "verification": {"require": False},
    "node_types": {"path": None},
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NODE_REGISTRY_* variable of the machine running the tests may leak into them."""
    for name in list(os.environ):
        if name.upper().startswith("NODE_REGISTRY_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "node_registry.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path | None = None, **overrides: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(path, **overrides)
    return info.value


# -- what loads ------------------------------------------------------------------------


def test_defaults_are_the_seeds() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.model_dump() == DEFAULTS
    assert settings.heartbeat.interval_seconds == 10
    assert settings.heartbeat.not_ready_after_seconds == 20
    assert settings.heartbeat.ttl_seconds == 30
    assert settings.heartbeat.grace_period_seconds == 60


def test_the_shipped_file_loads_and_equals_the_defaults() -> None:
    assert load_settings(SHIPPED).model_dump() == load_settings().model_dump() == DEFAULTS


def test_the_shipped_file_names_every_setting() -> None:
    # The shipped file is the reference an operator edits: it spells out every key.
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert {s: set(keys) for s, keys in data.items()} == {
        s: set(keys) for s, keys in DEFAULTS.items()
    }


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "heartbeat:\n  ttl_seconds: 45\n"))
    assert settings.heartbeat.ttl_seconds == 45
    assert settings.heartbeat.interval_seconds == 10
    assert settings.watch.history_size == 10_000


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "# nothing set\n")).model_dump() == DEFAULTS


def test_a_path_may_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "watch:\n  history_size: 5\n")
    assert load_settings(str(path)).watch.history_size == 5


def test_the_file_of_one_load_does_not_leak_into_the_next(tmp_path: Path) -> None:
    one = load_settings(write(tmp_path, "heartbeat:\n  ttl_seconds: 45\n", "one.yaml"))
    two = load_settings(write(tmp_path, "heartbeat:\n  ttl_seconds: 50\n", "two.yaml"))
    assert (one.heartbeat.ttl_seconds, two.heartbeat.ttl_seconds) == (45, 50)
    assert load_settings().heartbeat.ttl_seconds == 30


def test_env_beats_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_REGISTRY_HEARTBEAT__TTL_SECONDS", "45")
    settings = load_settings(SHIPPED)
    assert settings.heartbeat.ttl_seconds == 45
    assert settings.heartbeat.not_ready_after_seconds == 20  # the rest still from the file


def test_env_and_file_merge_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_REGISTRY_HEARTBEAT__INTERVAL_SECONDS", "5")
    monkeypatch.setenv("NODE_REGISTRY_WATCH__HISTORY_SIZE", "100")
    settings = load_settings(write(tmp_path, "heartbeat:\n  ttl_seconds: 45\n"))
    assert settings.heartbeat.interval_seconds == 5
    assert settings.heartbeat.ttl_seconds == 45
    assert settings.watch.history_size == 100


def test_env_applies_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_REGISTRY_PROTECTION__ENABLED", "false")
    assert load_settings().protection.enabled is False


def test_keyword_overrides_beat_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "heartbeat:\n  interval_seconds: 7\n  ttl_seconds: 40\n")
    monkeypatch.setenv("NODE_REGISTRY_HEARTBEAT__TTL_SECONDS", "45")
    settings = load_settings(path, heartbeat={"ttl_seconds": 50})
    assert settings.heartbeat.ttl_seconds == 50
    assert settings.heartbeat.interval_seconds == 7  # the section is merged, not replaced


def test_keyword_overrides_alone() -> None:
    settings = load_settings(watch={"history_size": 3}, protection={"enabled": False})
    assert settings.watch.history_size == 3
    assert settings.protection.enabled is False
    assert settings.heartbeat.ttl_seconds == 30


def test_registry_from_config_uses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "heartbeat:\n  ttl_seconds: 45\n")
    registry = Registry.from_config(path, clock=FakeClock())
    assert registry.ttl_seconds == 45


# -- what is refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("heartbeat:\n  ttl_seconds: 15\n", ["heartbeat", "ttl_seconds (15.0)", "greater than"]),
        ("heartbeat:\n  ttl_seconds: 20\n", ["heartbeat", "ttl_seconds (20.0)", "greater than"]),
        (
            "heartbeat:\n  interval_seconds: 20\n",
            ["heartbeat", "interval_seconds (20.0)", "less than not_ready_after_seconds"],
        ),
        (
            "heartbeat:\n  interval_seconds: 25\n  ttl_seconds: 40\n",
            ["interval_seconds (25.0)", "NotReady between two heartbeats"],
        ),
        ("heartbeat:\n  interval_seconds: -1\n", ["heartbeat.interval_seconds", "greater than 0"]),
        ("heartbeat:\n  interval_seconds: 0\n", ["heartbeat.interval_seconds", "greater than 0"]),
        ("heartbeat:\n  ttl_seconds: -30\n", ["heartbeat.ttl_seconds", "greater than 0"]),
        (
            "heartbeat:\n  not_ready_after_seconds: -20\n",
            ["heartbeat.not_ready_after_seconds", "greater than 0"],
        ),
        (
            "heartbeat:\n  grace_period_seconds: -1\n",
            ["heartbeat.grace_period_seconds", "greater than or equal to 0"],
        ),
        ("controller:\n  period_seconds: -5\n", ["controller.period_seconds", "greater than 0"]),
        ("watch:\n  history_size: -1\n", ["watch.history_size", "greater than or equal to 1"]),
        (
            "protection:\n  min_unhealthy_nodes: -3\n",
            ["protection.min_unhealthy_nodes", "greater than or equal to 1"],
        ),
        (
            "protection:\n  unhealthy_fraction: -0.5\n",
            ["protection.unhealthy_fraction", "greater than 0"],
        ),
        (
            "protection:\n  unhealthy_fraction: 1.5\n",
            ["protection.unhealthy_fraction", "less than or equal to 1"],
        ),
        ("heartbeat:\n  ttl_seconds: soon\n", ["heartbeat.ttl_seconds", "valid number"]),
        ("protection:\n  enabled: maybe\n", ["protection.enabled", "valid boolean"]),
        ("bogus: 1\n", ["bogus", "Extra inputs are not permitted"]),
        ("heartbeat:\n  bogus: 1\n", ["heartbeat.bogus", "Extra inputs are not permitted"]),
        ("heartbeat:\n  ttl: 45\n", ["heartbeat.ttl", "Extra inputs are not permitted"]),
        ("heartbeat: 5\n", ["heartbeat", "valid dictionary"]),
    ],
    ids=[
        "ttl-below-not-ready",
        "ttl-equal-not-ready",
        "interval-equal-not-ready",
        "interval-above-not-ready",
        "interval-negative",
        "interval-zero",
        "ttl-negative",
        "not-ready-negative",
        "grace-negative",
        "controller-period-negative",
        "history-negative",
        "min-unhealthy-negative",
        "fraction-negative",
        "fraction-above-one",
        "ttl-not-a-number",
        "enabled-not-a-boolean",
        "unknown-top-level-key",
        "unknown-nested-key",
        "misspelt-key",
        "section-not-a-mapping",
    ],
)
def test_a_wrong_value_in_the_file_is_refused_naming_the_key(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    path = write(tmp_path, text)
    exc = refused(path)
    assert isinstance(exc, RegistryError)
    message = str(exc)
    assert message.startswith(f"invalid registry configuration (file {path}, or NODE_REGISTRY_")
    assert "environment variables): " in message
    for name in names:
        assert name in message, message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- heartbeat\n- watch\n", "must hold a mapping, not list"),
        ("just a string\n", "must hold a mapping, not str"),
        ("42\n", "must hold a mapping, not int"),
        ("heartbeat: [\n", "is not valid YAML"),
        ("heartbeat:\n  ttl_seconds: 30\n ttl_seconds: 40\n", "is not valid YAML"),
        ("\tbad: tab\n", "is not valid YAML"),
    ],
    ids=["list", "string", "number", "unclosed-bracket", "bad-indent", "tab"],
)
def test_a_file_that_is_not_a_yaml_mapping_is_refused(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    message = str(refused(path))
    assert str(path) in message
    assert fragment in message


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    message = str(refused(path))
    assert message == f"cannot read config file {path}: No such file or directory"


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    assert "cannot read config file" in str(refused(tmp_path))


@pytest.mark.parametrize(
    ("name", "value", "names"),
    [
        ("NODE_REGISTRY_HEARTBEAT__TTL_SECONDS", "15", ["ttl_seconds (15.0)", "greater than"]),
        ("NODE_REGISTRY_HEARTBEAT__TTL_SECONDS", "-1", ["heartbeat.ttl_seconds", "greater than 0"]),
        ("NODE_REGISTRY_HEARTBEAT__TTL_SECONDS", "abc", ["heartbeat.ttl_seconds", "valid number"]),
        ("NODE_REGISTRY_HEARTBEAT__BOGUS", "1", ["heartbeat.bogus", "Extra inputs"]),
        ("NODE_REGISTRY_WATCH__HISTORY_SIZE", "0", ["watch.history_size", "greater than or equal"]),
    ],
    ids=["ttl-below-not-ready", "ttl-negative", "ttl-not-a-number", "unknown-nested", "history"],
)
def test_a_wrong_environment_variable_is_refused_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, names: list[str]
) -> None:
    monkeypatch.setenv(name, value)
    message = str(refused())
    assert message.startswith("invalid registry configuration: ")
    for part in names:
        assert part in message, message


def test_an_unknown_top_level_environment_variable_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pydantic-settings' environment source looks up only the names of declared fields.

    ``NODE_REGISTRY_BOGUS`` names no field, so it is never read and ``extra="forbid"`` never
    sees it (the environment is shared with every other program, so this is the usual
    behaviour). A variable *under* a declared section, ``NODE_REGISTRY_HEARTBEAT__BOGUS``, is
    read into that section and refused (see the test above). A misspelt delimiter
    (``NODE_REGISTRY_HEARTBEAT_TTL_SECONDS``, one underscore) is ignored the same way.
    """
    monkeypatch.setenv("NODE_REGISTRY_BOGUS", "1")
    monkeypatch.setenv("NODE_REGISTRY_HEARTBEAT_TTL_SECONDS", "45")
    assert load_settings().model_dump() == DEFAULTS
    assert load_settings(SHIPPED).model_dump() == DEFAULTS


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"bogus": 1}, ["bogus", "Extra inputs are not permitted"]),
        ({"heartbeat": {"bogus": 1}}, ["heartbeat.bogus", "Extra inputs"]),
        ({"heartbeat": {"ttl_seconds": 0}}, ["heartbeat.ttl_seconds", "greater than 0"]),
        ({"heartbeat": {"ttl_seconds": 20}}, ["ttl_seconds (20.0)", "greater than"]),
        ({"heartbeat": {"interval_seconds": 30}}, ["interval_seconds (30.0)", "less than"]),
        ({"watch": {"history_size": -5}}, ["watch.history_size", "greater than or equal to 1"]),
        ({"heartbeat": 5}, ["heartbeat", "valid dictionary"]),
    ],
    ids=["unknown", "unknown-nested", "ttl-zero", "ttl-order", "interval-order", "history", "type"],
)
def test_a_wrong_keyword_override_is_refused_naming_the_key(
    overrides: dict[str, Any], names: list[str]
) -> None:
    message = str(refused(None, **overrides))
    for name in names:
        assert name in message, message


def test_config_errors_hide_pydantic(tmp_path: Path) -> None:
    exc = refused(write(tmp_path, "heartbeat:\n  ttl_seconds: -1\n"))
    assert exc.__cause__ is None
    assert exc.__suppress_context__
    assert "pydantic" not in str(exc)
    assert "errors.pydantic.dev" not in str(exc)
