"""PostgreSQL backend, the shared part: names, advisory-lock keys, error mapping, connections, migrations.

Every PostgreSQL store (:mod:`storage.postgres.ticks`, :mod:`storage.postgres.alerts`,
:mod:`storage.postgres.datasets`) is a :class:`PostgresDatabase`: one connection to one schema,
used from one thread, autocommit (a batch is one explicit transaction), ``search_path`` set to the
site's schema, its component migrated when it connects. The backend as a whole is described in
:mod:`storage.postgres`.

* **Migrations** are versioned in the database: a ``schema_version`` table per schema holds one
  version per component (``ticks``, ``alerts``, ``datasets``); a store brings its component up to
  date when it connects, under a transaction-level advisory lock on the schema, so two processes
  starting at once do not race. A schema newer than this program is refused (:class:`SchemaError`).
* **Errors**: a lost connection (server restarting, admin shutdown, network) raises
  :class:`StorageUnavailable`, and the next call reconnects by itself; a value the server refuses
  raises :class:`RowRejected`. psycopg's exceptions never leave this package, and the URL's
  password never appears in a message: stores name themselves by :func:`describe` (password
  masked) and driver texts are scrubbed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.abc import Params, QueryNoTemplate

from config import mask_secrets, mask_url
from storage.errors import RowRejected, SchemaError, StorageCorrupt, StorageError, StorageUnavailable

CONNECT_TIMEOUT_S = 5
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
_D = TypeVar("_D", bound="PostgresDatabase")

# Process-wide: (server, schema, component) already brought to its latest version by this process.
_MIGRATED: set[tuple[str, str, str]] = set()
_MIGRATED_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------------------
# Names, keys and messages
# ------------------------------------------------------------------------------------------------


def schema_name(name: str) -> str:
    """The schema of a site: ``replay-Ticks_2025-0a1b2c`` → ``replay_ticks_2025_0a1b2c`` (``[a-z0-9_]``).

    Lower case, other characters as ``_``, a letter first; a name beyond PostgreSQL's 63 bytes is
    cut and given a hash of the full name, so two long names never share a schema.
    """
    schema = re.sub(r"[^a-z0-9_]", "_", name.lower())
    if not schema[:1].isalpha():
        schema = "s_" + schema
    if len(schema) > MAX_IDENTIFIER:
        digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
        schema = f"{schema[:MAX_IDENTIFIER - 9]}_{digest}"
    return schema


def describe(url: str, schema: str) -> str:
    """How messages name a site: ``postgresql://quant:***@db:5432/desk schema live``."""
    return f"{mask_url(url)} schema {schema}"


def lock_key(*parts: object) -> int:
    """A stable signed 64-bit advisory-lock key for ``parts`` (e.g. ``("writer", "live")``)."""
    digest = hashlib.blake2b("\0".join(str(p) for p in ("quant", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def pyformat(statement: str) -> str:
    """A statement of :mod:`storage.rows` (qmark placeholders, ``?``) in psycopg's ``%s`` style.

    Those statements hold no literal ``?`` or ``%``, so the replacement touches placeholders only.
    """
    return statement.replace("?", "%s")


def scrub(text: str, url: str) -> str:
    """``text`` with every password of ``url`` (userinfo, query, key=value) and any other it shows as ``***``."""
    return mask_secrets(text, url)


# SQLSTATE classes: 08 connection, 40 rollback (deadlock, serialisation), 53 resources (disk
# full, too many connections), 57 operator intervention (shutdown, restart), 58 system (I/O).
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
_CORRUPT_STATES = ("XX001", "XX002")  # data_corrupted, index_corrupted


def translated(exc: BaseException, location: str, url: str) -> StorageError:
    """The :mod:`storage.errors` exception for a psycopg (or Python binding) error, naming ``location``."""
    text = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
    where = f"database {location!r}"
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError, OverflowError)):
        return RowRejected(f"{where} refused a value: {text}")
    if state in _CORRUPT_STATES:
        return StorageCorrupt(f"{where} is damaged: {text}")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) or state[:2] in _TRANSIENT_CLASSES:
        # Server gone or restarting, connection lost, disk full, a deadlock: can clear up, so the
        # caller keeps its data and retries; the store reconnects on its next call.
        return StorageUnavailable(f"cannot use {where}: {text}")
    if state == "42501":
        return StorageError(f"{where}: permission denied ({text}); the role needs USAGE and CREATE on the "
                            "database and its schemas")
    return StorageError(f"{where}: {text}")


