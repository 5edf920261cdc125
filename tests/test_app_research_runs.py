"""The Scanner tab's stored research runs through AppTest: the results folder's runs newest first, a
damaged one shown with its reason, a scan's ranking and its formula-safe CSV, a walk-forward's table and
chart, and "Send to the live page" putting the pair's legs on the pair's own venue's page."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from domain import Market
from testkit.research import stored_scan, stored_walk
from tests.test_app_dashboard import APP, deferred, open_tab, ready, sim_env  # noqa: F401  (fixtures by name)
from ui.plain import unescaped

SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]


@pytest.fixture
def results(request, monkeypatch) -> Path:
    folder = request.getfixturevalue("sim_env") / "elsewhere" / "runs"  # the setting, not the default folder
    monkeypatch.setenv("QUANT_RESULTS_DIR", str(folder))
    # Sending a pair opens a Binance page: nothing may leave loopback, and nothing answers there.
    monkeypatch.setenv("QUANT_WS_URL", "ws://127.0.0.1:9")
    monkeypatch.setenv("QUANT_REST_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("QUANT_HISTORY_HOURS", "0")
    monkeypatch.setenv("QUANT_BACKFILL_MAX_TRADES", "0")
    return folder


def stored_tab(at: AppTest) -> AppTest:
    open_tab(at, "Scanner")
    at.radio(key="scan_mode").set_value("stored").run()
    assert not at.exception, at.exception
    return at


def test_the_listing_is_read_once_until_the_folder_changes(results, monkeypatch):
    import research.runs
    import ui.research_runs

    calls = []

    def counted(folder):
        calls.append(folder)
        return research.runs.list_runs(folder)

    monkeypatch.setattr(ui.research_runs, "list_runs", counted)
    first = stored_scan(results, Market.SPOT, SYMBOLS)
    at = stored_tab(ready(AppTest.from_file(APP, default_timeout=60).run()))
    at.run()
    at.run()
    assert len(calls) == 1 and at.selectbox(key="research_run").value == first.name
    newer = results / "walk-20991231T000000Z-0123abcd"
    stored_walk(results, Market.SPOT, SYMBOLS[:3], name=newer.name)  # stored while the tab is open
    at.run()
    assert len(calls) == 2 and len(at.selectbox(key="research_run").options) == 2


def test_a_failure_no_check_foresaw_is_a_plain_message_and_a_logged_traceback(results, monkeypatch, caplog):
    import ui.research_runs

    def broken(*_args, **_kwargs):
        raise ValueError("something no check foresaw")

    monkeypatch.setattr(ui.research_runs, "ranking", broken)
    scan = stored_scan(results, Market.SPOT, SYMBOLS)
    at = stored_tab(ready(AppTest.from_file(APP, default_timeout=60).run()))
    assert any("cannot be shown: an internal error" in unescaped(e.value) and scan.name in unescaped(e.value)
               for e in at.error)
    assert "something no check foresaw" in caplog.text


def test_no_runs_says_where_they_are_looked_for(results):
    at = stored_tab(ready(AppTest.from_file(APP, default_timeout=60).run()))
    assert any("No stored research runs" in i.value and str(results) in unescaped(i.value) for i in at.info)


def test_a_stored_scan_is_listed_ranked_exported_and_its_pair_sent_to_the_futures_page(results, request):
    kept = request.getfixturevalue("deferred")
    scan = stored_scan(results, Market.USDM, SYMBOLS, planted=[("AAAUSDT", "BBBUSDT")])
    table = pd.read_parquet(scan / "pairs.parquet")
    table.loc[len(table) - 1, "note"] = "=HYPERLINK(1)"  # text a spreadsheet would run
    table.to_parquet(scan / "pairs.parquet", index=False)
    damaged = results / "scan-20991231T000000Z-deadbeef"  # the newest, listed first
    damaged.mkdir()
    (damaged / "scan.json").write_text("{}")
    at = stored_tab(ready(AppTest.from_file(APP, default_timeout=60).run()))
    picker = at.selectbox(key="research_run")
    assert picker.value == damaged.name and len(picker.options) == 2
    assert "unreadable" in picker.options[0] and "um 1m 2024-01-01 → 2024-01-01 · 4 symbols" in picker.options[1]
    assert any("cannot be opened: pairs.parquet is missing" in unescaped(w.value) for w in at.warning)

    picker.set_value(scan.name).run()
    assert not at.exception, at.exception
    at.number_input(key="run_max_q").set_value(1.0).run()
    shown = next(d for d in at.dataframe if d.key == "run_table").value
    assert len(shown) == 6 and shown["q_value"].is_monotonic_increasing and list(shown.index) == list(range(1, 7))
    button = next(d for d in at.get("download_button") if d.label == "Stored scan (CSV)")
    exported = pd.read_csv(io.StringIO(kept[button.proto.deferred_file_id]().decode()), index_col="rank")
    assert list(exported["y"]) == list(shown["y"]) and "'=HYPERLINK(1)" in set(exported["note"])

    y, x = shown["y"].iloc[0], shown["x"].iloc[0]
    at.session_state["run_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    send = at.button(key="run_send")
    assert send.label == f"Send {y}.P / {x}.P to the live page"
    send.click().run()
    assert not at.exception, at.exception
    # The pair's venue: the simulated page became the futures page, its legs named as perpetuals.
    assert at.radio(key="source").value == "binance-futures"
    assert at.title[0].value.startswith(f"{y}.P / {x}.P · ")
    assert (at.selectbox(key="pair_y").value, at.selectbox(key="pair_x").value) == (f"{y}.P", f"{x}.P")


def test_a_stored_walk_forward_shows_its_table_and_chart_and_sends_a_spot_pair(results):
    walk = stored_walk(results, Market.SPOT, SYMBOLS[:3], planted=[("AAAUSDT", "BBBUSDT")])
    at = stored_tab(ready(AppTest.from_file(APP, default_timeout=60).run()))
    assert at.selectbox(key="research_run").value == walk.name
    summary = next(d for d in at.dataframe if "share staying" in d.value.columns).value
    assert list(summary["window"]) == [0, 1, 2, 3] and "share staying" in summary.columns
    assert any(chart.proto.id and "run_walk_chart" in chart.proto.id for chart in at.get("plotly_chart"))
    at.selectbox(key="run_window").set_value(0).run()
    rows = next(d for d in at.dataframe if d.key == "run_table").value
    assert len(rows) == 3 and rows["q_value"].is_monotonic_increasing
    y, x = rows["y"].iloc[0], rows["x"].iloc[0]
    at.session_state["run_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    at.button(key="run_send").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="source").value == "binance"
    assert at.title[0].value.startswith(f"{y} / {x} · ")
