"""The one registry of storage backends, chosen by URL scheme, and :class:`Site`, the place one source's data lives.

A site's backend is the scheme of its URL (``postgresql://…`` → :mod:`storage.postgres`); a site
without a URL is an SQLite file (scheme ``sqlite``, :mod:`storage.sqlite`). This module is the
only place that tells the two apart: everything else asks :func:`backend_of` and calls what the
backend package offers (see :class:`Backend`). Backends are imported on first use, so SQLite
users need no PostgreSQL driver.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from config import StorageSettings
    from storage.base import AlertStore, DatasetStore, TickStore, WriterClaim
    from storage.lock import WriterInfo

# URL scheme → backend package. Keep the server schemes in step with config.DB_URL_SCHEMES (which
# refuses any other URL before storage sees it).
BACKENDS = {"sqlite": "storage.sqlite", "postgresql": "storage.postgres", "postgres": "storage.postgres"}
FILE_SCHEME = "sqlite"  # the backend of a site without a URL
_T = TypeVar("_T", bound="TickStore")


class Backend(Protocol):
    """What a backend package offers at module level; stores implement :mod:`storage.base`."""

    def site(self, storage: StorageSettings, name: str) -> Site:
        """The site of the source whose database name is ``name``."""

    def location(self, site: Site) -> str:
        """How messages name the site's tick database (never with a password)."""

    def exists(self, site: Site) -> bool:
        """True once the tick database exists (readers do not create it)."""

    def check(self, site: Site) -> None:
        """Raise ``StorageLocationError`` if the tick database cannot live there."""

    def open_ticks(self, site: Site, *, verify: bool) -> TickStore: ...

    def open_alerts(self, site: Site) -> AlertStore: ...

    def claim_writer(self, site: Site, info: WriterInfo, *, shared: bool) -> WriterClaim: ...

    def current_writer(self, site: Site) -> WriterInfo | None: ...

    def open_datasets(self, storage: StorageSettings) -> DatasetStore: ...

    def has_datasets(self, storage: StorageSettings) -> bool: ...


def scheme_of(url: str | None) -> str:
    """The backend scheme of a database URL; None (no URL) is an SQLite file."""
    return FILE_SCHEME if url is None else url.partition("://")[0]


def backend(scheme: str) -> Backend:
    """The backend package of ``scheme``, imported on first use; ValueError naming the scheme if there is none."""
    try:
        module = BACKENDS[scheme]
    except KeyError:
        raise ValueError(f"no storage backend for URL scheme {scheme!r} (known: {', '.join(BACKENDS)})") from None
    return cast("Backend", importlib.import_module(module))


def backend_of(site: Site) -> Backend:
    """The backend that holds ``site``."""
    return backend(scheme_of(site.url))


def verified(store: _T, verify: bool) -> _T:
    """``store``, after its integrity check if ``verify``; closed again if the check fails."""
    if verify:
        try:
            store.verify()
        except BaseException:
            store.close()
            raise
    return store


@dataclass(frozen=True, slots=True)
class Site:
    """Where one source's data lives (see :mod:`storage`).

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
    def file(self) -> Path:
        """The tick database file of a file site; ValueError naming the site for a server site."""
        if self.ticks_path is None:
            raise ValueError(f"site {self.name!r} is on a database server: it has no tick database file")
        return self.ticks_path

    @property
    def server(self) -> tuple[str, str]:
        """``(url, schema)`` of a server site; ValueError naming the site for a file site."""
        if self.url is None or self.schema is None:
            raise ValueError(f"site {self.name!r} is not on a database server: it has no URL and schema")
        return self.url, self.schema

    @property
    def alerts_path(self) -> Path:
        """Alert rules and history sit next to the ticks they watch, e.g. ``live-alerts.sqlite3``."""
        return self.file.with_name(f"{self.file.stem}-alerts.sqlite3")

    @property
    def location(self) -> str:
        """How messages and status lines name this site's tick database (never with a password)."""
        return backend_of(self).location(self)

    def exists(self) -> bool:
        """True once the tick database has been created (readers do not create it).

        A server is always there: opening a site's schema creates it when it is missing.
        """
        return backend_of(self).exists(self)

    def check(self) -> None:
        """Raise :class:`~storage.errors.StorageLocationError` if the tick database cannot live there.

        A directory, a missing ``--db`` folder or a non-SQLite file is refused before anything is
        created; the default ``data_dir`` is created here. A server site has nothing to check
        before connecting (a bad URL was refused with the settings).
        """
        backend_of(self).check(self)
