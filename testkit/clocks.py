"""A clock for tests: time moves only when the test advances it or the code under test waits on it.

Tests of pacing, backoff and bans assert on what the code *asked to wait* and on the time it read,
never on how long the machine took: a busy 2-core CI machine cannot fail them, and a fast one
cannot pass them without the waits being right.
"""

from __future__ import annotations

import threading
import time

from records.clock import SystemClock


class ManualClock:
    """Seconds that start at ``start_s`` and move only by :meth:`advance` or :meth:`wait`.

    Satisfies :class:`records.clock.Clock` (``monotonic``, ``now_ms``, ``wait``) and is also a plain
    ``() -> float`` seconds callable for code that takes ``clock=`` as a function (e.g.
    ``BinanceRest``, where it stands for epoch seconds). ``reads`` counts how often the time was
    read; ``waits`` lists every wait asked for, in seconds, in order (the code's schedule).

    ``wait`` advances the clock by the whole wait at once, unless ``stop`` is already set (then it
    returns True at once, as ``Event.wait`` would). Thread-safe.
    """

    def __init__(self, start_s: float = 1_800_000_000.0) -> None:
        self._now = float(start_s)
        self._lock = threading.Lock()
        self.reads = 0
        self.waits: list[float] = []

    def __call__(self) -> float:
        """The current time, seconds (counted in ``reads``)."""
        with self._lock:
            self.reads += 1
            return self._now

    def monotonic(self) -> float:
        """The current time, seconds (counted in ``reads``)."""
        return self()

    def now_ms(self) -> int:
        """The current time as integer epoch milliseconds, to the nearest one (float steps such as
        0.4 s then land on whole milliseconds, not a hair below)."""
        return round(self() * 1000)

    def advance(self, seconds: float) -> None:
        """Move the time ``seconds`` forward (never back: a negative step is refused)."""
        if not seconds >= 0:
            raise ValueError(f"seconds: {seconds!r} must be >= 0 (a clock never goes back)")
        with self._lock:
            self._now += seconds

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Record the wait and move the time by it; True if ``stop`` is set (then no time passes)."""
        if stop.is_set():
            return True
        with self._lock:
            self.waits.append(seconds)
            self._now += max(0.0, seconds)
        return stop.is_set()


class RecordingClock(SystemClock):
    """The machine's time and real waits, with every wait asked for recorded in ``waits`` (seconds, in order).

    For code that must keep talking to a real peer while it waits (a reconnect loop against a fake
    server), where a :class:`ManualClock` would turn its waits into a busy loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waits: list[float] = []

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        with self._lock:
            self.waits.append(seconds)
        return super().wait(stop, seconds)

    def __repr__(self) -> str:
        return f"RecordingClock({len(self.waits)} waits)"


class SlowClock(SystemClock):
    """The machine's time run ``slowdown`` times slower: monotonic seconds since construction are
    divided by it, and every wait is stretched by it (wall-clock ``now_ms`` stays the machine's).

    For a test whose outcome must not hinge on a timeout that only guards a rare path (a fallback
    that a busy machine could reach first), while everything else still runs against real peers.
    """

    def __init__(self, slowdown: float) -> None:
        if not slowdown >= 1:
            raise ValueError(f"slowdown: {slowdown!r} must be >= 1")
        self.slowdown = float(slowdown)
        self._origin = time.monotonic()

    def monotonic(self) -> float:
        return self._origin + (time.monotonic() - self._origin) / self.slowdown

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(seconds * self.slowdown)

    def __repr__(self) -> str:
        return f"SlowClock({self.slowdown:g}x)"
