"""Dashboard flows through streamlit.testing.v1.AppTest: controls, charts, ADF button, downloads, uploads."""

from __future__ import annotations

import io
import itertools
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from domain import Regression
from storage import DATASETS_FILE
from storage.csv_import import parse_ohlc_csv
from storage.sqlite.datasets import SqliteDatasetStore
from testkit.waiting import eventually
from tests.shared_data import BTC_KLINES_ZIP, ETH_KLINES_ZIP, require
from ui.controls import TIME_ZONES
from ui.plain import unescaped

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def sim_env(tmp_path, monkeypatch) -> Iterator[Path]:
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("QUANT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QUANT_SOURCE", "simulated")
    monkeypatch.setenv("QUANT_SPEED", "60")  # a simulated minute per second: windows fill fast
    yield tmp_path
    st.cache_resource.clear()  # on_release stops every engine the tests started


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def ready(at: AppTest, n_charts: int = 7) -> AppTest:
    """Rerun until the pair analytics have warmed up: every chart drawn, nothing still collecting data."""
    def warmed() -> bool:
        at.run()
        assert not at.exception, at.exception
        return len(charts(at)) >= n_charts and not any("Collecting data" in i.value for i in at.info)

    eventually(warmed, timeout=40, interval=0.3, message="charts never appeared")
    return at


def open_tab(at: AppTest, label: str) -> AppTest:
    at.session_state["view_tab"] = label
    return at.run()


def test_live_page_draws_every_chart_and_updates_the_z_score(sim_env):
    at = ready(AppTest.from_file(APP, default_timeout=30).run())
    titles = " ".join(c.proto.spec for c in charts(at))
    for expected in ("Prices", "Spread", "Z-score", "Hedge ratio", "correlation", "Lead"):
        assert expected in titles
    assert not any("Collecting data" in i.value for i in at.info)

    def z_value() -> str:
        at.run()
        return next(m.value for m in at.metric if m.label == "Z-score")

    first = z_value()
    eventually(lambda: z_value() not in ("—", first), timeout=20, interval=0.3, message="Z-score never changed")


def test_every_control_reruns_cleanly(sim_env):
    at = ready(AppTest.from_file(APP, default_timeout=30).run())
    at.radio(key="timeframe").set_value("1m").run()  # values are domain.Timeframe names; labels "1 s", "1 min"
    assert not at.exception and "1 min bars" in at.title[0].value
    at.radio(key="timeframe").set_value("1s").run()
    for regression in Regression:
        at.selectbox(key="regression").set_value(regression).run()
        assert not at.exception, regression
    at.slider(key="window").set_value(10).run()
    at.slider(key="z_threshold").set_value(1.5).run()
    at.radio(key="spread_on").set_value("log price").run()
    at.radio(key="price_mode").set_value("dual").run()
    at.selectbox(key="tz").set_value(TIME_ZONES[5]).run()
    at.selectbox(key="lookback").set_value("15 min").run()
    at.selectbox(key="pair_y").set_value("BTCUSDT").run()
    at.toggle(key="auto_refresh").set_value(False).run()
    assert not at.exception
    assert at.selectbox(key="pair_x").value == "ETHUSDT"
    assert "BTCUSDT / ETHUSDT" in at.title[0].value


def test_the_forming_bar_is_marked_on_1_min_prices_and_left_to_the_live_panel_on_1_s_bars(sim_env):
    """A forming 1 s bar is under a second old and narrower than a pixel: charts of 1 s bars end at the
    last closed bar (the same for every tab, so built once); on 1 min bars the live bar is shaded."""
    at = ready(AppTest.from_file(APP, default_timeout=30).run())

    def price_spec() -> str:
        return next(c.proto.spec for c in charts(at) if "Prices" in c.proto.spec)

    assert "live bar" not in price_spec()
    at.radio(key="timeframe").set_value("1m").run()
    eventually(lambda: at.run() and "live bar" in price_spec(), timeout=30, interval=0.3,
               message="the 1 min price chart never marked its forming bar")


