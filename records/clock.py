"""The time a component reads and waits on, as one injectable value.

Code that paces itself against time (the offline sources' emission loop, the WebSocket reconnect
backoff) takes a :class:`Clock` instead of calling ``time`` directly, so a test can hand it a clock
that moves only when something waits on it and assert on exact waits instead of on how fast the
machine happened to be. :data:`SYSTEM_CLOCK` is the real one.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from records.market import now_ms


class Clock(Protocol):
    """Monotonic seconds, wall-clock epoch milliseconds, and an interruptible wait."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (only differences mean anything)."""
        ...

    def now_ms(self) -> int:
        """Wall-clock UTC time, integer epoch milliseconds."""
        ...

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` or until ``stop`` is set, whichever comes first; True if ``stop`` is set."""
        ...


class SystemClock:
    """The machine's clocks: ``time.monotonic``, :func:`records.now_ms` and ``Event.wait``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return now_ms()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(seconds)

    def __repr__(self) -> str:
        return "SYSTEM_CLOCK"


SYSTEM_CLOCK: Clock = SystemClock()
