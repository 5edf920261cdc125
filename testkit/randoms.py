"""Random sources for tests of jittered waits: seeded, and telling what they were asked to draw."""

from __future__ import annotations

import random


class DrawLog(random.Random):
    """A seeded RNG that records the bounds of every ``uniform(a, b)`` draw.

    ``ceilings`` holds each ``b`` (for a full-jitter backoff, the ceiling of that wait, seconds);
    ``draws`` holds ``(a, b, value)``.
    """

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.draws: list[tuple[float, float, float]] = []

    @property
    def ceilings(self) -> list[float]:
        return [b for _, b, _ in self.draws]

    def uniform(self, a: float, b: float) -> float:
        value = super().uniform(a, b)
        self.draws.append((a, b, value))
        return value
