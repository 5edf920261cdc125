"""Streamlit dashboard, the composition root: read controls, fetch bars, call analytics, draw.

Served by ``server.py`` (``make run``: the Host check and the pushed live routes); ``streamlit run
app.py`` runs it bare, for tests (see README). Feeds belong to the server's application state
(:mod:`ui.appstate`): one :class:`~service.ServiceRegistry` runs at most one service per
database, shared by every browser session; sessions only read from them and never stop one
another's feed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analytics import correlation_matrix, lead_lag, log_returns
from config import ConfigError, Settings, from_env
from domain import FIVE_MINUTES, ONE_MINUTE, ONE_SECOND, Timeframe
from ingestion.live_bars import BASE_INTERVAL_MS
from pairs.bars import PairBars, dataset_pair_bars, with_open_bar
from pairs.compute import PairAnalytics, PairParams, compute_pair
from pairs.shared import PairView, ViewQuery
from service import Service, TooManyFeeds
from storage import Site, StorageError, open_ticks
from ui import appstate, charts, live
from ui.alerts_panel import render_alerts_tab, render_banners, zscore_markers
from ui.backtest_panel import render_backtest_tab
from ui.controls import (
    SOURCE_LABELS,
    UPLOADED,
    Controls,
    analysis_controls,
    source_controls,
    symbol_controls,
)
from ui.export import minute_table
from ui.labels import REGRESSION_LABELS, timeframe_label
from ui.live_chart import ChartData, live_chart
from ui.panels import fmt, render_downloads, render_needs, render_pair_stats, render_symbol_summaries, render_tests
from ui.plain import plain
from ui.scanner import render_scanner_tab
from ui.status import feed_is_failing, render_history_progress, render_status, render_storage_problem
from ui.upload import dataset_controls, dataset_timeframes, list_datasets, load_dataset_frames, render_upload

# Heavy charts refresh at a pace that suits the bar length; the live panel every 0.5 s.
CHART_REFRESH_S = {ONE_SECOND: 2.0, ONE_MINUTE: 10.0, FIVE_MINUTES: 30.0}
LIVE_REFRESH_S = 0.5  # the polled live panel (without server.py)
NOTICES_REFRESH_S = 2.0  # feed notices and alert banners beside the pushed live panel
BANNER_ALERTS = 20
MAX_LEAD_LAG = 10
# The heatmap and lead-lag span the whole lookback and barely move from one 1 s bar to the next:
# redrawn when a bar closes at most this often (market time), they cost a tenth as much.
WHOLE_WINDOW_REFRESH = pd.Timedelta(seconds=10)
ANALYTICS_RUNS = "analytics_runs"  # session state: the page's analytics runs so far (see ui.live_chart)
# Points per trace: the price chart spans the page; the others half of it (~700 px, M4 keeps ~4 per px).
FULL_WIDTH_POINTS, HALF_WIDTH_POINTS = 4000, 2000


log = logging.getLogger("app")


def register_live_panel(service: Service, controls: Controls) -> None:
    """What this page's pushed live panel shows (nothing to do when the page polls): its stream asks
    ``service`` for this very query's analytics, shared with the charts (:mod:`ui.live`)."""
    state = appstate.current()
    if state.pushed:
        state.board.register(live_token(), service, view_query(controls))


def session_id() -> str:
    """A random id for this browser session (kept in its session state)."""
    return st.session_state.setdefault("session_id", uuid.uuid4().hex)


def live_token() -> str:
    """This page's token for its pushed live panel (random, apart from the session id)."""
    return st.session_state.setdefault("live_token", uuid.uuid4().hex)


def acquire_service(base: Settings, settings: Settings) -> Service | None:
    """This session's service for ``settings`` (started or shared), or None after showing why not."""
    try:
        return appstate.current().registry.acquire(session_id(), settings, pin=settings.source == base.source)
    except (TooManyFeeds, ConfigError, ValueError, OSError, StorageError) as exc:
        st.error(f"Cannot start the {SOURCE_LABELS.get(settings.source, settings.source)} feed: {plain(exc)}")
    except Exception:  # the browser sees a plain message; the server log keeps the traceback
        log.exception("starting the %s feed failed", settings.source)
        st.error(f"Cannot start the {SOURCE_LABELS.get(settings.source, settings.source)} feed: "
                 "an internal error (details in the server log).")
    return None


