"""``node-registry agent``: run the node runtime in the foreground until SIGTERM or Ctrl-C.

One line per state change goes to stdout (registered, failing, recovered, re-registered,
deregistered), flushed at once, so a supervisor's log — or a test reading the pipe — sees
each as it happens. A bad passport file is reported with the fields at fault (exit 1)
before anything is sent anywhere.

``python -m node_registry.cli.agent_command FILE --server URL`` runs the same function
without the typer command (tests and minimal installs use it).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from node_registry.agent import AgentEvent, NodeAgent
from node_registry.errors import RegistryError, ValidationError


def _print_event(event: AgentEvent) -> None:
    print(f"{event.at:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + f"Z {event}", flush=True)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


async def _serve(agent: NodeAgent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # not Unix, or not the main thread
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    async with agent:
        await stop.wait()


def run_agent(
    file: Path,
    *,
    endpoints: str | Sequence[str] | None,
    token: str | None,
    interval: float | None,
    detect: bool = True,
) -> int:
    """Run a NodeAgent for ``file`` until SIGTERM/SIGINT, then deregister; the exit code."""
    try:
        agent = NodeAgent(
            file,
            endpoints=endpoints,
            token=token or None,
            interval=interval,
            detect=detect,
            on_event=_print_event,
        )
    except ValidationError as exc:
        _error(f"{file}: {exc.message}")
        for problem in exc.errors:
            print(f"  - {problem}", file=sys.stderr, flush=True)
        return 1
    except RegistryError as exc:  # ConfigError: a bad endpoint or setting
        _error(str(exc))
        return 1
    print(
        f"starting: {agent.name} ({agent.node_id}), renewing every {agent.interval:g}s, "
        f"resources {agent.passport.spec.resources}",
        flush=True,
    )
    asyncio.run(_serve(agent))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m node_registry.cli.agent_command",
        description="Run the node runtime for one passport until SIGTERM/SIGINT.",
    )
    parser.add_argument("file", type=Path, help="the node's passport (YAML/JSON)")
    parser.add_argument("--server", help="registry URL, or several comma-separated")
    parser.add_argument("--token", help="bearer token")
    parser.add_argument("--interval", type=float, help="heartbeat interval in seconds")
    parser.add_argument("--no-detect", action="store_true", help="do not detect resources")
    args = parser.parse_args(argv)
    return run_agent(
        args.file,
        endpoints=args.server,
        token=args.token,
        interval=args.interval,
        detect=not args.no_detect,
    )


if __name__ == "__main__":
    sys.exit(main())
