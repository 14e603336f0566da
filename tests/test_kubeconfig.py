"""kubeconfig for the registry's clients: files merged as kubectl merges them, clear errors,
and the ``node-registry`` CLI's precedence (flags > environment > kubeconfig) end to end."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_server import ADMIN, READER, KubeServer, kube_server
from kubectl import kubeconfig, write_kubeconfig
from node_registry.client.kubeconfig import Connection, load_context, resolve
from node_registry.errors import ConfigError
from test_cli_commands import _env, run


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _two_contexts(tmp_path: Path) -> Path:
    doc = kubeconfig("https://a.example:6443", token="token-a", context="a")
    other = kubeconfig("https://b.example:6443", token="token-b", context="b")
    for section in ("clusters", "users", "contexts"):
        doc[section] += other[section]
    return _write(tmp_path / "config", doc)


def test_the_current_context_or_a_named_one(tmp_path: Path) -> None:
    path = _two_contexts(tmp_path)
    current = load_context(path, env={})
    assert current is not None
    assert (current.name, current.server, current.token, current.verify) == (
        "a",
        "https://a.example:6443",
        "token-a",
        True,
    )
    named = load_context(path, "b", env={})
    assert named is not None
    assert (named.server, named.token) == ("https://b.example:6443", "token-b")


def test_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    first = _write(tmp_path / "one", kubeconfig("https://one:1", token="t1", context="x"))
    second = kubeconfig("https://two:2", token="t2", context="x")  # same names: first wins
    second["contexts"].append({"name": "y", "context": {"cluster": "x", "user": "x"}})
    second["current-context"] = "y"  # ignored: the first file set one
    second_path = _write(tmp_path / "two", second)
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{first}:{second_path}"}
    merged = load_context(None, env=env)
    assert merged is not None
    assert (merged.name, merged.server, merged.token) == ("x", "https://one:1", "t1")
    only_in_second = load_context(None, "y", env=env)
    assert only_in_second is not None
    assert only_in_second.server == "https://one:1"  # its cluster "x" is the first file's


def test_home_kube_config_is_the_default(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    _write(tmp_path / ".kube" / "config", kubeconfig("https://home:1", token="h"))
    found = load_context(None, env={"HOME": str(tmp_path)})
    assert found is not None
    assert found.server == "https://home:1"
    assert load_context(None, env={"HOME": str(tmp_path / "nobody")}) is None


def test_token_file_and_ca_paths_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "token").write_text("from-a-file\n", encoding="utf-8")
    doc = kubeconfig("https://x:1", context="x")
    doc["clusters"][0]["cluster"]["certificate-authority"] = "ca.pem"
    doc["users"][0]["user"]["tokenFile"] = "token"
    found = load_context(_write(tmp_path / "config", doc), env={})
    assert found is not None
    assert found.token == "from-a-file"
    assert found.verify == str(tmp_path / "ca.pem")
    inline = load_context(
        write_kubeconfig(tmp_path / "inline", "https://x:1", ca_data=ca.cert_pem.bytes()), env={}
    )
    assert inline is not None
    assert isinstance(inline.verify, ssl.SSLContext)
    insecure = load_context(write_kubeconfig(tmp_path / "k", "https://x:1", insecure=True), env={})
    assert insecure is not None
    assert insecure.verify is False


@pytest.mark.parametrize(
    ("change", "context", "message"),
    [
        (lambda d: d.pop("current-context"), None, "no current-context is set; give --context"),
        (lambda d: None, "nope", "context 'nope' not found (contexts: registry)"),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), None, "has no server"),
        (lambda d: d.update(clusters=[]), None, "cluster 'registry' of context 'registry' not"),
        (lambda d: d.update(users=[]), None, "user 'registry' of context 'registry' not found"),
        (
            lambda d: d["users"][0]["user"].update(tokenFile="absent"),
            None,
            "tokenFile",
        ),
        (
            lambda d: d["clusters"][0]["cluster"].update({"certificate-authority": "absent.pem"}),
            None,
            "certificate-authority",
        ),
        (
            lambda d: d["clusters"][0]["cluster"].update({"certificate-authority-data": "!!"}),
            None,
            "certificate-authority-data is not a base64 PEM",
        ),
        (
            lambda d: d["users"][0].update(user={"exec": {"command": "aws"}}),
            None,
            "authenticates with exec, which the registry's clients do not support",
        ),
    ],
)
def test_problems_name_the_file_and_the_piece(
    tmp_path: Path, change: Any, context: str | None, message: str
) -> None:
    doc = kubeconfig("https://x:1")
    change(doc)
    path = _write(tmp_path / "config", doc)
    with pytest.raises(ConfigError) as problem:
        load_context(path, context, env={})
    assert message in str(problem.value)
    assert str(path) in str(problem.value)


def test_a_kubeconfig_named_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kubeconfig .*absent: no such file"):
        load_context(tmp_path / "absent", env={})
    with pytest.raises(ConfigError, match="no kubeconfig to find context 'x' in"):
        load_context(None, "x", env={"HOME": str(tmp_path)})


def test_precedence_flags_then_environment_then_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    _write(tmp_path / ".kube" / "config", kubeconfig("https://home:1", token="home-token"))
    home = {"HOME": str(tmp_path)}
    # Nothing given: the kubeconfig's context, token and all.
    assert resolve(server=None, token=None, env=home) == Connection("https://home:1", "home-token")
    # A server of its own (flag or NODE_REGISTRY_URL): the default kubeconfig is not read,
    # so its token never goes to that server.
    assert resolve(server="http://mine:8080", token=None, env=home) == Connection(
        "http://mine:8080", None
    )
    # A kubeconfig named explicitly: flags override its parts one by one.
    named = resolve(
        server="https://other:2",
        token=None,
        certificate_authority="/ca.pem",
        kubeconfig=tmp_path / ".kube" / "config",
        env={},
    )
    assert named == Connection("https://other:2", "home-token", "/ca.pem")
    assert resolve(server=None, token="flag", env=home).token == "flag"
    # No kubeconfig anywhere: the client's own defaults.
    assert resolve(server=None, token=None, env={"HOME": str(tmp_path / "x")}) == Connection(
        None, None
    )


# -- the CLI, end to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    with kube_server(tmp_path_factory.mktemp("cli-kube")) as live:
        live.reset()
        yield live


def _names(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line.split()[0] for line in result.stdout.splitlines()[1:]]


def test_the_cli_connects_with_a_kubeconfig(server: KubeServer, tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "config", server.url, token=READER, ca_file=server.ca)
    everyone = ["coder-01", "coder-02", "search-01"]
    assert _names(run("get", "nodes", "--kubeconfig", str(config))) == everyone
    # KUBECONFIG alone, and a context picked by name.
    doc = kubeconfig(server.url, token=ADMIN, ca_file=server.ca, context="ops")
    other = _write(tmp_path / "other", doc)
    env = _env(KUBECONFIG=f"{config}:{other}", HOME=str(tmp_path))
    assert _names(run("get", "nodes", "--context", "ops", env=env)) == everyone
    # ~/.kube/config when no server is given at all.
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(config.read_text(encoding="utf-8"))
    assert _names(run("get", "nodes", env=_env(HOME=str(tmp_path)))) == everyone


def test_the_cli_takes_a_certificate_authority(server: KubeServer) -> None:
    args = ("get", "nodes", "--server", server.url, "--token", READER)
    refused = run(*args)
    assert refused.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    assert _names(run(*args, "--certificate-authority", str(server.ca)))[0] == "coder-01"


def test_the_cli_reports_a_kubeconfig_problem_in_one_line(tmp_path: Path) -> None:
    config = _write(tmp_path / "config", kubeconfig("https://x:1"))
    result = run("get", "nodes", "--kubeconfig", str(config), "--context", "nope")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: kubeconfig {config}: context 'nope' not found (contexts: registry)\n"
    )
