"""Whether one replica's view of etcd is current: the parts of it that fail now, and why.

The view has parts, each kept by a task of the replica: ``feed`` (the watch of the node
records), ``renewals`` (the watch of the renewal digests), ``state`` (the watch of the
controller's published state), ``ticks`` (the replica's lease, digest and seat) and
``starting`` (until the first load). The view is current only while no part fails; the
moment it is current again after an outage is ``resumed_at``, from when on the replica
has seen every renewal again.

A part counts as up only once its stream is open (the follower says so from the stream's
``opened`` callback, not when it starts opening one): a stream whose opening then fails
would otherwise take the view up and straight down again, one 200 from ``/readyz``
followed by 503s.
"""

from __future__ import annotations

import logging
from datetime import datetime

from node_registry.clock import Clock
from node_registry.errors import StoreUnavailableError

log = logging.getLogger("node_registry")

#: The part that fails until the replica's first load is done.
STARTING = "starting"


class View:
    """The failing parts of replica ``name``'s view of etcd at ``endpoint``."""

    def __init__(self, name: str, endpoint: str, clock: Clock) -> None:
        self._name = name
        self._endpoint = endpoint
        self._clock = clock
        self._down: dict[str, BaseException] = {STARTING: StoreUnavailableError("starting")}
        self.resumed_at: datetime | None = None

    def __repr__(self) -> str:
        return f"View({self._name!r}, down={sorted(self._down)})"

    @property
    def current(self) -> bool:
        return not self._down

    @property
    def down(self) -> dict[str, BaseException]:
        """The failing parts and why (a copy)."""
        return dict(self._down)

    def check(self) -> None:
        """Raise ``StoreUnavailableError`` unless the view is current."""
        if self._down:
            raise StoreUnavailableError(
                f"etcd ({self._endpoint}) is unreachable from this replica; its view of "
                "the nodes may be stale, so it answers nothing until etcd is back"
            )

    def set_part(self, part: str, error: BaseException | None) -> None:
        """Record that ``part`` of the view failed (``error``) or works again (None)."""
        was_up = not self._down
        part_was_down = part in self._down
        if error is None:
            self._down.pop(part, None)
        else:
            self._down[part] = error
        if part == STARTING:
            return  # the start is not a recovery: the registry counts from its own start
        # One line per transition of a part, so a view that flaps can be explained.
        if error is None and part_was_down:
            log.warning("replica %s: etcd %s up", self._name, part)
        elif error is not None and not part_was_down:
            log.warning("replica %s: etcd %s down (%s)", self._name, part, error)
        up = not self._down
        if up and not was_up:
            self.resumed_at = self._clock.now()
            log.warning("replica %s: etcd reachable again; view current", self._name)
        elif was_up and not up:
            log.warning(
                "replica %s: lost etcd (%s); answering 503 until it is back", self._name, error
            )
