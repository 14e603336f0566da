"""When the node runtime calls the registry next: jittered renewals, and the one backoff.

Pure functions of their inputs (the random source is passed in), so the runtime's schedule is
tested exactly, without waiting.
"""

from __future__ import annotations

import random

from node_registry.client.backoff import BASE, CAP, backoff

#: ±10 % on every renewal: a fleet started together (a rollout, a power cut) would otherwise
#: renew in lock-step forever and hit the registry in bursts (client-go's JitterUntil).
JITTER = 0.1
#: Kubernetes' node-status update backoff: 200 ms doubling up to 7 s, as ceilings of a full
#: jitter (``client.backoff``). The cap stays below the default 10 s renewal interval, so a
#: recovered registry hears from every node within one interval.
BACKOFF_INITIAL = BASE
BACKOFF_MAX = CAP
#: The first registration waits up to this long (full jitter, and never more than one renewal
#: interval): a fleet powered on together registers spread over a second instead of at once.
START_JITTER = 1.0


def renewal_delay(interval: float, rng: random.Random) -> float:
    """``interval`` ± ``JITTER``, drawn from ``rng``."""
    return interval * (1.0 + rng.uniform(-JITTER, JITTER))


def backoff_delay(failures: int, rng: random.Random) -> float:
    """The pause after ``failures`` consecutive failures (1, 2, ...): uniform in [0, ceiling],
    the ceiling 0.2, 0.4, 0.8 ... 7 s."""
    return backoff(failures, base=BACKOFF_INITIAL, cap=BACKOFF_MAX, rng=rng)


def start_delay(limit: float, rng: random.Random) -> float:
    """The pause before the first registration: uniform in [0, ``limit``]."""
    return rng.uniform(0.0, limit) if limit > 0 else 0.0
