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

Each backend is one package — :mod:`storage.sqlite`, :mod:`storage.postgres` — with a module per
store (``ticks``, ``alerts``, ``datasets``) over its connection module (``db``), rows mapped to
records in :mod:`storage.rows`. The factory below picks the package by the URL's scheme from the
one registry, :data:`storage.registry.BACKENDS`; adding a backend is a package offering the
functions of :class:`storage.registry.Backend` plus its scheme there.
"""

from __future__ import annotations

from pathlib import Path

from config import StorageSettings
from storage.base import AlertStore, DatasetStore, TickStore, WriterClaim
from storage.errors import StorageError
from storage.lock import WriterInfo
from storage.registry import BACKENDS, Site, backend, backend_of, scheme_of
from storage.sqlite import DATASETS_FILE, SQLITE_MAGIC, SqliteTickStore, read_head

__all__ = [
    "BACKENDS",
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


def site_for(storage: StorageSettings, name: str) -> Site:
    """The site of the source whose database name is ``name`` (``storage.db`` overrides the file)."""
    return backend(scheme_of(storage.db_url)).site(storage, name)


def open_ticks(site: Site, *, verify: bool = False) -> TickStore:
    """The site's tick store (created and migrated if needed); ``verify`` runs an integrity check first."""
    return backend_of(site).open_ticks(site, verify=verify)


def open_tick_file(path: Path) -> TickStore:
    """A tick database written by this program, opened read-only (e.g. to replay it)."""
    return SqliteTickStore(path, readonly=True)


def open_alerts(site: Site) -> AlertStore:
    """The site's alert rules and alert history."""
    return backend_of(site).open_alerts(site)


def open_datasets(storage: StorageSettings) -> DatasetStore:
    """Uploaded OHLC datasets (shared by every source)."""
    return backend(scheme_of(storage.db_url)).open_datasets(storage)


def has_datasets(storage: StorageSettings) -> bool:
    """True once something was uploaded (listing datasets must not create their database)."""
    return backend(scheme_of(storage.db_url)).has_datasets(storage)


def claim_writer(site: Site, info: WriterInfo, *, shared: bool = False) -> WriterClaim:
    """The right to write the site's ticks; raises ``WriterBusy`` naming the holder.

    ``shared``: the caller's rows are exchange trades, so other writers may write the site at the
    same time (each their own symbols; an overlap stores a trade once). A server backend allows
    that; an SQLite file always has one writer.
    """
    return backend_of(site).claim_writer(site, info, shared=shared)


def current_writer(site: Site) -> WriterInfo | None:
    """The process writing the site now (on a server: the writers, summarised), or None."""
    return backend_of(site).current_writer(site)
