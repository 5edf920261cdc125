"""Persistence: the protocols in :mod:`storage.base`, the backends, and the one factory that opens them.

Everything above this package asks the factory for a store and sees only the protocols; the
database each source uses is worked out here and nowhere else:

* a *site* is where one source's data lives: its ticks and feed events, and beside them its
  alert rules and alert history. With the SQLite backend a site is ``<data_dir>/<name>.sqlite3``
  (or ``--db``) plus ``<stem>-alerts.sqlite3`` next to it. ``name`` is the source's database name
  (``live``, ``simulated``, ``replay-<file>-<tag>``), so live, simulated and replayed data never mix;
* uploaded datasets live apart, in ``<data_dir>/uploads.sqlite3``.

With a server URL (``--db-url``/``QUANT_DB_URL``) everything lives on that server instead: a site
is one schema of the database named in the URL (:mod:`storage.postgres`), its ``location`` the URL
with the password masked plus the schema.

Adding a server backend is one module plus a URL scheme in :data:`SERVER_BACKENDS`. The module
offers ``schema_name(name)``, ``describe(url, schema)`` (the location, password masked),
``open_ticks(url, schema, verify=)``, ``open_alerts(url, schema)``, ``open_datasets(url)``,
``has_datasets(url)``, ``claim_writer(url, schema, info, shared=)`` and
``current_writer(url, schema)``, returning implementations of :mod:`storage.base`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from config import Settings
from storage.base import AlertStore, DatasetStore, TickStore, WriterClaim
from storage.errors import StorageError, StorageLocationError
from storage.lock import WriterInfo, WriterLock, writer_of
from storage.sqlite import SQLITE_MAGIC, SqliteTickStore, check_location, read_head
from storage.sqlite_alerts import SqliteAlertStore
from storage.sqlite_datasets import SqliteDatasetStore

DATASETS_FILE = "uploads.sqlite3"
SERVER_BACKENDS = {"postgresql": "storage.postgres", "postgres": "storage.postgres"}  # URL scheme → module

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
    ``url``/``schema``: a server site (then ``ticks_path`` is None); the URL may hold a password,
    so it is left out of the repr.
    """

    name: str
    ticks_path: Path | None = None
    explicit: bool = False
    url: str | None = field(default=None, repr=False)
    schema: str | None = None

    @property
    def alerts_path(self) -> Path:
        """Alert rules and history sit next to the ticks they watch, e.g. ``live-alerts.sqlite3``."""
        return self.ticks_path.with_name(f"{self.ticks_path.stem}-alerts.sqlite3")

    @property
    def location(self) -> str:
        """How messages and status lines name this site's tick database (never with a password)."""
        if self.url is not None:
            return _server(self.url).describe(self.url, self.schema)
        return str(self.ticks_path)

    def exists(self) -> bool:
        """True once the tick database has been created (readers do not create it).

        A server is always there: opening a site's schema creates it when it is missing.
        """
        return self.url is not None or self.ticks_path.is_file()

    def check(self) -> None:
        """Raise :class:`~storage.errors.StorageLocationError` if the tick database cannot live there.

        A directory, a missing ``--db`` folder or a non-SQLite file is refused before anything is
        created; the default ``data_dir`` is created here. A server site has nothing to check
        before connecting (a bad URL was refused with the settings).
        """
        if self.url is not None:
            return
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
    if settings.db_url is not None:
        return Site(name, url=settings.db_url, schema=_server(settings.db_url).schema_name(name))
    if settings.db is not None:
        return Site(name, settings.db, explicit=True)
    return Site(name, settings.data_dir / f"{name}.sqlite3")


def open_ticks(site: Site, *, verify: bool = False) -> TickStore:
    """The site's tick store (created and migrated if needed); ``verify`` runs an integrity check first."""
    if site.url is not None:
        return _server(site.url).open_ticks(site.url, site.schema, verify=verify)
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


def open_alerts(site: Site) -> AlertStore:
    """The site's alert rules and alert history."""
    if site.url is not None:
        return _server(site.url).open_alerts(site.url, site.schema)
    site.check()
    return SqliteAlertStore(site.alerts_path)


def open_datasets(settings: Settings) -> DatasetStore:
    """Uploaded OHLC datasets (shared by every source)."""
    if settings.db_url is not None:
        return _server(settings.db_url).open_datasets(settings.db_url)
    Site("uploads", settings.data_dir / DATASETS_FILE).check()
    return SqliteDatasetStore(settings.data_dir / DATASETS_FILE)


def has_datasets(settings: Settings) -> bool:
    """True once something was uploaded (listing datasets must not create their database)."""
    if settings.db_url is not None:
        return _server(settings.db_url).has_datasets(settings.db_url)
    return (settings.data_dir / DATASETS_FILE).is_file()


def claim_writer(site: Site, info: WriterInfo, *, shared: bool = False) -> WriterClaim:
    """The right to write the site's ticks; raises ``WriterBusy`` naming the holder.

    ``shared``: the caller's rows are exchange trades, so other writers may write the site at the
    same time (each their own symbols; an overlap stores a trade once). A server backend allows
    that; an SQLite file always has one writer.
    """
    if site.url is not None:
        return _server(site.url).claim_writer(site.url, site.schema, info, shared=shared)
    site.check()
    return WriterLock(site.ticks_path, info).acquire()


def current_writer(site: Site) -> WriterInfo | None:
    """The process writing the site now (on a server: the writers, summarised), or None."""
    if site.url is not None:
        return _server(site.url).current_writer(site.url, site.schema)
    return writer_of(site.ticks_path)


def _server(url: str) -> ModuleType:
    """The backend module of a server URL's scheme, imported on first use (SQLite users need no driver)."""
    return importlib.import_module(SERVER_BACKENDS[url.partition("://")[0]])
