"""PostgreSQL tick store: ticks, feed events and bars of one site in its schema.

Ticks go in by ``COPY`` into a temporary staging table, then ``INSERT … SELECT … ON CONFLICT DO
NOTHING`` in one transaction, ordered by key so that two recorders inserting overlapping trades
lock them in the same order (no deadlock): a trade is stored once however many recorders see it.
Retention runs in the one process holding the schema's retention lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from psycopg import sql

from records import BarArrays, EventKind, FeedEvent, FundingRate, TickArrays, Trade
from storage import rows
from storage.errors import SchemaError
from storage.postgres.db import PostgresDatabase, lock_key, one_row, pyformat
from storage.rows import BAR_COLUMNS, FUNDING_COLUMNS, TICK_COLUMNS

# Migrations of the tick component, indexed by the version they produce (one transaction each).
# Bars as in SQLite: klines or a simulated past; tick-built bars are derived from `ticks` on read.
# `writers`: who writes the schema now (see PostgresWriterClaim); a row counts only while its
# session holds the schema's writer lock, so a crashed writer's row is ignored, then replaced.
MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE ticks (
            symbol text NOT NULL,
            trade_id bigint NOT NULL,
            ts_ms bigint NOT NULL,
            price double precision NOT NULL,
            qty double precision NOT NULL,
            buyer_is_maker boolean NOT NULL,
            recv_ms bigint NOT NULL,
            PRIMARY KEY (symbol, trade_id)
        );
        CREATE INDEX ticks_symbol_ts ON ticks (symbol, ts_ms);
        CREATE TABLE feed_events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            ts_ms bigint NOT NULL,
            kind text NOT NULL,
            symbol text,
            detail text NOT NULL DEFAULT ''
        );
        CREATE INDEX feed_events_ts ON feed_events (ts_ms);
        CREATE TABLE bars (
            symbol text NOT NULL,
            interval_ms bigint NOT NULL,
            start_ms bigint NOT NULL,
            open double precision NOT NULL,
            high double precision NOT NULL,
            low double precision NOT NULL,
            close double precision NOT NULL,
            volume double precision NOT NULL,
            trades bigint NOT NULL,
            vwap double precision NOT NULL,
            PRIMARY KEY (symbol, interval_ms, start_ms)
        );
        CREATE TABLE writers (
            backend_pid integer PRIMARY KEY,
            pid integer NOT NULL,
            host text NOT NULL,
            label text NOT NULL,
            symbols text[] NOT NULL,
            started_ms bigint NOT NULL,
            exclusive boolean NOT NULL
        )
    """,
    # Funding history of perpetuals, as in SQLite (storage.sqlite.ticks, version 3).
    2: """
        CREATE TABLE funding (
            symbol text NOT NULL,
            funding_ms bigint NOT NULL,
            rate double precision NOT NULL,
            mark double precision,
            PRIMARY KEY (symbol, funding_ms)
        );
        CREATE TABLE funding_coverage (
            symbol text PRIMARY KEY,
            first_ms bigint NOT NULL,
            last_ms bigint NOT NULL
        )
    """,
}
# Created once per connection, private to it. Emptied by each batch's own transaction (TRUNCATE,
# not DELETE: the server never vacuums temporary tables), and before the next batch if that
# transaction failed, so a retried batch never meets the rows of the attempt that failed.
_CREATE_STAGING = """
    CREATE TEMPORARY TABLE IF NOT EXISTS ticks_staging (
        symbol text, trade_id bigint, ts_ms bigint, price double precision, qty double precision,
        buyer_is_maker boolean, recv_ms bigint
    )
"""
_COPY_STAGING = f"COPY ticks_staging ({', '.join(TICK_COLUMNS)}) FROM STDIN"
# No conflict target: any unique key stops a duplicate, so a DBA may re-key `ticks` (e.g. to add
# ts_ms for a TimescaleDB hypertable) without breaking inserts. ORDER BY: see the module docstring.
_INSERT_FROM_STAGING = (
    f"INSERT INTO ticks ({', '.join(TICK_COLUMNS)}) SELECT {', '.join(TICK_COLUMNS)} FROM ticks_staging "
    "ORDER BY symbol, trade_id ON CONFLICT DO NOTHING"
)
_INSERT_EVENTS = "INSERT INTO feed_events (ts_ms, kind, symbol, detail) VALUES {}"
_UPSERT_BAR = (
    f"INSERT INTO bars ({', '.join(BAR_COLUMNS)}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (symbol, interval_ms, start_ms) DO UPDATE SET "
    "open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, "
    "volume = EXCLUDED.volume, trades = EXCLUDED.trades, vwap = EXCLUDED.vwap"
)
_INSERT_FUNDING = (f"INSERT INTO funding ({', '.join(FUNDING_COLUMNS)}) VALUES (%s, %s, %s, %s) "
                   "ON CONFLICT (symbol, funding_ms) DO NOTHING")
