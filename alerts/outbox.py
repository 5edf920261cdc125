"""Durable, at-least-once webhook delivery of stored alerts: the store is the outbox.

An alert stored while a webhook is configured is stored ``pending`` in the same transaction as
the alert itself (:meth:`storage.base.AlertStore.record`), so nothing is owed only in memory. A
:class:`OutboxWorker` thread reads the pending alerts that are due from the store, oldest first,
POSTs each (:class:`alerts.webhook.WebhookEndpoint`) and marks it:

* a 2xx answer: ``delivered`` (with the time);
* a connection error, a timeout, HTTP 5xx or 429: still ``pending`` with the attempt counted and
  the error kept, due again after a backoff (:class:`RetryPolicy`: 1 s, doubling, at most 5 min)
  until the alert is a day old (300 attempts at most: a day at 5 min apart), then ``failed`` for good
  (an endpoint down for hours still gets every alert once it is back);
* a 3xx or another 4xx (the request itself is refused, retrying cannot help): ``failed`` at once.

A process that dies leaves its pending alerts in the store; the next one to start (a restarted
recorder) delivers them. Delivery is at least once: a crash after the POST but before the mark
sends it again, with the same idempotency key (body field and ``Idempotency-Key`` header, see
:mod:`alerts.webhook`) so a receiver can drop the repeat.

Several processes on one PostgreSQL schema each run a worker; every alert is *leased* to one of
them before it is posted (:meth:`~storage.base.AlertStore.claim_deliveries`, ``FOR UPDATE SKIP
LOCKED``) for longer than a POST can last, so two processes never post the same alert at once.
An alert is leased one at a time: a process killed mid-POST holds back only that one, for at
most :attr:`Outbox.lease_ms`. Lease times are each process's wall clock, so processes sharing a
schema from several hosts need their clocks in sync to within the lease margin (NTP does that).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from alerts.webhook import Attempt, idempotency_key, payload
from records import now_ms as wall_clock_ms
from records import retry
from storage import Site, open_alerts
from storage.base import MAX_DELIVERY_ERROR_CHARS, AlertRecord, AlertStore
from storage.errors import StorageError

log = logging.getLogger(__name__)

BATCH = 20  # alerts one pass delivers at most before it looks at the clock and the stop flag again
LEASE_MARGIN_MS = 5_000  # a lease outlasts the POST's deadline by this much (marking it, clock steps)
POLL_S = 1.0  # how often a worker looks for due retries when nothing wakes it


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed, retryable delivery is tried again, and when it is given up.

    Attributes:
        max_attempts: POSTs made at most per alert; after the last failed one it is ``failed``.
        backoff_s: wait after the first failed attempt, seconds; doubles per failed attempt.
        max_backoff_s: cap of one wait, seconds.
        max_age_s: an alert stored longer ago than this (wall clock, seconds) is not retried
            after a failure (it is still attempted once, e.g. after a long outage of the process).
    """

    max_attempts: int = 300
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    max_age_s: float = 86_400.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts: {self.max_attempts!r} must be an integer >= 1")
        for name in ("backoff_s", "max_backoff_s", "max_age_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: {getattr(self, name)!r} must be >= 0")
        _ = self.schedule  # refuses what the checks above let through (e.g. max_attempts=True) now, not mid-delivery

    @property
    def schedule(self) -> retry.RetryPolicy:
        """These settings as the project's retry policy (:mod:`records.retry`).

        Without jitter: the README documents 1 s, 2 s, 4 s …, and one process retries its few
        alerts one at a time through a lease, so there is no herd of clients to spread apart.
        """
        return retry.RetryPolicy(base_s=self.backoff_s, cap_s=self.max_backoff_s, factor=2.0, jitter=False,
                                 max_attempts=self.max_attempts, deadline_s=self.max_age_s)

    def retry_at_ms(self, attempts: int, created_ms: int, now_ms: int) -> int | None:
        """When to try again after ``attempts`` failed attempts (epoch ms), or None to give up."""
        delay_s = self.schedule.next_delay_s(attempts, (now_ms - created_ms) / 1000)
        return None if delay_s is None else now_ms + round(delay_s * 1000)


class Poster(Protocol):
    """What the outbox posts through (:class:`alerts.webhook.WebhookEndpoint`, or a fake in tests)."""

    deadline_s: float

    def post(self, body: dict[str, object], key: str) -> Attempt: ...


