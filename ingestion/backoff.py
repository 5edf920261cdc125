"""Reconnect pacing: capped exponential backoff with full jitter, plus a hard attempt budget.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads reconnecting clients
apart after a shared outage; the schedule is the project's one retry policy
(:class:`records.retry.RetryPolicy`), with no attempt or time limit: a source reconnects until it
is stopped. The sliding-window budget guarantees we stay under Binance's limit of 300 connection
attempts per 5 minutes per IP whatever the draws are.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

from records import retry


class Backoff(retry.EndlessBackoff):
    """Delays for consecutive failed attempts: ``uniform(0, min(cap, initial * 2**n))`` seconds, never giving up."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial}, cap={cap}")
        super().__init__(retry.RetryPolicy(base_s=initial, cap_s=cap), rng=rng)
        self.initial = initial
        self.cap = cap


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