# Two recorders widening one symbol's span take turns instead of losing one widening: the first span
# is inserted if there is none (a second inserting at once waits for it, then finds it), else the row is
# locked (FOR UPDATE, read afresh after any wait) and widened (inserted again if a prune deleted it).
_INSERT_COVERAGE = ("INSERT INTO funding_coverage (symbol, first_ms, last_ms) VALUES (%s, %s, %s) "
                    "ON CONFLICT (symbol) DO NOTHING")
_LOCK_COVERAGE = "SELECT first_ms, last_ms FROM funding_coverage WHERE symbol = %s FOR UPDATE"
_UPSERT_COVERAGE = ("INSERT INTO funding_coverage (symbol, first_ms, last_ms) VALUES (%s, %s, %s) "
                    "ON CONFLICT (symbol) DO UPDATE SET first_ms = EXCLUDED.first_ms, last_ms = EXCLUDED.last_ms")
_SELECT_FUNDING, _SELECT_FUNDING_COVERAGE, _PRUNE_FUNDING, _PRUNE_FUNDING_COVERAGE, _TRIM_FUNDING_COVERAGE = map(
    pyformat, (rows.SELECT_FUNDING, rows.SELECT_FUNDING_COVERAGE, rows.PRUNE_FUNDING, rows.PRUNE_FUNDING_COVERAGE,
               rows.TRIM_FUNDING_COVERAGE))
_SELECT_TICKS, _SELECT_BARS, _SELECT_BAR_SPAN, _COUNT_SYMBOL_TICKS, _SELECT_EVENTS = map(pyformat, (
    rows.SELECT_TICKS, rows.SELECT_BARS, rows.SELECT_BAR_SPAN, rows.COUNT_SYMBOL_TICKS, rows.SELECT_EVENTS))
_PRUNE_SYMBOL_TICKS, _PRUNE_EVENTS, _PRUNE_BARS = map(pyformat, (rows.PRUNE_SYMBOL_TICKS, rows.PRUNE_EVENTS,
                                                               rows.PRUNE_BARS))
# DISTINCT symbol as a loose index scan: one index probe per symbol instead of reading every tick.
_SYMBOLS = """
    WITH RECURSIVE s (symbol) AS (
        (SELECT symbol FROM ticks ORDER BY symbol LIMIT 1)
        UNION ALL
        SELECT (SELECT t.symbol FROM ticks t WHERE t.symbol > s.symbol ORDER BY t.symbol LIMIT 1)
        FROM s WHERE s.symbol IS NOT NULL
    )
    SELECT symbol FROM s WHERE symbol IS NOT NULL
"""

# ------------------------------------------------------------------------------------------------
# Ticks, feed events and bars
# ------------------------------------------------------------------------------------------------


def _copy_text(value: str) -> str:
    """A text value in COPY's text format (symbols and trade data are plain, but never trust that)."""
    if any(c in value for c in "\\\t\n\r"):
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _copy_rows(trades: Sequence[Trade]) -> str:
    """The trades as COPY text rows; repr(float) is the shortest text that reads back as the same double."""
    symbols = {symbol: _copy_text(symbol) for symbol in {t.symbol for t in trades}}
    return "".join([f"{symbols[t.symbol]}\t{t.trade_id}\t{t.ts_ms}\t{t.price!r}\t{t.qty!r}\t"
                    f"{'f' if not t.buyer_is_maker else 't'}\t{t.recv_ms}\n" for t in trades])


