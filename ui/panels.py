"""Streamlit rendering of the stats, tests and export panels. Data in, widgets out; no analytics here."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import streamlit as st

from analytics import InsufficientDataError
from pairs.bars import PairBars
from pairs.compute import PairAnalytics
from pairs.stats import CointegrationReport, run_tests
from pairs.universe import UniverseView
from records import now_ms
from records.safe_csv import to_csv_bytes
from service import Service
from ui import live
from ui.export import analytics_table, ohlcv_table
from ui.labels import REGRESSION_LABELS, format_duration, needs_text, newer_bars_text, span_text, verdict
from ui.plain import plain


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a metric, or '—' when it is missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.{digits}f}"


def render_needs(pair: PairAnalytics, interval_ms: int, lookback_ms: int | None = None) -> None:
    """One line per analytic still collecting data (or needing a wider lookback)."""
    capacity = None if lookback_ms is None else lookback_ms // interval_ms
    for need in pair.needs:
        st.info(f"Collecting data · {needs_text(need, interval_ms, capacity)}", icon="⏳")


def render_symbol_summaries(universe: UniverseView, tz: str) -> None:
    """Per-symbol table over the lookback: last, return, volatility, volume, trades (computed once
    per universe step for every session: :meth:`pairs.universe.UniverseView.summaries`)."""
    rows: list[dict[str, object]] = []
    for symbol, summary in universe.summaries().items():
        if summary is None:
            rows.append({"symbol": symbol, "last": None, "return %": None, "volatility % (ann.)": None,
                         "volume": None, "trades": None, "bars": 0})
            continue
        rows.append({"symbol": symbol, "last": summary.last, "return %": summary.return_pct,
                     "volatility % (ann.)": summary.volatility_ann_pct, "volume": summary.volume,
                     "trades": summary.trades, "bars": summary.bars})
    st.dataframe(pd.DataFrame(rows).set_index("symbol"), width="stretch")
    # Which bars: the universe's may be a step behind the pair's (see pairs.universe).
    aligned = universe.bars.aligned
    span = "" if aligned is None or not len(aligned.index) else \
        f", bars {span_text(aligned.index[0], aligned.index[-1], tz)}"
    st.caption(f"Over the selected lookback{span}. Volume in base units; volatility from per-bar log returns, "
               f"annualised over 365×24 h.")


def render_funding(service: Service, symbols: tuple[str, ...], tz: str) -> None:
    """Each perpetual leg's funding rate, next funding time, mark and index price (a perpetuals feed only)."""
    rows = live.funding_table(live.funding(service, symbols, now_ms()), tz)
    st.dataframe(pd.DataFrame(rows).set_index("leg"), width="stretch")
    st.caption(live.FUNDING_NOTE)


def render_pair_stats(pair: PairAnalytics, interval_ms: int) -> None:
    """β, α, R², half-life and correlation, each labelled with its method and window."""
    p = pair.params
    latest = pair.latest
    beta_col, alpha_col, r2_col, hl_col, corr_col = st.columns(5)
    beta_col.metric(f"Hedge ratio β ({REGRESSION_LABELS[p.regression]})", fmt(latest["beta"], 6))
    alpha_col.metric("Intercept α", fmt(latest["alpha"], 4))
    r2_col.metric("R² (static OLS only)", fmt(pair.r_squared, 4))
    if pair.half_life is None:
        hl_text = "—"
    elif not pair.half_life.mean_reverting:
        hl_text = "∞ (not mean-reverting)"
    else:
        hl_text = f"{pair.half_life.bars:,.1f} bars (≈ {format_duration(pair.half_life.bars * interval_ms / 1000)})"
    hl_col.metric("Half-life of spread", hl_text)
    corr_col.metric(f"Return correlation ({p.window} bars)", fmt(latest["correlation"], 3))


def render_tests(pair: PairAnalytics, *, key: str, tz: str = "UTC") -> None:
    """ADF and Engle–Granger on demand: computed when the button is pressed, kept per pair/settings.

    A kept report names the bars it tested (times in ``tz``) and how many have closed since."""
    store = st.session_state.setdefault("test_reports", {})
    if st.button("Run ADF / Engle–Granger tests", key="run_tests"):
        try:
            store[key] = run_tests(pair)
        except InsufficientDataError as exc:
            store[key] = exc
    report = store.get(key)
    if report is None:
        st.caption("Press the button to test the spread for stationarity (ADF) and the legs for cointegration "
                   "(Engle–Granger, MacKinnon cointegration p-values). Runs on closed bars of the lookback.")
    elif isinstance(report, InsufficientDataError):
        st.warning(f"Not enough data for the tests: {plain(report)}")
    else:
        _render_report(report)
        newer = int((pair.index > report.last).sum())
        st.caption(f"Tested on {report.bars:,} closed bars, {span_text(report.first, report.last, tz)}."
                   + newer_bars_text(newer, "press again to test them"))


def _render_report(report: CointegrationReport) -> None:
    adf_col, eg_col = st.columns(2)
    with adf_col:
        st.markdown("**ADF on the spread** (constant, lag by AIC)")
        st.dataframe(pd.DataFrame({
            "statistic": [report.adf.statistic], "p-value": [report.adf.pvalue], "lag": [report.adf.used_lag],
            "nobs": [report.adf.nobs], **{f"crit {k}": [v] for k, v in report.adf.critical_values.items()}}),
            hide_index=True)
        st.write(verdict(report.adf.pvalue, "the spread is stationary", "no evidence the spread is stationary"))
    with eg_col:
        st.markdown("**Engle–Granger cointegration** (y on x, constant)")
        st.dataframe(pd.DataFrame({
            "statistic": [report.engle_granger.statistic], "p-value": [report.engle_granger.pvalue],
            "lag": [report.engle_granger.used_lag], "β": [report.engle_granger.beta],
            **{f"crit {k}": [v] for k, v in report.engle_granger.critical_values.items()}}), hide_index=True)
        st.write(verdict(report.engle_granger.pvalue, "the legs are cointegrated", "no evidence of cointegration"))


def render_downloads(bars: PairBars, pair: PairAnalytics, minute: pd.DataFrame, tz: str, stem: str,
                     universe: Callable[[], PairBars] | None = None) -> None:
    """The per-minute table and three CSV downloads (times in UTC in every file).

    ``universe()``: every watched symbol's bars for the OHLCV file, asked only when it is
    downloaded (None: ``bars``)."""
    whole = (lambda: bars) if universe is None else universe
    shown = minute.copy()
    if isinstance(shown.index, pd.DatetimeIndex):
        shown.index = shown.index.tz_convert(tz)
    st.dataframe(shown.iloc[::-1], width="stretch", height=320)
    # Callables: each CSV is built only when its button is clicked, not on every refresh, and a
    # download does not rerun the page.
    files = (
        ("Per-minute table (CSV)", lambda: to_csv_bytes(minute), "per-minute", "download_minute"),
        ("Bars OHLCV (CSV)", lambda: to_csv_bytes(ohlcv_table(whole())), "bars", "download_bars"),
        ("Analytics series (CSV)", lambda: to_csv_bytes(analytics_table(pair)), "analytics", "download_analytics"),
    )
    for column, (label, make, suffix, key) in zip(st.columns(len(files)), files, strict=True):
        column.download_button(label, make, f"{stem}-{suffix}.csv", "text/csv", key=key, on_click="ignore")
