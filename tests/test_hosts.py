"""DNS rebinding: `streamlit run server.py` (as `make run`) answers only to its own host names, on every route.

A page on another site can make its own name resolve to 127.0.0.1; the browser then sends that
name in ``Host``. Raw requests (http.client, websocket-client) check each route with a foreign
``Host``; headless Chromium checks the whole attack with ``--host-resolver-rules`` mapping a
foreign name to 127.0.0.1.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from config import ConfigError, allowed_hosts, parse_allowed_hosts
from testkit.browser import CHROMIUM, CHROMIUM_ARGS, free_port, healthy, require_chromium
from testkit.waiting import eventually
from ui.hosts import REFUSED, host_name

ROOT = Path(__file__).resolve().parents[1]
ROUTES = ["/", "/_stcore/health", "/_stcore/host-config", "/static/index.html", "/live/events?token=" + "0" * 32,
          "/live/plotly.min.js", "/live/chart.js"]


def _start(port: int, data_dir: Path, **env_changes: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    env.update(QUANT_SOURCE="simulated", QUANT_SPEED="30", QUANT_DATA_DIR=str(data_dir), **env_changes)
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "server.py", "--server.port", str(port),
         "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(server: subprocess.Popen[str]) -> str:
    if server.poll() is None:
        server.terminate()
    try:
        out, _ = server.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        out, _ = server.communicate(timeout=10)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[int]:
    """The port of the dashboard, started with the default allowed names."""
    port = free_port()
    server = _start(port, tmp_path_factory.mktemp("data"))
    try:
        eventually(lambda: server.poll() is None and healthy(f"http://127.0.0.1:{port}"), timeout=60, interval=0.2,
                   message=lambda: f"streamlit did not come up: {server.poll()=}")
        yield port
    finally:
        out = _stop(server)
        assert "Traceback" not in out, out


def _get(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        # An SSE stream never ends: its status and first bytes are enough.
        return response.status, response.read(200) if response.status != 200 else response.read1(200)
    finally:
        conn.close()


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost.evil.example:{port}",
                                  "127.0.0.1.nip.io:{port}", "localhost:{port}@evil.example", "[::2]:{port}", None])
def test_a_foreign_host_is_refused_on_every_http_route(served, path, host):
    port = served
    status, body = _get(port, path, host.format(port=port) if host else None)
    if host is None:  # HTTP/1.1 without Host: the HTTP server itself answers 400 before any route runs
        assert status in (400, 403) and b"streamlit" not in body.lower()
    else:
        assert (status, body) == (403, REFUSED)


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "LOCALHOST.:{port}", "localhost",
                                  "[::1]:{port}"])
def test_the_dashboards_own_names_are_served(served, host):
    port = served
    assert _get(port, "/_stcore/health", host.format(port=port)) == (200, b"ok")
    status, body = _get(port, "/", host.format(port=port))
    assert status == 200 and b"streamlit" in body.lower()
    # The stream route answers (404: no page published this token), it is not refused.
    assert _get(port, "/live/events?token=" + "0" * 32, host.format(port=port))[0] == 404


def _up(port: int, host: str) -> bool:
    """True once the server answers its health check for ``host`` with 200."""
    try:
        return _get(port, "/_stcore/health", host)[0] == 200
    except OSError:  # not listening yet
        return False


def _websocket(port: int, host: str) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{port}/_stcore/stream", host=host, timeout=10,
                                       subprotocols=["streamlit"], suppress_origin=True)


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example"])
def test_a_foreign_host_gets_no_websocket(served, host):
    port = served
    with pytest.raises(websocket.WebSocketBadStatusException) as raised:
        _websocket(port, host.format(port=port))
    assert raised.value.status_code == 403


def test_the_dashboards_own_name_gets_its_websocket(served):
    port = served
    ws = _websocket(port, f"localhost:{port}")
    try:
        assert ws.connected
    finally:
        ws.close()


@pytest.mark.browser
def test_a_rebound_name_gets_no_session_in_chromium(served):
    """The attack as reproduced: a foreign name resolves to 127.0.0.1; the page it loads must get nothing."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    port = served
    with sync_playwright() as playwright:
        rebind = "--host-resolver-rules=MAP rebind.example 127.0.0.1"
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, rebind])
        try:
            page = browser.new_page()
            response = page.goto(f"http://rebind.example:{port}/")
            assert response is not None and response.status == 403
            assert "does not answer to that host name" in page.inner_text("body")
            # What the attacker's script, running as rebind.example, could still try from that origin.
            results = page.evaluate("""async (port) => {
                const health = await fetch('/_stcore/health').then(r => r.status, () => 'failed');
                const events = await fetch('/live/events?token=' + '0'.repeat(32)).then(r => r.status, () => 'failed');
                const socket = await new Promise((resolve) => {
                    const ws = new WebSocket(`ws://rebind.example:${port}/_stcore/stream`, ['streamlit']);
                    ws.onopen = () => { ws.close(); resolve('open'); };
                    ws.onerror = () => resolve('refused');
                    setTimeout(() => resolve('timeout'), 10000);
                });
                return {health, events, socket};
            }""", port)
            assert results == {"health": 403, "events": 403, "socket": "refused"}

            # The dashboard's own name works in the same browser: the app renders and its socket opens.
            own = browser.new_page()
            own.goto(f"http://localhost:{port}/")
            own.locator("h1").first.wait_for(timeout=60_000)
            assert own.locator("[data-testid='stException']").count() == 0
        finally:
            browser.close()


