"""PostgreSQL backend: what the registry (:mod:`storage.registry`) calls for a ``postgresql://`` URL.

Selected by ``--db-url``/``QUANT_DB_URL``. Each site (a source's database name: ``live``,
``simulated``, ``replay-<file>-<tag>``) is one PostgreSQL *schema* of the same name made
identifier-safe (:func:`~storage.postgres.db.schema_name`), holding the tables the SQLite files
hold (``ticks``, ``feed_events``, ``bars`` in :mod:`storage.postgres.ticks`; ``alert_rules``,
``alerts``, ``alert_rules_version`` in :mod:`storage.postgres.alerts`), so live, simulated and
replayed data never mix; uploaded datasets live in a schema of their own, ``uploads``
(:mod:`storage.postgres.datasets`). Connections, errors and migrations: :mod:`storage.postgres.db`.

Several processes on one schema:

* **writers** register in ``writers`` and hold a session-level advisory lock on the schema —
  shared when the source's rows are exchange trades (several recorders, each their own symbols;
  overlaps are duplicates that ``ON CONFLICT`` drops), exclusive otherwise (two simulated markets
  would mix) — which the server drops with their session when they die
  (:class:`~storage.postgres.writers.PostgresWriterClaim`); :func:`current_writer` reads the live ones;
* **alert rules** are shared, and each is evaluated by the one process holding its lock
  (:meth:`~storage.postgres.alerts.PostgresAlertStore.claim_rule`);
* **retention** runs in the one process holding the schema's retention lock
  (:meth:`~storage.postgres.ticks.PostgresTickStore.prune`).
"""

from __future__ import annotations

from config import StorageSettings
from storage.lock import WriterInfo
from storage.postgres.alerts import PostgresAlertStore
from storage.postgres.datasets import PostgresDatasetStore
from storage.postgres.db import describe, one_row, reader_connection, schema_name
from storage.postgres.ticks import PostgresTickStore
from storage.postgres.writers import PostgresWriterClaim, live_writers, summary
from storage.registry import Site, verified

# Re-exported; the functions below are the backend interface (storage.registry.Backend).
__all__ = [
    "PostgresAlertStore", "PostgresDatasetStore", "PostgresTickStore", "PostgresWriterClaim", "describe",
    "schema_name",
]

DATASETS_SCHEMA = "uploads"


def site(storage: StorageSettings, name: str) -> Site:
    """The schema of ``name`` (:func:`schema_name`) in the database of ``storage.db_url``."""
    return Site(name, url=storage.db_url, schema=schema_name(name))


def location(site: Site) -> str:
    return describe(*site.server)


def exists(site: Site) -> bool:
    """Always True: a server is there, and opening a site's schema creates it when it is missing."""
    return True


def check(site: Site) -> None:
    """Nothing to check before connecting (a bad URL was refused with the settings)."""


def open_ticks(site: Site, *, verify: bool = False) -> PostgresTickStore:
    return verified(PostgresTickStore(*site.server), verify)


def open_alerts(site: Site) -> PostgresAlertStore:
    return PostgresAlertStore(*site.server)


def claim_writer(site: Site, info: WriterInfo, *, shared: bool) -> PostgresWriterClaim:
    return PostgresWriterClaim(*site.server, info, shared=shared).acquire()


def current_writer(site: Site) -> WriterInfo | None:
    """The writers of the schema now, summarised (:func:`summary`), or None; never creates the schema."""
    url, schema = site.server
    with reader_connection(url, schema) as conn:
        return summary(live_writers(conn, schema))


def _datasets_site(storage: StorageSettings) -> Site:
    """Where uploaded datasets live: their own schema in the database of ``storage.db_url``."""
    return Site("uploads", url=storage.db_url, schema=DATASETS_SCHEMA)


def open_datasets(storage: StorageSettings) -> PostgresDatasetStore:
    return PostgresDatasetStore(*_datasets_site(storage).server)


def has_datasets(storage: StorageSettings) -> bool:
    """True once something was uploaded (asking never creates the schema)."""
    with reader_connection(*_datasets_site(storage).server) as conn:
        if one_row(conn, "SELECT to_regclass('datasets')")[0] is None:
            return False
        return bool(one_row(conn, "SELECT EXISTS (SELECT 1 FROM datasets)")[0])
