import contextlib
import sqlite3
import threading

import pytest

from alerts.rules import parse_rule
from records.alerts import AlertEvent, AlertRule, make_event
from storage.base import AlertRecord
from storage.errors import SchemaError, StorageError
from storage.sqlite.alerts import SCHEMA_VERSION, SqliteAlertStore
from storage.sqlite.ticks import SqliteTickStore

PAIR = ("ETHUSDT", "BTCUSDT")
T0 = 1_765_788_000_000


class FakeClock:
    """Wall clock for ``created_ms``: returns ``now`` and then advances it by one second."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1_000
        return self.now - 1_000


def zscore_rule(threshold: float = 2.0, **kwargs) -> AlertRule:
    return parse_rule(f"zscore > {threshold}", pair=PAIR, timeframe_ms=60_000, window=60, **kwargs)


def test_rules_persist_across_reopen(tmp_path):
    path = tmp_path / "binance-alerts.sqlite3"
    price = parse_rule("BTCUSDT price crosses below 90000", pair=None, timeframe_ms=1_000, window=10, cooldown_s=30)
    with SqliteAlertStore(path) as store:
        first = store.add_rule(zscore_rule())
        second = store.add_rule(price)
        assert (first.id, second.id) == (1, 2)
        assert first == AlertRule("zscore", ">", 2.0, pair=PAIR, hysteresis=0.5, id=1)
    with SqliteAlertStore(path) as store:
        assert store.rules() == [first, second]
        assert store.rules()[1].symbol == "BTCUSDT" and store.rules()[1].pair is None
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # The canonical text is stored too, for people reading the file with the sqlite3 shell.
        assert store._conn.execute("SELECT text FROM alert_rules ORDER BY id").fetchall() == [
            ("zscore > 2",), ("BTCUSDT price crosses below 90000",)]


def test_enable_disable_delete(tmp_path):
    with SqliteAlertStore(tmp_path / "a.sqlite3") as store:
        a, b = store.add_rule(zscore_rule(2)), store.add_rule(zscore_rule(3))
        assert store.set_enabled(a.id, False) is True
        assert store.rules(enabled_only=True) == [b]
        assert store.rules()[0].enabled is False
        assert store.set_enabled(a.id, True) is True
        assert store.rules(enabled_only=True) == [a, b]
        assert store.delete_rule(b.id) is True
        assert store.rules() == [a]
        assert store.delete_rule(b.id) is False
        assert store.set_enabled(b.id, True) is False


def test_deleted_rule_ids_are_never_reused(tmp_path):
    with SqliteAlertStore(tmp_path / "a.sqlite3") as store:
        old = store.add_rule(zscore_rule())
        assert store.record(make_event(old, T0, 2.5))
        store.delete_rule(old.id)
        new = store.add_rule(zscore_rule(3))
        assert new.id != old.id
        # Otherwise UNIQUE(rule_id, ts_ms) would swallow the new rule's alert on the same bar.
        assert store.record(make_event(new, T0, 3.5)) is True


def test_record_is_idempotent_across_reopen(tmp_path):
    path = tmp_path / "a.sqlite3"
    clock = FakeClock()
    with SqliteAlertStore(path, now_ms=clock) as store:
        rule = store.add_rule(zscore_rule())
        event = make_event(rule, T0, 2.31)
        assert store.record(event) is True
        assert store.record(event) is False
    # A restarted engine re-evaluates the same bars and fires the same events again.
    with SqliteAlertStore(path, now_ms=clock) as store:
        assert store.record(event) is False
        assert store.alerts() == [AlertRecord(id=1, created_ms=1_700_000_001_000, event=event)]


def test_events_of_unstored_rules_are_always_new(tmp_path):
    event = make_event(zscore_rule(), T0, 2.5)
    assert event.rule_id is None
    with SqliteAlertStore(tmp_path / "a.sqlite3") as store:
        assert store.record(event) and store.record(event)
        assert len(store.alerts()) == 2


def test_alerts_newest_first_with_limit_and_since(tmp_path):
    with SqliteAlertStore(tmp_path / "a.sqlite3") as store:
        rule = store.add_rule(zscore_rule())
        for i in (0, 2, 1, 3):
            store.record(make_event(rule, T0 + i * 60_000, 2.0 + i))
        assert [r.event.ts_ms for r in store.alerts()] == [T0 + 180_000, T0 + 120_000, T0 + 60_000, T0]
        assert [r.event.value for r in store.alerts(limit=2)] == [5.0, 4.0]
        assert [r.event.ts_ms for r in store.alerts(since_ms=T0 + 60_000)] == [T0 + 180_000, T0 + 120_000,
                                                                                T0 + 60_000]
        assert store.alerts(since_ms=T0 + 240_000) == []


def test_history_survives_deleting_its_rule(tmp_path):
    with SqliteAlertStore(tmp_path / "a.sqlite3") as store:
        rule = store.add_rule(zscore_rule())
        store.record(make_event(rule, T0, 2.5))
        store.delete_rule(rule.id)
        (record,) = store.alerts()
        assert record.event == AlertEvent(rule.id, "zscore > 2", "ETHUSDT/BTCUSDT", "zscore", T0, 2.5, 2.0,
                                          "ETHUSDT/BTCUSDT z-score 2.50 > 2.00 (1m, window 60)")


def test_rules_version_sees_rule_changes_from_another_connection(tmp_path):
    path = tmp_path / "a.sqlite3"
    with SqliteAlertStore(path) as engine, SqliteAlertStore(path) as ui:
        seen = engine.rules_version()
        rule = ui.add_rule(zscore_rule())
        assert engine.rules_version() > seen
        seen = engine.rules_version()
        engine.record(make_event(rule, T0, 2.5))  # alerts are not rule changes
        assert engine.rules_version() == seen
        ui.set_enabled(rule.id, False)
        assert engine.rules_version() > seen
        seen = engine.rules_version()
        assert ui.delete_rule(999) is False  # nothing changed, nothing to reload
        assert engine.rules_version() == seen
        ui.delete_rule(rule.id)
        assert engine.rules_version() > seen
        assert engine.rules() == []


def test_two_sessions_adding_the_same_rule_at_once_store_it_once(tmp_path, monkeypatch):
    """Two dashboard sessions click "Add rule" on the same condition together: each reads the rules, finds
    none, and, checking and inserting apart, both add it (the rule then fires and posts twice per bar)."""
    path = tmp_path / "a.sqlite3"
    SqliteAlertStore(path).close()
    both_read = threading.Barrier(2, timeout=1.0)
    read = SqliteAlertStore.rules

    def rules_then_meet(store: SqliteAlertStore, enabled_only: bool = False) -> list[AlertRule]:
        found = read(store, enabled_only)
        # Hold each session between its check and its insert until the other has checked too; broken
        # when the other session waits for this one's lock instead (it has not read).
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()
        return found

    monkeypatch.setattr(SqliteAlertStore, "rules", rules_then_meet)
    results: list[tuple[AlertRule, bool]] = []
    errors: list[BaseException] = []

    def session() -> None:
        try:
            with SqliteAlertStore(path) as store:
                results.append(store.ensure_rule(zscore_rule()))
        except BaseException as exc:  # shown by the assertion below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=session) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and len(results) == 2, errors
    monkeypatch.undo()
    with SqliteAlertStore(path) as store:
        stored = store.rules()
    assert len(stored) == 1, [rule.id for rule in stored]
    assert sorted(added for _, added in results) == [False, True]
    assert {rule.id for rule, _ in results} == {stored[0].id}


def test_ensure_rule_re_enables_a_disabled_copy_in_its_one_transaction(tmp_path):
    """The re-enable is written inside ensure_rule's transaction (committed with it, seen by another session)."""
    path = tmp_path / "a.sqlite3"
    with SqliteAlertStore(path) as ui, SqliteAlertStore(path) as engine:
        first = ui.add_rule(zscore_rule())
        ui.set_enabled(first.stored_id, False)
        seen = engine.rules_version()
        again, added = ui.ensure_rule(zscore_rule())
        assert (again.id, again.enabled, added) == (first.id, True, False)
        assert [(rule.id, rule.enabled) for rule in engine.rules()] == [(first.id, True)]
        assert engine.rules_version() > seen and not ui._conn.in_transaction


def test_refuses_the_tick_database(tmp_path):
    path = tmp_path / "live.sqlite3"
    SqliteTickStore(path).close()
    # Both stores version their schema with PRAGMA user_version, so sharing a file cannot work.
    with pytest.raises(SchemaError, match=r"not an alerts database \(no alert_rules, alert_rules_version, alerts\)"):
        SqliteAlertStore(path)


def test_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "a.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        SqliteAlertStore(path)


def test_one_instance_per_thread(tmp_path):
    errors: list[BaseException] = []
    with SqliteAlertStore(tmp_path / "a.sqlite3") as store:
        def use_from_another_thread() -> None:
            try:
                store.rules()
            except StorageError as exc:  # sqlite3's thread check, translated by the storage layer
                errors.append(exc)

        thread = threading.Thread(target=use_from_another_thread)
        thread.start()
        thread.join(5)
    assert len(errors) == 1 and "thread" in str(errors[0])
