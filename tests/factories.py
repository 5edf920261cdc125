"""Small builders of test records (hand-written, no mocks)."""

import threading
import time

from ingestion.records import FeedEvent, FeedState, Trade
from ingestion.source import Source


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

    def on_trade(self, trade: Trade) -> None:
        self.trades.append(trade)

    def on_event(self, event: FeedEvent) -> None:
        self.events.append(event)


def assert_connected_then_stops_promptly(source: Source, thread: threading.Thread, stop: threading.Event) -> None:
    """A running source reports CONNECTED, then stops within 0.2 s of ``stop`` and reports STOPPED."""
    assert source.stats.state is FeedState.CONNECTED
    assert source.stats.connected_since_ms is not None
    stopped_at = time.monotonic()
    stop.set()
    thread.join(timeout=1.0)
    assert not thread.is_alive()
    assert time.monotonic() - stopped_at < 0.2
    assert source.stats.state is FeedState.STOPPED
