"""The page's tab bar under the live panel: Charts, Stats & tests, Table & export, Scanner, Alerts,
Backtest and Feed, drawn from one analytics run (:class:`PageData` says where its bars come from).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from domain import ONE_MINUTE
from ingestion.live_bars import BASE_INTERVAL_MS
from pairs.bars import PairBars
from pairs.compute import PairAnalytics, PairParams
from pairs.shared import PairView
from pairs.universe import UniverseView
from service import Service
from ui.alerts_panel import render_alerts_tab, zscore_markers
from ui.backtest_panel import perpetual_funding, render_backtest_tab
from ui.charts_tab import chart_span, render_charts
from ui.controls import Controls
from ui.export import minute_table
from ui.panels import render_downloads, render_funding, render_pair_stats, render_symbol_summaries, render_tests
from ui.scanner import render_scanner_tab
from ui.status import render_status

FEED_EVENTS = 200  # newest feed events on the Feed tab


@dataclass(frozen=True, slots=True)
class PageData:
    """Where one analytics run gets its pair: a live feed's shared analytics, or uploaded datasets.

    ``view(symbols, interval_ms, params, controls)``: closed bars over the lookback plus a warm-up,
    with ``params``' analytics on them; ``with_open(bars, open_start_ms)``: the bars plus the
    forming bar, for display; ``service``: the feed (None for datasets); ``universe(wait)``: closed
    bars of every watched symbol over the lookback with their correlation and summaries, shared by
    every session (:mod:`pairs.universe`), asked only by a tab that shows them all (None: the pair's
    own bars are the whole universe, as for two datasets).
    """

    view: Callable[[tuple[str, ...], int, PairParams, Controls], PairView]
    with_open: Callable[[PairBars, int], PairBars]
    service: Service | None
    universe: Callable[[bool], UniverseView] | None = None

    def universe_view(self, bars: PairBars, wait: bool = False) -> UniverseView:
        """Every watched symbol's closed bars; ``bars`` (the page's) where the pair is the universe.
        ``wait``: the current step's, built here if not held yet (else a step behind at most)."""
        return UniverseView(bars) if self.universe is None else self.universe(wait)


def render_tabs(page: PageData, view: PairView, bars: PairBars, pair: PairAnalytics, controls: Controls) -> None:
    """The tab bar; only the open tab's content runs.

    ``view``: the run's whole view (warm-up included); ``bars``/``pair``: what it shows (the lookback).
    """
    service, params = page.service, pair.params
    # A keyed tab bar keeps its selection across refreshes; "rerun" makes only the open tab's content run.
    charts_tab, stats_tab, table_tab, scanner_tab, alerts_tab, backtest_tab, feed_tab = st.tabs(
        ["Charts", "Stats & tests", "Table & export", "Scanner", "Alerts", "Backtest", "Feed"], key="view_tab",
        on_change="rerun")
    if charts_tab.open:
        with charts_tab:
            marks = None if service is None else zscore_markers(service.recent_alerts(), f"{params.y}/{params.x}")
            chart_bars, chart_pair = bars, pair
            if service is not None and bars.interval_ms == BASE_INTERVAL_MS:
                chart_bars, chart_pair = chart_span(view, controls.lookback_ms)
            # One feed's analytics (its engine's bars): tabs on it share chart builds.
            scope = None if service is None else (service.site, id(service.shared))
            render_charts(chart_bars, chart_pair, controls, marks, view.data_version, scope,
                          universe=None if page.universe is None else page.universe(False))
    if stats_tab.open:
        with stats_tab:
            render_symbol_summaries(page.universe_view(bars), controls.tz)
            if service is not None and service.funding:
                render_funding(service, (params.y, params.x), controls.tz)
            render_pair_stats(pair, bars.interval_ms)
            # Kept per everything the tested bars depend on: the liquidity filter drops bars too.
            render_tests(pair, key=f"{controls.revision}|{params}|{controls.min_trades}|{controls.min_volume}",
                         tz=controls.tz)
    if table_tab.open:
        with table_tab:
            render_table_tab(page, controls, bars, pair)
    if scanner_tab.open:
        with scanner_tab:
            render_scanner_tab(page.universe_view(bars).bars, controls,
                               lambda: page.universe_view(bars, wait=True).bars)
    if alerts_tab.open:
        with alerts_tab:
            if service is None:
                st.caption("Alerts are evaluated by the service of a live, simulated or replayed feed.")
            else:
                render_alerts_tab(service, (params.y, params.x), controls.interval_ms, params.window, controls.tz)
    if backtest_tab.open:
        with backtest_tab:
            # The view's own closes, warm-up included: the backtest trades on the z-score the charts show.
            closes, start = view.analysed_closes()
            funding = perpetual_funding(service, closes, (params.y, params.x), bars.interval_ms)
            render_backtest_tab(closes, params.y, params.x, params.window, params.z_threshold, bars.interval_ms,
                                controls.tz, controls.revision, start, funding)
    if feed_tab.open:
        with feed_tab:
            if service is None:
                st.caption("Uploaded datasets have no feed.")
            else:
                render_feed_tab(service, controls.tz)


def render_table_tab(page: PageData, controls: Controls, bars: PairBars, pair: PairAnalytics) -> None:
    """Per-minute table (computed on 1 min bars whatever the chart timeframe) and CSV downloads."""
    if controls.interval_ms == ONE_MINUTE.ms:
        minute_bars, minute_pair = bars, pair
    else:
        shown = page.view((controls.y, controls.x), ONE_MINUTE.ms, pair.params, controls).shown()
        if shown.bars.aligned is None or shown.pair is None:  # a symbol has no 1 min bar yet
            return
        minute_bars, minute_pair = shown.bars, shown.pair
    render_downloads(bars, pair, minute_table(minute_bars, minute_pair), controls.tz,
                     f"{controls.y}-{controls.x}-{controls.timeframe}",
                     None if page.universe is None else lambda: page.universe_view(bars, wait=True).bars)


def render_feed_tab(service: Service, tz: str) -> None:
    """The feed's health and its newest events (connects, gaps, backfills, storage trouble)."""
    render_status(service.status())
    events = service.feed_events(limit=FEED_EVENTS)
    if events:
        frame = pd.DataFrame([{"time": pd.Timestamp(e.ts_ms, unit="ms", tz="UTC").tz_convert(tz), "kind": e.kind.value,
                               "symbol": e.symbol or "", "detail": e.detail} for e in events])
        st.dataframe(frame, hide_index=True, width="stretch", height=300)
