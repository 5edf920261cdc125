"""Optional delivery of fired alerts to an HTTP webhook, off the engine's thread.

:meth:`WebhookNotifier.notify` only puts the event on a bounded queue, so a slow or dead
endpoint can never stall alert evaluation; a daemon thread POSTs one JSON object per event::

    {"text": "<message>", "message": "<message>", "rule": "zscore > 2", "rule_id": 3,
     "pair": "ETHUSDT/BTCUSDT", "metric": "zscore", "value": 2.31, "threshold": 2.0,
     "ts_ms": 1765788000000, "time": "2025-12-15T08:40:00.000+00:00"}

``text`` duplicates ``message`` so Slack/Mattermost-style incoming webhooks show it as is.
Only a 2xx answer counts as sent. Connection errors, timeouts, HTTP 5xx and 429 are retried with
exponential backoff; other 4xx mean the request itself is wrong and are not. A 3xx is a failed
delivery: redirects are never followed (a followed 302 would re-send the alert, without its body,
to wherever the endpoint points). Each event's delivery, retries and backoff included, ends
within ``deadline_s``: every socket wait is capped by what is left of it, so an endpoint that
answers one byte at a time cannot hold the worker. Only http:// and https:// URLs are accepted;
no proxy is used. The URL is never logged: webhook URLs usually carry a secret token in their path.
"""

from __future__ import annotations

import functools
import http.client
import io
import json
import logging
import queue
import socket
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import SplitResult, urlsplit

from config import http_url_problem
from records.alerts import AlertEvent

log = logging.getLogger(__name__)

# Caps one backoff wait however large max_retries is; a webhook alert hours late is useless.
MAX_BACKOFF_S = 30.0
# A server's reason phrase can be 64 KiB; error texts and log lines keep this much of it.
MAX_REASON_CHARS = 100


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
        timeout_s: longest wait for any one socket operation (connect, send, a read), seconds.
        max_retries: retries after the first attempt (so at most ``1 + max_retries`` requests).
        backoff_s: wait before the first retry, seconds; doubles per retry, capped at
            :data:`MAX_BACKOFF_S`.
        queue_size: events that may wait for delivery; more are dropped (and counted).
        deadline_s: overall time for one event's delivery, all attempts and backoff waits
            included, seconds; then it counts as failed.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0, max_retries: int = 3, backoff_s: float = 0.5,
                 queue_size: int = 1000, deadline_s: float = 10.0) -> None:
        problem = http_url_problem(url)
        if problem:
            raise ValueError(f"url: {problem}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: {timeout_s!r} must be > 0")
        if not deadline_s > 0:
            raise ValueError(f"deadline_s: {deadline_s!r} must be > 0")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries: {max_retries!r} must be an integer >= 0")
        if not backoff_s >= 0:
            raise ValueError(f"backoff_s: {backoff_s!r} must be >= 0")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size: {queue_size!r} must be an integer >= 1")
        self.url = url
        self._parts = urlsplit(url)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.deadline_s = deadline_s
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
        deadline = time.monotonic() + self.deadline_s
        attempt = 0
        while True:
            error, retryable = self._attempt(body, deadline)
            if error is None:
                with self._lock:
                    self._sent += 1
                return
            with self._lock:
                self._last_error = error
            delay = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
            # A retry that could only start after the deadline is not worth waiting for.
            # Event.wait returns True when stop() aborts: give up instead of sleeping on.
            if not retryable or attempt >= self.max_retries or time.monotonic() + delay >= deadline \
                    or self._abort.wait(delay):
                with self._lock:
                    self._failed += 1
                log.warning("alert webhook gave up after %d attempt(s): %s", attempt + 1, error)
                return
            attempt += 1
            with self._lock:
                self._retries += 1

    def _attempt(self, body: bytes, deadline: float) -> tuple[str | None, bool]:
        """POST ``body`` once: (None, _) if the endpoint accepted it, else (why, worth retrying?)."""
        try:
            status, reason = _post(self._parts, body, self.timeout_s, deadline)
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
            if time.monotonic() >= deadline:  # whichever wait ran out last, the deadline is the reason
                return f"TimeoutError: no complete answer within the {self.deadline_s:g} s delivery deadline", False
            return f"{type(exc).__name__}: {exc}", True
        if 200 <= status < 300:
            return None, False
        error = f"HTTP {status} {reason[:MAX_REASON_CHARS]}"
        if 300 <= status < 400:
            return f"{error}: redirects are not followed", False
        return error, status >= 500 or status == 429


def _post(parts: SplitResult, body: bytes, timeout_s: float, deadline: float) -> tuple[int, str]:
    """One JSON POST to ``parts``; the answer's status code and reason phrase (its body is not read).

    Every socket wait lasts at most ``timeout_s`` and the whole exchange ends by ``deadline``
    (``time.monotonic()`` seconds), else TimeoutError.
    """
    # Connect and the TLS handshake each wait at most ``first``, so together they fit what is left.
    first = min(timeout_s, _left(deadline) / 2)
    connection_class = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
    conn = connection_class(parts.hostname, parts.port, timeout=first)
    conn.response_class = functools.partial(_DeadlineResponse, deadline=deadline, timeout_s=timeout_s)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.connect()
        conn.sock.settimeout(min(timeout_s, _left(deadline)))  # sendall: a total, not per chunk
        conn.request("POST", target, body=body, headers={
            "Content-Type": "application/json", "User-Agent": "pair-alerts/1", "Connection": "close"})
        with conn.getresponse() as response:
            return response.status, response.reason
    finally:
        conn.close()


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (``time.monotonic()`` seconds); TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("delivery deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """Socket reads whose timeout shrinks to what is left before one deadline.

    A per-read timeout alone never fires on a peer that sends one byte a second.
    """

    def __init__(self, sock: socket.socket, deadline: float, timeout_s: float) -> None:
        super().__init__()
        self._sock, self._deadline, self._timeout_s = sock, deadline, timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self._sock.settimeout(min(self._timeout_s, _left(self._deadline)))
        return self._sock.recv_into(buffer)


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response whose status line and headers are read by a :class:`_DeadlineReader`."""

    def __init__(self, sock: socket.socket, *args: object, deadline: float, timeout_s: float, **kwargs: object) -> None:
        super().__init__(sock, *args, **kwargs)  # type: ignore[arg-type]
        self.fp.close()  # the plain socket file HTTPResponse made; it never read anything
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline, timeout_s))
