"""kubectl-style commands (get, describe, apply, delete, watch, agent) against a real server.

The registry runs under uvicorn in this process (``live_server``) on a FakeClock, so the
tests move time by hand; the CLI runs as a real subprocess of the installed script, with no
NODE_REGISTRY_* variable leaking in from the environment running the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from conftest import passport, probe_result
from live_server import free_port, make_app, serve
from node_registry import FakeClock, Registry
from node_registry.client import RegistryClient
from node_registry.kube.objects import NodePassportList, NodePassportObject
from node_registry.kube.table import human_duration

TIMEOUT = 30
#: The FakeClock starts an hour ago, so the CLI (on the real clock) sees nodes an hour old.
HOUR_AGO = 3600 + 30
NOT_READY_AFTER = 20
READER_TOKEN = "reader-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"


def _command() -> list[str]:
    script = shutil.which("node-registry", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "node_registry"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_REGISTRY_")}
    env.pop("KUBECONFIG", None)  # a kubeconfig of the machine's must not steer the CLI
    # The registry under test is on loopback: never through a proxy from the environment.
    env.update(COLUMNS="200", NO_COLOR="1", NO_PROXY="127.0.0.1,localhost", **extra)
    return env


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env or _env(),
    )


def run_all(
    *commands: tuple[str, ...], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Independent invocations side by side (each CLI start costs most of a second)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run(*args, env=env), commands))


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure contract: exit 1, nothing on stdout, one ``error: ...`` line on stderr."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


@dataclass
class Live:
    url: str
    clock: FakeClock
    app: FastAPI

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.registry.sync
        return registry

    def client(self, token: str | None = None) -> RegistryClient:
        # Plain HTTP: skip loading the CA bundle (~80 ms a client).
        return RegistryClient(self.url, token=token, verify=False)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(*args, "--server", self.url, stdin=stdin)

    def cli_all(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        return run_all(*((*args, "--server", self.url) for args in commands))

    def silence(self, seconds: float, *keep_alive: str) -> None:
        """Move time on; the named nodes heartbeat meanwhile; the controller records it all."""
        self.clock.advance(seconds)
        with self.client() as client:
            for name in keep_alive:
                client.heartbeat(name)
        self.registry.reconcile()


@contextlib.contextmanager
def live_registry(**settings: Any) -> Iterator[Live]:
    clock = FakeClock(datetime.now(UTC) - timedelta(seconds=HOUR_AGO))
    app = make_app(clock=clock, **settings)
    with serve(app) as url:
        yield Live(url, clock, app)


@pytest.fixture
def live() -> Iterator[Live]:
    with live_registry() as registry:
        yield registry


@pytest.fixture
def fleet(live: Live) -> Live:
    """coder-01 (ALIVE, 2 tasks), coder-02 and postgres-01 (NOT_READY)."""
    with live.client() as client:
        client.register(passport("coder-01", capabilities=("code_generation", "python")))
        client.register(
            passport("coder-02", capabilities=("code_generation",), resources={"memory": "2Gi"})
        )
        client.register(
            passport(
                "postgres-01",
                kind="storage",
                capabilities=("sql",),
                labels={"zone": "us-east-1"},
                resources={"cpu": "8", "memory": "32Gi"},
            )
        )
        client.update_status("coder-01", current_tasks=2)
    live.silence(NOT_READY_AFTER + 5, "coder-01")
    return live


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (5, "5s"),
        (119, "119s"),
        (200, "3m20s"),
        (300, "5m"),
        (3630, "60m"),
        (3 * 3600 + 600, "3h10m"),
        (20 * 3600, "20h"),
        (4 * 86400, "4d"),
        (4 * 86400 + 7200, "4d2h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400 + 5 * 86400, "3y5d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_read_like_kubectl(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.strip().splitlines()]


# -- get -----------------------------------------------------------------------------------


def test_get_nodes_prints_kubectl_columns(fleet: Live) -> None:
    result = fleet.cli("get", "nodes")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert table == [
        ["NAME", "KIND", "HEALTH", "PHASE", "TASKS", "AGE"],
        ["coder-01", "agent", "ALIVE", "Running", "2/4", "60m"],
        ["coder-02", "agent", "NOT_READY", "NotReady", "0/4", "60m"],
        ["postgres-01", "storage", "NOT_READY", "NotReady", "0/4", "60m"],
    ]
    # Plain aligned columns (no box drawing): every value starts under its header.
    lines = result.stdout.splitlines()
    for header in ("KIND", "HEALTH", "PHASE", "TASKS", "AGE"):
        column = lines[0].index(header)
        for line in lines[1:]:
            assert line[column - 1] == " ", (header, line)
            assert line[column] != " ", (header, line)


def test_get_nodes_wide(fleet: Live) -> None:
    result = fleet.cli("get", "nodes", "-o", "wide")
    assert result.returncode == 0, result.stderr
    header, coder, _, postgres = rows(result.stdout)
    assert header[6:] == ["CAPABILITIES", "ZONE", "ENDPOINT", "LAST-SEEN"]
    assert coder[6:] == [
        "code_generation,python",
        "eu-west-1",
        "mindbus:amqp://bus:5672#coder-01",
        "60m",
        "ago",
    ]
    assert postgres[6:9] == ["sql", "us-east-1", "mindbus:amqp://bus:5672#postgres-01"]
    assert postgres[9:] == ["60m", "ago"]  # last seen an hour ago, when it registered


def test_get_nodes_json_is_the_nodepassport_list(fleet: Live) -> None:
    result = fleet.cli("get", "nodes", "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["apiVersion"], doc["kind"]) == ("ai_team.io/v1", "NodePassportList")
    listed = NodePassportList.model_validate(doc)
    assert [i.metadata.name for i in listed.items] == ["coder-01", "coder-02", "postgres-01"]
    assert [i.status.schedulable for i in listed.items] == [True, False, False]
    assert [i.status.health_state for i in listed.items] == ["ALIVE", "NOT_READY", "NOT_READY"]
    assert int(listed.metadata.resource_version or 0) > 0
    # What kubectl get np -o json prints, item for item.
    served = httpx.get(f"{fleet.url}/apis/ai_team.io/v1/nodepassports").json()
    assert [i["metadata"]["uid"] for i in doc["items"]] == [
        i["metadata"]["uid"] for i in served["items"]
    ]
    assert doc["items"][0]["status"] == served["items"][0]["status"]


def test_get_one_node_as_yaml_is_the_nodepassport(fleet: Live) -> None:
    result = fleet.cli("get", "node", "postgres-01", "-o", "yaml")
    assert result.returncode == 0, result.stderr
    obj = NodePassportObject.model_validate(yaml.safe_load(result.stdout))
    assert obj.kind == "NodePassport"
    assert obj.metadata.node_type.value == "storage"
    assert obj.spec.resources == {"cpu": "8", "memory": "32Gi"}
    assert obj.status.health_state == "NOT_READY"


def test_get_nodes_names_selector_kind_healthy(fleet: Live) -> None:
    queries: dict[tuple[str, ...], list[str]] = {
        ("-l", "capability.code_generation"): ["coder-01", "coder-02"],
        ("-l", "memory>4Gi,zone=eu-west-1"): ["coder-01"],
        ("--selector", "zone notin (eu-west-1)", "--kind", "storage"): ["postgres-01"],
        ("--kind", "agent", "--healthy", "-l", "capability.python"): ["coder-01"],
    }
    results = fleet.cli_all(*(("get", "nodes", "-o", "name", *q) for q in queries))
    for (query, expected), result in zip(queries.items(), results, strict=True):
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [f"node/{n}" for n in expected], query


def test_get_nodes_when_nothing_matches(fleet: Live) -> None:
    result = fleet.cli("get", "nodes", "-l", "zone=nowhere")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr.strip() == "No resources found."


def test_get_named_nodes_reports_the_missing_one(fleet: Live) -> None:
    result = fleet.cli("get", "no", "coder-02", "ghost")
    assert result.returncode == 1
    assert rows(result.stdout)[1][:3] == ["coder-02", "agent", "NOT_READY"]
    assert result.stderr.strip() == 'error: node "ghost" not found'


# -- describe ------------------------------------------------------------------------------


def test_describe_node_shows_every_section(fleet: Live) -> None:
    with fleet.client() as client:
        client.deregister("coder-02")  # another node's events stay out of this one's
    result = fleet.cli("describe", "node", "postgres-01")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for line in (
        "Name:             postgres-01",
        "Kind:             storage",
        "Health:           NOT_READY",
        "Phase:            NotReady",
        "Schedulable:      false",
        "Labels:           zone=us-east-1",
        "Effective Labels: capability.sql=true",
        "                  memory=32Gi",
    ):
        assert line in text, text
    sections = [
        "Capabilities:",
        "Resources:",
        "Endpoint:",
        "Conditions:",
        "Passport:",
        "Events:",
    ]
    positions = [text.index(f"\n{s}\n") for s in sections]
    assert positions == sorted(positions), text
    conditions = text[text.index("Conditions:") : text.index("Passport:")]
    assert rows(conditions)[1][:4] == ["TYPE", "STATUS", "REASON", "MESSAGE"]
    ready = rows(conditions)[2]
    assert ready[:3] == ["Ready", "Unknown", "NodeStatusUnknown"]
    assert len(ready) > 4  # a message, then the transition time
    assert datetime.fromisoformat(ready[-1]) > datetime.now(UTC) - timedelta(hours=2)
    passport_yaml = text[text.index("Passport:\n") + 10 : text.index("\nEvents:")]
    assert yaml.safe_load(passport_yaml)["metadata"]["name"] == "postgres-01"
    events = rows(text[text.index("Events:") :])
    assert events[1] == ["TYPE", "HEALTH", "RESOURCE-VERSION"]
    assert [e[:4] for e in events[2:]] == [
        ["ADDED", "ALIVE", events[2][2]],
        ["HEALTH_CHANGED", "ALIVE", "->", "NOT_READY"],
    ]
    assert "coder-02" not in text


def test_describe_shows_verification(live: Live) -> None:
    """#12: each claim's state, the verifier's results, and whether the node is Trusted."""
    with live.client() as client:
        client.register(passport("coder-01", capabilities=("code_generation", "python")))
        client.register(passport("coder-02", capabilities=("code_generation",)))
    for name, state in (("coder-01", "Failed"), ("coder-02", "Verified")):
        result = probe_result(live.registry, name, "code_generation", state, message="wrong")
        live.registry.record_verification(result.node_uid, [result])
    failed, verified = live.cli_all(
        ("describe", "node", "coder-01"), ("describe", "node", "coder-02")
    )
    assert failed.returncode == verified.returncode == 0, failed.stderr + verified.stderr
    assert "Trusted:          false (failed: code_generation)" in failed.stdout, failed.stdout
    assert "Trusted:          true" in verified.stdout, verified.stdout
    sections = failed.stdout.split("\n")
    assert sections.index("Verification:") > sections.index("Capabilities:")
    capabilities = rows(failed.stdout[failed.stdout.index("Capabilities:") :])
    assert capabilities[1] == ["NAME", "VERSION", "PARAMS", "VERIFICATION"]
    assert [(r[0], r[-1]) for r in capabilities[2:4]] == [
        ("code_generation", "Failed"),
        ("python", "Unverified"),
    ]
    results = rows(failed.stdout[failed.stdout.index("Verification:") :])
    assert results[1] == ["CAPABILITY", "STATE", "REASON", "CHECKED", "PROBE", "MESSAGE"]
    assert results[2][:3] == ["code_generation", "Failed", "CheckFailed"]
    assert results[2][4:] == ["code_generation-probe", "wrong"]
    verified_rows = rows(verified.stdout[verified.stdout.index("Capabilities:") :])
    assert verified_rows[2][-1] == "Verified"
    # get --verified is find_nodes(only_verified=True): Verified claims, trusted nodes only.
    plain, strict, trusted = live.cli_all(
        ("get", "nodes", "-o", "name", "-l", "capability.python"),
        ("get", "nodes", "-o", "name", "-l", "capability.python", "--verified"),
        ("get", "nodes", "-o", "name", "--verified"),
    )
    assert plain.stdout.split() == ["node/coder-01"], plain.stderr
    assert (strict.stdout, strict.stderr.strip()) == ("", "No resources found.")
    assert trusted.stdout.split() == ["node/coder-02"], trusted.stderr
    # A node never probed: every claim Unverified, no results, trusted.
    with live.client() as client:
        client.register(passport("fresh-01", capabilities=("sql",)))
    fresh = live.cli("describe", "node", "fresh-01").stdout
    assert "Trusted:          true" in fresh
    assert "Verification:\n  <none>" in fresh


