"""``node-registry serve`` as a real process: start, serve, stop, and the refusals before binding.

Every process is bounded by timeouts and killed in ``finally`` whatever the test did. A server
bound to 0.0.0.0 is only ever reached through 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
import yaml

from conftest import passport
from live_server import free_port
from node_registry.kube.discovery import API_PREFIX

COMMAND = [sys.executable, "-m", "node_registry", "serve"]
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def _env() -> dict[str, str]:
    # No NODE_REGISTRY_* settings leak in from the environment running the tests; a wide
    # terminal so rich does not wrap the error messages the tests read.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_REGISTRY_")}
    env.update(COLUMNS="1000", PYTHONUNBUFFERED="1", NO_COLOR="1")
    # A loaded CI machine's loop lag would shed the tests' own reads as 429 (test_flowcontrol
    # covers shedding): off for these servers.
    env["NODE_REGISTRY_SERVER__SHED_READS_LAG_SECONDS"] = "3600"
    return env


def _flat(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[Server]:
    """``node-registry serve ARGS`` in the background; always killed on the way out."""
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*COMMAND, *args], stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path
        )
    try:
        yield Server(process, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def wait_healthy(server: Server, url: str, verify: ssl.SSLContext | bool = True) -> None:
    """Poll ``url/healthz`` until it answers ok, for at most START_TIMEOUT seconds."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"serve exited with {server.process.returncode}:\n{server.output()}")
        try:
            response = httpx.get(f"{url}/healthz", verify=verify, timeout=1)
        except httpx.TransportError:
            pass
        else:
            assert response.status_code == 200, response.text
            assert response.text == "ok"
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"serve did not answer /healthz within {START_TIMEOUT} s:\n{server.output()}"
            )
        time.sleep(0.1)


def stop(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=STOP_TIMEOUT)


