"""One webhook POST (alerts/webhook.py): body, idempotency header, what counts as sent, deadlines, URL checks.

When and how often an alert is posted is the outbox's business: tests/test_alerts_outbox.py.
"""

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alerts.webhook import Attempt, WebhookEndpoint, idempotency_key, payload
from config import ConfigError, Settings
from records.alerts import AlertEvent, AlertRule, make_event
from testkit.clocks import ManualClock
from testkit.fake_hook import FakeHook
from testkit.waiting import eventually, in_thread

T0 = 1_765_788_000_123
RULE = AlertRule("zscore", ">", 2.0, pair=("ETHUSDT", "BTCUSDT"), hysteresis=0.5, id=3)
KEY = idempotency_key("live", 17, 1765788000512)


def event(i: int = 0) -> AlertEvent:
    return make_event(RULE, T0 + i * 60_000, 2.31 + i)


@pytest.fixture
def hook() -> Iterator[FakeHook]:
    server = FakeHook()
    yield server
    server.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_posts_a_json_body_with_its_idempotency_key(hook):
    attempt = WebhookEndpoint(hook.url, timeout_s=2.0).post(payload(event(), 17, KEY), KEY)
    assert attempt == Attempt(None)
    message = "ETHUSDT/BTCUSDT z-score 2.31 > 2.00 (1m, window 60)"
    assert hook.bodies == [{
        "text": message, "message": message, "rule": "zscore > 2", "rule_id": 3, "pair": "ETHUSDT/BTCUSDT",
        "metric": "zscore", "value": 2.31, "threshold": 2.0, "ts_ms": T0, "time": "2025-12-15T08:40:00.123+00:00",
        "alert_id": 17, "idempotency_key": "quant-alert:live:17-1765788000512",
    }]
    assert hook.keys == ["quant-alert:live:17-1765788000512"]  # the header repeats the body's key


@pytest.mark.parametrize(("status", "error", "retryable"), [
    (500, "HTTP 500 Internal Server Error", True),
    (503, "HTTP 503 Service Unavailable", True),
    (429, "HTTP 429 Too Many Requests", True),
    (400, "HTTP 400 Bad Request", False),
    (404, "HTTP 404 Not Found", False),
])
def test_server_errors_are_worth_retrying_client_errors_are_not(hook, status, error, retryable):
    hook.statuses = [status]
    assert WebhookEndpoint(hook.url).post(payload(event()), KEY) == Attempt(error, retryable)
    assert hook.requests == 1 and hook.bodies == []


def test_a_refused_connection_is_worth_retrying():
    attempt = WebhookEndpoint(closed_port_url()).post(payload(event()), KEY)
    assert attempt.retryable and attempt.error.startswith("ConnectionRefusedError")


def test_the_error_never_holds_the_url(hook):
    hook.statuses = [502]
    attempt = WebhookEndpoint(hook.url).post(payload(event()), KEY)
    assert "secret-token" not in attempt.error and "secret-token" not in repr(WebhookEndpoint(hook.url))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_delivery_and_is_not_followed(hook, status):
    """The alert goes to the configured endpoint or nowhere: not, as a bodiless GET, to another host."""
    elsewhere = FakeHook()
    try:
        hook.statuses = [status]
        hook.location = elsewhere.url
        attempt = WebhookEndpoint(hook.url).post(payload(event()), KEY)
        assert not attempt.retryable and hook.requests == 1  # a redirect is not worth retrying
        assert attempt.error.startswith(f"HTTP {status} ") and "redirects are not followed" in attempt.error
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


def test_a_dripping_endpoint_cannot_hold_a_post_past_its_deadline():
    # The deadline runs on a manual clock: the POST is checked to keep reading while its clock says
    # it has time left, and to give up once it has none; how fast this machine reads does not matter.
    # (A socket read still waits at most what the clock says is left, in real seconds: 1 s here,
    # against a byte every 20 ms.)
    drip = DripHook(interval=0.02)
    clock = ManualClock()
    try:
        endpoint = WebhookEndpoint(drip.url, timeout_s=2.0, deadline_s=10.0, clock=clock)
        poster, got = in_thread(endpoint.post, payload(event()), KEY)
        eventually(lambda: drip.connections == 1)
        clock.advance(9.0)
        reads = clock.reads
        # Each dripped byte is one read, and each read looks at the clock (or the POST, wrongly, ended).
        eventually(lambda: clock.reads >= reads + 5 or not poster.is_alive())
        assert poster.is_alive(), f"gave up with 1 s of its deadline left: {got}"
        clock.advance(1.5)
        poster.join(10)  # a bound against hanging: the drip alone would last 30 s
        assert not poster.is_alive(), "the POST outlived its deadline"
        assert drip.connections == 1
        assert got == {"result": Attempt("TimeoutError: no complete answer within the 10 s deadline", True)}
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
        ("https://example.com/hook", {"deadline_s": 0}, r"deadline_s: 0 must be > 0"),
    ],
)
def test_invalid_arguments(url, kwargs, match):
    with pytest.raises(ValueError, match=match):
        WebhookEndpoint(url, **kwargs)


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com/",
                                 "http:///nohost", "https://example.com:99999/hook", "//example.com/hook"])
def test_the_recorder_settings_refuse_what_the_endpoint_refuses(url):
    """Refused at start with a message naming the setting, not with a traceback when the engine starts."""
    with pytest.raises(ValueError, match=r"^url: "):
        WebhookEndpoint(url)
    with pytest.raises(ConfigError, match=r"^webhook_url: .*http:// or https://"):
        Settings.of(source="simulated", webhook_url=url)


def test_a_body_that_is_not_json_is_a_failure_not_worth_retrying(hook):
    attempt = WebhookEndpoint(hook.url).post({**payload(event()), "value": float("nan")}, KEY)
    assert not attempt.retryable and attempt.error.startswith("alert cannot be sent as JSON: ")
    assert hook.requests == 0
