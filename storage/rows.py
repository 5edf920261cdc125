"""Rows ↔ records, once for every backend: the column lists, the statements both dialects share, and the mapping.

Both backends name their tables and columns alike (``ticks``, ``bars``, ``feed_events``,
``alert_rules``, ``alerts``, ``datasets``, ``ohlc``), so what a row *means* is written here, not
in each backend: a backend runs its query and hands the rows to one of these functions, or takes
the parameters of an insert from one. Statements that read the same in SQLite and PostgreSQL are
kept here too, in qmark style (``?``); the PostgreSQL backend converts them with
:func:`storage.postgres.db.pyformat`. What differs per dialect (upserts, ``INSERT OR IGNORE`` vs
``ON CONFLICT``, identity columns, row ids) stays in the backend.

Times are UTC epoch ms throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, overload

import numpy as np
import pandas as pd

from records import BarArrays, EventKind, FeedEvent, FundingRate, TickArrays, Trade
from records.alerts import AlertEvent, AlertRule
from storage.base import MAX_DELIVERY_ERROR_CHARS, AlertRecord, AlertStore, Delivery
from storage.csv_import import ohlc_frame
from storage.datasets import DatasetInfo, ValidUpload, most_common_interval_ms

MIN_MS, MAX_MS = -(2**62), 2**62  # open ends of a time range, as bounds every backend can bind

# One database row, as the driver returns it. Its values are Any on purpose: sqlite3 and psycopg type
# them only at run time (by the column's declared/stored type), and the functions below are where they
# become typed records; a record's own __post_init__ validates where it has one.
Row = Sequence[Any]

# ------------------------------------------------------------------------------------------------
# Ticks, bars, feed events
# ------------------------------------------------------------------------------------------------

TICK_COLUMNS = ("symbol", "trade_id", "ts_ms", "price", "qty", "buyer_is_maker", "recv_ms")
BAR_COLUMNS = ("symbol", "interval_ms", "start_ms", "open", "high", "low", "close", "volume", "trades", "vwap")

SELECT_TICKS = ("SELECT trade_id, ts_ms, price, qty FROM ticks WHERE symbol = ? AND ts_ms >= ? AND ts_ms < ? "
                "ORDER BY ts_ms, trade_id")
SELECT_BARS = ("SELECT start_ms, open, high, low, close, volume, trades, vwap FROM bars "
               "WHERE symbol = ? AND interval_ms = ? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms")
SELECT_BAR_SPAN = "SELECT MIN(start_ms), MAX(start_ms) FROM bars WHERE symbol = ? AND interval_ms = ?"
COUNT_TICKS = "SELECT COUNT(*) FROM ticks"
COUNT_SYMBOL_TICKS = "SELECT COUNT(*) FROM ticks WHERE symbol = ?"
SELECT_EVENTS = "SELECT ts_ms, kind, symbol, detail FROM feed_events WHERE ts_ms >= ?"
PRUNE_SYMBOL_TICKS = "DELETE FROM ticks WHERE symbol = ? AND ts_ms < ?"
PRUNE_EVENTS = "DELETE FROM feed_events WHERE ts_ms < ?"
PRUNE_BARS = "DELETE FROM bars WHERE start_ms < ?"


def time_range(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """``start_ms <= t < end_ms`` with None as an open end."""
    return (MIN_MS if start_ms is None else start_ms, MAX_MS if end_ms is None else end_ms)


def tick_arrays(rows: Sequence[Row]) -> TickArrays:
    """:class:`TickArrays` from rows of :data:`SELECT_TICKS` (trade_id, ts_ms, price, qty)."""
    if not rows:
        return TickArrays.empty()
    trade_id, ts_ms, price, qty = zip(*rows, strict=True)
    return TickArrays(
        trade_id=np.array(trade_id, dtype=np.int64),
        ts_ms=np.array(ts_ms, dtype=np.int64),
        price=np.array(price, dtype=np.float64),
        qty=np.array(qty, dtype=np.float64),
    )


def replay_trades(symbol: str, rows: Iterable[Row]) -> Iterator[Trade]:
    """Trades from rows of (trade_id, ts_ms, price, qty, buyer_is_maker); ``recv_ms`` is ``ts_ms``.

    The original receive time is not part of a replay.
    """
    for trade_id, ts_ms, price, qty, maker in rows:
        yield Trade(symbol, trade_id, ts_ms, ts_ms, price, qty, bool(maker))


def bar_rows(symbol: str, interval_ms: int, bars: BarArrays) -> list[tuple]:
    """The parameters of one bar upsert per bar, in :data:`BAR_COLUMNS` order."""
    return list(zip([symbol] * len(bars), [int(interval_ms)] * len(bars), bars.start_ms.tolist(),
                    bars.open.tolist(), bars.high.tolist(), bars.low.tolist(), bars.close.tolist(),
                    bars.volume.tolist(), bars.trades.tolist(), bars.vwap.tolist(), strict=True))


def bar_arrays(rows: Sequence[Row]) -> BarArrays:
    """:class:`BarArrays` from rows of :data:`SELECT_BARS`."""
    if not rows:
        return BarArrays.empty()
    start, open_, high, low, close, volume, trades, vwap = zip(*rows, strict=True)
    return BarArrays(np.array(start, dtype=np.int64), np.array(open_, dtype=np.float64),
                     np.array(high, dtype=np.float64), np.array(low, dtype=np.float64),
                     np.array(close, dtype=np.float64), np.array(volume, dtype=np.float64),
                     np.array(trades, dtype=np.int64), np.array(vwap, dtype=np.float64))


def event_row(event: FeedEvent) -> tuple[int, str, str | None, str]:
    """The (ts_ms, kind, symbol, detail) row of a feed event."""
    return (event.ts_ms, event.kind.value, event.symbol, event.detail)


def feed_events(rows: Iterable[Row]) -> list[FeedEvent]:
    """Feed events from rows of :data:`SELECT_EVENTS`."""
    return [FeedEvent(ts, EventKind(kind), sym, detail) for ts, kind, sym, detail in rows]


# ------------------------------------------------------------------------------------------------
# Funding history (perpetuals): events, and the span of times fetched whole
# ------------------------------------------------------------------------------------------------

FUNDING_COLUMNS = ("symbol", "funding_ms", "rate", "mark")
SELECT_FUNDING = ("SELECT symbol, funding_ms, rate, mark FROM funding WHERE symbol = ? AND funding_ms >= ? "
                  "AND funding_ms < ? ORDER BY funding_ms")
SELECT_FUNDING_COVERAGE = "SELECT first_ms, last_ms FROM funding_coverage WHERE symbol = ?"
PRUNE_FUNDING = "DELETE FROM funding WHERE funding_ms < ?"
PRUNE_FUNDING_COVERAGE = "DELETE FROM funding_coverage WHERE last_ms < ?"
TRIM_FUNDING_COVERAGE = "UPDATE funding_coverage SET first_ms = ? WHERE first_ms < ?"


def funding_row(rate: FundingRate) -> tuple[str, int, float, float | None]:
    """The parameters of one funding insert, in :data:`FUNDING_COLUMNS` order."""
    return (rate.symbol, rate.funding_ms, rate.rate, rate.mark)


def funding_rates(rows: Iterable[Row]) -> list[FundingRate]:
    """Funding events from rows of :data:`SELECT_FUNDING`."""
    return [FundingRate(symbol, funding_ms, rate, mark) for symbol, funding_ms, rate, mark in rows]


def widened(stored: Row | None, first_ms: int, last_ms: int) -> tuple[int, int]:
    """The span fetched whole once ``[first_ms, last_ms]`` (UTC epoch ms, inclusive) is added to the
    ``stored`` one (a row of :data:`SELECT_FUNDING_COVERAGE`, or None).

    Spans that overlap or touch become one; a new span apart from the stored one replaces it when it
    is later (the newest history is what a backtest asks for), else the stored one stays: a span
    only ever says what was fetched without a hole.
    """
    if first_ms > last_ms:
        raise ValueError(f"funding span: first_ms {first_ms} is after last_ms {last_ms}")
    if stored is None:
        return first_ms, last_ms
    old_first, old_last = int(stored[0]), int(stored[1])
    if first_ms <= old_last + 1 and last_ms >= old_first - 1:
        return min(first_ms, old_first), max(last_ms, old_last)
    return (first_ms, last_ms) if last_ms > old_last else (old_first, old_last)


# ------------------------------------------------------------------------------------------------
# Alert rules and alerts
# ------------------------------------------------------------------------------------------------

RULE_COLUMNS = 'id, metric, operator, threshold, y, x, symbol, timeframe_ms, "window", hysteresis, cooldown_s, enabled'
# Bumped by the store's own rule writes, in their transaction (no trigger: see storage.sqlite.db.connect).
BUMP_RULES_VERSION = "UPDATE alert_rules_version SET version = version + 1 WHERE id = 1"
SELECT_RULES_VERSION = "SELECT version FROM alert_rules_version WHERE id = 1"
SET_RULE_ENABLED = "UPDATE alert_rules SET enabled = ? WHERE id = ?"
DELETE_RULE = "DELETE FROM alert_rules WHERE id = ?"
INSERT_RULE_COLUMNS = ('metric, operator, threshold, y, x, symbol, timeframe_ms, "window", hysteresis, cooldown_s, '
                       "enabled, created_ms, text")
INSERT_ALERT_COLUMNS = ("ts_ms, rule_id, rule, pair, metric, value, threshold, message, created_ms, delivery_state, "
                        "next_attempt_ms")

# The columns alert_record() reads, in its order.
ALERT_COLUMNS = ("id, created_ms, rule_id, rule, pair, metric, ts_ms, value, threshold, message, delivery_state, "
                 "delivery_attempts, delivery_error, last_attempt_ms, delivered_ms, next_attempt_ms, lease_until_ms")
SELECT_ALERTS = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE ts_ms >= ? ORDER BY ts_ms DESC, id DESC LIMIT ?"
# Due pending alerts of ``alerts a``, oldest first; one waits while an older alert of its rule is still
# pending, so a rule's alerts reach the endpoint in the order they fired.
DUE_DELIVERIES = ("delivery_state = 'pending' AND next_attempt_ms <= ? "
                  "AND (lease_until_ms IS NULL OR lease_until_ms <= ?) AND NOT EXISTS (SELECT 1 FROM alerts o "
                  "WHERE o.delivery_state = 'pending' AND o.rule_id IS NOT DISTINCT FROM a.rule_id "
                  "AND o.rule = a.rule AND o.id < a.id) ORDER BY id LIMIT ?")
MARK_DELIVERED = ("UPDATE alerts SET delivery_state = 'delivered', delivery_attempts = delivery_attempts + 1, "
                  "delivery_error = NULL, last_attempt_ms = ?, delivered_ms = ?, next_attempt_ms = NULL, "
                  "lease_until_ms = NULL WHERE id = ? AND delivery_state = 'pending' AND lease_until_ms = ?")
MARK_FAILED = ("UPDATE alerts SET delivery_state = ?, delivery_attempts = delivery_attempts + 1, "
               "delivery_error = ?, last_attempt_ms = ?, next_attempt_ms = ?, lease_until_ms = NULL "
               "WHERE id = ? AND delivery_state = 'pending' AND lease_until_ms = ?")


def rule_row(rule: AlertRule, created_ms: int) -> tuple:
    """The parameters of an insert into :data:`INSERT_RULE_COLUMNS` (the rule's id is not stored: it is new)."""
    y, x = rule.pair if rule.pair is not None else (None, None)
    return (rule.metric, rule.operator, rule.threshold, y, x, rule.symbol, rule.timeframe_ms, rule.window,
            rule.hysteresis, rule.cooldown_s, bool(rule.enabled), created_ms, rule.describe())


def rule_from_row(row: Row) -> AlertRule:
    """An :class:`AlertRule` from a row of :data:`RULE_COLUMNS`."""
    rule_id, metric, operator, threshold, y, x, symbol, timeframe_ms, window, hysteresis, cooldown_s, enabled = row
    return AlertRule(metric=metric, operator=operator, threshold=threshold, pair=None if y is None else (y, x),
                     symbol=symbol, timeframe_ms=timeframe_ms, window=window, hysteresis=hysteresis,
                     cooldown_s=cooldown_s, enabled=bool(enabled), id=rule_id)


# ------------------------------------------------------------------------------------------------
# Renaming symbols: a database written before leg names (storage.rename_legs)
# ------------------------------------------------------------------------------------------------

NAMED_SYMBOLS = ("SELECT symbol FROM ticks UNION SELECT symbol FROM bars "
                 "UNION SELECT symbol FROM feed_events WHERE symbol IS NOT NULL")
# Per table with a unique key: rename the rows whose renamed key is free, then delete those whose renamed
# twin is stored: the same trade or bar, stored by a recorder that already names legs (recorders sharing a
# server schema are upgraded one at a time), so the twin stays. A row inserted plain while this runs is
# neither: it keeps its name until the next start renames it. Each statement with the names of its
# parameters, in order ("new": the leg name, "old": the stored one).
_KEYS = {"ticks": ("trade_id",), "bars": ("interval_ms", "start_ms")}
_TWIN = {table: f"EXISTS (SELECT 1 FROM {table} twin WHERE twin.symbol = ? AND "
                + " AND ".join(f"twin.{key} = {table}.{key}" for key in keys) + ")" for table, keys in _KEYS.items()}
RENAME_SYMBOL: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((statement, names) for table, twin in _TWIN.items() for statement, names in (
        (f"UPDATE {table} SET symbol = ? WHERE symbol = ? AND NOT {twin}", ("new", "old", "new")),
        (f"DELETE FROM {table} WHERE symbol = ? AND {twin}", ("old", "new")))),
    ("UPDATE feed_events SET symbol = ? WHERE symbol = ?", ("new", "old")),
)
RENAME_RULE = "UPDATE alert_rules SET y = ?, x = ?, symbol = ?, text = ? WHERE id = ?"
ALERT_PAIRS = "SELECT DISTINCT pair FROM alerts"
RENAME_ALERT_PAIR = "UPDATE alerts SET pair = ? WHERE pair = ?"
ALERT_RULE_TEXTS = "SELECT DISTINCT rule FROM alerts"
RENAME_ALERT_RULE_TEXT = "UPDATE alerts SET rule = ? WHERE rule = ?"
# Runs one qmark statement of this module with its parameters on a backend's connection; returns the cursor.
Execute = Callable[[str, Sequence[Any]], Any]


