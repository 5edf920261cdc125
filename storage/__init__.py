"""Persistence: the protocols in :mod:`storage.base`, the backends, and the one factory that opens them.

Everything above this package asks the factory for a store and sees only the protocols; the
database each source uses is worked out here and nowhere else:

* a *site* is where one source's data lives: its ticks and feed events, and beside them its
  alert rules and alert history. With the SQLite backend a site is ``<data_dir>/<name>.sqlite3``
  (or ``--db``) plus ``<stem>-alerts.sqlite3`` next to it. ``name`` is the source's database name
  (``live``, ``simulated``, ``replay-<file>-<tag>``), so live, simulated and replayed data never mix;
* uploaded datasets live apart, in ``<data_dir>/uploads.sqlite3``.

Adding a backend is one module implementing :mod:`storage.base` plus a branch in the openers below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config import Settings
from storage.base import DatasetStore, TickStore
from storage.errors import StorageError, StorageLocationError
from storage.lock import WriterInfo, WriterLock, writer_of
from storage.sqlite import SQLITE_MAGIC, SqliteTickStore, check_location, read_head
from storage.sqlite_alerts import SqliteAlertStore
from storage.sqlite_datasets import SqliteDatasetStore

DATASETS_FILE = "uploads.sqlite3"

__all__ = [
    "DATASETS_FILE",
    "SQLITE_MAGIC",
    "Site",
    "StorageError",
    "claim_writer",
    "current_writer",
    "has_datasets",
    "open_alerts",
    "open_datasets",
    "open_tick_file",
    "open_ticks",
    "read_head",
    "site_for",
]


@dataclass(frozen=True, slots=True)
class Site:
    """Where one source's data lives (see the module docstring).

    ``explicit``: the tick database was named by ``--db``/``QUANT_DB``, so its folder must
    already exist; otherwise it sits in ``data_dir``, which is created on first use.
    """

    name: str
    ticks_path: Path
    explicit: bool = False

    @property
    def alerts_path(self) -> Path:
        """Alert rules and history sit next to the ticks they watch, e.g. ``live-alerts.sqlite3``."""
        return self.ticks_path.with_name(f"{self.ticks_path.stem}-alerts.sqlite3")

    @property
    def location(self) -> str:
        """How messages and status lines name this site's tick database."""
        return str(self.ticks_path)

    def exists(self) -> bool:
        """True once the tick database has been created (readers do not create it)."""
        return self.ticks_path.is_file()

    def check(self) -> None:
        """Raise :class:`~storage.errors.StorageLocationError` if the tick database cannot live there.

        A directory, a missing ``--db`` folder or a non-SQLite file is refused before anything is
        created; the default ``data_dir`` is created here.
        """
        if not self.explicit and not self.ticks_path.parent.exists():
            try:
                self.ticks_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageLocationError(
                    f"cannot create the data folder {str(self.ticks_path.parent)!r}: {exc.strerror or exc}"
                ) from None
        check_location(self.ticks_path)


def site_for(settings: Settings, name: str) -> Site:
    """The site of the source whose database name is ``name`` (``settings.db`` overrides the file)."""
    if settings.db is not None:
        return Site(name, settings.db, explicit=True)
    return Site(name, settings.data_dir / f"{name}.sqlite3")


def open_ticks(site: Site, *, verify: bool = False) -> TickStore:
    """The site's tick store (created and migrated if needed); ``verify`` runs an integrity check first."""
    site.check()
    store = SqliteTickStore(site.ticks_path)
    if verify:
        try:
            store.verify()
        except StorageError:
            store.close()
            raise
    return store


def open_tick_file(path: Path) -> TickStore:
    """A tick database written by this program, opened read-only (e.g. to replay it)."""
    return SqliteTickStore(path, readonly=True)


def open_alerts(site: Site) -> SqliteAlertStore:
    """The site's alert rules and alert history."""
    site.check()
    return SqliteAlertStore(site.alerts_path)


def open_datasets(settings: Settings) -> DatasetStore:
    """Uploaded OHLC datasets (shared by every source)."""
    Site("uploads", settings.data_dir / DATASETS_FILE).check()
    return SqliteDatasetStore(settings.data_dir / DATASETS_FILE)


def has_datasets(settings: Settings) -> bool:
    """True once something was uploaded (listing datasets must not create their database)."""
    return (settings.data_dir / DATASETS_FILE).is_file()


def claim_writer(site: Site, info: WriterInfo) -> WriterLock:
    """The exclusive right to write the site's tick database; raises ``WriterBusy`` naming the holder."""
    site.check()
    return WriterLock(site.ticks_path, info).acquire()


def current_writer(site: Site) -> WriterInfo | None:
    """The process writing the site now, or None (then a dashboard may start its own writer)."""
    return writer_of(site.ticks_path)
