"""Ticks → OHLCV bars on a fixed UTC grid, built in batch or incrementally, and aligned across symbols.

Grid
    A bar covers ``[start_ms, start_ms + interval_ms)`` with
    ``start_ms = floor(ts_ms / interval_ms) * interval_ms`` (UTC epoch milliseconds), so bars of the
    same interval from different symbols, sources or processes always share boundaries.

Frame layout (returned by :func:`resample_ticks` and :func:`bars_to_frame`)
    Index: ``DatetimeIndex`` named ``"start"``, dtype ``datetime64[ms, UTC]``, bar start times,
    strictly increasing, one row per interval *that had at least one trade* (empty intervals are
    absent; filling them is :func:`align_bars`' job). Columns: ``open``, ``high``, ``low``,
    ``close`` (price, quote currency), ``volume`` (sum of quantities, base units), ``trades``
    (int64 count) and ``vwap`` (sum(price·qty) / volume; NaN if every trade had zero quantity).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics._validate import ArrayLike1D, as_1d_float, check_int, check_same_length
from analytics.errors import InsufficientDataError

BAR_COLUMNS = ("open", "high", "low", "close", "volume", "trades", "vwap")


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar. Times in UTC epoch ms, prices in quote currency, volume in base units."""

    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    vwap: float


def resample_ticks(ts_ms: ArrayLike1D, price: ArrayLike1D, qty: ArrayLike1D, interval_ms: int) -> pd.DataFrame:
    """Resample trades of one symbol into OHLCV bars of ``interval_ms`` milliseconds.

    Parameters
    ----------
    ts_ms : array of int, shape (n,)
        Trade times, UTC epoch milliseconds. Need not be sorted: trades are ordered by time with
        a stable sort, so among trades with equal timestamps the earlier one in the input opens
        the bar and the later one closes it.
    price : array of float, shape (n,)
        Trade prices, finite and > 0. Filter exchange placeholder rows (price 0) out first.
    qty : array of float, shape (n,)
        Trade quantities, finite and >= 0.
    interval_ms : int
        Bar length in milliseconds (1_000 for 1 s, 60_000 for 1 min, ...), at least 1.

    Returns
    -------
    DataFrame in the module's frame layout; empty (with the same columns) if there are no trades.
    """
    interval_ms = check_int("interval_ms", interval_ms, minimum=1)
    times = np.asarray(ts_ms)
    if times.ndim != 1 or not (times.size == 0 or np.issubdtype(times.dtype, np.integer)):
        raise ValueError("ts_ms must be a 1-dimensional array of integer epoch milliseconds")
    times = times.astype(np.int64, copy=False)
    prices = as_1d_float("price", price)
    quantities = as_1d_float("qty", qty)
    n = check_same_length(ts_ms=times, price=prices, qty=quantities)
    _check_prices_and_quantities(prices, quantities)
    if n == 0:
        return bars_frame_from_columns(np.empty(0, np.int64), {column: np.empty(0) for column in BAR_COLUMNS})

    if np.any(np.diff(times) < 0):
        order = np.argsort(times, kind="stable")
        times, prices, quantities = times[order], prices[order], quantities[order]

    starts = times // interval_ms * interval_ms
    first = np.flatnonzero(np.r_[True, starts[1:] != starts[:-1]])
    last = np.r_[first[1:] - 1, n - 1]
    volume = np.add.reduceat(quantities, first)
    notional = np.add.reduceat(prices * quantities, first)
    columns = {
        "open": prices[first],
        "high": np.maximum.reduceat(prices, first),
        "low": np.minimum.reduceat(prices, first),
        "close": prices[last],
        "volume": volume,
        "trades": np.diff(np.r_[first, n]),
        "vwap": np.divide(notional, volume, out=np.full(len(first), np.nan), where=volume > 0),
    }
    return bars_frame_from_columns(starts[first], columns)


def bars_to_frame(bars: Sequence[Bar]) -> pd.DataFrame:
    """Turn bars (for example those emitted by :class:`BarBuilder`) into the module's frame layout."""
    start_ms = np.array([bar.start_ms for bar in bars], dtype=np.int64)
    columns = {column: np.array([getattr(bar, column) for bar in bars]) for column in BAR_COLUMNS}
    return bars_frame_from_columns(start_ms, columns)


