"""Scanner tab: every pair of the watched symbols ranked by Engle–Granger q-value; pick one to analyse.
Or a stored research run (:mod:`ui.research_runs`), whose pairs can be sent to the live page, and
above it the launcher of a new one on Dask (:mod:`ui.research_launch`).

A scan runs on a button press (50 symbols, 1,225 pairs: about a second) and is kept in the
session under what it depends on, so refreshes show it without recomputing and a change of
symbols, timeframe, lookback, window or trend asks for a new one. It says which bars it saw, so a
result older than the page's bars is plain to see.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import streamlit as st

from config import ConfigError, from_env
from pairs.bars import PairBars
from pairs.ranking import ScanFilter, ScanResult, run_scan, universe_closes
from records.safe_csv import to_csv_bytes
from ui.appstate import current
from ui.controls import UPLOADED, Controls
from ui.export import ranking
from ui.labels import Q_VALUE_NOTE, TREND_LABELS, half_life_text, newer_bars_text, span_text, timeframe_label
from ui.plain import plain
from ui.research_launch import render_launcher
from ui.research_runs import render_stored_runs

LIVE, STORED = "live", "stored"
MODE_LABELS = {LIVE: "Watched symbols", STORED: "Stored research runs"}
# Scans kept per session (one per symbols/timeframe/lookback/window/trend), oldest dropped first.
MAX_KEPT_SCANS = 8
SHOWN_COLUMNS = ["y", "x", "q_value", "eg_pvalue", "eg_stat", "eg_pvalue_reverse", "beta", "half_life",
                 "half_life_time", "corr", "zscore", "n_bars", "note"]
_COLUMN_CONFIG = {
    "y": st.column_config.TextColumn("Y", help="The leg regressed on X; the symbol that sorts first (fixed rule)"),
    "x": st.column_config.TextColumn("X"),
    "q_value": st.column_config.NumberColumn("q-value", format="%.2e", help=Q_VALUE_NOTE),
    "eg_pvalue": st.column_config.NumberColumn(
        "p-value", format="%.2e", help="Engle–Granger (MacKinnon) p-value of Y on X, this pair alone: not adjusted"),
    "eg_stat": st.column_config.NumberColumn("EG stat", format="%.2f", help="ADF statistic of Y on X's residuals"),
    "eg_pvalue_reverse": st.column_config.NumberColumn(
        "p-value X on Y", format="%.2e",
        help="The other ordering, for information: not used in the q-value (taking the smaller of the two p-values "
             "would need a correction)"),
    "beta": st.column_config.NumberColumn("β", format="%.5g", help="Y units per X unit (OLS over the lookback)"),
    "half_life": st.column_config.NumberColumn("half-life (bars)", format="%.1f"),
    "half_life_time": st.column_config.TextColumn("half-life"),
    "corr": st.column_config.NumberColumn("return corr.", format="%.3f"),
    "zscore": st.column_config.NumberColumn("z (last bar)", format="%+.2f"),
    "n_bars": st.column_config.NumberColumn("bars", format="%d"),
}


def scan_key(controls: Controls, trend: str) -> tuple[object, ...]:
    """What a scan depends on: the data (source, symbols, timeframe, lookback) and its settings."""
    return (controls.source, str(controls.replay_file), controls.symbols, controls.timeframe, controls.lookback,
            controls.window, trend)


def render_scanner_tab(bars: PairBars, controls: Controls, now: Callable[[], PairBars] | None = None) -> None:
    """The tab: scan button with progress, freshness, filters, the ranked table, pick and CSV.

    ``bars``: the page's bars over the lookback (no warm-up bars), of every watched symbol; later
    runs compare them with the scan's to say how far behind it is. ``now()``: those bars as of
    now, which a press scans (the held ``bars`` may be a step behind while the next builds; None:
    ``bars`` are current).
    """
    mode = st.radio("Scan", list(MODE_LABELS), format_func=MODE_LABELS.__getitem__, horizontal=True,
                    key="scan_mode", label_visibility="collapsed")
    if mode == STORED:
        try:
            storage = from_env().storage  # the server's settings; a browser never names a path
        except ConfigError as exc:
            st.error(f"Invalid configuration: {plain(exc)}")
            return
        render_launcher(storage.research_root, storage.results_folder, current().jobs)
        render_stored_runs(storage.results_folder, controls)
        return
    st.caption(Q_VALUE_NOTE)
    k = len(controls.symbols)
    trend_col, button_col = st.columns([2, 3], vertical_alignment="bottom")
    trend = trend_col.selectbox("Deterministic terms", list(TREND_LABELS), format_func=TREND_LABELS.__getitem__,
                                key="scan_trend")
    results: dict[tuple[object, ...], ScanResult] = st.session_state.setdefault("scan_results", {})
    key = scan_key(controls, trend)
    if button_col.button(f"Scan {k} symbols", key="scan_run",
                         help=f"{k * (k - 1) // 2:,} pairs, each tested Y on X with Y the symbol that sorts first"):
        result = _scan(bars if now is None else now(), controls, trend)
        if result is not None:
            results.pop(key, None)
            results[key] = result
            while len(results) > MAX_KEPT_SCANS:
                results.pop(next(iter(results)))
    result = results.get(key)
    if result is None:
        st.caption(f"Press the button to test every pair of the {k} watched symbols on the closed "
                   f"{timeframe_label(controls.timeframe)} bars of the lookback.")
        return
    _render_freshness(result, bars, controls.tz)
    shown = _filters(result, controls.timeframe).apply(ranked(result))
    _render_table(shown, result, controls)


def ranked(result: ScanResult) -> pd.DataFrame:
    """The scan's table ranked for display (:func:`ui.export.ranking`), built once per scan and kept
    in the session beside it: every later run shows the kept scan (19,900 rows at 200 symbols, ~30 ms
    to rank again on every refresh)."""
    kept: dict[int, tuple[ScanResult, pd.DataFrame]] = st.session_state.setdefault("scan_ranked", {})
    entry = kept.get(id(result))
    if entry is None or entry[0] is not result:
        live = {id(r) for r in st.session_state.get("scan_results", {}).values()}
        for stale in [key for key in kept if key not in live]:  # scans no longer kept
            del kept[stale]
        entry = kept[id(result)] = (result, ranking(result.table, result.interval_ms))
    return entry[1]


def _scan(bars: PairBars, controls: Controls, trend: str) -> ScanResult | None:
    closes = universe_closes(bars.by_symbol, bars.interval_ms, bars.market_now_ms,
                             carry_to_end=controls.source != UPLOADED)
    if closes.empty:
        st.info("No closed bars of the watched symbols in the lookback yet.", icon="⏳")
        return None
    progress = st.progress(0.0, text="Scanning…")

    def report(done: int, total: int) -> None:
        progress.progress(done / total, text=f"Tested {done:,} of {total:,} pairs")

    result = run_scan(closes, bars.interval_ms, trend=trend, window=controls.window, progress=report)
    progress.empty()
    return result


def _last_closed(bars: PairBars) -> pd.Timestamp | None:
    """Start of the page's last closed bar."""
    if bars.aligned is None:
        return None
    index = bars.aligned.index
    if len(index) and index[-1] == bars.open_bar_start:
        index = index[:-1]
    return index[-1] if len(index) else None


