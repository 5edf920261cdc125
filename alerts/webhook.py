"""Optional delivery of fired alerts to an HTTP webhook, off the engine's thread.

:meth:`WebhookNotifier.notify` only puts the event on a bounded queue, so a slow or dead
endpoint can never stall alert evaluation; a daemon thread POSTs one JSON object per event::

    {"text": "<message>", "message": "<message>", "rule": "zscore > 2", "rule_id": 3,
     "pair": "ETHUSDT/BTCUSDT", "metric": "zscore", "value": 2.31, "threshold": 2.0,
     "ts_ms": 1765788000000, "time": "2025-12-15T08:40:00.000+00:00"}

``text`` duplicates ``message`` so Slack/Mattermost-style incoming webhooks show it as is.
Connection errors, timeouts, HTTP 5xx and 429 are retried with exponential backoff; other 4xx
mean the request itself is wrong and are not. The URL is never logged: webhook URLs usually
carry a secret token in their path.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from records.alerts import AlertEvent

log = logging.getLogger(__name__)

# Caps one backoff wait however large max_retries is; a webhook alert hours late is useless.
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class WebhookStats:
    """Delivery counters since start. ``queued``: events waiting now; ``retries``: extra attempts."""

    sent: int
    failed: int
    dropped: int
    retries: int
    queued: int
    last_error: str | None


def payload(event: AlertEvent) -> dict[str, object]:
    """The JSON object POSTed for ``event`` (see the module docstring)."""
    time_iso = datetime.fromtimestamp(event.ts_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    return {
        "text": event.message,
        "message": event.message,
        "rule": event.rule_text,
        "rule_id": event.rule_id,
        "pair": event.label,
        "metric": event.metric,
        "value": event.value,
        "threshold": event.threshold,
        "ts_ms": event.ts_ms,
        "time": time_iso,
    }


class WebhookNotifier:
    """POSTs alert events to ``url`` from a background thread fed by a bounded queue.

    Args:
        url: ``http://`` or ``https://`` endpoint.
        timeout_s: per-request timeout, seconds.
        max_retries: retries after the first attempt (so at most ``1 + max_retries`` requests).
        backoff_s: wait before the first retry, seconds; doubles per retry, capped at
            :data:`MAX_BACKOFF_S`.
        queue_size: events that may wait for delivery; more are dropped (and counted).
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0, max_retries: int = 3, backoff_s: float = 0.5,
                 queue_size: int = 1000) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: {url!r} must be an http:// or https:// URL with a host")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: {timeout_s!r} must be > 0")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries: {max_retries!r} must be an integer >= 0")
        if not backoff_s >= 0:
            raise ValueError(f"backoff_s: {backoff_s!r} must be >= 0")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size: {queue_size!r} must be an integer >= 1")
        self.url = url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # None is the stop sentinel put by stop().
        self._queue: queue.Queue[AlertEvent | None] = queue.Queue(maxsize=queue_size)
        # Guards the counters, and makes "closed?" + put atomic against stop()'s closing.
        self._lock = threading.Lock()
        self._closed = False
        self._abort = threading.Event()
        self._sent = self._failed = self._dropped = self._retries = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="alerts-webhook", daemon=True)
        self._thread.start()

    def notify(self, event: AlertEvent) -> bool:
        """Queue ``event`` for delivery without blocking; False (and a drop counted) if the queue
        is full or the notifier is stopped."""
        with self._lock:
            if not self._closed:
                try:
                    self._queue.put_nowait(event)
                    return True
                except queue.Full:
                    pass
            self._dropped += 1
            return False

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop accepting events, deliver what is queued and join the thread within ``timeout`` s.

        When time runs out, pending retries are cut short and what is still queued is dropped
        (counted). Returns True if the thread finished in time.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
        with suppress(queue.Full):  # a queue still full at the deadline is handled below
            self._queue.put(None, timeout=max(0.0, timeout))
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abort.set()
            # Wake a worker idle in get(); if the queue is full it is not idle and sees the abort
            # after its current event.
            with suppress(queue.Full):
                self._queue.put_nowait(None)
        return not self._thread.is_alive()

    def stats(self) -> WebhookStats:
        """A consistent snapshot of the delivery counters."""
        with self._lock:
            return WebhookStats(self._sent, self._failed, self._dropped, self._retries, self._queue.qsize(),
                                self._last_error)

    def __enter__(self) -> WebhookNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._abort.is_set():
            item = self._queue.get()
            if item is None:
                return
            self._deliver(item)
        # Aborted: notify() is closed by now, so this empties the queue for good.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                with self._lock:
                    self._dropped += 1

    def _deliver(self, event: AlertEvent) -> None:
        body = json.dumps(payload(event), allow_nan=False).encode()
        attempt = 0
        while True:
            try:
                self._post(body)
            except (OSError, http.client.HTTPException) as exc:  # URLError and HTTPError are OSErrors
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()  # it holds the response's socket
                error, retryable = _classify(exc)
            else:
                with self._lock:
                    self._sent += 1
                return
            with self._lock:
                self._last_error = error
            delay = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
            # Event.wait returns True when stop() aborts: give up instead of sleeping on.
            if not retryable or attempt >= self.max_retries or self._abort.wait(delay):
                with self._lock:
                    self._failed += 1
                log.warning("alert webhook gave up after %d attempt(s): %s", attempt + 1, error)
                return
            attempt += 1
            with self._lock:
                self._retries += 1

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "pair-alerts/1"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()


def _classify(exc: BaseException) -> tuple[str, bool]:
    """(error text, worth retrying?) for a failed POST."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}", exc.code >= 500 or exc.code == 429
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}", True
    return f"{type(exc).__name__}: {exc}", True
