"""Tables for display and CSV download.

The CSV itself is written by :func:`records.safe_csv.to_csv_bytes` (spreadsheet-formula
neutralisation, ISO-8601 UTC times) in the bottom layer, shared by the panels and the scanner's
command line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analytics import log_returns
from pairs.bars import PairBars
from pairs.compute import PairAnalytics
from ui.labels import half_life_text


def ohlcv_table(bars: PairBars) -> pd.DataFrame:
    """All symbols' bars in one wide frame: ``<SYMBOL>_open`` … ``<SYMBOL>_vwap`` per bar."""
    frames = [frame.add_prefix(f"{symbol}_") for symbol, frame in bars.by_symbol.items() if len(frame)]
    return pd.concat(frames, axis=1).sort_index() if frames else pd.DataFrame()


def analytics_table(pair: PairAnalytics) -> pd.DataFrame:
    """One row per bar: both closes, hedge ratio, spread, its band, z-score and correlation."""
    p = pair.params
    columns: dict[str, pd.Series | None] = {
        f"{p.y}_close": pair.y, f"{p.x}_close": pair.x, "beta": pair.beta, "alpha": pair.alpha,
        "spread": pair.spread, "spread_mean": pair.spread_mean, "spread_std": pair.spread_std,
        "zscore": pair.zscore, "return_correlation": pair.correlation,
    }
    # Series still warming up are exported as empty columns, so every file has the same layout.
    return pd.DataFrame({k: (np.nan if v is None else v) for k, v in columns.items()}, index=pair.index)


def minute_table(bars: PairBars, pair: PairAnalytics) -> pd.DataFrame:
    """Per-minute stats and features: close, log return, volume and trades per leg, plus β,
    spread, z-score and correlation. ``bars``/``pair`` must be 1-minute bars of the same pair."""
    if bars.aligned is None:
        return pd.DataFrame()
    p = pair.params
    table = analytics_table(pair).drop(columns=["alpha", "spread_mean", "spread_std"])
    for symbol in (p.y, p.x):
        closes = bars.aligned.closes[symbol]
        # The first minute has no return; neither does a table of one minute.
        returns = log_returns(closes) if len(closes) >= 2 else pd.Series(dtype=float)
        table[f"{symbol}_return"] = returns.reindex(table.index)
        table[f"{symbol}_volume"] = bars.aligned.volumes[symbol]
        table[f"{symbol}_trades"] = bars.aligned.trades[symbol].astype(np.int64)
    order = [f"{p.y}_close", f"{p.x}_close", f"{p.y}_return", f"{p.x}_return", "beta", "spread", "zscore",
             "return_correlation", f"{p.y}_volume", f"{p.x}_volume", f"{p.y}_trades", f"{p.x}_trades"]
    return table[order]


def ranking(table: pd.DataFrame, interval_ms: int) -> pd.DataFrame:
    """A scan table (:func:`pairs.ranking.run_scan`) for display and export: ranked from 1, with the
    half-life also in time (``half_life_time``, e.g. '12 min', on bars of ``interval_ms``)."""
    shown = table.reset_index(drop=True)
    shown.index = pd.RangeIndex(1, len(shown) + 1, name="rank")
    position = shown.columns.get_loc("half_life") + 1
    shown.insert(position, "half_life_time", [half_life_text(v, interval_ms) for v in shown["half_life"]])
    return shown