def render_feed_notices(acquire: Callable[[], Service | None], controls: Controls) -> Service | None:
    """What the desk must not miss about the feed: not live, unreachable, storage trouble, history
    loading, alert banners and toasts. Returns the service (None when the feed cannot run)."""
    if st.session_state.get("source") != controls.source:
        st.rerun()  # the source was switched from inside this fragment; redraw the whole page
    service = acquire()  # every run: never draw from a feed that has been stopped
    if service is None:
        return None
    status = service.status()
    if not service.spec.capabilities.live:
        st.info(f"Showing {plain(status.label)} data: not live market prices.", icon="🧪")
    elif feed_is_failing(status):
        st.error(f"{SOURCE_LABELS[controls.source]} is unreachable: {plain(status.last_error)}", icon="🚫")
        # A callback may set a widget's state; assigning it after the widget is drawn may not.
        st.button("Switch to the simulated market", key="switch_to_simulated",
                  on_click=st.session_state.update, kwargs={"source": "simulated"})
    render_storage_problem(status)
    render_history_progress(service.history_progress)
    render_banners(service.recent_alerts(BANNER_ALERTS), controls.tz)
    return service


def render_live_panel(acquire: Callable[[], Service | None], controls: Controls) -> None:
    """Feed notices, last prices, hedge ratio, spread, live z-score and feed health, polled (every 0.5 s).

    The page served by server.py pushes the same numbers instead (:func:`ui.live.live_panel`).
    """
    service = render_feed_notices(acquire, controls)
    if service is None:
        return
    query = view_query(controls)
    tracker = st.session_state.get("live_context")
    if not isinstance(tracker, live.ContextTracker) or not tracker.serves(service, query):
        tracker = st.session_state["live_context"] = live.ContextTracker(service, query)
    values = live.snapshot(service, controls.y, controls.x, tracker.current())
    names = live.labels(controls.y, controls.x)
    helps = {"z": f"Open bar vs the last {controls.window} bars; |z| > {controls.z_threshold} is stretched"}
    for column, (name, _, digits) in zip(st.columns(len(live.FIELDS)), live.FIELDS, strict=True):
        column.metric(names[name], fmt(values[name], digits), help=helps.get(name))
    st.caption(live.feed_line(service.status(), escape=plain))


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
    rebased = controls.price_mode != "dual"
    specs: list[tuple[str, ChartData]] = [("full", ChartData(
        "chart_prices",
        lambda since, points, levels: charts.price_chart(
            closes, volumes, mode=controls.price_mode, open_bar_start=bars.open_bar_start, tz=tz, revision=rev,
            max_points=points, rebase_to=levels, since=since),
        last, FULL_WIDTH_POINTS,
        content=(last, tuple(closes.iloc[-1]), tuple(volumes.iloc[-1]), bars.open_bar_start),
        # Rebased to 100 at each tab's first drawing; on two axes nothing is rebased (one tail for all).
        anchor=(lambda: charts.rebase_levels(closes)) if rebased else (lambda: None),
        reanchor=charts.rebased_traces if rebased else None))]
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


def render_feed_tab(service: Service, tz: str) -> None:
    render_status(service.status())
    if not service.site.exists():
        return
    with open_ticks(service.site) as store:
        events = store.feed_events(limit=200)
    if events:
        frame = pd.DataFrame([{"time": pd.Timestamp(e.ts_ms, unit="ms", tz="UTC").tz_convert(tz), "kind": e.kind.value,
                               "symbol": e.symbol or "", "detail": e.detail} for e in events])
        st.dataframe(frame, hide_index=True, width="stretch", height=300)


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
    return replace(cut.bars, shown_from=pd.Timestamp(end_ms - lookback_ms, unit="ms", tz="UTC")), cut.pair


def pair_params(controls: Controls) -> PairParams:
    """The pair analytics' parameters the controls ask for."""
    return PairParams(controls.y, controls.x, controls.window, controls.regression, controls.log_prices,
                      controls.z_threshold)


