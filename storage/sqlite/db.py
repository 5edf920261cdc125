"""SQLite backend, the shared part: connections, transactions, error mapping, migrations.

Every SQLite store (:mod:`storage.sqlite.ticks`, :mod:`storage.sqlite.alerts`,
:mod:`storage.sqlite.datasets`) is a :class:`SqliteDatabase` over a file of its own.

One connection per store object, used from one thread only (sqlite3's ``check_same_thread``
enforces it): the writer thread owns one, every reader opens its own. WAL lets readers run while
the writer commits; ``busy_timeout`` covers the short exclusive moments (checkpoints, schema
creation). Every statement is parameterised. Schemas are versioned by ``PRAGMA user_version``
and migrated by :func:`connect`; sqlite3's exceptions never leave this package: :func:`translated`
turns them into :mod:`storage.errors` types that name the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, TypeVar

from storage.errors import (
    RowRejected,
    SchemaError,
    StorageCorrupt,
    StorageError,
    StorageLocationError,
    StorageUnavailable,
)

SQLITE_MAGIC = b"SQLite format 3\x00"
_D = TypeVar("_D", bound="SqliteDatabase")
# A value the database cannot take. OverflowError is the one Python-side binding failure (an int
# beyond 64 bits); kept narrow so that a caller's own ValueError inside a transaction is never
# mistaken for a rejected row. Other unbindable values raise a ProgrammingError "Error binding
# parameter", which is a bad row too; any other ProgrammingError (a connection used from the
# wrong thread or after close) is a bug and must not be counted as a rejected row.
_REJECTED = (OverflowError, sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.DataError)
_BINDING_MESSAGES = ("Error binding parameter", "Incorrect number of bindings")


def translated(exc: BaseException, path: Path) -> StorageError:
    """The :mod:`storage.errors` exception for a sqlite3 (or binding) error on the file ``path``."""
    where = f"database {str(path)!r}"
    if isinstance(exc, _REJECTED) or (
            isinstance(exc, sqlite3.ProgrammingError) and str(exc).startswith(_BINDING_MESSAGES)):
        return RowRejected(f"{where} refused a value: {exc}")
    if isinstance(exc, sqlite3.ProgrammingError):
        return StorageError(f"{where}: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        # Locked by another connection, disk full, I/O error, read-only file: conditions that can
        # clear up, so the caller keeps its data and retries.
        return StorageUnavailable(f"cannot write to {where}: {exc}")
    if isinstance(exc, sqlite3.DatabaseError):  # "database disk image is malformed", "file is not a database"
        return StorageCorrupt(f"{where} is damaged or not a database: {exc}")
    return StorageError(f"{where}: {exc}")


@contextmanager
def errors_named(path: Path) -> Iterator[None]:
    """Re-raise sqlite3 and binding errors inside the block as :mod:`storage.errors` types naming ``path``."""
    try:
        yield
    except (sqlite3.Error, OverflowError) as exc:
        raise translated(exc, path) from exc


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error (connections here autocommit).

    IMMEDIATE takes the write lock up front, where ``busy_timeout`` applies, instead of failing
    half-way when a deferred transaction upgrades to a writer.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# Resolved paths of the SQLite files this process has connections to, with their count. POSIX
# record locks belong to a process and closing ANY descriptor of a file drops all of them, so
# merely reading a database's header with open()/close() while a connection is open would strip
# that connection's locks: another process could then checkpoint and delete a WAL still in use.
_OPEN_FILES: Counter[str] = Counter()
_OPEN_FILES_LOCK = threading.Lock()


def _opened(path: Path, delta: int) -> None:
    key = str(path.resolve())
    with _OPEN_FILES_LOCK:
        _OPEN_FILES[key] += delta
        if _OPEN_FILES[key] <= 0:
            del _OPEN_FILES[key]


def read_head(path: Path, size: int) -> bytes | None:
    """The first ``size`` bytes of ``path``; None if this process has it open as a database (see above)."""
    with _OPEN_FILES_LOCK:
        if str(path.resolve()) in _OPEN_FILES:
            return None
        with path.open("rb") as fh:
            return fh.read(size)


def check_location(path: Path) -> None:
    """Raise :class:`StorageLocationError` unless ``path`` can be (or already is) an SQLite file.

    Refused: a directory; a path whose folder does not exist; an existing non-empty file that does
    not start with the SQLite header; anything that is not a regular file (a FIFO, a device).
    """
    shown = str(path)
    if path.is_dir():
        raise StorageLocationError(f"{shown!r} is a directory, not a database file")
    if not path.parent.is_dir():
        raise StorageLocationError(f"{shown!r}: folder {str(path.parent)!r} does not exist")
    if not path.exists():
        return
    if not path.is_file():
        raise StorageLocationError(f"{shown!r} is not a regular file")
    try:
        head = read_head(path, len(SQLITE_MAGIC))
    except OSError as exc:
        raise StorageLocationError(f"{shown!r} cannot be read: {exc.strerror or exc}") from None
    if head and head != SQLITE_MAGIC:  # None: open here already, so it was checked when first opened
        raise StorageLocationError(f"{shown!r} is not an SQLite database (it has no SQLite header)")


def connect(path: Path, migrations: dict[int, str], *, busy_timeout_ms: int = 5_000, component: str = "project",
            tables: frozenset[str] = frozenset()) -> sqlite3.Connection:
    """Open ``path`` in WAL mode and bring its schema to the latest of ``migrations``.

    Used through :class:`SqliteDatabase`, whose ``close`` ends the registration made here.

    ``migrations`` maps each schema version to the SQL script that produces it from the one
    before; the version is kept in ``PRAGMA user_version``. Autocommit mode: callers use
    :func:`transaction` so a batch is exactly one transaction. The folder must exist (see
    :func:`check_location`); errors come out as :mod:`storage.errors` types.
    """
    check_location(path)
    _opened(path, +1)  # before the connection takes any lock; undone by SqliteDatabase.close
    try:
        with errors_named(path):
            conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                conn.execute("PRAGMA journal_mode = WAL")
                # NORMAL in WAL mode: a crash may lose the last commits but never corrupts the file.
                conn.execute("PRAGMA synchronous = NORMAL")
                _migrate(conn, path, migrations, component, tables)
            except BaseException:
                conn.close()
                raise
    except BaseException:
        _opened(path, -1)
        raise
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open an existing ``path`` read-only: no schema changes, no journal-mode switch, nothing written."""
    check_location(path)
    if not path.exists():
        raise StorageLocationError(f"{str(path)!r} does not exist")
    _opened(path, +1)
    try:
        with errors_named(path):
            return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)
    except BaseException:
        _opened(path, -1)
        raise


