"""Writer thread: drains a queue of trades and feed events into the store in batches.

The source thread only enqueues (a C-level ``SimpleQueue.put``, no I/O), so a slow disk never
stalls the socket. The writer takes everything queued, writes it in ONE transaction and goes
back to waiting; under load batches grow by themselves, under light load a tick is committed
within milliseconds — always well inside ``flush_interval_s``. ``stop()`` drains the queue
completely before returning, so nothing enqueued before it is lost.

Failures, by the storage layer's types (:mod:`storage.errors`):

* unavailable (locked, busy, disk full, server gone) → keep the batch, retry with backoff
  (:data:`STORAGE_RETRY`: full jitter below 0.1 s doubling to 2 s, never giving up); the status
  shows ``retrying`` meanwhile;
* a rejected row → store the rest of the batch one by one, count and report the bad rows;
* anything else (a damaged database) → stop storing, loudly: :attr:`TickWriter.error` is set,
  the status shows ``failed``, later items are counted as :attr:`TickWriter.lost`, never as stored.

Backfilled trades (:meth:`TickWriter.put_backfilled`: ones the live stream missed, so no live bar
has them) are stored like any other; once stored, :meth:`TickWriter.backfills_of` their symbol
grows if they are older than its first live trade (a restart against a database that stops
earlier), so that readers who keep the stored ticks before the live bars read them again
(:class:`pairs.bars.BarHistory`). A gap within the live stream changes nothing there.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from records import FeedEvent, Trade, now_ms
from records.retry import EndlessBackoff, RetryPolicy
from storage.base import TickStore
from storage.errors import RowRejected, StorageError, StorageUnavailable

log = logging.getLogger(__name__)

class _Stop(Enum):
    """The type of the one item that tells the writer thread to end (an enum: mypy narrows ``is _STOP``)."""

    STOP = "stop"


_STOP = _Stop.STOP


@dataclass(frozen=True, slots=True)
class _Backfilled:
    """A trade the live stream missed (queued by :meth:`TickWriter.put_backfilled`)."""

    trade: Trade


MAX_BATCH = 50_000
# A batch waiting for the database: retried until stored (dropping it would lose received trades).
# The cap bounds one transaction's duration and memory under a burst; full jitter keeps several
# recorders contending for one SQLite file's lock (or reconnecting to one server) out of step.
STORAGE_RETRY = RetryPolicy(base_s=0.1, cap_s=2.0)
PRUNE_EVERY_S = 60.0


class TickWriter:
    """Owns the only writing connection to the database; runs in its own thread.

    ``open_store`` opens (and checks) the store in the writer's thread; ``location`` names the
    database in messages. ``retry`` paces a batch the database does not accept yet; ``sleep``
    (seconds) and ``rng`` (its jitter) are injectable for tests.
    """

    def __init__(
        self,
        open_store: Callable[[], TickStore],
        location: str,
        *,
        flush_interval_s: float = 0.25,
        retention_ms: int | None = None,
        max_backlog: int = 500_000,
        retry: RetryPolicy = STORAGE_RETRY,
        sleep: Callable[[float], object] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        EndlessBackoff(retry)  # refuses a policy that gives up: a batch given up would lose received trades
        self.location = location
        self.retry = retry
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.flush_interval_s = flush_interval_s
        self.retention_ms = retention_ms
        self._open_store = open_store
        self._queue: queue.SimpleQueue[Trade | FeedEvent | _Backfilled | _Stop] = queue.SimpleQueue()
        self.max_backlog = max_backlog
        self._room = threading.Event()
        self.backpressure_waits = 0
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.retry_error: str | None = None  # set while a batch waits for the database to accept it
        self.rejected = 0  # rows the database refused (counted and logged, never silently dropped)
        self.reject_error: str | None = None
        self.lost = 0  # items handed over after the writer failed: received, never stored
        self.committed_trades = 0  # rows actually inserted (duplicates excluded)
        self.received_trades = 0  # trades handed to write_batch
        self.batches = 0
        self.last_commit_mono: float | None = None
        self._max_ts_ms = 0
        self._last_prune = time.monotonic()
        self._backfills: dict[str, int] = {}  # symbol → batches of its backfilled trades stored so far
        self._live_from: dict[str, int] = {}  # symbol → time of its first trade put (UTC ms): the live bars' start

    # Called from the source thread.
    def put(self, item: Trade | FeedEvent) -> None:
        """Enqueue for writing; blocks (back-pressure) only while ``max_backlog`` items are waiting."""
        if type(item) is Trade and item.symbol not in self._live_from:
            self._live_from[item.symbol] = item.ts_ms
        self._enqueue(item)

    def put_backfilled(self, trade: Trade) -> None:
        """:meth:`put` a trade the live stream missed (the backfiller's): once it is stored,
        :meth:`backfills_of` its symbol grows."""
        self._enqueue(_Backfilled(trade))

    def backfills_of(self, symbol: str) -> int:
        """How many batches of ``symbol``'s backfilled trades older than its first live trade have
        been stored so far: grows only after they can be read, so a reader of the stored ticks
        before the live bars that saw a value reads them again on seeing a larger one."""
        return self._backfills.get(symbol, 0)

    def _enqueue(self, item: Trade | FeedEvent | _Backfilled) -> None:
        if self._error is not None:
            self.lost += 1  # storage has failed: count it instead of queueing without bound
            return
        self._queue.put(item)
        if self._queue.qsize() > self.max_backlog and self._thread is not None and self._thread.is_alive():
            # Memory stays bounded: the producer waits for the writer instead of queueing without
            # limit. A socket then buffers in the kernel and, if it must, TCP slows the sender.
            self.backpressure_waits += 1
            while self._queue.qsize() > self.max_backlog // 2 and self._thread.is_alive():
                # Cleared before each wait, so every pass sleeps until the writer finishes a batch
                # (or 0.1 s) instead of spinning against it for the GIL.
                self._room.clear()
                self._room.wait(0.1)

    @property
    def backlog(self) -> int:
        """Items waiting to be written (approximate)."""
        return self._queue.qsize()

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the writer, if any."""
        return self._error

    def start(self) -> None:
        """Start the thread; raises the :class:`~storage.errors.StorageError` if the store cannot be opened."""
        if self._thread is not None:
            raise RuntimeError("writer already started")
        self._thread = threading.Thread(target=self._run, name="tick-writer", daemon=True)
        self._thread.start()
        # Opening the store creates/migrates/checks the schema; surface errors to the caller.
        if not self._ready.wait(timeout=600):
            raise StorageError(f"database {self.location!r} did not open within 10 minutes")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 30.0) -> bool:
        """Write everything queued so far, close the database; True if it finished in time."""
        if self._thread is None:
            return True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            store = self._open_store()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            stopping = False
            while not stopping:
                try:
                    first = self._queue.get(timeout=self.flush_interval_s)
                except queue.Empty:
                    self._maybe_prune(store)
                    continue
                trades: list[Trade] = []
                events: list[FeedEvent] = []
                backfilled: set[str] = set()
                item = first
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    if type(item) is Trade:
                        trades.append(item)
                    elif type(item) is FeedEvent:
                        events.append(item)
                    elif type(item) is _Backfilled:
                        trades.append(item.trade)
                        # Before the live bars (else within them: no stored-tick reader has its time).
                        if item.trade.ts_ms < self._live_from.get(item.trade.symbol, item.trade.ts_ms + 1):
                            backfilled.add(item.trade.symbol)
                    if len(trades) >= MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                self._write(store, trades, events)
                for symbol in backfilled:  # stored: readers keeping older ticks read them again
                    self._backfills[symbol] = self._backfills.get(symbol, 0) + 1
                self._room.set()
                self._maybe_prune(store)
        except StorageError as exc:  # a known failure: say what and where, no traceback needed
            self._fail(exc)
            log.error("tick writer stopped: %s; ticks are no longer being stored", exc)
        except BaseException as exc:  # a bug: keep the traceback
            self._fail(exc)
            log.exception("tick writer failed; ticks are no longer being stored")
        finally:
            store.close()
            self._room.set()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        # What is still queued was received and will never be stored: count it as lost, not stored.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self.lost += 1

    def _write(self, store: TickStore, trades: list[Trade], events: list[FeedEvent]) -> None:
        if not trades and not events:
            return
        backoff = EndlessBackoff(self.retry, rng=self._rng)
        while True:
            try:
                inserted = store.write_batch(trades, events)
                break
            except StorageUnavailable as exc:
                # Locked by another connection, disk full, server restarting: keep the batch and
                # retry, so nothing already received is dropped.
                self.retry_error = f"{exc}; retrying"
                log.warning("%s (batch of %d trades kept)", self.retry_error, len(trades))
                self._sleep(backoff.next_delay())  # this thread has nothing else to do until the batch is stored
            except RowRejected as exc:
                # A row the database cannot take: store the rest one by one and count the bad ones,
                # rather than losing the batch or stopping storage altogether.
                inserted = self._write_one_by_one(store, trades, events, exc)
                break
        self.retry_error = None
        self.committed_trades += inserted
        self.received_trades += len(trades)
        self.batches += 1
        self.last_commit_mono = time.monotonic()
        if trades:
            self._max_ts_ms = max(self._max_ts_ms, max(t.ts_ms for t in trades))

    def _write_one_by_one(self, store: TickStore, trades: list[Trade], events: list[FeedEvent],
                          cause: BaseException) -> int:
        log.warning("batch rejected (%s); storing its %d rows one by one", cause, len(trades) + len(events))
        inserted = 0
        for trade in trades:
            try:
                inserted += store.write_batch([trade])
            except RowRejected as exc:
                self._reject(f"rejected trade {trade.symbol} #{trade.trade_id}: {exc}")
        for event in events:
            try:
                store.write_batch([], [event])
            except RowRejected as exc:
                self._reject(f"rejected feed event {event.kind.value}: {exc}")
        return inserted

    def _reject(self, message: str) -> None:
        self.rejected += 1
        self.reject_error = message
        log.error("%s", message)

    def _maybe_prune(self, store: TickStore) -> None:
        if self.retention_ms is None or time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = time.monotonic()
        if not self._max_ts_ms:
            return
        # Market time, so a replay of last year's file does not prune itself away; but never
        # ahead of the wall clock, so one trade stamped in the far future cannot wipe the file.
        cutoff = min(self._max_ts_ms, now_ms()) - self.retention_ms
        try:
            deleted = store.prune(cutoff)
        except StorageUnavailable as exc:  # busy right now: retention can wait for the next pass
            log.warning("retention skipped: %s", exc)
            return
        if deleted:
            log.info("retention: deleted %d ticks older than %d ms", deleted, cutoff)
