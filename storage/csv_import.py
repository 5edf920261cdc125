"""Uploaded OHLC CSV files → one validated, time-sorted OHLCV frame.

Accepted layouts
    *Binance kline CSV* as published on data.binance.vision, with or without its header row:
    ``open_time, open, high, low, close, volume, close_time, quote_volume, count,
    taker_buy_volume, taker_buy_quote_volume, ignore``. A file without a header row must have
    exactly these 12 columns. Only the time and the OHLCV columns are read.

    *Plain OHLCV* with a header row (required, so columns are never guessed). Names are
    case-insensitive, surrounding spaces are ignored and inner spaces/hyphens count as ``_``;
    any column order. The time column may be called ``timestamp``, ``time``, ``date``,
    ``datetime`` or ``open_time``; the volume column ``volume`` or ``vol``. The other Binance
    kline columns may also be present (they are ignored); any other column is an error.

Times (each value on its own, so a file spanning Binance's 2025 switch from ms to µs reads fine)
    Every time, whatever its format, must lie in 1973-03-03T09:46:40Z .. 2099-12-31T23:59:59.999Z
    (epoch 1e8 s up to, not including, 2100-01-01): the start of the seconds band below, and an end
    no market data reaches, so a year-1500 or year-9999 date is refused like a tiny epoch number.

    Whole epoch numbers, unit by magnitude. Within that range the bands lie far apart (a number
    read in the wrong unit would fall outside it), so real market data cannot be misread:

    ==================  ============
    value v             unit
    ==================  ============
    1e8  <= v < 1e11    seconds
    1e11 <= v < 1e14    milliseconds
    1e14 <= v < 1e17    microseconds
    ==================  ============

    Anything else (negative, smaller, nanoseconds, fractional epochs, outside the range) is rejected.
    Or ISO-8601 text: ``2022-08-14T00:00:00Z``, ``2022-08-14 02:00:00+02:00``, ``2022-08-14``;
    a time without an offset is taken as UTC. Every time must be a whole millisecond, because
    the application stores epoch milliseconds.

Encoding
    UTF-8 with or without BOM; LF, CRLF or CR line endings; blank lines at the end are ignored
    (a blank line elsewhere is an error). Fields may be double-quoted but a field may not span lines.
    A zip archive (recognised by a ``.zip`` filename or the ``PK\\x03\\x04`` signature) must hold
    exactly one ``.csv`` member (macOS ``__MACOSX/`` and ``._*`` entries and non-CSV members are
    ignored); its uncompressed size counts against the same byte limit.

Validation
    Everything is checked before anything is returned. The error raised is the *first* problem
    in file order (lowest line, then leftmost column), with its 1-based physical line number
    (the header is line 1), so a user can fix the file top to bottom. Prices must be finite and
    > 0, volume finite and >= 0, ``low <= open, close <= high``.

    Rows are read and checked in batches of ``_BATCH_ROWS`` and parsing stops with the first batch
    that holds a problem, so a bad file is refused without reading the rest of it. Good rows are
    kept as packed numbers, not Python objects, so peak memory is a small multiple of the file
    size (``bench/csv_upload.py``: about 6.5x, input included, for 1 M rows in 20 MB).

Duplicates
    Rows with the same time and the same OHLCV values (e.g. two overlapping downloads pasted
    together) are collapsed into one and the count is logged at INFO; the same time with
    different values is an error naming both lines.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import re
import zipfile
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from records import TIME_END_MS, TIME_MIN_MS, TIME_RANGE, possible_times

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
OHLC_COLUMNS = ("open", "high", "low", "close", "volume")
BINANCE_KLINE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
    "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)
TIME_ALIASES = ("timestamp", "time", "date", "datetime", "open_time")
VOLUME_ALIASES = ("volume", "vol")
# Binance kline columns that carry no OHLCV information; tolerated in any headered layout.
_IGNORED_COLUMNS = frozenset(BINANCE_KLINE_COLUMNS[6:])
_PRICE_COLUMNS = ("open", "high", "low", "close")
_EXPECTED = (
    f"expected a time column ({', '.join(TIME_ALIASES)}), open, high, low, close, volume (or vol), "
    "optionally the other Binance kline columns"
)
# Lower bounds of the seconds / ms / µs bands (see module docstring), epoch ms = value * multiply // divide;
# 1e17 closes the µs band.
_EPOCH_BANDS = ((10**8, 1_000, 1, "seconds"), (10**11, 1, 1, "milliseconds"), (10**14, 1, 1_000, "microseconds"))
_EPOCH_MAX = 10**17
# The one range every time format shares, as epoch ms [TIME_MIN_MS, TIME_END_MS) (records): 1e8 s, then 2100-01-01,
# the range of every time market data may carry (a replayed or streamed trade is held to it too).
# Rows checked together: bounds the Python row lists held at once (about 6 MB) and the work done past a bad row.
_BATCH_ROWS = 16_384
# Characters of text split into lines at a time, so the whole file is never held as a list of lines.
_CHUNK_CHARS = 2**18
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MS_PER_UNIT = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}
_SHOW_CHARS = 40
# Everything zipfile/zlib raise on a malformed, truncated, encrypted or exotic archive.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError, NotImplementedError)


class CsvImportError(ValueError):
    """The upload is not an acceptable OHLC CSV; the message names the line and/or column and the problem."""


def content_hash(data: bytes) -> str:
    """SHA-256 of the uploaded bytes, lower-case hex (64 chars): the key that spots re-uploads."""
    return hashlib.sha256(data).hexdigest()


def ohlc_frame(ts_ms: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """The frame layout of this module from epoch-ms times, shape (n,), and OHLCV values, shape (n, 5).

    Index: ``DatetimeIndex`` named ``"time"``, dtype ``datetime64[ms, UTC]`` (bar open times).
    Columns: float64 ``open, high, low, close`` (quote currency) and ``volume`` (base units).
    """
    index = pd.DatetimeIndex(np.asarray(ts_ms, dtype=np.int64).astype("datetime64[ms]"), name="time")
    return pd.DataFrame(
        np.asarray(values, dtype=np.float64).reshape(len(index), len(OHLC_COLUMNS)),
        index=index.tz_localize("UTC"),
        columns=list(OHLC_COLUMNS),
    )


def parse_ohlc_csv(data: bytes, filename: str, *, max_bytes: int = MAX_UPLOAD_BYTES) -> pd.DataFrame:
    """Parse and fully validate an uploaded OHLC CSV (or a zip holding one CSV).

    Parameters
    ----------
    data : bytes
        The uploaded file, at most ``max_bytes`` bytes (and, for a zip, at most ``max_bytes``
        bytes once its CSV member is uncompressed).
    filename : str
        The upload's name; only used to recognise ``.zip`` and in messages.
    max_bytes : int
        Size limit in bytes, 20 MiB by default.

    Returns
    -------
    DataFrame laid out as :func:`ohlc_frame` describes: one row per distinct time, sorted, at
    least one row. Exact duplicate rows are collapsed.

    Raises
    ------
    CsvImportError
        For the first problem in file order; see the module docstring for what is accepted.
    """
    if not data:
        raise CsvImportError("the file is empty")
    if len(data) > max_bytes:
        raise CsvImportError(
            f"the file is {_megabytes(len(data))} ({len(data):,} bytes), over the {_megabytes(max_bytes)} upload limit"
        )
    source = ""
    if filename.lower().endswith(".zip") or data.startswith(b"PK\x03\x04"):
        member, data = _single_csv_from_zip(data, filename, max_bytes)
        # Line numbers refer to the member, so say which file they are in.
        source = f"{member} (in the zip): "
    try:
        # The decoded text is only referenced inside _parse_text, so it is freed before the frame is built.
        ts_ms, values = _parse_text(_decode(data), source)
    except CsvImportError as exc:
        if not source:
            raise
        raise CsvImportError(source + str(exc)) from None
    return ohlc_frame(ts_ms, values)


def _single_csv_from_zip(data: bytes, filename: str, max_bytes: int) -> tuple[str, bytes]:
    """The name and bytes of the zip's only CSV member, read without ever holding more than ``max_bytes + 1``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if _is_csv_member(info)]
            if len(members) != 1:
                shown = members or archive.infolist()
                names = ", ".join(repr(info.filename) for info in shown[:10]) or "none"
                found = f"{len(members)} .csv files" if members else "no .csv file"
                raise CsvImportError(f"the zip holds {found} (members: {names}); it must hold exactly one")
            member = members[0]
            if member.file_size > max_bytes:
                raise CsvImportError(
                    f"{member.filename} in the zip is {_megabytes(member.file_size)} uncompressed, over the "
                    f"{_megabytes(max_bytes)} upload limit"
                )
            with archive.open(member) as stream:
                # zipfile stops at the declared (checked) size; the explicit bound keeps the cap from depending on it.
                payload = stream.read(max_bytes + 1)
    except CsvImportError:
        raise
    except ZIP_ERRORS as exc:
        raise CsvImportError(f"{filename!r} is not a readable zip archive ({exc})") from None
    if len(payload) > max_bytes:
        raise CsvImportError(f"{member.filename} in the zip is over the {_megabytes(max_bytes)} upload limit")
    return member.filename, payload