def connect(url: str, schema: str, *, application: str) -> psycopg.Connection:
    """A new autocommit connection with ``search_path`` set to ``schema`` (which may not exist yet).

    Its ``application_name`` says what it is for and which process holds it (``quant ticks pid
    4242``), so a DBA can tell in ``pg_stat_activity`` who holds which lock.
    """
    conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                           application_name=f"{application} pid {os.getpid()}"[:MAX_IDENTIFIER])
    try:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    except BaseException:
        conn.close()
        raise
    return conn


def one_row(conn: psycopg.Connection, query: QueryNoTemplate, params: Params | None = None) -> tuple[Any, ...]:
    """The row of a statement that always returns exactly one: an aggregate, a function call, ``RETURNING``.

    Its values are Any: the server types them at run time. A statement that returns no row is a bug
    in the statement, reported by name (RuntimeError) rather than as a TypeError on None.
    """
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError(f"expected one row from {query!r}, got none")
    return row


def _server_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}{parts.path}"


def migrate(conn: psycopg.Connection, url: str, schema: str, component: str, migrations: dict[int, str]) -> int:
    """Bring ``component`` of ``schema`` to the latest of ``migrations``; return the version it is at.

    Cheap when nothing is to do (one read, no lock, no DDL: a read-only role can open a current
    schema). Otherwise creates the schema and ``schema_version`` if needed and applies each
    missing migration in its own transaction under a transaction-level advisory lock on the
    schema; another process migrating at the same moment waits, then finds nothing left to do.
    """
    latest = max(migrations)
    key = (_server_key(url), schema, component)
    with _MIGRATED_LOCK:
        if key in _MIGRATED:
            return latest
    version = _version(conn, component)
    if version is None or version < latest:
        for target in range((version or 0) + 1, latest + 1):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("migrate", schema),))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (component text PRIMARY KEY, "
                             "version integer NOT NULL, migrated_ms bigint NOT NULL)")
                if (_version(conn, component) or 0) < target:  # re-read under the lock
                    conn.execute(migrations[target])
                    conn.execute(
                        "INSERT INTO schema_version (component, version, migrated_ms) "
                        "VALUES (%s, %s, (extract(epoch FROM clock_timestamp()) * 1000)::bigint) "
                        "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, "
                        "migrated_ms = EXCLUDED.migrated_ms", (component, target))
        version = _version(conn, component)
    if version is not None and version > latest:
        raise SchemaError(f"schema {schema!r}: {component} version {version} is newer than {latest} "
                          "(written by a newer version of this program)")
    if version == latest:
        with _MIGRATED_LOCK:
            _MIGRATED.add(key)
    return version or 0


def _version(conn: psycopg.Connection, component: str) -> int | None:
    if one_row(conn, "SELECT to_regclass('schema_version')")[0] is None:
        return None
    row = conn.execute("SELECT version FROM schema_version WHERE component = %s", (component,)).fetchone()
    return None if row is None else row[0]


# ------------------------------------------------------------------------------------------------
# Idle connections
# ------------------------------------------------------------------------------------------------

# Connections that closed stores left behind, by (url, schema, application), at most IDLE_PER_KEY
# each. A dashboard opens a store per refresh (bars, feed events, alerts), and a new connection
# costs a TLS and SCRAM handshake (tens of ms, more over a network); an idle one costs a probe.
# Only connections holding nothing of their session (no advisory lock, no staged rows) come here.
IDLE_PER_KEY = 4
_IDLE: dict[tuple[str, str, str], list[psycopg.Connection]] = {}
_IDLE_LOCK = threading.Lock()