class PostgresTickStore(PostgresDatabase):
    """Ticks, feed events and bars of one site in one schema; implements :class:`storage.base.TickStore`."""

    COMPONENT = "ticks"
    MIGRATIONS = MIGRATIONS
    APPLICATION = "quant ticks"

    def _reset_session_state(self) -> None:
        self._staging_ready = False
        self._staging_dirty = False
        self._retention_held = False

    def _holds_session_state(self) -> bool:
        # The retention lock, and the staging table a failed batch may have left rows in (writers only).
        return super()._holds_session_state() or self._retention_held or self._staging_ready

    def verify(self) -> None:
        """Raise :class:`SchemaError` if a table of the schema is missing (the server keeps its own pages sound)."""
        with self.session() as conn:
            missing = [table for table in ("ticks", "feed_events", "bars", "writers", "funding", "funding_coverage")
                       if one_row(conn, "SELECT to_regclass(%s)", (table,))[0] is None]
        if missing:
            raise SchemaError(f"database {self.location!r} lacks tables {', '.join(missing)}")

    def write_batch(self, trades: Sequence[Trade], events: Sequence[FeedEvent] = ()) -> int:
        """Insert trades (duplicates ignored) and events in ONE transaction; return new tick rows.

        Three round trips whatever the batch size: COPY into the staging table (two: the server
        must accept the COPY before the rows go), then one multi-statement query — insert the
        staged trades, insert the events, empty the staging table — which the server runs as one
        transaction. Fewer round trips matter: each one hands the GIL back to a busy source thread,
        and getting it again can take a whole switch interval (5 ms).
        """
        statements: list[sql.Composable] = []
        with self.session() as conn:
            if trades:
                if not self._staging_ready:
                    conn.execute(_CREATE_STAGING)
                    self._staging_ready = True
                if self._staging_dirty:  # the last batch failed after its COPY
                    conn.execute("TRUNCATE ticks_staging")
                    self._staging_dirty = False
                with conn.cursor() as cursor, cursor.copy(_COPY_STAGING) as copy:
                    copy.write(_copy_rows(trades))
                self._staging_dirty = True
                statements.append(sql.SQL(_INSERT_FROM_STAGING))
            if events:
                # Literals, quoted by the driver: a multi-statement query takes no parameters.
                rows = [sql.SQL("({}, {}, {}, {})").format(*map(sql.Literal, (e.ts_ms, e.kind.value, e.symbol,
                                                                                 e.detail))) for e in events]
                statements.append(sql.SQL(_INSERT_EVENTS).format(sql.SQL(", ").join(rows)))
            if trades:
                statements.append(sql.SQL("TRUNCATE ticks_staging"))
            if not statements:
                return 0
            with conn.cursor() as cursor:
                cursor.execute(sql.SQL("; ").join(statements))
                inserted = cursor.rowcount if trades else 0  # the first statement's count
            self._staging_dirty = False
        return inserted

    def ticks(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> TickArrays:
        """Ticks of one symbol with ``start_ms <= ts_ms < end_ms``, ordered by time then trade id."""
        with self.session() as conn, conn.cursor(binary=True) as cursor:
            found = cursor.execute(_SELECT_TICKS, (symbol, *rows.time_range(start_ms, end_ms))).fetchall()
        return rows.tick_arrays(found)

    def iter_trades(self, symbol: str, chunk_rows: int = 5_000) -> Iterator[Trade]:
        """Every stored trade of ``symbol`` in (ts_ms, trade_id) order, ``chunk_rows`` at a time.

        Keyset pages, one query each, so no transaction stays open while the caller paces itself.
        ``recv_ms`` equals ``ts_ms``, as in the SQLite store.
        """
        after = (rows.MIN_MS, rows.MIN_MS)
        while True:
            with self.session() as conn:
                page = conn.execute(
                    "SELECT trade_id, ts_ms, price, qty, buyer_is_maker FROM ticks WHERE symbol = %s "
                    "AND (ts_ms, trade_id) > (%s, %s) ORDER BY ts_ms, trade_id LIMIT %s",
                    (symbol, after[0], after[1], int(chunk_rows)),
                ).fetchall()
            yield from rows.replay_trades(symbol, page)
            if len(page) < chunk_rows:
                return
            after = (page[-1][1], page[-1][0])

    def write_bars(self, symbol: str, interval_ms: int, bars: BarArrays) -> int:
        """Store closed bars of ``symbol`` at ``interval_ms`` in ONE transaction (same start: replaced)."""
        upserts = rows.bar_rows(symbol, interval_ms, bars)
        with self.session() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(_UPSERT_BAR, upserts)
        return len(upserts)

    def bars(self, symbol: str, interval_ms: int, start_ms: int | None = None,
             end_ms: int | None = None) -> BarArrays:
        """Stored bars of ``symbol`` at ``interval_ms`` with ``start_ms <= start < end_ms``, by start."""
        with self.session() as conn:
            found = conn.execute(_SELECT_BARS,
                                 (symbol, int(interval_ms), *rows.time_range(start_ms, end_ms))).fetchall()
        return rows.bar_arrays(found)

    def bar_span(self, symbol: str, interval_ms: int) -> tuple[int, int] | None:
        """(first, last) bar start stored for ``symbol`` at ``interval_ms``, UTC epoch ms; None if none."""
        with self.session() as conn:
            first, last = one_row(conn, _SELECT_BAR_SPAN, (symbol, int(interval_ms)))
        return None if first is None else (first, last)

    def write_funding(self, symbol: str, rates: Sequence[FundingRate], first_ms: int, last_ms: int) -> int:
        """Store funding events of ``symbol`` fetched for ``[first_ms, last_ms]`` (see
        :meth:`storage.base.TickStore.write_funding`); return the new rows."""
        inserted = 0
        with self.session() as conn, conn.transaction():
            with conn.cursor() as cursor:
                for rate in rates:  # a few events per call (three a day per symbol): no COPY needed
                    cursor.execute(_INSERT_FUNDING, rows.funding_row(rate))
                    inserted += cursor.rowcount
            span = rows.widened(None, first_ms, last_ms)  # ValueError for first_ms > last_ms: nothing stored
            if conn.execute(_INSERT_COVERAGE, (symbol, *span)).rowcount == 0:
                stored = conn.execute(_LOCK_COVERAGE, (symbol,)).fetchone()
                conn.execute(_UPSERT_COVERAGE, (symbol, *rows.widened(stored, first_ms, last_ms)))
        return inserted

    def funding(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> list[FundingRate]:
        """Stored funding events of ``symbol`` with ``start_ms <= funding_ms < end_ms``, by time."""
        with self.session() as conn:
            found = conn.execute(_SELECT_FUNDING, (symbol, *rows.time_range(start_ms, end_ms))).fetchall()
        return rows.funding_rates(found)

    def funding_coverage(self, symbol: str) -> tuple[int, int] | None:
        """The span of ``symbol``'s funding history fetched whole, UTC epoch ms inclusive; None if none."""
        with self.session() as conn:
            found = conn.execute(_SELECT_FUNDING_COVERAGE, (symbol,)).fetchone()
        return None if found is None else (found[0], found[1])

    def tick_count(self, symbol: str | None = None) -> int:
        with self.session() as conn:
            if symbol is None:
                return one_row(conn, rows.COUNT_TICKS)[0]
            return one_row(conn, _COUNT_SYMBOL_TICKS, (symbol,))[0]

    def symbols(self) -> list[str]:
        with self.session() as conn:
            return [row[0] for row in conn.execute(_SYMBOLS)]

    def rename_symbols(self, rename: Callable[[str], str]) -> int:
        """Every stored symbol of ticks, bars and feed events renamed to ``rename(symbol)``, in one
        transaction; the number of symbols renamed (a database written before leg names)."""
        with self.session() as conn, conn.transaction():
            return rows.rename_tick_symbols(lambda statement, params: conn.execute(pyformat(statement), params),
                                            rename)

    def last_trade_ids(self) -> dict[str, int]:
        """Highest stored trade id per symbol (one primary-key probe per symbol, not a table scan)."""
        with self.session() as conn:
            return {symbol: one_row(conn, "SELECT MAX(trade_id) FROM ticks WHERE symbol = %s", (symbol,))[0]
                    for (symbol,) in conn.execute(_SYMBOLS).fetchall()}

    def feed_events(
        self, *, since_ms: int | None = None, kinds: Iterable[EventKind] | None = None, limit: int = 500
    ) -> list[FeedEvent]:
        """Most recent feed events first."""
        query = _SELECT_EVENTS
        params: list[object] = [rows.MIN_MS if since_ms is None else since_ms]
        if kinds is not None:
            query += " AND kind = ANY(%s)"
            params.append([k.value for k in kinds])
        query += " ORDER BY ts_ms DESC, id DESC LIMIT %s"
        params.append(int(limit))
        with self.session() as conn:
            return rows.feed_events(conn.execute(query, params).fetchall())

    def prune(self, before_ms: int) -> int:
        """Delete ticks, bars, funding events and feed events older than ``before_ms``; return the
        ticks deleted (a funding span keeps what is left of it).

        Only in the one process holding the schema's retention lock (session-level, kept for the
        connection's life; another process takes it over when this one goes): every other
        writer's call returns 0 without touching anything.
        """
        with self.session() as conn:
            if not self._retention_held:
                self._retention_held = one_row(
                    conn, "SELECT pg_try_advisory_lock(%s)", (lock_key("retention", self.schema),))[0]
            if not self._retention_held:
                return 0
            deleted = 0
            with conn.transaction():
                for (symbol,) in conn.execute(_SYMBOLS).fetchall():
                    deleted += conn.execute(_PRUNE_SYMBOL_TICKS, (symbol, before_ms)).rowcount
                conn.execute(_PRUNE_EVENTS, (before_ms,))
                conn.execute(_PRUNE_BARS, (before_ms,))
                conn.execute(_PRUNE_FUNDING, (before_ms,))
                conn.execute(_PRUNE_FUNDING_COVERAGE, (before_ms,))
                conn.execute(_TRIM_FUNDING_COVERAGE, (before_ms, before_ms))
        return deleted
