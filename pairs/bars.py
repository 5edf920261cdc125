"""Bars for the dashboard: stored history stitched to the engine's live bars, at any timeframe.

Three kinds of bars meet here:

* tick bars of the past: 1 s bars resampled once from the stored ticks (before the engine's
  first live bar) and cached;
* live bars: closed 1 s bars from :class:`~ingestion.live_bars.LiveBars` in memory, plus the open
  bar, kept as the last row and reported in :attr:`PairBars.open_bar_start` so charts can mark it;
* stored bars at the timeframe itself (exchange klines, a simulated market's past) loaded by
  :class:`~ingestion.history.HistoryLoader`.

Bars built from ticks win where the recorder saw the whole bar (:func:`merge_bars`: at least as
many trades as the stored bar counts); stored bars fill the rest — the time before recording
began, the hole a restart after downtime leaves, a bar the recorder joined half-way. Nothing
here re-reads what it already has on a refresh.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analytics import AlignedBars, InsufficientDataError, align_bars, bars_to_frame, rebar, resample_ticks
from analytics.bars import BAR_COLUMNS, bars_frame_from_columns
from ingestion.engine import Engine
from ingestion.history import HistoryLoader
from ingestion.live_bars import BASE_INTERVAL_MS
from pairs.compute import span_slice
from records import BarArrays, now_ms
from storage import Site, open_ticks

LOOKBACKS_MS: dict[str, int] = {
    "15 min": 15 * 60_000, "1 h": 3_600_000, "4 h": 4 * 3_600_000, "24 h": 24 * 3_600_000,
}
HISTORY_MAX_MS = 24 * 3_600_000  # nothing in the dashboard needs more than a day
# How far before its lookback a view looks for a quiet leg's last close and for the warm-up bars a
# liquidity filter leaves (see load_pair_bars): a bounded read, the same for every path.
HORIZON_MS = HISTORY_MAX_MS
# Without live bars yet, history is read up to "now" rounded down to this, so a dead feed costs at
# most one database read per minute rather than one per refresh.
HISTORY_REFRESH_MS = 60_000


class BarHistory:
    """Stored bars for one site: 1 s bars resampled from its ticks, and its stored (kline) bars.

    Tick bars are cached per symbol by the boundary they stop at, re-read when ``backfills(symbol)``
    grows (the writer stored trades of it that the live stream missed: :meth:`TickWriter.backfills_of`;
    None: nobody backfills this database from this process); stored bars per (symbol, interval),
    re-read only when ``loader`` reports new bars (or, without a loader — a database another
    process fills — at most once a minute). :meth:`version_of` changes with either.
    """

    def __init__(self, site: Site, loader: HistoryLoader | None = None, *,
                 backfills: Callable[[str], int] | None = None) -> None:
        self.site = site
        self.loader = loader
        self.backfills = backfills
        self._cache: dict[str, tuple[tuple[int, int], pd.DataFrame]] = {}
        self._stored: dict[tuple[str, int], tuple[int, int, pd.DataFrame]] = {}
        self._lock = threading.Lock()
        self.loads = 0  # tick-history reads so far (for tests and benchmarks)
        self.stored_loads = 0  # stored-bar reads so far

    def stored(self, symbol: str, interval_ms: int, since_ms: int) -> pd.DataFrame:
        """Stored bars of ``symbol`` at ``interval_ms`` opening at or after ``since_ms``.

        Asks the loader (if any) for what is missing from ``since_ms`` on, without waiting for it.
        """
        if self.loader is not None:
            self.loader.ensure(symbol, interval_ms, since_ms)
        version = self.loader.version_of(interval_ms) if self.loader is not None else now_ms() // HISTORY_REFRESH_MS
        key = (symbol, interval_ms)
        with self._lock:
            cached = self._stored.get(key)
            if cached is None or cached[0] != version or cached[1] > since_ms:
                frame = bars_to_frame([])
                if self.site.exists():
                    with open_ticks(self.site) as store:
                        frame = arrays_to_frame(store.bars(symbol, interval_ms, start_ms=since_ms))
                    self.stored_loads += 1
                cached = self._stored[key] = (version, since_ms, frame)
        frame = cached[2]
        return frame if cached[1] == since_ms else frame[frame.index >= pd.Timestamp(since_ms, unit="ms", tz="UTC")]

    def version_of(self, interval_ms: int, symbols: Sequence[str]) -> int:
        """A number that grows whenever stored bars of ``symbols`` at ``interval_ms`` that a view may
        already have read change: history loaded (the loader's version) or trades backfilled.
        Readers that keep what they computed from stored bars key it on this."""
        loaded = self.loader.version_of(interval_ms) if self.loader is not None else 0
        return loaded + (0 if self.backfills is None else sum(self.backfills(s) for s in symbols))

    def bars(self, symbol: str, boundary_ms: int) -> pd.DataFrame:
        """Closed 1 s bars of ``symbol`` in ``[boundary - 24 h, boundary)``."""
        # Read before the ticks: a backfill stored meanwhile makes the next call read them again.
        key = (boundary_ms, 0 if self.backfills is None else self.backfills(symbol))
        with self._lock:
            cached = self._cache.get(symbol)
            if cached is not None and cached[0] == key:
                return cached[1]
            if not self.site.exists():
                frame = bars_to_frame([])
            else:
                with open_ticks(self.site) as store:
                    ticks = store.ticks(symbol, start_ms=boundary_ms - HISTORY_MAX_MS, end_ms=boundary_ms)
                frame = resample_ticks(ticks.ts_ms, ticks.price, ticks.qty, BASE_INTERVAL_MS)
                self.loads += 1
            self._cache[symbol] = (key, frame)
            return frame


@dataclass(frozen=True, slots=True)
class PairBars:
    """Per-symbol bars at one timeframe, aligned on one grid (None until every symbol has traded)."""

    interval_ms: int
    by_symbol: dict[str, pd.DataFrame]
    aligned: AlignedBars | None
    open_bar_start: pd.Timestamp | None  # start of the last row if that bar is still forming
    market_now_ms: int
    shown_from: pd.Timestamp | None = None  # start of the lookback; earlier bars only warm the analytics up
    # Start of each symbol's last bar before the first row, where the view knows it (the close its
    # first rows carry while it is quiet).
    last_before: Mapping[str, pd.Timestamp] = field(default_factory=dict)

    def since(self, start: pd.Timestamp | None, end: pd.Timestamp | None = None) -> PairBars:
        """These bars from ``start`` on (all of them for None), and before ``end`` if given."""
        if start is None and end is None:
            return self
        by_symbol = {s: frame.iloc[span_slice(frame.index, start, end)] for s, frame in self.by_symbol.items()}
        last_before = dict(self.last_before)
        if start is not None:
            for symbol, frame in self.by_symbol.items():
                if (before := int(frame.index.searchsorted(start, side="left"))) > 0:
                    last_before[symbol] = frame.index[before - 1]
        aligned = self.aligned
        if aligned is not None:
            keep = span_slice(aligned.index, start, end)
            aligned = AlignedBars(aligned.interval_ms, aligned.closes.iloc[keep], aligned.volumes.iloc[keep],
                                  aligned.trades.iloc[keep], aligned.filled.iloc[keep])
        return replace(self, by_symbol=by_symbol, aligned=aligned, last_before=last_before)

    def extended(self, frames: Mapping[str, pd.DataFrame], market_now_ms: int) -> PairBars:
        """These bars followed by each symbol's bars in ``frames`` that start after the last aligned bar.

        The same bars :func:`align_bars` gives on the whole (a symbol quiet in a new bar keeps its
        last close, flagged filled), at the cost of the new bars only: the grid of the new bars
        starts from a seed row holding each symbol's last close, dropped afterwards. Requires
        aligned bars (not None, not empty).
        """
        aligned = self.aligned
        if aligned is None or not len(aligned.index):
            raise ValueError("extended() needs aligned bars to extend")
        last = aligned.index[-1]
        fresh = {s: frame.iloc[frame.index.searchsorted(last, side="right"):] for s, frame in frames.items()}
        if not any(len(frame) for frame in fresh.values()):
            return replace(self, market_now_ms=market_now_ms)
        seeds = {}
        for symbol in self.by_symbol:
            close = float(aligned.closes[symbol].iloc[-1])
            seed = bars_frame_from_columns(
                np.array([last.value // 1_000_000], dtype=np.int64),
                {c: np.array([0.0 if c in ("volume", "trades") else close]) for c in BAR_COLUMNS})
            seeds[symbol] = _joined([seed, fresh.get(symbol, seed.iloc[:0])])
        tail = align_bars(seeds, self.interval_ms)
        extended = AlignedBars(self.interval_ms, *(pd.concat([old, new.iloc[1:]]) for old, new in (
            (aligned.closes, tail.closes), (aligned.volumes, tail.volumes), (aligned.trades, tail.trades),
            (aligned.filled, tail.filled))))
        by_symbol = {s: _joined([frame, fresh.get(s, frame.iloc[:0])]) for s, frame in self.by_symbol.items()}
        return replace(self, by_symbol=by_symbol, aligned=extended, market_now_ms=market_now_ms)

    def closes(self, *, closed_only: bool = False, min_trades: int = 0, min_volume: float = 0.0) -> pd.DataFrame:
        """Aligned closes, optionally without the still-forming last bar and without illiquid bars.

        Liquidity filter: a bar is dropped when any symbol traded fewer than ``min_trades`` times
        or less than ``min_volume`` (base units) in it — carried-forward (filled) bars have zero of
        both. The analytics then run on the remaining bars as if they were consecutive.
        """
        if self.aligned is None:
            return pd.DataFrame()
        keep = np.ones(len(self.aligned.index), dtype=bool)
        if closed_only and self.open_bar_start is not None and len(keep) and \
                self.aligned.index[-1] == self.open_bar_start:
            keep[-1] = False
        if min_trades > 0:
            keep &= (self.aligned.trades >= min_trades).all(axis=1).to_numpy()
        if min_volume > 0:
            keep &= (self.aligned.volumes >= min_volume).all(axis=1).to_numpy()
        return self.aligned.closes[keep]

    def illiquid_bars(self, min_trades: int, min_volume: float) -> int:
        """How many aligned bars the liquidity filter drops."""
        return 0 if self.aligned is None else len(self.aligned.index) - len(
            self.closes(min_trades=min_trades, min_volume=min_volume))


def symbol_bars(engine: Engine, history: BarHistory, symbol: str, since_ms: int, *,
                with_open: bool = True) -> pd.DataFrame:
    """1 s bars of one symbol from ``since_ms``: history, live closed bars, then (``with_open``) the open bar."""
    first_live = engine.bars.first_start_ms(symbol)
    boundary = first_live if first_live is not None else now_ms() // HISTORY_REFRESH_MS * HISTORY_REFRESH_MS
    past = history.bars(symbol, boundary)
    return _joined([past[past.index >= pd.Timestamp(since_ms, unit="ms", tz="UTC")],
                    live_bars(engine, symbol, since_ms, with_open=with_open)])


def live_bars(engine: Engine, symbol: str, since_ms: int, *, with_open: bool = True) -> pd.DataFrame:
    """The engine's 1 s bars of one symbol from ``since_ms``: closed ones, then (``with_open``) the open one."""
    parts = [engine.bars.closed(symbol, since_ms=since_ms)]
    open_bar = engine.bars.open_bar(symbol) if with_open else None
    if open_bar is not None and open_bar.start_ms >= since_ms:
        parts.append(bars_to_frame([open_bar]))
    return _joined(parts)


def _joined(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return pd.concat(parts) if len(parts) > 1 else (parts[0] if parts else bars_to_frame([]))


def load_pair_bars(engine: Engine, history: BarHistory, symbols: Sequence[str], interval_ms: int,
                   lookback_ms: int, warmup_bars: int = 0, *, closed_before_ms: int | None = None,
                   min_trades: int = 0, min_volume: float = 0.0) -> PairBars:
    """Bars of ``symbols`` over the last ``lookback_ms`` plus a warm-up: :func:`load_pair_span`'s bars."""
    return load_pair_span(engine, history, symbols, interval_ms, lookback_ms, warmup_bars,
                          closed_before_ms=closed_before_ms, min_trades=min_trades, min_volume=min_volume)[0]


def load_pair_span(engine: Engine, history: BarHistory, symbols: Sequence[str], interval_ms: int,
                   lookback_ms: int, warmup_bars: int = 0, *, closed_before_ms: int | None = None,
                   min_trades: int = 0, min_volume: float = 0.0,
                   market_now_ms: int | None = None) -> tuple[PairBars, int]:
    """Bars of ``symbols`` at ``interval_ms`` over the last ``lookback_ms`` of market time, plus a warm-up.

    :attr:`PairBars.shown_from` marks where the lookback begins. Two rules make these bars the
    same whatever path computes them (a cold load here, or a shared view extended bar by bar and
    cut, :mod:`pairs.shared`):

    * **Warm-up counted in kept bars.** The bars start at the ``warmup_bars``-th bar before the
      lookback that the liquidity filter (``min_trades``, ``min_volume``: :meth:`PairBars.closes`)
      keeps, so rolling analytics see as many bars before the lookback whatever the filter drops;
      if fewer are found within :data:`HORIZON_MS` before the lookback (:func:`span_floor`), the
      bars start there.
    * **A quiet leg carries its last close into the span.** A symbol that did not trade in the
      first bar keeps its last close from before the span (its last bar at or after the floor),
      flagged filled, exactly as :func:`align_bars` carries it between bars; a symbol without any
      bar since the floor has no price until it trades, and rows start when every symbol has one.

    ``closed_before_ms``: only bars starting before it (closed bars), else the forming bar too.
    ``market_now_ms``: the lookback ends there instead of at the engine's market time (a view as
    it was at a past moment). Returns the bars and where their span starts (UTC epoch ms; the
    first row may come later).
    """
    engine.close_due_bars()
    market_now = market_now_ms if market_now_ms is not None else engine.market_now_ms() or now_ms()
    shown_from = (market_now - lookback_ms) // interval_ms * interval_ms
    floor = span_floor(shown_from, interval_ms)
    reach = warmup_bars
    start: int | None = None
    while True:  # reaches back 4× further each time, at most to the floor: a handful of reads
        since = max(floor, shown_from - reach * interval_ms)
        bars = _seeded_pair_bars(engine, history, symbols, interval_ms, since, floor, closed_before_ms, market_now)
        if not warmup_bars:
            start = since
            break
        kept = bars.closes(min_trades=min_trades, min_volume=min_volume).index
        start = warmup_start(kept, shown_from, warmup_bars)
        if start is not None or since == floor:
            break
        if not any(len(last_bar_before(engine, history, s, interval_ms, since, floor)) for s in symbols):
            # Nothing earlier down to the floor (the data begins here): these are the bars from the floor.
            start = floor
            break
        reach *= 4
    span_start = since if start is None else start
    if span_start > since:
        bars = bars.since(pd.Timestamp(span_start, unit="ms", tz="UTC"))
    return replace(bars, shown_from=pd.Timestamp(shown_from, unit="ms", tz="UTC")), span_start


def span_floor(shown_from_ms: int, interval_ms: int) -> int:
    """The earliest bar start (UTC epoch ms) a view whose lookback begins at ``shown_from_ms`` reads."""
    return (shown_from_ms - HORIZON_MS) // interval_ms * interval_ms


def warmup_start(kept: pd.DatetimeIndex, shown_from_ms: int, warmup_bars: int) -> int | None:
    """Start (UTC epoch ms) of the ``warmup_bars``-th of the ``kept`` bars (sorted starts) before
    ``shown_from_ms``; ``shown_from_ms`` itself for no warm-up; None when fewer bars precede it."""
    if warmup_bars <= 0:
        return shown_from_ms
    before = int(kept.searchsorted(pd.Timestamp(shown_from_ms, unit="ms", tz="UTC"), side="left"))
    return None if before < warmup_bars else int(kept[before - warmup_bars].value // 1_000_000)


def _seeded_pair_bars(engine: Engine, history: BarHistory, symbols: Sequence[str], interval_ms: int, since_ms: int,
                      floor_ms: int, closed_before_ms: int | None, market_now: int) -> PairBars:
    """Bars from ``since_ms`` aligned as if the symbols' earlier bars were there: a symbol that did not
    trade in the first bar carries its last close from ``[floor_ms, since_ms)`` (:func:`last_bar_before`)."""
    by_symbol = symbol_frames(engine, history, symbols, interval_ms, since_ms, closed_before_ms=closed_before_ms)
    starts = [frame.index[0] for frame in by_symbol.values() if len(frame)]
    seeds: dict[str, pd.DataFrame] = {}
    if starts:
        first = min(starts)
        for symbol, frame in by_symbol.items():
            if not len(frame) or frame.index[0] != first:
                seed = last_bar_before(engine, history, symbol, interval_ms, since_ms, floor_ms)
                if len(seed):
                    seeds[symbol] = seed
    bars = _pair_bars(by_symbol, interval_ms, market_now, seeds)
    return replace(bars, last_before={s: seed.index[0] for s, seed in seeds.items()})


def last_bar_before(engine: Engine, history: BarHistory, symbol: str, interval_ms: int, before_ms: int,
                    floor_ms: int) -> pd.DataFrame:
    """The last bar (one row, or none) of ``symbol`` at ``interval_ms`` starting in ``[floor_ms, before_ms)``.

    Looks back a few bars first, then 16× further each time down to the floor: a leg quiet for a
    minute costs one small read, not a day's.
    """
    reach = 64 * interval_ms
    while True:
        start = max(floor_ms, before_ms - reach)
        if start >= before_ms:
            return bars_to_frame([])
        frame = symbol_frames(engine, history, (symbol,), interval_ms, start, closed_before_ms=before_ms)[symbol]
        if len(frame) or start == floor_ms:
            return frame.iloc[-1:]
        reach *= 16


def symbol_frames(engine: Engine, history: BarHistory, symbols: Sequence[str], interval_ms: int, since_ms: int, *,
                  closed_before_ms: int | None = None) -> dict[str, pd.DataFrame]:
    """Each symbol's bars at ``interval_ms`` from ``since_ms``: tick bars (stored, then live) merged with
    stored bars (:func:`merge_bars`), only those starting before ``closed_before_ms`` if given."""
    by_symbol = {s: symbol_bars(engine, history, s, since_ms, with_open=closed_before_ms is None) for s in symbols}
    if interval_ms != BASE_INTERVAL_MS:
        by_symbol = {s: rebar(frame, interval_ms) for s, frame in by_symbol.items()}
    by_symbol = {s: merge_bars(frame, history.stored(s, interval_ms, since_ms)) for s, frame in by_symbol.items()}
    if closed_before_ms is not None:
        cut = pd.Timestamp(closed_before_ms, unit="ms", tz="UTC")
        by_symbol = {s: frame.iloc[:frame.index.searchsorted(cut)] for s, frame in by_symbol.items()}
    return by_symbol


def with_open_bar(bars: PairBars, engine: Engine, open_start_ms: int) -> PairBars:
    """``bars`` (closed) plus the bar still forming at ``open_start_ms``, from the engine's live bars.

    A symbol that has not traded in the forming bar keeps its last close there (flagged filled,
    no volume); nothing is added when no symbol has. :attr:`PairBars.open_bar_start` marks the row.
    """
    if bars.aligned is None:
        return bars
    interval_ms = bars.interval_ms
    start = pd.Timestamp(open_start_ms, unit="ms", tz="UTC")
    rows: dict[str, pd.Series] = {}
    for symbol in bars.by_symbol:
        seconds = live_bars(engine, symbol, open_start_ms)
        seconds = seconds[seconds.index < start + pd.Timedelta(milliseconds=interval_ms)]
        if len(seconds):
            rows[symbol] = (seconds if interval_ms == BASE_INTERVAL_MS else rebar(seconds, interval_ms)).iloc[-1]
    if not rows:
        return bars
    aligned = bars.aligned
    if len(aligned.index) and aligned.index[-1] >= start:
        return bars
    symbols = list(aligned.closes.columns)
    last_close = aligned.closes.iloc[-1] if len(aligned.index) else pd.Series(np.nan, index=symbols)
    closes = {s: rows[s]["close"] if s in rows else last_close[s] for s in symbols}
    index = pd.DatetimeIndex([start], name=aligned.index.name)

    aligned = AlignedBars(
        interval_ms,
        _with_row(aligned.closes, index, closes),
        _with_row(aligned.volumes, index, {s: rows[s]["volume"] if s in rows else 0.0 for s in symbols}),
        _with_row(aligned.trades, index, {s: int(rows[s]["trades"]) if s in rows else 0 for s in symbols}),
        _with_row(aligned.filled, index, {s: s not in rows for s in symbols}),
    )
    by_symbol = {s: _with_row(frame, index, rows[s]) if s in rows else frame for s, frame in bars.by_symbol.items()}
    return replace(bars, by_symbol=by_symbol, aligned=aligned, open_bar_start=start)


def _with_row(frame: pd.DataFrame, index: pd.DatetimeIndex, values: Mapping[str, object] | pd.Series) -> pd.DataFrame:
    """``frame`` plus one row at ``index`` (one entry), each column keeping its dtype.

    Column by column with numpy, not ``pd.concat``: this runs on every chart refresh, and concat
    with dtype casts of a day of bars took most of the forming bar's cost.
    """
    data = {column: np.append(frame[column].to_numpy(), np.asarray(values[column], dtype=frame[column].dtype))
            for column in frame.columns}
    result = pd.DataFrame(data, index=frame.index.append(index), copy=False)
    result.columns = frame.columns
    return result


def merge_bars(ticks: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """One bar per start: the tick bar where the recorder saw the whole bar, else the stored bar.

    A tick bar counts as whole when it has at least as many trades as the stored bar reports
    (an exchange kline counts every trade of its bar); where no stored bar exists, the tick bar
    is used as it is (the still-forming bar always is). Both frames are in the layout of
    :mod:`analytics.bars`; the result is sorted by start.
    """
    if stored.empty:
        return ticks
    if ticks.empty:
        return stored
    # With numpy, column by column: pandas' reindex/mask took ~10 ms a symbol, which a universe of
    # 200 symbols pays 200 times.
    tick_ms, stored_ms = ticks.index.as_unit("ms").asi8, stored.index.as_unit("ms").asi8
    start_ms = np.union1d(tick_ms, stored_ms)
    at_tick, at_stored = np.searchsorted(start_ms, tick_ms), np.searchsorted(start_ms, stored_ms)
    has_tick = np.zeros(len(start_ms), dtype=bool)
    has_tick[at_tick] = True
    tick_trades = np.zeros(len(start_ms), dtype=np.int64)
    tick_trades[at_tick] = ticks["trades"].to_numpy(dtype=np.int64)
    stored_trades = np.full(len(start_ms), -1, dtype=np.int64)  # no stored bar: never more trades
    stored_trades[at_stored] = stored["trades"].to_numpy(dtype=np.int64)
    use_tick = has_tick & ~(stored_trades > tick_trades)
    columns = {}
    for column in BAR_COLUMNS:
        values = np.empty(len(start_ms), dtype=np.int64 if column == "trades" else np.float64)
        values[at_stored] = stored[column].to_numpy(dtype=values.dtype)
        from_ticks = np.empty_like(values)
        from_ticks[at_tick] = ticks[column].to_numpy(dtype=values.dtype)
        values[use_tick] = from_ticks[use_tick]
        columns[column] = values
    return bars_frame_from_columns(start_ms, columns)


def arrays_to_frame(bars: BarArrays) -> pd.DataFrame:
    """Stored bar arrays in the frame layout of :mod:`analytics.bars`."""
    return bars_frame_from_columns(bars.start_ms, {name: getattr(bars, name) for name in BarArrays.COLUMNS})


def dataset_pair_bars(frames: dict[str, pd.DataFrame], interval_ms: int) -> PairBars:
    """Bars of uploaded OHLC datasets (no trade counts: 0; VWAP: the close) at ``interval_ms``."""
    by_symbol = {}
    for symbol, ohlc in frames.items():
        bars = ohlc.assign(trades=np.int64(0), vwap=ohlc["close"]).set_axis(ohlc.index.rename("start"))
        by_symbol[symbol] = rebar(bars[["open", "high", "low", "close", "volume", "trades", "vwap"]], interval_ms)
    last = max((int(f.index[-1].value // 1_000_000) for f in by_symbol.values() if len(f)), default=0)
    return _pair_bars(by_symbol, interval_ms, last + interval_ms)


def _pair_bars(by_symbol: dict[str, pd.DataFrame], interval_ms: int, market_now: int,
               seeds: Mapping[str, pd.DataFrame] | None = None) -> PairBars:
    """Aligned bars of ``by_symbol``; ``seeds``: a symbol's last bar before them, whose close it
    carries until it trades (its row is not part of the result)."""
    try:
        if seeds:
            first = min(frame.index[0] for frame in by_symbol.values() if len(frame))
            aligned = align_bars({s: _joined([seeds[s], frame]) if s in seeds else frame
                                  for s, frame in by_symbol.items()}, interval_ms)
            keep = slice(int(aligned.index.searchsorted(first, side="left")), None)
            aligned = AlignedBars(interval_ms, aligned.closes.iloc[keep], aligned.volumes.iloc[keep],
                                  aligned.trades.iloc[keep], aligned.filled.iloc[keep])
        else:
            aligned = align_bars(by_symbol, interval_ms)
    except InsufficientDataError:  # a symbol without any bar yet
        aligned = None
    open_start = None
    if aligned is not None and len(aligned.index):
        last_start = aligned.index[-1]
        if int(last_start.value // 1_000_000) + interval_ms > market_now:
            open_start = last_start
    return PairBars(interval_ms, by_symbol, aligned, open_start, market_now)
