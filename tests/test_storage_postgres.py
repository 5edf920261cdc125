"""What only the PostgreSQL backend has: schemas per site, migrations in the database, reconnects,
masked passwords, and the claims that let several processes share one database.

The backend-neutral behaviour is in tests/test_storage_contract.py. These tests use the session's
throwaway cluster (tests/conftest.py), a fresh database each, and skip where it cannot run.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from alerts.rules import parse_rule
from config import StorageSettings
from records import EventKind, FeedEvent, FundingRate
from records.alerts import AlertRule
from storage import (
    Site,
    claim_writer,
    current_writer,
    has_datasets,
    open_alerts,
    open_datasets,
    open_ticks,
    site_for,
)
from storage.errors import RowRejected, SchemaError, StorageUnavailable, WriterBusy
from storage.lock import WriterInfo
from storage.postgres import db as postgres_db
from storage.postgres.alerts import PostgresAlertStore
from storage.postgres.db import schema_name
from storage.postgres.ticks import PostgresTickStore
from testkit.postgres import PgCluster
from testkit.sources import make_trade, make_trades
from testkit.waiting import eventually

LIVE = WriterInfo(4242, 1_765_788_000_000, "LIVE Binance spot", ("BTCUSDT", "ETHUSDT"), "desk-1")
OTHER_LIVE = WriterInfo(4343, 1_765_788_060_000, "LIVE Binance spot", ("SOLUSDT",), "desk-2")
SIMULATED = WriterInfo(77, 1_765_788_000_000, "SIMULATED market (seed 7)", ("BTCUSDT",), "desk-1")


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def backend_pids(cluster: PgCluster, url: str, application: str) -> list[int]:
    return [row[0] for row in cluster.execute(
        database_of(url), f"SELECT pid FROM pg_stat_activity WHERE datname = '{database_of(url)}' "
                          f"AND application_name LIKE '{application} pid %'")]


# ------------------------------------------------------------------------------------------------
# Sites, schemas, migrations
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "schema"), [
    ("live", "live"),
    ("simulated", "simulated"),
    ("replay-Ticks_2025-12-15T08-50-11.076Z-0a1b2c", "replay_ticks_2025_12_15t08_50_11_076z_0a1b2c"),
    ("9lives", "s_9lives"),
])
def test_schema_names_are_plain_identifiers(name, schema):
    assert schema_name(name) == schema


def test_long_names_are_cut_with_a_hash_and_stay_apart():
    a, b = schema_name("replay-" + "x" * 70 + "-aaaaaa"), schema_name("replay-" + "x" * 70 + "-bbbbbb")
    assert len(a) == len(b) == 63 and a != b


def test_each_source_gets_its_own_schema_and_the_password_is_masked(pg_url):
    storage = StorageSettings(db_url=pg_url)
    live, simulated = site_for(storage, "live"), site_for(storage, "simulated")
    password = pg_url.split(":")[2].split("@")[0]
    assert (live.schema, simulated.schema) == ("live", "simulated")
    assert live.location.endswith("schema live") and ":***@127.0.0.1:" in live.location
    assert password not in live.location and password not in repr(live)
    with open_ticks(live) as store:
        store.write_batch(make_trades(5))
    with open_ticks(simulated) as store:
        assert store.tick_count() == 0  # nothing of the live schema
        store.write_batch(make_trades(2, symbol="ETHUSDT"))
    with open_ticks(live) as store:
        assert store.symbols() == ["BTCUSDT"] and store.location == live.location


def test_migrations_are_versioned_in_the_database(pg_cluster, pg_url):
    with PostgresTickStore(pg_url, "live") as ticks, PostgresAlertStore(pg_url, "live") as alerts:
        assert ticks.schema_version == 2 and alerts.schema_version == 2
    rows = pg_cluster.execute(database_of(pg_url), "SELECT component, version FROM live.schema_version ORDER BY 1")
    assert rows == [("alerts", 2), ("ticks", 2)]


def test_a_newer_schema_is_refused(pg_cluster, pg_url, monkeypatch):
    PostgresTickStore(pg_url, "future").close()
    pg_cluster.execute(database_of(pg_url), "UPDATE future.schema_version SET version = 99 WHERE component = 'ticks'")
    monkeypatch.setattr(postgres_db, "_MIGRATED", set())
    monkeypatch.setattr(postgres_db, "_IDLE", {})
    with pytest.raises(SchemaError, match="schema 'future': ticks version 99 is newer than 2"):
        PostgresTickStore(pg_url, "future")


def test_a_schema_from_before_funding_is_migrated_keeping_its_ticks(pg_cluster, pg_url, monkeypatch):
    with PostgresTickStore(pg_url, "older") as store:
        store.write_batch(make_trades(3))
    database = database_of(pg_url)
    pg_cluster.execute(database, "DROP TABLE older.funding; DROP TABLE older.funding_coverage; "
                                 "UPDATE older.schema_version SET version = 1 WHERE component = 'ticks'")
    monkeypatch.setattr(postgres_db, "_MIGRATED", set())
    monkeypatch.setattr(postgres_db, "_IDLE", {})
    with PostgresTickStore(pg_url, "older") as store:
        assert store.schema_version == 2 and store.tick_count() == 3
        store.verify()
        assert store.write_funding("BTCUSDT", [FundingRate("BTCUSDT", 28_800_000, 1e-4, 90_000.0)], 0, 28_800_000) == 1


def test_processes_starting_at_once_migrate_once(pg_url, monkeypatch):
    """Was a race in the making: two CREATE SCHEMA at once fail on a unique index without the advisory lock."""
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait(10)
        try:
            PostgresTickStore(pg_url, "racing").close()
        except BaseException as exc:
            errors.append(exc)

    monkeypatch.setattr(postgres_db, "_MIGRATED", set())  # each thread plays a process that never saw the schema
    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with PostgresTickStore(pg_url, "racing") as store:
        assert store.schema_version == 2


def test_datasets_live_in_their_own_schema_and_asking_creates_nothing(pg_cluster, pg_url):
    storage = StorageSettings(db_url=pg_url)
    assert has_datasets(storage) is False
    assert pg_cluster.execute(database_of(pg_url), "SELECT to_regnamespace('uploads')") == [(None,)]
    with open_datasets(storage) as store:
        assert store.location.endswith("schema uploads") and store.list() == []
    assert has_datasets(storage) is False  # a schema, but nothing uploaded yet


def test_a_statement_that_must_return_a_row_and_returns_none_is_named(pg_url):
    with postgres_db.reader_connection(pg_url, "public") as conn:
        assert postgres_db.one_row(conn, "SELECT 1, 2") == (1, 2)
        with pytest.raises(RuntimeError, match=r"expected one row from 'SELECT 1 WHERE false', got none"):
            postgres_db.one_row(conn, "SELECT 1 WHERE false")


# ------------------------------------------------------------------------------------------------
# A server that goes away
# ------------------------------------------------------------------------------------------------


def test_a_store_reconnects_by_itself_after_a_server_restart(pg_cluster, pg_url):
    with PostgresTickStore(pg_url, "live") as store:
        assert store.write_batch(make_trades(10)) == 10
        pg_cluster.restart(mode="immediate")
        with pytest.raises(StorageUnavailable, match="cannot use database 'postgresql://quant:\\*\\*\\*@"):
            store.write_batch(make_trades(20))
        assert store.write_batch(make_trades(20)) == 10  # reconnected; the first 10 were committed before
        assert store.tick_count() == 20 and store.connections == 2


def test_an_admin_shutdown_of_the_session_is_unavailable_then_recovers(pg_cluster, pg_url):
    with PostgresTickStore(pg_url, "live") as store:
        store.write_batch(make_trades(3))
        (pid,) = backend_pids(pg_cluster, pg_url, "quant ticks")
        pg_cluster.execute(database_of(pg_url), f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(StorageUnavailable):
            store.tick_count()
        assert store.tick_count() == 3


def test_passwords_never_appear_in_errors(pg_cluster, pg_url):
    wrong = pg_url.replace(pg_cluster.password, "not-the-password-42")
    with pytest.raises(StorageUnavailable) as raised:
        PostgresTickStore(wrong, "live")
    assert "password authentication failed" in str(raised.value)
    assert "not-the-password-42" not in str(raised.value) and ":***@" in str(raised.value)
    closed_port = pg_url.replace(f":{pg_cluster.port}/", ":1/")
    with pytest.raises(StorageUnavailable) as raised:
        PostgresTickStore(closed_port, "live")
    assert pg_cluster.password not in str(raised.value) and raised.value.__cause__ is None


# ------------------------------------------------------------------------------------------------
# Several processes on one schema
# ------------------------------------------------------------------------------------------------


def test_live_writers_share_a_schema_and_are_named(pg_url):
    site = site_for(StorageSettings(db_url=pg_url), "live")
    assert current_writer(site) is None
    first = claim_writer(site, LIVE, shared=True)
    second = claim_writer(site, OTHER_LIVE, shared=True)
    try:
        writer = current_writer(site)
        assert (writer.pid, writer.host) == (4242, "desk-1")
        assert writer.label == "LIVE Binance spot + 1 more recorder"
        assert writer.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
        assert writer.describe().startswith("pid 4242 on desk-1 (LIVE Binance spot + 1 more recorder: ")
        # An exclusive writer (a simulated market) may not join them.
        with pytest.raises(WriterBusy, match=r"already being written by pid 4242 on desk-1 .*one writer per schema"):
            claim_writer(site, SIMULATED, shared=False)
    finally:
        first.release()
    assert current_writer(site).pid == 4343
    second.release()
    assert current_writer(site) is None


def test_an_exclusive_writer_refuses_every_other(pg_url):
    site = site_for(StorageSettings(db_url=pg_url), "simulated")
    claim = claim_writer(site, SIMULATED, shared=False)
    try:
        assert claim.held
        for shared in (False, True):
            with pytest.raises(WriterBusy, match=r"pid 77 on desk-1 \(SIMULATED market \(seed 7\): BTCUSDT\)"):
                claim_writer(site, SIMULATED, shared=shared)
    finally:
        claim.release()
    eventually(lambda: claimed(site, SIMULATED), timeout=5)  # free once that session has ended


def claimed(site: Site, info: WriterInfo) -> bool:
    """True (and released again) if ``info`` could claim ``site`` exclusively now."""
    try:
        claim_writer(site, info, shared=False).release()
    except WriterBusy:
        return False
    return True


def test_a_dead_writer_is_no_writer(pg_cluster, pg_url):
    """kill -9 of a recorder ends its session; its lock goes with it, its row is then ignored."""
    site = site_for(StorageSettings(db_url=pg_url), "live")
    claim = claim_writer(site, LIVE, shared=False)
    (pid,) = backend_pids(pg_cluster, pg_url, "quant ticks")
    claim._stop.set()  # no heartbeat: the process is "dead"
    claim._thread.join(5)
    pg_cluster.execute(database_of(pg_url), f"SELECT pg_terminate_backend({pid})")
    eventually(lambda: current_writer(site) is None, timeout=5)
    eventually(lambda: claimed(site, SIMULATED), timeout=5)


def test_the_writer_claim_is_taken_again_after_a_server_restart(pg_cluster, pg_url):
    site = site_for(StorageSettings(db_url=pg_url), "simulated")
    claim = claim_writer(site, SIMULATED, shared=False)
    try:
        pg_cluster.restart(mode="immediate")
        eventually(lambda: current_writer(site) is not None and claim.held, timeout=10)
        assert current_writer(site).pid == 77
        with pytest.raises(WriterBusy):
            claim_writer(site, SIMULATED, shared=False)
    finally:
        claim.release()


def test_each_rule_is_claimed_by_one_store_until_it_closes(pg_url):
    first, second = PostgresAlertStore(pg_url, "live"), PostgresAlertStore(pg_url, "live")
    try:
        rule = first.add_rule(zscore_rule())
        other = first.add_rule(zscore_rule(3.0))
        assert first.claim_rule(rule.id) is True
        assert second.claim_rule(rule.id) is False
        assert second.claim_rule(other.id) is True and first.claim_rule(other.id) is False
        first.close()  # the holder goes (its server process a moment later): the next one asking takes over
        eventually(lambda: second.claim_rule(rule.id), timeout=5)
    finally:
        first.close()
        second.close()


def zscore_rule(threshold: float = 2.0) -> AlertRule:
    return parse_rule(f"zscore > {threshold}", pair=("ETHUSDT", "BTCUSDT"), timeframe_ms=1_000, window=60)


def test_a_rule_claim_lost_with_the_connection_is_asked_for_again(pg_cluster, pg_url):
    site = site_for(StorageSettings(db_url=pg_url), "live")
    with open_alerts(site) as holder, open_alerts(site) as other:
        rule = holder.add_rule(zscore_rule())
        assert holder.claim_rule(rule.id)
        pg_cluster.restart(mode="immediate")
        for store in (holder, other):  # both sessions died with the server
            with pytest.raises(StorageUnavailable):
                store.rules_version()
        assert other.claim_rule(rule.id) is True  # the restart freed it; the first to ask has it
        assert holder.claim_rule(rule.id) is False


def test_retention_runs_in_one_process(pg_url):
    with PostgresTickStore(pg_url, "live") as a, PostgresTickStore(pg_url, "live") as b:
        a.write_batch(make_trades(10), [FeedEvent(make_trade(trade_id=1).ts_ms, EventKind.STARTED)])
        cutoff = make_trade(trade_id=4).ts_ms
        assert a.prune(cutoff) == 3
        b.write_batch([make_trade(trade_id=1)])  # an old trade again, re-sent to the other writer
        assert b.prune(cutoff + 1) == 0  # a holds the retention lock
        assert b.tick_count() == 8
        a.close()
        pruned: list[int] = []
        # a is gone (its server process ends a moment after the connection closes): b takes over.
        eventually(lambda: pruned.append(b.prune(cutoff + 1)) or pruned[-1] > 0, timeout=5)
        assert pruned[-1] == 2 and b.tick_count() == 6


def test_overlapping_batches_from_two_writers_store_each_trade_once_without_deadlock(pg_url):
    """Two recorders on one symbol insert the same trades at once, in opposite orders."""
    trades = make_trades(20_000)
    errors: list[BaseException] = []
    inserted: list[int] = []
    start = threading.Barrier(2)

    def write(batch_order: list) -> None:
        try:
            with PostgresTickStore(pg_url, "live") as store:
                start.wait(10)
                for k in range(0, len(batch_order), 2_000):
                    inserted.append(store.write_batch(batch_order[k:k + 2_000]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(order,)) for order in (trades, trades[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert sum(inserted) == 20_000
    with PostgresTickStore(pg_url, "live") as store:
        assert store.tick_count() == 20_000 and store.last_trade_ids() == {"BTCUSDT": 20_000}


def test_a_read_only_role_can_read_a_current_schema(pg_cluster, pg_url, monkeypatch):
    """Dashboards may run as a role without CREATE: opening a migrated schema runs no DDL."""
    with PostgresTickStore(pg_url, "live") as store:
        store.write_batch(make_trades(3))
    database = database_of(pg_url)
    pg_cluster.execute(database, "CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")
    pg_cluster.execute(database, "GRANT USAGE ON SCHEMA live TO reader")
    pg_cluster.execute(database, "GRANT SELECT ON ALL TABLES IN SCHEMA live TO reader")
    monkeypatch.setattr(postgres_db, "_MIGRATED", set())
    reader_url = f"postgresql://reader:reader-pw@127.0.0.1:{pg_cluster.port}/{database}"
    with PostgresTickStore(reader_url, "live") as store:
        assert store.tick_count() == 3
    with psycopg.connect(reader_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("CREATE SCHEMA sneaky")


def test_a_batch_that_fails_after_its_copy_leaves_nothing_behind_for_the_next(pg_url):
    """The staged rows of a failed batch must not ride along with the next one (PostgreSQL text takes no NUL)."""
    with PostgresTickStore(pg_url, "live") as store:
        with pytest.raises(RowRejected):
            store.write_batch(make_trades(5), [FeedEvent(1, EventKind.ERROR, None, "bad \x00 byte")])
        assert store.write_batch(make_trades(2, first_id=100)) == 2
        assert store.tick_count() == 2 and store.feed_events() == []


def test_closed_readers_leave_their_connection_for_the_next_and_lock_holders_do_not(pg_cluster, pg_url):
    """A dashboard opens a store per refresh: one connection serves them all. A store whose session
    holds a lock (a rule claim) ends that session on close, or the lock would outlive it."""
    for _ in range(5):
        with PostgresTickStore(pg_url, "live") as store:
            store.tick_count()
    assert len(backend_pids(pg_cluster, pg_url, "quant ticks")) == 1
    with PostgresAlertStore(pg_url, "live") as holder:
        rule = holder.add_rule(zscore_rule())
        assert holder.claim_rule(rule.id)
    database = database_of(pg_url)
    advisory_locks = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                      f"database = (SELECT oid FROM pg_database WHERE datname = '{database}')")
    eventually(lambda: pg_cluster.execute(database, advisory_locks) == [(0,)], timeout=5,
               message="a closed store's rule lock outlived it")
    pg_cluster.restart(mode="immediate")  # idle connections die with the server; the next store gets a new one
    with PostgresTickStore(pg_url, "live") as store:
        assert store.tick_count() == 0


def test_two_writers_opening_one_symbols_funding_span_at_once_keep_both_spans(pg_url):
    """Two recorders sharing a schema store one symbol's first funding spans at the same moment: there
    was no row yet to lock, so the second found none, and its upsert then replaced the first's span with
    its own (what the first fetched was no longer known, and fetched again). Touching spans become one."""
    with PostgresTickStore(pg_url, "futures") as second, psycopg.connect(pg_url, autocommit=True) as first:
        first.execute("SET search_path TO futures")
        with first.transaction():  # the first writer's transaction, not committed yet
            first.execute("INSERT INTO funding_coverage (symbol, first_ms, last_ms) VALUES ('ETHUSDT', 0, 100)")
            done = threading.Event()
            writer = threading.Thread(target=lambda: (second.write_funding("ETHUSDT", [], 101, 200), done.set()))
            writer.start()
            eventually(lambda: first.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database() "
                "AND application_name LIKE 'quant ticks pid %'").fetchone()[0] == 1,
                timeout=10, message="the second writer never waited for the first")
        writer.join(10)
        assert done.is_set()
        assert second.funding_coverage("ETHUSDT") == (0, 200)


def test_a_funding_write_whose_session_dies_mid_transaction_stores_nothing_and_its_retry_stores_once(
        pg_cluster, pg_url):
    """The server ends the writer's session inside its transaction (events inserted, span not yet
    widened): the call raises StorageUnavailable (never counted as stored), neither the events nor the
    span are left, and the same call once the store has reconnected stores each event once."""
    rates = [FundingRate("ETHUSDT", t, 1e-4, 3_000.0) for t in (28_800_000, 57_600_000)]
    with PostgresTickStore(pg_url, "futures") as store, psycopg.connect(pg_url, autocommit=True) as other:
        store.write_funding("ETHUSDT", [], 0, 28_799_999)
        other.execute("SET search_path TO futures")
        failed: list[BaseException] = []

        def write() -> None:
            try:
                store.write_funding("ETHUSDT", rates, 28_800_000, 60_000_000)
            except BaseException as exc:
                failed.append(exc)

        with other.transaction():
            other.execute("SELECT * FROM funding_coverage WHERE symbol = 'ETHUSDT' FOR UPDATE")  # the writer waits here
            writer = threading.Thread(target=write)
            writer.start()
            waiting = ("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database() AND application_name LIKE 'quant ticks pid %'")
            eventually(lambda: other.execute(waiting).fetchone() is not None, timeout=10,
                       message="the funding write never reached its span")
            other.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (" + waiting + ")")
            writer.join(10)
        assert len(failed) == 1 and isinstance(failed[0], StorageUnavailable), failed
        assert store.funding("ETHUSDT") == [] and store.funding_coverage("ETHUSDT") == (0, 28_799_999)
        assert store.write_funding("ETHUSDT", rates, 28_800_000, 60_000_000) == 2
        assert store.funding("ETHUSDT") == rates and store.funding_coverage("ETHUSDT") == (0, 60_000_000)
