"""Uploaded OHLC datasets, in their own SQLite file apart from live/simulated/replayed ticks.

One :class:`DatasetStore` wraps one connection and must be used from one thread only, like
:class:`storage.sqlite.SqliteStore`. Each upload is one ``datasets`` row plus its bars in
``ohlc``; adding and deleting are single transactions, and uploads are de-duplicated by the
SHA-256 of the uploaded bytes (:func:`storage.csv_import.content_hash`). Every statement is
parameterised; names and filenames are stored as plain data.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from config import normalize_symbol
from storage.csv_import import OHLC_COLUMNS, ohlc_frame
from storage.sqlite import connect

DATASETS_FILE = "uploads.sqlite3"
MAX_NAME_CHARS = 200

_MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE IF NOT EXISTS datasets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            symbol TEXT NOT NULL,
            filename TEXT NOT NULL,
            content_hash TEXT NOT NULL UNIQUE,
            uploaded_ms INTEGER NOT NULL,
            rows INTEGER NOT NULL,
            first_ms INTEGER NOT NULL,
            last_ms INTEGER NOT NULL,
            interval_ms INTEGER
        );
        CREATE TABLE IF NOT EXISTS ohlc (
            dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            ts_ms INTEGER NOT NULL,
            open REAL,
            high REAL,
            low REAL,
            close REAL,
            volume REAL,
            PRIMARY KEY (dataset_id, ts_ms)
        ) WITHOUT ROWID;
    """,
}
SCHEMA_VERSION = max(_MIGRATIONS)

