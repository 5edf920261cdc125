"""Small builders of test records (hand-written, no mocks)."""

from ingestion.records import Trade


def make_trade(symbol: str = "BTCUSDT", trade_id: int = 1, ts_ms: int | None = None, price: float = 100.0,
               qty: float = 0.5, buyer_is_maker: bool = False) -> Trade:
    ts = 1_765_788_000_000 + trade_id * 10 if ts_ms is None else ts_ms
    return Trade(symbol, trade_id, ts, ts + 3, price, qty, buyer_is_maker)


def make_trades(n: int, symbol: str = "BTCUSDT", first_id: int = 1) -> list[Trade]:
    return [make_trade(symbol, first_id + i, price=100.0 + (i % 7)) for i in range(n)]
