import sqlite3
import threading

import numpy as np
import pytest

from ingestion.buffer import TickBuffer
from ingestion.records import EventKind, FeedEvent, Trade
from ingestion.source import now_ms
from ingestion.writer import MAX_BATCH, TickWriter
from storage.sqlite import SCHEMA_VERSION, SchemaError, SqliteStore
from tests.factories import make_trade, make_trades
from tests.fake_binance import eventually


def test_schema_wal_and_version(tmp_path):
    with SqliteStore(tmp_path / "a.db") as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    # Re-opening an existing file does not migrate again or lose anything.
    with SqliteStore(tmp_path / "a.db") as store:
        assert store.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        SqliteStore(path)


def test_inserts_are_idempotent_and_reads_are_time_ordered(tmp_path):
    with SqliteStore(tmp_path / "t.db") as store:
        trades = make_trades(100) + make_trades(50, symbol="ETHUSDT")
        assert store.write_batch(trades) == 150
        assert store.write_batch(trades[:80]) == 0  # a reconnect re-sends: nothing duplicated
        assert store.tick_count() == 150
        btc = store.ticks("BTCUSDT")
        assert len(btc) == 100
        assert np.all(np.diff(btc.ts_ms) >= 0)
        assert btc.trade_id.dtype == np.int64 and btc.price[3] == trades[3].price
        window = store.ticks("BTCUSDT", start_ms=trades[10].ts_ms, end_ms=trades[20].ts_ms)
        assert list(window.trade_id) == list(range(11, 21))
        assert store.last_trade_ids() == {"BTCUSDT": 100, "ETHUSDT": 50}
        assert store.time_range("ETHUSDT") == (trades[100].ts_ms, trades[149].ts_ms)
        assert store.time_range("SOLUSDT") is None


def test_hostile_symbol_is_just_data(tmp_path):
    with SqliteStore(tmp_path / "t.db") as store:
        store.write_batch([make_trade("BTCUSDT")])
        assert len(store.ticks("BTCUSDT' OR '1'='1")) == 0
        assert store.tick_count() == 1


def test_feed_events_and_prune(tmp_path):
    with SqliteStore(tmp_path / "t.db") as store:
        events = [FeedEvent(1000, EventKind.CONNECTED, None, "ws://x"),
                  FeedEvent(2000, EventKind.GAP, "BTCUSDT", "first_missing=5 count=3")]
        store.write_batch(make_trades(10), events)
        assert store.feed_events()[0] == events[1]
        assert store.feed_events(kinds=[EventKind.CONNECTED]) == [events[0]]
        cutoff = make_trade(trade_id=6).ts_ms
        assert store.prune(cutoff) == 5
        assert store.ticks("BTCUSDT").trade_id[0] == 6


def test_failed_batch_changes_nothing(tmp_path):
    with SqliteStore(tmp_path / "t.db") as store:
        store.write_batch(make_trades(3))
        unbindable = Trade("BTCUSDT", 99, 1, 1, object(), 1.0, False)  # type: ignore[arg-type]
        bad = [*make_trades(5, first_id=10), unbindable]
        with pytest.raises(sqlite3.ProgrammingError):
            store.write_batch(bad)
        assert store.tick_count() == 3


def test_writer_flushes_everything_on_stop(tmp_path):
    writer = TickWriter(tmp_path / "w.db", flush_interval_s=0.05)
    writer.start()
    for trade in make_trades(20_000):
        writer.put(trade)
    assert writer.stop(timeout=30)
    assert writer.committed_trades == 20_000
    with SqliteStore(tmp_path / "w.db") as store:
        assert store.tick_count() == 20_000


def test_reader_reads_while_writer_writes(tmp_path):
    """WAL: a reader thread never sees an error or a shrinking count while batches commit."""
    path = tmp_path / "rw.db"
    writer = TickWriter(path, flush_interval_s=0.01)
    writer.start()
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            with SqliteStore(path, busy_timeout_ms=5000) as store:
                while not done.is_set():
                    seen.append(store.tick_count("BTCUSDT"))
                    store.ticks("BTCUSDT", start_ms=0)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for chunk in range(20):
        for trade in make_trades(2_000, first_id=chunk * 2_000 + 1):
            writer.put(trade)
    assert writer.stop(timeout=30)
    done.set()
    thread.join(10)
    assert not errors
    assert seen == sorted(seen) and len(seen) > 1
    with SqliteStore(path) as store:
        assert store.tick_count() == 40_000


