"""Replay a recorded tick file with its original timing, scaled by a speed factor.

Formats, detected once at construction (:func:`detect_format`):

1. **SQLite** written by this project — recognised by the 16-byte header ``SQLite format 3\\0``.
   Table ``ticks(symbol, trade_id, ts_ms, price, qty, buyer_is_maker, recv_ms)``. Opened read-only
   (``file:...?mode=ro``); each symbol is read with its own query in ``(ts_ms, trade_id)`` order
   (served by the ``(symbol, ts_ms)`` index, no big sort) in chunks of ``SQLITE_CHUNK_ROWS``, and
   the per-symbol streams are merged into ``(ts_ms, symbol, trade_id)`` order.
2. **Collector NDJSON** ``{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.300Z","price":3139.77,
   "size":0.054}`` — recognised when the first JSON object among the first ``DETECT_LINES`` lines
   has the keys ``symbol``, ``ts`` and ``price``. ``ts`` is ISO-8601 with a UTC offset or ``Z``
   (naive times are rejected as parse errors: their zone is unknown). Rows with ``price == 0``
   (the futures stream's ``"X":"NA"`` placeholder trades) are skipped and counted in
   :attr:`ReplaySource.skipped_rows`. The format has no trade ids, so ids are synthesised per
   symbol as 1, 2, 3, ... in file order (skipped and malformed rows take no id): replaying the
   same file into the same database again inserts nothing new. ``buyer_is_maker`` is unknown and
   set to ``False``.
3. **Binance NDJSON** — one raw payload (``{"e":"trade",...}``) or combined-stream frame
   (``{"stream":...,"data":{...}}``) per line, recognised by an ``e``, ``stream`` or ``result``
   key. Parsed with :func:`ingestion.binance_parse.parse_frame`; non-trade messages are counted in
   ``stats.unknown_messages``, zero-price trades are skipped like above.

Malformed lines or rows never stop a replay: they are counted in ``stats.parse_errors`` with
``file:line`` in ``stats.last_error``. Files are streamed line by line (or row chunk by row
chunk), never loaded whole.

Timing: trades are emitted in file order. Recordings merged from several sockets are not globally
time-ordered (the collector file goes backwards 165 times), so pacing follows a non-decreasing
clock, the largest ``ts_ms`` seen so far: a late-arriving older trade is emitted immediately
instead of rewinding the clock.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from config import SYMBOL_RE, normalize_symbol
from ingestion.binance_parse import MalformedMessage, UnknownMessage, parse_frame
from ingestion.records import EventKind, FeedEvent, FeedState, Trade
from ingestion.source import SourceStats, TradeSink, now_ms

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_CHUNK_ROWS = 5_000  # rows fetched per round trip per symbol; bounds memory, amortises calls
DETECT_LINES = 50  # non-blank lines inspected to recognise an NDJSON dialect
DETECT_MAX_LINE_BYTES = 1 << 20  # longer "lines" are read in pieces while detecting (and never match)
MAX_ERROR_EVENTS = 10  # parse errors reported as feed events per run; the rest are only counted
TICKS_COLUMNS = ("symbol", "trade_id", "ts_ms", "price", "qty", "buyer_is_maker", "recv_ms")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ReplayFormat(str, Enum):
    """The recognised file formats."""

    SQLITE = "sqlite"
    TICKS_NDJSON = "ticks-ndjson"  # {symbol, ts, price, size} from browser/Node tick collectors
    BINANCE_NDJSON = "binance-ndjson"  # raw trade payloads or combined-stream frames


class _BadRecord(ValueError):
    """One line/row that cannot be turned into a trade (counted, never raised to the caller)."""


def _fail(path: Path, why: str) -> ValueError:
    return ValueError(f"replay file {str(path)!r}: {why}")


def detect_format(path: Path) -> ReplayFormat:
    """Recognise ``path``'s format (see the module docstring) or raise ``ValueError`` naming it."""
    seen = 0
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
            if head == SQLITE_MAGIC:
                return ReplayFormat.SQLITE
            fh.seek(0)
            while raw := fh.readline(DETECT_MAX_LINE_BYTES):  # bounded: a binary blob has no newlines
                line = raw.strip()
                if not line:
                    continue
                seen += 1
                if seen > DETECT_LINES:
                    break
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue  # a malformed first line must not hide an otherwise good file
                if not isinstance(obj, dict):
                    continue
                if {"symbol", "ts", "price"} <= obj.keys():
                    return ReplayFormat.TICKS_NDJSON
                if "e" in obj or "stream" in obj or "result" in obj:
                    return ReplayFormat.BINANCE_NDJSON
    except OSError as exc:
        raise _fail(path, f"cannot read it: {exc.strerror or exc}") from None
    if seen == 0:
        raise _fail(path, "is empty")
    raise _fail(path, f"unrecognised format: no SQLite header and none of the first {DETECT_LINES} "
                      "lines is a {symbol, ts, price} tick or a Binance trade/combined-stream frame")


