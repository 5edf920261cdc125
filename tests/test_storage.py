import sqlite3
import threading

import numpy as np
import pytest

from config import Settings
from ingestion.writer import MAX_BATCH, STORAGE_RETRY, TickWriter
from records import EventKind, FeedEvent, Trade, now_ms
from records.retry import RetryPolicy
from service import Service
from storage import Site, open_ticks
from storage.errors import (
    RowRejected,
    SchemaError,
    StorageCorrupt,
    StorageLocationError,
    StorageUnavailable,
    WriterBusy,
)
from storage.sqlite.ticks import SCHEMA_VERSION, SqliteTickStore
from testkit.randoms import DrawLog
from testkit.sources import ScriptedSource, make_trade, make_trades
from testkit.waiting import eventually


def writer_for(path, *, busy_timeout_ms: int = 5_000, **options) -> TickWriter:
    return TickWriter(lambda: SqliteTickStore(path, busy_timeout_ms=busy_timeout_ms), str(path), **options)


def test_schema_wal_and_version(tmp_path):
    with SqliteTickStore(tmp_path / "a.db") as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    # Re-opening an existing file does not migrate again or lose anything.
    with SqliteTickStore(tmp_path / "a.db") as store:
        assert store.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        SqliteTickStore(path)


def test_inserts_are_idempotent_and_reads_are_time_ordered(tmp_path):
    with SqliteTickStore(tmp_path / "t.db") as store:
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
        eth = store.ticks("ETHUSDT")
        assert (eth.ts_ms[0], eth.ts_ms[-1]) == (trades[100].ts_ms, trades[149].ts_ms)
        assert len(store.ticks("SOLUSDT")) == 0


def test_hostile_symbol_is_just_data(tmp_path):
    with SqliteTickStore(tmp_path / "t.db") as store:
        store.write_batch([make_trade("BTCUSDT")])
        assert len(store.ticks("BTCUSDT' OR '1'='1")) == 0
        assert store.tick_count() == 1


def test_feed_events_and_prune(tmp_path):
    with SqliteTickStore(tmp_path / "t.db") as store:
        events = [FeedEvent(1000, EventKind.CONNECTED, None, "ws://x"),
                  FeedEvent(2000, EventKind.GAP, "BTCUSDT", "first_missing=5 count=3")]
        store.write_batch(make_trades(10), events)
        assert store.feed_events()[0] == events[1]
        assert store.feed_events(kinds=[EventKind.CONNECTED]) == [events[0]]
        cutoff = make_trade(trade_id=6).ts_ms
        assert store.prune(cutoff) == 5
        assert store.ticks("BTCUSDT").trade_id[0] == 6


def test_failed_batch_changes_nothing(tmp_path):
    with SqliteTickStore(tmp_path / "t.db") as store:
        store.write_batch(make_trades(3))
        unbindable = Trade("BTCUSDT", 99, 1, 1, object(), 1.0, False)
        bad = [*make_trades(5, first_id=10), unbindable]
        with pytest.raises(RowRejected, match=r"t\.db' refused a value"):
            store.write_batch(bad)
        assert store.tick_count() == 3


def test_writer_flushes_everything_on_stop(tmp_path):
    writer = writer_for(tmp_path / "w.db", flush_interval_s=0.05)
    writer.start()
    for trade in make_trades(20_000):
        writer.put(trade)
    assert writer.stop(timeout=30)
    assert writer.committed_trades == 20_000
    with SqliteTickStore(tmp_path / "w.db") as store:
        assert store.tick_count() == 20_000


def test_reader_reads_while_writer_writes(tmp_path):
    """WAL: a reader thread never sees an error or a shrinking count while batches commit."""
    path = tmp_path / "rw.db"
    writer = writer_for(path, flush_interval_s=0.01)
    writer.start()
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            with SqliteTickStore(path, busy_timeout_ms=5000) as store:
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
    with SqliteTickStore(path) as store:
        assert store.tick_count() == 40_000