def rename_tick_symbols(execute: Execute, rename: Callable[[str], str]) -> int:
    """Rename every symbol of a tick database's ticks, bars and feed events to ``rename(symbol)``
    (inside the caller's transaction); the number of symbols renamed.

    ``execute(statement, params)`` runs one qmark statement of this module on the backend's connection
    and returns its cursor.
    """
    names = [row[0] for row in execute(NAMED_SYMBOLS, ()).fetchall()]
    renamed = {name: rename(name) for name in names if rename(name) != name}
    for old, new in renamed.items():
        for statement, takes in RENAME_SYMBOL:
            execute(statement, tuple({"new": new, "old": old}[name] for name in takes))
    return len(renamed)


def rename_alert_symbols(execute: Execute, rename: Callable[[str], str]) -> int:
    """Rename the legs of every stored alert rule (its pair or symbol, and its text) and of the alert
    history's ``pair`` column and price rules' text (``BTCUSDT price > 1``) to ``rename(leg)`` (inside
    the caller's transaction); rows changed. Alert messages stay as they were sent."""
    changed = 0
    for rule in (rule_from_row(row) for row in execute(select_rules(False), ()).fetchall()):
        moved = replace(rule, pair=None if rule.pair is None else (rename(rule.pair[0]), rename(rule.pair[1])),
                        symbol=None if rule.symbol is None else rename(rule.symbol))
        if moved != rule:
            y, x = moved.pair if moved.pair is not None else (None, None)
            changed += execute(RENAME_RULE, (y, x, moved.symbol, moved.describe(), rule.id)).rowcount
    for (pair,) in execute(ALERT_PAIRS, ()).fetchall():
        moved_pair = "/".join(rename(leg) for leg in pair.split("/"))
        if moved_pair != pair:
            changed += execute(RENAME_ALERT_PAIR, (moved_pair, pair)).rowcount
    for (text,) in execute(ALERT_RULE_TEXTS, ()).fetchall():
        first, sep, rest = text.partition(" ")
        if rest.startswith("price ") and rename(first) != first:
            changed += execute(RENAME_ALERT_RULE_TEXT, (rename(first) + sep + rest, text)).rowcount
    if changed:
        execute(BUMP_RULES_VERSION, ())
    return changed