_INFO_COLUMNS = "id, name, symbol, filename, content_hash, uploaded_ms, rows, first_ms, last_ms, interval_ms"
_INSERT_DATASET = (
    "INSERT INTO datasets (name, symbol, filename, content_hash, uploaded_ms, rows, first_ms, last_ms, interval_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_OHLC = "INSERT INTO ohlc (dataset_id, ts_ms, open, high, low, close, volume) VALUES (?, ?, ?, ?, ?, ?, ?)"
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
# data.binance.vision kline archives: <SYMBOL>-<interval>-<YYYY-MM[-DD]>.zip (monthly or daily files).
_BINANCE_KLINE_NAME = re.compile(r"^([A-Za-z0-9]{2,20})-\d+(?:s|m|h|d|w|mo)-\d{4}-\d{2}(?:-\d{2})?$")


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """One stored upload. Times are UTC epoch ms; ``interval_ms`` is the usual bar spacing (None: one row)."""

    id: int
    name: str
    symbol: str
    filename: str
    content_hash: str
    uploaded_ms: int
    rows: int
    first_ms: int
    last_ms: int
    interval_ms: int | None


@dataclass(frozen=True, slots=True)
class AddResult:
    """Outcome of :meth:`DatasetStore.add`: the stored dataset, and False if that content was already there."""

    dataset: DatasetInfo
    created: bool


@dataclass(frozen=True, slots=True)
class UploadDefaults:
    """Suggested dataset name and symbol for an uploaded file; ``symbol`` is None when the name does not say."""

    name: str
    symbol: str | None


def defaults_from_filename(filename: str) -> UploadDefaults:
    """Default name and symbol for an upload, e.g. ``ETHUSDT-1m-2022-08-14.zip`` → ``ETHUSDT-1m-2022-08-14``, ETHUSDT.

    The symbol is only taken from the data.binance.vision kline naming scheme; for any other
    name it is None, so the UI asks instead of guessing from an arbitrary word.
    """
    # Browsers send a bare name, but old ones sent the client's full path (either separator).
    base = PureWindowsPath(PurePosixPath(filename).name).name.strip()
    stem = re.sub(r"(\.csv)?(\.zip)?$", "", base, flags=re.IGNORECASE).strip() or "upload"
    match = _BINANCE_KLINE_NAME.fullmatch(stem)
    # The pattern admits exactly what config.normalize_symbol accepts once upper-cased.
    return UploadDefaults(name=stem[:MAX_NAME_CHARS], symbol=match.group(1).upper() if match else None)


def most_common_interval_ms(ts_ms: np.ndarray) -> int | None:
    """Most frequent gap between consecutive sorted times in ms (ties: the smallest); None for < 2 times."""
    if len(ts_ms) < 2:
        return None
    gaps, counts = np.unique(np.diff(ts_ms), return_counts=True)
    # np.unique sorts the gaps, so argmax picks the smallest of equally frequent ones.
    return int(gaps[np.argmax(counts)])


class DatasetStore:
    """Uploaded OHLC datasets in one SQLite file. Not thread-safe: one instance per thread."""

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5_000) -> None:
        self.path = Path(path)
        self._conn = connect(self.path, _MIGRATIONS, busy_timeout_ms=busy_timeout_ms)
        # Per connection and off by default in SQLite; ON DELETE CASCADE needs it.
        self._conn.execute("PRAGMA foreign_keys = ON")

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def add(
        self, df: pd.DataFrame, *, name: str, symbol: str, filename: str, content_hash: str, uploaded_ms: int
    ) -> AddResult:
        """Store one parsed upload (layout of :func:`storage.csv_import.parse_ohlc_csv`) in ONE transaction.

        If a dataset with ``content_hash`` exists, nothing is written and that dataset is returned
        with ``created=False`` (whatever name it was given then). ``uploaded_ms`` is UTC epoch ms.

        Raises
        ------
        config.ConfigError
            ``symbol`` is not 2-20 letters/digits (it is upper-cased otherwise).
        ValueError
            ``name`` is empty, too long or has control characters; another dataset already has
            this name; ``content_hash`` is not 64 lower-case hex digits; ``df`` is not the
            expected layout (UTC times strictly increasing in whole ms, finite float values).
        """
        symbol = normalize_symbol(symbol)
        name = name.strip()
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise ValueError(f"dataset name {name!r} must be 1-{MAX_NAME_CHARS} printable characters")
        if not _HASH_RE.fullmatch(content_hash):
            raise ValueError(f"content_hash {content_hash!r} is not a SHA-256 hex digest")
        ts_ms, values = _frame_arrays(df)
        # IMMEDIATE takes the write lock first, so two sessions uploading the same file cannot both pass the checks.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            existing = self._conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM datasets WHERE content_hash = ?", (content_hash,)
            ).fetchone()
            if existing is not None:
                self._conn.execute("COMMIT")
                return AddResult(DatasetInfo(*existing), created=False)
            if self._conn.execute("SELECT 1 FROM datasets WHERE name = ?", (name,)).fetchone():
                raise ValueError(f"a dataset named {name!r} already exists with different content; choose another name")
            summary = (len(ts_ms), int(ts_ms[0]), int(ts_ms[-1]), most_common_interval_ms(ts_ms))
            cursor = self._conn.execute(
                _INSERT_DATASET, (name, symbol, filename, content_hash, int(uploaded_ms), *summary)
            )
            info = DatasetInfo(cursor.lastrowid, name, symbol, filename, content_hash, int(uploaded_ms), *summary)
            self._conn.executemany(
                _INSERT_OHLC, ((info.id, t, *row) for t, row in zip(ts_ms.tolist(), values.tolist(), strict=True))
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return AddResult(info, created=True)

    def list(self) -> builtins.list[DatasetInfo]:
        """Every dataset, newest upload first."""
        rows = self._conn.execute(f"SELECT {_INFO_COLUMNS} FROM datasets ORDER BY uploaded_ms DESC, id DESC")
        return [DatasetInfo(*row) for row in rows]

    def get(self, dataset_id: int) -> DatasetInfo | None:
        row = self._conn.execute(f"SELECT {_INFO_COLUMNS} FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        return None if row is None else DatasetInfo(*row)

    def load(self, dataset_id: int) -> pd.DataFrame:
        """The dataset's bars in :func:`storage.csv_import.ohlc_frame` layout; KeyError for an unknown id."""
        rows = self._conn.execute(
            "SELECT ts_ms, open, high, low, close, volume FROM ohlc WHERE dataset_id = ? ORDER BY ts_ms",
            (dataset_id,),
        ).fetchall()
        # add() never stores a dataset without rows, so no rows means no such dataset.
        if not rows:
            raise KeyError(f"no dataset with id {dataset_id}")
        ts_ms, *columns = zip(*rows, strict=True)
        return ohlc_frame(np.array(ts_ms, dtype=np.int64), np.array(columns, dtype=np.float64).T)

    def delete(self, dataset_id: int) -> bool:
        """Delete a dataset and its bars in one transaction; False if there was no such dataset."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = self._conn.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,)).rowcount > 0
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return deleted

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> DatasetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame_arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Epoch-ms times (n,) and OHLCV values (n, 5) of a frame, after checking its layout."""
    index = df.index
    if not isinstance(index, pd.DatetimeIndex) or str(index.tz) != "UTC":
        raise ValueError("dataset frame must have a UTC DatetimeIndex")
    if tuple(df.columns) != OHLC_COLUMNS:
        raise ValueError(f"dataset frame columns must be {list(OHLC_COLUMNS)}, got {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("dataset frame has no rows")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise ValueError("dataset frame times must be strictly increasing")
    # as_unit truncates silently, so compare back to catch sub-millisecond times.
    in_ms = index.as_unit("ms")
    if not in_ms.equals(index):
        raise ValueError("dataset frame times must be whole milliseconds")
    ts_ms = in_ms.asi8
    values = df.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("dataset frame values must be finite")
    return ts_ms, values