def test_adding_an_invalid_symbol_is_refused_with_its_name(sim_env):
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input(key="symbols").input("BTCUSDT,ETHUSDT,SOL;DROP").run()
    assert not at.exception
    assert any("invalid symbol 'SOL;DROP'" in unescaped(e.value) for e in at.sidebar.error)


def test_adf_button_and_downloads(sim_env):
    at = ready(AppTest.from_file(APP, default_timeout=30).run())
    open_tab(at, "Stats & tests")
    at.button(key="run_tests").click().run()
    assert not at.exception
    verdicts = [m.value for m in at.markdown if m.value.startswith("p = ")]
    assert len(verdicts) == 2, [w.value for w in at.warning]  # ADF and Engle–Granger, one-line verdict each
    assert any("Half-life" in m.label for m in at.metric)
    open_tab(at, "Table & export")
    downloads = at.get("download_button")
    assert len(downloads) == 3
    assert len(at.dataframe) == 1 and "zscore" in at.dataframe[0].value.columns


def test_a_test_report_is_shown_only_for_the_liquidity_filter_it_ran_with(sim_env):
    """Was: kept under the pair and parameters alone, a report run with no liquidity filter was shown
    (as the filtered bars' result) after the filter changed; back to the filter it ran with, it shows again."""
    at = ready(AppTest.from_file(APP, default_timeout=30).run())
    open_tab(at, "Stats & tests")
    at.button(key="run_tests").click().run()

    def verdicts() -> list[str]:
        return [m.value for m in at.markdown if m.value.startswith("p = ")]

    assert len(verdicts()) == 2 and not at.exception
    at.number_input(key="min_trades").set_value(3).run()
    assert verdicts() == [] and any(c.value.startswith("Press the button") for c in at.caption)
    at.number_input(key="min_trades").set_value(0).run()
    assert len(verdicts()) == 2


def test_a_kept_test_report_names_the_bars_it_tested_and_how_many_closed_since(sim_env):
    """Was: "Tested on N bars." and nothing else: a report pressed an hour ago read as current."""
    at = ready(AppTest.from_file(APP, default_timeout=30).run())
    open_tab(at, "Stats & tests")
    at.button(key="run_tests").click().run()

    def tested() -> str:
        return next(c.value for c in at.caption if c.value.startswith("Tested on"))

    assert " → " in tested() and "(UTC)" in tested() and "newer bar" not in tested()
    # The simulated market runs a minute a second: bars close while the report is kept.
    eventually(lambda: at.run() is not None and "newer bar" in tested(), timeout=30, interval=0.5,
               message=lambda: f"the kept report never said newer bars closed: {tested()!r}")
    at.button(key="run_tests").click().run()
    assert "newer bar" not in tested()


def symbol_input(at: AppTest):
    return next(t for t in at.sidebar.text_input if t.label == "Symbol")


def test_bad_upload_shows_why_and_stores_nothing(sim_env):
    at = AppTest.from_file(APP, default_timeout=30).run()
    bad = b"timestamp,open,high,low,close,volume\n1660000000000,10,9,11,10,1\n"
    at.file_uploader(key="upload_file").set_value(("bad.csv", bad, "text/csv")).run()
    assert not at.exception
    assert any("high" in e.value and "line 2" in e.value for e in at.sidebar.error)
    assert not (sim_env / DATASETS_FILE).exists()


def test_upload_once_then_again_adds_nothing(sim_env):
    data = require(ETH_KLINES_ZIP).read_bytes()
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.file_uploader(key="upload_file").set_value(("ETHUSDT-1m-2022-08-14.zip", data, "application/zip")).run()
    assert symbol_input(at).value == "ETHUSDT"
    at.button(key="upload_save").click().run()
    assert any("Saved 1,440 bars" in s.value for s in at.sidebar.success)
    # The same data unzipped is the same dataset.
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        raw = archive.read("ETHUSDT-1m-2022-08-14.csv")
    at.file_uploader(key="upload_file").set_value(("ETHUSDT-1m-2022-08-14.csv", raw, "text/csv")).run()
    at.button(key="upload_save").click().run()
    assert any("Already stored" in i.value for i in at.sidebar.info)
    with SqliteDatasetStore(sim_env / DATASETS_FILE) as store:
        assert len(store.list()) == 1