def rebar(bars: pd.DataFrame, interval_ms: int) -> pd.DataFrame:
    """Aggregate bars into coarser ones (e.g. 1 s → 1 min) on the same fixed UTC grid.

    Exact for OHLCV: open of the first sub-bar, max high, min low, close of the last, summed
    volume and trades, volume-weighted VWAP. ``interval_ms`` must be a multiple of the input
    interval (not checked for the input, whose bars may be sparse); rows stay one per interval
    that had at least one sub-bar.
    """
    interval_ms = check_int("interval_ms", interval_ms, minimum=1)
    if len(bars) == 0:
        return bars.copy()
    start_ms = bars.index.as_unit("ms").asi8
    groups = start_ms // interval_ms * interval_ms
    first = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    if np.any(np.diff(groups) < 0):
        raise ValueError("bars must be sorted by start time")
    last = np.r_[first[1:] - 1, len(groups) - 1]
    volume = bars["volume"].to_numpy(np.float64)
    # Bars without volume have NaN VWAP; they add nothing to the notional.
    notional = np.where(volume > 0, bars["vwap"].to_numpy(np.float64) * volume, 0.0)
    summed_volume = np.add.reduceat(volume, first)
    summed_notional = np.add.reduceat(notional, first)
    columns = {
        "open": bars["open"].to_numpy()[first],
        "high": np.maximum.reduceat(bars["high"].to_numpy(np.float64), first),
        "low": np.minimum.reduceat(bars["low"].to_numpy(np.float64), first),
        "close": bars["close"].to_numpy()[last],
        "volume": summed_volume,
        "trades": np.add.reduceat(bars["trades"].to_numpy(np.int64), first),
        "vwap": np.divide(summed_notional, summed_volume, out=np.full(len(first), np.nan), where=summed_volume > 0),
    }
    return bars_frame_from_columns(groups[first], columns)


class BarBuilder:
    """Incremental OHLCV bars for one symbol: O(1) time and memory per tick.

    Feed trades in arrival order with :meth:`update`; call :meth:`advance` from a timer so a bar
    closes once its interval has passed even when no further trade arrives. Closed bars are
    returned exactly once, in increasing ``start_ms`` order, and equal the rows of
    :func:`resample_ticks` on the same trades (volume and VWAP up to floating-point summation
    order). No bar is emitted for an interval without trades.

    Late ticks
        A trade older than the open bar's start (or, with no bar open, older than the end of the
        last closed bar) is **counted in** :attr:`late_ticks` **and ignored**. Its bar has already
        been handed to the engine, alerts and storage; amending it would make emitted bars
        mutable, and folding the trade into the open bar would put it in the wrong interval.
        Within the open bar, out-of-order trades are folded in by timestamp: an earlier trade
        becomes the open, and the close is the latest trade by time (ties: later arrival), just
        as the batch resampler's stable sort does.

    ``advance`` uses whatever clock the caller passes. Exchange time stamps arrive with network
    delay, so pass ``now_ms`` minus a small grace period (for example 250 ms) to avoid closing
    bars before their last trades arrive.
    """

    __slots__ = (
        "_close",
        "_close_ts",
        "_floor_ms",
        "_high",
        "_interval_ms",
        "_late_ticks",
        "_low",
        "_notional",
        "_open",
        "_open_ts",
        "_start_ms",
        "_trades",
        "_volume",
    )

    def __init__(self, interval_ms: int) -> None:
        self._interval_ms = check_int("interval_ms", interval_ms, minimum=1)
        self._start_ms: int | None = None  # start of the open bar; None when no bar is open
        self._floor_ms: int | None = None  # trades before this time are late
        self._late_ticks = 0
        self._open = self._high = self._low = self._close = 0.0
        self._volume = self._notional = 0.0
        self._trades = 0
        self._open_ts = self._close_ts = 0

    @property
    def interval_ms(self) -> int:
        """Bar length in milliseconds."""
        return self._interval_ms

    @property
    def late_ticks(self) -> int:
        """Number of trades ignored because their bar had already been closed."""
        return self._late_ticks

    @property
    def open_bar(self) -> Bar | None:
        """Snapshot of the bar still being built (not yet closed), or None."""
        if self._start_ms is None:
            return None
        return self._snapshot(self._start_ms)

    def update(self, ts_ms: int, price: float, qty: float) -> list[Bar]:
        """Add one trade; return the bars it closed (empty, or the previously open bar).

        ``ts_ms`` is the exchange trade time in UTC epoch ms; ``price`` > 0 and ``qty`` >= 0.
        """
        ts_ms = operator.index(ts_ms)
        if not (math.isfinite(price) and price > 0 and math.isfinite(qty) and qty >= 0):
            raise ValueError(f"invalid trade: price={price!r} qty={qty!r}; need price > 0 and qty >= 0")
        if self._floor_ms is not None and ts_ms < self._floor_ms:
            self._late_ticks += 1
            return []
        start = ts_ms - ts_ms % self._interval_ms
        closed = []
        if self._start_ms is not None and start != self._start_ms:
            closed.append(self._close_open_bar(self._start_ms))
        if self._start_ms is None:
            self._start_ms = self._floor_ms = start
            self._open = self._high = self._low = self._close = price
            self._volume, self._notional, self._trades = qty, price * qty, 1
            self._open_ts = self._close_ts = ts_ms
            return closed
        if ts_ms < self._open_ts:
            self._open, self._open_ts = price, ts_ms
        if ts_ms >= self._close_ts:
            self._close, self._close_ts = price, ts_ms
        self._high = max(self._high, price)
        self._low = min(self._low, price)
        self._volume += qty
        self._notional += price * qty
        self._trades += 1
        return closed

    def advance(self, now_ms: int) -> list[Bar]:
        """Close the open bar if ``now_ms`` (UTC epoch ms) is at or past its end; return closed bars."""
        if self._start_ms is not None and now_ms >= self._start_ms + self._interval_ms:
            return [self._close_open_bar(self._start_ms)]
        return []

    def _close_open_bar(self, start_ms: int) -> Bar:
        bar = self._snapshot(start_ms)
        self._floor_ms = start_ms + self._interval_ms
        self._start_ms = None
        return bar

    def _snapshot(self, start_ms: int) -> Bar:
        vwap = self._notional / self._volume if self._volume > 0 else math.nan
        return Bar(start_ms, self._open, self._high, self._low, self._close, self._volume, self._trades, vwap)


