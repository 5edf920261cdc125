"""Bounded in-memory buffer of recent ticks per symbol, for live views.

Each symbol keeps fixed-capacity numpy ring buffers, so memory is bounded by configuration
(``capacity`` ticks per symbol, 32 bytes each) no matter how long the process runs, appends are
O(1) and a snapshot is a couple of slice copies rather than a walk over Python objects.
"""

from __future__ import annotations

import threading

import numpy as np

from ingestion.records import Trade
from storage.base import TickArrays


class _Ring:
    __slots__ = ("count", "price", "qty", "trade_id", "ts_ms")

    def __init__(self, capacity: int) -> None:
        self.trade_id = np.zeros(capacity, np.int64)
        self.ts_ms = np.zeros(capacity, np.int64)
        self.price = np.zeros(capacity, np.float64)
        self.qty = np.zeros(capacity, np.float64)
        self.count = 0  # total ever appended; the write position is count % capacity

    def ordered(self, column: np.ndarray) -> np.ndarray:
        capacity = len(column)
        if self.count <= capacity:
            return column[: self.count].copy()
        head = self.count % capacity
        return np.concatenate((column[head:], column[:head]))


class TickBuffer:
    """Recent ticks per symbol, oldest dropped first. Safe for one writer and many readers."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._rings: dict[str, _Ring] = {}
        self._last: dict[str, Trade] = {}
        self._lock = threading.Lock()

    def append(self, trade: Trade) -> None:
        with self._lock:
            ring = self._rings.get(trade.symbol)
            if ring is None:
                ring = self._rings[trade.symbol] = _Ring(self.capacity)
            i = ring.count % self.capacity
            ring.trade_id[i] = trade.trade_id
            ring.ts_ms[i] = trade.ts_ms
            ring.price[i] = trade.price
            ring.qty[i] = trade.qty
            ring.count += 1
            self._last[trade.symbol] = trade

    def last(self, symbol: str) -> Trade | None:
        """The most recent trade of a symbol, or None."""
        return self._last.get(symbol)

    def symbols(self) -> list[str]:
        with self._lock:
            return list(self._rings)

    def total(self, symbol: str) -> int:
        """Ticks ever appended for a symbol (including those already evicted)."""
        ring = self._rings.get(symbol)
        return 0 if ring is None else ring.count

    def snapshot(self, symbol: str, since_ms: int | None = None) -> TickArrays:
        """Copy of the buffered ticks of a symbol (optionally only ``ts_ms >= since_ms``), oldest first."""
        with self._lock:
            ring = self._rings.get(symbol)
            if ring is None:
                return TickArrays.empty()
            arrays = TickArrays(ring.ordered(ring.trade_id), ring.ordered(ring.ts_ms),
                                ring.ordered(ring.price), ring.ordered(ring.qty))
        if since_ms is None:
            return arrays
        # Per-symbol exchange times are non-decreasing, so the cut is a binary search.
        start = int(np.searchsorted(arrays.ts_ms, since_ms, side="left"))
        return TickArrays(arrays.trade_id[start:], arrays.ts_ms[start:], arrays.price[start:], arrays.qty[start:])
