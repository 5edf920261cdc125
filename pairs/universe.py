"""Closed bars of every watched symbol, for what shows the whole universe: the correlation heatmap,
the per-symbol summaries, the scanner and the OHLCV export.

The pair's own analytics never need them (:mod:`pairs.shared` aligns the two legs alone), so a
page watching 200 symbols pays for the universe only on a tab that shows it, and never waits for
it but once: :class:`UniverseBars` holds the newest bars per (symbols, timeframe, lookback) for
every session and tab of a feed, and when a bar has closed past the next step
(:func:`universe_step_ms`) or stored history arrived it builds them again in a background
thread, handing out the held ones meanwhile (one step behind at most, plus the build).

What the pages show of those bars is computed with them, once per step, not once per page run:
each build is a :class:`UniverseView` whose correlation matrix of returns (the heatmap) and
per-symbol summaries (Stats & tests) are computed in the build's thread, and every session and
run of that step reads the same objects.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

import pandas as pd

from analytics import correlation_matrix, log_returns
from ingestion.engine import Engine
from pairs.bars import BarHistory, PairBars, load_pair_span
from pairs.shared import forming_bar_start
from pairs.stats import SymbolSummary, symbol_summary
from records import now_ms
from records.flight import SingleFlightCache
from storage.errors import StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

# On 1 s bars the universe (200 symbols: a second or more to build) moves on in steps of this
# many milliseconds of market time, not every second: a heatmap over an hour or a day barely moves
# within a minute. Longer bars step with every closed bar.
UNIVERSE_STEP_MS = 60_000
MAX_ENTRIES = 8
_BUILDS = itertools.count(1)  # numbers every UniverseBars build of the process (UniverseView.build)
# A correlation needs a few returns: fewer closes than this (the first seconds of a feed) have none.
MIN_CORRELATION_CLOSES = 4


def universe_step_ms(interval_ms: int) -> int:
    """How often (market ms) the universe's bars at ``interval_ms`` move on: every bar, at least a minute."""
    return max(interval_ms, UNIVERSE_STEP_MS)


@dataclass(frozen=True, slots=True)
class UniverseCorrelation:
    """Pearson correlation of the universe's per-bar log returns over its closed bars.

    ``matrix``: symbols × symbols in the bars' column order, ρ in [-1, 1]; the row and column of a
    symbol whose returns never moved (a quiet symbol carrying its first close) are NaN but for its
    diagonal. ``moving``: the symbols that moved. ``last``: the bar the last return ends at (UTC).
    """

    matrix: pd.DataFrame
    moving: tuple[str, ...]
    last: pd.Timestamp

    @classmethod
    def of(cls, closes: pd.DataFrame) -> UniverseCorrelation | None:
        """The correlation of ``closes`` (aligned closes, one column per symbol, all bars closed), or
        None with fewer than :data:`MIN_CORRELATION_CLOSES` rows or when no symbol moved."""
        if len(closes) < MIN_CORRELATION_CLOSES:
            return None
        returns = log_returns(closes)
        moving = returns.columns[(returns.max() > returns.min()).to_numpy()]
        if not len(moving):
            return None
        matrix = correlation_matrix(returns[moving]).reindex(index=returns.columns, columns=returns.columns)
        return cls(matrix, tuple(str(symbol) for symbol in moving), returns.index[-1])


@dataclass(frozen=True, slots=True, eq=False)
class UniverseView:
    """Every watched symbol's closed bars (``bars``) and what pages show of them, each computed at
    most once per view however many sessions and runs ask: the correlation of returns
    (:meth:`correlation`, the heatmap) and per-symbol summaries (:meth:`summaries`). A view built by
    :class:`UniverseBars` has both computed in the build's thread already. Thread-safe.

    ``build``: which of :class:`UniverseBars`' builds made it (unique in the process; None for a
    view made elsewhere, e.g. of a dataset's bars). Two builds may end at the same bar with other
    data (stored history arrived within a step): what is drawn from a view is keyed on this.
    """

    bars: PairBars
    build: int | None = None
    _memo: dict[str, object] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def correlation(self) -> UniverseCorrelation | None:
        """:meth:`UniverseCorrelation.of` the bars' closed closes (the forming bar, if any, left out)."""
        return self._once("correlation", lambda: UniverseCorrelation.of(self.bars.closes(closed_only=True)))

    def summaries(self) -> Mapping[str, SymbolSummary | None]:
        """Each symbol's :func:`pairs.stats.symbol_summary` over the bars (None: no bar yet), in the bars' order."""
        return self._once("summaries", lambda: {symbol: symbol_summary(symbol, frame, self.bars.interval_ms)
                                                for symbol, frame in self.bars.by_symbol.items()})

    def computed(self) -> UniverseView:
        """This view with everything it shows computed (what a build does before handing it out)."""
        self.correlation()
        self.summaries()
        return self

    def _once(self, name: str, compute: Callable[[], T]) -> T:
        # Under the lock: a second asker waits for the first's result rather than computing it again.
        with self._lock:
            if name not in self._memo:
                self._memo[name] = compute()
            return cast(T, self._memo[name])


