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


def passport(name: str, address: str) -> dict[str, Any]:
    """This agent's passport: an http endpoint at ``address`` (.../tasks)."""
    return {
        "apiVersion": "ai_team.io/v1",
        "kind": "NodePassport",
        "metadata": {
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "name": name,
            "nodeType": "agent",
        },
        "spec": {
            "capabilities": [
                {"name": "code_generation", "version": "1.0", "params": {"languages": ["python"]}},
                {"name": "text_generation", "version": "1.0"},
            ],
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
    first = task.split(".")[0].strip()
    return JSONResponse({"output": f"Summary: {first}."})


_HANDLERS = {"code_generation": _code, "text_generation": _text}


def create_app(*, wrong: bool = False) -> Starlette:
    """The agent's ASGI app; ``wrong`` makes it answer every probe wrongly."""

    async def tasks(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "the task is not JSON"}, status_code=400)
        handler = _HANDLERS.get(body.get("capability")) if isinstance(body, dict) else None
        if handler is None:
            return JSONResponse({"error": "capability not served here"}, status_code=404)
        return handler(str(body.get("input", "")), wrong)

    return Starlette(routes=[Route("/tasks", tasks, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--name", default="ai-agent-probe-01")
    parser.add_argument("--wrong", action="store_true", help="answer every probe wrongly")
    args = parser.parse_args()
    address = f"http://127.0.0.1:{args.port}/tasks"
    print(json.dumps(passport(args.name, address)))  # the passport, to register it
    uvicorn.run(create_app(wrong=args.wrong), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
