"""Garbage collection for a server holding 100,000 nodes: the stored nodes out of full GCs.

CPython's full collection walks every tracked object, and a registry's nodes are millions of
them (passports, labels, records): 1.4 s at 50,000 nodes and 4 s at 100,000, each a stall
of the event loop that shows up as heartbeat p99. The stored versions are immutable and
long-lived, so they are frozen (``gc.freeze``: moved to a generation collections never
walk) once at start-up and again each time the writes since the last freeze reach a share
of the registry: a full collection then walks only what changed since, and a version a
write replaces is still freed by its reference count. Freezing right after a young
collection keeps the short-lived garbage out of the frozen set; what cyclic garbage the old
generation holds at that moment stays (a few objects per freeze, O(log N) freezes as the
registry grows).

The young generation's threshold is raised too: a list or a watch replay allocates tens of
thousands of objects, and at 700 per young collection each of those collections promotes
them on towards the old generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from node_registry.errors import RegistryError

log = logging.getLogger("node_registry.server")

#: Writes since the last freeze, as a share of the nodes, that make the next one.
REFREEZE_SHARE = 0.25
#: ... and at least this many: a small registry's full collection costs nothing anyway.
REFREEZE_MIN_WRITES = 1000
#: How often the writes are looked at (a freeze itself costs one young collection).
CHECK_SECONDS = 10.0
#: gc.set_threshold: young collections every 20,000 allocations (CPython's default is 700).
THRESHOLDS = (20_000, 10, 10)


@dataclass
class GcTuning:
    """Freezes the long-lived heap when ``writes()`` moved on far enough for ``nodes()``."""

    nodes: Callable[[], int]
    writes: Callable[[], int]
    frozen_at: int = 0
    freezes: int = 0

    def freeze(self) -> None:
        gc.collect(1)
        gc.freeze()
        self.frozen_at = self.writes()
        self.freezes += 1

    def check(self) -> bool:
        """Freeze again if the writes since the last freeze call for it; whether it did."""
        due = max(REFREEZE_MIN_WRITES, int(self.nodes() * REFREEZE_SHARE))
        if self.writes() - self.frozen_at < due:
            return False
        self.freeze()
        return True

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Tuned while the server serves: thresholds, a freeze now, the periodic check."""
        previous = gc.get_threshold()
        gc.set_threshold(*THRESHOLDS)
        self.freeze()
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            gc.set_threshold(*previous)
            # Several apps may share a process (tests): whatever this one froze is
            # collectable again once it stops.
            gc.unfreeze()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                if self.check():
                    log.debug("froze the heap (%d objects frozen)", gc.get_freeze_count())
            except RegistryError:
                pass  # the store's view is down: no count to go by, look again next time
