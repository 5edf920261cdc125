"""Hand-written test doubles shared by tests and benchmarks: trade builders, sinks and sources (no mocks).

Every fake source has what :class:`ingestion.source.Source` asks for (``name``, ``label``,
``stats``, ``run``) and a ``set_symbols`` that only records the request.
"""

from __future__ import annotations

import threading
import time

from ingestion.source import Source, SourceStats, TradeSink
from records import FeedEvent, FeedState, MarkPrice, Trade


def make_trade(symbol: str = "BTCUSDT", trade_id: int = 1, ts_ms: int | None = None, price: float = 100.0,
               qty: float = 0.5, buyer_is_maker: bool = False) -> Trade:
    ts = 1_765_788_000_000 + trade_id * 10 if ts_ms is None else ts_ms
    return Trade(symbol, trade_id, ts, ts + 3, price, qty, buyer_is_maker)


def make_trades(n: int, symbol: str = "BTCUSDT", first_id: int = 1) -> list[Trade]:
    return [make_trade(symbol, first_id + i, price=100.0 + (i % 7)) for i in range(n)]


def key(trade: Trade) -> tuple[str, int, int, float, float, bool]:
    """Everything about a trade except the wall-clock ``recv_ms``."""
    return (trade.symbol, trade.trade_id, trade.ts_ms, trade.price, trade.qty, trade.buyer_is_maker)


class RecordingSink:
    """Hand-written fake sink: stores what a source hands over (called from the source thread)."""

    def __init__(self) -> None:
        self.trades: list[Trade] = []
        self.events: list[FeedEvent] = []
        self.non_market: list[tuple[str, int]] = []  # (symbol, trade id) of non-market prints
        self.marks: list[MarkPrice] = []  # USDⓈ-M mark price updates, in arrival order

    def on_trade(self, trade: Trade) -> None:
        self.trades.append(trade)

    def on_non_market(self, symbol: str, trade_id: int) -> None:
        self.non_market.append((symbol, trade_id))

    def on_mark_price(self, mark: MarkPrice) -> None:
        self.marks.append(mark)

    def on_event(self, event: FeedEvent) -> None:
        self.events.append(event)


# How long a stopped source may take to return: a bound against hanging, not a speed. The callers'
# sources would otherwise run far longer (a paced replay for ~40 s, a market for ever), so a source
# that ignores ``stop`` still fails, while a busy 2-core machine cannot.
STOP_BOUND_S = 5.0


def assert_connected_then_stops_promptly(source: Source, thread: threading.Thread, stop: threading.Event) -> None:
    """A running source reports CONNECTED, then returns once ``stop`` is set and reports STOPPED.

    Use it on a source that would run much longer than :data:`STOP_BOUND_S` seconds if not stopped.
    """
    assert source.stats.state is FeedState.CONNECTED
    assert source.stats.connected_since_ms is not None
    stop.set()
    thread.join(timeout=STOP_BOUND_S)
    assert not thread.is_alive(), f"{source.name} source still running {STOP_BOUND_S:g} s after stop was set"
    assert source.stats.state is FeedState.STOPPED


class ScriptedSource:
    """Hand-written source: emits a fixed script of trades/events, then idles until stopped."""

    def __init__(self, items: list[Trade | FeedEvent], name: str = "simulated", crash: bool = False) -> None:
        self.items = items
        self.name = name
        self.label = f"SCRIPTED {name}"
        self.stats = SourceStats()
        self.crash = crash

    def set_symbols(self, symbols: tuple[str, ...]) -> None:
        self.symbols = symbols

    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        self.stats.state = FeedState.CONNECTED
        for item in self.items:
            self.stats.messages += 1
            self.stats.last_message_mono = time.monotonic()
            if isinstance(item, Trade):
                sink.on_trade(item)
            else:
                sink.on_event(item)
        if self.crash:
            raise RuntimeError("boom")
        stop.wait()
        self.stats.state = FeedState.STOPPED


class PhasedSource:
    """Emits one list of trades per call to :meth:`release`, so a test controls market time."""

    name = "simulated"
    label = "PHASED"

    def __init__(self) -> None:
        self.stats = SourceStats()
        self._phases: list[list[Trade]] = []
        self._ready = threading.Semaphore(0)
        self.emitted = 0

    def release(self, trades: list[Trade]) -> None:
        self._phases.append(trades)
        self._ready.release()

    def set_symbols(self, symbols: tuple[str, ...]) -> None:
        self.symbols = symbols

    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        done = 0
        while not stop.is_set():
            if not self._ready.acquire(timeout=0.05):
                continue
            for trade in self._phases[done]:
                sink.on_trade(trade)
                self.emitted += 1
            done += 1


class ListSource:
    """Emits a fixed list of trades, then idles (hand-written fake)."""

    name = "simulated"
    label = "LIST"

    def __init__(self, trades: list[Trade]) -> None:
        self.trades = trades
        self.stats = SourceStats()

    def set_symbols(self, symbols: tuple[str, ...]) -> None:
        self.symbols = symbols

    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        for t in self.trades:
            sink.on_trade(t)
        stop.wait()
