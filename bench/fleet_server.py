"""The registry's server with a fleet registered in process first, for bench_http.py.

Registering 100,000 nodes over HTTP would cost the server more CPU than the rest of the
benchmark; registered in process (``Registry.register``: the same validation and indexes)
it takes seconds. The app is then served as `node-registry serve` serves it (the guarded
httptools protocol, its limits, uvloop, no access log). SIGUSR1 switches lease renewals
between the fast path and the framework's route, so both are measured on one registry in
one process. The app freezes the fleet out of full collections as it starts, as it does
under `serve` (server/gctune.py).

``--store etcd://...``: the registry on etcd, opened as `serve` opens it (the replica on the
server's own loop); the fleet is registered there through ``AsyncRegistry.register``, 32 in
flight, since each registration is an etcd transaction.

    python bench/fleet_server.py --nodes 10000 --port 8080 [--store etcd://127.0.0.1:2379/x]
"""

from __future__ import annotations

import argparse
import asyncio
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
from node_registry.store import open_store_on_loop

#: Registrations in flight on etcd (as bench_etcd.py registers).
IN_FLIGHT = 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", default="memory://", help="the store's URL")
    args = parser.parse_args()
    # Registering 100,000 nodes takes longer than the default 20 s of silence before NotReady:
    # the first nodes would turn NotReady (a write each, then another as they renew) while
    # the last ones register. The bench measures renewals of live nodes, so silence is given
    # ten minutes; wrk renews every node within a few seconds anyway. Compaction off on etcd:
    # a compaction pass in the middle of a measurement would be noise (as in bench_etcd.py).
    settings = load_settings(
        server={"port": args.port, "host": "127.0.0.1"},
        heartbeat={"not_ready_after_seconds": 600, "ttl_seconds": 900},
        store={"url": args.store, "etcd_compaction_interval_seconds": 0},
    )
    config = uvicorn_config(
        None,  # the app, made on the loop below: on etcd it needs the store opened there
        settings.server,
        ConnectionGuard(ConnectionLimits.from_settings(settings.server)),
        log_level="warning",
        access_log=False,
    )

    async def serve() -> None:
        store = await open_store_on_loop(settings)
        try:
            registry = AsyncRegistry(store, settings=settings)
            await register_fleet(registry, args.nodes, on_etcd=args.store != "memory://")
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
            config.app = app
            await RegistryServer(config, on_shutdown=registry.end_watches).serve()
        finally:
            await store.aio.close()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())
    return 0


async def register_fleet(registry: AsyncRegistry, nodes: int, *, on_etcd: bool) -> None:
    start = time.perf_counter()
    if on_etcd:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def register(i: int) -> None:
            async with gate:
                await registry.register(passport(f"bench-node-{i:06d}", i))

        await asyncio.gather(*(register(i) for i in range(nodes)))
    else:
        for i in range(nodes):
            registry.sync.register(passport(f"bench-node-{i:06d}", i))
    print(f"registered {nodes} in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
