"""A source that follows a database another process writes (a headless recorder), for dashboards.

A database has one writer. A dashboard started while a recorder writes its database must not
start a second feed into it; it reads what the recorder stores instead. :class:`DatabaseFollower`
polls the store every ``poll_s`` for trades newer than the last it passed on (per symbol, by
trade id, through the ``(symbol, ts_ms)`` index) and hands them to the engine like any source,
so the live panel, live bars and charts work as usual, one writer commit behind the recorder.

A stored trade whose time no trade can carry (:func:`records.time_problem`: a database written
before the parsers refused such times, or by another program) is skipped and counted as a parse
error, never passed on nor taken as the symbol's latest time (every later poll would look past the
real trades from it).

It ends (state FINISHED, with the reason in ``last_error``) when the writer stops (no writer in
two checks :data:`WRITER_CHECK_S` apart), so the dashboard can start a feed of its own instead of
drawing from a database nobody fills.
"""

from __future__ import annotations

import logging
import threading
import time

from ingestion.source import SourceStats, TradeSink
from records import EventKind, FeedEvent, FeedState, Trade, now_ms, possible_times, time_problem
from storage import Site, StorageError, current_writer, open_ticks
from storage.base import TickStore
from storage.lock import WriterInfo

log = logging.getLogger(__name__)

POLL_S = 0.1
WRITER_CHECK_S = 2.0
# A server restart drops a recorder's writer lock until its heartbeat takes it again (well under
# WRITER_CHECK_S): only a recorder missing from two checks in a row has stopped.
WRITER_MISSES = 2
# Trades may commit slightly out of time order (a late trade, a backfill): look this far back
# in exchange time on every poll; the per-symbol id filter drops what was already passed on.
LOOKBACK_MS = 10_000


class DatabaseFollower:
    """Source over the trades another process stores in ``site`` (see the module docstring)."""

    name = "follow"

    def __init__(self, site: Site, symbols: tuple[str, ...], writer: WriterInfo, *, poll_s: float = POLL_S) -> None:
        self.site = site
        self.symbols = symbols
        self.writer = writer
        self.poll_s = poll_s
        self.label = f"{writer.label} (recorded by pid {writer.pid})"
        self.stats = SourceStats()

    def set_symbols(self, symbols: tuple[str, ...]) -> None:
        """Follow ``symbols``; ones the recorder does not record simply never trade."""
        self.symbols = symbols

    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        stats = self.stats
        stats.state = FeedState.CONNECTING
        try:
            store = open_ticks(self.site)
        except StorageError as exc:
            stats.state, stats.last_error = FeedState.STOPPED, f"cannot read {self.site.location}: {exc}"
            return
        with store:
            last_ids = store.last_trade_ids()  # only what arrives from now on is "live"
            last_ts = {symbol: now_ms() for symbol in self.symbols}
            stats.state, stats.connected_since_ms = FeedState.CONNECTED, now_ms()
            sink.on_event(FeedEvent(now_ms(), EventKind.CONNECTED, None, f"following {self.site.location}"))
            next_writer_check = time.monotonic() + WRITER_CHECK_S
            misses = 0
            while not stop.wait(self.poll_s):
                try:
                    self._poll(store, sink, last_ids, last_ts)
                except StorageError as exc:  # a busy moment, a server restarting: the next poll tries again
                    stats.last_error = f"reading {self.site.location}: {exc}"
                if time.monotonic() >= next_writer_check:
                    next_writer_check = time.monotonic() + WRITER_CHECK_S
                    try:
                        misses = misses + 1 if current_writer(self.site) is None else 0
                    except StorageError as exc:  # cannot tell while the database is away
                        stats.last_error = f"reading {self.site.location}: {exc}"
                    if misses >= WRITER_MISSES:
                        stats.last_error = (f"the recorder (pid {self.writer.pid}) stopped writing "
                                            f"{self.site.location}; this server starts its own feed")
                        stats.state = FeedState.FINISHED
                        log.warning("%s", stats.last_error)
                        return
        stats.state = FeedState.STOPPED

    def _poll(self, store: TickStore, sink: TradeSink, last_ids: dict[str, int], last_ts: dict[str, int]) -> None:
        for symbol in self.symbols:
            ticks = store.ticks(symbol, start_ms=last_ts.setdefault(symbol, now_ms()) - LOOKBACK_MS)
            new = ticks.trade_id > last_ids.get(symbol, -1)
            if not new.any():
                continue
            recv = now_ms()
            self.stats.messages += int(new.sum())
            self.stats.last_message_mono = time.monotonic()
            ts = ticks.ts_ms
            bad = new & ~possible_times(ts, recv)
            if bad.any():
                first = int(bad.argmax())
                self.stats.parse_errors += int(bad.sum())
                self.stats.last_error = (f"{symbol}: {int(bad.sum())} stored trades skipped, e.g. id "
                                         f"{int(ticks.trade_id[first])}: {time_problem(int(ts[first]), recv)}")
                log.warning("following %s: %s", self.site.location, self.stats.last_error)
            fresh = new & ~bad
            last_ids[symbol] = int(ticks.trade_id[new].max())
            if not fresh.any():
                continue
            # The live views need id, time, price and size; the side of the trade stays in the database.
            for trade_id, ts_ms, price, qty in zip(ticks.trade_id[fresh].tolist(), ticks.ts_ms[fresh].tolist(),
                                                   ticks.price[fresh].tolist(), ticks.qty[fresh].tolist(),
                                                   strict=True):
                sink.on_trade(Trade(symbol, trade_id, ts_ms, recv, price, qty, False))
            last_ts[symbol] = max(last_ts[symbol], int(ticks.ts_ms[fresh].max()))