def _is_csv_member(info: zipfile.ZipInfo) -> bool:
    base = info.filename.rsplit("/", 1)[-1]
    # Finder adds __MACOSX/._name.csv resource forks beside the real file when it zips.
    return (not info.is_dir() and base.lower().endswith(".csv") and not base.startswith("._")
            and not info.filename.startswith("__MACOSX/"))


def _decode(payload: bytes) -> str:
    """UTF-8 text without BOM; NUL bytes mean binary data or UTF-16, which UTF-8 decoding would let through."""
    if b"\x00" in payload:
        line = _line_at(payload, payload.index(b"\x00"))
        raise CsvImportError(f"line {line}: not a UTF-8 text CSV (it contains NUL bytes: a binary or UTF-16 file?)")
    try:
        return payload.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = _line_at(payload, exc.start)
        raise CsvImportError(
            f"line {line}: not a UTF-8 text CSV (byte 0x{payload[exc.start]:02x} at offset {exc.start}); "
            "save it as CSV UTF-8"
        ) from None


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the needed columns are. ``positions`` maps time/open/high/low/close/volume to a column index."""

    names: tuple[str, ...]
    positions: dict[str, int]
    first_data_line: int


@dataclass(frozen=True, slots=True, order=True)
class _Issue:
    """One problem; the smallest (row, rank) is the first in file order. Rank: column index, then row checks."""

    row: int
    rank: int
    message: str = field(compare=False)


def _parse_text(text: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Epoch-ms times (n,) and OHLCV values (n, 5) of the file's rows, sorted and deduplicated."""
    end = _content_end(text)
    if not end:
        raise CsvImportError("the file is empty")
    reader = csv.reader(_lines(text, end))
    try:
        first_row = next(reader)
    except csv.Error as exc:
        raise CsvImportError(f"line 1: {exc}") from None
    if reader.line_num != 1:
        raise CsvImportError("line 1: a quoted field is not closed on the same line")
    if not "".join(first_row).strip():
        raise CsvImportError("line 1 is empty")
    layout = _layout(first_row)
    rows = _read_rows(reader, layout, [first_row] if layout.first_data_line == 1 else [])
    if not rows.count:
        raise CsvImportError(rows.structural or "no data rows: the file has only a header")
    # Only rows before the first problem are clean (and stored), and only those can hold an earlier duplicate.
    ts_ms = np.frombuffer(rows.ts_ms, dtype=np.int64)
    values = np.frombuffer(rows.values, dtype=np.float64).reshape(len(ts_ms), len(OHLC_COLUMNS))
    ts_ms, values = _deduplicate(ts_ms, values, layout)
    if rows.issue is not None:
        raise CsvImportError(rows.issue.message)
    if rows.structural is not None:
        raise CsvImportError(rows.structural)
    if len(ts_ms) < rows.count:
        log.info("%scollapsed %d exact duplicate row(s)", source, rows.count - len(ts_ms))
    return ts_ms, values


