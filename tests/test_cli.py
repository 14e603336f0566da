"""The ``node-registry`` command: validate, example, version — through the installed script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    script = shutil.which("node-registry")
    command = [script] if script else [sys.executable, "-m", "node_registry"]
    return subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"COLUMNS": "200", "PATH": str(Path(sys.executable).parent)},
    )


def test_validate_accepts_the_example_passport() -> None:
    result = _run("validate", "-f", str(ROOT / "examples" / "coder-agent.yaml"))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "ai-agent-coder-01 (7d0b6c1e-4b9a-4f47-9a59-2f1c6f0d2a11), ai_team.io/v1" in (
        result.stdout
    )


def test_validate_points_at_each_bad_field(tmp_path: Path) -> None:
    bad = {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {
            "uid": "not-a-uuid",
            "name": "Bad_Name",
            "nodeType": "agent",
            "labels": {"zone": "eu west"},
        },
        "spec": {"resources": {"memory": "8GB"}},
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = _run("validate", "-f", str(path))
    assert result.returncode == 1
    assert "invalid" in result.stderr
    for field in ("metadata.uid", "metadata.name", "metadata.labels", "spec.resources"):
        assert field in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("apiVersion: ai_team.io/v2\nkind: NodePassport\n", "ai_team.io/v1alpha1"),
        ("metadata: [unclosed\n", "not valid YAML"),
    ],
)
def test_validate_refuses_versions_and_broken_yaml(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = _run("validate", "-f", str(path))
    assert result.returncode == 1
    assert needle in result.stderr


def test_validate_missing_file() -> None:
    result = _run("validate", "-f", "/nonexistent/passport.yaml")
    assert result.returncode == 1
    assert "cannot read" in result.stderr


def test_example_walks_a_node_through_its_life() -> None:
    result = _run("example")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "find_nodes(selector={'matchLabels'" in out
    assert "ALIVE -> NOT_READY" in out
    assert "NOT_READY -> OFFLINE" in out
    assert "DELETED" in out
    assert "scheduler.select_best -> ai-agent-coder-02" in out


def test_version() -> None:
    result = _run("version")
    assert result.returncode == 0
    assert "ai_team.io/v1" in result.stdout