@pytest.mark.parametrize(("header", "name"), [
    ("localhost:8501", "localhost"), ("LocalHost.", "localhost"), ("[::1]:8501", "::1"), ("[0:0::1]", "::1"),
    ("127.0.0.1", "127.0.0.1"), ("a:b:c", None), ("x:port", None), ("[::1", None), ("[::1]x", None), ("", None),
    ("[zz]:1", None),
])
def test_host_name_parses_a_host_header(header, name):
    assert host_name(header) == name


def test_allowed_hosts_default_and_validation():
    assert allowed_hosts({}) == ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts({"QUANT_ALLOWED_HOSTS": "Desk.Example.com, [::1],desk.example.com"}) == (
        "desk.example.com", "::1")
    for bad in ("*", "http://desk", "desk:8501", "*.example.com", " , ", "a b"):
        with pytest.raises(ConfigError, match=r"allowed_hosts \(QUANT_ALLOWED_HOSTS\)"):
            parse_allowed_hosts(bad)


def test_a_bad_allowed_hosts_setting_stops_the_server_naming_it(tmp_path):
    server = _start(free_port(), tmp_path, QUANT_ALLOWED_HOSTS="http://desk.example.com")
    try:
        out, _ = server.communicate(timeout=60)
    finally:
        _stop(server)
    assert server.returncode != 0
    assert "error: allowed_hosts (QUANT_ALLOWED_HOSTS): 'http://desk.example.com' is not a host name" in out
    assert "Traceback" not in out


def test_a_configured_proxy_name_is_served_and_the_defaults_are_not(tmp_path):
    port = free_port()
    server = _start(port, tmp_path, QUANT_ALLOWED_HOSTS="desk.example.com")
    try:
        eventually(lambda: server.poll() is None and _up(port, "desk.example.com"), timeout=60, interval=0.2,
                   message=lambda: f"streamlit did not come up: {server.poll()=}")
        for _ in range(3):
            assert _get(port, "/_stcore/health", f"localhost:{port}")[0] == 403
        ws = _websocket(port, "desk.example.com")
        ws.close()
    finally:
        out = _stop(server)
    # The operator sees why (once per name, not once per request), and no traceback.
    assert out.count(f"refused a http request for Host 'localhost:{port}': not in desk.example.com") == 1, out
    assert "Traceback" not in out