def _content_end(text: str) -> int:
    """Length of ``text`` without its trailing blank lines, found from the end without copying the text."""
    end = len(text)
    while end:
        tail = text[max(0, end - 4096):end]
        kept = len(tail.rstrip())
        end -= len(tail) - kept
        if kept:
            break
    # The last non-blank line keeps its own trailing spaces, up to its line break.
    after = _LINE_BREAK.search(text, end)
    return after.start() if after and end else end


def _lines(text: str, end: int) -> Iterator[str]:
    """The lines of ``text[:end]`` (LF, CRLF and lone CR all break), split one chunk at a time."""
    start = 0
    while True:
        cut = None
        if start + _CHUNK_CHARS < end:
            at = start + _CHUNK_CHARS
            # Start on a CR so a CRLF across the cut is found whole, never as a CR and an empty line.
            cut = _LINE_BREAK.search(text, at - 1 if text[at - 1] == "\r" else at, end)
        stop = cut.start() if cut else end
        yield from text[start:stop].replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if cut is None:
            return
        start = cut.end()


@dataclass(frozen=True, slots=True)
class _Rows:
    """The data rows read: epoch ms and OHLCV (row-major, 5 a row) of the clean rows before the first problem."""

    ts_ms: array
    values: array
    count: int
    issue: _Issue | None
    structural: str | None