def select_rules(enabled_only: bool) -> str:
    """The query of stored rules (rows of :data:`RULE_COLUMNS`) in creation order; only enabled ones if asked."""
    return f"SELECT {RULE_COLUMNS} FROM alert_rules{' WHERE enabled' if enabled_only else ''} ORDER BY id"


def ensure_rule(store: AlertStore, rule: AlertRule) -> tuple[AlertRule, bool]:
    """``store.ensure_rule`` in terms of its other methods: the stored rule equal to ``rule`` (ignoring id
    and enabled; a disabled one is re-enabled), else ``rule`` added. Returns (rule with its id, added)."""
    wanted = replace(rule, id=None, enabled=True)
    stored = next((s for s in store.rules() if replace(s, id=None, enabled=True) == wanted), None)
    if stored is None:
        return store.add_rule(wanted), True
    if not stored.enabled:
        store.set_enabled(stored.stored_id, True)
    return replace(stored, enabled=True), False


def alert_row(event: AlertEvent, now_ms: int, *, pending: bool) -> tuple:
    """The parameters of an insert into :data:`INSERT_ALERT_COLUMNS`: owing a delivery due now if ``pending``."""
    return (event.ts_ms, event.rule_id, event.rule_text, event.label, event.metric, event.value, event.threshold,
            event.message, now_ms, "pending" if pending else "none", now_ms if pending else None)


