"""The registry's server with a fleet registered in process first, for bench_http.py.

Registering 100,000 nodes over HTTP would cost the server more CPU than the rest of the
benchmark; registered in process (``Registry.register``: the same validation and indexes)
it takes seconds. The app is then served as `node-registry serve` serves it (the guarded
httptools protocol, its limits, uvloop, no access log). SIGUSR1 switches lease renewals
between the fast path and the framework's route, so both are measured on one registry in
one process. The app freezes the fleet out of full collections as it starts, as it does
under `serve` (server/gctune.py).

    python bench/fleet_server.py --nodes 10000 --port 8080
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from loadgen import passport
from node_registry.config import load_settings
from node_registry.registry import AsyncRegistry
from node_registry.server import Authenticator, create_app
from node_registry.server.fastpath import RegistryApp, RenewalFastPath
from node_registry.server.serving import (
    ConnectionGuard,
    ConnectionLimits,
    RegistryServer,
    uvicorn_config,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # Registering 100,000 nodes takes longer than the default 20 s of silence before NotReady:
    # the first nodes would turn NotReady (a write each, then another as they renew) while
    # the last ones register. The bench measures renewals of live nodes, so silence is given
    # ten minutes; wrk renews every node within a few seconds anyway.
    settings = load_settings(
        server={"port": args.port, "host": "127.0.0.1"},
        heartbeat={"not_ready_after_seconds": 600, "ttl_seconds": 900},
    )
    registry = AsyncRegistry(settings=settings)
    start = time.perf_counter()
    for i in range(args.nodes):
        registry.sync.register(passport(f"bench-node-{i:06d}", i))
    print(f"registered {args.nodes} in {time.perf_counter() - start:.1f} s", flush=True)
    app = create_app(registry, settings, authenticator=Authenticator(None))
    assert isinstance(app, RegistryApp)
    parked: list[RenewalFastPath] = []

    def toggle(signum: int, frame: object) -> None:
        if app.fast_path is not None:
            parked.append(app.fast_path)
            app.fast_path = None
        else:
            app.fast_path = parked.pop()

    signal.signal(signal.SIGUSR1, toggle)
    config = uvicorn_config(
        app,
        settings.server,
        ConnectionGuard(ConnectionLimits.from_settings(settings.server)),
        log_level="warning",
        access_log=False,
    )
    RegistryServer(config, on_shutdown=registry.end_watches).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