def _read_rows(reader: Any, layout: _Layout, batch: list[list[str]]) -> _Rows:
    """Read and check the data rows batch by batch; stop after the first batch with a cell, row or structural problem.

    ``reader`` is a ``csv.reader`` positioned after line 1; ``batch`` holds line 1 when it is already data.
    """
    width = len(layout.names)
    ts_ms, values = array("q"), array("d")
    count = 0  # data rows before ``batch``
    issue: _Issue | None = None
    structural: str | None = None
    more = True
    while more and issue is None and structural is None:
        try:
            more = False
            for row in reader:
                line = layout.first_data_line + count + len(batch)
                if reader.line_num != line:
                    structural = f"line {line}: a quoted field is not closed on the same line"
                    break
                if len(row) != width:
                    structural = (f"line {line} is empty" if not "".join(row).strip()
                                  else f"line {line} has {len(row)} fields, expected {width}")
                    break
                batch.append(row)
                if len(batch) == _BATCH_ROWS:
                    more = True
                    break
        except csv.Error as exc:
            structural = f"line {reader.line_num}: {exc}"
        if batch:
            batch_ts, batch_values, issue = _columns(batch, layout, count)
            clean = issue.row - count if issue is not None else len(batch)
            ts_ms.frombytes(batch_ts[:clean].tobytes())
            values.frombytes(batch_values[:clean].tobytes())
            count += len(batch)
            batch = []
    return _Rows(ts_ms, values, count, issue, structural)


def _layout(first_row: list[str]) -> _Layout:
    """Column positions from the header row, or the Binance kline layout when line 1 is already data."""
    head = first_row[0].strip() if first_row else ""
    if head[:1].isdigit() or _is_float(head):
        if len(first_row) != len(BINANCE_KLINE_COLUMNS):
            raise CsvImportError(
                f"line 1 has {len(first_row)} fields and no header row: a file without a header must be a Binance "
                f"kline CSV with {len(BINANCE_KLINE_COLUMNS)} columns; otherwise add a header such as "
                "timestamp,open,high,low,close,volume"
            )
        return _Layout(BINANCE_KLINE_COLUMNS,
                       {name: BINANCE_KLINE_COLUMNS.index(name) for name in OHLC_COLUMNS} | {"time": 0}, 1)
    if len(first_row) == 1 and (separator := next((c for c in ";\t|" if c in head), None)):
        raise CsvImportError(f"line 1: fields must be separated by commas, this file uses {separator!r}")
    names = tuple(name.strip() for name in first_row)
    positions: dict[str, int] = {}
    unknown: list[str] = []
    for index, name in enumerate(names):
        key = re.sub(r"[\s-]+", "_", name.lower())
        role = ("time" if key in TIME_ALIASES else "volume" if key in VOLUME_ALIASES
                else key if key in _PRICE_COLUMNS else None)
        if role is None:
            if key not in _IGNORED_COLUMNS:
                unknown.append(name)
            continue
        if role in positions:
            earlier = names[positions[role]]
            if earlier.lower() == name.lower():
                raise CsvImportError(f"line 1: column {name!r} repeats {earlier!r}")
            raise CsvImportError(f"line 1: columns {earlier!r} and {name!r} both give the {role}")
        positions[role] = index
    if unknown:
        raise CsvImportError(f"line 1: unknown column(s) {', '.join(map(repr, unknown))}; {_EXPECTED}")
    missing = [role for role in ("time", *OHLC_COLUMNS) if role not in positions]
    if missing:
        raise CsvImportError(f"line 1: missing column(s) {', '.join(missing)}; {_EXPECTED}")
    return _Layout(names, positions, 2)