def run_to_failure(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A serve that must exit by itself (before binding); its output as text."""
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
        cwd=tmp_path,
    )


# -- serving ------------------------------------------------------------------------------


def test_serve_on_loopback_registers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    with serving(tmp_path, "--host", "127.0.0.1", "--port", str(port)) as server:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(server, url)
        with httpx.Client(base_url=url, timeout=5) as http:
            assert http.get("/readyz").text == "ok"
            response = http.post(f"{API_PREFIX}/nodepassports", json=passport("coder-01"))
            assert response.status_code == 201, response.text
            listed = http.get(f"{API_PREFIX}/nodepassports").json()
            assert [i["metadata"]["name"] for i in listed["items"]] == ["coder-01"]

        code = stop(server)
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal it captured
        # (uvicorn >= 0.29), so the process ends *by* SIGTERM: -15, not 0.
        assert code == -signal.SIGTERM, server.output()
        output = server.output()
        assert "Application shutdown complete." in output
        assert "Finished server process" in output
        assert "Traceback" not in output
        # Without tokens the operator is told that everyone is an admin.
        assert "no tokens file: every caller is an anonymous admin" in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=1)


def test_serve_refuses_an_open_registry_on_a_network_address(tmp_path: Path) -> None:
    result = run_to_failure(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 1, result.stderr
    message = _flat(result.stderr)
    assert "refusing to serve without tokens on '0.0.0.0'" in message
    assert "--tokens-file" in message
    assert "--allow-insecure" in message
    assert "Traceback" not in result.stderr
    assert "Uvicorn running" not in result.stderr + result.stdout


def test_serve_allow_insecure_binds_a_network_address(tmp_path: Path) -> None:
    port = free_port()
    args = ("--host", "0.0.0.0", "--port", str(port), "--allow-insecure")
    with serving(tmp_path, *args) as server:
        url = f"http://127.0.0.1:{port}"  # bound on every interface, reached on loopback only
        wait_healthy(server, url)
        assert httpx.get(f"{url}{API_PREFIX}/nodepassports", timeout=5).status_code == 200
        assert stop(server) == -signal.SIGTERM
    assert "http://0.0.0.0:" in server.output()


def test_serve_with_tokens_on_a_network_address(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    token = "admin-token-0123456789abcdef"
    tokens.write_text(yaml.safe_dump({"tokens": [{"token": token, "role": "admin"}]}))
    port = free_port()
    args = ("--host", "0.0.0.0", "--port", str(port), "--tokens-file", str(tokens))
    with serving(tmp_path, *args) as server:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(server, url)  # probes need no token
        with httpx.Client(base_url=url, timeout=5) as http:
            refused = http.get(f"{API_PREFIX}/nodepassports")
            assert refused.status_code == 401
            assert refused.json()["reason"] == "Unauthorized"
            allowed = http.get(
                f"{API_PREFIX}/nodepassports", headers={"Authorization": f"Bearer {token}"}
            )
            assert allowed.status_code == 200
        assert stop(server) == -signal.SIGTERM
    assert "anonymous admin" not in server.output()


def test_serve_reads_the_tokens_file_again_on_sighup(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    admin, leaving = "admin-token-0123456789abcdef", "leaving-token-0123456789abcd"
    kept = [{"token": admin, "role": "admin"}]
    tokens.write_text(yaml.safe_dump({"tokens": [*kept, {"token": leaving, "role": "reader"}]}))
    tokens.chmod(0o644)
    port = free_port()
    with serving(tmp_path, "--port", str(port), "--tokens-file", str(tokens)) as server:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(server, url)
        with httpx.Client(base_url=url, timeout=5) as http:

            def status(token: str) -> int:
                headers = {"Authorization": f"Bearer {token}"}
                return http.get(f"{API_PREFIX}/nodepassports", headers=headers).status_code

            assert status(leaving) == 200
            # The same size, in place, with the old mtime put back: nothing a stat() would
            # notice, so only the signal can make the server read it again.
            before = tokens.stat()
            new = yaml.safe_dump(
                {"tokens": [*kept, {"token": "x" * len(leaving), "role": "reader"}]}
            )
            assert len(new) == before.st_size
            with tokens.open("r+") as out:
                out.write(new)
            os.utime(tokens, ns=(before.st_atime_ns, before.st_mtime_ns))
            time.sleep(1.5)  # past the once-a-second check: the change is still not seen
            assert status(leaving) == 200

            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while status(leaving) != 401:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.05)
            assert status(admin) == 200
        assert stop(server) == -signal.SIGTERM
    output = server.output()
    assert f"tokens file {tokens} reloaded: 2 tokens" in output
    assert f"tokens file {tokens} can be read by every user (mode 0o644)" in _flat(output)
    assert "Traceback" not in output


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(CA bundle, server certificate chain, server key) for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    bundle, certfile, keyfile = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(bundle))
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    return bundle, certfile, keyfile


def test_serve_over_tls(tmp_path: Path, certificates: tuple[Path, Path, Path]) -> None:
    bundle, certfile, keyfile = certificates
    # httpx 0.28 deprecates verify=<path>; an SSLContext over the CA bundle is the same trust.
    trust = ssl.create_default_context(cafile=str(bundle))
    port = free_port()
    args = ("--port", str(port), "--tls-certfile", str(certfile), "--tls-keyfile", str(keyfile))
    with serving(tmp_path, *args) as server:
        url = f"https://127.0.0.1:{port}"
        wait_healthy(server, url, verify=trust)
        with httpx.Client(base_url=url, verify=trust, timeout=5) as http:
            response = http.post(f"{API_PREFIX}/nodepassports", json=passport("coder-01"))
            assert response.status_code == 201, response.text
            assert http.get(f"{API_PREFIX}/nodepassports/coder-01").status_code == 200
        # The name "localhost" is in the certificate too.
        assert httpx.get(f"https://localhost:{port}/healthz", verify=trust).status_code == 200
        # Plain HTTP to the TLS port gets no answer...
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        # ...and a client that does not trust the CA refuses the certificate.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/healthz", timeout=5)
        assert server.process.poll() is None, "a bad client must not stop the server"
        assert stop(server) == -signal.SIGTERM
    assert "https://127.0.0.1:" in server.output()


@pytest.mark.parametrize("given", ["--tls-certfile", "--tls-keyfile"])
def test_serve_refuses_half_a_tls_pair(
    tmp_path: Path, certificates: tuple[Path, Path, Path], given: str
) -> None:
    _, certfile, keyfile = certificates
    path = certfile if given == "--tls-certfile" else keyfile
    result = run_to_failure(tmp_path, "--port", str(free_port()), given, str(path))
    assert result.returncode == 1, result.stderr
    message = _flat(result.stderr)
    assert "tls_certfile and tls_keyfile go together: give both or neither" in message
    assert "Traceback" not in result.stderr


# -- configuration refused at start-up ----------------------------------------------------------


def test_serve_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "node_registry.yaml"
    config.write_text(
        yaml.safe_dump({"heartbeat": {"not_ready_after_seconds": 20, "ttl_seconds": 15}})
    )
    result = run_to_failure(tmp_path, "--config", str(config), "--port", str(free_port()))
    assert result.returncode == 1, result.stderr
    message = _flat(result.stderr)
    assert "invalid registry configuration" in message
    assert str(config) in message
    assert "heartbeat: ttl_seconds (15.0) must be greater than not_ready_after_seconds" in message
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_store_scheme_it_does_not_know(tmp_path: Path) -> None:
    result = run_to_failure(tmp_path, "--store", "zookeeper://127.0.0.1/x", "--port", "0")
    assert result.returncode == 1, result.stderr
    message = _flat(result.stderr)
    assert "store URL 'zookeeper://127.0.0.1/x': scheme 'zookeeper' is not available" in message
    assert "memory://, etcd://" in message  # what is supported
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("etcd://127.0.0.1:99999/x", "endpoint '127.0.0.1:99999' has an invalid port"),
        ("etcd://:2379/x", "endpoint ':2379' has no host"),
        ("etcd://user:pw@127.0.0.1:2379/x", "give TLS and credentials as store.etcd_* settings"),
    ],
)
def test_serve_refuses_a_malformed_etcd_url(tmp_path: Path, url: str, problem: str) -> None:
    result = run_to_failure(tmp_path, "--store", url, "--port", "0")
    assert result.returncode == 1, result.stderr
    assert problem in _flat(result.stderr)
    assert "Traceback" not in result.stderr


def test_serve_exits_when_etcd_cannot_be_reached(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens, so the first list fails and serve must exit 1
    # with the endpoint named, before binding.
    started = time.monotonic()
    result = run_to_failure(tmp_path, "--store", "etcd://127.0.0.1:1/x", "--port", "0")
    assert result.returncode == 1, result.stderr
    message = _flat(result.stderr)
    assert "etcd at 127.0.0.1:1 did not answer" in message
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