def plain_error(text: str) -> str:
    """``text`` as one short line of plain text: control characters become spaces, runs of spaces
    one, cut to :data:`~storage.base.MAX_DELIVERY_ERROR_CHARS` (a reason phrase comes from the endpoint)."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split())[:MAX_DELIVERY_ERROR_CHARS] or "unknown error"


class Outbox:
    """One site's delivery passes: lease a due alert, POST it, mark it; repeat (see the module docstring).

    ``site_key`` names the site in idempotency keys (its PostgreSQL schema or source name);
    ``now_ms`` is the wall clock (epoch ms) that backoff and age are measured on: pass the
    store's own clock. Not thread-safe: one worker thread uses it.
    """

    def __init__(self, poster: Poster, site_key: str, *, policy: RetryPolicy = RetryPolicy(), batch: int = BATCH,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch: {batch!r} must be an integer >= 1")
        self.poster = poster
        self.site_key = site_key
        self.policy = policy
        self.batch = batch
        self._now_ms = now_ms
        self.delivered = 0  # alerts marked delivered by this outbox
        self.retried = 0  # failed attempts that left the alert pending
        self.failed = 0  # alerts given up
        self.last_error: str | None = None

    @property
    def lease_ms(self) -> int:
        """How long an alert is leased for its POST: longer than a POST can last."""
        return round(self.poster.deadline_s * 1000) + LEASE_MARGIN_MS

    def deliver_due(self, store: AlertStore, stop: Callable[[], bool] = lambda: False) -> int:
        """Deliver due pending alerts, oldest first, at most :attr:`batch`; return how many were tried.

        Stops early once ``stop()`` is true (checked before each POST).
        """
        tried = 0
        while tried < self.batch and not stop():
            claimed = store.claim_deliveries(1, self.lease_ms)
            if not claimed:
                break
            self._deliver(store, claimed[0])
            tried += 1
        return tried

    def _deliver(self, store: AlertStore, record: AlertRecord) -> None:
        key = idempotency_key(self.site_key, record.id, record.created_ms)
        attempt = self.poster.post(payload(record.event, record.id, key), key)
        if attempt.error is None:
            if store.mark_delivered(record):
                self.delivered += 1
            else:  # the POST outlasted the lease (a paused process): the alert is another deliverer's now
                log.warning("alert %d: delivered, but its lease had ended; it may be sent again", record.id)
            return
        error = plain_error(attempt.error)
        self.last_error = error
        attempts = record.delivery.attempts + 1
        retry_at = self.policy.retry_at_ms(attempts, record.created_ms, self._now_ms()) if attempt.retryable else None
        if not store.mark_failed(record, error, retry_at):
            log.warning("alert %d: webhook attempt failed (%s) after its lease had ended", record.id, error)
        elif retry_at is None:
            self.failed += 1
            log.warning("alert %d: webhook delivery failed for good after %d attempt(s): %s",
                        record.id, attempts, error)
        else:
            self.retried += 1
            log.info("alert %d: webhook attempt %d failed (%s); retrying in %.1f s", record.id, attempts, error,
                     (retry_at - self._now_ms()) / 1000)


class OutboxWorker:
    """Runs an :class:`Outbox` for ``site`` in a daemon thread with a store of its own.

    It delivers what is due at start (alerts left pending by a process that died), whenever
    :meth:`wake` is called (a new alert was stored) and every ``poll_s`` seconds (retries that
    came due). A store that is away (a server restarting) pauses it until the next poll.
    """

    def __init__(self, site: Site, outbox: Outbox, *, poll_s: float = POLL_S,
                 open_store: Callable[[Site], AlertStore] = open_alerts) -> None:
        self.site = site
        self.outbox = outbox
        self.poll_s = poll_s
        self._open_store = open_store
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.store_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alerts-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for due alerts now (instead of at the next poll)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the POST in flight, if any; True if the thread ended within ``timeout`` s.

        What is not delivered stays pending in the store for the next process.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        store: AlertStore | None = None
        try:
            while not self._stop.is_set():
                self._wake.clear()
                tried = 0
                try:
                    if store is None:
                        store = self._open_store(self.site)
                    tried = self.outbox.deliver_due(store, self._stop.is_set)
                    if self.store_error is not None:
                        log.info("alert webhook delivery resumed")
                        self.store_error = None
                except StorageError as exc:  # the database is away: the alerts wait in it, the next poll retries
                    if self.store_error != str(exc):
                        log.warning("alert webhook delivery paused: %s", exc)
                    self.store_error = str(exc)
                except Exception:  # a bug must not end delivery for good; the alerts stay pending
                    log.exception("alert webhook delivery failed")
                if tried < self.outbox.batch:  # a full batch: more may be due at once
                    self._wake.wait(self.poll_s)
        finally:
            if store is not None:
                store.close()
