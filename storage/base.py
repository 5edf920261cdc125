"""The storage boundary: what the engine and the UI need from a tick store.

SQLite implements it today (:mod:`storage.sqlite`); a PostgreSQL/TimescaleDB store for several
desks would implement the same protocol without touching analytics or UI code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ingestion.records import EventKind, FeedEvent, Trade


@dataclass(frozen=True, slots=True)
class TickArrays:
    """Column arrays of one symbol's ticks, time-ordered. ``ts_ms``: epoch ms (int64)."""

    trade_id: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray

    @classmethod
    def empty(cls) -> TickArrays:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0))

    def __len__(self) -> int:
        return len(self.ts_ms)


class TickStore(Protocol):
    """Persistent ticks and feed events. Implementations are used from one thread each."""

    def write_batch(self, trades: Sequence[Trade], events: Sequence[FeedEvent] = ()) -> int: ...

    def ticks(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> TickArrays: ...

    def last_trade_ids(self) -> dict[str, int]: ...

    def feed_events(
        self, *, since_ms: int | None = None, kinds: Iterable[EventKind] | None = None, limit: int = 500
    ) -> list[FeedEvent]: ...

    def prune(self, before_ms: int) -> int: ...

    def close(self) -> None: ...
