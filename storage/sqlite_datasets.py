"""Uploaded OHLC datasets in SQLite, in a file of their own apart from live/simulated/replayed ticks.

Each upload is one ``datasets`` row plus its bars in ``ohlc``; adding and deleting are single
transactions, and uploads are de-duplicated by a content hash. Every statement is parameterised;
names and filenames are stored as plain data. Validation is backend-neutral
(:mod:`storage.datasets`).
"""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pandas as pd

from storage.csv_import import ohlc_frame
from storage.datasets import AddResult, DatasetInfo, most_common_interval_ms, validate_upload
from storage.sqlite import SqliteDatabase, errors_named, transaction

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


class SqliteDatasetStore(SqliteDatabase):
    """Uploaded OHLC datasets in one SQLite file; implements :class:`storage.base.DatasetStore`."""

    MIGRATIONS = _MIGRATIONS
    KIND = "a datasets"
    TABLES = frozenset({"datasets", "ohlc"})

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5_000) -> None:
        super().__init__(path, busy_timeout_ms=busy_timeout_ms)
        # Per connection and off by default in SQLite; ON DELETE CASCADE needs it.
        self._conn.execute("PRAGMA foreign_keys = ON")

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
        upload = validate_upload(df, name=name, symbol=symbol, content_hash=content_hash)
        name, symbol, ts_ms, values = upload.name, upload.symbol, upload.ts_ms, upload.values
        # IMMEDIATE takes the write lock first, so two sessions uploading the same file cannot both pass the checks.
        with errors_named(self.path), transaction(self._conn):
            existing = self._conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM datasets WHERE content_hash = ?", (content_hash,)
            ).fetchone()
            if existing is not None:
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
        return AddResult(info, created=True)

    def list(self) -> builtins.list[DatasetInfo]:
        """Every dataset, newest upload first."""
        with errors_named(self.path):
            rows = self._conn.execute(
                f"SELECT {_INFO_COLUMNS} FROM datasets ORDER BY uploaded_ms DESC, id DESC").fetchall()
        return [DatasetInfo(*row) for row in rows]

    def get(self, dataset_id: int) -> DatasetInfo | None:
        with errors_named(self.path):
            row = self._conn.execute(f"SELECT {_INFO_COLUMNS} FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        return None if row is None else DatasetInfo(*row)

    def load(self, dataset_id: int) -> pd.DataFrame:
        """The dataset's bars in :func:`storage.csv_import.ohlc_frame` layout; KeyError for an unknown id."""
        with errors_named(self.path):
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
        with errors_named(self.path), transaction(self._conn):
            return self._conn.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,)).rowcount > 0
