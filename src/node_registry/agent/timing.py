"""When the node runtime calls the registry next: jittered renewals, capped exponential backoff.

Pure functions of their inputs (the random source is passed in), so the runtime's schedule is
tested exactly, without waiting.
"""

from __future__ import annotations

import random

#: ±10 % on every renewal: a fleet started together (a rollout, a power cut) would otherwise
#: renew in lock-step forever and hit the registry in bursts (client-go's JitterUntil).
JITTER = 0.1
#: Kubernetes' node-status update backoff: 200 ms doubling up to 7 s. The cap stays below the
#: default 10 s renewal interval, so a recovered registry hears from every node within one
#: interval. Not jittered: nodes fail at different points of their own jittered schedules
#: already, and an exact sequence is what an operator reads in the logs.
BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 7.0
_MAX_DOUBLINGS = 16  # far past the cap; keeps 2**n small whatever the failure count


def renewal_delay(interval: float, rng: random.Random) -> float:
    """``interval`` ± ``JITTER``, drawn from ``rng``."""
    return interval * (1.0 + rng.uniform(-JITTER, JITTER))


def backoff_delay(failures: int) -> float:
    """The pause after ``failures`` consecutive failures (1, 2, ...): 0.2, 0.4, 0.8 ... 7."""
    doublings = min(max(failures, 1) - 1, _MAX_DOUBLINGS)
    return min(BACKOFF_INITIAL * 2.0**doublings, BACKOFF_MAX)
