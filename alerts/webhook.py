"""One webhook POST of a stored alert, with a hard deadline; the outbox (:mod:`alerts.outbox`) decides when.

:meth:`WebhookEndpoint.post` sends one JSON object per alert::

    {"text": "<message>", "message": "<message>", "rule": "zscore > 2", "rule_id": 3,
     "pair": "ETHUSDT/BTCUSDT", "metric": "zscore", "value": 2.31, "threshold": 2.0,
     "ts_ms": 1765788000000, "time": "2025-12-15T08:40:00.000+00:00",
     "alert_id": 17, "idempotency_key": "quant-alert:live:17-1765788000512"}

``text`` duplicates ``message`` so Slack/Mattermost-style incoming webhooks show it as is.
Delivery is at least once (a crash after the POST but before it is marked delivered sends it
again), so the request also carries the key in an ``Idempotency-Key`` header: a receiver that
remembers the keys it accepted can drop repeats.

Only a 2xx answer counts as sent. Connection errors, timeouts, HTTP 5xx and 429 are worth
retrying; other 4xx mean the request itself is wrong and are not. A 3xx is a failed delivery:
redirects are never followed (a followed 302 would re-send the alert, without its body, to
wherever the endpoint points). One POST ends within ``deadline_s``: every socket wait is capped
by what is left of it, so an endpoint that answers one byte at a time cannot hold the sender.
Only http:// and https:// URLs are accepted; no proxy is used. The URL is never logged or put in
an error text: webhook URLs usually carry a secret token in their path.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import SplitResult, urlsplit

from config import http_url_problem
from ingestion.http import connect as deadline_connect
from records.alerts import AlertEvent

# A server's reason phrase can be 64 KiB; error texts keep this much of it.
MAX_REASON_CHARS = 100


def idempotency_key(site_key: str, alert_id: int, created_ms: int) -> str:
    """The stable de-duplication key of stored alert ``alert_id`` of the site named ``site_key``.

    ``created_ms`` (when the alert was stored, epoch ms) keeps keys apart when a database is made
    anew and its alert ids start again at 1: a receiver that drops repeats never drops a new alert.
    """
    return f"quant-alert:{site_key}:{alert_id}-{created_ms}"


def payload(event: AlertEvent, alert_id: int | None = None, key: str | None = None) -> dict[str, object]:
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
        "alert_id": alert_id,
        "idempotency_key": key,
    }


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one POST: ``error`` None if the endpoint accepted it (2xx), else why not,
    as plain text without the URL; ``retryable``: whether trying again later may succeed."""

    error: str | None
    retryable: bool = False


class WebhookEndpoint:
    """POSTs JSON to ``url``, one request at a time, each within a hard deadline.

    Args:
        url: ``http://`` or ``https://`` endpoint.
        timeout_s: longest wait for any one socket operation (connect, send, a read), seconds.
        deadline_s: overall time one POST may take, connect to status line, seconds.
        clock: the monotonic seconds that deadline runs on (a test's, or ``time.monotonic``).
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0, deadline_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        problem = http_url_problem(url)
        if problem:
            raise ValueError(f"url: {problem}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: {timeout_s!r} must be > 0")
        if not deadline_s > 0:
            raise ValueError(f"deadline_s: {deadline_s!r} must be > 0")
        self._parts = urlsplit(url)
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self._clock = clock

    def __repr__(self) -> str:  # never the URL: it usually holds a token
        return f"WebhookEndpoint(timeout_s={self.timeout_s:g}, deadline_s={self.deadline_s:g})"

    def post(self, body: dict[str, object], key: str) -> Attempt:
        """POST ``body`` as JSON once, with ``Idempotency-Key: key``; the outcome."""
        try:
            data = json.dumps(body, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:  # a NaN or an odd type: sending it again cannot help
            return Attempt(f"alert cannot be sent as JSON: {exc}", False)
        deadline = self._clock() + self.deadline_s
        try:
            status, reason = _post(self._parts, data, self.timeout_s, deadline, key, self._clock)
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
            if self._clock() >= deadline:  # whichever wait ran out last, the deadline is the reason
                return Attempt(f"TimeoutError: no complete answer within the {self.deadline_s:g} s deadline", True)
            return Attempt(f"{type(exc).__name__}: {exc}", True)
        if 200 <= status < 300:
            return Attempt(None)
        error = f"HTTP {status} {reason[:MAX_REASON_CHARS]}".rstrip()
        if 300 <= status < 400:
            return Attempt(f"{error}: redirects are not followed", False)
        return Attempt(error, status >= 500 or status == 429)


def _post(parts: SplitResult, body: bytes, timeout_s: float, deadline: float, key: str,
          clock: Callable[[], float]) -> tuple[int, str]:
    """One JSON POST to ``parts``; the answer's status code and reason phrase (its body is not read).

    Every socket wait lasts at most ``timeout_s`` and the whole exchange ends by ``deadline``
    (seconds on ``clock``), else TimeoutError.
    """
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = deadline_connect(parts, timeout_s, deadline, clock=clock)
    try:
        conn.request("POST", target, body=body, headers={
            "Content-Type": "application/json", "User-Agent": "pair-alerts/1", "Connection": "close",
            "Idempotency-Key": key})
        with conn.getresponse() as response:
            return response.status, response.reason
    finally:
        conn.close()