def _columns(rows: list[list[str]], layout: _Layout, offset: int) -> tuple[np.ndarray, np.ndarray, _Issue | None]:
    """Epoch-ms times (n,), OHLCV values (n, 5) and the first problem of a batch of rows (vectorised).

    ``offset`` is the number of data rows before ``rows``: the issue's ``row`` counts from the first data row.
    """
    def raw(role: str) -> np.ndarray:
        return np.array(list(map(itemgetter(layout.positions[role]), rows)), dtype=object)

    def line(row: int) -> int:
        return layout.first_data_line + offset + row

    issues: list[_Issue] = []
    ts_ms, bad_time = _epoch_ms(raw("time"))
    if bad_time.any():
        row = int(np.argmax(bad_time))
        position = layout.positions["time"]
        issues.append(_Issue(offset + row, position, f"line {line(row)}, column {layout.names[position]!r}: "
                                                     f"{_time_problem(rows[row][position])}"))
    values = np.empty((len(rows), len(OHLC_COLUMNS)), dtype=np.float64)
    for k, role in enumerate(OHLC_COLUMNS):
        column = pd.to_numeric(raw(role), errors="coerce").astype(np.float64)
        values[:, k] = column
        with np.errstate(invalid="ignore"):
            out_of_range = column < 0 if role == "volume" else column <= 0
        bad = ~np.isfinite(column) | out_of_range
        if bad.any():
            row = int(np.argmax(bad))
            position = layout.positions[role]
            text = rows[row][position]
            issues.append(_Issue(offset + row, position, f"line {line(row)}, column {layout.names[position]!r}: "
                                                         f"{_number_problem(text, column[row], role)}"))
    open_, high, low, close = (values[:, k] for k in range(4))

    def _outside(row: int) -> str:
        return f"outside [low {float(low[row])!r}, high {float(high[row])!r}]"

    width = len(layout.names)
    row_checks = (
        (high < low, lambda r: f"high {float(high[r])!r} is below low {float(low[r])!r}"),
        ((open_ < low) | (open_ > high), lambda r: f"open {float(open_[r])!r} is {_outside(r)}"),
        ((close < low) | (close > high), lambda r: f"close {float(close[r])!r} is {_outside(r)}"),
    )
    for rank, (bad, describe) in enumerate(row_checks, start=width):
        if bad.any():
            row = int(np.argmax(bad))
            issues.append(_Issue(offset + row, rank, f"line {line(row)}: {describe(row)}"))
    return ts_ms, values, min(issues, default=None)