def _reuse(key: tuple[str, str, str]) -> psycopg.Connection | None:
    """An idle connection for ``key`` that still answers (one dropped by a server restart does not), or None."""
    while True:
        with _IDLE_LOCK:
            idle = _IDLE.get(key)
            if not idle:
                return None
            conn = idle.pop()
        try:
            conn.execute("SELECT 1")
            return conn
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def _keep_idle(key: tuple[str, str, str], conn: psycopg.Connection) -> bool:
    """Keep ``conn`` for the next store of ``key``; False (caller closes it) if it is not clean or there are enough."""
    if conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    with _IDLE_LOCK:
        idle = _IDLE.setdefault(key, [])
        if len(idle) >= IDLE_PER_KEY:
            return False
        idle.append(conn)
    return True


@contextmanager
def reader_connection(url: str, schema: str) -> Iterator[psycopg.Connection]:
    """A connection for a quick look at ``schema`` that creates nothing (an idle one when there is one),
    with driver errors turned into storage errors; kept for the next look afterwards."""
    key = (url, schema, "quant reader")
    conn, done = None, False
    try:
        conn = _reuse(key) or connect(url, schema, application="quant reader")
        yield conn
        done = True
    except psycopg.Error as exc:
        raise translated(exc, describe(url, schema), url) from None
    finally:
        if conn is not None and not (done and _keep_idle(key, conn)):
            with contextlib.suppress(psycopg.Error):
                conn.close()


# ------------------------------------------------------------------------------------------------
# The base of every PostgreSQL store
# ------------------------------------------------------------------------------------------------


class PostgresDatabase:
    """One connection to one schema with one component migrated; reconnects after a lost connection.

    Not thread-safe: one instance per thread. Use as a context manager or call :meth:`close`.
    ``location`` names it without the password.
    """

    COMPONENT: ClassVar[str] = ""
    MIGRATIONS: ClassVar[dict[int, str]] = {}
    APPLICATION: ClassVar[str] = "quant"

    def __init__(self, url: str, schema: str) -> None:
        self._url = url
        self.schema = schema
        self.location = describe(url, schema)
        self._conn: psycopg.Connection | None = None
        self._closed = False
        self.connections = 0  # taken so far: more than one means it reconnected
        self.reusable = True  # False: close() must end the session (its owner took session locks on it)
        self._key = (url, schema, self.APPLICATION)
        with self.session():  # connect and migrate now: a bad URL or schema fails at open
            pass

    def _connect(self) -> psycopg.Connection:
        idle = _reuse(self._key)
        if idle is not None:
            return idle
        conn = connect(self._url, self.schema, application=self.APPLICATION)
        try:
            migrate(conn, self._url, self.schema, self.COMPONENT, self.MIGRATIONS)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection]:
        """The connection (a new one if the last was lost), with driver errors turned into storage errors.

        A connection that broke is closed and forgotten, so the next call connects afresh.
        """
        if self._closed:
            raise StorageError(f"database {self.location!r}: this store was closed")
        try:
            if self._conn is None:
                self._conn = self._connect()
                self.connections += 1
                self._reset_session_state()
            yield self._conn
        except (psycopg.Error, OverflowError) as exc:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._forget_connection()
            # `from None`: a chained driver exception would be printed with its own (unscrubbed) text.
            raise translated(exc, self.location, self._url) from None

    def _reset_session_state(self) -> None:
        """Forget what a subclass keeps per session (temp tables, advisory locks held): a new or lost
        connection has none of it."""

    def _holds_session_state(self) -> bool:
        """True while the session holds something of this store's (a lock, staged rows): it must end with it."""
        return not self.reusable

    def _forget_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._reset_session_state()
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing left to close cleanly
                conn.close()

    @property
    def schema_version(self) -> int:
        with self.session() as conn:
            return _version(conn, self.COMPONENT) or 0

    def close(self) -> None:
        """Close the store; its connection is kept for the next store unless it holds session state."""
        if not self._closed:
            self._closed = True
            if self._conn is not None and not self._holds_session_state() and _keep_idle(self._key, self._conn):
                self._conn = None
            self._forget_connection()

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
