"""The research history: months of bars per (market, symbol) in Parquet, apart from the live databases.

Research scans read many symbols over long spans; a columnar store lets a worker read just the
closes of just the symbols its block of pairs needs. The layout is Hive-style partitions, one file
per month::

    <root>/market=<spot|um>/interval=<1m|...>/symbol=<SYMBOL>/month=<YYYY-MM>/bars.parquet

``root`` is a folder or a URL pyarrow's filesystems understand (``file://``, ``s3://``, ...), so
workers on other machines read the same store. A month is written whole and atomically (to a
temporary name, then renamed): a reader sees the old file or the new one, never half of one, and
writing a month again replaces it rather than storing it twice.

Columns (one row per bar, sorted by ``open_time``, unique): ``open_time`` (UTC epoch ms, the bar's
start), ``open``, ``high``, ``low``, ``close`` (quote currency), ``volume`` (base asset),
``quote_volume`` (quote currency) and ``trades`` (count). A month may carry its provenance in the
file's own metadata (:meth:`ResearchStore.month_sources`: e.g. each archive file name and its sha256),
renamed into place with the bars, so it can never disagree with them.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from domain import Market, Timeframe
from storage.errors import StorageError

FILE_NAME = "bars.parquet"
COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades")
SCHEMA = pa.schema([("open_time", pa.int64())] + [(name, pa.float64()) for name in COLUMNS[1:-1]]
                   + [("trades", pa.int64())])
_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
SOURCES_KEY = b"quant.sources"  # Parquet key-value metadata: JSON object, source name -> its digest


class ResearchStore:
    """Monthly Parquet files of bars under ``root`` (see the module docstring). Thread- and process-safe
    for readers; one writer per month at a time (the last rename wins, both whole)."""

    def __init__(self, root: str) -> None:
        self.root = str(root)
        if "://" in self.root:
            self.fs, self.base = pafs.FileSystem.from_uri(self.root)
        else:
            self.fs, self.base = pafs.LocalFileSystem(), self.root.rstrip("/") or "/"

    def path(self, market: Market, timeframe: Timeframe, symbol: str, month: str) -> str:
        """Where the month ``YYYY-MM`` of ``symbol``'s bars lives. ValueError naming a bad symbol or month."""
        if not _SYMBOL_RE.fullmatch(symbol):
            raise ValueError(f"invalid symbol {symbol!r}: expected 2-20 upper-case letters or digits")
        if not _MONTH_RE.fullmatch(month):
            raise ValueError(f"invalid month {month!r}: expected YYYY-MM")
        return (f"{self.base}/market={market.value}/interval={timeframe.name}/symbol={symbol}"
                f"/month={month}/{FILE_NAME}")

    def write_month(self, market: Market, timeframe: Timeframe, symbol: str, month: str, bars: pd.DataFrame,
                    sources: Mapping[str, str] | None = None) -> str:
        """Store ``bars`` (the columns of :data:`COLUMNS`) as ``symbol``'s month, replacing what was there.

        Every bar must start inside ``month`` on the timeframe's grid, once. ValueError naming the
        first problem otherwise (nothing written); StorageError when the file cannot be written.
        ``sources`` (name → digest, e.g. archive file → sha256) is kept in the file's metadata, read
        back by :meth:`month_sources`. Returns the file's path.
        """
        path = self.path(market, timeframe, symbol, month)
        table = _checked_table(bars, timeframe, month)
        if sources is not None:
            provenance = json.dumps({str(k): str(v) for k, v in sorted(sources.items())}).encode()
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), SOURCES_KEY: provenance})
        folder = path.rsplit("/", 1)[0]
        temporary = f"{folder}/.{FILE_NAME}.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.create_dir(folder, recursive=True)
            pq.write_table(table, temporary, filesystem=self.fs, compression="zstd")
            self.fs.move(temporary, path)
        except OSError as exc:
            _remove_quietly(self.fs, temporary)
            raise StorageError(f"cannot write {path}: {exc}") from exc
        except BaseException:  # Ctrl-C or a failing worker mid-write: the half file must not stay behind
            _remove_quietly(self.fs, temporary)
            raise
        return path

    def months(self, market: Market, timeframe: Timeframe, symbol: str) -> list[str]:
        """The months stored for ``symbol`` (``YYYY-MM``, oldest first)."""
        folder = self.path(market, timeframe, symbol, "2000-01").rsplit("/", 2)[0]  # the symbol's folder
        found = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        months = [info.base_name.removeprefix("month=") for info in found if info.type == pafs.FileType.Directory]
        return sorted(m for m in months if _MONTH_RE.fullmatch(m) and self.fs.get_file_info(
            self.path(market, timeframe, symbol, m)).type == pafs.FileType.File)

    def month_sources(self, market: Market, timeframe: Timeframe, symbol: str, month: str) -> dict[str, str] | None:
        """The ``sources`` the month was written with (``{}`` when none were given); None when the
        month is not stored or its file cannot be read (so a caller writes it again)."""
        path = self.path(market, timeframe, symbol, month)
        try:
            metadata = pq.read_schema(path, filesystem=self.fs).metadata or {}
        except (OSError, pa.ArrowException):  # absent or unreadable: nothing trustworthy is stored
            return None
        try:
            found = json.loads(metadata.get(SOURCES_KEY, b"{}"))
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def symbols(self, market: Market, timeframe: Timeframe) -> list[str]:
        """The symbols with at least one stored month (sorted)."""
        folder = f"{self.base}/market={market.value}/interval={timeframe.name}"
        found = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        names = [info.base_name.removeprefix("symbol=") for info in found if info.type == pafs.FileType.Directory]
        return sorted(n for n in names if _SYMBOL_RE.fullmatch(n) and self.months(market, timeframe, n))

    def bars(self, market: Market, timeframe: Timeframe, symbol: str, start_ms: int, end_ms: int,
             columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
        """``symbol``'s bars starting in ``[start_ms, end_ms)`` (UTC epoch ms), only ``columns`` (plus
        ``open_time``), reading only the months that overlap. Empty (with those columns) when none."""
        wanted = ["open_time", *(c for c in columns if c != "open_time")]
        parts = []
        for month in months_between(start_ms, end_ms):
            path = self.path(market, timeframe, symbol, month)
            if self.fs.get_file_info(path).type != pafs.FileType.File:
                continue
            try:
                table = pq.read_table(path, columns=wanted, filesystem=self.fs,
                                      filters=[("open_time", ">=", start_ms), ("open_time", "<", end_ms)])
            except (OSError, pa.ArrowException) as exc:
                raise StorageError(f"cannot read {path}: {exc}") from exc
            part = table.to_pandas()
            # Only write_month's own files hold what the scans assume (one bar per grid time): a file put
            # there by something else is refused by name, not left to fail later without one.
            problem = _time_problem(part["open_time"].to_numpy(), timeframe, month)
            if problem is not None:
                raise StorageError(f"cannot read {path}: {problem}; not a month this store wrote (damaged, or "
                                   "written by another tool): import the month again (python -m cli.archives)")
            parts.append(part)
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=SCHEMA.field(c).type.to_pandas_dtype()) for c in wanted})
        return pd.concat(parts, ignore_index=True)

    def closes(self, market: Market, timeframe: Timeframe, symbols: Sequence[str], start_ms: int,
               end_ms: int) -> pd.DataFrame:
        """Close prices (quote currency) of ``symbols`` over ``[start_ms, end_ms)``: one column per
        symbol, indexed by bar start (UTC), NaN where a symbol has no bar. Reads only those symbols."""
        columns = {}
        for symbol in symbols:
            frame = self.bars(market, timeframe, symbol, start_ms, end_ms, columns=("close",))
            columns[symbol] = pd.Series(frame["close"].to_numpy(),
                                        index=pd.to_datetime(frame["open_time"].to_numpy(), unit="ms", utc=True))
        if not columns:
            return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
        return pd.DataFrame(columns).sort_index()


