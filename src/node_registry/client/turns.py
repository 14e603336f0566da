"""The async client's turns: at most so many calls in flight, renewals before the rest.

One client may carry the calls of thousands of agents (a host's, on one ``SharedClient``).
When they all start at once, 10,000 calls (a registration and a status report each) wait
here for one of the client's turns, and a first-come order puts every renewal of a node
already registered, and every agent's status report, behind every registration still
waiting: in a 5,000-agent storm on a loaded machine, renewals waited past the client's
timeout, registered nodes went silent and were registered again, and status reports timed
out unsent (docs/benchmarks.md, the agent storm). So the calls that keep a registered node
alive (``Call.keeps_alive``: a lease, a batch of leases, a status report) take the next
free turn before the others, as the server's own flow control puts node writes first;
still, of every ``URGENT_RUN + 1`` turns given while both kinds wait, one goes to the
others, so a flood of renewals cannot starve registrations for good. Within a kind, first
come, first served. A waiter that gives up (its timeout) leaves its place to the next.
"""

from __future__ import annotations

import asyncio
from collections import deque

#: Turns given in a row to renewals while other calls wait, before one of those goes.
URGENT_RUN = 3


class Turns:
    """``await turns.acquire(urgent=...)`` ... ``turns.release()``: ``limit`` at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = limit
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._other: deque[asyncio.Future[None]] = deque()
        self._run = 0

    def __repr__(self) -> str:
        return f"Turns({self.limit})"

    @property
    def in_use(self) -> int:
        return self.limit - self._free

    async def acquire(self, *, urgent: bool = False) -> None:
        if self._free > 0:  # free turns and waiters never coexist: release hands turns over
            self._free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._other).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a turn as it gave up: the next waiter's now
            raise

    def release(self) -> None:
        turn = self._next()
        if turn is None:
            self._free += 1
        else:
            turn.set_result(None)

    def _next(self) -> asyncio.Future[None] | None:
        """The waiter that gets the turn being released; those that gave up are dropped."""
        for lane in (self._urgent, self._other):
            while lane and lane[0].done():
                lane.popleft()
        if self._urgent and (not self._other or self._run < URGENT_RUN):
            self._run = self._run + 1 if self._other else 0
            return self._urgent.popleft()
        self._run = 0
        return self._other.popleft() if self._other else None
