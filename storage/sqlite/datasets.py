"""Uploaded OHLC datasets in SQLite, in a file of their own apart from live/simulated/replayed ticks.

Each upload is one ``datasets`` row plus its bars in ``ohlc``; adding and deleting are single
transactions, and uploads are de-duplicated by a content hash. Every statement is parameterised;
names and filenames are stored as plain data. Validation is backend-neutral
(:mod:`storage.datasets`).
"""

from __future__ import annotations

import builtins
from pathlib import Path

import pandas as pd

from storage import rows
from storage.datasets import AddResult, DatasetInfo, validate_upload
from storage.sqlite.db import SqliteDatabase, errors_named, transaction

MIGRATIONS: dict[int, str] = {
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
SCHEMA_VERSION = max(MIGRATIONS)

_INSERT_DATASET = f"INSERT INTO datasets ({rows.INSERT_DATASET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_OHLC = f"INSERT INTO ohlc ({rows.OHLC_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"


class SqliteDatasetStore(SqliteDatabase):
    """Uploaded OHLC datasets in one SQLite file; implements :class:`storage.base.DatasetStore`."""

    COMPONENT = "datasets"
    MIGRATIONS = MIGRATIONS
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
        # IMMEDIATE takes the write lock first, so two sessions uploading the same file cannot both pass the checks.
        with errors_named(self.path), transaction(self._conn):
            existing = rows.dataset_info(self._conn.execute(rows.SELECT_DATASET_BY_HASH, (content_hash,)).fetchone())
            if existing is not None:
                return AddResult(existing, created=False)
            if self._conn.execute(rows.DATASET_NAME_TAKEN, (upload.name,)).fetchone():
                raise rows.name_taken(upload.name)
            inserted = rows.dataset_row(upload, filename, content_hash, uploaded_ms)
            info = rows.dataset_info((self._conn.execute(_INSERT_DATASET, inserted).lastrowid, *inserted))
            self._conn.executemany(_INSERT_OHLC, rows.ohlc_rows(info.id, upload.ts_ms, upload.values))
        return AddResult(info, created=True)

    def list(self) -> builtins.list[DatasetInfo]:
        """Every dataset, newest upload first."""
        with errors_named(self.path):
            return [rows.dataset_info(row) for row in self._conn.execute(rows.SELECT_DATASETS).fetchall()]

    def get(self, dataset_id: int) -> DatasetInfo | None:
        with errors_named(self.path):
            return rows.dataset_info(self._conn.execute(rows.SELECT_DATASET, (dataset_id,)).fetchone())

    def load(self, dataset_id: int) -> pd.DataFrame:
        """The dataset's bars in :func:`storage.csv_import.ohlc_frame` layout; KeyError for an unknown id."""
        with errors_named(self.path):
            found = self._conn.execute(rows.SELECT_OHLC, (dataset_id,)).fetchall()
        return rows.ohlc_from_rows(dataset_id, found)

    def delete(self, dataset_id: int) -> bool:
        """Delete a dataset and its bars in one transaction; False if there was no such dataset."""
        with errors_named(self.path), transaction(self._conn):
            return self._conn.execute(rows.DELETE_DATASET, (dataset_id,)).rowcount > 0
