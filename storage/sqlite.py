"""SQLite tick store: WAL, idempotent inserts, schema versioned by ``PRAGMA user_version``.

One :class:`SqliteStore` wraps one connection and must be used from one thread only (sqlite3's
``check_same_thread`` enforces it): the writer thread owns one, every reader opens its own.
WAL lets readers run while the writer commits; ``busy_timeout`` covers the short exclusive
moments (checkpoints, schema creation). Every statement is parameterised.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ingestion.records import EventKind, FeedEvent, Trade
from storage.base import TickArrays

# Migrations indexed by the version they produce; run in order inside one transaction each.
_MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE IF NOT EXISTS ticks (
            symbol TEXT NOT NULL,
            trade_id INTEGER NOT NULL,
            ts_ms INTEGER NOT NULL,
            price REAL NOT NULL,
            qty REAL NOT NULL,
            buyer_is_maker INTEGER NOT NULL,
            recv_ms INTEGER NOT NULL,
            PRIMARY KEY (symbol, trade_id)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS ticks_symbol_ts ON ticks (symbol, ts_ms);
        CREATE TABLE IF NOT EXISTS feed_events (
            ts_ms INTEGER NOT NULL,
            kind TEXT NOT NULL,
            symbol TEXT,
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX IF NOT EXISTS feed_events_ts ON feed_events (ts_ms);
    """,
}
SCHEMA_VERSION = max(_MIGRATIONS)

_INSERT_TICK = (
    "INSERT OR IGNORE INTO ticks (symbol, trade_id, ts_ms, price, qty, buyer_is_maker, recv_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT = "INSERT INTO feed_events (ts_ms, kind, symbol, detail) VALUES (?, ?, ?, ?)"


class SchemaError(RuntimeError):
    """The database was written by a newer version of this program."""


def connect(path: Path, migrations: dict[int, str], *, busy_timeout_ms: int = 5_000) -> sqlite3.Connection:
    """Open ``path`` in WAL mode and bring its schema to the latest of ``migrations``.

    ``migrations`` maps each schema version to the SQL script that produces it from the one
    before; the version is kept in ``PRAGMA user_version``. Autocommit mode: callers issue
    BEGIN/COMMIT themselves so a batch is exactly one transaction.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a crash may lose the last commits but never corrupts the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    latest = max(migrations)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > latest:
        conn.close()
        raise SchemaError(f"{path}: schema version {version} is newer than {latest}")
    for target in range(version + 1, latest + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check under the write lock: another process may have migrated meanwhile.
            if conn.execute("PRAGMA user_version").fetchone()[0] < target:
                for statement in filter(str.strip, migrations[target].split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
    return conn


class SqliteStore:
    """Ticks and feed events in one SQLite file. Not thread-safe: one instance per thread."""

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5_000) -> None:
        self.path = Path(path)
        self._conn = connect(self.path, _MIGRATIONS, busy_timeout_ms=busy_timeout_ms)

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def write_batch(self, trades: Sequence[Trade], events: Sequence[FeedEvent] = ()) -> int:
        """Insert trades (duplicates ignored) and events in ONE transaction; return new tick rows."""
        before = self._conn.total_changes
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                _INSERT_TICK,
                [(t.symbol, t.trade_id, t.ts_ms, t.price, t.qty, t.buyer_is_maker, t.recv_ms) for t in trades],
            )
            inserted = self._conn.total_changes - before
            if events:
                self._conn.executemany(
                    _INSERT_EVENT, [(e.ts_ms, e.kind.value, e.symbol, e.detail) for e in events]
                )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return inserted

    def ticks(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> TickArrays:
        """Ticks of one symbol with ``start_ms <= ts_ms < end_ms``, ordered by time then trade id."""
        rows = self._conn.execute(
            "SELECT trade_id, ts_ms, price, qty FROM ticks WHERE symbol = ? AND ts_ms >= ? AND ts_ms < ? "
            "ORDER BY ts_ms, trade_id",
            (symbol, start_ms if start_ms is not None else -(2**62), end_ms if end_ms is not None else 2**62),
        ).fetchall()
        if not rows:
            return TickArrays.empty()
        trade_id, ts_ms, price, qty = zip(*rows, strict=True)
        return TickArrays(
            trade_id=np.array(trade_id, dtype=np.int64),
            ts_ms=np.array(ts_ms, dtype=np.int64),
            price=np.array(price, dtype=np.float64),
            qty=np.array(qty, dtype=np.float64),
        )

    def tick_count(self, symbol: str | None = None) -> int:
        if symbol is None:
            return self._conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM ticks WHERE symbol = ?", (symbol,)).fetchone()[0]

    def symbols(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT symbol FROM ticks ORDER BY symbol")]

    def last_trade_ids(self) -> dict[str, int]:
        """Highest stored trade id per symbol: where a restarted feed should continue."""
        return dict(self._conn.execute("SELECT symbol, MAX(trade_id) FROM ticks GROUP BY symbol").fetchall())

    def time_range(self, symbol: str) -> tuple[int, int] | None:
        """(first, last) ``ts_ms`` stored for a symbol, or None if it has no ticks."""
        first, last = self._conn.execute(
            "SELECT MIN(ts_ms), MAX(ts_ms) FROM ticks WHERE symbol = ?", (symbol,)
        ).fetchone()
        return None if first is None else (first, last)

    def feed_events(
        self, *, since_ms: int | None = None, kinds: Iterable[EventKind] | None = None, limit: int = 500
    ) -> list[FeedEvent]:
        """Most recent feed events first."""
        sql = "SELECT ts_ms, kind, symbol, detail FROM feed_events WHERE ts_ms >= ?"
        params: list[object] = [since_ms if since_ms is not None else -(2**62)]
        if kinds is not None:
            kind_values = [k.value for k in kinds]
            sql += f" AND kind IN ({', '.join('?' * len(kind_values))})"
            params.extend(kind_values)
        sql += " ORDER BY ts_ms DESC, rowid DESC LIMIT ?"
        params.append(int(limit))
        return [FeedEvent(ts, EventKind(kind), sym, detail) for ts, kind, sym, detail in
                self._conn.execute(sql, params)]

    def prune(self, before_ms: int) -> int:
        """Delete ticks and feed events older than ``before_ms``; return the ticks deleted."""
        before = self._conn.total_changes
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            # Per symbol so each DELETE walks the (symbol, ts_ms) index instead of the whole table.
            for symbol in self.symbols():
                self._conn.execute("DELETE FROM ticks WHERE symbol = ? AND ts_ms < ?", (symbol, before_ms))
            deleted = self._conn.total_changes - before
            self._conn.execute("DELETE FROM feed_events WHERE ts_ms < ?", (before_ms,))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return deleted

    def integrity_check(self) -> str:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
