"""Gap backfill over REST against loopback fakes of Binance's stream and REST API."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace

import pandas as pd
import pytest

from config import Settings
from ingestion.backfill import Backfiller
from ingestion.binance.rest import BinanceRest, RestError, parse_historical_trade
from pairs.bars import BarHistory
from pairs.universe import UniverseBars
from records import EventKind, Trade, now_ms
from service import Service
from storage.sqlite.ticks import SqliteTickStore
from testkit.fake_binance import FakeBinance, load_recorded_trades
from testkit.fake_rest import FakeRest
from testkit.waiting import eventually
from tests.shared_data import TICKS_NDJSON, require
from tests.test_binance_source import FAST


@pytest.fixture
def recorded():
    return load_recorded_trades(require(TICKS_NDJSON), symbols=["BTCUSDT"])


def live_engine(fake: FakeBinance, rest: FakeRest, db, **changes) -> Service:
    settings = Settings.of(source="binance", ws_url=fake.url, db=db,
                        **{**FAST, "backfill_max_trades": 100_000, "rest_url": rest.url, **changes})
    engine = Service.start(settings)
    eventually(lambda: fake.open_connections >= 1, timeout=5)
    return engine


def stored_ids(db) -> list[int]:
    with SqliteTickStore(db) as store:
        return list(store.ticks("BTCUSDT").trade_id)


def events(db, kind: EventKind) -> list[str]:
    with SqliteTickStore(db) as store:
        return [e.detail for e in store.feed_events(kinds=[kind])]


def test_a_gap_in_the_stream_is_recovered_from_rest(recorded, tmp_path):
    """The stream skips 2,500 trades; the backfiller pages them in (3 pages) and stores them once."""
    db = tmp_path / "live.db"
    sent = recorded[:500] + recorded[3000:4000]
    with FakeBinance(ping_interval=None) as fake, FakeRest(recorded) as rest:
        engine = live_engine(fake, rest, db)
        fake.send_recorded(sent)
        eventually(lambda: engine.engine.trades == 1500, timeout=10)
        eventually(lambda: events(db, EventKind.BACKFILL) != [], timeout=20)
        engine.stop()
    first_missing = recorded[500].trade_id
    assert events(db, EventKind.GAP) == [f"first_missing={first_missing} count=2500"]
    assert events(db, EventKind.BACKFILL) == [f"first_missing={first_missing} count=2500 recovered=2500"]
    ids = stored_ids(db)
    assert ids == [t.trade_id for t in recorded[:4000]]  # complete and each once
    assert [int(r["fromId"]) for r in rest.requests] == [first_missing, first_missing + 1000, first_missing + 2000]
    with SqliteTickStore(db) as store:
        prices = dict(zip(store.ticks("BTCUSDT").trade_id, store.ticks("BTCUSDT").price, strict=True))
    assert prices[recorded[1234].trade_id] == recorded[1234].price
    # Within the live stream: nobody reads stored ticks there, nothing to read again.
    assert engine.writer.backfills_of("BTCUSDT") == 0


def test_rate_limit_answers_are_respected(recorded, tmp_path):
    db = tmp_path / "live.db"
    with FakeBinance(ping_interval=None) as fake, FakeRest(recorded) as rest:
        rest.faults.extend([(429, "1"), (418, "1")])
        engine = live_engine(fake, rest, db)
        fake.send_recorded(recorded[:10] + recorded[20:30])
        eventually(lambda: events(db, EventKind.BACKFILL) != [], timeout=20)
        # The gap is seen on the first streamed trade after it; the rest of the stream may still be unread.
        eventually(lambda: stored_ids(db) == [t.trade_id for t in recorded[:30]], timeout=20,
                   message=lambda: f"stored {len(stored_ids(db))} of 30 trades")
        engine.stop()
    # One Retry-After second after each refusal, timed where the requests arrive (a lower bound: a slow
    # machine only adds to it). 10 ms of slack: the client keeps the ban on the wall clock, this is monotonic.
    assert len(rest.arrived) == 3
    assert all(later - earlier >= 1.0 - 0.01 for earlier, later in itertools.pairwise(rest.arrived)), rest.arrived
    errors = events(db, EventKind.ERROR)
    assert any("HTTP 429" in e for e in errors) and any("HTTP 418" in e for e in errors)


def test_rest_outage_never_blocks_the_live_stream(recorded, tmp_path):
    """With REST refusing connections, live trades keep flowing while the backfill retries."""
    db = tmp_path / "live.db"
    with FakeBinance(ping_interval=None) as fake:
        settings = Settings.of(source="binance", ws_url=fake.url, db=db,
                            **{**FAST, "backfill_max_trades": 100_000, "rest_url": "http://127.0.0.1:9"})
        engine = Service.start(settings)
        eventually(lambda: fake.open_connections == 1)
        fake.send_recorded(recorded[:10] + recorded[20:30])
        eventually(lambda: engine.backfiller.pending == 1 and engine.backfiller.last_error is not None)
        fake.send_recorded(recorded[30:2000])
        eventually(lambda: engine.writer.committed_trades == 1990, timeout=10)
        assert engine.backfiller.pending == 1  # still retrying in its own thread
        started = time.monotonic()
        engine.stop()
        assert time.monotonic() - started < 10  # stopping does not wait out the retries


def test_restart_backfills_what_was_missed_while_down(recorded, tmp_path):
    db = tmp_path / "live.db"
    with SqliteTickStore(db) as store:  # an earlier run stored the first 1,000 trades
        store.write_batch([Trade(t.symbol, t.trade_id, t.ts_ms, t.ts_ms, t.price, t.qty, t.buyer_is_maker)
                           for t in recorded[:1000]])
    with FakeBinance(ping_interval=None) as fake, FakeRest(recorded) as rest:
        engine = live_engine(fake, rest, db)
        fake.send_recorded(recorded[1500:1600])  # the stream resumes after 500 missed trades
        # The backfill can finish before the client has read the last streamed trades: wait for both.
        expected = [t.trade_id for t in recorded[:1600]]
        eventually(lambda: stored_ids(db) == expected, timeout=20,
                   message=lambda: f"stored {len(stored_ids(db))} of {len(expected)} trades")
        engine.stop()
    assert stored_ids(db) == expected  # and stopping changes nothing
    assert events(db, EventKind.BACKFILL) == [f"first_missing={recorded[1000].trade_id} count=500 recovered=500"]


def test_historical_trade_parsing():
    row = {"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
           "time": 1499865549590, "isBuyerMaker": True, "isBestMatch": True}
    received = 1_765_788_195_500  # 2025: Binance's example row is from 2017, a past trade
    trade = parse_historical_trade("BNBBTC", row, received)
    assert (trade.trade_id, trade.ts_ms, trade.price, trade.qty, trade.buyer_is_maker) == (
        28457, 1499865549590, 4.000001, 12.0, True)
    with pytest.raises(RestError, match="malformed"):
        parse_historical_trade("BNBBTC", {"id": 1}, received)
    with pytest.raises(RestError, match="non-positive"):
        parse_historical_trade("BNBBTC", {**row, "price": "0"}, received)


@pytest.mark.parametrize("time_ms", [2**63 - 1, 2**62, 5, 4_102_444_800_000, 1_765_788_195_500 + 25 * 3_600_000])
def test_a_backfilled_trade_whose_time_no_page_could_show_is_refused(time_ms):
    """Near 2**63 ms, 1970, 2100 or more than a day after the reply arrived: the row (and so its page) is
    refused, never stored, as any malformed row; a page of trades drawn later broke in pandas."""
    row = {"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
           "time": time_ms, "isBuyerMaker": True, "isBestMatch": True}
    with pytest.raises(RestError, match=r"historicalTrades row with an impossible time \d+ "):
        parse_historical_trade("BNBBTC", row, 1_765_788_195_500)


def test_backfill_is_capped_per_gap(recorded):
    stored = []
    with FakeRest(recorded) as rest:
        backfiller = Backfiller(BinanceRest(rest.url), stored.append, stored.append, max_trades_per_gap=1500)
        backfiller.start()
        backfiller.request("BTCUSDT", recorded[0].trade_id, 4000)
        eventually(lambda: backfiller.pending == 0, timeout=20)
        backfiller.stop()
    trades = [s for s in stored if hasattr(s, "trade_id")]
    notes = [s.detail for s in stored if getattr(s, "kind", None) is EventKind.BACKFILL]
    assert len(trades) == 1500
    assert notes == [f"first_missing={recorded[0].trade_id} count=4000 recovered=1500 unfilled=2500 (partial)"]


def test_trades_backfilled_after_a_page_read_the_history_are_on_its_next_view(recorded, tmp_path, monkeypatch):
    """Was: the stored ticks before the live bars were read once per live start and kept, so trades
    backfilled after a page (or the alert monitor) had read them, as after every restart against a
    database that stops earlier, never showed: a warm server drew a gap a cold one did not. Now a
    backfill's commit is a new version of the stored bars: read again, and every view computed anew."""
    db = tmp_path / "live.db"
    # The recording moved to the last seconds (a live feed's market time is the wall clock's), its
    # live part just after a whole minute: the universe's bars end there, after the missed trades.
    shift = (now_ms() - 10_000) // 60_000 * 60_000 + 2_000 - recorded[1599].ts_ms
    recorded = [replace(t, ts_ms=t.ts_ms + shift) for t in recorded]
    with SqliteTickStore(db) as store:  # an earlier run stored the first 1,000 trades
        store.write_batch([Trade(t.symbol, t.trade_id, t.ts_ms, t.ts_ms, t.price, t.qty, t.buyer_is_maker)
                           for t in recorded[:1000]])
    asked = threading.Event()
    fetch = BinanceRest.historical_trades

    def after_the_page_asked(self, *args, **kwargs):
        assert asked.wait(20)
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(BinanceRest, "historical_trades", after_the_page_asked)
    symbols, lookback_ms = ("BTCUSDT",), 24 * 3_600_000
    with FakeBinance(ping_interval=None) as fake, FakeRest(recorded) as rest:
        service = live_engine(fake, rest, db)
        try:
            fake.send_recorded(recorded[1500:1600])  # the stream resumes after 500 missed trades
            eventually(lambda: service.engine.trades == 100, timeout=10)
            before = service.universe.closed(symbols, 1_000, lookback_ms, wait=True)
            version = service.shared.stamp(symbols, 1_000)[1]  # of the stored bars the views are keyed on
            asked.set()
            eventually(lambda: events(db, EventKind.BACKFILL) != [], timeout=20)
            eventually(lambda: service.writer.backlog == 0 and len(stored_ids(db)) == 1600, timeout=20)

            def seconds() -> int:
                return len(service.universe.closed(symbols, 1_000, lookback_ms, wait=True).by_symbol["BTCUSDT"])

            eventually(lambda: seconds() > len(before.by_symbol["BTCUSDT"]), timeout=10,
                       message="the warm server's views never showed the backfilled trades")
            after = service.universe.closed(symbols, 1_000, lookback_ms, wait=True)
            cold = UniverseBars(service.engine, BarHistory(service.site)).closed(symbols, 1_000, lookback_ms,
                                                                                wait=True)
            assert service.shared.stamp(symbols, 1_000)[1] > version  # the pair views are computed anew too
        finally:
            service.stop()
    pd.testing.assert_frame_equal(after.by_symbol["BTCUSDT"], cold.by_symbol["BTCUSDT"])
