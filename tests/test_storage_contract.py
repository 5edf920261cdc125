"""The storage contract: what every backend of storage/base.py must do, run against each backend.

A backend is a fixture param below; a new backend adds itself there and must pass every test.
The PostgreSQL params use a throwaway cluster (tests/conftest.py) and skip where it cannot run.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from alerts.rules import parse_rule
from config import ConfigError
from records import BarArrays, EventKind, FeedEvent, FundingRate
from records.alerts import AlertRule, make_event
from storage.base import AlertStore, DatasetStore, TickStore
from storage.csv_import import ohlc_frame
from storage.errors import RowRejected
from storage.postgres.alerts import PostgresAlertStore
from storage.postgres.datasets import PostgresDatasetStore
from storage.postgres.ticks import PostgresTickStore
from storage.sqlite.alerts import SqliteAlertStore
from storage.sqlite.datasets import SqliteDatasetStore
from storage.sqlite.ticks import SqliteTickStore
from testkit.sources import make_trade, make_trades

Opener = Callable[[], TickStore]
BACKENDS = ["sqlite", "postgresql"]
HOUR = 3_600_000


def opener(request: pytest.FixtureRequest, tmp_path, sqlite_class: type, postgres_class: type,
           name: str) -> Callable[[], object]:
    """Opens a fresh connection to one empty database (or schema) of the backend in ``request.param``."""
    if request.param == "sqlite":
        path = tmp_path / f"{name}.sqlite3"
        return lambda: sqlite_class(path)
    url = request.getfixturevalue("pg_url")
    return lambda: postgres_class(url, name)


@pytest.fixture(params=BACKENDS)
def open_store(request, tmp_path) -> Iterator[Opener]:
    """Opens a fresh connection to one empty database of the backend under test (call it again for a second one)."""
    yield opener(request, tmp_path, SqliteTickStore, PostgresTickStore, "contract")


@pytest.fixture(params=BACKENDS)
def open_alert_store(request, tmp_path) -> Callable[[], AlertStore]:
    return opener(request, tmp_path, SqliteAlertStore, PostgresAlertStore, "contract_alerts")


@pytest.fixture(params=BACKENDS)
def open_dataset_store(request, tmp_path) -> Callable[[], DatasetStore]:
    return opener(request, tmp_path, SqliteDatasetStore, PostgresDatasetStore, "uploads")


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
        assert store.write_batch(make_trades(3), events[:1]) == 3  # new ticks, whatever the events
        assert store.write_batch(make_trades(4), events[1:]) == 1
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


def funding(symbol: str, *hours: int, rate: float = 1e-4, mark: float | None = 3_000.0) -> list[FundingRate]:
    return [FundingRate(symbol, h * HOUR, rate * (k + 1), mark) for k, h in enumerate(hours)]


def test_funding_fetched_again_is_stored_once_and_read_by_time(open_store):
    with open_store() as store:
        assert store.funding("ETHUSDT") == [] and store.funding_coverage("ETHUSDT") is None
        first = [*funding("ETHUSDT", 0, 8, 16), FundingRate("ETHUSDT", 24 * HOUR, -3.75e-4, None)]
        assert store.write_funding("ETHUSDT", first, 0, 30 * HOUR) == 4
        # The same events fetched again (a restart, an overlapping refetch): nothing new, nothing doubled.
        assert store.write_funding("ETHUSDT", first[1:] + funding("ETHUSDT", 32), 8 * HOUR, 35 * HOUR) == 1
        assert store.write_funding("BTCUSDT", funding("BTCUSDT", 8), 0, 9 * HOUR) == 1
    with open_store() as reader:  # another connection (a following dashboard) reads what was committed
        got = reader.funding("ETHUSDT")
        assert [r.funding_ms for r in got] == [0, 8 * HOUR, 16 * HOUR, 24 * HOUR, 32 * HOUR]
        assert got[3] == FundingRate("ETHUSDT", 24 * HOUR, -3.75e-4, None)  # no mark stays no mark
        assert got[0].mark == 3_000.0 and got[2].rate == pytest.approx(3e-4)
        assert [r.funding_ms for r in reader.funding("ETHUSDT", 8 * HOUR, 24 * HOUR)] == [8 * HOUR, 16 * HOUR]
        assert reader.funding_coverage("ETHUSDT") == (0, 35 * HOUR)
        assert [r.symbol for r in reader.funding("BTCUSDT")] == ["BTCUSDT"]


def test_funding_spans_join_when_they_touch_and_a_later_one_apart_replaces(open_store):
    with open_store() as store:
        store.write_funding("ETHUSDT", [], 10 * HOUR, 20 * HOUR)
        store.write_funding("ETHUSDT", [], 20 * HOUR + 1, 30 * HOUR)  # touches: one span
        store.write_funding("ETHUSDT", [], 0, 10 * HOUR - 1)  # touches the start
        assert store.funding_coverage("ETHUSDT") == (0, 30 * HOUR)
        store.write_funding("ETHUSDT", [], -50 * HOUR, -40 * HOUR)  # earlier, apart: the stored span stays
        assert store.funding_coverage("ETHUSDT") == (0, 30 * HOUR)
        store.write_funding("ETHUSDT", [], 40 * HOUR, 50 * HOUR)  # later, apart (a hole between): replaces
        assert store.funding_coverage("ETHUSDT") == (40 * HOUR, 50 * HOUR)
        with pytest.raises(ValueError, match=r"first_ms .* is after last_ms"):
            store.write_funding("ETHUSDT", [], 60 * HOUR, 50 * HOUR)


def test_prune_drops_old_funding_and_trims_its_span(open_store):
    with open_store() as store:
        store.write_funding("ETHUSDT", funding("ETHUSDT", 0, 8, 16), 0, 20 * HOUR)
        store.write_funding("BTCUSDT", funding("BTCUSDT", 0), 0, 1 * HOUR)
        store.prune(8 * HOUR)
        assert [r.funding_ms for r in store.funding("ETHUSDT")] == [8 * HOUR, 16 * HOUR]
        assert store.funding_coverage("ETHUSDT") == (8 * HOUR, 20 * HOUR)
        assert store.funding("BTCUSDT") == [] and store.funding_coverage("BTCUSDT") is None


def test_sqlite_schema_1_is_migrated_keeping_its_ticks(tmp_path):
    """A database from before stored bars (and funding) existed gains the tables and keeps everything."""
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
        assert store.schema_version == 3 and store.tick_count() == 1
        assert store.write_bars("BTCUSDT", 1_000, bars([0])) == 1
        assert store.write_funding("BTCUSDT", [FundingRate("BTCUSDT", 8 * HOUR, 1e-4, None)], 0, 8 * HOUR) == 1


def test_a_batch_with_a_bad_row_is_rejected_whole(open_store):
    """A trade id beyond 64 bits: RowRejected, and nothing of that batch (nor its events) is stored."""
    with open_store() as store:
        bad = [*make_trades(3)[:2], make_trade(trade_id=2 ** 63)]
        with pytest.raises(RowRejected):
            store.write_batch(bad, [FeedEvent(1, EventKind.GAP, "BTCUSDT", "x")])
        assert store.tick_count() == 0 and store.feed_events() == []
        assert store.write_batch(make_trades(2)) == 2  # the store is usable afterwards


def test_symbols_and_text_are_data_not_sql(open_store):
    hostile = "x'); DROP TABLE ticks; --\t\n\\"
    with open_store() as store:
        store.write_batch([make_trade(trade_id=1, symbol=hostile)], [FeedEvent(5, EventKind.ERROR, hostile, hostile)])
        assert store.symbols() == [hostile] and list(store.ticks(hostile).trade_id) == [1]
        assert store.feed_events() == [FeedEvent(5, EventKind.ERROR, hostile, hostile)]


# ------------------------------------------------------------------------------------------------
# Alert rules and alerts
# ------------------------------------------------------------------------------------------------

T0 = 1_765_788_000_000


def zscore_rule(threshold: float = 2.0) -> AlertRule:
    return parse_rule(f"zscore > {threshold}", pair=("ETHUSDT", "BTCUSDT"), timeframe_ms=60_000, window=60)


def test_rules_persist_enable_disable_delete(open_alert_store):
    price = parse_rule("BTCUSDT price crosses below 90000", pair=None, timeframe_ms=1_000, window=10, cooldown_s=30)
    with open_alert_store() as store:
        first, second = store.add_rule(zscore_rule()), store.add_rule(price)
        assert first == AlertRule("zscore", ">", 2.0, pair=("ETHUSDT", "BTCUSDT"), hysteresis=0.5, id=first.id)
        assert second.id > first.id
        assert store.set_enabled(first.id, False) is True
        assert store.rules(enabled_only=True) == [second]
    with open_alert_store() as store:
        assert store.rules() == [replace(first, enabled=False), second]
        assert store.rules()[1].symbol == "BTCUSDT" and store.rules()[1].pair is None
        assert store.delete_rule(second.id) is True and store.delete_rule(second.id) is False
        assert store.set_enabled(second.id, True) is False
        assert [r.id for r in store.rules()] == [first.id]


def test_ensure_rule_keeps_one_copy_and_re_enables_it(open_alert_store):
    with open_alert_store() as store:
        added, new = store.ensure_rule(zscore_rule())
        assert new
        store.set_enabled(added.id, False)
        again, new = store.ensure_rule(zscore_rule())
        assert not new and again.id == added.id and again.enabled
        assert store.rules(enabled_only=True) == [again]


def test_deleted_rule_ids_are_never_reused_and_alerts_are_idempotent(open_alert_store):
    with open_alert_store() as store:
        old = store.add_rule(zscore_rule())
        event = make_event(old, T0, 2.5)
        assert store.record(event) is True and store.record(event) is False
        store.delete_rule(old.id)
        new = store.add_rule(zscore_rule(3))
        assert new.id != old.id
        assert store.record(make_event(new, T0, 3.5)) is True
        unstored = make_event(zscore_rule(), T0, 2.5)  # rule_id None: always new
        assert store.record(unstored) and store.record(unstored)
    with open_alert_store() as store:  # a restarted engine re-evaluating the same bars adds nothing
        assert store.record(event) is False
        assert len(store.alerts()) == 4


def test_alerts_newest_first_with_limit_and_since(open_alert_store):
    with open_alert_store() as store:
        rule = store.add_rule(zscore_rule())
        for i in (0, 2, 1, 3):
            store.record(make_event(rule, T0 + i * 60_000, 2.0 + i))
        assert [r.event.ts_ms for r in store.alerts()] == [T0 + 180_000, T0 + 120_000, T0 + 60_000, T0]
        assert [r.event.value for r in store.alerts(limit=2)] == [5.0, 4.0]
        assert [r.event.ts_ms for r in store.alerts(since_ms=T0 + 120_000)] == [T0 + 180_000, T0 + 120_000]
        assert store.alerts()[0].event == make_event(rule, T0 + 180_000, 5.0)


def test_rules_version_sees_changes_from_another_connection(open_alert_store):
    with open_alert_store() as engine, open_alert_store() as ui:
        seen = engine.rules_version()
        rule = ui.add_rule(zscore_rule())
        assert engine.rules_version() > seen
        seen = engine.rules_version()
        engine.record(make_event(rule, T0, 2.5))  # alerts are not rule changes
        assert ui.delete_rule(999) is False  # nothing changed, nothing to reload
        assert engine.rules_version() == seen
        ui.set_enabled(rule.id, False)
        assert engine.rules_version() > seen
        assert engine.rules(enabled_only=True) == []


def test_a_claimed_rule_stays_claimed(open_alert_store):
    with open_alert_store() as store:
        rule = store.add_rule(zscore_rule())
        assert store.claim_rule(rule.id) is True
        assert store.claim_rule(rule.id) is True


# ------------------------------------------------------------------------------------------------
# Uploaded datasets
# ------------------------------------------------------------------------------------------------


def small_frame(closes: list[float], first_ms: int = T0, step_ms: int = 60_000) -> pd.DataFrame:
    values = np.array([[c, c + 1, c - 1, c, 2.0] for c in closes])
    return ohlc_frame(first_ms + step_ms * np.arange(len(closes)), values)


def add_small(store: DatasetStore, name: str, closes: list[float], **overrides: object):
    fields = {"name": name, "symbol": "BTCUSDT", "filename": f"{name}.csv",
              "content_hash": hashlib.sha256(f"{name}{closes}".encode()).hexdigest(), "uploaded_ms": T0} | overrides
    return store.add(small_frame(closes), **fields)


def test_datasets_round_trip_dedupe_and_list_order(open_dataset_store):
    with open_dataset_store() as store:
        first = add_small(store, "old", [1.0, 2.0, 3.0], uploaded_ms=100)
        assert first.created and first.dataset.interval_ms == 60_000 and first.dataset.rows == 3
        again = add_small(store, "old again", [1.0, 2.0, 3.0], uploaded_ms=150,
                          content_hash=first.dataset.content_hash)
        assert again.created is False and again.dataset == first.dataset
        single = add_small(store, "single", [7.5], uploaded_ms=200).dataset
        assert single.interval_ms is None and single.first_ms == single.last_ms
        assert store.list() == [single, first.dataset]
        pd.testing.assert_frame_equal(store.load(first.dataset.id), small_frame([1.0, 2.0, 3.0]), check_exact=True)
    with open_dataset_store() as store:
        assert store.get(single.id) == single


def test_datasets_name_clash_hostile_input_and_delete(open_dataset_store):
    hostile = "x'); DROP TABLE datasets; --"
    with open_dataset_store() as store:
        kept = add_small(store, hostile, [10.0, 11.0], filename="../../etc/passwd'.csv").dataset
        assert (store.get(kept.id).name, store.get(kept.id).filename) == (hostile, "../../etc/passwd'.csv")
        with pytest.raises(ValueError, match="already exists with different content"):
            add_small(store, hostile, [20.0, 21.0, 22.0], content_hash="f" * 64)
        with pytest.raises(ConfigError, match="invalid symbol"):
            add_small(store, "other", [1.0], symbol="ETH;DROP")
        gone = add_small(store, "gone", [1.0, 2.0]).dataset
        assert store.delete(gone.id) is True and store.delete(gone.id) is False
        with pytest.raises(KeyError, match=f"no dataset with id {gone.id}"):
            store.load(gone.id)
        assert store.list() == [kept]
        assert store.load(kept.id)["close"].tolist() == [10.0, 11.0]