_ONE_SECOND = timedelta(seconds=1)
_ONE_MS = timedelta(milliseconds=1)
_second_cache: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" (UTC) → epoch seconds


def parse_iso_ms(text: str) -> int:
    """ISO-8601 timestamp with a UTC offset (or ``Z``) → epoch milliseconds (int).

    Fast path for the collector's ``2025-12-15T08:43:15.300Z``: the epoch second of the
    ``YYYY-MM-DDTHH:MM:SS`` prefix is cached (consecutive ticks share it), the milliseconds are
    sliced off. Anything else goes through ``datetime.fromisoformat``. Raises ``ValueError``.
    """
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and text[20:23].isascii() and text[20:23].isdigit():
        prefix = text[:19]
        second = _second_cache.get(prefix)
        if second is None:
            parsed = datetime.fromisoformat(prefix).replace(tzinfo=timezone.utc)
            second = (parsed - _EPOCH) // _ONE_SECOND
            if len(_second_cache) > 4096:  # bounded: files move forward in time
                _second_cache.clear()
            _second_cache[prefix] = second
        return second * 1000 + int(text[20:23])
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return (parsed - _EPOCH) // _ONE_MS


def _number(value: Any, field: str) -> float:
    # bool is an int subclass; True as a price is garbage, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _BadRecord(f"{field} {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise _BadRecord(f"{field} {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise _BadRecord(f"{field} {value!r} must be finite and >= 0")
    return number


def _symbol(value: Any) -> str:
    symbol = value.upper() if isinstance(value, str) else ""
    if not SYMBOL_RE.fullmatch(symbol):
        raise _BadRecord(f"invalid symbol {value!r}")
    return symbol