def failure_row(record: AlertRecord, error: str, retry_at_ms: int | None, now_ms: int) -> tuple:
    """The parameters of :data:`MARK_FAILED` for ``record`` under the lease it was claimed with: pending
    again from ``retry_at_ms``, or ``failed`` for good if None."""
    return ("failed" if retry_at_ms is None else "pending", error[:MAX_DELIVERY_ERROR_CHARS], now_ms, retry_at_ms,
            record.id, record.delivery.lease_until_ms)


def alert_record(row: Row) -> AlertRecord:
    """An :class:`AlertRecord` from a row of :data:`ALERT_COLUMNS`."""
    (row_id, created_ms, rule_id, rule, pair, metric, ts_ms, value, threshold, message, state, attempts, error,
     last_attempt_ms, delivered_ms, next_attempt_ms, lease_until_ms) = row
    return AlertRecord(
        id=row_id, created_ms=created_ms,
        event=AlertEvent(rule_id=rule_id, rule_text=rule, label=pair, metric=metric, ts_ms=ts_ms, value=value,
                         threshold=threshold, message=message),
        delivery=Delivery(state=state, attempts=attempts, error=error, last_attempt_ms=last_attempt_ms,
                          delivered_ms=delivered_ms, next_attempt_ms=next_attempt_ms,
                          lease_until_ms=lease_until_ms))