def view_query(controls: Controls, symbols: tuple[str, ...] | None = None, interval_ms: int | None = None,
               params: PairParams | None = None) -> ViewQuery:
    """What the page asks a feed's shared analytics for (by default: its symbols, timeframe and pair),
    over the lookback plus the parameters' warm-up, with the liquidity filter."""
    params = pair_params(controls) if params is None else params
    return ViewQuery(controls.symbols if symbols is None else symbols,
                     controls.interval_ms if interval_ms is None else interval_ms, controls.lookback_ms, params,
                     params.warmup_bars, controls.min_trades, controls.min_volume)


@dataclass(frozen=True, slots=True)
class PageData:
    """Where one analytics run gets its pair: a live feed's shared analytics, or uploaded datasets.

    ``view(symbols, interval_ms, params, controls)``: closed bars over the lookback plus a warm-up,
    with ``params``' analytics on them; ``with_open(bars, open_start_ms)``: the bars plus the
    forming bar, for display; ``service``: the feed (None for datasets).
    """

    view: Callable[[tuple[str, ...], int, PairParams, Controls], PairView]
    with_open: Callable[[PairBars, int], PairBars]
    service: Service | None


def render_analytics(data: Callable[[], PageData | None], controls: Controls) -> None:
    """Bars → pair analytics → charts, stats, table and exports (one fragment run)."""
    # Counted on every run, drawn or not: a chart skipped by a run is gone from the browser.
    st.session_state[ANALYTICS_RUNS] = st.session_state.get(ANALYTICS_RUNS, 0) + 1
    page = data()
    if page is None:
        return
    service = page.service
    if service is not None:
        register_live_panel(service, controls)  # every run: a page left open keeps its stream
    params = pair_params(controls)
    view = page.view(controls.symbols, controls.interval_ms, params, controls)
    if view.bars.aligned is None:
        waiting = [s for s, frame in view.bars.by_symbol.items() if frame.empty]
        st.info(f"Waiting for the first trades of {', '.join(waiting)}.", icon="⏳")
        return
    # Computed over the warm-up too, shown over the lookback: every analytic defined from its first bar.
    shown = view.shown()
    pair, bars = shown.pair, shown.bars
    if bars.interval_ms > BASE_INTERVAL_MS:
        # The forming bar, shaded on the price chart. Not on 1 s bars: under a second old and narrower
        # than a pixel at any lookback, it is the live panel's; their charts end at a closed bar that
        # every tab shares (chart_span), so each update is built once, not once per tab.
        bars = page.with_open(bars, view.open_start_ms)
    if controls.min_trades or controls.min_volume:
        st.caption(f"Liquidity filter: {bars.illiquid_bars(controls.min_trades, controls.min_volume):,} of "
                   f"{len(bars.aligned.index):,} bars left out.")
    render_needs(pair, bars.interval_ms, None if service is None else controls.lookback_ms)
    site: Site | None = None if service is None else service.site
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
            render_charts(chart_bars, chart_pair, controls, marks, view.data_version, scope)
    if stats_tab.open:
        with stats_tab:
            render_symbol_summaries(bars, controls.tz)
            render_pair_stats(pair, bars.interval_ms)
            render_tests(pair, key=f"{controls.revision}|{params}")
    if table_tab.open:
        with table_tab:
            render_table_tab(page, controls, bars, pair)
    if scanner_tab.open:
        with scanner_tab:
            render_scanner_tab(bars, controls)
    if alerts_tab.open:
        with alerts_tab:
            if site is None:
                st.caption("Alerts are evaluated by the service of a live, simulated or replayed feed.")
            else:
                render_alerts_tab(site, (params.y, params.x), controls.interval_ms, params.window, controls.tz)
    if backtest_tab.open:
        with backtest_tab:
            # The view's own closes, warm-up included: the backtest trades on the z-score the charts show.
            closes, start = view.analysed_closes()
            render_backtest_tab(closes, params.y, params.x, params.window, params.z_threshold, bars.interval_ms,
                                controls.tz, controls.revision, start)
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
        minutes = page.view((controls.y, controls.x), ONE_MINUTE.ms, pair.params, controls)
        if minutes.bars.aligned is None:
            return
        shown = minutes.shown()
        minute_bars, minute_pair = shown.bars, shown.pair
    render_downloads(bars, pair, minute_table(minute_bars, minute_pair), controls.tz,
                     f"{controls.y}-{controls.x}-{controls.timeframe}")