def test_uploaded_datasets_are_a_data_source(sim_env):
    eth = require(ETH_KLINES_ZIP).read_bytes()
    at = AppTest.from_file(APP, default_timeout=30).run()
    for name, payload in (("ETHUSDT-1m-2022-08-14.zip", eth), ("BTCUSDT-1m-2022-09-05.zip",
                                                                  require(BTC_KLINES_ZIP).read_bytes())):
        at.file_uploader(key="upload_file").set_value((name, payload, "application/zip")).run()
        at.button(key="upload_save").click().run()
    at.radio(key="source").set_value("uploaded").run()
    # The two real archives are different days: refused with the reason.
    assert any("do not overlap" in e.value for e in at.error)

    # A synthetic partner for the ETH day: cointegrated with it by construction.
    with zipfile.ZipFile(io.BytesIO(eth)) as archive:
        frame = pd.read_csv(archive.open("ETHUSDT-1m-2022-08-14.csv"), header=None)
    rng = np.random.default_rng(5)
    partner = frame[[0]].copy()
    close = frame[4] * 0.5 + rng.normal(0, 0.5, len(frame))
    partner["open"], partner["high"], partner["low"], partner["close"] = close, close + 1, close - 1, close
    partner["volume"] = 10.0
    partner.columns = ["timestamp", "open", "high", "low", "close", "volume"]
    at.file_uploader(key="upload_file").set_value(
        ("partner.csv", partner.to_csv(index=False).encode(), "text/csv")).run()
    symbol_input(at).input("ETHHALF").run()
    at.button(key="upload_save").click().run()
    at.selectbox(key="dataset_y").set_value(at.selectbox(key="dataset_y").options[0]).run()
    labels = at.selectbox(key="dataset_y").options
    y_label = next(o for o in labels if o.startswith("partner"))
    at.selectbox(key="dataset_y").set_value(y_label).run()
    x_label = next(o for o in at.selectbox(key="dataset_x").options if o.startswith("ETHUSDT"))
    at.selectbox(key="dataset_x").set_value(x_label).run()
    assert not at.exception
    assert any("not live" in i.value for i in at.info)
    assert len(charts(at)) >= 6
    assert at.radio(key="timeframe").options == ["1 min", "5 min"]  # the labels of "1m" and "5m"


def add_rule(at: AppTest, text: str) -> None:
    """Type into the form and submit it in one run, as a form sends its values only on submit."""
    at.text_input(key="rule_text").input(text)
    next(b for b in at.button if b.label == "Add rule").click().run()


def test_a_rule_on_a_leg_the_feed_does_not_watch_is_listed_as_not_evaluated(sim_env):
    """A look-alike (``ETHUSTD`` for ETHUSDT) is a valid symbol, so the rule is stored, but the monitor skips
    it for ever: the list says so next to it, and a rule on a watched leg carries no such note."""
    at = ready(AppTest.from_file(APP, default_timeout=30).run())
    open_tab(at, "Alerts")
    add_rule(at, "ETHUSTD price > 1")
    add_rule(at, "ETHUSDT price > 1")
    assert not at.exception
    lines = {line.split("`")[1]: unescaped(line) for line in (m.value for m in at.markdown)
             if line.startswith("`") and " price > 1`" in line}
    assert "not evaluated: this feed does not watch ETHUSTD" in lines["ETHUSTD price > 1"]
    assert "not evaluated" not in lines["ETHUSDT price > 1"]


