"""Clocks: the one place the registry reads the time, so tests can move it by hand.

A clock gives two readings: wall-clock time (``now``), which NTP may step forward or
back, and a monotonic count of seconds (``monotonic``), which only moves forward at the
pace of real time. The registry measures every duration (silence, grace periods, lease
ages) on ``steady(clock)``: wall-clock time read once, then moved by the monotonic
count only. A step of the wall clock after that changes no verdict (issue #10, item 11);
the times shown drift from the wall clock by the steps made since the process started.
"""

from __future__ import annotations

import threading
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in UTC, and monotonic seconds for durations."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


#: The real clock every part of the process shares when none is given (one steady line).
SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to; lifecycle tests run in milliseconds with it.

    ``advance`` moves both readings (time passes); ``step`` moves the wall clock only, as
    an NTP step does.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._monotonic = 1_000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._monotonic += seconds
            return self._now

    def step(self, seconds: float) -> datetime:
        """Step the wall clock by ``seconds`` (negative: back); monotonic time stays."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()!r})"


class SteadyClock:
    """``base``'s wall-clock time when first read, moved on by its monotonic time since."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self._wall = base.now()
        self._start = base.monotonic()

    def now(self) -> datetime:
        return self._wall + timedelta(seconds=self.base.monotonic() - self._start)

    def monotonic(self) -> float:
        return self.base.monotonic()

    def __repr__(self) -> str:
        return f"SteadyClock({self.base!r})"


class _SystemSteady(SteadyClock):
    """``SteadyClock`` of the real clock, read on every heartbeat: through a float offset,
    a third cheaper than adding a timedelta (exact enough: a double holds today's epoch
    seconds to a quarter of a microsecond)."""

    def __init__(self, base: Clock) -> None:
        super().__init__(base)
        self._offset = self._wall.timestamp() - self._start

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._offset + time.monotonic(), UTC)


_steady: weakref.WeakKeyDictionary[Clock, SteadyClock] = weakref.WeakKeyDictionary()
_steady_lock = threading.Lock()


def steady(clock: Clock | None = None) -> SteadyClock:
    """The steady line of ``clock`` (None: the system clock's), the same for every caller.

    A registry and its store compare the instants they read (a renewal against a
    start-up, a store's return), so both must read one line: one ``SteadyClock`` per
    clock object, made on first use.
    """
    base = SYSTEM_CLOCK if clock is None or type(clock) is SystemClock else clock
    if isinstance(base, SteadyClock):
        return base
    with _steady_lock:
        line = _steady.get(base)
        if line is None:
            kind = _SystemSteady if base is SYSTEM_CLOCK else SteadyClock
            line = _steady[base] = kind(base)
        return line