def test_describe_unknown_node(live: Live) -> None:
    assert one_error_line(live.cli("describe", "node", "ghost")) == 'error: node "ghost" not found'


# -- apply ---------------------------------------------------------------------------------


def _write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def test_apply_creates_then_configures(live: Live, tmp_path: Path) -> None:
    fleet = _write(tmp_path / "fleet.yaml", passport("coder-01"), passport("writer-01"))
    result = live.cli("apply", "-f", str(fleet))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["node/coder-01 created", "node/writer-01 created"]

    changed = passport("coder-01", labels={"zone": "us-east-1"})
    _write(fleet, changed, passport("writer-01"))
    result = live.cli("apply", "-f", str(fleet))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["node/coder-01 configured", "node/writer-01 configured"]
    with live.client() as client:
        assert client.get("coder-01").passport.metadata.labels == {"zone": "us-east-1"}


def test_apply_from_stdin_json(live: Live) -> None:
    result = live.cli("apply", "-f", "-", stdin=json.dumps(passport("tool-01", kind="tool")))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "node/tool-01 created\n"
    with live.client() as client:
        assert client.get("tool-01").node_kind.value == "tool"


def test_apply_invalid_sends_nothing(live: Live, tmp_path: Path) -> None:
    bad = passport("Bad_Name", resources={"memory": "8GB"})
    path = _write(tmp_path / "mixed.yaml", passport("good-01"), bad)
    line = one_error_line(live.cli("apply", "-f", str(path)))
    assert "(document 2)" in line
    assert "metadata.name" in line
    assert "spec.resources" in line
    assert "nothing was applied" in line
    with live.client() as client:
        assert client.find_nodes() == []