def test_alert_rules_are_created_evaluated_by_the_engine_and_listed(sim_env):
    at = ready(AppTest.from_file(APP, default_timeout=30).run())
    at.slider(key="window").set_value(10).run()
    open_tab(at, "Alerts")
    add_rule(at, "zscroe > 1")
    assert any("unknown metric 'zscroe'" in unescaped(e.value) for e in at.error)
    add_rule(at, "zscore > 1")
    assert any("Added: zscore > 1" in unescaped(s.value) for s in at.success)

    def alerted() -> bool:  # the engine's monitor thread fires; the page only reads the history
        at.run()
        history = at.dataframe[-1].value
        return len(history) > 0

    eventually(alerted, timeout=60, interval=0.5, message="the engine never fired the rule")
    history = at.dataframe[-1].value
    assert (history["value"] > 1).all() and (history["pair"] == "ETHUSDT/BTCUSDT").all()
    # The live panel is drawn before the tab in a run, so it may have read the store just before
    # the first alert landed; the next run must show it.
    at.run()
    assert any(unescaped(w.value).startswith("🔔 ETHUSDT/BTCUSDT z-score") for w in at.warning)  # banner
    toggle = next(t for t in at.toggle if t.label == "on")
    toggle.set_value(False).run()
    assert not next(t for t in at.toggle if t.label == "on").value
    next(b for b in at.button if b.label == "Delete").click().run()
    assert not [t for t in at.toggle if t.label == "on"]
    assert any(d.label == "Alert history (CSV)" for d in at.get("download_button"))


def test_backtest_tab_and_liquidity_filter(sim_env):
    at = ready(AppTest.from_file(APP, default_timeout=30).run())
    at.slider(key="window").set_value(10).run()
    open_tab(at, "Backtest")
    eventually(lambda: at.run() is not None and any(m.label.startswith("Total PnL") for m in at.metric),
               timeout=30, interval=0.5)
    assert any(c.proto.spec and "Backtest equity" in c.proto.spec for c in charts(at))
    assert any(d.label == "Backtest trades (CSV)" for d in at.get("download_button"))
    at.number_input(key="min_trades").set_value(3).run()
    assert any(c.value.startswith("Liquidity filter:") for c in at.caption)


def test_a_z_threshold_the_window_cannot_reach_is_flagged_everywhere(sim_env):
    """|z| <= (window-1)/√window: 2.85 at 10 bars, 3.02 at 11. Sidebar, alert form and backtest all say so."""
    def unreachable() -> list[str]:
        return [w.value for w in at.sidebar.warning if "can never be reached" in w.value]

    at = AppTest.from_file(APP, default_timeout=30).run()
    at.slider(key="window").set_value(10).run()
    at.slider(key="z_threshold").set_value(2.8).run()
    assert not unreachable()
    at.slider(key="z_threshold").set_value(2.9).run()
    assert unreachable() == [
        "A threshold of 2.9 can never be reached with a 10-bar window: the z-score includes the current bar, so "
        "|z| ≤ (window−1)/√window = 2.85. Lower the threshold or widen the window."]
    at.slider(key="window").set_value(11).run()
    assert not unreachable()
    at.slider(key="window").set_value(10).run()

    eventually(lambda: at.run() is not None and any(t.label == "Alerts" for t in at.tabs), timeout=30, interval=0.3,
               message="the pair tabs never appeared")
    open_tab(at, "Alerts")
    add_rule(at, "zscore > 2.9")
    assert any(unescaped(e.value).startswith("Rule not added: zscore > 2.9 can never fire with a 10-bar window")
               for e in at.error)
    assert not [t for t in at.toggle if t.label == "on"]  # nothing was stored
    open_tab(at, "Backtest")
    assert any(unescaped(w.value).startswith("Backtest not run: entry 2.9 can never be reached with a 10-bar window")
               for w in at.warning), [w.value for w in at.warning]


@pytest.mark.parametrize("timeframe", ["1m", "5m"])
def test_every_timeframe_has_its_z_score_at_once_on_a_fresh_data_dir(sim_env, timeframe):
    """Was: 'Hedge ratio: needs 59 more bars (≈ 59 min)' on 1 min bars, five hours on 5 min bars.

    The simulated market stores its own past at start, and the lookback's first bar is computed
    with a warm-up before it, so the z-score is there on the first page that shows the timeframe.
    """
    assert not list(sim_env.glob("*.sqlite3"))  # fresh
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.radio(key="timeframe").set_value(timeframe).run()

    def z_shown() -> bool:
        at.run()
        assert not at.exception, at.exception
        return next(m.value for m in at.metric if m.label == "Z-score") != "—"

    eventually(z_shown, timeout=20, interval=0.3, message="no z-score on a fresh data dir")
    waiting = [i.value for i in at.info if "more bar" in i.value]  # "needs N more bars (≈ …)"
    assert waiting == [], waiting
    # 12 bars of 5 min in the default 1 h lookback: a half-life needs 20, and says how to get them.
    assert all("widen the lookback" in i.value for i in at.info if "Half-life" in i.value)
    zscore = open_tab(at, "Charts")
    assert any("Z-score" in c.proto.spec for c in charts(zscore))


