"""Bounded in-memory buffer of recent ticks per symbol, for live views.

Each symbol keeps a fixed-capacity columnar ring, so memory is bounded by configuration
(``capacity`` ticks per symbol, 32 bytes each) no matter how long the process runs, appends are
O(1) and a snapshot is a couple of slice copies rather than a walk over Python objects.
"""

from __future__ import annotations

import threading

import numpy as np

from ingestion.records import Trade
from ingestion.ring import ColumnRing
from storage.base import TickArrays

_TICK_COLUMNS = {"trade_id": np.int64, "ts_ms": np.int64, "price": np.float64, "qty": np.float64}


class TickBuffer:
    """Recent ticks per symbol, oldest dropped first. Safe for one writer and many readers."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rings: dict[str, ColumnRing] = {}
        self._last: dict[str, Trade] = {}
        self._lock = threading.Lock()

    def append(self, trade: Trade) -> None:
        with self._lock:
            ring = self._rings.get(trade.symbol)
            if ring is None:
                ring = self._rings[trade.symbol] = ColumnRing(self.capacity, _TICK_COLUMNS)
            ring.append({"trade_id": trade.trade_id, "ts_ms": trade.ts_ms, "price": trade.price, "qty": trade.qty})
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
            arrays = TickArrays(*(ring.column(name) for name in _TICK_COLUMNS))
        if since_ms is None:
            return arrays
        # Per-symbol exchange times are non-decreasing, so the cut is a binary search.
        start = int(np.searchsorted(arrays.ts_ms, since_ms, side="left"))
        return TickArrays(arrays.trade_id[start:], arrays.ts_ms[start:], arrays.price[start:], arrays.qty[start:])
