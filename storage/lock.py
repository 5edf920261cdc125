"""One writer per SQLite database: an advisory file lock held for the writer's lifetime.

Two processes writing one file (two recorders with different seeds, say) would each store about
half of their trades and mix two markets in one table. The writer therefore holds an exclusive
``flock`` on ``<database>.writer`` while it runs; a second writer is refused at start with a
message naming the holder (process id, start time, what it records), which the lock file holds
as one JSON line. The kernel releases the lock when the holder's process ends, however it ends
(``kill -9`` included), so a crashed recorder never leaves a stale lock behind.

Readers never take the lock; :func:`writer_of` tells a dashboard whether a recorder is already
writing a database, so it can read from it instead of starting a second writer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from records import now_ms
from storage.errors import StorageLocationError, WriterBusy

MAX_HOLDER_BYTES = 4_096
# A reader of the lock (writer_of) holds it shared for microseconds, and a new holder takes a
# moment to write its details; a busy lock without details is retried this often before refusing.
ACQUIRE_ATTEMPTS, ACQUIRE_PAUSE_S = 10, 0.02


@dataclass(frozen=True, slots=True)
class WriterInfo:
    """Who writes a database: process id, start time (UTC epoch ms), source label and symbols.

    ``host``: the writer's machine, where that is not necessarily this one (a server database).
    """

    pid: int
    started_ms: int
    label: str
    symbols: tuple[str, ...]
    host: str | None = None

    def describe(self) -> str:
        """E.g. ``pid 4242 (LIVE Binance spot: BTCUSDT, ETHUSDT) since 2026-12-01 09:30:00 UTC``."""
        since = dt.datetime.fromtimestamp(self.started_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        where = f" on {self.host}" if self.host else ""
        return f"pid {self.pid}{where} ({self.label}: {', '.join(self.symbols)}) since {since}"

    def is_this_process(self) -> bool:
        """True when the calling process is this writer (same pid, and same machine when one is named)."""
        return self.pid == os.getpid() and self.host in (None, socket.gethostname())


def lock_path(db_path: Path) -> Path:
    """The lock file beside a database: ``data/live.sqlite3`` → ``data/live.sqlite3.writer``."""
    return db_path.with_name(db_path.name + ".writer")


class WriterLock:
    """The exclusive right to write ``db_path``; :meth:`release` (or process exit) gives it up."""

    def __init__(self, db_path: Path, info: WriterInfo) -> None:
        self.db_path = db_path
        self.info = info
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        """Take the lock or raise :class:`WriterBusy` naming the current holder."""
        path = lock_path(self.db_path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageLocationError(f"cannot create the writer lock {str(path)!r}: {exc.strerror or exc}") from None
        holder = None
        for attempt in range(ACQUIRE_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if holder is not None or attempt == ACQUIRE_ATTEMPTS - 1:
                    os.close(fd)
                    who = holder.describe() if holder is not None else "another process"
                    raise WriterBusy(
                        f"database {str(self.db_path)!r} is already being written by {who}; one writer per "
                        "database (stop that recorder, or use another --db / QUANT_DATA_DIR)"
                    ) from None
                time.sleep(ACQUIRE_PAUSE_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(asdict(self.info)) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            # Emptied first: a reader that opens the file between unlock and close must not see us.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def writer_of(db_path: Path) -> WriterInfo | None:
    """The process writing ``db_path`` now, or None when no writer holds its lock."""
    path = lock_path(db_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or WriterInfo(0, 0, "unknown writer", ())
        fcntl.flock(fd, fcntl.LOCK_UN)  # nobody holds it exclusively: no writer
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> WriterInfo | None:
    try:
        raw = json.loads(os.pread(fd, MAX_HOLDER_BYTES, 0) or b"null")
        return WriterInfo(int(raw["pid"]), int(raw["started_ms"]), str(raw["label"]),
                          tuple(str(s) for s in raw["symbols"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def this_process(label: str, symbols: tuple[str, ...]) -> WriterInfo:
    """A :class:`WriterInfo` describing the calling process."""
    return WriterInfo(os.getpid(), now_ms(), label, symbols)
