"""How a probe task reaches a node: a one-method ``Transport`` per endpoint protocol.

``HttpTransport`` POSTs the task as JSON to ``spec.endpoint.address`` for ``http`` and
``https`` endpoints. MindBus (AMQP) is the data plane's own (seed 2.7); a transport for it
plugs in under the protocol name ``mindbus`` without changing the runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from node_registry.passport.models import Endpoint

#: An answer larger than this is not read further (a probe answer is small).
MAX_RESPONSE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ProbeResponse:
    status: int
    body: bytes


class TransportError(Exception):
    """The task did not get an answer; ``reason`` is Timeout, ConnectionFailed or
    InvalidResponse, the message says what happened."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Transport(Protocol):
    async def send(
        self, endpoint: Endpoint, task: Mapping[str, Any], *, timeout: float
    ) -> ProbeResponse: ...


class HttpTransport:
    """POST the task to the endpoint's URL; the client is the caller's (it owns pooling)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(
        self, endpoint: Endpoint, task: Mapping[str, Any], *, timeout: float
    ) -> ProbeResponse:
        try:
            async with self._client.stream(
                "POST", endpoint.address, json=dict(task), timeout=timeout
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise TransportError(
                            "InvalidResponse", f"the answer is over {MAX_RESPONSE_BYTES} bytes"
                        )
                return ProbeResponse(response.status_code, bytes(body))
        except httpx.TimeoutException:
            raise TransportError("Timeout", f"no answer within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise TransportError(
                "ConnectionFailed", f"{type(exc).__name__}: {exc or 'no detail'}"
            ) from None
