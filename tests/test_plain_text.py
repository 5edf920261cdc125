"""Text from outside is shown as plain text: never as Markdown links, images, HTML, math, colours or emoji.

Streamlit renders Markdown in st.warning/error/info/success/caption/title/toast; ui.plain.plain()
escapes what comes from outside. AppTest checks the page's elements (a REST reply body, a dataset
name, a rule's text); headless Chromium checks that Streamlit's real renderer shows plain() output
literally, with no <img>, link, math or emoji.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from hypothesis import given
from hypothesis import strategies as hs
from streamlit.testing.v1 import AppTest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, free_port, healthy, require_chromium
from testkit.waiting import eventually
from ui.plain import plain, unescaped

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PIXEL = "http://127.0.0.1:9/pixel.png"
HOSTILE = f"![x]({PIXEL}) [click](http://127.0.0.1:9/) <img src={PIXEL}>"
EVERYTHING = (f"{HOSTILE} **b** _i_ `c` $x^2$ :smile: :red[red] :material/home: <b>h</b> http://127.0.0.1:9/auto "
              "www.evil.example a@b.example ~~s~~ | t | \n# heading\n- item\n    code")


def shows_plainly(value: str, literal: str) -> bool:
    """True when an element's Markdown ``value`` reads as ``literal`` and can open no link or image."""
    bare = re.sub(r"\\.", "", value)  # what is left once every escaped character is taken out
    return literal in unescaped(value) and not re.search(r"[!\[\]()<>`*_$~|#]", bare) and "://" not in value


# ------------------------------------------------------------------------------------------------
# The helper
# ------------------------------------------------------------------------------------------------


@given(hs.text())
def test_plain_reads_as_the_text_and_leaves_no_markdown_character_unescaped(text):
    shown = plain(text)
    assert unescaped(shown) == " ".join(text.replace("\u2060", "").split())
    bare = re.sub(r"\\[!-/:-@\[-`{-~]", "", shown)
    assert not re.search(r"[!-/:-@\[-`{-~]", bare)  # every ASCII punctuation character is escaped
    assert "\n" not in shown and "://" not in shown.replace("\\", "")


def test_plain_breaks_every_autolink_form():
    text = "see http://a.example, HTTPS://b.example, www.c.example and d@e.example"
    shown = plain(text)
    visible = shown.replace("\\", "").lower()  # what the Markdown text nodes hold once escapes are undone
    for linkable in ("http://", "https://", "www.", "d@"):
        assert linkable not in visible
    assert unescaped(shown) == text


CHART_NAME = '<a href="http://127.0.0.1:9/">click</a> &amp; <b>bold</b>'


def _chart_texts(figure) -> list[str]:
    """Every text of a figure that plotly renders as pseudo-HTML: title, legend entries, axis titles, heatmap labels."""
    layout = figure.to_plotly_json()["layout"]
    texts = [layout["title"]["text"]]
    texts += [axis["title"]["text"] for name, axis in layout.items()
              if name.startswith(("xaxis", "yaxis")) and "title" in axis and "text" in axis["title"]]
    for trace in figure.data:
        texts.append(trace.name or "")
        if trace.type == "heatmap":
            texts += [str(v) for v in (*trace.x, *trace.y)]
    return texts


def test_chart_titles_legends_and_labels_show_names_from_outside_as_plain_text():
    from ui import charts

    index = pd.date_range("2024-01-01", periods=30, freq="min", tz="UTC")
    closes = pd.DataFrame({CHART_NAME: np.linspace(1, 2, 30), "B": np.linspace(2, 3, 30)}, index=index)
    figures = [charts.price_chart(closes, closes, mode="dual"), charts.price_chart(closes),
               charts.correlation_heatmap(closes.pct_change().corr()),
               charts.lead_lag_chart(np.array([-1, 0, 1]), np.array([0.1, 0.2, 0.3]), y_name=CHART_NAME, x_name="B")]
    for figure in figures:
        texts = _chart_texts(figure)
        assert any(CHART_NAME in html.unescape(t) for t in texts), texts  # shown, as those characters
        assert not any(re.search(r"[<>]|&(?!amp;|lt;|gt;)", t) for t in texts), texts  # no tag, no stray entity


