"""The one retry schedule of the client, the informer and the node runtime: full-jitter backoff.

Every caller that waits before trying the registry again draws its pause here, so a fleet
that failed together (a registry restart, a network cut) does not come back together:

- the ceiling doubles per failure from ``base`` (Kubernetes' node-status backoff: 200 ms)
  up to ``cap`` (7 s, below the default 10 s renewal interval, so a recovered registry hears
  from every node within one interval);
- the pause is drawn uniformly in ``[0, ceiling]`` ("full jitter"): of the schedules AWS
  measured for clients contending for one server, the one with the fewest calls and the
  earliest completion. A plain doubling keeps a fleet that failed at one moment in
  lock-step for ever; jitter of ±10 % only blurs it.

The random source is a parameter, so a test replays a schedule exactly with a seeded
``random.Random``.
"""

from __future__ import annotations

import random

#: The first ceiling and the last (seconds).
BASE = 0.2
CAP = 7.0
#: Far past any cap; keeps 2.0 ** n finite after however many failures.
_MAX_DOUBLINGS = 32
_RANDOM = random.Random()


def ceiling(attempt: int, *, base: float = BASE, cap: float = CAP) -> float:
    """The longest pause before retry ``attempt`` (1, 2, ...): ``base`` doubling up to ``cap``."""
    doublings = min(max(attempt, 1) - 1, _MAX_DOUBLINGS)
    return float(min(base * 2.0**doublings, cap))


def backoff(
    attempt: int,
    *,
    base: float = BASE,
    cap: float = CAP,
    rng: random.Random | None = None,
) -> float:
    """The pause before retry ``attempt`` (1, 2, ...): uniform in ``[0, ceiling(attempt)]``."""
    return (rng or _RANDOM).uniform(0.0, ceiling(attempt, base=base, cap=cap))