def leased(record: AlertRecord, until_ms: int) -> AlertRecord:
    """``record`` as claimed under the lease that ends at ``until_ms`` (epoch ms)."""
    return replace(record, delivery=replace(record.delivery, lease_until_ms=until_ms))


# ------------------------------------------------------------------------------------------------
# Uploaded datasets
# ------------------------------------------------------------------------------------------------

DATASET_COLUMNS = "id, name, symbol, filename, content_hash, uploaded_ms, rows, first_ms, last_ms, interval_ms"
INSERT_DATASET_COLUMNS = "name, symbol, filename, content_hash, uploaded_ms, rows, first_ms, last_ms, interval_ms"
OHLC_ROW_COLUMNS = "dataset_id, ts_ms, open, high, low, close, volume"
SELECT_DATASETS = f"SELECT {DATASET_COLUMNS} FROM datasets ORDER BY uploaded_ms DESC, id DESC"
SELECT_DATASET = f"SELECT {DATASET_COLUMNS} FROM datasets WHERE id = ?"
SELECT_DATASET_BY_HASH = f"SELECT {DATASET_COLUMNS} FROM datasets WHERE content_hash = ?"
DATASET_NAME_TAKEN = "SELECT 1 FROM datasets WHERE name = ?"
SELECT_OHLC = "SELECT ts_ms, open, high, low, close, volume FROM ohlc WHERE dataset_id = ? ORDER BY ts_ms"
DELETE_DATASET = "DELETE FROM datasets WHERE id = ?"