def test_writer_surfaces_database_errors(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    writer = writer_for(blocker / "db.sqlite3")
    with pytest.raises(StorageLocationError, match="does not exist"):
        writer.start()


def test_writer_keeps_a_batch_while_the_database_is_locked(tmp_path):
    path = tmp_path / "locked.db"
    SqliteTickStore(path).close()
    writer = writer_for(path, busy_timeout_ms=50)
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


class AwayThenBack(SqliteTickStore):
    """A store whose database is away (``StorageUnavailable``) for the first ``away`` batches."""

    def __init__(self, path, away: int) -> None:
        super().__init__(path)
        self.away = away

    def write_batch(self, trades, events=()):
        if self.away:
            self.away -= 1
            raise StorageUnavailable("server closed the connection unexpectedly")
        return super().write_batch(trades, events)


def test_writer_retries_an_unavailable_database_on_the_storage_policy_with_full_jitter(tmp_path):
    slept: list[float] = []
    rng = DrawLog(5)
    writer = TickWriter(lambda: AwayThenBack(tmp_path / "away.db", away=7), "away.db", sleep=slept.append, rng=rng)
    writer.start()
    for trade in make_trades(20):
        writer.put(trade)
    eventually(lambda: writer.committed_trades == 20)
    # STORAGE_RETRY: ceilings double from 0.1 s and stop at 2 s; each wait drawn below its ceiling.
    assert rng.ceilings == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert len(slept) == 7 and all(0 <= d <= c for d, c in zip(slept, rng.ceilings, strict=True))
    assert len(set(slept)) == 7  # jittered, not a fixed ladder
    assert writer.retry_error is None and writer.error is None and writer.batches == 1
    assert writer.stop()


def test_writer_refuses_a_retry_policy_that_would_drop_a_batch(tmp_path):
    with pytest.raises(ValueError, match="gives up, which this caller must not"):
        writer_for(tmp_path / "a.db", retry=RetryPolicy(base_s=0.1, cap_s=2.0, max_attempts=3))
    assert STORAGE_RETRY.max_attempts is None and STORAGE_RETRY.deadline_s is None


def test_a_second_writer_on_one_database_is_refused_naming_the_first(tmp_path):
    """Two writers would each store part of their trades and mix two markets in one table."""
    settings = Settings.of(source="simulated", db=tmp_path / "shared.db")
    first = Service.start(settings, source=ScriptedSource(make_trades(100)))
    try:
        with pytest.raises(WriterBusy, match=r"already being written by pid \d+ \(SCRIPTED simulated: BTCUSDT, "
                                              r"ETHUSDT\) since .* UTC"):
            Service.start(settings.replace(seed=9), source=ScriptedSource(make_trades(100, symbol="ETHUSDT")))
        eventually(lambda: first.writer.committed_trades == 100)
    finally:
        assert first.stop()
    # Once the first writer is gone, the database takes a new one.
    second = Service.start(settings, source=ScriptedSource(make_trades(10, symbol="ETHUSDT")))
    eventually(lambda: second.writer.committed_trades == 10)
    assert second.stop()
    with SqliteTickStore(tmp_path / "shared.db") as store:
        assert store.tick_count("BTCUSDT") == 100 and store.tick_count("ETHUSDT") == 10


def test_a_far_future_trade_time_cannot_make_retention_wipe_the_database(tmp_path):
    writer = writer_for(tmp_path / "r.db", retention_ms=3_600_000)
    writer.start()
    now = now_ms()
    writer.put(make_trade(trade_id=1, ts_ms=now - 60_000))
    writer.put(make_trade(trade_id=2, ts_ms=now + 10 * 365 * 86_400_000))  # a garbage timestamp, ten years ahead
    eventually(lambda: writer.committed_trades == 2)
    writer._last_prune = 0.0  # prune on the next pass instead of a minute from now
    writer.put(make_trade(trade_id=3, ts_ms=now))
    assert writer.stop()
    with SqliteTickStore(tmp_path / "r.db") as store:
        assert store.tick_count() == 3


def test_a_row_the_database_refuses_is_counted_and_the_rest_stored(tmp_path):
    writer = writer_for(tmp_path / "bad.db")
    writer.start()
    unbindable = Trade("BTCUSDT", 99, 1, 1, object(), 1.0, False)
    for trade in [*make_trades(10), unbindable, *make_trades(10, first_id=11)]:
        writer.put(trade)
    assert writer.stop()
    assert writer.error is None and writer.rejected == 1 and "rejected" in writer.reject_error
    with SqliteTickStore(tmp_path / "bad.db") as store:
        assert store.tick_count() == 20


def test_writer_queue_is_bounded_by_back_pressure(tmp_path):
    """A producer faster than the disk waits once max_backlog items are queued: memory stays bounded."""
    path = tmp_path / "slow.db"
    SqliteTickStore(path).close()
    writer = writer_for(path, busy_timeout_ms=50, max_backlog=10_000)
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
    with SqliteTickStore(path) as store:
        assert store.tick_count() == 30_000


def test_a_producer_held_by_back_pressure_still_stores_everything(tmp_path):
    """A producer far faster than the writer passes through the back-pressure wait repeatedly."""
    writer = writer_for(tmp_path / "fast.db", max_backlog=10_000)
    writer.start()
    for trade in make_trades(200_000):
        writer.put(trade)
    assert writer.backpressure_waits > 0
    assert writer.stop(timeout=60)
    assert writer.committed_trades == 200_000


def damage(path) -> None:
    """Overwrite every page after the header page, as a failing disk or a stray writer would."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.seek(4096)
        fh.write(bytes(range(256)) * ((size - 4096) // 256 + 1))


def filled_database(path, trades: int = 2_000):
    with SqliteTickStore(path) as store:
        store.write_batch(make_trades(trades) + make_trades(trades, symbol="ETHUSDT"))
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def test_a_damaged_database_is_refused_when_the_writer_opens_it(tmp_path):
    path = filled_database(tmp_path / "corrupt.db")
    damage(path)
    site = Site("corrupt", path, explicit=True)
    writer = TickWriter(lambda: open_ticks(site, verify=True), site.location)
    with pytest.raises(StorageCorrupt, match=r"corrupt\.db' is damaged \(.*Page \d+"):
        writer.start()
    assert writer.committed_trades == 0


def test_damage_found_mid_run_stops_storing_loudly_and_counts_what_is_lost(tmp_path):
    """A write that finds the file damaged is never counted as stored, nor retried for ever."""
    path = filled_database(tmp_path / "later.db")
    writer = writer_for(path, flush_interval_s=0.01)
    writer.start()
    damage(path)
    for trade in make_trades(50, first_id=10_000):
        writer.put(trade)
    eventually(lambda: writer.error is not None, timeout=10)
    assert isinstance(writer.error, StorageCorrupt)
    for trade in make_trades(20, first_id=20_000):
        writer.put(trade)
    assert writer.stop()
    assert writer.committed_trades == 0 and writer.lost >= 20 and writer.rejected == 0


@pytest.mark.parametrize(("make", "match"), [
    (lambda d: d, "is a directory, not a database file"),
    (lambda d: d / "missing" / "x.db", "folder .* does not exist"),
    (lambda d: (d / "notes.txt", (d / "notes.txt").write_text("not sqlite"))[0], "is not an SQLite database"),
])
def test_a_location_that_cannot_hold_a_database_is_named(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(StorageLocationError, match=match):
        SqliteTickStore(path)
    assert not (tmp_path / "missing").exists()
