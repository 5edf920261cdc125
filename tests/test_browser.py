"""End to end in headless Chromium: `streamlit run server.py` (as `make run`), simulated market, as a user sees it.

Needs Debian's ``chromium`` (``.ci/run`` installs it); Playwright drives it via
``executable_path`` and never downloads a browser. A screenshot is saved to ``artifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, free_port, healthy, require_chromium
from testkit.waiting import eventually

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"


@contextlib.contextmanager
def _dashboard(data_dir: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`streamlit run server.py` on a simulated market (as `make run SOURCE=simulated`), up and healthy."""
    require_chromium()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    env.update(QUANT_SOURCE="simulated", QUANT_SPEED="30", QUANT_DATA_DIR=str(data_dir))
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "server.py", "--server.port", str(port),
         "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: server.poll() is None and healthy(url), timeout=60, interval=0.2,
                   message=lambda: f"streamlit did not come up: {server.poll()=}")
        yield server, url
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture(scope="module")
def dashboard_url(tmp_path_factory) -> Iterator[str]:
    with _dashboard(tmp_path_factory.mktemp("data")) as (_server, url):
        yield url


def _z_text(page) -> str:
    """The live panel's Z-score as shown ("" while it is being drawn)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    z_value = page.locator("[data-live-field='z'] [data-live-value]")
    try:
        return z_value.inner_text(timeout=1_000) if z_value.count() else ""
    except PlaywrightTimeout:  # re-rendered between the count and the read
        return ""


def test_dashboard_in_chromium(dashboard_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2000}, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(dashboard_url)
            # Charts live in the browser and are extended in place (ui/live_chart.py).
            charts = page.locator(".live-chart .main-svg")
            # The live panel is pushed (Server-Sent Events) into a component: see ui/live.py.
            def z_text() -> str:
                return _z_text(page)

            eventually(lambda: charts.count() >= 6 and z_text() not in ("", "—"), timeout=90, interval=0.5,
                       message=lambda: f"{charts.count()} charts, Z-score {z_text()!r}")
            first = z_text()
            eventually(lambda: z_text() not in (first, "—"), timeout=20, interval=0.25,
                       message=f"the Z-score stayed at {first} for 20 s")
            assert page.locator("[data-testid='stException']").count() == 0

            # The price chart takes the new bars into the very same plot (marked here), update by update.
            prices = page.locator(".live-chart").first
            prices.evaluate("div => { div.__marked = true; }")
            newest = "div => div.data[0].x[div.data[0].x.length - 1]"
            drawn = prices.evaluate(newest)
            eventually(lambda: prices.evaluate("div => div.__marked === true") and prices.evaluate(newest) > drawn,
                       timeout=20, interval=0.25, message="the price chart did not take in new bars")
            assert errors == []
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            page.get_by_role("tab", name="Table & export").click()
            button = page.get_by_role("button", name="Per-minute table (CSV)")
            button.wait_for(timeout=30_000)
            with page.expect_download(timeout=30_000) as download_info:
                button.click()
            path = download_info.value.path()
            header = Path(path).read_text().splitlines()[0]
            assert header.startswith("time_utc,ETHUSDT_close,BTCUSDT_close")
            assert page.locator("[data-testid='stException']").count() == 0

            # 1 min bars, window 60: an hour of bars the recorder has not seen yet. The simulated
            # market's own past is stored at start, so the z-score is there at once, not in an hour.
            page.get_by_text("1 min", exact=True).click()
            page.get_by_role("tab", name="Charts").click()
            eventually(lambda: "1 min bars" in page.locator("h1").inner_text() and z_text() not in ("", "—"),
                       timeout=20, interval=0.25, message=lambda: f"1 min bars: Z-score {z_text()!r}")
            assert page.get_by_text("needs", exact=False).count() == 0  # no "needs 59 more bars"
            eventually(lambda: charts.count() >= 6, timeout=20, interval=0.25, message="1 min charts not drawn")
            assert page.locator("[data-testid='stException']").count() == 0
            assert errors == []
        finally:
            browser.close()


def test_ctrl_c_with_a_page_open_stops_the_server(tmp_path):
    """Was: the server waited for the page's open event stream to end before stopping, so Ctrl-C
    (or SIGTERM) with a browser open left it and its feeds running until a second Ctrl-C."""
    from playwright.sync_api import sync_playwright

    with _dashboard(tmp_path) as (server, url), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            eventually(lambda: _z_text(page) not in ("", "—"), timeout=90, interval=0.5,
                       message="the live panel never showed a Z-score")  # its stream is open
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail("the server was still running 20 s after Ctrl-C with a page open")
        finally:
            browser.close()
        output = server.stdout.read()
        assert "Traceback" not in output, output


def test_the_pushed_panel_rounds_prices_as_the_polled_one():
    """The pushed panel's JavaScript decides a price's decimals itself: the same as ui.live.price_decimals."""
    import re

    from playwright.sync_api import sync_playwright

    from ui import live

    require_chromium()
    function = re.search(r"^function priceDecimals\(.*?^}", live._JS, re.S | re.M)
    assert function is not None, "the panel's script has no priceDecimals"
    prices = [89_806.8, 3_101.456, 999.99, 12.3456, 1.0, 0.99999, 0.0023456, 0.000012345, -0.5, 0.0, 1e-30]
    rule = {"digits": live.PRICE_DIGITS, "max": live.MAX_DECIMALS}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            shown = page.evaluate(f"([prices, rule]) => {{ {function.group(0)}; "
                                  "return prices.map(p => priceDecimals(p, rule)); }", [prices, rule])
        finally:
            browser.close()
    assert shown == [live.price_decimals(p) for p in prices]
