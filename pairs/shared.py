"""Pair analytics computed once per (pair, parameters, closed bar) and shared by every reader.

Every browser tab watching a pair, and the alert monitor evaluating rules on it, ask
:class:`SharedAnalytics` for a :class:`PairView`: the pair's closed bars over a span and the pair
analytics computed on them. The first asker after a bar closes computes it; everyone else gets
the same objects until the next bar closes (or stored history changes). A request for a shorter
span of the same pair and parameters is cut from a longer one already computed when the
analytics do not depend on where the span starts (rolling OLS: each value depends only on its
own window), so the alert monitor's short look costs nothing while a page shows the pair.

The still-forming bar is not part of a view (it changes with every trade); the page adds it for
display (:func:`pairs.bars.with_open_bar`) and the live panel computes the open bar's z-score
from the view's last closed bars.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from ingestion.engine import BAR_CLOSE_GRACE_MS, Engine
from ingestion.live_bars import BASE_INTERVAL_MS
from pairs.bars import BarHistory, PairBars, load_pair_bars
from pairs.compute import REGRESSIONS, PairAnalytics, PairParams, compute_pair
from records import now_ms

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


@dataclass(frozen=True, slots=True)
class _Key:
    symbols: tuple[str, ...]
    interval_ms: int
    params: PairParams
    min_trades: int
    min_volume: float
    live_version: int  # bumped by the engine whenever a live bar closes
    history_version: int  # bumped whenever stored bars of this interval arrive


@dataclass(frozen=True, slots=True)
class _Entry:
    since_ms: int
    shown_from_ms: int
    view: PairView


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
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._compute_lock = threading.Lock()  # one computation at a time: the second asker waits, then reuses
        self.computed = 0  # computations so far (for tests and benchmarks)
        self.served = 0  # views served from the cache

    def view(self, symbols: Sequence[str], interval_ms: int, lookback_ms: int, params: PairParams, *,
             warmup_bars: int = 0, min_trades: int = 0, min_volume: float = 0.0) -> PairView:
        """Closed bars of ``symbols`` at ``interval_ms`` over ``lookback_ms`` (plus ``warmup_bars``
        before it) and ``params``' analytics on them, computed at most once per closed bar."""
        self.engine.close_due_bars()
        market_now = self.engine.market_now_ms() or now_ms()
        epoch = forming_bar_start(self.engine, symbols, interval_ms, market_now)
        shown_from = (market_now - lookback_ms) // interval_ms * interval_ms
        since = shown_from - warmup_bars * interval_ms
        # The threshold only draws lines: it must not split the cache.
        # Keyed by the data, not the clock: a quiet feed's view is reused (and cut as the lookback slides).
        key = _Key(tuple(symbols), interval_ms, replace(params, z_threshold=0.0), min_trades, float(min_volume),
                   self.engine.bars.version, self._history_version(interval_ms))
        span_free = REGRESSIONS[params.regression][0] == "rolling_ols"
        hit = self._lookup(key, since, span_free)
        if hit is None:
            with self._compute_lock:
                hit = self._lookup(key, since, span_free)  # computed meanwhile by another asker?
                if hit is None:
                    bars = load_pair_bars(self.engine, self.history, symbols, interval_ms, lookback_ms, warmup_bars,
                                          closed_before_ms=epoch)
                    pair = None
                    if bars.aligned is not None:
                        pair = compute_pair(bars.closes(min_trades=min_trades, min_volume=min_volume), params)
                    hit = _Entry(since, shown_from, PairView(bars, pair, epoch, key.history_version))
                    with self._lock:
                        self._entries[key] = hit
                        while len(self._entries) > self.max_entries:
                            self._entries.popitem(last=False)
                    self.computed += 1
                else:
                    self.served += 1
        else:
            self.served += 1
        view = hit.view if hit.since_ms == since else hit.view.since(since)
        shown = pd.Timestamp(shown_from, unit="ms", tz="UTC")
        pair = None if view.pair is None else replace(view.pair, params=params)
        return PairView(replace(view.bars, shown_from=shown), pair, epoch, view.data_version)

    def _lookup(self, key: _Key, since: int, span_free: bool) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not (entry.since_ms == since or (span_free and entry.since_ms <= since)):
                return None
            self._entries.move_to_end(key)
            return entry

    def _history_version(self, interval_ms: int) -> int:
        loader = self.history.loader
        return loader.version_of(interval_ms) if loader is not None else 0
