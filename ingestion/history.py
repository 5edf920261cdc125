"""History at open: load the bars of the past into storage, in a thread of its own.

A freshly opened page should show every timeframe at once, not "needs 59 more bars". At start,
:class:`HistoryLoader` fills, for every watched symbol, the default lookbacks — :data:`PLAN`,
the widest lookback the page offers on 1 min and 5 min bars and the last hour on 1 s bars —
from the source's :class:`KlineHistory` (Binance REST klines; a simulated market's own past),
skipping what the database already holds, so a restart only loads the hole its downtime left.
The page asks for more with :meth:`HistoryLoader.ensure` (a wider lookback, a new symbol).

Every range is fetched whole before it is stored (one transaction), so a failure — an HTTP
error, a malformed row, a symbol the exchange does not know — changes no stored data and is
reported in :attr:`HistoryLoader.progress`; so does a page with a bar outside the range asked for,
repeated or out of order. Loading never holds up ticks, the page or gap backfill: it runs here,
writes go through its own connection, and the REST client it shares with the backfill shares its
weight budget and ban, not a lock.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from domain import TIMEFRAMES
from records import BarArrays, EventKind, FeedEvent, now_ms
from storage.base import TickStore
from storage.errors import StorageError

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
_NAMES = {timeframe.ms: timeframe.name for timeframe in TIMEFRAMES}  # 60000 → "1m"
# The bar still open when a range was loaded is fetched once more this long after it closes, so
# the bar a recorder joined half-way is complete too (an exchange publishes a kline when it closes).
TAIL_DELAY_MS = 2_000
IDLE_POLL_S = 0.5


def plan(history_hours: float) -> dict[int, int]:
    """Default lookback per bar interval (ms → ms): ``history_hours`` on 1 min and 5 min bars, at most
    the last hour on 1 s bars. Empty when ``history_hours`` is 0 (history off)."""
    if history_hours <= 0:
        return {}
    span = int(history_hours * HOUR_MS)
    return {60_000: span, 300_000: span, 1_000: min(span, HOUR_MS)}


class KlineHistory(Protocol):
    """Where past bars come from: an exchange's klines, or a simulated market's own past."""

    def klines(self, symbol: str, interval_ms: int, start_ms: int, end_ms: int, stop: threading.Event) -> BarArrays:
        """Closed bars opening in ``[start_ms, end_ms)``; raises ``RuntimeError`` (a subclass) on failure."""


@dataclass(frozen=True, slots=True)
class HistoryProgress:
    """What the loader has done: ranges done of those asked for, the one in flight, failures."""

    done: int
    total: int
    current: str | None  # e.g. "ETHUSDT 1m"
    errors: tuple[str, ...]
    bars: int  # bars stored so far

    @property
    def loading(self) -> bool:
        return self.done < self.total

    def describe(self) -> str:
        """E.g. ``Loading history: ETHUSDT 1m, 2 of 6`` (or ``history 6/6`` when done)."""
        if self.loading:
            return f"Loading history: {self.current or 'queued'}, {self.done + 1} of {self.total}"
        return f"history {self.done}/{self.total} ({self.bars:,} bars)"


@dataclass(frozen=True, slots=True)
class _Range:
    symbol: str
    interval_ms: int
    start_ms: int
    end_ms: int

    @property
    def label(self) -> str:
        return f"{self.symbol} {_NAMES.get(self.interval_ms, f'{self.interval_ms} ms')}"


class HistoryLoader:
    """Background loader of past bars (see the module docstring).

    ``open_store`` opens the store this thread writes bars to; ``emit`` receives a feed event per
    loaded or failed range (the feed tab lists them). :meth:`version_of` grows with every range
    that stored bars of one length, so readers know when to re-read them (and a 1 min bar stored
    does not make a page of 1 s bars redraw).
    """

    def __init__(self, history: KlineHistory, open_store: Callable[[], TickStore], lookbacks: dict[int, int], *,
                 emit: Callable[[FeedEvent], None] | None = None, clock: Callable[[], int] = now_ms) -> None:
        self.history = history
        self._open_store = open_store
        self.lookbacks = lookbacks
        self._emit = emit
        self._clock = clock
        self._queue: queue.SimpleQueue[_Range | None] = queue.SimpleQueue()
        self._covered: dict[tuple[str, int], int] = {}  # (symbol, interval) → earliest start asked for
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = self._total = self._bars = 0
        self._current: str | None = None
        self._errors: list[str] = []
        self._tails: list[tuple[int, _Range]] = []  # (due, range): bars that were open when loaded
        self._versions: dict[int, int] = {}  # bar length (ms) → ranges that stored bars of that length

    # ------------------------------------------------------------------ requests (any thread)
    def start(self, symbols: Iterable[str]) -> None:
        """Start the thread and ask for the default lookbacks of ``symbols``."""
        self._thread = threading.Thread(target=self._run, name="history-loader", daemon=True)
        self._thread.start()
        self.watch(symbols)

    def watch(self, symbols: Iterable[str]) -> None:
        """Ask for the default lookbacks of ``symbols`` (those already asked for cost nothing)."""
        now = self._clock()
        for interval_ms, lookback_ms in self.lookbacks.items():
            for symbol in symbols:
                self.ensure(symbol, interval_ms, now - lookback_ms, now=now)

    def ensure(self, symbol: str, interval_ms: int, since_ms: int, *, now: int | None = None) -> None:
        """Make sure bars of ``symbol`` at ``interval_ms`` from ``since_ms`` on are (being) loaded; cheap."""
        if interval_ms not in _NAMES:
            return
        since = since_ms - since_ms % interval_ms
        with self._lock:
            key = (symbol, interval_ms)
            covered = self._covered.get(key)
            if covered is not None and covered <= since:
                return
            end = covered if covered is not None else (self._clock() if now is None else now)
            self._covered[key] = since
            self._total += 1
        self._queue.put(_Range(symbol, interval_ms, since, end))

    def version_of(self, interval_ms: int) -> int:
        """How many ranges stored bars of ``interval_ms`` so far (grows whenever they change)."""
        with self._lock:
            return self._versions.get(interval_ms, 0)

    @property
    def progress(self) -> HistoryProgress:
        with self._lock:
            return HistoryProgress(self._done, self._total, self._current, tuple(self._errors[-5:]), self._bars)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ loading (own thread)
    def _run(self) -> None:
        try:
            store = self._open_store()
        except StorageError as exc:
            self._fail(f"history: cannot open the database: {exc}")
            return
        with store:
            while not self._stop.is_set():
                try:
                    wanted = self._queue.get(timeout=IDLE_POLL_S)
                except queue.Empty:
                    wanted = self._due_tail()
                    if wanted is None:
                        continue
                    with self._lock:
                        self._total += 1
                if wanted is None:
                    break
                with self._lock:
                    self._current = wanted.label
                try:
                    self._load(store, wanted)
                except (RuntimeError, StorageError) as exc:  # the client's "reply I cannot use", storage trouble
                    self._fail(f"history {wanted.label}: {exc}", wanted.symbol)
                finally:
                    with self._lock:
                        self._done += 1
                        self._current = None

    def _due_tail(self) -> _Range | None:
        now = self._clock()
        for index, (due, wanted) in enumerate(self._tails):
            if due <= now:
                del self._tails[index]
                return wanted
        return None

    def _load(self, store: TickStore, wanted: _Range) -> None:
        """Fetch what the store lacks of ``wanted`` (bars already stored are final) and store it at once."""
        start, end = wanted.start_ms, wanted.end_ms
        open_start = end - end % wanted.interval_ms
        if open_start < end:  # the range reaches into a bar that has not closed yet: fetch it again later
            tail = _Range(wanted.symbol, wanted.interval_ms, open_start, open_start + wanted.interval_ms)
            self._tails.append((open_start + wanted.interval_ms + TAIL_DELAY_MS, tail))
        span = store.bar_span(wanted.symbol, wanted.interval_ms)
        holes = [(start, end)]
        if span is not None:
            first, last = span
            holes = [(start, min(end, first)), (max(start, last + wanted.interval_ms), end)]
        stored = 0
        for hole_start, hole_end in holes:
            if hole_end <= hole_start or self._stop.is_set():
                continue
            bars = self.history.klines(wanted.symbol, wanted.interval_ms, hole_start, hole_end, self._stop)
            if len(bars):
                stored += store.write_bars(wanted.symbol, wanted.interval_ms, bars)
        if not stored:  # readers keep what they have: a new version makes every chart redraw whole
            return
        with self._lock:
            self._bars += stored
            self._versions[wanted.interval_ms] = self._versions.get(wanted.interval_ms, 0) + 1
        log.info("history %s: %d bars stored", wanted.label, stored)
        if self._emit is not None:
            self._emit(FeedEvent(now_ms(), EventKind.HISTORY, wanted.symbol, f"{wanted.label}: {stored} bars"))

    def _fail(self, message: str, symbol: str | None = None) -> None:
        log.warning("%s", message)
        with self._lock:
            self._errors.append(message)
        if self._emit is not None:
            self._emit(FeedEvent(now_ms(), EventKind.ERROR, symbol, message))