# ------------------------------------------------------------------------------------------------
# The page (AppTest)
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path, monkeypatch) -> Iterator[Path]:
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("QUANT_DATA_DIR", str(tmp_path))
    yield tmp_path
    st.cache_resource.clear()  # stops every engine the test started


@pytest.fixture
def hostile_rest() -> Iterator[str]:
    """A REST endpoint that answers every request with HTTP 400 and a Markdown body."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = HOSTILE.encode()
            self.send_response(400)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="hostile-rest", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_rest_reply_body_is_shown_as_plain_text(env, hostile_rest, monkeypatch):
    monkeypatch.setenv("QUANT_SOURCE", "binance")
    monkeypatch.setenv("QUANT_REST_URL", hostile_rest)
    monkeypatch.setenv("QUANT_WS_URL", "ws://127.0.0.1:9")  # no live feed: only the history loader talks
    monkeypatch.setenv("QUANT_BACKOFF_INITIAL", "0.05")
    at = AppTest.from_file(APP, default_timeout=30).run()

    def warned() -> bool:
        at.run()
        return any("History not loaded" in w.value for w in at.warning)

    eventually(warned, timeout=30, interval=0.2, message=lambda: f"no history warning: {[w.value for w in at.warning]}")
    shown = [w.value for w in at.warning if "History not loaded" in w.value]
    # The body as a viewer reads it: the same characters, none of them a link or an image.
    assert all(shows_plainly(value, "[click](http://127.0.0.1:9/)") for value in shown), shown
    assert not at.exception


def _ohlc_csv(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 300)))
    frame = pd.DataFrame({"timestamp": 1_660_000_000_000 + 60_000 * np.arange(300), "open": close,
                          "high": close * 1.001, "low": close * 0.999, "close": close, "volume": 1.0})
    return frame.to_csv(index=False).encode()


def _upload(at: AppTest, filename: str, payload: bytes, name: str, symbol: str) -> None:
    at.file_uploader(key="upload_file").set_value((filename, payload, "text/csv")).run()
    next(t for t in at.sidebar.text_input if t.label == "Dataset name").input(name).run()
    next(t for t in at.sidebar.text_input if t.label == "Symbol").input(symbol).run()
    at.button(key="upload_save").click().run()


def test_a_dataset_name_with_markdown_is_shown_as_plain_text(env, monkeypatch):
    monkeypatch.setenv("QUANT_SOURCE", "simulated")
    at = AppTest.from_file(APP, default_timeout=30).run()
    _upload(at, "a.csv", _ohlc_csv(1), HOSTILE, "AAAUSDT")
    saved = [s.value for s in at.success]
    assert saved and all(shows_plainly(value, HOSTILE) for value in saved), saved
    _upload(at, "b.csv", _ohlc_csv(2), "plain partner", "BBBUSDT")
    at.radio(key="source").set_value("uploaded").run()
    y_label = next(o for o in at.selectbox(key="dataset_y").options if o.startswith("!"))
    at.selectbox(key="dataset_y").set_value(y_label).run()
    assert not at.exception
    titles = [t.value for t in at.title]
    assert titles and shows_plainly(titles[0], HOSTILE) and "plain partner" in unescaped(titles[0]), titles


def test_a_rule_with_markdown_is_refused_in_plain_text(env, monkeypatch):
    monkeypatch.setenv("QUANT_SOURCE", "simulated")
    monkeypatch.setenv("QUANT_SPEED", "60")
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.session_state["view_tab"] = "Alerts"  # the pair's tabs appear once the feed has bars
    eventually(lambda: at.run() is not None and any(t.key == "rule_text" for t in at.text_input), timeout=30,
               interval=0.3, message="the Alerts tab never appeared")
    at.text_input(key="rule_text").input(f"zscore > 2 {HOSTILE}")
    next(b for b in at.button if b.label == "Add rule").click().run()
    refused = [e.value for e in at.error if "Rule not added" in e.value]
    assert refused and all(shows_plainly(value, "![x]") for value in refused), refused


def test_a_typed_symbol_with_markdown_is_refused_in_plain_text(env, monkeypatch):
    monkeypatch.setenv("QUANT_SOURCE", "simulated")
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input(key="symbols").input(f"BTCUSDT,ETHUSDT,{HOSTILE}").run()
    refused = [e.value for e in at.sidebar.error]
    assert refused and all(shows_plainly(value, "invalid symbol") for value in refused), refused
    assert any("![x](" in unescaped(value) for value in refused)


def test_a_websocket_error_and_the_storage_location_are_shown_as_plain_text(env, monkeypatch):
    """The feed's last error and the storage line name things from outside (URLs, paths): plain text too."""
    folder = env / "*bold* [x](http:"
    folder.mkdir()
    monkeypatch.setenv("QUANT_DATA_DIR", str(folder))
    monkeypatch.setenv("QUANT_WS_URL", "ws://127.0.0.1:9")
    monkeypatch.setenv("QUANT_BACKOFF_INITIAL", "0.05")
    at = AppTest.from_file(APP, default_timeout=30).run()

    def failing() -> bool:
        at.run()
        return any("unreachable" in e.value for e in at.error)

    eventually(failing, timeout=20, interval=0.2, message="no 'unreachable' banner")
    assert all(shows_plainly(e.value, "unreachable") for e in at.error if "unreachable" in e.value)
    st.cache_resource.clear()
    monkeypatch.setenv("QUANT_SOURCE", "simulated")  # a feed with bars: the page then has its Feed tab
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.session_state["view_tab"] = "Feed"
    eventually(lambda: at.run() and any(c.value.startswith("Storage ") for c in at.caption), timeout=30,
               interval=0.3, message="the Feed tab never showed its storage line")
    storage = [c.value for c in at.caption if c.value.startswith("Storage ")]
    assert storage and unescaped(storage[0]).count("*bold* [x](http:") == 1 and "[x](" not in storage[0], storage


