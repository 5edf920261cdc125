"""Generated research stores: random-walk closes with planted cointegrated pairs, written month by month
through :meth:`storage.research.ResearchStore.write_month` (tests and ``bench/research_scan.py``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analytics import rank_pairs, scan_block
from domain import Market, Timeframe
from research.scan import ScanOutcome, ScanSpec, save_scan
from research.walkforward import WalkForwardSettings, walk_forward
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


def stored_scan(results: Path, market: Market, symbols: Sequence[str], *, bars: int = 400, seed: int = 3,
                planted: Sequence[tuple[str, str]] = ()) -> Path:
    """A scan stored by :func:`research.scan.save_scan` in ``results`` (the in-process scan of generated
    1 min closes from 2024-01-01; the store it names need not exist): its folder."""
    start_ms = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
    closes = universe_closes(symbols, bars, seed=seed, planted=planted)
    index = pd.DatetimeIndex(pd.to_datetime(start_ms + 60_000 * np.arange(bars), unit="ms", utc=True), name="start")
    frame = pd.DataFrame(closes, index=index, columns=list(symbols))
    spec = ScanSpec(str(results / "no-store"), market, Timeframe.of("1m"), tuple(symbols), start_ms,
                    start_ms + 60_000 * bars)
    table = rank_pairs(scan_block(frame, list(symbols), **spec.kernel_params()))
    return save_scan(ScanOutcome(table, spec, 0.5), results)


def stored_walk(results: Path, market: Market, symbols: Sequence[str], *, bars: int = 600, seed: int = 3,
                planted: Sequence[tuple[str, str]] = (), name: str = "walk-20240301T000000Z-0123abcd") -> Path:
    """A walk-forward study stored as ``walk-<UTC time>-<id>/`` in ``results``: ``walk.json`` (its
    parameters, ``"kind": "walk"``), ``rows.parquet`` and ``summary.parquet`` (single-process
    :func:`research.walkforward.walk_forward` of generated 1 min closes, formation 200 and trading 100 bars)."""
    start_ms = int(pd.Timestamp("2024-02-01", tz="UTC").value // 1_000_000)
    closes = universe_closes(symbols, bars, seed=seed, planted=planted)
    index = pd.DatetimeIndex(pd.to_datetime(start_ms + 60_000 * np.arange(bars), unit="ms", utc=True), name="start")
    frame = pd.DataFrame(closes, index=index, columns=list(symbols))
    result = walk_forward(frame, "1m", WalkForwardSettings(formation=200, trading=100))
    folder = results / name
    folder.mkdir(parents=True)
    rows = result.rows.copy()
    for column in ("y", "x", "status", "note", "oos_status", "oos_note"):
        rows[column] = rows[column].astype(str)
    rows["stays"] = rows["stays"].astype("boolean")
    rows.to_parquet(folder / "rows.parquet", index=False)
    result.summary.to_parquet(folder / "summary.parquet", index=False)
    parameters = {"kind": "walk", "market": market.value, "timeframe": "1m", "symbols": list(symbols),
                  "start_ms": start_ms, "end_ms": start_ms + 60_000 * bars, "formation": 200, "trading": 100}
    (folder / "walk.json").write_text(json.dumps(parameters))
    return folder
