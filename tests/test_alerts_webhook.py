import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alerts.webhook import WebhookNotifier, payload
from config import ConfigError, Settings
from records.alerts import AlertEvent, AlertRule, make_event
from testkit.waiting import eventually

T0 = 1_765_788_000_123
RULE = AlertRule("zscore", ">", 2.0, pair=("ETHUSDT", "BTCUSDT"), hysteresis=0.5, id=3)


def event(i: int = 0) -> AlertEvent:
    return make_event(RULE, T0 + i * 60_000, 2.31 + i)


class FakeHook:
    """A loopback webhook endpoint on 127.0.0.1.

    Answers each POST with the next code of ``statuses`` (200 once they run out), with a
    ``Location`` header when ``location`` is set, and keeps the JSON bodies it accepted. GETs are
    answered 200 like many real endpoints do; ``methods`` records every request. While ``gate`` is
    cleared, requests wait inside the handler, which stands in for a slow endpoint.
    """

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.location: str | None = None
        self.bodies: list[dict] = []
        self.methods: list[str] = []
        self.requests = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook._lock:
                    hook.requests += 1
                    hook.methods.append("POST")
                    status = hook.statuses.pop(0) if hook.statuses else 200
                hook.gate.wait(10)
                if status < 300:
                    with hook._lock:
                        hook.bodies.append(body)
                self.send_response(status)
                if hook.location is not None:
                    self.send_header("Location", hook.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                with hook._lock:
                    hook.methods.append("GET")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"
        # A short poll interval keeps shutdown() (which waits for the next poll) fast.
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="fake-hook", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def hook() -> Iterator[FakeHook]:
    server = FakeHook()
    yield server
    server.close()


@pytest.fixture
def notifiers() -> Iterator[list[WebhookNotifier]]:
    """Notifiers created by a test, stopped afterwards even if the test failed."""
    created: list[WebhookNotifier] = []
    yield created
    for notifier in created:
        notifier.stop(timeout=5)


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_delivers_a_json_body(hook, notifiers):
    notifier = WebhookNotifier(hook.url, timeout_s=2.0)
    notifiers.append(notifier)
    assert notifier.notify(event()) is True
    eventually(lambda: notifier.stats().sent == 1, message=lambda: repr(notifier.stats()))
    message = "ETHUSDT/BTCUSDT z-score 2.31 > 2.00 (1m, window 60)"
    assert hook.bodies == [{
        "text": message, "message": message, "rule": "zscore > 2", "rule_id": 3, "pair": "ETHUSDT/BTCUSDT",
        "metric": "zscore", "value": 2.31, "threshold": 2.0, "ts_ms": T0, "time": "2025-12-15T08:40:00.123+00:00",
    }]
    assert hook.bodies[0] == payload(event())
    stats = notifier.stats()
    assert (stats.failed, stats.dropped, stats.retries, stats.last_error) == (0, 0, 0, None)


def test_retries_a_server_error_then_succeeds(hook, notifiers):
    hook.statuses = [500, 503]
    notifier = WebhookNotifier(hook.url, max_retries=3, backoff_s=0.01)
    notifiers.append(notifier)
    notifier.notify(event())
    eventually(lambda: notifier.stats().sent == 1, message=lambda: repr(notifier.stats()))
    stats = notifier.stats()
    assert (stats.retries, stats.failed, hook.requests) == (2, 0, 3)
    assert stats.last_error == "HTTP 503 Service Unavailable"  # the last error is kept even after a success
    assert len(hook.bodies) == 1


def test_client_errors_are_not_retried(hook, notifiers):
    hook.statuses = [400]
    notifier = WebhookNotifier(hook.url, max_retries=3, backoff_s=0.01)
    notifiers.append(notifier)
    notifier.notify(event())
    eventually(lambda: notifier.stats().failed == 1, message=lambda: repr(notifier.stats()))
    assert (notifier.stats().retries, hook.requests, notifier.stats().last_error) == (0, 1, "HTTP 400 Bad Request")


def test_server_down_never_blocks_and_gives_up_after_max_retries(notifiers):
    notifier = WebhookNotifier(closed_port_url(), max_retries=2, backoff_s=0.01)
    notifiers.append(notifier)
    started = time.monotonic()
    assert all(notifier.notify(event(i)) for i in range(3))
    assert time.monotonic() - started < 0.5  # notify only enqueues
    eventually(lambda: notifier.stats().failed == 3, message=lambda: repr(notifier.stats()))
    stats = notifier.stats()
    assert (stats.sent, stats.retries, stats.queued) == (0, 6, 0)
    assert "ConnectionRefusedError" in stats.last_error


def test_a_full_queue_drops_and_counts_instead_of_blocking(hook, notifiers):
    hook.gate.clear()  # the endpoint hangs until released
    notifier = WebhookNotifier(hook.url, timeout_s=10, queue_size=1)
    notifiers.append(notifier)
    assert notifier.notify(event(0)) is True
    eventually(lambda: hook.requests == 1)  # in flight: the queue is empty again
    assert notifier.notify(event(1)) is True  # waits in the queue
    assert notifier.notify(event(2)) is False  # no room
    stats = notifier.stats()
    assert (stats.dropped, stats.queued) == (1, 1)
    hook.gate.set()
    eventually(lambda: notifier.stats().sent == 2, message=lambda: repr(notifier.stats()))
    assert [body["ts_ms"] for body in hook.bodies] == [T0, T0 + 60_000]


def test_stop_drains_the_queue_then_refuses_new_events(hook):
    notifier = WebhookNotifier(hook.url)
    for i in range(5):
        notifier.notify(event(i))
    assert notifier.stop(timeout=5) is True
    assert notifier.stats().sent == 5 and len(hook.bodies) == 5
    assert notifier.notify(event(9)) is False
    assert notifier.stats().dropped == 1


def test_stop_cuts_a_long_backoff_short(notifiers):
    notifier = WebhookNotifier(closed_port_url(), max_retries=5, backoff_s=30, deadline_s=600)
    notifiers.append(notifier)
    notifier.notify(event())
    eventually(lambda: notifier.stats().last_error is not None)  # first attempt failed, now backing off
    started = time.monotonic()
    notifier.stop(timeout=0.2)
    assert time.monotonic() - started < 2
    assert notifier.stop(timeout=5) is True  # the aborted worker exits promptly
    assert (notifier.stats().failed, notifier.stats().retries) == (1, 0)


def test_stop_past_its_deadline_drops_what_is_still_queued(hook):
    hook.gate.clear()
    notifier = WebhookNotifier(hook.url, timeout_s=10, queue_size=1)
    notifier.notify(event(0))
    eventually(lambda: hook.requests == 1)
    notifier.notify(event(1))
    assert notifier.stop(timeout=0.2) is False  # event 0 is still in flight, event 1 queued
    hook.gate.set()
    assert notifier.stop(timeout=5) is True
    stats = notifier.stats()
    assert (stats.sent, stats.dropped, hook.requests) == (1, 1, 1)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_delivery_and_is_not_followed(hook, notifiers, status):
    """The alert goes to the configured endpoint or nowhere: not, as a bodiless GET, to another host."""
    elsewhere = FakeHook()
    try:
        hook.statuses = [status]
        hook.location = elsewhere.url
        notifier = WebhookNotifier(hook.url, max_retries=3, backoff_s=0.01)
        notifiers.append(notifier)
        notifier.notify(event())
        eventually(lambda: notifier.stats().failed == 1, message=lambda: repr(notifier.stats()))
        stats = notifier.stats()
        assert (stats.sent, stats.retries, hook.requests) == (0, 0, 1)  # a redirect is not worth retrying
        assert stats.last_error.startswith(f"HTTP {status} ") and "redirects are not followed" in stats.last_error
        assert elsewhere.methods == []
    finally:
        elsewhere.close()


class DripHook:
    """A loopback endpoint that reads the request, then sends its answer one byte every ``interval`` s.

    Each byte comes well inside any per-read timeout, so only an overall deadline ends the
    exchange. It drips for at most ``limit_s`` (so a test cannot hang) and stops once the client
    has gone.
    """

    def __init__(self, interval: float = 0.1, limit_s: float = 30.0) -> None:
        self.connections = 0
        self._stop = threading.Event()
        drip = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                drip.connections += 1
                answer = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 10_000
                deadline = time.monotonic() + limit_s
                for byte in answer:
                    if drip._stop.wait(interval) or time.monotonic() > deadline:
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:  # the client gave up: the test's point
                        return

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="drip-hook", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def test_a_dripping_endpoint_cannot_hold_a_delivery_past_its_deadline(notifiers):
    drip = DripHook()
    try:
        notifier = WebhookNotifier(drip.url, timeout_s=2.0, max_retries=3, backoff_s=0.01, deadline_s=1.0)
        notifiers.append(notifier)
        started = time.monotonic()
        notifier.notify(event())
        eventually(lambda: notifier.stats().failed == 1, timeout=20, interval=0.01,
                   message=lambda: repr(notifier.stats()))
        elapsed = time.monotonic() - started
        # A bound, not a speed: 1 s deadline for all attempts; the drip alone would last 30 s.
        assert elapsed < 1.0 + 2.0, elapsed
        stats = notifier.stats()
        assert stats.sent == 0 and drip.connections >= 1
        assert stats.last_error == "TimeoutError: no complete answer within the 1 s delivery deadline"
    finally:
        drip.close()


@pytest.mark.parametrize(
    ("url", "kwargs", "match"),
    [
        ("ftp://example.com/hook", {}, r"url: must be an http:// or https:// URL \(scheme 'ftp'\)"),
        ("file:///etc/passwd", {}, r"url: must be an http:// or https:// URL \(scheme 'file'\)"),
        ("http:///nohost", {}, r"with a host"),
        ("example.com/hook", {}, r"must be an http:// or https:// URL"),
        ("https://example.com/hook", {"timeout_s": 0}, r"timeout_s: 0 must be > 0"),
        ("https://example.com/hook", {"max_retries": -1}, r"max_retries: -1 must be an integer >= 0"),
        ("https://example.com/hook", {"backoff_s": -0.5}, r"backoff_s: -0.5 must be >= 0"),
        ("https://example.com/hook", {"queue_size": 0}, r"queue_size: 0 must be an integer >= 1"),
        ("https://example.com/hook", {"deadline_s": 0}, r"deadline_s: 0 must be > 0"),
    ],
)
def test_invalid_arguments(url, kwargs, match):
    with pytest.raises(ValueError, match=match):
        WebhookNotifier(url, **kwargs)


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com/",
                                 "http:///nohost", "https://example.com:99999/hook", "//example.com/hook"])
def test_the_recorder_settings_refuse_what_the_notifier_refuses(url):
    """Refused at start with a message naming the setting, not with a traceback when the engine starts."""
    with pytest.raises(ValueError, match=r"^url: "):
        WebhookNotifier(url)
    with pytest.raises(ConfigError, match=r"^webhook_url: .*http:// or https://"):
        Settings(source="simulated", webhook_url=url)
