"""SQLite backend: connections, transactions and error mapping, and the tick store.

One connection per store object, used from one thread only (sqlite3's ``check_same_thread``
enforces it): the writer thread owns one, every reader opens its own. WAL lets readers run while
the writer commits; ``busy_timeout`` covers the short exclusive moments (checkpoints, schema
creation). Every statement is parameterised. Schemas are versioned by ``PRAGMA user_version``
and migrated by :func:`connect`; sqlite3's exceptions never leave this package: :func:`translated`
turns them into :mod:`storage.errors` types that name the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np

from records import BarArrays, EventKind, FeedEvent, TickArrays, Trade
from storage.errors import (
    RowRejected,
    SchemaError,
    StorageCorrupt,
    StorageError,
    StorageLocationError,
    StorageUnavailable,
)

SQLITE_MAGIC = b"SQLite format 3\x00"
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
    # Bars loaded from the exchange (klines) or generated as a simulated market's past; tick-built
    # bars are derived from `ticks` on read and win over these where the recorder saw the whole bar.
    2: """
        CREATE TABLE IF NOT EXISTS bars (
            symbol TEXT NOT NULL,
            interval_ms INTEGER NOT NULL,
            start_ms INTEGER NOT NULL,
            open REAL NOT NULL,
            high REAL NOT NULL,
            low REAL NOT NULL,
            close REAL NOT NULL,
            volume REAL NOT NULL,
            trades INTEGER NOT NULL,
            vwap REAL NOT NULL,
            PRIMARY KEY (symbol, interval_ms, start_ms)
        ) WITHOUT ROWID;
    """,
}
SCHEMA_VERSION = max(_MIGRATIONS)
TICK_COLUMNS = ("symbol", "trade_id", "ts_ms", "price", "qty", "buyer_is_maker", "recv_ms")

_INSERT_TICK = (
    "INSERT OR IGNORE INTO ticks (symbol, trade_id, ts_ms, price, qty, buyer_is_maker, recv_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT = "INSERT INTO feed_events (ts_ms, kind, symbol, detail) VALUES (?, ?, ?, ?)"
# A closed bar's kline is final, so a reload may replace it; the row stays one per (symbol, interval, start).
_UPSERT_BAR = (
    "INSERT OR REPLACE INTO bars (symbol, interval_ms, start_ms, open, high, low, close, volume, trades, vwap) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MIN_MS, _MAX_MS = -(2**62), 2**62
_D = TypeVar("_D", bound="SqliteDatabase")
# A value the database cannot take. OverflowError is the one Python-side binding failure (an int
# beyond 64 bits); kept narrow so that a caller's own ValueError inside a transaction is never
# mistaken for a rejected row. Other unbindable values raise a ProgrammingError "Error binding
# parameter", which is a bad row too; any other ProgrammingError (a connection used from the
# wrong thread or after close) is a bug and must not be counted as a rejected row.
_REJECTED = (OverflowError, sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.DataError)
_BINDING_MESSAGES = ("Error binding parameter", "Incorrect number of bindings")


def translated(exc: BaseException, path: Path) -> StorageError:
    """The :mod:`storage.errors` exception for a sqlite3 (or binding) error on the file ``path``."""
    where = f"database {str(path)!r}"
    if isinstance(exc, _REJECTED) or (
            isinstance(exc, sqlite3.ProgrammingError) and str(exc).startswith(_BINDING_MESSAGES)):
        return RowRejected(f"{where} refused a value: {exc}")
    if isinstance(exc, sqlite3.ProgrammingError):
        return StorageError(f"{where}: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        # Locked by another connection, disk full, I/O error, read-only file: conditions that can
        # clear up, so the caller keeps its data and retries.
        return StorageUnavailable(f"cannot write to {where}: {exc}")
    if isinstance(exc, sqlite3.DatabaseError):  # "database disk image is malformed", "file is not a database"
        return StorageCorrupt(f"{where} is damaged or not a database: {exc}")
    return StorageError(f"{where}: {exc}")


@contextmanager
def errors_named(path: Path) -> Iterator[None]:
    """Re-raise sqlite3 and binding errors inside the block as :mod:`storage.errors` types naming ``path``."""
    try:
        yield
    except (sqlite3.Error, OverflowError) as exc:
        raise translated(exc, path) from exc


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error (connections here autocommit).

    IMMEDIATE takes the write lock up front, where ``busy_timeout`` applies, instead of failing
    half-way when a deferred transaction upgrades to a writer.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# Resolved paths of the SQLite files this process has connections to, with their count. POSIX
# record locks belong to a process and closing ANY descriptor of a file drops all of them, so
# merely reading a database's header with open()/close() while a connection is open would strip
# that connection's locks: another process could then checkpoint and delete a WAL still in use.
_OPEN_FILES: Counter[str] = Counter()
_OPEN_FILES_LOCK = threading.Lock()


def _opened(path: Path, delta: int) -> None:
    key = str(path.resolve())
    with _OPEN_FILES_LOCK:
        _OPEN_FILES[key] += delta
        if _OPEN_FILES[key] <= 0:
            del _OPEN_FILES[key]


def read_head(path: Path, size: int) -> bytes | None:
    """The first ``size`` bytes of ``path``; None if this process has it open as a database (see above)."""
    with _OPEN_FILES_LOCK:
        if str(path.resolve()) in _OPEN_FILES:
            return None
        with path.open("rb") as fh:
            return fh.read(size)


def check_location(path: Path) -> None:
    """Raise :class:`StorageLocationError` unless ``path`` can be (or already is) an SQLite file.

    Refused: a directory; a path whose folder does not exist; an existing non-empty file that does
    not start with the SQLite header; anything that is not a regular file (a FIFO, a device).
    """
    shown = str(path)
    if path.is_dir():
        raise StorageLocationError(f"{shown!r} is a directory, not a database file")
    if not path.parent.is_dir():
        raise StorageLocationError(f"{shown!r}: folder {str(path.parent)!r} does not exist")
    if not path.exists():
        return
    if not path.is_file():
        raise StorageLocationError(f"{shown!r} is not a regular file")
    try:
        head = read_head(path, len(SQLITE_MAGIC))
    except OSError as exc:
        raise StorageLocationError(f"{shown!r} cannot be read: {exc.strerror or exc}") from None
    if head and head != SQLITE_MAGIC:  # None: open here already, so it was checked when first opened
        raise StorageLocationError(f"{shown!r} is not an SQLite database (it has no SQLite header)")


def connect(path: Path, migrations: dict[int, str], *, busy_timeout_ms: int = 5_000, kind: str = "project",
            tables: frozenset[str] = frozenset()) -> sqlite3.Connection:
    """Open ``path`` in WAL mode and bring its schema to the latest of ``migrations``.

    Used through :class:`SqliteDatabase`, whose ``close`` ends the registration made here.

    ``migrations`` maps each schema version to the SQL script that produces it from the one
    before; the version is kept in ``PRAGMA user_version``. Autocommit mode: callers use
    :func:`transaction` so a batch is exactly one transaction. The folder must exist (see
    :func:`check_location`); errors come out as :mod:`storage.errors` types.
    """
    check_location(path)
    _opened(path, +1)  # before the connection takes any lock; undone by SqliteDatabase.close
    try:
        with errors_named(path):
            conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                conn.execute("PRAGMA journal_mode = WAL")
                # NORMAL in WAL mode: a crash may lose the last commits but never corrupts the file.
                conn.execute("PRAGMA synchronous = NORMAL")
                _migrate(conn, path, migrations, kind, tables)
            except BaseException:
                conn.close()
                raise
    except BaseException:
        _opened(path, -1)
        raise
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open an existing ``path`` read-only: no schema changes, no journal-mode switch, nothing written."""
    check_location(path)
    if not path.exists():
        raise StorageLocationError(f"{str(path)!r} does not exist")
    _opened(path, +1)
    try:
        with errors_named(path):
            return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
    except BaseException:
        _opened(path, -1)
        raise