SCAN_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")


def scan_table(at: AppTest) -> pd.DataFrame:
    return next(d for d in at.dataframe if d.key == "scan_table").value


def test_scanner_ranks_every_watched_pair_once_per_press_filters_and_picks_the_analysed_pair(sim_env, monkeypatch):
    monkeypatch.setenv("QUANT_SYMBOLS", ",".join(SCAN_SYMBOLS))
    at = ready(AppTest.from_file(APP, default_timeout=60).run())
    open_tab(at, "Scanner")
    assert not any(d.key == "scan_table" for d in at.dataframe)  # nothing is computed before the button
    assert any(c.value.startswith("q-value: the Engle–Granger p-value adjusted") for c in at.caption)
    at.button(key="scan_run").click().run()
    assert not at.exception, at.exception
    assert at.button(key="scan_run").label == "Scan 4 symbols"
    (key, result), = at.session_state["scan_results"].items()
    assert key == ("simulated", "None", SCAN_SYMBOLS, "1s", "1 h", 60, "c")
    # The lookback's closed 1 s bars: at most an hour of them, the still-forming bar left out.
    assert 3_000 < result.n_bars <= 3_600 and len(result.table) == 6
    assert any(c.value.startswith(f"Scanned {result.n_bars:,} closed bars") for c in at.caption)

    at.number_input(key="scan_max_q").set_value(1.0).run()
    table = scan_table(at)
    assert {frozenset(p) for p in zip(table["y"], table["x"], strict=True)} == {
        frozenset(p) for p in itertools.combinations(SCAN_SYMBOLS, 2)}
    assert table["q_value"].is_monotonic_increasing and list(table.index) == list(range(1, 7))
    # Each pair in its one tested ordering (Y sorts first), the other ordering's p-value beside it.
    assert (table["y"] < table["x"]).all() and table["eg_pvalue_reverse"].between(0, 1).all()

    # Refreshes show the kept scan; the page's bars move on and the caption says by how much.
    eventually(lambda: at.run() is not None and any("newer bar" in c.value for c in at.caption), timeout=30,
               interval=0.5, message="the scan never showed as older than the page")
    assert at.session_state["scan_results"][key] is result

    q_cut = float(table["q_value"].median())
    at.number_input(key="scan_max_q").set_value(q_cut).run()
    assert list(scan_table(at).index) == list(table.index[table["q_value"] <= q_cut])
    at.number_input(key="scan_max_q").set_value(1.0).run()
    half_life_cut = float(table["half_life"].median())
    at.number_input(key="scan_hl_max").set_value(half_life_cut).run()
    assert list(scan_table(at).index) == list(table.index[table["half_life"] <= half_life_cut])
    at.number_input(key="scan_hl_max").set_value(None).run()
    corr_cut = round(float(table["corr"].median()), 2)
    at.slider(key="scan_min_corr").set_value(corr_cut).run()
    assert list(scan_table(at).index) == list(table.index[table["corr"] >= corr_cut])
    at.slider(key="scan_min_corr").set_value(-1.0).run()

    row = next(i for i, (y, x) in enumerate(zip(table["y"], table["x"], strict=True))
               if (y, x) != ("ETHUSDT", "BTCUSDT"))
    y, x = table["y"].iloc[row], table["x"].iloc[row]
    at.session_state["scan_table"] = {"selection": {"rows": [row], "columns": []}}
    at.run()
    at.button(key="scan_pick").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value.startswith(f"{y} / {x} · ")
    assert (at.selectbox(key="pair_y").value, at.selectbox(key="pair_x").value) == (y, x)