# ------------------------------------------------------------------------------------------------
# Streamlit's real renderer (headless Chromium)
# ------------------------------------------------------------------------------------------------

PAGE = f'''
import streamlit as st
from ui.plain import plain

TEXT = {EVERYTHING!r}
st.title(plain(TEXT))
st.warning(plain(TEXT))
st.error(plain(TEXT))
st.info(plain(TEXT))
st.success(plain(TEXT))
st.caption(plain(TEXT))
st.markdown(plain(TEXT))
st.toast(plain(TEXT))

import numpy as np
import pandas as pd
from ui import charts

NAME = {CHART_NAME!r}
index = pd.date_range("2024-01-01", periods=30, freq="min", tz="UTC")
closes = pd.DataFrame({{NAME: np.linspace(1, 2, 30), "B": np.linspace(2, 3, 30)}}, index=index)
st.plotly_chart(charts.price_chart(closes, mode="dual"))
'''


@pytest.mark.browser
def test_streamlit_renders_plain_text_literally_in_chromium(tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    script = tmp_path / "page.py"
    script.write_text(PAGE)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                               "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        eventually(lambda: server.poll() is None and healthy(f"http://127.0.0.1:{port}"), timeout=60, interval=0.2,
                   message=lambda: f"streamlit did not come up: {server.poll()=}")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                requested: list[str] = []
                page.on("request", lambda request: requested.append(request.url))
                page.goto(f"http://127.0.0.1:{port}/")
                blocks = page.locator("[data-testid='stMarkdownContainer']")
                eventually(lambda: blocks.count() >= 7 and page.locator("[data-testid='stToast']").count() == 1,
                           timeout=60, interval=0.2, message=lambda: f"{blocks.count()} text blocks drawn")
                literal = " ".join(EVERYTHING.split())
                for element in [*blocks.all(), page.locator("h1").first]:
                    assert element.inner_text().replace("\u2060", "").strip() == literal
                main = page.locator("[data-testid='stMain'], [data-testid='stToast']")
                for unwanted in ("img", "a[href^='http']", "a[href^='mailto']", ".katex", "strong", "em", "code",
                                 "del", "b", "li", "table", "span[style*='color']"):
                    assert sum(m.locator(unwanted).count() for m in main.all()) == 0, unwanted
                assert not [url for url in requested if "pixel.png" in url]
                chart = page.locator(".js-plotly-plot").first
                eventually(lambda: CHART_NAME in (chart.text_content() or ""), timeout=30, interval=0.2,
                           message=lambda: f"chart text: {chart.text_content()!r}")
                # No link, and the name is never split into styled pieces: each text holding it holds it whole.
                assert chart.locator("a").count() == 0
                texts = [t.text_content() or "" for t in chart.locator("text").all()]
                named = [t for t in texts if "click" in t]
                assert named and all(CHART_NAME in t for t in named), named
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate(timeout=10)