def _render_freshness(result: ScanResult, page_bars: PairBars, tz: str) -> None:
    if result.first_bar is None or result.last_bar is None:
        return
    line = (f"Scanned {result.n_bars:,} closed bars, {span_text(result.first_bar, result.last_bar, tz)}: "
            f"{len(result.table):,} pairs, {len(result.tested):,} tested, {result.significant():,} with q < 0.05.")
    latest = _last_closed(page_bars)
    if latest is not None and latest > result.last_bar:
        behind = int((latest - result.last_bar) / pd.Timedelta(milliseconds=result.interval_ms))
        line += newer_bars_text(behind, "scan again to refresh")
    st.caption(line)


def _filters(result: ScanResult, timeframe: str) -> ScanFilter:
    q_col, low_col, high_col, corr_col = st.columns(4)
    max_q = q_col.number_input("Max q-value", 0.0, 1.0, 0.05, 0.01, format="%.3f", key="scan_max_q")
    low = low_col.number_input("Half-life from (bars)", 0.0, None, 0.0, key="scan_hl_min")
    high = high_col.number_input("Half-life to (bars)", 0.0, None, None, key="scan_hl_max",
                                 placeholder="no limit")
    min_corr = corr_col.slider("Min return correlation", -1.0, 1.0, -1.0, 0.05, key="scan_min_corr")
    upper = "no limit" if high is None else half_life_text(high, result.interval_ms)
    st.caption(f"Half-life from {half_life_text(low, result.interval_ms)} to {upper} on "
               f"{timeframe_label(timeframe)} bars.")
    return ScanFilter(max_q, low, math.inf if high is None else high, min_corr)


def _render_table(shown: pd.DataFrame, result: ScanResult, controls: Controls) -> None:
    tested = len(result.tested)
    if shown.empty:
        best = result.tested["q_value"].min() if tested else math.nan
        st.info(f"No pair passes the filters ({tested:,} tested; lowest q-value {best:.3g}).")
    else:
        st.caption(f"{len(shown):,} of {tested:,} tested pairs pass the filters; rank is the place in the whole "
                   "scan. Click a column to sort; select a row to analyse that pair.")
        event = st.dataframe(shown[SHOWN_COLUMNS], key="scan_table", on_select="rerun", selection_mode="single-row",
                             column_config=_COLUMN_CONFIG, width="stretch")
        rows = [row for row in event.selection.rows if row < len(shown)]
        if rows:
            _render_pick(str(shown["y"].iloc[rows[0]]), str(shown["x"].iloc[rows[0]]), controls)
    stem = f"scan-{controls.timeframe}-{result.last_bar:%Y%m%dT%H%M}" if result.last_bar is not None else "scan"
    # A callable: the CSV is built when the button is clicked, not on every refresh.
    st.download_button("Scan results (CSV)", lambda: to_csv_bytes(shown, index_label="rank"), f"{stem}.csv",
                       "text/csv", key="download_scan", on_click="ignore")
    untested = result.untested
    if len(untested):
        with st.expander(f"{len(untested):,} pairs not tested"):
            st.dataframe(untested[["y", "x", "n_bars", "status", "note"]], hide_index=True, width="stretch")


def _analyse(y: str, x: str) -> None:
    # A callback may set a widget's state; assigning it after the widget is drawn may not.
    st.session_state["pair_y"], st.session_state["pair_x"] = y, x


def _render_pick(y: str, x: str, controls: Controls) -> None:
    if controls.source == UPLOADED:
        st.caption("Pick the datasets in the sidebar to analyse them as a pair.")
    elif (y, x) == (controls.y, controls.x):
        st.caption(f"{y} / {x} is the analysed pair.")
    elif st.button(f"Analyse {y} / {x}", key="scan_pick", type="primary", on_click=_analyse, args=(y, x)):
        st.rerun()  # the sidebar and the title are drawn outside this tab's fragment