@overload
def dataset_info(row: Row) -> DatasetInfo: ...
@overload
def dataset_info(row: None) -> None: ...
def dataset_info(row: Row | None) -> DatasetInfo | None:
    """A :class:`DatasetInfo` from a row of :data:`DATASET_COLUMNS`; None for no row."""
    return None if row is None else DatasetInfo(*row)


def dataset_row(upload: ValidUpload, filename: str, content_hash: str, uploaded_ms: int) -> tuple:
    """The parameters of an insert into :data:`INSERT_DATASET_COLUMNS`: the upload and its summary."""
    ts_ms = upload.ts_ms
    return (upload.name, upload.symbol, filename, content_hash, int(uploaded_ms), len(ts_ms), int(ts_ms[0]),
            int(ts_ms[-1]), most_common_interval_ms(ts_ms))


def name_taken(name: str) -> ValueError:
    """The error of an upload whose name another dataset (with other content) already has."""
    return ValueError(f"a dataset named {name!r} already exists with different content; choose another name")


def ohlc_rows(dataset_id: int, ts_ms: np.ndarray, values: np.ndarray) -> Iterator[tuple]:
    """One :data:`OHLC_ROW_COLUMNS` row per bar of a validated upload."""
    return ((dataset_id, t, *row) for t, row in zip(ts_ms.tolist(), values.tolist(), strict=True))


def ohlc_from_rows(dataset_id: int, rows: Sequence[Row]) -> pd.DataFrame:
    """The bars of :data:`SELECT_OHLC` in :func:`storage.csv_import.ohlc_frame` layout; KeyError for no rows.

    ``add`` never stores a dataset without rows, so no rows means no such dataset.
    """
    if not rows:
        raise KeyError(f"no dataset with id {dataset_id}")
    ts_ms, *columns = zip(*rows, strict=True)
    return ohlc_frame(np.array(ts_ms, dtype=np.int64), np.array(columns, dtype=np.float64).T)