@dataclass(frozen=True, slots=True)
class AlignedBars:
    """Bars of several symbols on one common index (see :func:`align_bars`).

    Every frame has the same ``DatetimeIndex`` (bar starts, UTC) and one column per symbol.

    Attributes
    ----------
    interval_ms : int
        Bar length in milliseconds.
    closes : DataFrame of float
        Close price; over bars where the symbol did not trade, its last close carried forward.
    volumes : DataFrame of float
        Traded quantity in base units; 0 on filled bars.
    trades : DataFrame of int64
        Number of trades; 0 on filled bars.
    filled : DataFrame of bool
        True where the symbol did not trade in that bar and its close was carried forward.
    """

    interval_ms: int
    closes: pd.DataFrame
    volumes: pd.DataFrame
    trades: pd.DataFrame
    filled: pd.DataFrame

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols in column order."""
        return tuple(self.closes.columns)

    @property
    def index(self) -> pd.DatetimeIndex:
        """The common bar-start index."""
        return self.closes.index

    def symbol(self, name: str) -> pd.DataFrame:
        """One symbol's aligned bars: columns ``close``, ``volume``, ``trades``, ``filled``."""
        if name not in self.closes.columns:
            raise ValueError(f"unknown symbol {name!r}; aligned symbols are {list(self.symbols)}")
        return pd.DataFrame(
            {
                "close": self.closes[name],
                "volume": self.volumes[name],
                "trades": self.trades[name],
                "filled": self.filled[name],
            }
        )


