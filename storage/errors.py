"""Storage's own exception types: what callers see instead of a driver's (sqlite3, psycopg) errors.

Every message names the database (a file path, or a URL with its password masked) and what went
wrong, so it can go straight to a status line or a ``error: ...`` message. Callers decide by type:

* :class:`StorageUnavailable` — transient (locked, busy, server gone, disk full): keep the data
  and retry later.
* :class:`RowRejected` — this row (or batch) has a value the database cannot take: store the
  others, count this one.
* :class:`StorageCorrupt` — the database is damaged or is not a database of ours: stop writing.
* :class:`StorageLocationError` — the configured place cannot hold a database (a directory, a
  missing folder, a non-SQLite file): a configuration error.
* :class:`WriterBusy` — another process already writes this database.
* :class:`SchemaError` — the database was written by a newer version of this program.
"""

from __future__ import annotations


class StorageError(RuntimeError):
    """Base class: the storage layer could not do what was asked."""


class StorageUnavailable(StorageError):
    """Transient: the database is locked, busy, unreachable or full. Retrying may succeed."""


class RowRejected(StorageError):
    """A value the database cannot store (e.g. an integer beyond 64 bits); other rows are fine."""


class StorageCorrupt(StorageError):
    """The database is damaged (failed integrity check, malformed pages) or not a database."""


class StorageLocationError(StorageError):
    """The configured location cannot hold a database: a directory, a missing folder, another kind of file."""


class WriterBusy(StorageError):
    """Another writer holds this database; the message says who (process id, start time, label)."""


class SchemaError(StorageError):
    """The database's schema is newer than this program, or is not the schema this store expects."""
