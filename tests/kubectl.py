"""The real ``kubectl`` against a live registry: a kubeconfig for it, and a bounded run.

``kubectl`` comes from PATH (``.ci/run`` installs it when missing). Without it the tests that
need it are skipped locally, and fail under CI (``CI`` set), where it must be there.
Each run gets its own HOME and discovery cache dir, so nothing from the machine's own
kubeconfig or cache steers it, and a timeout, so a hanging kubectl fails the test instead.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

RUN_TIMEOUT = 30.0


def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found is None:
        message = "no kubectl on PATH (.ci/run installs it: apt-get install kubernetes-client)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@functools.cache
def kubectl_minor() -> int:
    """kubectl's minor version (1.32 -> 32): Debian bookworm's kubernetes-client is 1.20."""
    done = subprocess.run(
        [kubectl_binary(), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    minor: str = json.loads(done.stdout)["clientVersion"]["minor"]
    return int(minor.rstrip("+"))


def kubeconfig(
    server: str,
    *,
    token: str | None = None,
    token_file: Path | None = None,
    ca_file: Path | None = None,
    ca_data: bytes | None = None,
    insecure: bool = False,
    context: str = "registry",
) -> dict[str, Any]:
    """A kubeconfig document with one context (named ``context``) for ``server``."""
    cluster: dict[str, Any] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    if ca_data is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if token_file is not None:
        user["tokenFile"] = str(token_file)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }


def write_kubeconfig(path: Path, server: str, **options: Any) -> Path:
    path.write_text(yaml.safe_dump(kubeconfig(server, **options)), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Result:
    stdout: str
    stderr: str
    rc: int

    def ok(self) -> str:
        assert self.rc == 0, f"kubectl failed ({self.rc}):\n{self.stderr}\n{self.stdout}"
        return self.stdout


@dataclass(frozen=True)
class Kubectl:
    """``kubectl --kubeconfig FILE ...`` with a private HOME and cache."""

    config: Path
    home: Path

    def run(
        self,
        *args: str,
        timeout: float = RUN_TIMEOUT,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Result:
        environment = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KUBECONFIG": str(self.config),
            **(env or {}),
        }
        command = [kubectl_binary(), "--kubeconfig", str(self.config)]
        command += ["--cache-dir", str(self.home / "cache"), *args]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            input=stdin,
            check=False,
        )
        return Result(done.stdout, done.stderr, done.returncode)


def kubectl_for(tmp: Path, server: str, **options: Any) -> Kubectl:
    """A kubectl whose kubeconfig points at ``server`` (``options``: see ``kubeconfig``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = write_kubeconfig(tmp / "kubeconfig", server, **options)
    return Kubectl(config, tmp)
