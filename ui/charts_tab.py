"""The Charts tab: what each chart shows (:func:`chart_data`) and how it is drawn (:func:`render_charts`).

Prices, spread, z-score, β, correlation, the correlation heatmap and lead-lag, as specs of
:class:`ui.live_chart.ChartData`: served by server.py each chart stays in the browser and receives
only what changed; otherwise each refresh sends whole figures (each built once while its data is
unchanged, :func:`ui.live_chart.whole_figure`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Literal

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analytics import clustered_order, lead_lag, log_returns, strongest_symbols
from domain import FIVE_MINUTES, ONE_MINUTE, ONE_SECOND
from pairs.bars import PairBars
from pairs.compute import PairAnalytics
from pairs.shared import PairView
from pairs.universe import MIN_CORRELATION_CLOSES, UniverseView
from ui import appstate, charts
from ui.controls import Controls
from ui.labels import REGRESSION_LABELS
from ui.live_chart import ChartData, live_chart, whole_figure

# Heavy charts refresh at a pace that suits the bar length; the live panel every 0.5 s.
CHART_REFRESH_S = {ONE_SECOND: 2.0, ONE_MINUTE: 10.0, FIVE_MINUTES: 30.0}
MAX_LEAD_LAG = 10
# The heatmap and lead-lag span the whole lookback and barely move from one 1 s bar to the next:
# redrawn when a bar closes at most this often (market time), they cost a tenth as much.
WHOLE_WINDOW_REFRESH = pd.Timedelta(seconds=10)
ANALYTICS_RUNS = "analytics_runs"  # session state: the page's analytics runs so far (see ui.live_chart)
# Points per trace: the price chart spans the page; the others half of it (~700 px, M4 keeps ~4 per px).
FULL_WIDTH_POINTS, HALF_WIDTH_POINTS = 4000, 2000
# The heatmap shows this many symbols by default (the most correlated, clustered): every label
# legible in half the page's width; a filter or a larger N shows more.
HEATMAP_TOP_N = 30


def chart_data(bars: PairBars, pair: PairAnalytics, controls: Controls,
               alert_marks: pd.DataFrame | None, universe: UniverseView | None = None,
               choice: HeatmapChoice | None = None) -> list[tuple[str, ChartData]]:
    """The charts tab's charts, each with where it goes ("full", "left" or "right").

    ``universe``: every watched symbol's closed bars and their correlation, for the heatmap (None:
    ``bars`` are the universe); ``choice``: which of them it shows (default :class:`HeatmapChoice`)."""
    choice = HeatmapChoice() if choice is None else choice
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
    settled = None if closed_last is None else closed_last.floor(WHOLE_WINDOW_REFRESH)
    # Every watched symbol's closed bars (stepped, their correlation computed once a step for every
    # session: pairs.universe), or the pair's own when it is the universe.
    correlation = (UniverseView(bars) if universe is None else universe).correlation()
    if correlation is not None:
        def heatmap_figure(_since: object, _points: int, _anchor: object) -> go.Figure:
            matrix = correlation.matrix
            shown = heatmap_matrix(matrix, choice, (p.y, p.x))
            # Which bars: the universe's may be a step behind the pair's charts (pairs.universe).
            subtitle = f"returns to {correlation.last.tz_convert(tz):%Y-%m-%d %H:%M:%S} {tz}"
            if len(shown.index) < len(matrix.index):
                subtitle = f"{len(shown.index)} of {len(matrix.index)} symbols, clustered; {subtitle}"
            return charts.correlation_heatmap(shown, subtitle=subtitle, revision=rev)

        # A universe build is named: history arriving within a step rebuilds it at the same last bar.
        step = (settled, None) if universe is None else (correlation.last, universe.build)
        specs.append(("left", ChartData("chart_heatmap", heatmap_figure, closed_last, 0, False,
                                        (step, tuple(correlation.matrix.columns), correlation.moving, choice))))
    # Lead-lag is the pair's: on its own legs' bars, like every other chart of the pair.
    pair_closes = bars.closes(closed_only=True)[legs]
    returns = log_returns(pair_closes) if len(pair_closes) >= MIN_CORRELATION_CLOSES else None
    if returns is not None:
        max_lag = min(MAX_LEAD_LAG, len(returns) // 4)
        if max_lag >= 1 and all(returns[leg].max() > returns[leg].min() for leg in legs):
            def lead_lag_figure(_since: object, _points: int, _anchor: object) -> go.Figure:
                ll = lead_lag(returns[p.y], returns[p.x], max_lag)
                return charts.lead_lag_chart(ll.lags, ll.correlations, best_lag=ll.best_lag,
                                             bar_seconds=bars.interval_ms / 1000, y_name=p.y, x_name=p.x, revision=rev)

            specs.append(("right", ChartData("chart_leadlag", lead_lag_figure, closed_last, 0, False, (settled,))))
    return specs


@dataclass(frozen=True, slots=True)
class HeatmapChoice:
    """Which symbols the heatmap shows: ``symbols`` if two or more are named (a filter), else the
    ``top_n`` with the strongest correlation (:func:`analytics.strongest_symbols`, the pair's legs
    always among them)."""

    top_n: int = HEATMAP_TOP_N
    symbols: tuple[str, ...] = ()


def heatmap_matrix(matrix: pd.DataFrame, choice: HeatmapChoice, legs: tuple[str, str]) -> pd.DataFrame:
    """The part of a correlation matrix the heatmap shows (``choice``), in clustered order
    (:func:`analytics.clustered_order`): correlated symbols side by side, blocks on the diagonal."""
    named = [s for s in matrix.index if s in set(choice.symbols)]
    keep = named if len(named) >= 2 else strongest_symbols(matrix, choice.top_n, always=legs)
    sub = matrix.loc[keep, keep]
    order = clustered_order(sub)
    return sub.loc[order, order]


def render_charts(bars: PairBars, pair: PairAnalytics, controls: Controls, alert_marks: pd.DataFrame | None,
                  data_version: int, scope: Hashable | None = None, *, universe: UniverseView | None = None) -> None:
    """Prices, spread, z-score, β, correlation, heatmap and lead-lag.

    Served by server.py the charts stay in the browser and receive only what changed
    (:mod:`ui.live_chart`); otherwise each refresh sends whole figures, built once for every run and
    session while their data is unchanged (:func:`ui.live_chart.whole_figure`). ``scope``: the feed's
    identity, so that every tab showing its data shares one build of each figure (None: an
    uploaded dataset). ``universe``: every watched symbol's closed bars, for the heatmap.
    """
    symbols = tuple((bars if universe is None else universe.bars).by_symbol)
    specs = chart_data(bars, pair, controls, alert_marks, universe, heatmap_choice(symbols))
    full = st.container()
    left, right = st.columns(2)
    places = {"full": full, "left": left, "right": right}
    state = appstate.current()
    p = pair.params
    revision = (f"{controls.revision}|{p}|{controls.price_mode}|{controls.tz}|{controls.min_trades}|"
                f"{controls.min_volume}|{data_version}")
    if not state.pushed:  # whole figures every run, each built once while its data is unchanged
        for place, chart in specs:
            figure = whole_figure(chart, revision=revision, shown_from=bars.shown_from, tz=controls.tz,
                                  builds=state.charts, scope=scope)
            places[place].plotly_chart(figure, key=chart.key, config=charts.FIGURE_CONFIG)
        return
    run = st.session_state[ANALYTICS_RUNS]
    for place, chart in specs:
        with places[place]:
            live_chart(chart, revision=revision, shown_from=bars.shown_from, tz=controls.tz, run=run,
                       builds=state.charts, scope=scope)


def heatmap_choice(symbols: tuple[str, ...]) -> HeatmapChoice:
    """The heatmap's symbols: top N by correlation or a filter (an expander, when there are more than N)."""
    if len(symbols) <= HEATMAP_TOP_N:
        return HeatmapChoice(HEATMAP_TOP_N)
    # Fewer symbols watched than when they were set: keep the choices within them (a widget refuses
    # a value outside its range or options).
    if st.session_state.get("heatmap_top_n", 0) > len(symbols):
        st.session_state["heatmap_top_n"] = len(symbols)
    if "heatmap_symbols" in st.session_state:
        st.session_state["heatmap_symbols"] = [s for s in st.session_state["heatmap_symbols"] if s in symbols]
    with st.expander(f"Heatmap: {len(symbols)} symbols watched"):
        top_col, filter_col = st.columns([1, 3])
        top_n = top_col.number_input("Top N by |correlation|", 2, len(symbols), HEATMAP_TOP_N, key="heatmap_top_n",
                                     help="The symbols with the strongest correlation to any other; the pair's "
                                          "legs always shown")
        named = filter_col.multiselect("Or only these symbols", symbols, key="heatmap_symbols",
                                       help="Two or more: the heatmap shows exactly these")
    return HeatmapChoice(int(top_n), tuple(named))


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
