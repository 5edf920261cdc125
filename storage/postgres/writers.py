"""PostgreSQL writer claims: who writes a schema, and the claim a writer holds.

Writers register in ``writers`` and hold a session-level advisory lock on the schema — shared
when the source's rows are exchange trades (several recorders, each their own symbols; overlaps
are duplicates that ``ON CONFLICT`` drops), exclusive otherwise (two simulated markets would mix)
— which the server drops with their session when they die (:class:`PostgresWriterClaim`);
:func:`live_writers` reads the live ones.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import replace

import psycopg

from storage.errors import StorageError, WriterBusy
from storage.lock import WriterInfo
from storage.postgres.db import describe, lock_key, one_row
from storage.postgres.ticks import PostgresTickStore

__all__ = ["HEARTBEAT_S", "PostgresWriterClaim", "live_writers", "summary"]

log = logging.getLogger(__name__)

_LIVE_WRITERS = """
    SELECT w.pid, w.started_ms, w.label, w.symbols, w.host FROM writers w
    WHERE EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.pid = w.backend_pid AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid::bigint = %s AND l.objid::bigint = %s)
    ORDER BY w.started_ms, w.backend_pid
"""


def _key_halves(key: int) -> tuple[int, int]:
    """How pg_locks shows a bigint advisory key: high half in ``classid``, low half in ``objid``."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def live_writers(conn: psycopg.Connection, schema: str) -> list[WriterInfo]:
    """The writers of ``schema`` whose sessions still hold its writer lock, earliest first."""
    if one_row(conn, "SELECT to_regclass('writers')")[0] is None:
        return []
    rows = conn.execute(_LIVE_WRITERS, _key_halves(lock_key("writer", schema))).fetchall()
    return [WriterInfo(pid, started_ms, label, tuple(symbols), host) for pid, started_ms, label, symbols, host in rows]


def summary(writers: list[WriterInfo]) -> WriterInfo | None:
    """One :class:`WriterInfo` for several writers: the first, its label counting the others, all symbols."""
    if not writers:
        return None
    first = writers[0]
    if len(writers) == 1:
        return first
    symbols = tuple(dict.fromkeys(s for w in writers for s in w.symbols))
    others = len(writers) - 1
    return replace(first, label=f"{first.label} + {others} more recorder{'s' * (others > 1)}", symbols=symbols)


HEARTBEAT_S = 0.5


class PostgresWriterClaim:
    """A writer's right to write a schema: an advisory lock held by a session of its own, plus a ``writers`` row.

    ``shared``: other writers may write the schema at the same time (their rows are exchange
    trades keyed by exchange ids, so overlaps are duplicates that ``ON CONFLICT`` drops): the lock
    is taken shared, and only an exclusive writer refuses it. Otherwise it is exclusive: a
    second simulated market would mix its prices into the first.

    A heartbeat thread keeps the session alive; when the server restarts, the lock vanishes with
    the session, and the heartbeat reconnects and takes it again (a dashboard's follower waits
    for two checks in a row without a writer before it starts a feed of its own).
    """

    def __init__(self, url: str, schema: str, info: WriterInfo, *, shared: bool) -> None:
        self._url = url
        self.schema = schema
        self.info = replace(info, host=info.host or socket.gethostname())
        self.shared = shared
        self.location = describe(url, schema)
        self._store: PostgresTickStore | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self.lost: str | None = None  # why the lock is not held right now (None while it is)

    def acquire(self) -> PostgresWriterClaim:
        """Take the lock or raise :class:`WriterBusy` naming the writers that hold it."""
        store = PostgresTickStore(self._url, self.schema)
        store.reusable = False  # its session holds the writer lock: closing it must end the session
        try:
            self._take(store)
        except BaseException:
            store.close()
            raise
        self._store = store
        self._thread = threading.Thread(target=self._heartbeat, name="pg-writer-claim", daemon=True)
        self._thread.start()
        return self

    def _take(self, store: PostgresTickStore) -> None:
        function = "pg_try_advisory_lock_shared" if self.shared else "pg_try_advisory_lock"
        with store.session() as conn:
            got = one_row(conn, f"SELECT {function}(%s)", (lock_key("writer", self.schema),))[0]
            if not got:
                holder = summary(live_writers(conn, self.schema))
                who = holder.describe() if holder is not None else "another process"
                mode = "" if self.shared else " (this source allows one writer per schema)"
                raise WriterBusy(f"database {self.location!r} is already being written by {who}{mode}; stop that "
                                 "recorder, or use another database")
            with conn.transaction():
                # Rows of writers that died (their lock is gone) would only confuse a reader: drop them.
                conn.execute("DELETE FROM writers WHERE backend_pid = pg_backend_pid() OR NOT EXISTS (SELECT 1 FROM "
                             "pg_stat_activity a WHERE a.pid = writers.backend_pid)")
                info = self.info
                conn.execute("INSERT INTO writers (backend_pid, pid, host, label, symbols, started_ms, exclusive) "
                             "VALUES (pg_backend_pid(), %s, %s, %s, %s, %s, %s)",
                             (info.pid, info.host, info.label, list(info.symbols), info.started_ms, not self.shared))

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._mutex:
                store = self._store
                if store is None:
                    return
                try:
                    with store.session() as conn:
                        conn.execute("SELECT 1")
                        if self.lost is not None:
                            self._take(store)
                            log.warning("writer lock of %s taken again after: %s", self.location, self.lost)
                            self.lost = None
                except WriterBusy as exc:
                    if self.lost is None or "already being written" not in self.lost:
                        log.error("lost the writer lock of %s: %s", self.location, exc)
                    self.lost = str(exc)
                except StorageError as exc:
                    if self.lost is None:
                        log.warning("writer lock of %s lost with its connection (%s); taking it again", self.location,
                                    exc)
                    self.lost = str(exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._mutex:
            store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(StorageError), store.session() as conn:  # a lost session took its lock along
                conn.execute("DELETE FROM writers WHERE backend_pid = pg_backend_pid()")
            store.close()  # ending the session releases the lock

    @property
    def held(self) -> bool:
        return self._store is not None and self.lost is None
