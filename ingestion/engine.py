"""The engine: one per process. Owns the source, writer, backfill and alert-monitor threads.

Data path (all in the source's thread, no I/O)::

    source → Engine.on_trade → sequencer (re-sends, gaps) → TickBuffer, LiveBars (live views)
                                                          → TickWriter queue → SQLite
                                      gaps → Backfiller thread (REST) → TickWriter queue
    AlertMonitor thread: closed bars → rule metrics → alerts file (and webhook)

The Streamlit app creates it through a ``st.cache_resource`` factory and the headless recorder
(``python -m ingestion``) creates it directly; browser sessions only read from it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from alerts.monitor import AlertMonitor, alerts_path
from config import Settings
from ingestion.backfill import Backfiller
from ingestion.buffer import TickBuffer
from ingestion.live_bars import LiveBars
from ingestion.records import EventKind, FeedEvent, FeedState, FeedStatus, Trade
from ingestion.source import Source, now_ms
from ingestion.writer import TickWriter
from storage.sqlite import SqliteStore

log = logging.getLogger(__name__)

RATE_WINDOW_S = 5.0
# A bar closes this long (wall-clock) after its end, so trades delayed in transit still land in it.
BAR_CLOSE_GRACE_S = 0.5


def make_source(settings: Settings) -> Source:
    """The source named by ``settings.source``."""
    if settings.source == "binance":
        from ingestion.binance import BinanceSource

        return BinanceSource.from_settings(settings)
    if settings.source == "simulated":
        from ingestion.simulated import SimulatedSource

        return SimulatedSource(settings.symbols, seed=settings.seed, speed=settings.speed)
    from ingestion.replay import ReplaySource

    assert settings.replay_file is not None  # Settings validation guarantees it
    return ReplaySource(settings.replay_file, symbols=settings.symbols, speed=settings.speed)


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

    Binance trade ids are consecutive per symbol, so an id jump of more than one means trades
    were missed (e.g. while reconnecting). Ids at or below the last one seen are re-sends from
    an overlapping or restarted connection.
    """

    def __init__(self, last_ids: dict[str, int] | None = None) -> None:
        self.last_ids: dict[str, int] = dict(last_ids or {})
        self.duplicates = 0
        self.gaps = 0
        self.missing = 0

    def check(self, trade: Trade) -> tuple[bool, Gap | None]:
        """(is new, the gap this trade reveals or None)."""
        last = self.last_ids.get(trade.symbol)
        if last is not None and trade.trade_id <= last:
            self.duplicates += 1
            return False, None
        self.last_ids[trade.symbol] = trade.trade_id
        if last is None or trade.trade_id == last + 1:
            return True, None
        gap = Gap(trade.symbol, last + 1, trade.trade_id - last - 1)
        self.gaps += 1
        self.missing += gap.count
        return True, gap


