"""Replay a recorded tick file with its original timing, scaled by a speed factor.

Formats, detected once at construction (:func:`detect_format`):

1. **SQLite** written by this project — recognised by the 16-byte header ``SQLite format 3\\0``.
   Read through the storage layer, read-only (:func:`storage.open_tick_file`); each symbol is
   read in ``(ts_ms, trade_id)`` order in chunks (served by the ``(symbol, ts_ms)`` index, no big
   sort), and the per-symbol streams are merged into ``(ts_ms, symbol, trade_id)`` order.
2. **Collector NDJSON** ``{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.300Z","price":3139.77,
   "size":0.054}`` — recognised when the first JSON object among the first ``DETECT_LINES`` lines
   has the keys ``symbol``, ``ts`` and ``price``. ``ts`` is ISO-8601 with a UTC offset or ``Z``
   (naive times are rejected as parse errors: their zone is unknown). Rows with ``price == 0``
   (the futures stream's ``"X":"NA"`` placeholder trades) are skipped and counted in
   :attr:`ReplaySource.skipped_rows`. The format has no trade ids, so ids are synthesised per
   symbol in file order (skipped and malformed rows take no id) inside the file's own id space:
   ``file_tag << 40 | n`` for the n-th trade (n = 1, 2, 3, ...), ``file_tag`` being 22 bits of a
   hash of the file's first 64 KiB. Replaying the same file (or a longer copy of it) into the same
   database again inserts nothing new; a different file never collides with it (1 in 4 million).
   ``buyer_is_maker`` is unknown and set to ``False``.
3. **Binance NDJSON** — one raw payload (``{"e":"trade",...}``) or combined-stream frame
   (``{"stream":...,"data":{...}}``) per line, recognised by an ``e``, ``stream`` or ``result``
   key. Parsed with :func:`ingestion.binance.parse.parse_frame`; non-trade messages are counted in
   ``stats.unknown_messages``, zero-price trades are skipped like above.

Malformed lines or rows never stop a replay (a time outside 1973–2099, :func:`records.time_problem`, is
malformed too: no page could show it): they are counted in ``stats.parse_errors`` with
``file:line`` in ``stats.last_error``; messages quote a field's value only as a short sanitised
excerpt (:func:`ingestion.source.excerpt`), so a replayed file cannot leak its contents into the shared feed tab.
Files are streamed line by line (or row chunk by row chunk), never loaded whole. Only regular
files are read, checked with ``stat`` before they are opened (a FIFO would block forever).

Browsers never name a file: the dashboard offers the regular files of one configured folder
(:func:`replay_files`, ``QUANT_REPLAY_DIR``); the recorder CLI may replay any path.

Timing: trades are emitted in file order, paced by :func:`ingestion.paced.run_paced` (a
non-decreasing clock: the collector file goes backwards 165 times, and a late-arriving older
trade is emitted immediately instead of rewinding the clock).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import math
import os
import re
import stat
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from config import SYMBOL_RE, FeedSettings, normalize_symbol
from ingestion.binance.parse import MalformedMessage, NonMarketTrade, UnknownMessage, parse_frame
from ingestion.paced import run_paced
from ingestion.source import Capabilities, SourceSpec, SourceStats, TradeSink, excerpt, spot_style_legs
from records import EventKind, FeedEvent, FeedState, Trade, time_problem
from records.clock import SYSTEM_CLOCK, Clock
from storage import SQLITE_MAGIC, StorageError, open_tick_file, read_head

log = logging.getLogger(__name__)

SQLITE_CHUNK_ROWS = 5_000  # rows fetched per round trip per symbol; bounds memory, amortises calls
DETECT_LINES = 50  # non-blank lines inspected to recognise an NDJSON dialect
DETECT_MAX_LINE_BYTES = 1 << 20  # longer "lines" are read in pieces while detecting (and never match)
MAX_ERROR_EVENTS = 10  # parse errors reported as feed events per run; the rest are only counted
SEQ_BITS = 40  # synthesised ids: file tag in the bits above, trade number (up to 1.1e12) below
TAG_BITS = 22  # 22 + 40 = 62 bits: every id stays a positive SQLite INTEGER
TAG_BYTES = 64 * 1024  # the file's identity: a hash of its first 64 KiB (stable while a recorder appends)
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


def check_regular_file(path: Path) -> os.stat_result:
    """``stat`` ``path`` (following links) and refuse anything but a readable regular file, before any open."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _fail(path, "does not exist") from None
    except OSError as exc:
        raise _fail(path, f"cannot read it: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise _fail(path, "is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise _fail(path, "is not a regular file (a FIFO, socket or device cannot be replayed)")
    return info


def file_tag(path: Path) -> int:
    """The file's id space (:data:`TAG_BITS` bits): a hash of its first :data:`TAG_BYTES` bytes.

    A database this process has open is not read again (see :func:`storage.read_head`); its
    resolved path stands in for its contents.
    """
    head = read_head(path, TAG_BYTES)
    digest = hashlib.blake2b(head if head is not None else str(path.resolve()).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - TAG_BITS)


def replay_files(folder: Path) -> list[Path]:
    """The files a browser may replay: regular files directly in ``folder``, sorted by name.

    Every entry is checked with ``stat`` (links followed) and its resolved path must lie inside
    ``folder``, so a link to ``/etc/shadow`` or a FIFO dropped into the folder is never offered.
    A missing folder offers nothing.
    """
    try:
        root = folder.resolve(strict=True)
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return []
    files = []
    for entry in entries:
        path = Path(entry.path)
        try:
            resolved = path.resolve(strict=True)
            if resolved.parent != root or not stat.S_ISREG(resolved.stat().st_mode) or entry.name.startswith("."):
                continue
        except OSError:
            continue
        files.append(resolved)
    return files


def database_name(path: Path) -> str:
    """The replay database of one file, ``replay-<name>-<tag>``: each recording is replayed apart."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem)[:40].strip("_") or "file"
    try:
        tag = file_tag(path)
    except OSError:  # unreadable: creating the source reports why
        tag = 0
    return f"replay-{stem}-{tag:06x}"


def detect_format(path: Path) -> ReplayFormat:
    """Recognise ``path``'s format (see the module docstring) or raise ``ValueError`` naming it."""
    check_regular_file(path)
    seen = 0
    try:
        # Through storage: a database this process has open must not be opened and closed here.
        head = read_head(path, len(SQLITE_MAGIC))
        if head is None or head == SQLITE_MAGIC:
            return ReplayFormat.SQLITE
        with path.open("rb") as fh:
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
        raise _BadRecord(f"{field} {excerpt(value)} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise _BadRecord(f"{field} {excerpt(value)} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise _BadRecord(f"{field} {excerpt(value)} must be finite and >= 0")
    return number


def _symbol(value: Any) -> str:
    symbol = value.upper() if isinstance(value, str) else ""
    if not SYMBOL_RE.fullmatch(symbol):
        raise _BadRecord(f"invalid symbol {excerpt(value)}")
    return symbol


class ReplaySource:
    """Replays ``path`` (any format in the module docstring) and implements ``Source``.

    ``symbols``: emit only these (``None``: all). ``speed``: recorded seconds per wall-clock
    second (10 = ten times faster); a huge value replays as fast as the sink allows. ``clock``:
    the time :meth:`run` paces against and stamps ``recv_ms`` and events with (a test's, or the machine's).
    Raises ``ValueError`` naming the file if it is missing, unreadable or not recognised.

    Counters of the latest pass (:meth:`iter_trades` or :meth:`run`): ``stats.messages`` (lines
    or rows read), ``stats.parse_errors``, ``stats.unknown_messages``, :attr:`skipped_rows`
    (non-market rows: zero-price placeholders, futures prints whose ``X`` is not ``MARKET``) and
    :attr:`trades` (trades yielded).
    """

    name = "replay"

    def __init__(self, path: Path, symbols: Sequence[str] | None = None, speed: float = 1.0, *,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = Path(path)
        self._clock = clock
        if not (isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a finite number > 0, got {speed!r}")
        self.format = detect_format(self.path)  # stat-checks the path before opening it
        self.symbols: frozenset[str] | None = None
        if symbols is not None:
            self.set_symbols(symbols)
        self.speed = float(speed)
        self.label = f"REPLAY {self.path.name}"
        self.stats = SourceStats()
        self.skipped_rows = 0
        self.trades = 0
        self.id_base = file_tag(self.path) << SEQ_BITS if self.format is ReplayFormat.TICKS_NDJSON else 0
        if self.format is ReplayFormat.SQLITE:
            try:
                open_tick_file(self.path).close()  # refuses a database without a proper ticks table
            except StorageError as exc:
                raise _fail(self.path, f"cannot replay it: {exc}") from None

    def set_symbols(self, symbols: Sequence[str] | None) -> None:
        """Emit only ``symbols`` (None: all) from the next trade on; trades already passed are not re-sent."""
        self.symbols = None if symbols is None else frozenset(normalize_symbol(s) for s in symbols)

    # ----------------------------------------------------------------------------- reading

    def iter_trades(self) -> Iterator[Trade]:
        """All trades of the file in emission order, without pacing; resets the counters.

        ``recv_ms`` equals ``ts_ms`` here (no wall clock is involved, so the output is
        reproducible); :meth:`run` stamps the wall-clock time of emission instead.
        """
        return self._iter(None)

    def _iter(self, on_error: Callable[[str], None] | None) -> Generator[Trade, None, None]:
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

    def _iter_ndjson(self, on_error: Callable[[str], None] | None) -> Generator[Trade, None, None]:
        parse_line = self._parse_ticks_line if self.format is ReplayFormat.TICKS_NDJSON else self._parse_binance_line
        next_id: dict[str, int] = {}
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
                    trade = parse_line(line, next_id, self.symbols)  # read per line: set_symbols may widen it
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
            raise _BadRecord(f"ts {excerpt(ts_raw)} is not an ISO-8601 string")
        try:
            ts_ms = parse_iso_ms(ts_raw)
        except ValueError:
            raise _BadRecord(f"bad ts {excerpt(ts_raw)}: not ISO-8601 with a time zone") from None
        problem = time_problem(ts_ms)  # a year-9999 ts parses, and no page can show it
        if problem is not None:
            raise _BadRecord(f"impossible ts {excerpt(ts_raw)}: {problem}")
        seq = next_id.get(symbol, 0) + 1
        next_id[symbol] = seq
        return Trade(symbol, self.id_base | seq, ts_ms, ts_ms, price, qty, False)

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
        if isinstance(message, NonMarketTrade):
            # A futures print other than MARKET (NA placeholders, insurance fund, ADL): never a bar's price.
            self.skipped_rows += 1
            return None
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

    def _iter_sqlite(self, on_error: Callable[[str], None] | None) -> Generator[Trade, None, None]:
        stats = self.stats
        try:
            store = open_tick_file(self.path)
        except StorageError as exc:
            self._bad("db", f"cannot open: {exc}", on_error)
            return
        with store:
            try:
                symbols = store.symbols() if self.symbols is None else sorted(self.symbols)
                # One cursor per symbol, each walking the (symbol, ts_ms) index; heapq.merge interleaves
                # them lazily, so memory is O(symbols * chunk) however large the table is.
                streams = [store.iter_trades(symbol, SQLITE_CHUNK_ROWS) for symbol in symbols]
                for trade in heapq.merge(*streams, key=lambda t: (t.ts_ms, t.symbol, t.trade_id)):
                    stats.messages += 1
                    if not _valid_stored(trade):
                        where = f"ticks[{excerpt(trade.symbol)}, {excerpt(trade.trade_id)}]"
                        self._bad(where, "invalid symbol, id, time (1973 to 2099), price or quantity", on_error)
                        continue
                    if trade.price == 0.0:
                        self.skipped_rows += 1
                        continue
                    self.trades += 1
                    yield trade
            except StorageError as exc:  # e.g. the file was truncated under us
                self._bad("db", f"read failed: {exc}", on_error)

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
        stats.connected_since_ms = self._clock.now_ms()
        stats.last_error = None
        sink.on_event(FeedEvent(self._clock.now_ms(), EventKind.STARTED, None,
                                f"replay {self.path.name} ({self.format.value}) speed={self.speed:g}x"
                                + (f" symbols={','.join(sorted(self.symbols))}" if self.symbols else "")))
        error_events = 0

        def on_error(message: str) -> None:
            nonlocal error_events
            error_events += 1
            if error_events <= MAX_ERROR_EVENTS:  # a garbage file must not flood the events table
                sink.on_event(FeedEvent(self._clock.now_ms(), EventKind.ERROR, None, message))

        try:
            with contextlib.closing(self._iter(on_error)) as trades:
                run = run_paced(trades, sink, stop, speed=self.speed, stats=stats, clock=self._clock)
        except Exception as exc:
            stats.state = FeedState.STOPPED
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("replay of %s failed", self.path)
            with contextlib.suppress(Exception):
                sink.on_event(FeedEvent(self._clock.now_ms(), EventKind.ERROR, None, stats.last_error))
            raise
        stats.state = FeedState.STOPPED if run.stopped else FeedState.FINISHED
        summary = (f"{'stopped' if run.stopped else 'finished'}: {run.emitted} trades, "
                   f"{self.skipped_rows} non-market rows skipped, {stats.parse_errors} parse errors, "
                   f"{stats.unknown_messages} unknown messages")
        sink.on_event(FeedEvent(self._clock.now_ms(), EventKind.STOPPED, None, summary))


def _is_zero_price_trade(line: bytes) -> bool:
    """True for a trade frame whose price is 0 (futures ``"X":"NA"`` placeholders)."""
    try:
        message = json.loads(line)
        if isinstance(message, dict) and "data" in message and "stream" in message:
            message = message["data"]
        return isinstance(message, dict) and message.get("e") == "trade" and float(message["p"]) == 0.0
    except (ValueError, TypeError, KeyError):
        return False


def _valid_stored(trade: Trade) -> bool:
    """A row read from a project database is sane (another program may have written the file)."""
    return (isinstance(trade.symbol, str) and SYMBOL_RE.fullmatch(trade.symbol) is not None
            and type(trade.trade_id) is int and type(trade.ts_ms) is int and time_problem(trade.ts_ms) is None
            and isinstance(trade.price, float) and math.isfinite(trade.price) and trade.price >= 0
            and isinstance(trade.qty, float) and math.isfinite(trade.qty) and trade.qty >= 0)


def _create(feed: FeedSettings) -> ReplaySource:
    if feed.replay_file is None:
        raise ValueError("replay_file: required when source is 'replay'")
    return ReplaySource(feed.replay_file, symbols=feed.symbols, speed=feed.speed)


def _database(feed: FeedSettings) -> str:
    if feed.replay_file is None:
        raise ValueError("replay_file: required when source is 'replay'")
    return database_name(feed.replay_file)


SPEC = SourceSpec(
    name="replay",
    label="Replay file",
    capabilities=Capabilities(live=False, exchange_ids=False, resubscribe=True, backfill=False),
    create=_create,
    database=_database,
    legs=spot_style_legs("replay"),
)