def dataset_page(base: Settings) -> None:
    """Two uploaded OHLC datasets analysed as a pair (no live feed)."""
    picked = dataset_controls(list_datasets(base))
    if picked is None:
        st.stop()
    y, x = picked
    controls = analysis_controls(UPLOADED, None, (y.name, x.name), pair=(y.name, x.name),
                                 timeframes=dataset_timeframes(y, x))
    if max(y.first_ms, x.first_ms) > min(y.last_ms, x.last_ms):
        span = "{0}: {1:%Y-%m-%d %H:%M} → {2:%Y-%m-%d %H:%M} UTC"
        st.error("These datasets do not overlap in time, so they cannot be paired. " + "; ".join(
            span.format(plain(d.name), pd.Timestamp(d.first_ms, unit="ms"), pd.Timestamp(d.last_ms, unit="ms"))
            for d in (y, x)))
        st.stop()
    frames = load_dataset_frames(base, y, x)
    st.title(f"{plain(y.name)} / {plain(x.name)} · {timeframe_label(controls.timeframe)} bars")
    st.info("Uploaded historical datasets: not live market data.", icon="📁")

    def view(symbols: tuple[str, ...], interval_ms: int, params: PairParams, controls: Controls) -> PairView:
        bars = dataset_pair_bars({s: frames[s] for s in symbols}, interval_ms)  # shown whole
        pair = compute_pair(bars.closes(min_trades=controls.min_trades, min_volume=controls.min_volume), params)
        return PairView(bars, pair, bars.market_now_ms)

    page = PageData(view, lambda bars, _open_start_ms: bars, None)
    render_analytics(lambda: page, controls)


def main() -> None:
    st.set_page_config(page_title="Pair-trading analytics", layout="wide")
    try:
        base = from_env()
    except ConfigError as exc:
        st.error(f"Invalid configuration: {plain(exc)}")
        st.stop()
    chosen = source_controls(base)
    render_upload(base)
    if chosen is not None and chosen[0] == UPLOADED:
        dataset_page(base)
        return
    symbols = symbol_controls(base.symbols)
    if chosen is None or symbols is None:
        st.stop()
    source, replay_file = chosen
    controls = analysis_controls(source, replay_file, symbols)
    # The pair for headless alert flags is irrelevant here; the sidebar chooses the pair.
    settings = base.replace(source=source, replay_file=replay_file, symbols=symbols, pair=None)
    service = acquire_service(base, settings)
    if service is None:
        st.stop()

    def acquire() -> Service | None:
        return acquire_service(base, settings)

    def live_data() -> PageData | None:
        current = acquire()  # every run: never draw from a feed that has been stopped
        if current is None:
            return None

        def view(symbols: tuple[str, ...], interval_ms: int, params: PairParams, controls: Controls) -> PairView:
            return current.shared.ask(view_query(controls, symbols, interval_ms, params))

        return PageData(view, lambda bars, open_start_ms: with_open_bar(bars, current.engine, open_start_ms), current)

    st.title(f"{controls.y} / {controls.x} · {timeframe_label(controls.timeframe)} bars")
    state = appstate.current()
    if state.pushed:  # served by server.py: the numbers are pushed on every trade
        st.fragment(run_every=NOTICES_REFRESH_S if controls.auto_refresh else None)(render_feed_notices)(
            acquire, controls)
        register_live_panel(service, controls)
        live.live_panel(live_token(), controls.y, controls.x)
    else:
        st.fragment(run_every=LIVE_REFRESH_S if controls.auto_refresh else None)(render_live_panel)(acquire, controls)
    chart_every = CHART_REFRESH_S[Timeframe.of(controls.timeframe)] if controls.auto_refresh else None
    st.fragment(run_every=chart_every)(render_analytics)(live_data, controls)


# Streamlit runs this file as __main__; importing it (benchmarks) only defines the functions.
if __name__ == "__main__":
    main()