@pytest.fixture
def deferred(monkeypatch) -> dict:
    """Download buttons' data by file id: a button's CSV is made when it is clicked, so the callables
    that make it are kept here for the test to call."""
    kept: dict = {}
    add_deferred = MediaFileManager.add_deferred

    def remember(self, data_callable, *args, **kwargs):
        file_id = add_deferred(self, data_callable, *args, **kwargs)
        kept[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", remember)
    return kept


def test_scanner_csv_of_uploaded_datasets_neutralises_formula_names(sim_env, deferred):
    eth = parse_ohlc_csv(require(ETH_KLINES_ZIP).read_bytes(), ETH_KLINES_ZIP.name)
    partner = eth.copy()
    close = eth["close"] * 0.5 + np.random.default_rng(5).normal(0, 0.5, len(eth))
    for column in ("open", "high", "low", "close"):
        partner[column] = close
    with SqliteDatasetStore(sim_env / DATASETS_FILE) as store:
        for name, frame, symbol in (("eth-day", eth, "ETHUSDT"), ("=HYPERLINK(1)", partner, "ETHHALF")):
            store.add(frame, name=name, symbol=symbol, filename=f"{symbol}.csv", content_hash=f"{len(name):064x}",
                      uploaded_ms=0)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.radio(key="source").set_value("uploaded").run()
    open_tab(at, "Scanner")
    at.button(key="scan_run").click().run()
    assert not at.exception, at.exception
    table = scan_table(at)
    assert len(table) == 1 and set(table.iloc[0][["y", "x"]]) == {"eth-day", "=HYPERLINK(1)"}
    button = next(d for d in at.get("download_button") if d.label == "Scan results (CSV)")
    text = deferred[button.proto.deferred_file_id]().decode()
    exported = pd.read_csv(io.StringIO(text), index_col="rank")
    assert set(exported.iloc[0][["y", "x"]]) == {"eth-day", "'=HYPERLINK(1)"}
    assert exported.iloc[0]["q_value"] == pytest.approx(table.iloc[0]["q_value"])


@pytest.mark.parametrize("x", ["BBBUSDT", "FLATUSDT"])
def test_charts_leave_out_what_a_symbol_that_has_not_moved_yet_cannot_have(x):
    """Was: the first page with 50 watched symbols on a fresh data dir crashed ("SYM00USDT, … are
    constant; correlation undefined"): a quiet symbol's few first bars carry one close forward. Its
    heatmap row stays blank; as a leg of the pair it has no lead–lag chart yet."""
    def page(x: str) -> None:
        import numpy as np
        import pandas as pd

        from domain import Regression
        from pairs.bars import dataset_pair_bars
        from pairs.compute import PairParams, compute_pair
        from ui import charts_tab
        from ui.controls import Controls

        index = pd.date_range("2025-01-01", periods=40, freq="1min", tz="UTC")
        rng = np.random.default_rng(1)
        closes = {"AAAUSDT": 100 + rng.normal(size=40).cumsum(), "BBBUSDT": 50 + rng.normal(size=40).cumsum(),
                  "FLATUSDT": np.full(40, 1.0)}
        frames = {name: pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "volume": 1.0}, index=index)
                  for name, c in closes.items()}
        bars = dataset_pair_bars(frames, 60_000)
        controls = Controls("uploaded", None, tuple(closes), "AAAUSDT", x, "1m", "1 h", 10, Regression.ROLLING_OLS,
                            False, 2.0, "normalised", False, "UTC")
        pair = compute_pair(bars.aligned.closes, PairParams("AAAUSDT", x, window=10))
        charts_tab.render_charts(bars, pair, controls, None, 0)

    at = AppTest.from_function(page, args=(x,), default_timeout=30).run()
    assert not at.exception, at.exception
    specs = [c.proto.spec for c in charts(at)]
    heatmap = next(spec for spec in specs if "Correlation of returns across symbols" in spec)
    assert '"FLATUSDT"' in heatmap and '"AAAUSDT"' in heatmap
    assert any("Lead" in spec for spec in specs) == (x == "BBBUSDT")