def _epoch_ms(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times as UTC epoch ms (int64, 0 where invalid) and the mask of invalid cells."""
    numbers = pd.to_numeric(raw, errors="coerce")
    is_number = ~np.isnan(numbers) if numbers.dtype.kind == "f" else np.ones(len(raw), dtype=bool)
    ts_ms = np.zeros(len(raw), dtype=np.int64)
    ok = np.zeros(len(raw), dtype=bool)
    whole = is_number & (np.floor(numbers) == numbers) if numbers.dtype.kind == "f" else is_number
    # Whole floats convert exactly up to 2**53 (year 2255 in µs, past the range); integer input is exact anyway.
    epoch = np.where(whole & (numbers >= _EPOCH_BANDS[0][0]) & (numbers < _EPOCH_MAX), numbers, 0).astype(np.int64)
    for band, (lower, multiply, divide, _) in enumerate(_EPOCH_BANDS):
        upper = _EPOCH_BANDS[band + 1][0] if band + 1 < len(_EPOCH_BANDS) else _EPOCH_MAX
        in_band = (epoch >= lower) & (epoch < upper) & (epoch % divide == 0)
        ts_ms[in_band] = epoch[in_band] * multiply // divide
        ok |= in_band
    if not is_number.all():
        text = pd.Series(raw[~is_number]).str.strip()
        parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce").array
        per_ms = _MS_PER_UNIT[parsed.unit]
        ticks = parsed.asi8
        iso_ok = ~parsed.isna() & (ticks % per_ms == 0 if per_ms else True)
        ts_ms[~is_number] = np.where(iso_ok, ticks // per_ms if per_ms else ticks * 1_000, 0)
        ok[~is_number] = iso_ok
    ok &= possible_times(ts_ms)
    return ts_ms, ~ok


def _time_problem(text: str) -> str:
    """Why one time cell was rejected (only called for the first bad cell, so plain Python is fine)."""
    value = text.strip()
    if not value:
        return "missing time (empty cell)"
    if _is_float(value):
        number = float(value)
        if not math.isfinite(number):
            return f"infinite or NaN time {_show(value)}"
        if not number.is_integer():
            return f"epoch time {_show(value)} is not a whole number; use ISO-8601 for fractional seconds"
        epoch = int(number)
        band = next((band for band in reversed(_EPOCH_BANDS) if _EPOCH_MAX > epoch >= band[0]), None)
        if band is None:
            return (f"epoch time {_show(value)} is out of range: expected seconds (>= 1e8), milliseconds or "
                    f"microseconds since 1970-01-01 UTC, for a time in {TIME_RANGE}")
        _, multiply, divide, unit = band
        ms = epoch * multiply // divide
        if not TIME_MIN_MS <= ms < TIME_END_MS:
            return f"epoch time {_show(value)} read as {unit} is {_iso(ms)}, outside the accepted range {TIME_RANGE}"
        return f"epoch time {_show(value)} in microseconds is not a whole millisecond"
    parsed = pd.to_datetime(pd.Series([value]), utc=True, format="ISO8601", errors="coerce").array
    if parsed.isna().all():
        return f"unparseable time {_show(value)}: expected epoch s/ms/µs or ISO-8601 such as 2022-08-14T00:00:00Z"
    # Its own unit: in a batch that needs nanoseconds a year-1500 date does not fit and reads as NaT.
    if not TIME_MIN_MS <= parsed.as_unit("ms").asi8[0] < TIME_END_MS:
        return f"time {_show(value)} is outside the accepted range {TIME_RANGE}"
    return f"time {_show(value)} is not a whole millisecond"


def _number_problem(text: str, value: float, role: str) -> str:
    stripped = text.strip()
    if not stripped:
        return "missing value (empty cell)"
    if np.isnan(value) and stripped.lower().lstrip("+-") != "nan":
        return f"non-numeric value {_show(text)}"
    if not np.isfinite(value):
        return f"infinite or NaN value {_show(text)}"
    if role == "volume":
        return f"negative volume {float(value)!r}"
    return f"price must be > 0, got {float(value)!r}"


def _deduplicate(ts_ms: np.ndarray, values: np.ndarray, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """The rows in time order, one per distinct time: the arrays themselves when they already are (no copy).

    Raises ``CsvImportError`` naming the first (lowest) line whose time repeats an earlier line with other values.
    """
    if (ts_ms[1:] > ts_ms[:-1]).all():
        return ts_ms, values
    order = np.argsort(ts_ms, kind="stable")
    sorted_ts = ts_ms[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = sorted_ts[1:] == sorted_ts[:-1]
    if not repeat.any():
        return ts_ms[order], values[order]
    # Stable sort: each run of equal times starts at its earliest line, which every repeat is compared with.
    # Only repeated rows are compared, so a file with few duplicates costs no copies of all the values.
    run_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))
    repeated, original = order[repeat], order[run_start[repeat]]
    differs = np.any(values[repeated] != values[original], axis=1)
    if differs.any():
        first = int(np.argmin(np.where(differs, repeated, len(order))))
        later, earlier = int(repeated[first]), int(original[first])
        when = pd.Timestamp(int(ts_ms[later]), unit="ms", tz="UTC").isoformat()
        raise CsvImportError(f"line {layout.first_data_line + later}: time {when} repeats line "
                             f"{layout.first_data_line + earlier} with different values")
    keep = order[~repeat]
    return ts_ms[keep], values[keep]


def _line_at(payload: bytes, offset: int) -> int:
    """1-based line number of a byte offset, counting LF, CRLF and lone CR breaks as the parser does."""
    before = payload[:offset]
    return before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1


def _is_float(text: str) -> bool:
    """Whether ``float`` accepts the text; underscores are refused as pandas' number parser refuses them."""
    if "_" in text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _iso(ms: int) -> str:
    """Epoch ms as ISO-8601 UTC text (any year 1..9999, beyond pandas' nanosecond range), ms shown when not 0."""
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ms % 1000:03d}" if ms % 1000 else "") + "Z"


def _show(text: str) -> str:
    return repr(text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS] + "…")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.3g} MB"