def months_between(start_ms: int, end_ms: int) -> list[str]:
    """The months (``YYYY-MM``, UTC) that ``[start_ms, end_ms)`` touches; empty when it is empty."""
    if end_ms <= start_ms:
        return []
    first = pd.Timestamp(start_ms, unit="ms").to_period("M")  # naive timestamps are UTC here
    last = pd.Timestamp(end_ms - 1, unit="ms").to_period("M")
    return [str(p) for p in pd.period_range(first, last, freq="M")]


def _checked_table(bars: pd.DataFrame, timeframe: Timeframe, month: str) -> pa.Table:
    missing = [c for c in COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars for {month} lack the column(s) {', '.join(missing)}")
    problem = _time_problem(bars["open_time"].to_numpy(), timeframe, month)
    if problem is not None:
        raise ValueError(f"bars for {month}: {problem}")
    return pa.Table.from_pandas(bars.loc[:, list(COLUMNS)], schema=SCHEMA, preserve_index=False)


def _time_problem(times: np.ndarray, timeframe: Timeframe, month: str) -> str | None:
    """What is wrong with a month's bar start times (UTC epoch ms), None when nothing: every bar starts
    inside ``month`` on the timeframe's grid, once, in order (what :meth:`ResearchStore.write_month` stores)."""
    if not np.issubdtype(times.dtype, np.integer):
        return "open_time must be whole UTC epoch milliseconds"
    period = pd.Period(month, freq="M")
    start, end = (p.start_time.value // 1_000_000 for p in (period, period + 1))  # naive = UTC here
    outside = (times < start) | (times >= end)
    if outside.any():
        return f"a bar at {int(times[outside][0])} ms starts outside the month"
    if (times % timeframe.ms).any():
        return f"open_time not on the {timeframe.name} grid"
    if len(times) > 1 and not (np.diff(times) > 0).all():
        return "open_time must be strictly increasing (sorted, no duplicates)"
    return None


def _remove_quietly(fs: pafs.FileSystem, path: str) -> None:
    with contextlib.suppress(OSError):  # never created, or already gone: nothing to clean
        fs.delete_file(path)