def _migrate(conn: sqlite3.Connection, path: Path, migrations: dict[int, str], kind: str,
             tables: frozenset[str]) -> None:
    """Run the missing migrations; refuse a newer schema, and a file that holds another store's tables.

    Every store versions its schema in ``PRAGMA user_version`` (one number per file), so two
    stores cannot share a file: a database with a schema but none of ``tables`` belongs to another.
    """
    latest = max(migrations)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = tables - present
    if version > 0 and tables and not tables & present:  # none of ours: another store's file
        raise SchemaError(f"{path}: not {kind} database (no {', '.join(sorted(missing))}); "
                          "each store needs a file of its own")
    if version > latest:
        raise SchemaError(f"{path}: schema version {version} is newer than {latest}")
    for target in range(version + 1, latest + 1):
        with transaction(conn):
            # Re-check under the write lock: another process may have migrated meanwhile.
            if conn.execute("PRAGMA user_version").fetchone()[0] < target:
                for statement in filter(str.strip, migrations[target].split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`StorageCorrupt` naming the file and SQLite's first finding unless the file is sound.

    ``PRAGMA quick_check`` reads every page (O(file size), about a second per few hundred MB) but
    skips the index-content cross-check of ``integrity_check``; run it once, when a writer opens.
    """
    with errors_named(path):
        findings = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    if findings != ["ok"]:
        lines = [line for finding in findings for line in finding.splitlines() if not line.startswith("***")]
        raise StorageCorrupt(f"database {str(path)!r} is damaged ({'; '.join(lines)})")


class SqliteDatabase:
    """One connection to one SQLite file with its schema migrated; the base of every SQLite store.

    Not thread-safe: one instance per thread. Use as a context manager or call :meth:`close`.
    """

    MIGRATIONS: ClassVar[dict[int, str]] = {}
    KIND: ClassVar[str] = "a project"  # "a tick", "an alerts", ...: names the file in messages
    TABLES: ClassVar[frozenset[str]] = frozenset()  # tables the file must have once it has a schema

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5_000, readonly: bool = False) -> None:
        self.path = Path(path)
        self.location = str(self.path)  # what messages and status lines call this database
        if readonly:
            self._conn = connect_readonly(self.path)
        else:
            self._conn = connect(self.path, self.MIGRATIONS, busy_timeout_ms=busy_timeout_ms,
                                 kind=self.KIND, tables=self.TABLES)
        self._closed = False

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def verify(self) -> None:
        """Raise :class:`StorageCorrupt` if the file is damaged (see :func:`quick_check`)."""
        quick_check(self._conn, self.path)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()
            _opened(self.path, -1)

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteTickStore(SqliteDatabase):
    """Ticks and feed events in one SQLite file; implements :class:`storage.base.TickStore`.

    ``readonly``: open a file this program (any version) wrote, without changing it, e.g. to
    replay it; its ``ticks`` table must have the columns of :data:`TICK_COLUMNS`.
    """

    MIGRATIONS = _MIGRATIONS
    KIND = "a tick"
    TABLES = frozenset({"ticks", "feed_events", "bars"})

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5_000, readonly: bool = False) -> None:
        super().__init__(path, busy_timeout_ms=busy_timeout_ms, readonly=readonly)
        if readonly:
            try:
                with errors_named(self.path):
                    columns = {row[1] for row in self._conn.execute("PRAGMA table_info(ticks)")}
                if not columns:
                    raise SchemaError(f"{self.location}: SQLite database has no 'ticks' table")
                missing = [c for c in TICK_COLUMNS if c not in columns]
                if missing:
                    raise SchemaError(f"{self.location}: SQLite table 'ticks' lacks columns {', '.join(missing)}")
            except BaseException:
                self.close()
                raise

    def write_batch(self, trades: Sequence[Trade], events: Sequence[FeedEvent] = ()) -> int:
        """Insert trades (duplicates ignored) and events in ONE transaction; return new tick rows."""
        before = self._conn.total_changes
        with errors_named(self.path), transaction(self._conn):
            self._conn.executemany(
                _INSERT_TICK,
                [(t.symbol, t.trade_id, t.ts_ms, t.price, t.qty, t.buyer_is_maker, t.recv_ms) for t in trades],
            )
            inserted = self._conn.total_changes - before
            if events:
                self._conn.executemany(_INSERT_EVENT, [(e.ts_ms, e.kind.value, e.symbol, e.detail) for e in events])
        return inserted

    def ticks(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> TickArrays:
        """Ticks of one symbol with ``start_ms <= ts_ms < end_ms``, ordered by time then trade id."""
        with errors_named(self.path):
            rows = self._conn.execute(
                "SELECT trade_id, ts_ms, price, qty FROM ticks WHERE symbol = ? AND ts_ms >= ? AND ts_ms < ? "
                "ORDER BY ts_ms, trade_id",
                (symbol, _MIN_MS if start_ms is None else start_ms, _MAX_MS if end_ms is None else end_ms),
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

    def iter_trades(self, symbol: str, chunk_rows: int = 5_000) -> Iterator[Trade]:
        """Every stored trade of ``symbol`` in (ts_ms, trade_id) order, read ``chunk_rows`` at a time.

        Walks the ``(symbol, ts_ms)`` index, so memory stays O(chunk) however large the table is.
        ``recv_ms`` equals ``ts_ms``: the original receive time is not part of a replay.
        """
        with errors_named(self.path):
            cursor = self._conn.execute(
                "SELECT trade_id, ts_ms, price, qty, buyer_is_maker FROM ticks WHERE symbol = ? "
                "ORDER BY ts_ms, trade_id",
                (symbol,),
            )
            while batch := cursor.fetchmany(chunk_rows):
                for trade_id, ts_ms, price, qty, maker in batch:
                    yield Trade(symbol, trade_id, ts_ms, ts_ms, price, qty, bool(maker))

    def write_bars(self, symbol: str, interval_ms: int, bars: BarArrays) -> int:
        """Store closed bars of ``symbol`` at ``interval_ms`` in ONE transaction (a bar already
        stored for the same start is replaced); return the rows written."""
        rows = list(zip([symbol] * len(bars), [int(interval_ms)] * len(bars), bars.start_ms.tolist(),
                        bars.open.tolist(), bars.high.tolist(), bars.low.tolist(), bars.close.tolist(),
                        bars.volume.tolist(), bars.trades.tolist(), bars.vwap.tolist(), strict=True))
        with errors_named(self.path), transaction(self._conn):
            self._conn.executemany(_UPSERT_BAR, rows)
        return len(rows)

    def bars(self, symbol: str, interval_ms: int, start_ms: int | None = None,
             end_ms: int | None = None) -> BarArrays:
        """Stored bars of ``symbol`` at ``interval_ms`` with ``start_ms <= start < end_ms``, by start."""
        with errors_named(self.path):
            rows = self._conn.execute(
                "SELECT start_ms, open, high, low, close, volume, trades, vwap FROM bars "
                "WHERE symbol = ? AND interval_ms = ? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms",
                (symbol, int(interval_ms), _MIN_MS if start_ms is None else start_ms,
                 _MAX_MS if end_ms is None else end_ms),
            ).fetchall()
        if not rows:
            return BarArrays.empty()
        start, *values, trades, vwap = zip(*rows, strict=True)
        return BarArrays(np.array(start, dtype=np.int64), *(np.array(v, dtype=np.float64) for v in values),
                         np.array(trades, dtype=np.int64), np.array(vwap, dtype=np.float64))

    def bar_span(self, symbol: str, interval_ms: int) -> tuple[int, int] | None:
        """(first, last) bar start stored for ``symbol`` at ``interval_ms``, UTC epoch ms; None if none."""
        with errors_named(self.path):
            first, last = self._conn.execute(
                "SELECT MIN(start_ms), MAX(start_ms) FROM bars WHERE symbol = ? AND interval_ms = ?",
                (symbol, int(interval_ms)),
            ).fetchone()
        return None if first is None else (first, last)

    def tick_count(self, symbol: str | None = None) -> int:
        with errors_named(self.path):
            if symbol is None:
                return self._conn.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
            return self._conn.execute("SELECT COUNT(*) FROM ticks WHERE symbol = ?", (symbol,)).fetchone()[0]

    def symbols(self) -> list[str]:
        with errors_named(self.path):
            return [r[0] for r in self._conn.execute("SELECT DISTINCT symbol FROM ticks ORDER BY symbol")]

    def last_trade_ids(self) -> dict[str, int]:
        """Highest stored trade id per symbol: where a restarted feed should continue."""
        with errors_named(self.path):
            return dict(self._conn.execute("SELECT symbol, MAX(trade_id) FROM ticks GROUP BY symbol").fetchall())

    def feed_events(
        self, *, since_ms: int | None = None, kinds: Iterable[EventKind] | None = None, limit: int = 500
    ) -> list[FeedEvent]:
        """Most recent feed events first."""
        sql = "SELECT ts_ms, kind, symbol, detail FROM feed_events WHERE ts_ms >= ?"
        params: list[object] = [_MIN_MS if since_ms is None else since_ms]
        if kinds is not None:
            kind_values = [k.value for k in kinds]
            sql += f" AND kind IN ({', '.join('?' * len(kind_values))})"
            params.extend(kind_values)
        sql += " ORDER BY ts_ms DESC, rowid DESC LIMIT ?"
        params.append(int(limit))
        with errors_named(self.path):
            rows = self._conn.execute(sql, params).fetchall()
        return [FeedEvent(ts, EventKind(kind), sym, detail) for ts, kind, sym, detail in rows]

    def prune(self, before_ms: int) -> int:
        """Delete ticks, bars and feed events older than ``before_ms``; return the ticks deleted."""
        before = self._conn.total_changes
        symbols = self.symbols()
        with errors_named(self.path), transaction(self._conn):
            # Per symbol so each DELETE walks the (symbol, ts_ms) index instead of the whole table.
            for symbol in symbols:
                self._conn.execute("DELETE FROM ticks WHERE symbol = ? AND ts_ms < ?", (symbol, before_ms))
            deleted = self._conn.total_changes - before
            self._conn.execute("DELETE FROM feed_events WHERE ts_ms < ?", (before_ms,))
            self._conn.execute("DELETE FROM bars WHERE start_ms < ?", (before_ms,))
        return deleted

    def integrity_check(self) -> str:
        with errors_named(self.path):
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0]