class ReplaySource:
    """Replays ``path`` (any format in the module docstring) and implements ``Source``.

    ``symbols``: emit only these (``None``: all). ``speed``: recorded seconds per wall-clock
    second (10 = ten times faster); a huge value replays as fast as the sink allows.
    Raises ``ValueError`` naming the file if it is missing, unreadable or not recognised.

    Counters of the latest pass (:meth:`iter_trades` or :meth:`run`): ``stats.messages`` (lines
    or rows read), ``stats.parse_errors``, ``stats.unknown_messages``, :attr:`skipped_rows`
    (zero-price rows) and :attr:`trades` (trades yielded).
    """

    name = "replay"

    def __init__(self, path: Path, symbols: Sequence[str] | None = None, speed: float = 1.0) -> None:
        self.path = Path(path)
        if not (isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a finite number > 0, got {speed!r}")
        if self.path.is_dir():
            raise _fail(self.path, "is a directory, not a file")
        self.format = detect_format(self.path)
        self.symbols: frozenset[str] | None = (
            None if symbols is None else frozenset(normalize_symbol(s) for s in symbols)
        )
        self.speed = float(speed)
        self.label = f"REPLAY {self.path.name}"
        self.stats = SourceStats()
        self.skipped_rows = 0
        self.trades = 0
        if self.format is ReplayFormat.SQLITE:
            self._check_sqlite()

    # ----------------------------------------------------------------------------- reading
    def _connect(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    def _check_sqlite(self) -> None:
        try:
            with contextlib.closing(self._connect()) as conn:
                columns = {row[1] for row in conn.execute("PRAGMA table_info(ticks)")}
        except sqlite3.Error as exc:
            raise _fail(self.path, f"cannot open it as SQLite: {exc}") from None
        if not columns:
            raise _fail(self.path, "SQLite database has no 'ticks' table")
        missing = [c for c in TICKS_COLUMNS if c not in columns]
        if missing:
            raise _fail(self.path, f"SQLite table 'ticks' lacks columns {', '.join(missing)}")

    def iter_trades(self) -> Iterator[Trade]:
        """All trades of the file in emission order, without pacing; resets the counters.

        ``recv_ms`` equals ``ts_ms`` here (no wall clock is involved, so the output is
        reproducible); :meth:`run` stamps the wall-clock time of emission instead.
        """
        return self._iter(None)

    def _iter(self, on_error: Callable[[str], None] | None) -> Iterator[Trade]:
        self.stats.messages = 0
        self.stats.parse_errors = 0
        self.stats.unknown_messages = 0
        self.skipped_rows = 0
        self.trades = 0
        if self.format is ReplayFormat.SQLITE:
            return self._iter_sqlite(on_error)
        return self._iter_ndjson(on_error)

    def _bad(self, where: str, why: str, on_error: Callable[[str], None] | None) -> None:
        self.stats.parse_errors += 1
        self.stats.last_error = f"{self.path.name}:{where}: {why}"
        if self.stats.parse_errors <= MAX_ERROR_EVENTS:
            log.warning("replay: %s", self.stats.last_error)
        if on_error is not None:
            on_error(self.stats.last_error)

    def _iter_ndjson(self, on_error: Callable[[str], None] | None) -> Iterator[Trade]:
        parse_line = self._parse_ticks_line if self.format is ReplayFormat.TICKS_NDJSON else self._parse_binance_line
        next_id: dict[str, int] = {}
        wanted = self.symbols
        stats = self.stats
        try:
            fh = self.path.open("rb")
        except OSError as exc:  # deleted/locked since construction: report, do not crash the thread
            self._bad("0", f"cannot open: {exc}", on_error)
            return
        with fh:
            for line_no, raw in enumerate(fh, start=1):
                line = raw.strip()
                if not line:
                    continue
                stats.messages += 1
                try:
                    trade = parse_line(line, next_id, wanted)
                except (_BadRecord, MalformedMessage) as exc:
                    self._bad(str(line_no), str(exc), on_error)
                    continue
                if trade is not None:
                    self.trades += 1
                    yield trade

    def _parse_ticks_line(self, line: bytes, next_id: dict[str, int],
                          wanted: frozenset[str] | None) -> Trade | None:
        """One collector line → a Trade, or None if skipped/filtered. Raises _BadRecord."""
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise _BadRecord(f"invalid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise _BadRecord(f"expected a JSON object, got {type(obj).__name__}")
        try:
            symbol = _symbol(obj["symbol"])
            if wanted is not None and symbol not in wanted:
                return None
            ts_raw, price_raw, size_raw = obj["ts"], obj["price"], obj["size"]
        except KeyError as exc:
            raise _BadRecord(f"missing field {exc.args[0]!r}") from None
        price = _number(price_raw, "price")
        qty = _number(size_raw, "size")
        if price == 0.0:
            self.skipped_rows += 1
            return None
        if not isinstance(ts_raw, str):
            raise _BadRecord(f"ts {ts_raw!r} is not an ISO-8601 string")
        try:
            ts_ms = parse_iso_ms(ts_raw)
        except ValueError as exc:
            raise _BadRecord(f"bad ts: {exc}") from None
        trade_id = next_id.get(symbol, 0) + 1
        next_id[symbol] = trade_id
        return Trade(symbol, trade_id, ts_ms, ts_ms, price, qty, False)

    def _parse_binance_line(self, line: bytes, next_id: dict[str, int],
                            wanted: frozenset[str] | None) -> Trade | None:
        """One raw/combined Binance frame → a Trade, or None. Raises MalformedMessage/_BadRecord."""
        try:
            message = parse_frame(line, 0)
        except MalformedMessage:
            if _is_zero_price_trade(line):
                self.skipped_rows += 1
                return None
            raise
        if not isinstance(message, Trade):
            # UnknownMessage or a ServerShutdown notice: recorded context, nothing to replay.
            self.stats.unknown_messages += 1
            if isinstance(message, UnknownMessage) and self.stats.unknown_messages <= MAX_ERROR_EVENTS:
                log.info("replay: skipping non-trade message %r", message.event_type)
            return None
        symbol = _symbol(message.symbol)
        if wanted is not None and symbol not in wanted:
            return None
        return Trade(symbol, message.trade_id, message.ts_ms, message.ts_ms, message.price, message.qty,
                     message.buyer_is_maker)

    def _iter_sqlite(self, on_error: Callable[[str], None] | None) -> Iterator[Trade]:
        stats = self.stats
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            self._bad("db", f"cannot open: {exc}", on_error)
            return
        with contextlib.closing(conn):
            try:
                if self.symbols is None:
                    symbols = [row[0] for row in conn.execute("SELECT DISTINCT symbol FROM ticks ORDER BY 1")]
                else:
                    symbols = sorted(self.symbols)
                # One cursor per symbol, each walking the (symbol, ts_ms) index; heapq.merge interleaves
                # them lazily, so memory is O(symbols * chunk) however large the table is.
                streams = [self._sqlite_rows(conn, symbol) for symbol in symbols]
                merged = heapq.merge(*streams, key=lambda row: (row[2], row[0], row[1]))
                for row in merged:
                    stats.messages += 1
                    try:
                        trade = _trade_from_row(row)
                    except _BadRecord as exc:
                        self._bad(f"ticks[{row[0]!r}, {row[1]!r}]", str(exc), on_error)
                        continue
                    if trade is None:
                        self.skipped_rows += 1
                        continue
                    self.trades += 1
                    yield trade
            except sqlite3.Error as exc:  # e.g. the file was truncated under us
                self._bad("db", f"read failed: {exc}", on_error)

    @staticmethod
    def _sqlite_rows(conn: sqlite3.Connection, symbol: str) -> Iterable[tuple[Any, ...]]:
        cursor = conn.execute(
            "SELECT symbol, trade_id, ts_ms, price, qty, buyer_is_maker FROM ticks "
            "WHERE symbol = ? ORDER BY ts_ms, trade_id",
            (symbol,),
        )
        while batch := cursor.fetchmany(SQLITE_CHUNK_ROWS):
            yield from batch

    # ----------------------------------------------------------------------------- running
    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        """Emit the file's trades to ``sink``, paced by recorded time / ``speed``.

        The first trade goes out at once; each later one when the pacing clock (the largest
        ``ts_ms`` so far) minus the first ``ts_ms``, divided by ``speed``, has elapsed on the wall
        clock. ``recv_ms`` is the wall-clock time of emission. Ends with state FINISHED at the end
        of the file or STOPPED within milliseconds of ``stop`` being set.
        """
        stats = self.stats
        stats.state = FeedState.CONNECTED
        stats.connected_since_ms = now_ms()
        stats.last_error = None
        sink.on_event(FeedEvent(now_ms(), EventKind.STARTED, None,
                                f"replay {self.path.name} ({self.format.value}) speed={self.speed:g}x"
                                + (f" symbols={','.join(sorted(self.symbols))}" if self.symbols else "")))
        error_events = 0
        emitted = 0

        def on_error(message: str) -> None:
            nonlocal error_events
            error_events += 1
            if error_events <= MAX_ERROR_EVENTS:  # a garbage file must not flood the events table
                sink.on_event(FeedEvent(now_ms(), EventKind.ERROR, None, message))

        wall_per_ms = 1.0 / (1000.0 * self.speed)
        first_ts: int | None = None
        clock = 0
        mono0 = 0.0
        stopped = False
        try:
            with contextlib.closing(self._iter(on_error)) as trades:
                for trade in trades:
                    if first_ts is None:
                        first_ts = clock = trade.ts_ms
                        mono0 = time.monotonic()
                    elif trade.ts_ms > clock:
                        clock = trade.ts_ms
                    delay = mono0 + (clock - first_ts) * wall_per_ms - time.monotonic()
                    if stop.wait(delay) if delay > 0 else stop.is_set():
                        stopped = True
                        break
                    sink.on_trade(Trade(trade.symbol, trade.trade_id, trade.ts_ms, now_ms(), trade.price,
                                        trade.qty, trade.buyer_is_maker))
                    emitted += 1
                    stats.last_message_mono = time.monotonic()
        except Exception as exc:
            stats.state = FeedState.STOPPED
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("replay of %s failed", self.path)
            with contextlib.suppress(Exception):
                sink.on_event(FeedEvent(now_ms(), EventKind.ERROR, None, stats.last_error))
            raise
        stats.state = FeedState.STOPPED if stopped else FeedState.FINISHED
        summary = (f"{'stopped' if stopped else 'finished'}: {emitted} trades, "
                   f"{self.skipped_rows} zero-price rows skipped, {stats.parse_errors} parse errors, "
                   f"{stats.unknown_messages} unknown messages")
        sink.on_event(FeedEvent(now_ms(), EventKind.STOPPED, None, summary))


def _is_zero_price_trade(line: bytes) -> bool:
    """True for a trade frame whose price is 0 (futures ``"X":"NA"`` placeholders)."""
    try:
        message = json.loads(line)
        if isinstance(message, dict) and "data" in message and "stream" in message:
            message = message["data"]
        return isinstance(message, dict) and message.get("e") == "trade" and float(message["p"]) == 0.0
    except (ValueError, TypeError, KeyError):
        return False


def _trade_from_row(row: tuple[Any, ...]) -> Trade | None:
    """A ``ticks`` row → Trade (recv_ms = ts_ms), None for a zero price. Raises _BadRecord."""
    symbol, trade_id, ts_ms, price, qty, maker = row
    symbol = _symbol(symbol)
    if type(trade_id) is not int or type(ts_ms) is not int or ts_ms <= 0:
        raise _BadRecord(f"invalid trade_id {trade_id!r} or ts_ms {ts_ms!r}")
    price = _number(price, "price")
    qty = _number(qty, "qty")
    if price == 0.0:
        return None
    return Trade(symbol, trade_id, ts_ms, ts_ms, price, qty, bool(maker))