class Engine:
    """Source thread + buffer + writer thread. ``start()`` once, ``stop()`` once."""

    def __init__(self, settings: Settings, source: Source | None = None) -> None:
        self.settings = settings
        self.source = source if source is not None else make_source(settings)
        self.buffer = TickBuffer(settings.buffer_ticks)
        self.bars = LiveBars()
        self.writer = TickWriter(
            settings.db_path,
            flush_interval_s=settings.flush_interval_ms / 1000,
            retention_ms=int(settings.retention_hours * 3_600_000),
            max_backlog=settings.max_backlog,
        )
        self.sequencer = TradeSequencer()
        # Only exchange ids can be fetched again; simulated and replayed ids cannot.
        self.backfiller = (
            Backfiller(settings.rest_url, self.writer.put, self.writer.put,
                       max_trades_per_gap=settings.backfill_max_trades)
            if self.source.name == "binance" and settings.backfill_max_trades > 0 else None
        )
        self.trades = 0
        self.last_tick_mono: float | None = None
        self._last_tick_ts_ms = 0
        self.alerts: AlertMonitor | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rate_lock = threading.Lock()
        self._rate_samples: deque[tuple[float, int, int]] = deque()
        self.started_mono: float | None = None

    # ---------------------------------------------------------------- sink (source thread)
    def on_trade(self, trade: Trade) -> None:
        is_new, gap = self.sequencer.check(trade)
        if gap is not None:
            log.warning("gap in %s trade ids: %d missing from %d", gap.symbol, gap.count, gap.first_missing)
            self.writer.put(gap.event(trade.recv_ms))
            if self.backfiller is not None:
                self.backfiller.request(gap.symbol, gap.first_missing, gap.count)
        if not is_new:
            # At or below the last id: usually a re-send, sometimes a late trade the exchange
            # delivered out of order. The store's idempotent insert tells them apart for free;
            # live views skip it either way (their bars have moved on).
            self.writer.put(trade)
            return
        self.trades += 1
        self.last_tick_mono = time.monotonic()
        self._last_tick_ts_ms = max(self._last_tick_ts_ms, trade.ts_ms)
        self.buffer.append(trade)
        self.bars.update(trade)
        self.writer.put(trade)

    def on_event(self, event: FeedEvent) -> None:
        self.writer.put(event)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("engine already started")
        if self.source.name == "binance":
            # Exchange ids continue across restarts: resume gap detection where the store left off.
            with SqliteStore(self.settings.db_path) as store:
                self.sequencer = TradeSequencer(store.last_trade_ids())
        self.writer.start()
        if self.backfiller is not None:
            self.backfiller.start()
        self.alerts = AlertMonitor(self, alerts_path(self.settings.db_path), webhook_url=self.settings.webhook_url,
                                   min_trades=self.settings.min_trades, min_volume=self.settings.min_volume)
        self.alerts.start()
        self.writer.put(FeedEvent(now_ms(), EventKind.STARTED, None, self.source.label))
        self.started_mono = time.monotonic()
        self._thread = threading.Thread(target=self._run_source, name=f"source-{self.source.name}", daemon=True)
        self._thread.start()
        log.info("engine started: %s → %s", self.source.label, self.settings.db_path)

    def _run_source(self) -> None:
        try:
            self.source.run(self, self._stop)
        except Exception as exc:  # a source bug must show in the UI, not vanish with its thread
            log.exception("source %s crashed", self.source.name)
            self.source.stats.last_error = f"source crashed: {exc!r}"
            self.source.stats.state = FeedState.STOPPED
            self.writer.put(FeedEvent(now_ms(), EventKind.ERROR, None, f"source crashed: {exc!r}"))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the source, then flush and close the writer. True if both finished in time."""
        if self._thread is None:
            return True
        self._stop.set()
        self._thread.join(timeout)
        source_done = not self._thread.is_alive()
        if self.alerts is not None:
            self.alerts.stop()
        if self.backfiller is not None:
            self.backfiller.stop()
        self.writer.put(FeedEvent(now_ms(), EventKind.STOPPED, None, self.source.label))
        writer_done = self.writer.stop(timeout)
        log.info("engine stopped: %d trades received, %d rows committed",
                 self.trades, self.writer.committed_trades)
        return source_done and writer_done

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source ends by itself (finite replay) or ``timeout``; True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---------------------------------------------------------------- market time
    def market_now_ms(self) -> int | None:
        """Current market time, UTC epoch ms: the wall clock for live data; for simulated and
        replayed data, the last trade's time moved on by the elapsed wall time × ``speed``
        (None before the first trade)."""
        if self.source.name == "binance":
            return now_ms()
        if self.last_tick_mono is None:
            return None
        return self._last_tick_ts_ms + int((time.monotonic() - self.last_tick_mono) * 1000 * self.settings.speed)

    def close_due_bars(self) -> None:
        """Close live bars whose interval (plus a grace period) has passed, even without new trades."""
        market_now = self.market_now_ms()
        if market_now is not None:
            grace_ms = int(BAR_CLOSE_GRACE_S * 1000 * (1.0 if self.source.name == "binance" else self.settings.speed))
            self.bars.advance(market_now - grace_ms)

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
        state = stats.state
        if self.writer.error is not None:
            last_error = f"database writer failed: {self.writer.error}"
        else:
            last_error = self.writer.retry_error or stats.last_error or self.writer.reject_error
        return FeedStatus(
            source=self.source.name,
            state=state,
            symbols=self.settings.symbols,
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
            last_error=last_error,
            label=self.source.label,
        )
