"""The engine: one source thread and the live views it feeds; storage and backfill are handed to it.

Data path (all in the source's thread, no I/O)::

    source → Engine.on_trade → sequencer (re-sends, gaps) → last trades, LiveBars (live views)
                                                          → writer queue (when this process writes)
                             gaps → backfill queue (when the source can re-fetch trades)

The engine does not open databases or start other threads: :mod:`service` wires it to a writer,
a backfiller and an alert monitor (or, when another process already writes the database, to a
follower of that database instead of a writer) for both the dashboard and the headless recorder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config import FeedSettings
from ingestion.live_bars import LiveBars
from ingestion.source import Capabilities, Source
from records import EventKind, FeedEvent, FeedState, FeedStatus, MarkPrice, StorageState, Trade, now_ms

if TYPE_CHECKING:
    from ingestion.backfill import Backfiller
    from ingestion.writer import TickWriter

log = logging.getLogger(__name__)

RATE_WINDOW_S = 5.0
# A bar closes this long (market time) after its end, so trades delayed in transit, or a recording's
# interleaved sockets, still land in it. Market time: a replay at 60x closes bars 8 ms after their end.
BAR_CLOSE_GRACE_MS = 500


@dataclass(frozen=True, slots=True)
class Gap:
    """Trade ids ``first_missing … first_missing + count - 1`` of ``symbol`` never arrived."""

    symbol: str
    first_missing: int
    count: int

    def event(self, ts_ms: int) -> FeedEvent:
        return FeedEvent(ts_ms, EventKind.GAP, self.symbol, f"first_missing={self.first_missing} count={self.count}")


class TradeSequencer:
    """Per-symbol trade-id bookkeeping: drops re-sent trades, reports gaps.

    Exchange trade ids are consecutive per symbol, so an id jump of more than one means trades
    were missed (e.g. while reconnecting). Ids at or below the last one seen are re-sends from
    an overlapping or restarted connection.
    """

    def __init__(self, last_ids: dict[str, int] | None = None) -> None:
        self.last_ids: dict[str, int] = dict(last_ids or {})
        self.duplicates = 0
        self.gaps = 0
        self.missing = 0

    def advance(self, symbol: str, trade_id: int) -> tuple[bool, Gap | None]:
        """Note that id ``trade_id`` of ``symbol`` arrived: (is new, the gap it reveals or None).

        Also called for ids that are not market prints (futures insurance-fund, ADL, ``NA``
        trades): they are never stored, but the next market trade must not look like a gap.
        """
        last = self.last_ids.get(symbol)
        if last is not None and trade_id <= last:
            self.duplicates += 1
            return False, None
        self.last_ids[symbol] = trade_id
        if last is None or trade_id == last + 1:
            return True, None
        gap = Gap(symbol, last + 1, trade_id - last - 1)
        self.gaps += 1
        self.missing += gap.count
        return True, gap


class Engine:
    """Source thread + sequencer + live views. ``start()`` once, ``stop()`` once.

    ``writer``: where trades and feed events go (None when another process stores them and this
    engine only follows its database). ``backfiller``: re-fetches trade-id gaps (None when the
    source cannot). ``last_ids``: where the sequencer resumes (exchange ids continue across
    restarts). ``follows``: the writer this engine reads from, for the status panel.
    """

    def __init__(self, feed: FeedSettings, source: Source, capabilities: Capabilities, *,
                 writer: TickWriter | None = None, backfiller: Backfiller | None = None,
                 last_ids: dict[str, int] | None = None, follows: str | None = None) -> None:
        self.feed = feed  # the one slice of the settings an engine reads: its symbols and speed
        self.source = source
        self.capabilities = capabilities
        self.writer = writer
        self.backfiller = backfiller
        self.follows = follows
        self.symbols: tuple[str, ...] = feed.symbols
        self.bars = LiveBars()
        self.sequencer = TradeSequencer(last_ids)
        self.trades = 0
        self.last_tick_mono: float | None = None
        self._last: dict[str, Trade] = {}
        self._marks: dict[str, MarkPrice] = {}  # USDⓈ-M: the newest mark price and funding per symbol
        self._last_tick_ts_ms = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rate_lock = threading.Lock()
        self._rate_samples: deque[tuple[float, int, int]] = deque()
        self.started_mono: float | None = None
        self.stopped = False

    # ---------------------------------------------------------------- sink (source thread)
    def on_trade(self, trade: Trade) -> None:
        is_new, gap = self.sequencer.advance(trade.symbol, trade.trade_id)
        if gap is not None:
            self._on_gap(gap, trade.recv_ms)
        if not is_new:
            # At or below the last id: usually a re-send, sometimes a late trade the exchange
            # delivered out of order. The store's idempotent insert tells them apart for free;
            # live views skip it either way (their bars have moved on).
            self._store(trade)
            return
        self.trades += 1
        self.last_tick_mono = time.monotonic()
        self._last_tick_ts_ms = max(self._last_tick_ts_ms, trade.ts_ms)
        self._last[trade.symbol] = trade
        self.bars.update(trade)
        self._store(trade)

    def on_non_market(self, symbol: str, trade_id: int) -> None:
        """A trade id that is not a market print: the sequencer moves past it, nothing is stored or
        drawn (a gap before it is still a gap)."""
        _is_new, gap = self.sequencer.advance(symbol, trade_id)
        if gap is not None:
            self._on_gap(gap, now_ms())

    def _on_gap(self, gap: Gap, recv_ms: int) -> None:
        log.warning("gap in %s trade ids: %d missing from %d", gap.symbol, gap.count, gap.first_missing)
        self._store(gap.event(recv_ms))
        if self.backfiller is not None:
            self.backfiller.request(gap.symbol, gap.first_missing, gap.count)

    def on_mark_price(self, mark: MarkPrice) -> None:
        """Keep ``mark`` if it is the symbol's newest (by event time: during a rollover two connections
        deliver the same updates). Never stored and never seen by the sequencer: it carries no trade id."""
        kept = self._marks.get(mark.symbol)
        if kept is None or mark.event_ms >= kept.event_ms:
            self._marks[mark.symbol] = mark

    def mark_price(self, symbol: str) -> MarkPrice | None:
        """The newest mark price and funding of ``symbol`` (a perpetual), or None before its first
        update and for every spot, simulated or replayed symbol."""
        return self._marks.get(symbol)

    def on_event(self, event: FeedEvent) -> None:
        self._store(event)

    def _store(self, item: Trade | FeedEvent) -> None:
        if self.writer is not None:
            self.writer.put(item)

    def last_trade(self, symbol: str) -> Trade | None:
        """The most recent trade of ``symbol`` (exchange time order), or None before its first."""
        return self._last.get(symbol)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("engine already started")
        self._store(FeedEvent(now_ms(), EventKind.STARTED, None, self.source.label))
        self.started_mono = time.monotonic()
        self._thread = threading.Thread(target=self._run_source, name=f"source-{self.source.name}", daemon=True)
        self._thread.start()
        log.info("engine started: %s", self.source.label)

    def _run_source(self) -> None:
        try:
            self.source.run(self, self._stop)
        except Exception as exc:  # a source bug must show in the UI, not vanish with its thread
            log.exception("source %s crashed", self.source.name)
            self.source.stats.last_error = f"source crashed: {exc!r}"
            self.source.stats.state = FeedState.STOPPED
            self._store(FeedEvent(now_ms(), EventKind.ERROR, None, f"source crashed: {exc!r}"))

    def set_symbols(self, symbols: tuple[str, ...]) -> None:
        """Watch ``symbols`` from now on (the source re-subscribes; symbols already watched lose nothing)."""
        self.symbols = symbols
        self.source.set_symbols(symbols)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the source thread; True if it finished in time. The service then flushes the writer."""
        self.stopped = True
        if self._thread is None:
            return True
        self._stop.set()
        self._thread.join(timeout)
        self._store(FeedEvent(now_ms(), EventKind.STOPPED, None, self.source.label))
        return not self._thread.is_alive()

    # ---------------------------------------------------------------- market time
    def market_now_ms(self) -> int | None:
        """Current market time, UTC epoch ms: the wall clock for live data; for simulated and
        replayed data, the last trade's time moved on by the elapsed wall time × ``speed``
        (None before the first trade)."""
        if self.capabilities.live:
            return now_ms()
        if self.last_tick_mono is None:
            return None
        return self._last_tick_ts_ms + int((time.monotonic() - self.last_tick_mono) * 1000 * self.feed.speed)

    def close_due_bars(self) -> None:
        """Close live bars whose interval (plus a grace period) has passed, even without new trades."""
        market_now = self.market_now_ms()
        if market_now is not None:
            self.bars.advance(market_now - BAR_CLOSE_GRACE_MS)

    # ---------------------------------------------------------------- status
    def status(self) -> FeedStatus:
        """A consistent-enough snapshot for the status panel; cheap, safe from any thread."""
        stats = self.source.stats
        now = time.monotonic()
        with self._rate_lock:
            samples = self._rate_samples
            samples.append((now, stats.messages, self.trades))
            while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
                samples.popleft()
            t0, messages0, trades0 = samples[0]
        if now - t0 > 1e-3:
            messages_per_s = (stats.messages - messages0) / (now - t0)
            ticks_per_s = (self.trades - trades0) / (now - t0)
        else:  # first call: average since start
            elapsed = max(now - (self.started_mono or now), 1e-3)
            messages_per_s, ticks_per_s = stats.messages / elapsed, self.trades / elapsed
        storage_state, storage_detail = self._storage()
        last_error = stats.last_error
        if storage_state in (StorageState.FAILED, StorageState.RETRYING):
            last_error = storage_detail  # storage trouble outranks a feed hiccup: data is at stake
        writer = self.writer
        return FeedStatus(
            source=self.source.name,
            state=stats.state,
            symbols=self.symbols,
            connected_since_ms=stats.connected_since_ms,
            reconnects=stats.reconnects,
            messages_per_s=messages_per_s,
            ticks_per_s=ticks_per_s,
            last_message_age_s=None if stats.last_message_mono is None else now - stats.last_message_mono,
            last_tick_age_s=None if self.last_tick_mono is None else now - self.last_tick_mono,
            trades=self.trades,
            duplicates=self.sequencer.duplicates,
            gaps=self.sequencer.gaps,
            missing_trades=self.sequencer.missing,
            parse_errors=stats.parse_errors,
            unknown_messages=stats.unknown_messages,
            last_error=last_error or (writer.reject_error if writer is not None else None),
            label=self.source.label,
            storage_state=storage_state,
            storage_detail=storage_detail,
            stored=writer.committed_trades if writer is not None else 0,
            rejected=writer.rejected if writer is not None else 0,
            lost=writer.lost if writer is not None else 0,
            connections=(stats.connections_up, stats.connections) if stats.connections > 1 else None,
            silent=stats.silent,
        )

    def _storage(self) -> tuple[StorageState, str]:
        writer = self.writer
        if writer is None:
            return StorageState.FOLLOWING, f"stored by {self.follows or 'another process'}"
        if writer.error is not None:
            return StorageState.FAILED, f"storage failed, nothing more is stored: {writer.error}"
        if writer.retry_error is not None:
            return StorageState.RETRYING, writer.retry_error
        return StorageState.OK, writer.location
