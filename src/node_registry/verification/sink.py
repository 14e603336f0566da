"""Where a verifier records results: the ``ResultSink`` seam, and an in-memory sink.

The registry will own the stored results (a status only a verifier or an admin may write);
until that is wired, anything with an async ``record`` will do.
"""

from __future__ import annotations

from typing import Protocol

from node_registry.passport.verification import CapabilityVerification, NodeVerification


class ResultSink(Protocol):
    """Records one node's new results; results of capabilities not in it are kept."""

    async def record(self, verification: NodeVerification) -> None: ...


class MemorySink:
    """Results in a dict, by node uid then capability; for tests and embedded use."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, CapabilityVerification]] = {}
        #: Every ``record`` call in order, for tests that count rounds.
        self.recorded: list[NodeVerification] = []

    async def record(self, verification: NodeVerification) -> None:
        self.recorded.append(verification)
        stored = self.results.setdefault(verification.node_uid, {})
        stored.update((r.capability, r) for r in verification.results)

    def results_for(self, node_uid: str) -> dict[str, CapabilityVerification]:
        return dict(self.results.get(node_uid, {}))

    def __repr__(self) -> str:
        return f"MemorySink(nodes={len(self.results)})"