@pytest.mark.parametrize("periods", [1, 2, 3])
def test_the_first_bars_draw_prices_without_a_heatmap_instead_of_failing(periods):
    """Was: a page drawn when one bar had closed failed ("log_returns: needs 2 observations, got 1")."""
    def page(periods: int) -> None:
        import pandas as pd

        from domain import Regression
        from pairs.bars import dataset_pair_bars
        from pairs.compute import PairParams, compute_pair
        from ui import charts_tab
        from ui.controls import Controls

        index = pd.date_range("2025-01-01", periods=periods, freq="1s", tz="UTC")
        frames = {name: pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "volume": 1.0}, index=index)
                  for name, c in {"AAAUSDT": [100.0, 101.0, 99.0][:periods],
                                  "BBBUSDT": [50.0, 49.0, 51.0][:periods]}.items()}
        bars = dataset_pair_bars(frames, 1_000)
        controls = Controls("uploaded", None, ("AAAUSDT", "BBBUSDT"), "AAAUSDT", "BBBUSDT", "1s", "1 h", 10,
                            Regression.ROLLING_OLS, False, 2.0, "normalised", False, "UTC")
        charts_tab.render_charts(bars, compute_pair(bars.aligned.closes, PairParams("AAAUSDT", "BBBUSDT", window=10)),
                          controls, None, 0)

    at = AppTest.from_function(page, args=(periods,), default_timeout=30).run()
    assert not at.exception, at.exception
    specs = [c.proto.spec for c in charts(at)]
    assert any("Prices" in spec for spec in specs)
    assert not any("Correlation of returns across symbols" in spec for spec in specs)


def test_whole_window_charts_are_redrawn_every_10_s_of_1_s_bars_the_others_every_bar():
    """The heatmap and lead-lag span the whole lookback: their content (what triggers a redraw) moves
    once per 10 s of market time; the spread, z-score, β and correlation charts move with every bar."""
    from domain import Regression
    from pairs.bars import dataset_pair_bars
    from pairs.compute import PairParams, compute_pair
    from ui import charts_tab
    from ui.controls import Controls

    rng = np.random.default_rng(5)
    index = pd.date_range("2025-01-01 00:00:00", periods=120, freq="1s", tz="UTC")
    closes = {"AAAUSDT": 100 + rng.normal(size=120).cumsum(), "BBBUSDT": 50 + rng.normal(size=120).cumsum()}
    controls = Controls("uploaded", None, tuple(closes), "AAAUSDT", "BBBUSDT", "1s", "1 h", 10, Regression.ROLLING_OLS,
                        False, 2.0, "normalised", False, "UTC")

    def contents(upto: int) -> dict[str, object]:
        frames = {name: pd.DataFrame({"open": c[:upto], "high": c[:upto], "low": c[:upto], "close": c[:upto],
                                      "volume": 1.0}, index=index[:upto]) for name, c in closes.items()}
        bars = dataset_pair_bars(frames, 1_000)
        pair = compute_pair(bars.aligned.closes, PairParams("AAAUSDT", "BBBUSDT", window=10))
        return {chart.key: chart.content for _, chart in charts_tab.chart_data(bars, pair, controls, None)}

    at_101, at_105, at_111 = contents(101), contents(105), contents(111)  # last closed bar :40, :44, :50
    for key in ("chart_heatmap", "chart_leadlag"):
        assert at_101[key] == at_105[key] != at_111[key]
    for key in ("chart_spread", "chart_zscore", "chart_beta", "chart_corr"):
        assert at_101[key] != at_105[key]