def _migrate(conn: sqlite3.Connection, path: Path, migrations: dict[int, str], component: str,
             tables: frozenset[str]) -> None:
    """Run the missing migrations; refuse a newer schema, and a file that holds another store's tables.

    Every store versions its schema in ``PRAGMA user_version`` (one number per file), so two
    stores cannot share a file: a database with a schema but none of ``tables`` belongs to another.
    """
    latest = max(migrations)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = tables - present
    if version > 0 and tables and not tables & present:  # none of ours: another store's file
        article = "an" if component[:1] in "aeiou" else "a"
        raise SchemaError(f"{path}: not {article} {component} database (no {', '.join(sorted(missing))}); "
                          "each store needs a file of its own")
    if version > latest:
        raise SchemaError(f"{path}: schema version {version} is newer than {latest}")
    for target in range(version + 1, latest + 1):
        with transaction(conn):
            # Re-check under the write lock: another process may have migrated meanwhile.
            if conn.execute("PRAGMA user_version").fetchone()[0] < target:
                for statement in filter(str.strip, migrations[target].split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`StorageCorrupt` naming the file and SQLite's first finding unless the file is sound.

    ``PRAGMA quick_check`` reads every page (O(file size), about a second per few hundred MB) but
    skips the index-content cross-check of ``integrity_check``; run it once, when a writer opens.
    """
    with errors_named(path):
        findings = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    if findings != ["ok"]:
        lines = [line for finding in findings for line in finding.splitlines() if not line.startswith("***")]
        raise StorageCorrupt(f"database {str(path)!r} is damaged ({'; '.join(lines)})")


class SqliteDatabase:
    """One connection to one SQLite file with its schema migrated; the base of every SQLite store.

    Not thread-safe: one instance per thread. Use as a context manager or call :meth:`close`.
    """

    # The store's schema as in every backend: its component name ("ticks", "alerts", "datasets";
    # it names the file in messages) and its migrations, indexed by the version they produce.
    COMPONENT: ClassVar[str] = "project"
    MIGRATIONS: ClassVar[dict[int, str]] = {}
    TABLES: ClassVar[frozenset[str]] = frozenset()  # tables the file must have once it has a schema

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5_000, readonly: bool = False) -> None:
        self.path = Path(path)
        self.location = str(self.path)  # what messages and status lines call this database
        if readonly:
            self._conn = connect_readonly(self.path)
        else:
            self._conn = connect(self.path, self.MIGRATIONS, busy_timeout_ms=busy_timeout_ms,
                                 component=self.COMPONENT, tables=self.TABLES)
        self._closed = False

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def verify(self) -> None:
        """Raise :class:`StorageCorrupt` if the file is damaged (see :func:`quick_check`)."""
        quick_check(self._conn, self.path)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()
            _opened(self.path, -1)

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
