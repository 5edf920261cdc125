"""SQLite backend: a site is a file per store, what the registry (:mod:`storage.registry`) calls for a site without URL.

A source's ticks, feed events and bars live in ``<data_dir>/<name>.sqlite3`` (or the ``--db``
file) — :mod:`storage.sqlite.ticks` — with its alert rules and history in
``<stem>-alerts.sqlite3`` beside it (:mod:`storage.sqlite.alerts`); uploaded datasets live in
``<data_dir>/uploads.sqlite3`` (:mod:`storage.sqlite.datasets`). Connections, errors and
migrations: :mod:`storage.sqlite.db`. One writer per file, held by :mod:`storage.lock`.
"""

from __future__ import annotations

from config import StorageSettings
from storage.errors import StorageLocationError
from storage.lock import WriterInfo, WriterLock, writer_of
from storage.registry import Site, verified
from storage.sqlite.alerts import SqliteAlertStore
from storage.sqlite.datasets import SqliteDatasetStore
from storage.sqlite.db import SQLITE_MAGIC, SqliteDatabase, check_location, read_head
from storage.sqlite.ticks import SCHEMA_VERSION, TICK_COLUMNS, SqliteTickStore

DATASETS_FILE = "uploads.sqlite3"

# Re-exported; the functions below are the backend interface (storage.registry.Backend).
__all__ = [
    "DATASETS_FILE", "SCHEMA_VERSION", "SQLITE_MAGIC", "TICK_COLUMNS", "SqliteAlertStore", "SqliteDatabase",
    "SqliteDatasetStore", "SqliteTickStore", "read_head",
]


def site(storage: StorageSettings, name: str) -> Site:
    """``storage.db`` if given (its folder must exist), else ``<data_dir>/<name>.sqlite3``."""
    if storage.db is not None:
        return Site(name, storage.db, explicit=True)
    return Site(name, storage.data_dir / f"{name}.sqlite3")


def location(site: Site) -> str:
    return str(site.file)


def exists(site: Site) -> bool:
    return site.file.is_file()


def check(site: Site) -> None:
    """Refuse a directory, a missing ``--db`` folder or a non-SQLite file; create the default ``data_dir``."""
    if not site.explicit and not site.file.parent.exists():
        try:
            site.file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageLocationError(
                f"cannot create the data folder {str(site.file.parent)!r}: {exc.strerror or exc}"
            ) from None
    check_location(site.file)


def open_ticks(site: Site, *, verify: bool = False) -> SqliteTickStore:
    check(site)
    return verified(SqliteTickStore(site.file), verify)


def open_alerts(site: Site) -> SqliteAlertStore:
    check(site)
    return SqliteAlertStore(site.alerts_path)


def claim_writer(site: Site, info: WriterInfo, *, shared: bool = False) -> WriterLock:
    """The file's one-writer lock (``shared`` changes nothing: an SQLite file always has one writer)."""
    check(site)
    return WriterLock(site.file, info).acquire()


def current_writer(site: Site) -> WriterInfo | None:
    return writer_of(site.file)


def open_datasets(storage: StorageSettings) -> SqliteDatasetStore:
    check(Site("uploads", storage.data_dir / DATASETS_FILE))
    return SqliteDatasetStore(storage.data_dir / DATASETS_FILE)


def has_datasets(storage: StorageSettings) -> bool:
    return (storage.data_dir / DATASETS_FILE).is_file()
