"""The Charts tab: what each chart shows (:func:`chart_data`) and how it is drawn (:func:`render_charts`).

Prices, spread, z-score, β, correlation, the correlation heatmap and lead-lag, as specs of
:class:`ui.live_chart.ChartData`: served by server.py each chart stays in the browser and receives
only what changed; otherwise each refresh sends whole figures.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace
from typing import Literal

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analytics import correlation_matrix, lead_lag, log_returns
from domain import FIVE_MINUTES, ONE_MINUTE, ONE_SECOND
from pairs.bars import PairBars
from pairs.compute import PairAnalytics
from pairs.shared import PairView
from ui import appstate, charts
from ui.controls import Controls
from ui.labels import REGRESSION_LABELS
from ui.live_chart import ChartData, live_chart

# Heavy charts refresh at a pace that suits the bar length; the live panel every 0.5 s.
CHART_REFRESH_S = {ONE_SECOND: 2.0, ONE_MINUTE: 10.0, FIVE_MINUTES: 30.0}
MAX_LEAD_LAG = 10
# The heatmap and lead-lag span the whole lookback and barely move from one 1 s bar to the next:
# redrawn when a bar closes at most this often (market time), they cost a tenth as much.
WHOLE_WINDOW_REFRESH = pd.Timedelta(seconds=10)
ANALYTICS_RUNS = "analytics_runs"  # session state: the page's analytics runs so far (see ui.live_chart)
# Points per trace: the price chart spans the page; the others half of it (~700 px, M4 keeps ~4 per px).
FULL_WIDTH_POINTS, HALF_WIDTH_POINTS = 4000, 2000


def chart_data(bars: PairBars, pair: PairAnalytics, controls: Controls,
               alert_marks: pd.DataFrame | None) -> list[tuple[str, ChartData]]:
    """The charts tab's charts, each with where it goes ("full", "left" or "right")."""
    aligned, p, rev, tz = bars.aligned, pair.params, controls.revision, controls.tz
    if aligned is None or not len(aligned.index):  # e.g. the first second of a feed, cut at an even second
        return []
    legs = [p.y, p.x]
    closes, volumes = aligned.closes[legs], aligned.volumes[legs]
    last = aligned.index[-1]
    closed_last = pair.index[-1] if len(pair.index) else None
    # Rolling OLS never revises a past β; an in-sample fit or the Kalman prior moves with the lookback.
    rolling = p.span_free
    # The analytics change only when a bar closes: an unchanged last bar means nothing to send.
    closed = (closed_last, len(pair.index))
    unit = "log price" if p.log_prices else "quote currency"
    marks = alert_marks if alert_marks is not None and len(alert_marks) else None
    mode: Literal["normalised", "dual"] = "dual" if controls.price_mode == "dual" else "normalised"
    rebased = mode != "dual"

    def prices_figure(since: pd.Timestamp | None, points: int, levels: object) -> go.Figure:
        return charts.price_chart(closes, volumes, mode=mode, open_bar_start=bars.open_bar_start, tz=tz, revision=rev,
                                  max_points=points, rebase_to=levels if isinstance(levels, dict) else None,
                                  since=since)

    def reanchor(traces: dict[str, dict[str, list]], levels: object) -> dict[str, dict[str, list]]:
        return charts.rebased_traces(traces, levels) if isinstance(levels, dict) else traces

    specs: list[tuple[str, ChartData]] = [("full", ChartData(
        "chart_prices", prices_figure, last, FULL_WIDTH_POINTS,
        content=(last, tuple(closes.iloc[-1]), tuple(volumes.iloc[-1]), bars.open_bar_start),
        # Rebased to 100 at each tab's first drawing; on two axes nothing is rebased (one tail for all).
        anchor=(lambda: charts.rebase_levels(closes)) if rebased else (lambda: None),
        reanchor=reanchor if rebased else None))]
    if pair.spread is not None:
        specs.append(("left", ChartData(
            "chart_spread",
            lambda since, points, _: charts.spread_chart(
                pair.spread, pair.spread_mean, pair.spread_std, k=p.z_threshold, window=p.window, unit=unit, tz=tz,
                revision=rev, max_points=points, since=since),
            closed_last, HALF_WIDTH_POINTS, rolling, closed)))
    if pair.zscore is not None:
        specs.append(("right", ChartData(
            "chart_zscore",
            lambda since, points, _: charts.zscore_chart(
                pair.zscore, threshold=p.z_threshold, window=p.window, tz=tz, alerts=marks, revision=rev,
                max_points=points, since=since),
            closed_last, HALF_WIDTH_POINTS, rolling,
            (closed, None if marks is None else (len(marks), marks.index[-1])))))
    if pair.beta is not None:
        specs.append(("left", ChartData(
            "chart_beta",
            lambda since, points, _: charts.hedge_ratio_chart(pair.beta, method_label=REGRESSION_LABELS[p.regression],
                                                              tz=tz, revision=rev, max_points=points, since=since),
            closed_last, HALF_WIDTH_POINTS, rolling, closed)))
    if pair.correlation is not None:
        specs.append(("right", ChartData(
            "chart_corr",
            lambda since, points, _: charts.correlation_chart(pair.correlation, window=p.window, tz=tz, revision=rev,
                                                              max_points=points, since=since),
            closed_last, HALF_WIDTH_POINTS, True, closed)))
    closed_closes = bars.closes(closed_only=True)
    if len(closed_closes) < 4:  # a correlation needs a few returns; the first seconds have none
        return specs
    returns = log_returns(closed_closes)
    # A quiet symbol's first bars carry one close forward: no correlation yet, a blank row and column.
    moving = returns.columns[(returns.max() > returns.min()).to_numpy()]
    settled = None if closed_last is None else closed_last.floor(WHOLE_WINDOW_REFRESH)
    if len(moving):
        def heatmap_figure(_since: object, _points: int, _anchor: object) -> go.Figure:
            matrix = correlation_matrix(returns[moving]).reindex(index=returns.columns, columns=returns.columns)
            return charts.correlation_heatmap(matrix, revision=rev)

        specs.append(("left", ChartData("chart_heatmap", heatmap_figure, closed_last, 0, False,
                                        (settled, tuple(returns.columns), tuple(moving)))))
        max_lag = min(MAX_LEAD_LAG, len(returns) // 4)
        if max_lag >= 1 and {p.y, p.x} <= set(moving):
            def lead_lag_figure(_since: object, _points: int, _anchor: object) -> go.Figure:
                ll = lead_lag(returns[p.y], returns[p.x], max_lag)
                return charts.lead_lag_chart(ll.lags, ll.correlations, best_lag=ll.best_lag,
                                             bar_seconds=bars.interval_ms / 1000, y_name=p.y, x_name=p.x, revision=rev)

            specs.append(("right", ChartData("chart_leadlag", lead_lag_figure, closed_last, 0, False, (settled,))))
    return specs


def render_charts(bars: PairBars, pair: PairAnalytics, controls: Controls, alert_marks: pd.DataFrame | None,
                  data_version: int, scope: Hashable | None = None) -> None:
    """Prices, spread, z-score, β, correlation, heatmap and lead-lag.

    Served by server.py the charts stay in the browser and receive only what changed
    (:mod:`ui.live_chart`); otherwise each refresh sends whole figures. ``scope``: the feed's
    identity, so that every tab showing its data shares one build of each figure (None: an
    uploaded dataset).
    """
    specs = chart_data(bars, pair, controls, alert_marks)
    full = st.container()
    left, right = st.columns(2)
    places = {"full": full, "left": left, "right": right}
    state = appstate.current()
    if not state.pushed:
        for place, chart in specs:
            places[place].plotly_chart(chart.figure(), key=chart.key, config=charts.FIGURE_CONFIG)
        return
    run = st.session_state[ANALYTICS_RUNS]
    p = pair.params
    revision = (f"{controls.revision}|{p}|{controls.price_mode}|{controls.tz}|{controls.min_trades}|"
                f"{controls.min_volume}|{data_version}")
    for place, chart in specs:
        with places[place]:
            live_chart(chart, revision=revision, shown_from=bars.shown_from, tz=controls.tz, run=run,
                       builds=state.charts, scope=scope)


# Live charts of 1 s bars advance in steps of their refresh: every tab within a step shows the same
# bars, so each chart update is built once for all of them (ui.live_chart), however many tabs watch.
CHART_STEP_MS = 2_000


def chart_span(view: PairView, lookback_ms: int) -> tuple[PairBars, PairAnalytics]:
    """The closed 1 s bars and analytics a live chart shows: the lookback ending at the last even second.

    A chart is then at most one bar behind the analytics (the live panel is not stepped), and
    every tab within one step draws the same data (:data:`CHART_STEP_MS`).
    """
    end_ms = view.open_start_ms // CHART_STEP_MS * CHART_STEP_MS
    cut = view.since(end_ms - lookback_ms, end_ms)
    if cut.pair is None:  # the page draws charts only once every symbol has a bar: then a view has analytics
        raise ValueError("chart_span: the view has no analytics yet (a symbol without bars)")
    return replace(cut.bars, shown_from=pd.Timestamp(end_ms - lookback_ms, unit="ms", tz="UTC")), cut.pair
