"""Generated research stores: random-walk closes with planted cointegrated pairs, written month by month
through :meth:`storage.research.ResearchStore.write_month` (tests and ``bench/research_scan.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from domain import Market, Timeframe
from storage.research import ResearchStore, months_between


def universe_closes(symbols: Sequence[str], bars: int, *, seed: int = 0, planted: Sequence[tuple[str, str]] = (),
                    step: float = 0.001) -> np.ndarray:
    """Closes (bars, len(symbols)): geometric random walks (log step ``step``); for each planted
    ``(y, x)``, y = 0.8·x + 3 + stationary AR(1) noise (cointegrated with β = 0.8)."""
    rng = np.random.default_rng(seed)
    closes = np.exp(np.cumsum(rng.normal(0.0, step, (bars, len(symbols))), axis=0)) * rng.uniform(10, 100, len(symbols))
    where = {s: i for i, s in enumerate(symbols)}
    for y, x in planted:
        noise = np.zeros(bars)
        shocks = rng.normal(0.0, 0.05, bars)
        for t in range(1, bars):
            noise[t] = 0.9 * noise[t - 1] + shocks[t]
        closes[:, where[y]] = 0.8 * closes[:, where[x]] + 3.0 + noise
    return closes


def write_universe(store: ResearchStore, market: Market, timeframe: Timeframe, symbols: Sequence[str],
                   start_ms: int, closes: np.ndarray, *, first_bar: dict[str, int] | None = None) -> None:
    """Write ``closes`` (bars, len(symbols)) from ``start_ms`` on, one file per symbol and month.
    ``first_bar``: a symbol listed late has no bars before that row."""
    times = start_ms + timeframe.ms * np.arange(len(closes), dtype=np.int64)
    for column, symbol in enumerate(symbols):
        begin = (first_bar or {}).get(symbol, 0)
        for month in months_between(int(times[begin]), int(times[-1]) + 1):
            period = pd.Period(month, freq="M")
            lo, hi = (p.start_time.value // 1_000_000 for p in (period, period + 1))
            rows = np.flatnonzero((times >= lo) & (times < hi) & (np.arange(len(times)) >= begin))
            close = closes[rows, column]
            store.write_month(market, timeframe, symbol, month, pd.DataFrame({
                "open_time": times[rows], "open": close, "high": close, "low": close, "close": close,
                "volume": 1.0, "quote_volume": close, "trades": np.ones(len(rows), dtype=np.int64)}))
