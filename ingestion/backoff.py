"""Reconnect pacing: capped exponential backoff with full jitter, plus a hard attempt budget.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads reconnecting clients
apart after a shared outage. The sliding-window budget guarantees we stay under Binance's limit
of 300 connection attempts per 5 minutes per IP whatever the draws are.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable


class Backoff:
    """Delays for consecutive failed attempts: ``uniform(0, min(cap, initial * 2**n))`` seconds."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial}, cap={cap}")
        self.initial = initial
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """Upper bound of the next delay, seconds."""
        # min() before the power would overflow for a long outage.
        return min(self.cap, self.initial * 2 ** min(self.failures, 62))

    def next_delay(self) -> float:
        """Delay before the next attempt, seconds; grows the ceiling for the one after."""
        delay = self._rng.uniform(0, self.ceiling())
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Called once a connection has proven stable."""
        self.failures = 0


class AttemptBudget:
    """At most ``limit`` attempts in any ``window_s`` seconds; says how long to wait otherwise."""

    def __init__(self, limit: int = 100, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._attempts: deque[float] = deque()

    def wait_needed(self) -> float:
        """Seconds until another attempt is allowed (0 if allowed now)."""
        now = self._clock()
        while self._attempts and now - self._attempts[0] >= self.window_s:
            self._attempts.popleft()
        if len(self._attempts) < self.limit:
            return 0.0
        return self.window_s - (now - self._attempts[0])

    def record(self) -> None:
        self._attempts.append(self._clock())
