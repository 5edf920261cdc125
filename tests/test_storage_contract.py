"""The storage contract: what every backend of storage/base.py must do, run against each backend.

A backend is a fixture param below; a new backend adds itself there and must pass every test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from records import BarArrays, EventKind, FeedEvent
from storage.base import TickStore
from storage.sqlite import SqliteTickStore
from testkit.sources import make_trade, make_trades

Opener = Callable[[], TickStore]


@pytest.fixture(params=["sqlite"])
def open_store(request, tmp_path) -> Iterator[Opener]:
    """Opens a fresh connection to one empty database of the backend under test (call it again for a second one)."""
    path = tmp_path / "contract.sqlite3"
    yield lambda: SqliteTickStore(path)


def bars(starts: list[int], base: float = 100.0) -> BarArrays:
    n = len(starts)
    close = base + np.arange(n, dtype=float)
    return BarArrays(np.array(starts, dtype=np.int64), close - 0.5, close + 1.0, close - 1.0, close,
                     np.full(n, 2.5), np.arange(n, dtype=np.int64) + 3, close - 0.25)


def test_ticks_are_idempotent_ordered_and_counted(open_store):
    with open_store() as store:
        trades = make_trades(100) + make_trades(40, symbol="ETHUSDT")
        assert store.write_batch(trades) == 140
        assert store.write_batch(list(reversed(trades[:60]))) == 0
        btc = store.ticks("BTCUSDT")
        assert list(btc.trade_id) == list(range(1, 101)) and np.all(np.diff(btc.ts_ms) > 0)
        window = store.ticks("BTCUSDT", start_ms=trades[10].ts_ms, end_ms=trades[20].ts_ms)
        assert list(window.trade_id) == list(range(11, 21))
        assert store.tick_count() == 140 and store.tick_count("ETHUSDT") == 40
        assert store.symbols() == ["BTCUSDT", "ETHUSDT"]
        assert store.last_trade_ids() == {"BTCUSDT": 100, "ETHUSDT": 40}
        assert [t.trade_id for t in store.iter_trades("ETHUSDT", chunk_rows=7)] == list(range(1, 41))
        store.verify()


def test_a_second_connection_sees_committed_batches(open_store):
    with open_store() as writer, open_store() as reader:
        writer.write_batch(make_trades(25))
        assert reader.tick_count() == 25


def test_feed_events_newest_first_by_kind(open_store):
    events = [FeedEvent(1_000 + i, kind, "BTCUSDT" if i % 2 else None, f"detail {i}")
              for i, kind in enumerate([EventKind.CONNECTED, EventKind.GAP, EventKind.DISCONNECTED, EventKind.GAP])]
    with open_store() as store:
        store.write_batch([], events)
        assert store.feed_events() == list(reversed(events))
        assert store.feed_events(kinds=[EventKind.GAP], limit=1) == [events[3]]
        assert store.feed_events(since_ms=1_002) == [events[3], events[2]]


def test_bars_are_upserted_by_symbol_interval_and_start(open_store):
    with open_store() as store:
        assert store.bar_span("BTCUSDT", 60_000) is None
        assert len(store.bars("BTCUSDT", 60_000)) == 0
        assert store.write_bars("BTCUSDT", 60_000, bars([0, 60_000, 120_000])) == 3
        assert store.write_bars("BTCUSDT", 300_000, bars([0], base=7.0)) == 1
        # A reload of an overlapping range replaces, never duplicates.
        store.write_bars("BTCUSDT", 60_000, bars([120_000, 180_000], base=500.0))
        got = store.bars("BTCUSDT", 60_000)
        assert list(got.start_ms) == [0, 60_000, 120_000, 180_000]
        assert list(got.close) == [100.0, 101.0, 500.0, 501.0]
        assert got.trades.dtype == np.int64 and list(got.trades) == [3, 4, 3, 4]
        assert list(store.bars("BTCUSDT", 60_000, start_ms=60_000, end_ms=180_000).start_ms) == [60_000, 120_000]
        assert store.bar_span("BTCUSDT", 60_000) == (0, 180_000)
        assert list(store.bars("BTCUSDT", 300_000).close) == [7.0]
        assert len(store.bars("ETHUSDT", 60_000)) == 0


def test_prune_drops_old_ticks_bars_and_events(open_store):
    with open_store() as store:
        store.write_batch(make_trades(10), [FeedEvent(make_trade(trade_id=1).ts_ms, EventKind.STARTED)])
        cutoff = make_trade(trade_id=6).ts_ms
        store.write_bars("BTCUSDT", 60_000, bars([cutoff - 60_000, cutoff + 60_000]))
        assert store.prune(cutoff) == 5
        assert store.ticks("BTCUSDT").trade_id[0] == 6
        assert list(store.bars("BTCUSDT", 60_000).start_ms) == [cutoff + 60_000]
        assert store.feed_events() == []


def test_sqlite_schema_1_is_migrated_keeping_its_ticks(tmp_path):
    """A database from before stored bars existed gains the table and keeps everything."""
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE ticks (symbol TEXT NOT NULL, trade_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
            price REAL NOT NULL, qty REAL NOT NULL, buyer_is_maker INTEGER NOT NULL, recv_ms INTEGER NOT NULL,
            PRIMARY KEY (symbol, trade_id)) WITHOUT ROWID;
        CREATE TABLE feed_events (ts_ms INTEGER NOT NULL, kind TEXT NOT NULL, symbol TEXT, detail TEXT NOT NULL);
        INSERT INTO ticks VALUES ('BTCUSDT', 1, 1000, 90000.0, 0.1, 0, 1001);
        PRAGMA user_version = 1;
    """)
    conn.close()
    with SqliteTickStore(path) as store:
        assert store.schema_version == 2 and store.tick_count() == 1
        assert store.write_bars("BTCUSDT", 1_000, bars([0])) == 1
