"""Live 1-second bars per symbol, built incrementally from the engine's tick stream.

The engine feeds every new trade to :meth:`LiveBars.update` (O(1)); closed bars go into a
bounded columnar ring, the open bar stays in the :class:`~analytics.bars.BarBuilder`. Coarser
timeframes (1 min, 5 min) are aggregated from these 1 s bars on read
(:func:`analytics.bars.rebar`), which is exact for OHLCV and costs one builder per symbol on the
hot path instead of three.

Bars before the first live bar (history from earlier runs) come from the database, not from
here; :attr:`first_start_ms` tells readers where live bars begin.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from analytics.bars import BAR_COLUMNS, Bar, BarBuilder, bars_frame_from_columns
from ingestion.ring import ColumnRing
from records import Trade

BASE_INTERVAL_MS = 1_000
_DTYPES = {"start_ms": np.int64, **{c: (np.int64 if c == "trades" else np.float64) for c in BAR_COLUMNS}}


class LiveBars:
    """Per-symbol 1 s bars: a builder for the open bar and a ring of the last ``capacity`` closed ones."""

    def __init__(self, capacity: int = 26 * 3600) -> None:
        self.capacity = capacity
        self._builders: dict[str, BarBuilder] = {}
        self._rings: dict[str, ColumnRing] = {}
        self._first_start: dict[str, int] = {}
        self._lock = threading.Lock()
        self.version = 0  # bumped whenever a bar closes; lets readers cache derived results

    def update(self, trade: Trade) -> None:
        """Add one trade (source thread)."""
        with self._lock:
            builder = self._builders.get(trade.symbol)
            if builder is None:
                builder = self._builders[trade.symbol] = BarBuilder(BASE_INTERVAL_MS)
                self._rings[trade.symbol] = ColumnRing(self.capacity, _DTYPES)
                self._first_start[trade.symbol] = trade.ts_ms - trade.ts_ms % BASE_INTERVAL_MS
            self._store(trade.symbol, builder.update(trade.ts_ms, trade.price, trade.qty))

    def advance(self, market_now_ms: int) -> None:
        """Close open bars whose interval ended before ``market_now_ms`` (UTC epoch ms)."""
        with self._lock:
            for symbol, builder in self._builders.items():
                self._store(symbol, builder.advance(market_now_ms))

    def _store(self, symbol: str, closed: list[Bar]) -> None:
        if not closed:
            return
        ring = self._rings[symbol]
        for bar in closed:
            ring.append({"start_ms": bar.start_ms, "open": bar.open, "high": bar.high, "low": bar.low,
                         "close": bar.close, "volume": bar.volume, "trades": bar.trades, "vwap": bar.vwap})
        self.version += 1

    def first_start_ms(self, symbol: str) -> int | None:
        """Start of the first live bar of a symbol (UTC epoch ms), None before its first trade."""
        return self._first_start.get(symbol)

    def open_bar(self, symbol: str) -> Bar | None:
        """The 1 s bar still forming, or None."""
        with self._lock:
            builder = self._builders.get(symbol)
            return None if builder is None else builder.open_bar

    def closed(self, symbol: str, since_ms: int | None = None) -> pd.DataFrame:
        """Closed 1 s bars of a symbol (frame layout of :mod:`analytics.bars`), oldest first."""
        with self._lock:
            ring = self._rings.get(symbol)
            if ring is None:
                columns = {name: np.empty(0, dtype) for name, dtype in _DTYPES.items()}
            else:
                # Copy only the rows asked for: the page asks for the forming bar's few seconds of a day's ring.
                starts = ring.column("start_ms")
                last = len(starts) - (0 if since_ms is None else int(np.searchsorted(starts, since_ms, side="left")))
                columns = {name: ring.column(name, last) for name in _DTYPES}
        return bars_frame_from_columns(columns.pop("start_ms"), columns)