def test_apply_refused_by_the_registry(live: Live, tmp_path: Path) -> None:
    """Valid offline, refused by the server: a name taken by another uid is a Conflict."""
    with live.client() as client:
        client.register(passport("taken-01"))
    other = passport("taken-01", uid="00000000-0000-4000-8000-000000000001")
    path = _write(tmp_path / "p.yaml", other, passport("fresh-01"))
    result = live.cli("apply", "-f", str(path))
    assert result.returncode == 1
    assert result.stdout == "node/fresh-01 created\n"
    assert result.stderr.startswith("error: node/taken-01: "), result.stderr


# -- delete --------------------------------------------------------------------------------


def test_delete_node(fleet: Live) -> None:
    result = fleet.cli("delete", "node", "coder-02", "postgres-01")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["node/coder-02 deleted", "node/postgres-01 deleted"]
    with fleet.client() as client:
        assert [e.name for e in client.find_nodes()] == ["coder-01"]
    assert one_error_line(fleet.cli("delete", "node", "coder-02")) == (
        'error: node "coder-02" not found'
    )


# -- watch ---------------------------------------------------------------------------------


def test_watch_replays_history_with_a_timeout(fleet: Live) -> None:
    with fleet.client() as client:
        client.deregister("coder-02")
    started = time.monotonic()
    # After version 1 (coder-01's registration): a watch from 0 is the current state.
    result, state = fleet.cli_all(
        ("watch", "--since", "1", "--timeout", "1"), ("watch", "--since", "0", "--timeout", "1")
    )
    assert result.returncode == 0, result.stderr
    assert [line[1:4] for line in rows(state.stdout)[1:]] == [
        ["ADDED", "coder-01", "ALIVE"],
        ["ADDED", "postgres-01", "NOT_READY"],
    ]
    assert time.monotonic() - started < 10
    lines = rows(result.stdout)
    assert lines[0] == ["TIME", "EVENT", "NAME", "HEALTH", "RESOURCE-VERSION"]
    events = [line[1:] for line in lines[1:] if line[1] != "MODIFIED"]
    versions = [int(line[-1]) for line in lines[1:]]
    assert versions == sorted(versions)
    assert [e[:-1] for e in events] == [
        ["ADDED", "coder-02", "ALIVE"],
        ["ADDED", "postgres-01", "ALIVE"],
        ["HEALTH_CHANGED", "coder-02", "ALIVE", "->", "NOT_READY"],
        ["HEALTH_CHANGED", "postgres-01", "ALIVE", "->", "NOT_READY"],
        ["DELETED", "coder-02", "NOT_READY"],
    ]
    assert all(len(line[0]) == 8 and line[0][2] == ":" for line in lines[1:])  # HH:MM:SS


