"""The pair scanner's data and results, shared by the dashboard's Scanner tab and ``python -m cli.scan``.

:func:`universe_closes` puts every watched symbol's closed bars on one grid for
:func:`analytics.scan_pairs`; :func:`run_scan` ranks the pairs and remembers which bars it saw;
:class:`ScanFilter` keeps the rows a desk would look at. Pure: frames in, frames out; numbers
only (the table for display and export, with its words, is :func:`ui.export.ranking`). ``trend``
is one of :data:`analytics.TRENDS` (statsmodels' names: ``"c"`` a constant, ``"ct"``, ``"ctt"``, ``"n"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics import scan_pairs
from analytics.scan import COLLINEAR, OK


def universe_closes(by_symbol: Mapping[str, pd.DataFrame], interval_ms: int, market_now_ms: int, *,
                    carry_to_end: bool) -> pd.DataFrame:
    """Closes of the closed bars of every symbol, one column each, on the union of their bar starts.

    ``by_symbol``: bar frames (layout of :mod:`analytics.bars`, UTC bar starts) at ``interval_ms``;
    a bar is closed once ``start + interval_ms <= market_now_ms`` (UTC epoch ms). A symbol's close
    is carried forward over bars where it did not trade, as :func:`analytics.align_bars` does,
    but never before its first bar: unlike the page's alignment, a symbol listed late (or a
    dataset of another day) leaves NaN there, and :func:`analytics.scan_pairs` tests each pair on
    the rows both legs have, so it does not shorten every other pair. ``carry_to_end``: carry the
    last close to the last row (a feed: the price holds until the next trade); False stops each
    column at its own last bar (an uploaded file ends where its data ends).
    """
    closes = {}
    for symbol, frame in by_symbol.items():
        index = frame.index.as_unit("ms") if len(frame) else pd.DatetimeIndex([], dtype="datetime64[ms, UTC]")
        closes[symbol] = pd.Series(frame["close"].to_numpy(dtype=np.float64), index=index)
    table = pd.DataFrame(closes).sort_index()
    table = table[table.index.asi8 + interval_ms <= market_now_ms]
    filled = table.ffill()
    if not carry_to_end:
        # Keep NaN after each column's last bar: ffill then blank what lies past it.
        last = table.notna()[::-1].cummax()[::-1]
        filled = filled.where(last)
    filled.index.name = "start"
    return filled


@dataclass(frozen=True, slots=True)
class ScanResult:
    """One scan: :func:`analytics.scan_pairs`' table and the bars it ran on.

    ``first_bar``/``last_bar``: starts of the first and last closed bar scanned (UTC; None when
    there were none); ``n_bars``: rows of the closes; ``interval_ms``: bar length.
    """

    table: pd.DataFrame
    symbols: tuple[str, ...]
    interval_ms: int
    n_bars: int
    first_bar: pd.Timestamp | None
    last_bar: pd.Timestamp | None
    trend: str
    window: int

    @property
    def tested(self) -> pd.DataFrame:
        """Rows that were tested (``ok`` or ``collinear``); the rest lacked data or had a flat leg."""
        return self.table[self.table["status"].isin((OK, COLLINEAR))]

    @property
    def untested(self) -> pd.DataFrame:
        return self.table[~self.table["status"].isin((OK, COLLINEAR))]

    def significant(self, level: float = 0.05) -> int:
        """Pairs with q-value below ``level``."""
        return int((self.table["q_value"] < level).sum())


def run_scan(closes: pd.DataFrame, interval_ms: int, *, trend: str = "c", window: int = 60,
             progress: Callable[[int, int], None] | None = None) -> ScanResult:
    """:func:`analytics.scan_pairs` on ``closes`` (see :func:`universe_closes`), with the bars it saw."""
    table = scan_pairs(closes, trend=trend, window=window, progress=progress)
    index = closes.index
    return ScanResult(table, tuple(closes.columns), interval_ms, len(index), index[0] if len(index) else None,
                      index[-1] if len(index) else None, trend, window)


@dataclass(frozen=True, slots=True)
class ScanFilter:
    """Rows to keep: tested pairs with ``q_value <= max_q``, a half-life (bars) in
    ``[min_half_life, max_half_life]`` and a return correlation of at least ``min_corr``."""

    max_q: float = 1.0
    min_half_life: float = 0.0
    max_half_life: float = math.inf
    min_corr: float = -1.0

    def apply(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows of a scan table that pass, in the table's order. Untested rows (NaN) never pass."""
        keep = ((table["q_value"] <= self.max_q) & (table["half_life"] >= self.min_half_life)
                & (table["half_life"] <= self.max_half_life) & (table["corr"] >= self.min_corr))
        return table[keep]
