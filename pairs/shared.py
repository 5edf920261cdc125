"""Pair analytics computed once per (pair, parameters, closed bar) and shared by every reader.

Every browser tab watching a pair, and the alert monitor evaluating rules on it, ask
:class:`SharedAnalytics` for a :class:`PairView`: the pair's closed bars over a span and the pair
analytics computed on them. The first asker after a bar closes computes it; everyone else gets
the same objects until the next bar closes (or stored history changes). A request for a shorter
span of the same pair and parameters is cut from a longer one already computed when the
analytics do not depend on where the span starts (rolling OLS: each value depends only on its
own window), so the alert monitor's short look costs nothing while a page shows the pair.

When a bar closes, a rolling-OLS view is not computed again over its whole span: the newest
earlier view of the same series is extended by the bars that closed since
(:meth:`pairs.bars.PairBars.extended`, :func:`pairs.compute.extend_pair`), its start sliding with
the market. A whole computation happens at the first ask, when stored history changes, for
in-sample fits and the Kalman filter, and when a bar turns up before the last one already
aligned (a trade that came late).

The still-forming bar is not part of a view (it changes with every trade); the page adds it for
display (:func:`pairs.bars.with_open_bar`) and the live panel computes the open bar's z-score
from the view's last closed bars.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from ingestion.engine import BAR_CLOSE_GRACE_MS, Engine
from ingestion.live_bars import BASE_INTERVAL_MS
from pairs.bars import BarHistory, PairBars, load_pair_span, span_floor, symbol_frames, warmup_start
from pairs.compute import PairAnalytics, PairParams, compute_pair, extend_pair
from records import now_ms
from records.flight import SingleFlightCache

MAX_ENTRIES = 32


@dataclass(frozen=True, slots=True)
class PairView:
    """Closed bars of a pair (with warm-up before ``bars.shown_from``) and the analytics on them."""

    bars: PairBars
    pair: PairAnalytics | None  # None until every symbol has a bar
    open_start_ms: int  # start of the bar still forming (not in the view), UTC epoch ms
    data_version: int = 0  # changes when bars already closed change (history arrived): charts redraw whole

    def since(self, start_ms: int, end_ms: int | None = None) -> PairView:
        """The same view from ``start_ms`` (UTC epoch ms) on, and before ``end_ms`` if given: bars and
        every series cut there."""
        start = pd.Timestamp(start_ms, unit="ms", tz="UTC")
        end = None if end_ms is None else pd.Timestamp(end_ms, unit="ms", tz="UTC")
        return PairView(self.bars.since(start, end), None if self.pair is None else self.pair.since(start, end),
                        self.open_start_ms, self.data_version)

    def analysed_closes(self) -> tuple[pd.DataFrame, int]:
        """The closes the analytics ran on (the bars the liquidity filter kept, warm-up included;
        columns Y and X, quote currency) and the position of the first bar of the lookback among
        them: what a backtest needs to trade on the very z-score this view shows for each bar."""
        if self.pair is None:
            return pd.DataFrame(), 0
        closes = pd.DataFrame({self.pair.params.y: self.pair.y, self.pair.params.x: self.pair.x})
        shown_from = self.bars.shown_from
        return closes, 0 if shown_from is None else int(self.pair.index.searchsorted(shown_from, side="left"))

    def shown(self) -> PairView:
        """The view over its lookback only: from ``bars.shown_from`` on, without the warm-up bars."""
        shown_from = self.bars.shown_from
        return self if shown_from is None else self.since(int(shown_from.value // 1_000_000))


@dataclass(frozen=True, slots=True)
class ViewQuery:
    """What a reader asks :meth:`SharedAnalytics.view` for: ``symbols`` at ``interval_ms`` over
    ``lookback_ms`` (plus ``warmup_bars`` kept bars), ``params``' analytics, the liquidity filter.

    A page and its live panel's stream ask with the same query, so they share one computation.
    """

    symbols: tuple[str, ...]
    interval_ms: int
    lookback_ms: int
    params: PairParams
    warmup_bars: int = 0
    min_trades: int = 0
    min_volume: float = 0.0


@dataclass(frozen=True, slots=True)
class _Key:
    symbols: tuple[str, ...]
    interval_ms: int
    params: PairParams
    min_trades: int
    min_volume: float
    live_version: int  # bumped by the engine whenever a live bar closes
    # Above 1 s, the start of the bar still forming (UTC ms), else 0: such a bar also closes when its
    # time is over, which on a quiet feed closes no 1 s bar (the version stays).
    forming_ms: int
    history_version: int  # grows whenever stored bars of this interval arrive (BarHistory.version_of)

    @property
    def series(self) -> _Key:
        """This key at no particular version of the data: the pair and parameters alone."""
        return replace(self, live_version=0, forming_ms=0, history_version=0)

    def same_series(self, other: _Key) -> bool:
        """Whether ``other`` asks for the same pair and parameters (at any version of the data)."""
        return self.series == other.series


@dataclass(frozen=True, slots=True)
class _Entry:
    since_ms: int  # first bar of the view held
    view: PairView
    first_live: tuple[int | None, ...]  # where each symbol's live bars began when this was computed
    asked: tuple[int, int]  # (shown_from_ms, warmup_bars) of the request it was computed or extended for
    start_ms: int  # where that request's view starts (the rules of pairs.bars.load_pair_bars)


def forming_bar_start(engine: Engine, symbols: Sequence[str], interval_ms: int, market_now_ms: int) -> int:
    """Start of the bar at ``interval_ms`` that is still forming (UTC epoch ms); every bar before it is closed.

    The engine closes a 1 s bar when a later trade arrives or its grace period has passed; the
    earliest 1 s bar still open among ``symbols`` (else the second after the grace period) is the
    first one not closed, and the bar at ``interval_ms`` holding it is forming.
    """
    open_starts = [bar.start_ms for s in symbols if (bar := engine.bars.open_bar(s)) is not None]
    first_open = min(open_starts) if open_starts else \
        (market_now_ms - BAR_CLOSE_GRACE_MS) // BASE_INTERVAL_MS * BASE_INTERVAL_MS + BASE_INTERVAL_MS
    return first_open // interval_ms * interval_ms


class SharedAnalytics:
    """The shared cache of one service (one engine, one database). Thread-safe."""

    def __init__(self, engine: Engine, history: BarHistory, max_entries: int = MAX_ENTRIES) -> None:
        self.engine = engine
        self.history = history
        self.max_entries = max_entries
        # One computation per series at a time (the second asker waits, then reuses it); other series
        # go on meanwhile: a tab on the Kalman filter over a day (~0.4 s a bar) holds up no one else.
        # Holding a new version of a series drops the older ones: they are never asked for again.
        self._cache: SingleFlightCache[_Key, _Entry] = SingleFlightCache(max_entries, lambda key: key.series)
        self._lock = threading.Lock()  # guards the counters
        self.computed = 0  # whole computations so far (for tests and benchmarks)
        self.extended = 0  # views extended by the bars that closed since an earlier one
        self.served = 0  # views served from the cache

    def view(self, symbols: Sequence[str], interval_ms: int, lookback_ms: int, params: PairParams, *,
             warmup_bars: int = 0, min_trades: int = 0, min_volume: float = 0.0) -> PairView:
        """Closed bars of ``symbols`` at ``interval_ms`` over ``lookback_ms`` (plus ``warmup_bars`` kept
        bars before it) and ``params``' analytics on them, computed at most once per closed bar.

        Whatever the cache held, the view over the lookback (:meth:`PairView.shown`) equals a cold
        computation of the same request: the bars follow the rules of
        :func:`pairs.bars.load_pair_bars` (warm-up counted in kept bars, a quiet leg's last close
        carried into the span), and a held view is used only where it has the bars those rules ask for.
        """
        self.engine.close_due_bars()
        market_now = self.engine.market_now_ms() or now_ms()
        epoch = forming_bar_start(self.engine, symbols, interval_ms, market_now)
        shown_from = (market_now - lookback_ms) // interval_ms * interval_ms
        asked = (shown_from, warmup_bars)
        # The threshold only draws lines: it must not split the cache.
        # Keyed by the data, not the clock: a quiet feed's view is reused (and cut as the lookback slides),
        # until a bar longer than 1 s closes by its time alone.
        key = _Key(tuple(symbols), interval_ms, replace(params, z_threshold=0.0), min_trades, float(min_volume),
                   self.engine.bars.version, epoch if interval_ms != BASE_INTERVAL_MS else 0,
                   self.history.version_of(interval_ms, symbols))
        span_free = params.span_free

        def compute() -> tuple[_Entry, tuple[_Entry, int]]:
            first_live = tuple(self.engine.bars.first_start_ms(s) for s in symbols)
            entry = self._extended(key, asked, epoch, market_now, first_live) if span_free else None
            if entry is not None:
                self._count("extended")
            else:
                bars, since = load_pair_span(self.engine, self.history, symbols, interval_ms, lookback_ms,
                                             warmup_bars, closed_before_ms=epoch, min_trades=min_trades,
                                             min_volume=min_volume)
                pair = None
                if bars.aligned is not None:
                    pair = compute_pair(bars.closes(min_trades=min_trades, min_volume=min_volume), params)
                entry = _Entry(since, PairView(bars, pair, epoch, key.history_version), first_live, asked, since)
                self._count("computed")
            return entry, (entry, entry.start_ms)

        hit, fresh = self._cache.get_or_compute(key, lambda entry: _served_from(entry, key, asked, span_free),
                                                compute)
        if not fresh:
            self._count("served")
        entry, start = hit
        view = entry.view if entry.since_ms == start else entry.view.since(start)
        shown = pd.Timestamp(shown_from, unit="ms", tz="UTC")
        pair = None if view.pair is None else replace(view.pair, params=params)
        return PairView(replace(view.bars, shown_from=shown), pair, epoch, view.data_version)

    def ask(self, query: ViewQuery) -> PairView:
        """:meth:`view` for ``query``."""
        return self.view(query.symbols, query.interval_ms, query.lookback_ms, query.params,
                         warmup_bars=query.warmup_bars, min_trades=query.min_trades, min_volume=query.min_volume)

    def stamp(self, symbols: Sequence[str], interval_ms: int) -> tuple[int, int]:
        """What the closed bars of ``symbols`` at ``interval_ms`` are at now: the start of the bar still
        forming (UTC epoch ms) and the stored history's version. Cheap (no bars read): a reader that
        derives something from a view asks for a new view only when this changes."""
        self.engine.close_due_bars()
        market_now = self.engine.market_now_ms() or now_ms()
        return forming_bar_start(self.engine, symbols, interval_ms, market_now), \
            self.history.version_of(interval_ms, symbols)

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def _extended(self, key: _Key, asked: tuple[int, int], epoch: int, market_now: int,
                  first_live: tuple[int | None, ...]) -> _Entry | None:
        """The newest earlier view of the same series extended by the bars that closed since it
        (:meth:`PairBars.extended`, :func:`extend_pair`), or None where that would not equal a whole
        computation: no such view, stored bars changed, a symbol whose bars then came from the
        database alone (its live bars had not begun), or one that lacks bars the request needs
        (:func:`_usable_start`)."""
        prior = self._cache.newest(lambda k: k.same_series(key) and k.history_version == key.history_version
                                   and k.live_version <= key.live_version and k.forming_ms <= key.forming_ms
                                   and k != key)
        if prior is None or prior.first_live != first_live or None in first_live \
                or prior.view.pair is None or prior.view.open_start_ms > epoch:
            return None
        # Slide the span along with the market, keeping a tenth of it as margin for readers whose
        # start is a bar or two earlier than this one's; never past where this request's bars begin.
        shown_from, warmup_bars = asked
        floor = span_floor(shown_from, key.interval_ms)
        target = warmup_start(prior.view.pair.index, shown_from, warmup_bars)
        target = floor if target is None or target < floor else target
        reach = prior.view.open_start_ms - prior.since_ms
        keep_from = max(prior.since_ms, min(target, epoch - reach - reach // 10))
        base = prior.view.since(keep_from)
        if base.bars.aligned is None or not len(base.bars.aligned.index) or base.pair is None:
            return None
        frames = self._new_bars(base.bars, key, keep_from, epoch)
        if frames is None:
            return None
        bars = base.bars.extended(frames, market_now)
        pair = extend_pair(base.pair, bars.closes(min_trades=key.min_trades, min_volume=key.min_volume))
        if pair is None:
            return None
        view = PairView(bars, pair, epoch, key.history_version)
        start = _usable_start(keep_from, view, asked, key.interval_ms)
        return None if start is None else _Entry(keep_from, view, first_live, asked, start)

    def _new_bars(self, bars: PairBars, key: _Key, since: int, epoch: int) -> dict[str, pd.DataFrame] | None:
        """Each symbol's bars after its last one in ``bars``, up to ``epoch``; None if a symbol's last
        bar changed since or a new bar starts at or before the last aligned one (a trade that came
        late): only a whole computation puts such a bar where it belongs."""
        assert bars.aligned is not None
        last_aligned = bars.aligned.index[-1]
        frames = {}
        for symbol, old in bars.by_symbol.items():
            start = int(old.index[-1].value // 1_000_000) if len(old) else since
            frame = symbol_frames(self.engine, self.history, (symbol,), key.interval_ms, start,
                                  closed_before_ms=epoch)[symbol]
            if len(old):  # its last bar again, unchanged?
                if not len(frame) or frame.index[0] != old.index[-1] or not frame.iloc[0].equals(old.iloc[-1]):
                    return None
                frame = frame.iloc[1:]
            if len(frame) and frame.index[0] <= last_aligned:
                return None
            frames[symbol] = frame
        return frames


def _served_from(entry: _Entry, key: _Key, asked: tuple[int, int], span_free: bool) -> tuple[_Entry, int] | None:
    """``entry`` and where the view for ``asked`` starts in it, if it has what that needs."""
    if entry.asked == asked:
        return entry, entry.start_ms
    start = _usable_start(entry.since_ms, entry.view, asked, key.interval_ms) if span_free else None
    return None if start is None else (entry, start)


def _usable_start(since_ms: int, view: PairView, asked: tuple[int, int], interval_ms: int) -> int | None:
    """Where a cold view for ``asked`` (``(shown_from_ms, warmup_bars)``) would start if ``view``
    (rolling analytics over bars from ``since_ms``) holds every bar it needs, so that ``view`` cut
    there equals it over the lookback; None otherwise.

    The rules are those of :func:`pairs.bars.load_pair_bars`: the start is the ``warmup_bars``-th
    kept bar before the lookback, or the floor when there are fewer since it (then ``view`` must
    reach back to the floor); and a symbol quiet in the first bar from there carries a close only
    from a bar at or after the floor.
    """
    shown_from, warmup_bars = asked
    bars, pair = view.bars, view.pair
    if pair is None or bars.aligned is None:
        return None
    floor = span_floor(shown_from, interval_ms)
    start = warmup_start(pair.index, shown_from, warmup_bars)
    if start is None or start < floor:
        start = floor
    if start < since_ms:
        return None
    aligned = bars.aligned
    at = pd.Timestamp(start, unit="ms", tz="UTC")
    first = int(aligned.index.searchsorted(at, side="left"))
    if first == len(aligned.index):
        return None  # no bar from there on: a cold view would have none aligned either
    for symbol in aligned.closes.columns:
        if aligned.filled[symbol].iat[first]:  # carried into the span: from where?
            frame = bars.by_symbol[symbol]
            before = int(frame.index.searchsorted(at, side="left"))
            last = frame.index[before - 1] if before else bars.last_before.get(symbol)
            if last is None or last < pd.Timestamp(floor, unit="ms", tz="UTC"):
                return None
    return start
