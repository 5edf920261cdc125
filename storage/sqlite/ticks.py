"""SQLite tick store: ticks, feed events and bars of one source in one file.

Connections, errors and migrations: :mod:`storage.sqlite.db`; rows become records through
:mod:`storage.rows`, as in every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from records import BarArrays, EventKind, FeedEvent, FundingRate, TickArrays, Trade
from storage import rows
from storage.errors import SchemaError
from storage.rows import BAR_COLUMNS, FUNDING_COLUMNS, TICK_COLUMNS
from storage.sqlite.db import SqliteDatabase, errors_named, transaction

# Migrations indexed by the version they produce; run in order inside one transaction each.
MIGRATIONS: dict[int, str] = {
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
    # Funding history of perpetuals (USDⓈ-M): one row per (symbol, funding time); `mark` NULL where
    # the exchange gave none. `funding_coverage`: the span of each symbol's history fetched whole.
    3: """
        CREATE TABLE IF NOT EXISTS funding (
            symbol TEXT NOT NULL,
            funding_ms INTEGER NOT NULL,
            rate REAL NOT NULL,
            mark REAL,
            PRIMARY KEY (symbol, funding_ms)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS funding_coverage (
            symbol TEXT PRIMARY KEY,
            first_ms INTEGER NOT NULL,
            last_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)

_INSERT_TICK = f"INSERT OR IGNORE INTO ticks ({', '.join(TICK_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_EVENT = "INSERT INTO feed_events (ts_ms, kind, symbol, detail) VALUES (?, ?, ?, ?)"
# A closed bar's kline is final, so a reload may replace it; the row stays one per (symbol, interval, start).
_UPSERT_BAR = f"INSERT OR REPLACE INTO bars ({', '.join(BAR_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_FUNDING = f"INSERT OR IGNORE INTO funding ({', '.join(FUNDING_COLUMNS)}) VALUES (?, ?, ?, ?)"
_UPSERT_COVERAGE = "INSERT OR REPLACE INTO funding_coverage (symbol, first_ms, last_ms) VALUES (?, ?, ?)"


class SqliteTickStore(SqliteDatabase):
    """Ticks and feed events in one SQLite file; implements :class:`storage.base.TickStore`.

    ``readonly``: open a file this program (any version) wrote, without changing it, e.g. to
    replay it; its ``ticks`` table must have the columns of :data:`TICK_COLUMNS`.
    """

    COMPONENT = "ticks"
    MIGRATIONS = MIGRATIONS
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
                self._conn.executemany(_INSERT_EVENT, [rows.event_row(e) for e in events])
        return inserted

    def ticks(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> TickArrays:
        """Ticks of one symbol with ``start_ms <= ts_ms < end_ms``, ordered by time then trade id."""
        with errors_named(self.path):
            found = self._conn.execute(rows.SELECT_TICKS, (symbol, *rows.time_range(start_ms, end_ms))).fetchall()
        return rows.tick_arrays(found)

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
                yield from rows.replay_trades(symbol, batch)

    def write_bars(self, symbol: str, interval_ms: int, bars: BarArrays) -> int:
        """Store closed bars of ``symbol`` at ``interval_ms`` in ONE transaction (a bar already
        stored for the same start is replaced); return the rows written."""
        upserts = rows.bar_rows(symbol, interval_ms, bars)
        with errors_named(self.path), transaction(self._conn):
            self._conn.executemany(_UPSERT_BAR, upserts)
        return len(upserts)

    def bars(self, symbol: str, interval_ms: int, start_ms: int | None = None,
             end_ms: int | None = None) -> BarArrays:
        """Stored bars of ``symbol`` at ``interval_ms`` with ``start_ms <= start < end_ms``, by start."""
        with errors_named(self.path):
            found = self._conn.execute(rows.SELECT_BARS, (symbol, int(interval_ms),
                                                          *rows.time_range(start_ms, end_ms))).fetchall()
        return rows.bar_arrays(found)

    def bar_span(self, symbol: str, interval_ms: int) -> tuple[int, int] | None:
        """(first, last) bar start stored for ``symbol`` at ``interval_ms``, UTC epoch ms; None if none."""
        with errors_named(self.path):
            first, last = self._conn.execute(rows.SELECT_BAR_SPAN, (symbol, int(interval_ms))).fetchone()
        return None if first is None else (first, last)

    def write_funding(self, symbol: str, rates: Sequence[FundingRate], first_ms: int, last_ms: int) -> int:
        """Store funding events of ``symbol`` fetched for ``[first_ms, last_ms]`` (see
        :meth:`storage.base.TickStore.write_funding`); return the new rows."""
        before = self._conn.total_changes
        with errors_named(self.path), transaction(self._conn):
            self._conn.executemany(_INSERT_FUNDING, [rows.funding_row(rate) for rate in rates])
            inserted = self._conn.total_changes - before
            stored = self._conn.execute(rows.SELECT_FUNDING_COVERAGE, (symbol,)).fetchone()
            self._conn.execute(_UPSERT_COVERAGE, (symbol, *rows.widened(stored, first_ms, last_ms)))
        return inserted

    def funding(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> list[FundingRate]:
        """Stored funding events of ``symbol`` with ``start_ms <= funding_ms < end_ms``, by time."""
        with errors_named(self.path):
            found = self._conn.execute(rows.SELECT_FUNDING, (symbol, *rows.time_range(start_ms, end_ms))).fetchall()
        return rows.funding_rates(found)

    def funding_coverage(self, symbol: str) -> tuple[int, int] | None:
        """The span of ``symbol``'s funding history fetched whole, UTC epoch ms inclusive; None if none."""
        with errors_named(self.path):
            found = self._conn.execute(rows.SELECT_FUNDING_COVERAGE, (symbol,)).fetchone()
        return None if found is None else (found[0], found[1])

    def tick_count(self, symbol: str | None = None) -> int:
        with errors_named(self.path):
            if symbol is None:
                return self._conn.execute(rows.COUNT_TICKS).fetchone()[0]
            return self._conn.execute(rows.COUNT_SYMBOL_TICKS, (symbol,)).fetchone()[0]

    def symbols(self) -> list[str]:
        with errors_named(self.path):
            return [r[0] for r in self._conn.execute("SELECT DISTINCT symbol FROM ticks ORDER BY symbol")]

    def rename_symbols(self, rename: Callable[[str], str]) -> int:
        """Every stored symbol of ticks, bars and feed events renamed to ``rename(symbol)``, in one
        transaction; the number of symbols renamed (a database written before leg names)."""
        with errors_named(self.path), transaction(self._conn):
            return rows.rename_tick_symbols(self._conn.execute, rename)

    def last_trade_ids(self) -> dict[str, int]:
        """Highest stored trade id per symbol: where a restarted feed should continue."""
        with errors_named(self.path):
            return dict(self._conn.execute("SELECT symbol, MAX(trade_id) FROM ticks GROUP BY symbol").fetchall())

    def feed_events(
        self, *, since_ms: int | None = None, kinds: Iterable[EventKind] | None = None, limit: int = 500
    ) -> list[FeedEvent]:
        """Most recent feed events first."""
        sql = rows.SELECT_EVENTS
        params: list[object] = [rows.MIN_MS if since_ms is None else since_ms]
        if kinds is not None:
            kind_values = [k.value for k in kinds]
            sql += f" AND kind IN ({', '.join('?' * len(kind_values))})"
            params.extend(kind_values)
        sql += " ORDER BY ts_ms DESC, rowid DESC LIMIT ?"
        params.append(int(limit))
        with errors_named(self.path):
            return rows.feed_events(self._conn.execute(sql, params).fetchall())

    def prune(self, before_ms: int) -> int:
        """Delete ticks, bars, funding events and feed events older than ``before_ms``; return the ticks
        deleted. A funding span keeps only what is left of it."""
        before = self._conn.total_changes
        symbols = self.symbols()
        with errors_named(self.path), transaction(self._conn):
            # Per symbol so each DELETE walks the (symbol, ts_ms) index instead of the whole table.
            for symbol in symbols:
                self._conn.execute(rows.PRUNE_SYMBOL_TICKS, (symbol, before_ms))
            deleted = self._conn.total_changes - before
            self._conn.execute(rows.PRUNE_EVENTS, (before_ms,))
            self._conn.execute(rows.PRUNE_BARS, (before_ms,))
            self._conn.execute(rows.PRUNE_FUNDING, (before_ms,))
            self._conn.execute(rows.PRUNE_FUNDING_COVERAGE, (before_ms,))
            self._conn.execute(rows.TRIM_FUNDING_COVERAGE, (before_ms, before_ms))
        return deleted

    def integrity_check(self) -> str:
        with errors_named(self.path):
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0]
