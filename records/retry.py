"""One retry policy for every caller that tries something again: reconnects, webhooks, REST, storage.

A :class:`RetryPolicy` says how long to wait after the n-th failure and when to give up; it is a
pure value (no clock, no randomness of its own), so a caller whose attempts live in a database
(the webhook outbox) can ask it from counts and ages alone. A :class:`Backoff` follows one run of
attempts through a policy in memory, with an injected clock and random source, for callers that
retry in a loop (the WebSocket reconnects, the REST client, the tick writer); each caller sleeps
the delay itself, with its own interruptible wait.

Delays use AWS's "full jitter" (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/):
``uniform(0, min(cap_s, base_s * factor**n))`` seconds before retry n + 1 (n = 0 for the first
retry), which spreads clients apart after a shared outage. A wait the *server* imposes (HTTP
``Retry-After``) is not part of this schedule: the caller honours it separately.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff, optionally fully jittered, with optional attempt and time limits.

    Attributes:
        base_s: ceiling of the wait after the first failure, seconds (>= 0).
        cap_s: no wait is longer than this, seconds (>= 0; ``inf`` for no cap).
        factor: the ceiling grows by this factor per failure (>= 1; 1 is a constant ceiling).
        jitter: full jitter (a uniform draw below the ceiling) when True; exactly the ceiling when False.
        max_attempts: attempts made at most (the first one included); None for no limit.
        deadline_s: no retry once this long has passed since the first attempt, seconds; None for
            no limit. Checked when a failure is counted: a wait scheduled before it may end after it.
    """

    base_s: float
    cap_s: float
    factor: float = 2.0
    jitter: bool = True
    max_attempts: int | None = None
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        # `not x >= 0` also refuses NaN, which every comparison would silently let through.
        for name in ("base_s", "cap_s"):  # inf is allowed: an infinite base waits the cap, an infinite cap none
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"{name}: {value!r} must be a number of seconds >= 0")
        if not (isinstance(self.factor, int | float) and math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"factor: {self.factor!r} must be a finite number >= 1")
        if self.max_attempts is not None and (
                not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool) or self.max_attempts < 1):
            raise ValueError(f"max_attempts: {self.max_attempts!r} must be an integer >= 1 or None")
        if self.deadline_s is not None and not (isinstance(self.deadline_s, int | float) and self.deadline_s >= 0):
            raise ValueError(f"deadline_s: {self.deadline_s!r} must be a number of seconds >= 0 or None")

    def ceiling_s(self, n: int) -> float:
        """Upper bound of the wait before retry ``n + 1`` (``n`` = retries already made), seconds."""
        if n < 0:
            raise ValueError(f"n: {n!r} must be >= 0 (retries already made)")
        try:
            grown = float(self.base_s) * float(self.factor) ** n  # floats: overflow raises, no big ints
        except OverflowError:  # a long outage: far past the cap anyway
            return self.cap_s
        return min(self.cap_s, grown)

    def delay_s(self, n: int, uniform: Callable[[float, float], float] | None = None) -> float:
        """The wait before retry ``n + 1``, seconds: ``uniform(0, ceiling)`` with jitter, else the ceiling.

        ``uniform`` (e.g. ``random.Random(seed).uniform``) draws the jitter; only an unjittered policy may omit it.
        """
        ceiling = self.ceiling_s(n)
        if not self.jitter:
            return ceiling
        if uniform is None:
            raise ValueError(f"{self} jitters: pass a uniform(low, high) random source")
        return uniform(0.0, ceiling)

    def gives_up(self, attempts: int, elapsed_s: float) -> bool:
        """Whether no retry follows ``attempts`` failed attempts, the first ``elapsed_s`` seconds ago."""
        return ((self.max_attempts is not None and attempts >= self.max_attempts)
                or (self.deadline_s is not None and elapsed_s >= self.deadline_s))

    def next_delay_s(self, attempts: int, elapsed_s: float,
                     uniform: Callable[[float, float], float] | None = None) -> float | None:
        """The wait after ``attempts`` (>= 1) failed attempts, seconds, or None to give up (see :meth:`gives_up`)."""
        if attempts < 1:
            raise ValueError(f"attempts: {attempts!r} must be >= 1 (a delay follows a failed attempt)")
        if self.gives_up(attempts, elapsed_s):
            return None
        return self.delay_s(attempts - 1, uniform)


class Backoff:
    """One run of attempts under a :class:`RetryPolicy`, in memory; not thread-safe (one caller's loop).

    The run starts when the object is made (or :meth:`reset`): ``clock`` (seconds, monotonic by
    default) measures the policy's deadline from then. ``rng`` draws the jitter.
    """

    def __init__(self, policy: RetryPolicy, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self._clock = clock
        self.failures = 0
        self._started = clock()

    def ceiling(self) -> float:
        """Upper bound of the next delay, seconds."""
        return self.policy.ceiling_s(self.failures)

    def failed(self) -> bool:
        """Count one failed attempt without a delay of the policy's own (the server imposed one);
        True if the policy allows another attempt."""
        self.failures += 1
        return not self.policy.gives_up(self.failures, self._clock() - self._started)

    def next_delay(self) -> float | None:
        """Count one failed attempt; the delay before the next one, seconds, or None to give up."""
        self.failures += 1
        return self.policy.next_delay_s(self.failures, self._clock() - self._started, self._rng.uniform)

    def reset(self) -> None:
        """Start a new run (e.g. once a connection has proven stable)."""
        self.failures = 0
        self._started = self._clock()


class EndlessBackoff(Backoff):
    """A :class:`Backoff` that never gives up: for work that must be done in the end (a reconnect,
    a batch of received trades), whose policy has neither ``max_attempts`` nor ``deadline_s``."""

    def __init__(self, policy: RetryPolicy, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if policy.max_attempts is not None or policy.deadline_s is not None:
            raise ValueError(f"{policy} gives up, which this caller must not: "
                             "set neither max_attempts nor deadline_s")
        super().__init__(policy, rng=rng, clock=clock)

    def next_delay(self) -> float:
        """Count one failed attempt; the delay before the next one, seconds."""
        self.failures += 1
        return self.policy.delay_s(self.failures - 1, self._rng.uniform)
