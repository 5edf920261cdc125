import numpy as np
import pandas as pd

from analytics.bars import resample_ticks
from ingestion.live_bars import LiveBars
from ingestion.ring import ColumnRing
from records import Trade
from testkit.fake_binance import load_recorded_trades
from tests.shared_data import TICKS_NDJSON, require


def test_ring_keeps_the_newest_rows_in_order():
    ring = ColumnRing(4, {"a": np.int64})
    for i in range(10):
        ring.append({"a": i})
    assert len(ring) == 4 and list(ring.column("a")) == [6, 7, 8, 9]
    assert list(ring.column("a", last=2)) == [8, 9]
    assert list(ring.column("a", last=0)) == []
    partial = ColumnRing(4, {"a": np.int64})
    partial.append({"a": 1})
    assert list(partial.column("a")) == [1] and list(partial.column("a", last=5)) == [1]


def test_live_bars_equal_batch_bars_on_real_ticks():
    trades = load_recorded_trades(require(TICKS_NDJSON))
    bars = LiveBars()
    for t in trades:
        bars.update(Trade(t.symbol, t.trade_id, t.ts_ms, t.ts_ms, t.price, t.qty, t.buyer_is_maker))
    bars.advance(max(t.ts_ms for t in trades) + 1_000)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = [t for t in trades if t.symbol == symbol]
        expected = resample_ticks(np.array([t.ts_ms for t in mine]), np.array([t.price for t in mine]),
                                  np.array([t.qty for t in mine]), 1_000)
        pd.testing.assert_frame_equal(bars.closed(symbol), expected, check_exact=False, rtol=1e-12)
        assert bars.open_bar(symbol) is None
        assert bars.first_start_ms(symbol) == mine[0].ts_ms // 1000 * 1000
    since = bars.closed("BTCUSDT").index[10]
    assert bars.closed("BTCUSDT", since_ms=int(since.value // 1_000_000)).index[0] == since


def test_open_bar_and_version():
    bars = LiveBars(capacity=100)
    bars.update(Trade("BTCUSDT", 1, 1_000_100, 0, 10.0, 1.0, False))
    assert bars.open_bar("BTCUSDT").close == 10.0 and bars.version == 0
    bars.update(Trade("BTCUSDT", 2, 1_001_100, 0, 11.0, 1.0, False))
    assert bars.version == 1 and len(bars.closed("BTCUSDT")) == 1
    assert bars.closed("SOLUSDT").empty


def test_closed_since_copies_only_the_rows_asked_for_even_once_the_ring_wrapped():
    bars = LiveBars(capacity=5)
    for second in range(12):  # 11 bars closed, the ring holds the newest 5: seconds 6 to 10
        bars.update(Trade("BTCUSDT", second + 1, 1_000_000 + second * 1_000, 0, 100.0 + second, 1.0, False))
    starts = lambda frame: list(frame.index.as_unit("ms").asi8 - 1_000_000)  # noqa: E731
    assert starts(bars.closed("BTCUSDT")) == [6_000, 7_000, 8_000, 9_000, 10_000]
    assert starts(bars.closed("BTCUSDT", since_ms=1_008_500)) == [9_000, 10_000]
    assert list(bars.closed("BTCUSDT", since_ms=1_008_500)["close"]) == [109.0, 110.0]
    assert bars.closed("BTCUSDT", since_ms=1_011_000).empty and len(bars.closed("BTCUSDT", since_ms=0)) == 5