@dataclass(frozen=True, slots=True)
class _Key:
    symbols: tuple[str, ...]
    interval_ms: int
    lookback_ms: int
    end_ms: int  # bars start before this (UTC epoch ms): a step boundary, every bar before it closed
    history_version: int

    @property
    def series(self) -> tuple[tuple[str, ...], int, int]:
        return self.symbols, self.interval_ms, self.lookback_ms


class UniverseBars:
    """The universe's closed bars of one service (one engine, one database), shared. Thread-safe."""

    def __init__(self, engine: Engine, history: BarHistory, max_entries: int = MAX_ENTRIES) -> None:
        self.engine = engine
        self.history = history
        self._cache: SingleFlightCache[_Key, UniverseView] = SingleFlightCache(max_entries, lambda key: key.series)
        self._lock = threading.Lock()  # guards the builds in flight and the counter
        self._building: dict[tuple[tuple[str, ...], int, int], threading.Thread] = {}
        self.built = 0  # builds so far (for tests and benchmarks)

    def closed(self, symbols: Sequence[str], interval_ms: int, lookback_ms: int, *, wait: bool = False) -> PairBars:
        """Closed bars of ``symbols`` at ``interval_ms`` over ``lookback_ms`` of market time, aligned
        on one grid (a quiet symbol carries its last close, flagged filled), ending at the last step
        boundary (:func:`universe_step_ms`) at or before the bar still forming: the bars a view of
        all ``symbols`` over that lookback would show (:func:`pairs.bars.load_pair_span`, no warm-up).

        Built once per step. The first ask of a (symbols, timeframe, lookback) builds them; later
        asks get the held bars at once and, once a newer step is due, start one background build
        whose bars the asks after it get. Held bars older than the step before the current one
        (no ask for a while: a tab opened after an hour) are never handed out: that ask builds the
        current step. ``wait``: build the current step here if not held (tests, and an export that
        must be current).
        """
        return self.view(symbols, interval_ms, lookback_ms, wait=wait).bars

    def view(self, symbols: Sequence[str], interval_ms: int, lookback_ms: int, *, wait: bool = False) -> UniverseView:
        """The :class:`UniverseView` of :meth:`closed`'s bars (built, held and refreshed as they are), its
        correlation and summaries computed with them: the same object for every ask within a step."""
        key = self._key(symbols, interval_ms, lookback_ms)
        held = self._cache.find(key, lambda view: view)
        if held is not None:
            return held
        if not wait:
            # Only the step before: bars held from longer ago (nobody asked since) are built anew
            # here, never handed out as if current.
            previous_end = key.end_ms - universe_step_ms(interval_ms)
            older = self._cache.newest(lambda k: k.series == key.series and k.end_ms >= previous_end)
            if older is not None:
                self._refresh(key)
                return older
        view, _ = self._cache.get_or_compute(key, lambda view: view, lambda: self._build(key))
        return view

    def join(self, timeout: float = 30.0) -> None:
        """Wait for the background builds in flight (tests; a service stopping)."""
        with self._lock:
            threads = list(self._building.values())
        for thread in threads:
            thread.join(timeout)

    def _key(self, symbols: Sequence[str], interval_ms: int, lookback_ms: int) -> _Key:
        self.engine.close_due_bars()
        market_now = self.engine.market_now_ms() or now_ms()
        step = universe_step_ms(interval_ms)
        end = forming_bar_start(self.engine, symbols, interval_ms, market_now) // step * step
        return _Key(tuple(symbols), interval_ms, lookback_ms, end, self.history.version_of(interval_ms, symbols))

    def _build(self, key: _Key) -> tuple[UniverseView, UniverseView]:
        # As a view asked at the step's end: the lookback ends there, whatever the clock says now.
        bars, _ = load_pair_span(self.engine, self.history, key.symbols, key.interval_ms, key.lookback_ms,
                                 closed_before_ms=key.end_ms, market_now_ms=key.end_ms)
        # Computed here, in the background build's thread, so that no page run pays for them.
        view = UniverseView(bars, next(_BUILDS)).computed()
        with self._lock:
            self.built += 1
        return view, view

    def _refresh(self, key: _Key) -> None:
        """Build ``key``'s bars in a background thread, unless its series is being built already."""
        with self._lock:
            running = self._building.get(key.series)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(target=self._background, args=(key,), name=f"universe-{len(key.symbols)}",
                                      daemon=True)
            self._building[key.series] = thread
        thread.start()

    def _background(self, key: _Key) -> None:
        try:
            self._cache.get_or_compute(key, lambda view: view, lambda: self._build(key))
        except (StorageError, OSError, ValueError) as exc:  # the held bars stay; the next ask tries again
            log.warning("building the bars of %d symbols at %d ms: %s", len(key.symbols), key.interval_ms, exc)
        finally:
            with self._lock:
                if self._building.get(key.series) is threading.current_thread():
                    del self._building[key.series]