def test_watch_filters_by_selector_and_kind(fleet: Live) -> None:
    by_zone, by_kind = fleet.cli_all(
        ("watch", "--since", "0", "--timeout", "1", "-l", "zone=us-east-1"),
        ("watch", "--since", "1", "--timeout", "1", "--kind", "agent", "-o", "json"),
    )
    assert by_zone.returncode == 0, by_zone.stderr
    assert {line[2] for line in rows(by_zone.stdout)[1:]} == {"postgres-01"}
    assert by_kind.returncode == 0, by_kind.stderr
    events = [json.loads(line) for line in by_kind.stdout.splitlines()]
    assert {e["object"]["metadata"]["name"] for e in events} == {"coder-01", "coder-02"}
    # The API's events: a health transition is a MODIFIED whose healthState changed.
    assert {e["type"] for e in events} == {"ADDED", "MODIFIED"}
    assert events[-1]["object"]["status"]["healthState"] == "NOT_READY"


def test_watch_from_now_sees_a_new_node(live: Live) -> None:
    with live.client() as client:
        client.register(passport("old-01"))
    process = subprocess.Popen(
        [*_command(), "watch", "--timeout", "2", "--server", live.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().split()[0] == "TIME"  # listed; watching from now
        with live.client() as client:
            client.register(passport("new-01"))
        out, errors = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, errors
    assert [line.split()[1:3] for line in out.splitlines()] == [["ADDED", "new-01"]]


# -- errors and endpoints ------------------------------------------------------------------


def test_bad_selector_kind_resource_and_format_fail_before_any_request() -> None:
    unused = f"http://127.0.0.1:{free_port()}"  # nothing listens: no request may be needed
    cases = {
        ("get", "nodes", "-l", "zone in (a"): "invalid label selector",
        ("get", "nodes", "--kind", "Robot_1"): "unknown node kind 'Robot_1'",
        ("get", "pods"): 'no resource type "pods"',
        ("get", "nodes", "-s", "ftp://registry"): "must start with http:// or https://",
    }
    results = run_all(*cases, env=_env(NODE_REGISTRY_URL=unused))
    for (args, needle), result in zip(cases.items(), results, strict=True):
        assert needle in one_error_line(result), args


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(run("get", "nodes", "--server", url))
    assert line.startswith("error: cannot reach the registry: ")
    assert "127.0.0.1" in line
    assert "Connection refused" in line


def test_server_option_wins_over_the_environment(live: Live) -> None:
    with live.client() as client:
        client.register(passport("from-env-01"))
    dead = f"http://127.0.0.1:{free_port()}"
    with live_registry() as other:
        with other.client() as client:
            client.register(passport("from-flag-01"))
        by_env, by_flag, failover = run_all(
            ("get", "nodes", "-o", "name"),
            ("get", "nodes", "-o", "name", "--server", other.url),
            ("get", "nodes", "-o", "name", "-s", f"{dead},{other.url}"),
            env=_env(NODE_REGISTRY_URL=live.url),
        )
    assert by_env.stdout == "node/from-env-01\n", by_env.stderr
    assert by_flag.stdout == "node/from-flag-01\n", by_flag.stderr
    assert failover.stdout == "node/from-flag-01\n", failover.stderr


def test_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"token": ADMIN_TOKEN, "role": "admin", "name": "ops"},
                    {"token": READER_TOKEN, "role": "reader", "name": "dash"},
                ]
            }
        )
    )
    with live_registry(server={"tokens_file": tokens}) as live:
        with live.client(ADMIN_TOKEN) as client:
            client.register(passport("secure-01"))
        env = _env(NODE_REGISTRY_URL=live.url)
        reader_env = _env(NODE_REGISTRY_URL=live.url, NODE_REGISTRY_TOKEN=READER_TOKEN)
        no_token, by_flag = run_all(
            ("get", "nodes"),
            ("get", "nodes", "-o", "name", "--token", READER_TOKEN),
            env=env,
        )
        by_env, forbidden = run_all(
            ("get", "nodes", "-o", "name"), ("delete", "node", "secure-01"), env=reader_env
        )
        admin = run("delete", "node", "secure-01", "--token", ADMIN_TOKEN, env=reader_env)
    line = one_error_line(no_token)
    assert line.startswith("error: Unauthorized: this registry requires a bearer token")
    assert "--token" in line
    assert by_flag.stdout == "node/secure-01\n", by_flag.stderr
    assert by_env.stdout == "node/secure-01\n", by_env.stderr
    assert one_error_line(forbidden).startswith("error: Forbidden: ")
    assert admin.stdout == "node/secure-01 deleted\n", admin.stderr


# -- agent ---------------------------------------------------------------------------------


def test_agent_registers_heartbeats_and_leaves(live: Live, tmp_path: Path) -> None:
    path = _write(tmp_path / "agent.yaml", passport("runtime-01"))
    process = subprocess.Popen(
        [
            *_command(),
            "agent",
            "-f",
            str(path),
            "--server",
            live.url,
            "--interval",
            "1",
            "--no-detect",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        with live.client() as client:
            while not client.find_nodes(selector="capability.python"):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, errors
    assert "registered:" in out
    assert "deregistered:" in out
    with live.client() as client:
        assert client.find_nodes() == []