def test_writer_surfaces_database_errors(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    writer = TickWriter(blocker / "db.sqlite3")
    with pytest.raises(RuntimeError, match="cannot open database"):
        writer.start()


def test_tick_buffer_is_bounded_and_ordered():
    buffer = TickBuffer(capacity=1000)
    for trade in make_trades(2500):
        buffer.append(trade)
    snap = buffer.snapshot("BTCUSDT")
    assert len(snap) == 1000
    assert list(snap.trade_id[[0, -1]]) == [1501, 2500]
    assert np.all(np.diff(snap.ts_ms) > 0)
    assert buffer.total("BTCUSDT") == 2500
    assert buffer.last("BTCUSDT").trade_id == 2500
    recent = buffer.snapshot("BTCUSDT", since_ms=make_trade(trade_id=2401).ts_ms)
    assert recent.trade_id[0] == 2401 and len(recent) == 100
    assert len(buffer.snapshot("SOLUSDT")) == 0 and buffer.last("SOLUSDT") is None


def test_writer_keeps_a_batch_while_the_database_is_locked(tmp_path):
    path = tmp_path / "locked.db"
    SqliteStore(path).close()
    writer = TickWriter(path, store_factory=lambda p: SqliteStore(p, busy_timeout_ms=50))
    writer.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    for trade in make_trades(500):
        writer.put(trade)
    eventually(lambda: writer.retry_error is not None and "locked" in writer.retry_error)
    blocker.execute("COMMIT")
    blocker.close()
    eventually(lambda: writer.committed_trades == 500, timeout=10)
    assert writer.retry_error is None and writer.error is None
    assert writer.stop()


def test_two_writers_on_one_file_lose_nothing(tmp_path):
    """A headless recorder and a dashboard engine may share one database."""
    path = tmp_path / "shared.db"
    writers = [TickWriter(path, flush_interval_s=0.01) for _ in range(2)]
    for writer in writers:
        writer.start()
    for chunk in range(10):
        for i, writer in enumerate(writers):
            symbol = ("BTCUSDT", "ETHUSDT")[i]
            for trade in make_trades(1_000, symbol=symbol, first_id=chunk * 1_000 + 1):
                writer.put(trade)
    assert all(writer.stop(timeout=30) for writer in writers)
    assert all(writer.error is None for writer in writers)
    with SqliteStore(path) as store:
        assert store.tick_count("BTCUSDT") == 10_000 and store.tick_count("ETHUSDT") == 10_000


def test_a_far_future_trade_time_cannot_make_retention_wipe_the_database(tmp_path):
    writer = TickWriter(tmp_path / "r.db", retention_ms=3_600_000)
    writer.start()
    now = now_ms()
    writer.put(make_trade(trade_id=1, ts_ms=now - 60_000))
    writer.put(make_trade(trade_id=2, ts_ms=now + 10 * 365 * 86_400_000))  # a garbage timestamp, ten years ahead
    eventually(lambda: writer.committed_trades == 2)
    writer._last_prune = 0.0  # prune on the next pass instead of a minute from now
    writer.put(make_trade(trade_id=3, ts_ms=now))
    assert writer.stop()
    with SqliteStore(tmp_path / "r.db") as store:
        assert store.tick_count() == 3


def test_a_row_the_database_refuses_is_counted_and_the_rest_stored(tmp_path):
    writer = TickWriter(tmp_path / "bad.db")
    writer.start()
    unbindable = Trade("BTCUSDT", 99, 1, 1, object(), 1.0, False)  # type: ignore[arg-type]
    for trade in [*make_trades(10), unbindable, *make_trades(10, first_id=11)]:
        writer.put(trade)
    assert writer.stop()
    assert writer.error is None and writer.rejected == 1 and "rejected" in writer.reject_error
    with SqliteStore(tmp_path / "bad.db") as store:
        assert store.tick_count() == 20


def test_writer_queue_is_bounded_by_back_pressure(tmp_path):
    """A producer faster than the disk waits once max_backlog items are queued: memory stays bounded."""
    path = tmp_path / "slow.db"
    SqliteStore(path).close()
    writer = TickWriter(path, store_factory=lambda p: SqliteStore(p, busy_timeout_ms=50), max_backlog=10_000)
    writer.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer cannot commit: everything backs up
    produced = []

    def produce() -> None:
        for trade in make_trades(30_000):
            writer.put(trade)
            produced.append(trade.trade_id)

    producer = threading.Thread(target=produce)
    producer.start()
    eventually(lambda: writer.backpressure_waits > 0)
    assert writer.backlog <= 10_000 + MAX_BATCH  # bounded: the rest waits in the producer
    assert len(produced) < 30_000
    blocker.execute("COMMIT")
    blocker.close()
    producer.join(30)
    assert writer.stop(timeout=30) and len(produced) == 30_000
    with SqliteStore(path) as store:
        assert store.tick_count() == 30_000


def test_a_producer_held_by_back_pressure_still_stores_everything(tmp_path):
    """A producer far faster than the writer passes through the back-pressure wait repeatedly."""
    writer = TickWriter(tmp_path / "fast.db", max_backlog=10_000)
    writer.start()
    for trade in make_trades(200_000):
        writer.put(trade)
    assert writer.backpressure_waits > 0
    assert writer.stop(timeout=60)
    assert writer.committed_trades == 200_000