def align_bars(bars_by_symbol: Mapping[str, pd.DataFrame], interval_ms: int) -> AlignedBars:
    """Put the bars of several symbols on one grid for pair and universe analytics.

    Parameters
    ----------
    bars_by_symbol : mapping of symbol → DataFrame
        Each frame in the module's frame layout (at least ``close``, ``volume``, ``trades``; one
        row per traded bar), all with the same ``interval_ms``.
    interval_ms : int
        The bar length; every index value must lie on this grid (guards against mixing
        timeframes).

    Returns
    -------
    AlignedBars
        Rows are the bars in which at least one symbol traded, starting at the first bar by
        which *every* symbol has traded (earlier bars would have no price for some symbol).
        Bars in which no symbol traded are left out, as are bars before that start. A symbol
        that did not trade in a row gets its previous close, zero volume and trades, and
        ``filled=True``.

    Raw ticks are never matched on exact timestamps: two symbols rarely trade in the same
    millisecond, so that would keep almost nothing.
    """
    interval_ms = check_int("interval_ms", interval_ms, minimum=1)
    if not bars_by_symbol:
        raise ValueError("bars_by_symbol is empty; pass at least one symbol")
    frames = {symbol: _checked_bar_frame(symbol, frame, interval_ms) for symbol, frame in bars_by_symbol.items()}
    starts = {symbol: frame.index.asi8 for symbol, frame in frames.items()}  # UTC epoch ms (checked above)
    start = max(ms[0] for ms in starts.values())
    union = np.unique(np.concatenate(list(starts.values())))
    grid_ms = union[union >= start]
    names = {frame.index.name for frame in frames.values()}
    grid = pd.DatetimeIndex(grid_ms.astype("datetime64[ms]"), name=names.pop() if len(names) == 1 else None
                            ).tz_localize("UTC")

    # With numpy, one searchsorted per symbol: pandas' four reindexes a symbol took most of the
    # alignment of a 200-symbol universe. Each grid bar takes the symbol's last bar at or before it.
    closes, volumes, trades, filled = [], [], [], []
    for symbol, frame in frames.items():
        ms = starts[symbol]
        last = np.searchsorted(ms, grid_ms, side="right") - 1  # >= 0: the grid starts once every symbol has a bar
        traded = ms[last] == grid_ms
        closes.append(frame["close"].to_numpy(dtype=np.float64)[last])
        volumes.append(np.where(traded, frame["volume"].to_numpy(dtype=np.float64)[last], 0.0))
        trades.append(np.where(traded, frame["trades"].to_numpy(dtype=np.int64)[last], 0))
        filled.append(~traded)
    columns = pd.Index(list(frames))

    def table(values: list[np.ndarray], dtype: type) -> pd.DataFrame:
        return pd.DataFrame(np.column_stack(values).astype(dtype, copy=False) if values else None, index=grid,
                            columns=columns)

    return AlignedBars(
        interval_ms=interval_ms,
        closes=table(closes, np.float64),
        volumes=table(volumes, np.float64),
        trades=table(trades, np.int64),
        filled=table(filled, np.bool_),
    )


def _checked_bar_frame(symbol: str, frame: pd.DataFrame, interval_ms: int) -> pd.DataFrame:
    missing = {"close", "volume", "trades"}.difference(frame.columns)
    if missing:
        raise ValueError(f"{symbol}: bar frame lacks column(s) {sorted(missing)}")
    if len(frame) == 0:
        raise InsufficientDataError(1, 0, f"{symbol} bars")
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or str(index.tz) != "UTC":
        raise ValueError(f"{symbol}: bar index must be a UTC DatetimeIndex of bar start times")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise ValueError(f"{symbol}: bar index must be strictly increasing")
    index = index.as_unit("ms")
    if np.any(index.asi8 % interval_ms):
        raise ValueError(f"{symbol}: bar starts are not on the {interval_ms} ms grid")
    # One time unit for all symbols, so index unions and isin compare like with like.
    return frame.set_axis(index)


def _check_prices_and_quantities(prices: np.ndarray, quantities: np.ndarray) -> None:
    if np.any(prices <= 0):
        position = int(np.flatnonzero(prices <= 0)[0])
        raise ValueError(
            f"price must be > 0; position {position} has {prices[position]!r} (filter placeholder trades first)"
        )
    if np.any(quantities < 0):
        position = int(np.flatnonzero(quantities < 0)[0])
        raise ValueError(f"qty must be >= 0; position {position} has {quantities[position]!r}")


def bars_frame_from_columns(start_ms: np.ndarray, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Build the module's frame layout from bar-start times (UTC epoch ms) and one array per column."""
    index = pd.DatetimeIndex(start_ms.astype("datetime64[ms]"), name="start").tz_localize("UTC")
    # Each column made in its dtype at once: a DataFrame.astype afterwards costs ~1.5 ms even for
    # one row, and the page builds small frames (live bars, the forming bar) on every refresh.
    return pd.DataFrame({column: np.asarray(columns[column], dtype=np.int64 if column == "trades" else np.float64)
                         for column in BAR_COLUMNS}, index=index)