def test_live_1_s_charts_end_at_the_last_even_second_so_every_tab_in_a_step_draws_the_same_bars():
    from domain import Regression
    from pairs.bars import dataset_pair_bars
    from pairs.compute import PairParams, compute_pair
    from pairs.shared import PairView
    from ui import charts_tab
    from ui.controls import Controls

    rng = np.random.default_rng(9)
    start = pd.Timestamp("2025-01-01 00:00:00", tz="UTC")
    index = pd.date_range(start, periods=200, freq="1s")
    frames = {name: pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "volume": 1.0}, index=index)
              for name, c in {"AAAUSDT": 100 + rng.normal(size=200).cumsum(),
                              "BBBUSDT": 50 + rng.normal(size=200).cumsum()}.items()}
    bars = dataset_pair_bars(frames, 1_000)
    pair = compute_pair(bars.aligned.closes, PairParams("AAAUSDT", "BBBUSDT", window=10))
    t0 = int(start.value // 1_000_000)

    def span(closed: int):  # the view as a tab sees it when `closed` bars have closed
        view = PairView(bars.since(None, index[closed]), pair.since(None, index[closed]), t0 + closed * 1_000)
        return charts_tab.chart_span(view, 60_000)

    (even_bars, even_pair), (odd_bars, odd_pair) = span(150), span(151)  # one step: bars before second 150
    for chart_bars, chart_pair in ((even_bars, even_pair), (odd_bars, odd_pair)):
        assert chart_bars.aligned.index[-1] == index[149] and chart_pair.index[-1] == index[149]
        assert chart_bars.shown_from == index[90] == chart_bars.aligned.index[0] == chart_pair.index[0]
    pd.testing.assert_series_equal(even_pair.zscore, odd_pair.zscore)
    assert span(152)[0].aligned.index[-1] == index[151]  # the next step
    # Was: a feed whose only closed bar was cut off by the step failed in chart_data ("index -1 is out of bounds").
    first_bars, first_pair = span(1)
    assert not len(first_bars.aligned.index)
    controls = Controls("simulated", None, ("AAAUSDT", "BBBUSDT"), "AAAUSDT", "BBBUSDT", "1s", "1 h", 10,
                        Regression.ROLLING_OLS, False, 2.0, "normalised", True, "UTC")
    assert charts_tab.chart_data(first_bars, first_pair, controls, None) == []


def test_alerts_tab_and_its_csv_show_each_alerts_webhook_delivery(sim_env, deferred):
    """Delivered, pending (n attempts), failed with its last error as plain text, or – (no webhook)."""
    from records.alerts import AlertRule, make_event
    from storage.sqlite.alerts import SqliteAlertStore

    # One rule per alert: a rule's alerts are delivered one after the other, in order.
    rules = [AlertRule("zscore", ">", 2.0, pair=("ETHUSDT", "BTCUSDT"), id=i + 1) for i in range(4)]
    hostile = "=HYPERLINK(\"http://evil/\") ![x](http://evil/p.png) **bold**"
    now = [1_765_788_000_000]
    with SqliteAlertStore(sim_env / "simulated-alerts.sqlite3", now_ms=lambda: now[0]) as store:
        for i, rule in enumerate(rules):
            store.record(make_event(rule, 1_765_700_000_000 + i * 60_000, 2.5 + i), pending=i < 3)
        delivered, retrying, failing = store.claim_deliveries(3, 15_000)
        now[0] += 1_500
        assert store.mark_delivered(delivered)
        assert store.mark_failed(retrying, "HTTP 503 Service Unavailable", now[0])  # due again at once
        (retrying,) = store.claim_deliveries(3, 15_000)
        assert store.mark_failed(retrying, "HTTP 503 Service Unavailable", now[0] + 4_000)
        assert store.mark_failed(failing, hostile, None)
    at = open_tab(AppTest.from_file(APP, default_timeout=30).run(), "Alerts")
    assert not at.exception, at.exception
    history = at.dataframe[-1].value
    assert list(history["webhook"]) == ["–", f"failed: {hostile}", "pending (2 attempts)", "delivered"]
    # Text from the endpoint is a table cell, never Markdown: no element renders it.
    assert not any("evil" in element.value for element in [*at.markdown, *at.warning, *at.error, *at.caption])
    button = next(d for d in at.get("download_button") if d.label == "Alert history (CSV)")
    exported = pd.read_csv(io.StringIO(deferred[button.proto.deferred_file_id]().decode()), keep_default_na=False)
    assert list(exported.columns[-4:]) == ["delivery_state", "delivery_attempts", "delivery_error", "delivered_at"]
    assert list(exported["delivery_state"]) == ["none", "failed", "pending", "delivered"]
    assert list(exported["delivery_attempts"]) == [0, 1, 2, 1]
    assert list(exported["delivery_error"]) == ["", "'" + hostile, "HTTP 503 Service Unavailable", ""]
    assert list(exported["delivered_at"]) == ["", "", "", "2025-12-15T08:40:01.500Z"]
