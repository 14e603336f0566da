"""An example agent with an HTTP endpoint that answers probe tasks (docs/verification.md).

It claims code_generation and text_generation and answers tasks POSTed as JSON
(``{"capability": ..., "input": ...}``) at ``/tasks``: code_generation returns a Hello World
program, text_generation a one-line summary of the input. With ``--wrong`` it answers
code_generation with the wrong program and text_generation with HTTP 500, so a verifier
marks both Failed. A real agent would call its model here; this one is canned.

    python examples/probe_agent.py --port 8765            # answers correctly
    python examples/probe_agent.py --port 8766 --wrong    # answers wrongly
    curl -s -X POST http://127.0.0.1:8765/tasks -d '{"capability": "code_generation",
        "input": "write hello world in python"}'

With ``--registry URL`` (and ``--token``, a node token for its name) it also registers
itself and stays registered (``NodeAgent``); ``--claims`` picks what it claims at first, and
``POST /capabilities`` changes its claims at runtime, without re-registering
(``NodeAgent.add_capability``/``remove_capability``)::

    python examples/probe_agent.py --port 8765 --registry http://127.0.0.1:8080 \
        --claims code_generation
    curl -s -X POST http://127.0.0.1:8765/capabilities \
        -d '{"add": {"name": "text_generation", "version": "1.0"}}'
    curl -s -X POST http://127.0.0.1:8765/capabilities -d '{"remove": "text_generation"}'
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from node_registry.agent import NodeAgent
from node_registry.errors import RegistryError

CAPABILITIES: list[dict[str, Any]] = [
    {"name": "code_generation", "version": "1.0", "params": {"languages": ["python"]}},
    {"name": "text_generation", "version": "1.0"},
]


def passport(name: str, address: str, claims: list[str] | None = None) -> dict[str, Any]:
    """This agent's passport: an http endpoint at ``address`` (.../tasks); ``claims``: the
    capabilities it claims (default: both it serves)."""
    capabilities = [c for c in CAPABILITIES if claims is None or c["name"] in claims]
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "name": name,
            "nodeType": "agent",
        },
        "spec": {
            "capabilities": capabilities,
            "endpoint": {"protocol": "http", "address": address},
            "maxConcurrentTasks": 2,
        },
    }


def _code(task: str, wrong: bool) -> JSONResponse:
    program = 'print("Goodbye")\n' if wrong else 'print("Hello, World!")\n'
    return JSONResponse({"language": "python", "output": program})


def _text(task: str, wrong: bool) -> JSONResponse:
    if wrong:
        return JSONResponse({"error": "model crashed"}, status_code=500)
    first = task.split(".", maxsplit=1)[0].strip()
    return JSONResponse({"output": f"Summary: {first}."})


_HANDLERS = {"code_generation": _code, "text_generation": _text}


def create_app(*, wrong: bool = False, agent: NodeAgent | None = None) -> Starlette:
    """The agent's ASGI app; ``wrong`` makes it answer every probe wrongly; with the
    ``agent`` that keeps it registered, ``POST /capabilities`` changes its claims."""

    async def tasks(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "the task is not JSON"}, status_code=400)
        handler = _HANDLERS.get(body.get("capability")) if isinstance(body, dict) else None
        if handler is None:
            return JSONResponse({"error": "capability not served here"}, status_code=404)
        return handler(str(body.get("input", "")), wrong)

    async def capabilities(request: Request) -> JSONResponse:
        if agent is None:
            return JSONResponse({"error": "not run with --registry"}, status_code=404)
        try:
            body = json.loads(await request.body())
            if "add" in body:
                added = body["add"]
                agent.add_capability(added["name"], added.get("version"), added.get("params"))
            if "remove" in body:
                agent.remove_capability(body["remove"])
        except (ValueError, TypeError, KeyError, RegistryError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        claims = [c.model_dump(mode="json", exclude_none=True) for c in agent.capabilities]
        return JSONResponse({"capabilities": claims})

    return Starlette(
        routes=[
            Route("/tasks", tasks, methods=["POST"]),
            Route("/capabilities", capabilities, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--name", default="ai-agent-probe-01")
    parser.add_argument("--wrong", action="store_true", help="answer every probe wrongly")
    parser.add_argument("--registry", help="register with the registry at this URL")
    parser.add_argument("--token", help="the node token for --name (a registry with tokens)")
    parser.add_argument("--claims", nargs="*", help="capabilities claimed at first (default: all)")
    args = parser.parse_args()
    address = f"http://127.0.0.1:{args.port}/tasks"
    doc = passport(args.name, address, args.claims)
    print(json.dumps(doc))  # the passport, to register it
    agent = None
    if args.registry:
        agent = NodeAgent(doc, endpoints=args.registry, token=args.token, detect=False)
        agent.start_in_thread()
    try:
        app = create_app(wrong=args.wrong, agent=agent)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    finally:
        if agent is not None:
            agent.stop()


if __name__ == "__main__":
    main()
