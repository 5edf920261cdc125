"""Gap backfill: re-fetch trades the live stream missed, off the live path.

When the engine sees a jump in a symbol's trade ids (after a reconnect, or on restart against a
database that stops earlier), it hands the missing id range to :class:`Backfiller`. Its daemon
thread pages through the range with the source's :class:`TradeHistory` client (Binance spot:
``historicalTrades``; USDⓈ-M futures: only the latest 1,000 trades, see
:mod:`ingestion.binance.rest`) and puts the trades on the writer queue exactly like live ones
(the idempotent insert absorbs overlaps). What it cannot recover is reported, as
``unfilled=<ids>`` on the gap's backfill event. It never blocks the live stream: requests are
queued, the network calls happen in this thread.

Backfilled trades go to storage only: the live bars have moved on, so the dashboard shows them
from the database (history) rather than rewriting bars it already drew.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from records import EventKind, FeedEvent, Trade, now_ms

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000  # trades asked for per request


class TradeHistory(Protocol):
    """A client that re-fetches past trades by id (an exchange's REST API)."""

    last_error: str | None

    def historical_trades(self, symbol: str, from_id: int, limit: int, stop: threading.Event) -> list[Trade]:
        """Up to ``limit`` trades from id ``from_id`` on, in id order; [] when none (or stopped).

        Raises ``RuntimeError`` (a subclass) for a reply it cannot use.
        """


@dataclass(frozen=True, slots=True)
class GapRequest:
    """Trade ids ``first_missing … first_missing + count - 1`` of ``symbol`` are missing."""

    symbol: str
    first_missing: int
    count: int


class Backfiller:
    """Background thread that recovers missing trade-id ranges through a :class:`TradeHistory`."""

    def __init__(
        self,
        history: TradeHistory,
        store_trade: Callable[[Trade], None],
        emit: Callable[[FeedEvent], None],
        *,
        max_trades_per_gap: int = 100_000,
    ) -> None:
        self.history = history
        self._store_trade = store_trade
        self._emit = emit
        self.max_trades_per_gap = max_trades_per_gap
        self._queue: queue.SimpleQueue[GapRequest | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.recovered = 0
        self.pending = 0
        self._error: str | None = None

    @property
    def last_error(self) -> str | None:
        """The last gap that could not be recovered, else what the client is retrying (e.g. REST unreachable)."""
        return self._error or self.history.last_error

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gap-backfill", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def request(self, symbol: str, first_missing: int, count: int) -> None:
        """Queue a gap for recovery; returns at once (called from the source thread)."""
        self.pending += 1
        self._queue.put(GapRequest(symbol, first_missing, count))

    def _run(self) -> None:
        while not self._stop.is_set():
            gap = self._queue.get()
            if gap is None:
                break
            try:
                recovered = self._recover(gap)
                detail = f"first_missing={gap.first_missing} count={gap.count} recovered={recovered}"
                if recovered < gap.count:  # never silent: the ids the exchange did not give back
                    detail += f" unfilled={gap.count - recovered} (partial)"
                self._emit(FeedEvent(now_ms(), EventKind.BACKFILL, gap.symbol, detail))
                log.info("backfill %s: %s", gap.symbol, detail)
            except RuntimeError as exc:  # the client's "reply I cannot use"
                self._error = f"backfill {gap.symbol}: {exc}"
                self._emit(FeedEvent(now_ms(), EventKind.ERROR, gap.symbol, self._error))
                log.warning("%s", self._error)
            finally:
                self.pending -= 1

    def _recover(self, gap: GapRequest) -> int:
        """Page through the missing range; return how many trades were handed to storage."""
        end = gap.first_missing + min(gap.count, self.max_trades_per_gap)  # exclusive
        next_id, recovered = gap.first_missing, 0
        while next_id < end and not self._stop.is_set():
            trades = self.history.historical_trades(gap.symbol, next_id, min(PAGE_LIMIT, end - next_id), self._stop)
            if not trades:
                break  # the exchange no longer has them (too old) or none exist
            for trade in trades:
                if next_id <= trade.trade_id < end:
                    self._store_trade(trade)
                    recovered += 1
            last_id = trades[-1].trade_id
            if last_id < next_id:
                raise RuntimeError(f"page from id {next_id} ended at id {last_id}")
            next_id = last_id + 1
        self.recovered += recovered
        return recovered
