"""Alert rules and alert history in their own SQLite file.

Give the alerts a file of their own (e.g. ``<data_dir>/<source>-alerts.sqlite3``), never the tick
database: :func:`storage.sqlite.db.connect` versions a schema with ``PRAGMA user_version``, which is
one number per file, so two stores with different migration lists sharing a file would each
take the other's version for their own and skip their migrations. :class:`AlertStore` refuses a
file whose version matches but whose tables are not the alert tables.

Each alert row also carries its webhook delivery state (schema 2): ``none``, ``pending`` (with
attempts, last error, next attempt time and a lease), ``delivered`` or ``failed``; the outbox in
:mod:`alerts.outbox` leases, posts and marks pending ones.

One :class:`AlertStore` wraps one connection and is used from one thread (sqlite3 enforces it);
the engine and each UI session open their own. WAL lets them read while another writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from records import now_ms as wall_clock_ms
from records.alerts import AlertEvent, AlertRule
from storage import rows
from storage.base import AlertRecord
from storage.sqlite.db import SqliteDatabase, errors_named, transaction

MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE alert_rules (
            -- AUTOINCREMENT so a deleted rule's id is never reused: alerts keep their rule_id,
            -- and UNIQUE(rule_id, ts_ms) must not swallow a new rule's alert as a duplicate.
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            metric TEXT NOT NULL,
            operator TEXT NOT NULL,
            threshold REAL NOT NULL,
            y TEXT,
            x TEXT,
            symbol TEXT,
            timeframe_ms INTEGER NOT NULL,
            "window" INTEGER NOT NULL,
            hysteresis REAL NOT NULL,
            cooldown_s REAL NOT NULL,
            enabled INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            text TEXT NOT NULL
        );
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            ts_ms INTEGER NOT NULL,
            rule_id INTEGER,
            rule TEXT NOT NULL,
            pair TEXT NOT NULL,
            metric TEXT,
            value REAL NOT NULL,
            threshold REAL,
            message TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            UNIQUE (rule_id, ts_ms)
        );
        CREATE INDEX alerts_ts ON alerts (ts_ms);
        CREATE TABLE alert_rules_version (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL
        );
        INSERT INTO alert_rules_version (id, version) VALUES (1, 0)
    """,
    # Webhook delivery state per alert (the outbox, see alerts.outbox). Alerts stored before this
    # version owe nothing: they were delivered or lost by the in-memory queue of old.
    2: """
        ALTER TABLE alerts ADD COLUMN delivery_state TEXT NOT NULL DEFAULT 'none'
            CHECK (delivery_state IN ('none', 'pending', 'delivered', 'failed'));
        ALTER TABLE alerts ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE alerts ADD COLUMN delivery_error TEXT;
        ALTER TABLE alerts ADD COLUMN last_attempt_ms INTEGER;
        ALTER TABLE alerts ADD COLUMN delivered_ms INTEGER;
        ALTER TABLE alerts ADD COLUMN next_attempt_ms INTEGER;
        ALTER TABLE alerts ADD COLUMN lease_until_ms INTEGER;
        CREATE INDEX alerts_pending ON alerts (id) WHERE delivery_state = 'pending'
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)
# The rules version is bumped by the store's own rule writes (rows.BUMP_RULES_VERSION), in their
# transaction, rather than by a trigger: connect() splits migration scripts on ';', which would
# cut a trigger body apart.


class SqliteAlertStore(SqliteDatabase):
    """Rules and fired alerts in one SQLite file; implements :class:`storage.base.AlertStore`.

    ``now_ms`` supplies ``created_ms`` (wall clock, epoch ms); tests pass a fake clock.
    """

    COMPONENT = "alerts"
    MIGRATIONS = MIGRATIONS
    TABLES = frozenset({"alert_rules", "alerts", "alert_rules_version"})

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5_000,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        super().__init__(path, busy_timeout_ms=busy_timeout_ms)
        self._now_ms = now_ms
        self._ensuring = False  # inside ensure_rule's transaction: add_rule and set_enabled write in it

    def _rule_transaction(self) -> AbstractContextManager[object]:
        """A write transaction for one rule change, or, inside :meth:`ensure_rule`, its open one (so its
        check and its insert are one unit; only there, so a transaction left open by a failed COMMIT is
        never joined by a later write silently)."""
        return contextlib.nullcontext() if self._ensuring else transaction(self._conn)

    # ------------------------------------------------------------------ rules

    def add_rule(self, rule: AlertRule) -> AlertRule:
        """Store ``rule`` (its ``id`` is ignored) and return it with the new id."""
        with errors_named(self.path), self._rule_transaction():
            cursor = self._conn.execute(
                f"INSERT INTO alert_rules ({rows.INSERT_RULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows.rule_row(rule, self._now_ms()))
            self._conn.execute(rows.BUMP_RULES_VERSION)
        return replace(rule, id=cursor.lastrowid)

    def ensure_rule(self, rule: AlertRule) -> tuple[AlertRule, bool]:
        """The stored rule equal to ``rule`` (ignoring id and enabled), adding it if there is none.

        Returns (rule with its id, True if it was added). Lets a recorder restarted with the same
        ``--alert`` flags keep one rule instead of piling up copies; a disabled copy is re-enabled.
        The check and the insert are one write transaction: two sessions adding the same rule at once
        store it once (the second waits for the first's lock, then finds its rule).
        """
        with errors_named(self.path), transaction(self._conn):
            self._ensuring = True
            try:
                return rows.ensure_rule(self, rule)
            finally:
                self._ensuring = False

    def rules(self, enabled_only: bool = False) -> list[AlertRule]:
        """Stored rules in creation order; only enabled ones if ``enabled_only``."""
        with errors_named(self.path):
            return [rows.rule_from_row(row) for row in self._conn.execute(rows.select_rules(enabled_only))]

    def rename_symbols(self, rename: Callable[[str], str]) -> int:
        """Every rule's legs and the history's pairs renamed to ``rename(leg)``, in one transaction;
        rows changed (a database written before leg names)."""
        with errors_named(self.path), transaction(self._conn):
            return rows.rename_alert_symbols(self._conn.execute, rename)

    def set_enabled(self, rule_id: int, enabled: bool) -> bool:
        """Enable or disable a rule; False if no rule has that id."""
        with errors_named(self.path), self._rule_transaction():
            changed = self._conn.execute(rows.SET_RULE_ENABLED, (int(enabled), rule_id)).rowcount
            if changed:
                self._conn.execute(rows.BUMP_RULES_VERSION)
        return changed > 0

    def delete_rule(self, rule_id: int) -> bool:
        """Delete a rule (its past alerts stay in the history); False if no rule has that id."""
        with errors_named(self.path), transaction(self._conn):
            changed = self._conn.execute(rows.DELETE_RULE, (rule_id,)).rowcount
            if changed:
                self._conn.execute(rows.BUMP_RULES_VERSION)
        return changed > 0

    def rules_version(self) -> int:
        """A counter bumped in the same transaction as every rule change, by any connection.

        One primary-key read, cheap enough to poll on every bar: the engine reloads its rules
        when the number differs from the one it saw last. (``PRAGMA data_version`` would also
        see other connections' commits, but it changes on every alert insert too and never on
        this connection's own changes.)
        """
        with errors_named(self.path):
            return self._conn.execute(rows.SELECT_RULES_VERSION).fetchone()[0]

    def claim_rule(self, rule_id: int) -> bool:
        """Always True: an SQLite site has one writer, and only the writer's process evaluates rules."""
        return True

    # ------------------------------------------------------------------ alerts

    def record(self, event: AlertEvent, *, pending: bool = False) -> bool:
        """Persist a fired alert; False if this rule already has an alert at this ``ts_ms``.

        That makes re-evaluating the same bars after a restart (or by two engines) idempotent.
        Events of never-stored rules (``rule_id`` None) are always new: SQL's NULLs are distinct.
        ``pending``: stored owing a webhook delivery, due now, in the same statement (so the same
        transaction) as the alert: a crash right after leaves it pending for the next process.
        """
        now = self._now_ms()
        with errors_named(self.path):
            cursor = self._conn.execute(
                f"INSERT OR IGNORE INTO alerts ({rows.INSERT_ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows.alert_row(event, now, pending=pending))
        return cursor.rowcount == 1

    def alerts(self, limit: int = 200, since_ms: int | None = None) -> list[AlertRecord]:
        """Most recent alerts first (by market time), at most ``limit``, with ``ts_ms >= since_ms``."""
        with errors_named(self.path):
            found = self._conn.execute(rows.SELECT_ALERTS, (rows.time_range(since_ms, None)[0], int(limit))).fetchall()
        return [rows.alert_record(row) for row in found]

    # ------------------------------------------------------------------ webhook outbox

    def claim_deliveries(self, limit: int, lease_ms: int) -> list[AlertRecord]:
        """Lease up to ``limit`` due pending alerts, oldest first, for ``lease_ms`` (see the protocol).

        One transaction under SQLite's write lock, so two connections cannot lease the same row.
        """
        now = self._now_ms()
        until = now + int(lease_ms)
        with errors_named(self.path), transaction(self._conn):
            due = self._conn.execute(f"SELECT {rows.ALERT_COLUMNS} FROM alerts a WHERE {rows.DUE_DELIVERIES}",
                                     (now, now, int(limit))).fetchall()
            self._conn.executemany("UPDATE alerts SET lease_until_ms = ? WHERE id = ?",
                                   [(until, row[0]) for row in due])
        return [rows.leased(rows.alert_record(row), until) for row in due]

    def mark_delivered(self, record: AlertRecord) -> bool:
        """Count the successful attempt and set ``delivered`` (see the protocol)."""
        now = self._now_ms()
        with errors_named(self.path):
            return self._conn.execute(rows.MARK_DELIVERED, (now, now, record.id, record.delivery.lease_until_ms)
                                      ).rowcount == 1

    def mark_failed(self, record: AlertRecord, error: str, retry_at_ms: int | None) -> bool:
        """Count a failed attempt: pending again from ``retry_at_ms``, or ``failed`` for good if None."""
        with errors_named(self.path):
            return self._conn.execute(rows.MARK_FAILED,
                                      rows.failure_row(record, error, retry_at_ms, self._now_ms())).rowcount == 1

